// Package logging builds the structured loggers every AI Shell component
// writes with: one JSON object per line, carrying the fields of R12
// (timestamp, level, service, module, event, sessionId, userId, taskArn,
// traceId, requestId, duration_ms, message).
package logging

import (
	"context"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"
)

// Field names of R12. Components attach them with slog attributes of these
// keys so that the report and the query templates find them.
const (
	KeyService    = "service"
	KeyModule     = "module"
	KeyEvent      = "event"
	KeySessionID  = "sessionId"
	KeyUserID     = "userId"
	KeyTaskArn    = "taskArn"
	KeyTraceID    = "traceId"
	KeyRequestID  = "requestId"
	KeyDurationMs = "duration_ms"
)

// New returns a JSON logger for one service writing to w. Levels are written
// in lower case ("info", "warn", "error"), the time as RFC 3339 with
// milliseconds in UTC under "timestamp", and the message under "message".
func New(w io.Writer, service string, level slog.Leveler) *slog.Logger {
	if level == nil {
		level = slog.LevelInfo
	}
	h := slog.NewJSONHandler(w, &slog.HandlerOptions{
		Level:       level,
		ReplaceAttr: replaceAttr,
	})
	return slog.New(h).With(KeyService, service)
}

func replaceAttr(groups []string, a slog.Attr) slog.Attr {
	if len(groups) > 0 {
		return a
	}
	switch a.Key {
	case slog.TimeKey:
		a.Key = "timestamp"
		if t, ok := a.Value.Any().(time.Time); ok {
			a.Value = slog.StringValue(t.UTC().Format("2006-01-02T15:04:05.000Z07:00"))
		}
	case slog.LevelKey:
		if l, ok := a.Value.Any().(slog.Level); ok {
			a.Value = slog.StringValue(strings.ToLower(l.String()))
		}
	case slog.MessageKey:
		a.Key = "message"
	}
	return a
}

// Discard is a logger that writes nothing, for tests that do not read logs.
func Discard() *slog.Logger {
	return slog.New(slog.DiscardHandler)
}

// Module returns a child logger for one module of a service.
func Module(l *slog.Logger, module string) *slog.Logger {
	return l.With(KeyModule, module)
}

// LevelFromEnv reads LOG_LEVEL (debug, info, warn, error); info by default.
func LevelFromEnv() slog.Level {
	var l slog.Level
	if err := l.UnmarshalText([]byte(os.Getenv("LOG_LEVEL"))); err != nil {
		return slog.LevelInfo
	}
	return l
}

// Event writes one event line: the event name under "event", the message
// under "message", and the given attributes.
func Event(ctx context.Context, l *slog.Logger, level slog.Level, event, msg string, attrs ...slog.Attr) {
	l.LogAttrs(ctx, level, msg, append([]slog.Attr{slog.String(KeyEvent, event)}, attrs...)...)
}

// Duration is the duration_ms attribute of d.
func Duration(d time.Duration) slog.Attr {
	return slog.Int64(KeyDurationMs, d.Milliseconds())
}
