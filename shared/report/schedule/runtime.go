package schedule

import (
	"bytes"
	"context"
	"encoding/json"
	"log"
	"log/slog"
	"strings"

	"github.com/aishell/aishell/shared/logging"
)

// EventRuntime is the event of the Lambda runtime library's own messages.
const EventRuntime = "lambda_runtime"

// RouteRuntimeLog turns the messages that the Lambda runtime library
// prints through the standard logger into JSON lines of l (R12: no free
// text). The runtime echoes every error a handler returns; Handle has
// logged those already, with the invocation's ids, so the echo is a debug
// line. Anything else it says (a panic's stack, a failed call to the
// runtime API) is a warning.
func RouteRuntimeLog(l *slog.Logger) {
	log.SetFlags(0)
	log.SetOutput(runtimeLog{logging.Module(l, "runtime")})
}

type runtimeLog struct{ l *slog.Logger }

func (r runtimeLog) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	level := slog.LevelWarn
	var payload struct {
		Message    string            `json:"errorMessage"`
		StackTrace []json.RawMessage `json:"stackTrace"`
	}
	if json.Unmarshal(bytes.TrimSpace(p), &payload) == nil && payload.Message != "" &&
		len(payload.StackTrace) == 0 {
		level = slog.LevelDebug
	}
	logging.Event(context.Background(), r.l, level, EventRuntime, msg)
	return len(p), nil
}
