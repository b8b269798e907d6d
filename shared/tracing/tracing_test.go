package tracing

import (
	"context"
	"testing"
)

func TestRootOf(t *testing.T) {
	tests := []struct{ header, want string }{
		{"Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1", "1-5759e988-bd862e3fe1be46a994272793"},
		{"Parent=1; Root=1-abc", "1-abc"},
		{"", ""},
		{"Sampled=1", ""},
	}
	for _, tt := range tests {
		if got := RootOf(tt.header); got != tt.want {
			t.Errorf("RootOf(%q) = %q; want %q", tt.header, got, tt.want)
		}
	}
}

func TestTraceIDFromLambdaHeader(t *testing.T) {
	t.Setenv("_X_AMZN_TRACE_ID", "Root=1-aaaa-bbbb;Sampled=1")
	if got := TraceID(context.Background()); got != "1-aaaa-bbbb" {
		t.Errorf("TraceID = %q; want 1-aaaa-bbbb", got)
	}
}

// Off outside Lambda and without a daemon: no segment, no instrumentation.
func TestDisabledWithoutDaemon(t *testing.T) {
	t.Setenv("AWS_XRAY_DAEMON_ADDRESS", "")
	t.Setenv("AWS_LAMBDA_FUNCTION_NAME", "")
	if Enabled() {
		t.Fatal("tracing enabled with neither Lambda nor daemon")
	}
	ctx, end := StartSegment(context.Background(), "x")
	end(nil)
	if TraceID(ctx) != "" {
		t.Errorf("a segment was started while tracing is off")
	}
}
