package report_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/aishell/aishell/shared/events"
	"github.com/aishell/aishell/shared/logging"
	"github.com/aishell/aishell/shared/report"
)

func TestParseLine(t *testing.T) {
	at := time.Date(2026, 12, 4, 10, 0, 0, 123e6, time.UTC)
	fallback := time.Date(2026, 12, 4, 11, 0, 0, 0, time.UTC)
	tests := []struct {
		name     string
		line     string
		fallback time.Time
		want     report.Event
		wantErr  bool
		blank    bool
	}{
		{
			name: "task ready with duration and restart",
			line: `{"timestamp":"2026-12-04T10:00:00.123Z","level":"info","event":"task_lifecycle",` +
				`"phase":"task_ready","duration_ms":2450,"restart":true,"breakdown":{"run_task_ms":300}}`,
			want: report.Event{Time: at, Level: "info", Name: events.TaskLifecycle, Phase: events.PhaseTaskReady,
				DurationMs: 2450, HasDuration: true, Restart: true},
		},
		{
			name: "error with code; level read in lower case",
			line: `{"timestamp":"2026-12-04T10:00:00.123Z","level":"ERROR","event":"task_start_failed",` +
				`"errorCode":"AccessDeniedException","reason":"denied"}`,
			want: report.Event{Time: at, Level: "error", Name: events.TaskStartFailed,
				ErrorCode: "AccessDeniedException", Reason: "denied"},
		},
		{
			name: "disconnect and resumed session fields",
			line: `{"timestamp":"2026-12-04T10:00:00.123Z","event":"task_lifecycle","phase":"ws_disconnect",` +
				`"processingState":"processing","resumed":true}`,
			want: report.Event{Time: at, Name: events.TaskLifecycle, Phase: events.PhaseWSDisconnect,
				ProcessingState: events.Processing, Resumed: true},
		},
		{
			name: "timestamp in another zone is read in UTC",
			line: `{"timestamp":"2026-12-04T11:00:00.123+01:00","event":"user_message"}`,
			want: report.Event{Time: at, Name: events.UserMessage},
		},
		{
			name: "fields of the wrong type read as absent",
			line: `{"timestamp":"2026-12-04T10:00:00.123Z","event":"task_lifecycle","duration_ms":"slow",` +
				`"restart":"yes","phase":3}`,
			want: report.Event{Time: at, Name: events.TaskLifecycle},
		},
		{
			name:     "no timestamp takes the fallback",
			line:     `{"event":"relay_started"}`,
			fallback: fallback,
			want:     report.Event{Time: fallback, Name: events.RelayStarted},
		},
		{name: "no timestamp and no fallback", line: `{"event":"relay_started"}`, wantErr: true},
		{name: "bad timestamp", line: `{"timestamp":"yesterday","event":"relay_started"}`, wantErr: true},
		{name: "free text", line: `aishell relay listening on 127.0.0.1:8080`, wantErr: true},
		{name: "cut short", line: `{"timestamp":"2026-12-04T10:00:00.123Z","event":"task_lif`, wantErr: true},
		{name: "a JSON array", line: `[1,2]`, wantErr: true},
		{name: "blank", line: " \t\r\n", wantErr: true, blank: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := report.ParseLine([]byte(tt.line), tt.fallback)
			if (err != nil) != tt.wantErr {
				t.Fatalf("error: got %v; want error %v", err, tt.wantErr)
			}
			if errors.Is(err, report.ErrBlankLine) != tt.blank {
				t.Errorf("blank: got %v; want %v", errors.Is(err, report.ErrBlankLine), tt.blank)
			}
			if err == nil && got != tt.want {
				t.Errorf("got %+v; want %+v", got, tt.want)
			}
		})
	}
}

// A line written by shared/logging parses into what was logged.
func TestParseLineReadsSharedLogging(t *testing.T) {
	var buf bytes.Buffer
	l := logging.Module(logging.New(&buf, "relay", nil), "pairing")
	logging.Event(context.Background(), l, slog.LevelError, events.TaskRestartFailed, "restart failed",
		slog.String(events.FieldErrorCode, "AccessDeniedException"), logging.Duration(1500*time.Millisecond))

	got, err := report.ParseLine(buf.Bytes(), time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != events.TaskRestartFailed || got.Level != "error" || got.ErrorCode != "AccessDeniedException" ||
		got.DurationMs != 1500 || !got.HasDuration {
		t.Errorf("got %+v; want the logged event", got)
	}
	if since := time.Since(got.Time); since < 0 || since > time.Minute {
		t.Errorf("time: got %v; want about now", got.Time)
	}
}
