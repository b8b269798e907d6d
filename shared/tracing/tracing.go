// Package tracing is the one seam between the product and its tracer
// (R16). Today it is AWS X-Ray through aws-xray-sdk-go; that SDK is in
// maintenance (end of support February 2027) with OpenTelemetry its
// successor, so nothing else in the product imports it: moving means
// changing this package only.
package tracing

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-xray-sdk-go/instrumentation/awsv2"
	"github.com/aws/aws-xray-sdk-go/xray"
	"github.com/aws/aws-xray-sdk-go/xraylog"

	"github.com/aishell/aishell/shared/logging"
)

var configure sync.Once

// setup routes the X-Ray SDK's own messages into JSON log lines (R12: no
// free text), and makes a call outside any segment (a Lambda's init, a
// background call) a debug line rather than a printed warning.
func setup() {
	configure.Do(func() {
		log := logging.New(os.Stderr, "tracing", logging.LevelFromEnv())
		xray.SetLogger(xrayLogger{log})
		xray.Configure(xray.Config{ContextMissingStrategy: missing{log}})
	})
}

type xrayLogger struct{ log *slog.Logger }

func (l xrayLogger) Log(level xraylog.LogLevel, msg fmt.Stringer) {
	lv := slog.LevelDebug
	switch level {
	case xraylog.LogLevelInfo:
		lv = slog.LevelInfo
	case xraylog.LogLevelWarn:
		lv = slog.LevelWarn
	case xraylog.LogLevelError:
		lv = slog.LevelError
	}
	l.log.Log(context.Background(), lv, msg.String(), logging.KeyEvent, "xray_sdk")
}

type missing struct{ log *slog.Logger }

func (m missing) ContextMissing(v any) {
	m.log.Debug(fmt.Sprint(v), logging.KeyEvent, "xray_context_missing")
}

// Enabled reports whether traces are sent: in a Lambda with active tracing
// (_X_AMZN_TRACE_ID is set per invocation), or where an X-Ray daemon is
// named (AWS_XRAY_DAEMON_ADDRESS, the relay's sidecar).
func Enabled() bool {
	return os.Getenv("AWS_XRAY_DAEMON_ADDRESS") != "" || os.Getenv("AWS_LAMBDA_FUNCTION_NAME") != ""
}

// InstrumentAWS makes every call of clients built from cfg a traced
// subsegment, when tracing is enabled.
func InstrumentAWS(cfg *aws.Config) {
	if !Enabled() {
		return
	}
	setup()
	awsv2.AWSV2Instrumentor(&cfg.APIOptions)
}

// StartSegment begins a segment (outside Lambda, which opens its own) for
// work such as a relay's restart, and returns the context carrying it and
// the function that ends it.
func StartSegment(ctx context.Context, name string) (context.Context, func(error)) {
	if !Enabled() || os.Getenv("AWS_LAMBDA_FUNCTION_NAME") != "" {
		return ctx, func(error) {}
	}
	setup()
	ctx, seg := xray.BeginSegment(ctx, name)
	return ctx, func(err error) { seg.Close(err) }
}

// TraceID returns the trace id of ctx's segment, else the Lambda's trace
// header's Root, else "".
func TraceID(ctx context.Context) string {
	if seg := xray.GetSegment(ctx); seg != nil {
		return seg.TraceID
	}
	return RootOf(os.Getenv("_X_AMZN_TRACE_ID"))
}

// RootOf returns the Root= part of an X-Amzn-Trace-Id header.
func RootOf(header string) string {
	for _, part := range strings.Split(header, ";") {
		if root, ok := strings.CutPrefix(strings.TrimSpace(part), "Root="); ok {
			return root
		}
	}
	return ""
}
