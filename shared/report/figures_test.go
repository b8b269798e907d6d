package report_test

import (
	"testing"

	"github.com/aishell/aishell/shared/events"
	"github.com/aishell/aishell/shared/report"
)

func TestPercentile(t *testing.T) {
	ten := []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	hundred := make([]float64, 100)
	for i := range hundred {
		hundred[i] = float64(i + 1)
	}
	tests := []struct {
		name   string
		sorted []float64
		p      int
		want   float64
	}{
		{"no values", nil, 50, 0},
		{"one value", []float64{7}, 99, 7},
		{"p50 of ten is the fifth", ten, 50, 5},
		{"p90 of ten is the ninth", ten, 90, 9},
		{"p99 of ten is the largest", ten, 99, 10},
		{"p99 of a hundred is the 99th", hundred, 99, 99},
		{"p90 of a hundred is the 90th", hundred, 90, 90},
		{"p50 of three rounds the rank up", []float64{10, 20, 30}, 50, 20},
		{"p100 is the largest", ten, 100, 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := report.Percentile(tt.sorted, tt.p); got != tt.want {
				t.Errorf("got %v; want %v", got, tt.want)
			}
		})
	}
}

func TestSuccessRate(t *testing.T) {
	tests := []struct {
		name              string
		connected, starts int
		want              float64
	}{
		{"no start means nothing failed", 0, 0, 1},
		{"all connected", 40, 40, 1},
		{"rounded to four places", 2, 3, 0.6667},
		{"none connected", 0, 5, 0},
		{"ready from a start before the period is capped", 6, 5, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := report.SuccessRate(tt.connected, tt.starts); got != tt.want {
				t.Errorf("got %v; want %v", got, tt.want)
			}
		})
	}
}

func lifecycle(phase string) report.Event {
	return report.Event{Name: events.TaskLifecycle, Phase: phase, Level: "info"}
}

func TestTallyCountsEachClass(t *testing.T) {
	ready := func(ms float64) report.Event {
		e := lifecycle(events.PhaseTaskReady)
		e.DurationMs, e.HasDuration = ms, true
		return e
	}
	restart := lifecycle(events.PhaseTaskStart)
	restart.Restart = true
	disc := func(state string) report.Event {
		e := lifecycle(events.PhaseWSDisconnect)
		e.ProcessingState = state
		return e
	}
	roundtrip := func(ms float64) report.Event {
		e := lifecycle(events.PhaseMessageRoundtrip)
		e.DurationMs, e.HasDuration = ms, true
		return e
	}

	tests := []struct {
		name   string
		events []report.Event
		want   func(*report.Figures)
	}{
		{"new and resumed sessions", []report.Event{
			{Name: events.SessionCreated}, {Name: events.SessionCreated, Resumed: true},
			{Name: events.SessionCreated},
		}, func(f *report.Figures) { f.Sessions = report.Sessions{Created: 2, Resumed: 1} }},
		{"starts, restarts, connected and failures", []report.Event{
			lifecycle(events.PhaseTaskStart), restart, lifecycle(events.PhaseTaskStart), ready(300),
		}, func(f *report.Figures) {
			f.Tasks = report.Tasks{Starts: 3, Restarts: 1, Connected: 1, ConnectFailures: 2, ConnectSuccessRate: 0.3333}
			f.StartupMs = report.Startup{Count: 1, P50: 300, P90: 300, P99: 300, Max: 300}
		}},
		{"more ready than started gives no negative failures", []report.Event{ready(100), ready(200)},
			func(f *report.Figures) {
				f.Tasks = report.Tasks{Connected: 2, ConnectSuccessRate: 1}
				f.StartupMs = report.Startup{Count: 2, P50: 100, P90: 200, P99: 200, Max: 200}
			}},
		{"start-ups above 10 s and 30 s, the bounds themselves not", []report.Event{
			ready(10000), ready(10001), ready(30000), ready(30001),
		}, func(f *report.Figures) {
			f.Tasks = report.Tasks{Connected: 4, ConnectSuccessRate: 1}
			f.StartupMs = report.Startup{Count: 4, P50: 10001, P90: 30001, P99: 30001, Max: 30001,
				Over10s: 3, Over30s: 1}
		}},
		{"task ready without duration counts as connected only", []report.Event{lifecycle(events.PhaseTaskReady)},
			func(f *report.Figures) { f.Tasks = report.Tasks{Connected: 1, ConnectSuccessRate: 1} }},
		{"access denied only at error level, from any event", []report.Event{
			{Name: events.TaskStartFailed, Level: "error", ErrorCode: "AccessDeniedException"},
			{Name: events.TaskRestartFailed, Level: "error", ErrorCode: "AccessDeniedException"},
			{Name: events.TaskStartFailed, Level: "warn", ErrorCode: "AccessDeniedException"},
			{Name: events.TaskStartFailed, Level: "error", ErrorCode: "ThrottlingException"},
		}, func(f *report.Figures) { f.Errors = report.Errors{AccessDenied: 2, RestartFailed: 1} }},
		{"rejections by reason", []report.Event{
			{Name: events.TaskRejected, Reason: events.ReasonUnknownSession},
			{Name: events.TaskRejected, Reason: events.ReasonBadCredential},
			{Name: events.TicketRejected, Reason: events.ReasonExpired},
			{Name: events.TicketRejected, Reason: events.ReasonExpired},
			{Name: events.TicketRejected, Reason: events.ReasonInvalid},
			{Name: events.TaskConnectTimeout, Level: "error"},
		}, func(f *report.Figures) {
			f.Errors = report.Errors{NoBridge: 1, TokenExpired: 2, TaskConnectTimeout: 1}
		}},
		{"disconnects by state, others ignored", []report.Event{
			disc(events.Processing), disc(events.Idle), disc(events.Idle), disc(""), disc("unknown"),
		}, func(f *report.Figures) { f.Disconnects = report.Disconnects{Processing: 1, Idle: 2} }},
		{"messages, round trips averaged to whole ms, relay starts", []report.Event{
			{Name: events.UserMessage}, {Name: events.UserMessage}, roundtrip(1000), roundtrip(2001),
			lifecycle(events.PhaseMessageRoundtrip), {Name: events.RelayStarted},
		}, func(f *report.Figures) {
			f.Messages = report.Messages{UserMessages: 2, FirstTokenAvgMs: 1501}
			f.RelayStarts = 1
		}},
		{"events the report does not count", []report.Event{
			{Name: events.WarmPool}, lifecycle(events.PhaseTaskPending), lifecycle(events.PhaseTaskRestart),
			{Name: ""}, {Name: "something_else", Level: "error"},
		}, func(f *report.Figures) {}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var tally report.Tally
			for _, e := range tt.events {
				tally.Add(e)
			}
			want := report.Figures{Tasks: report.Tasks{ConnectSuccessRate: 1}}
			tt.want(&want)
			if got := tally.Figures(); got != want {
				t.Errorf("got  %+v\nwant %+v", got, want)
			}
			if got := tally.Events(); got != len(tt.events) {
				t.Errorf("events: got %d; want %d", got, len(tt.events))
			}
		})
	}
}

// Events left out of CountedEvents (which a filtering reader drops) count
// for nothing below the error level, whatever fields they carry.
func TestCountedEventsCoverTheTally(t *testing.T) {
	all := []string{
		events.SessionCreated, events.TaskLifecycle, events.TaskStartFailed, events.TaskConnectTimeout,
		events.TaskRestartFailed, events.TaskRejected, events.TicketRejected, events.UserMessage,
		events.RelayStarted, events.WarmPool,
	}
	phases := []string{
		events.PhaseSessionCreate, events.PhaseTaskStart, events.PhaseTaskPending, events.PhaseTaskConnect,
		events.PhaseTaskReady, events.PhaseTaskRestart, events.PhaseWSDisconnect, events.PhaseMessageRoundtrip,
	}
	counted := map[string]bool{}
	for _, n := range report.CountedEvents {
		counted[n] = true
	}
	for _, name := range all {
		if counted[name] {
			continue
		}
		t.Run(name, func(t *testing.T) {
			var tally report.Tally
			for _, phase := range phases {
				for _, reason := range []string{events.ReasonUnknownSession, events.ReasonExpired} {
					tally.Add(report.Event{Name: name, Level: "warn", Phase: phase, Reason: reason,
						ProcessingState: events.Processing, ErrorCode: "AccessDeniedException",
						DurationMs: 100, HasDuration: true, Restart: true, Resumed: true})
				}
			}
			want := report.Figures{Tasks: report.Tasks{ConnectSuccessRate: 1}}
			if got := tally.Figures(); got != want {
				t.Errorf("got %+v; want nothing counted", got)
			}
		})
	}
}
