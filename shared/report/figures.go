package report

import (
	"math"
	"slices"

	"github.com/aishell/aishell/shared/events"
)

// Thresholds of the start-up counts (R14): starts above 10 s and above 30 s.
const (
	SlowStartMs     = 10000
	VerySlowStartMs = 30000
)

// Figures are the R14 figures of one period. Their JSON form is part of the
// report's interface; see Report.
type Figures struct {
	Sessions    Sessions    `json:"sessions"`
	Tasks       Tasks       `json:"tasks"`
	StartupMs   Startup     `json:"startup_ms"`
	Errors      Errors      `json:"errors"`
	Disconnects Disconnects `json:"disconnects"`
	RelayStarts int         `json:"relay_starts"`
	Messages    Messages    `json:"messages"`
}

// Sessions counts session_created events: new sessions and resumed ones.
type Sessions struct {
	Created int `json:"created"`
	Resumed int `json:"resumed"`
}

// Tasks counts task starts (task_lifecycle phase task_start) and connected
// tasks (phase task_ready).
type Tasks struct {
	Starts          int `json:"starts"`
	Restarts        int `json:"restarts"`
	Connected       int `json:"connected"`
	ConnectFailures int `json:"connect_failures"`
	// ConnectSuccessRate is Connected/Starts, between 0 and 1, rounded to
	// four places. With no start nothing failed, so it is 1.
	ConnectSuccessRate float64 `json:"connect_success_rate"`
}

// Startup summarises the task_ready durations (RunTask to ready) in ms.
// Percentiles are exact, by nearest rank; all are 0 when Count is 0.
type Startup struct {
	Count   int     `json:"count"`
	P50     float64 `json:"p50"`
	P90     float64 `json:"p90"`
	P99     float64 `json:"p99"`
	Max     float64 `json:"max"`
	Over10s int     `json:"over_10s"`
	Over30s int     `json:"over_30s"`
}

// Errors counts errors by class.
type Errors struct {
	AccessDenied       int `json:"access_denied"`
	TaskConnectTimeout int `json:"task_connect_timeout"`
	NoBridge           int `json:"no_bridge"`
	TokenExpired       int `json:"token_expired"`
	RestartFailed      int `json:"restart_failed"`
}

// Disconnects counts client socket disconnects by what the task was doing.
type Disconnects struct {
	Processing int `json:"processing"`
	Idle       int `json:"idle"`
}

// Messages counts user messages and the mean time to the agent's first
// output (task_lifecycle phase message_roundtrip), rounded to whole ms.
type Messages struct {
	UserMessages    int     `json:"user_messages"`
	FirstTokenAvgMs float64 `json:"first_token_avg_ms"`
}

// accessDenied is the AWS error code counted as errors.access_denied.
const accessDenied = "AccessDeniedException"

// Tally adds up events into Figures. The zero Tally is empty and ready.
type Tally struct {
	events     int // events seen, counted or not
	figures    Figures
	startups   []float64
	roundtrips int
	roundSumMs float64
}

// Add counts one event.
func (t *Tally) Add(e Event) {
	t.events++
	f := &t.figures
	if e.Level == levelError && e.ErrorCode == accessDenied {
		f.Errors.AccessDenied++
	}

	switch e.Name {
	case events.SessionCreated:
		if e.Resumed {
			f.Sessions.Resumed++
		} else {
			f.Sessions.Created++
		}
	case events.TaskLifecycle:
		t.addLifecycle(e)
	case events.TaskConnectTimeout:
		f.Errors.TaskConnectTimeout++
	case events.TaskRejected:
		if e.Reason == events.ReasonUnknownSession {
			f.Errors.NoBridge++
		}
	case events.TicketRejected:
		if e.Reason == events.ReasonExpired {
			f.Errors.TokenExpired++
		}
	case events.TaskRestartFailed:
		f.Errors.RestartFailed++
	case events.UserMessage:
		f.Messages.UserMessages++
	case events.RelayStarted:
		f.RelayStarts++
	}
}

func (t *Tally) addLifecycle(e Event) {
	f := &t.figures
	switch e.Phase {
	case events.PhaseTaskStart:
		f.Tasks.Starts++
		if e.Restart {
			f.Tasks.Restarts++
		}
	case events.PhaseTaskReady:
		f.Tasks.Connected++
		if e.HasDuration {
			t.startups = append(t.startups, e.DurationMs)
		}
	case events.PhaseWSDisconnect:
		switch e.ProcessingState {
		case events.Processing:
			f.Disconnects.Processing++
		case events.Idle:
			f.Disconnects.Idle++
		}
	case events.PhaseMessageRoundtrip:
		if e.HasDuration {
			t.roundtrips++
			t.roundSumMs += e.DurationMs
		}
	}
}

// Events is the number of events added, whether they counted or not.
func (t *Tally) Events() int { return t.events }

// Startups returns the task_ready durations added so far, sorted.
func (t *Tally) Startups() []float64 {
	s := slices.Clone(t.startups)
	slices.Sort(s)
	return s
}

// Figures returns the figures of the events added so far.
func (t *Tally) Figures() Figures {
	f := t.figures

	f.Tasks.ConnectFailures = max(0, f.Tasks.Starts-f.Tasks.Connected)
	f.Tasks.ConnectSuccessRate = SuccessRate(f.Tasks.Connected, f.Tasks.Starts)

	sorted := t.Startups()
	f.StartupMs = Startup{
		Count: len(sorted),
		P50:   Percentile(sorted, 50),
		P90:   Percentile(sorted, 90),
		P99:   Percentile(sorted, 99),
	}
	if n := len(sorted); n > 0 {
		f.StartupMs.Max = sorted[n-1]
	}
	for _, ms := range sorted {
		if ms > SlowStartMs {
			f.StartupMs.Over10s++
		}
		if ms > VerySlowStartMs {
			f.StartupMs.Over30s++
		}
	}

	if t.roundtrips > 0 {
		f.Messages.FirstTokenAvgMs = math.Round(t.roundSumMs / float64(t.roundtrips))
	}
	return f
}

// SuccessRate is connected/starts rounded to four places and capped at 1
// (a task started before the period may connect in it); 1 when starts is 0.
func SuccessRate(connected, starts int) float64 {
	if starts <= 0 {
		return 1
	}
	r := float64(connected) / float64(starts)
	return min(1, math.Round(r*1e4)/1e4)
}

// Percentile returns the p-th percentile (0 < p <= 100) of sorted values by
// nearest rank: the smallest value with at least p % of the values at or
// below it. It returns 0 for no values.
func Percentile(sorted []float64, p int) float64 {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	// Integer arithmetic keeps the rank exact: ceil(p*n/100).
	rank := (p*n + 99) / 100
	rank = min(max(rank, 1), n)
	return sorted[rank-1]
}

// CountedEvents are the event names whose lines can change the figures;
// error-level lines of any name can too (access denied). A reader that
// filters at the source, like the CloudWatch pattern, keeps these.
var CountedEvents = []string{
	events.SessionCreated,
	events.TaskLifecycle,
	events.TaskConnectTimeout,
	events.TaskRestartFailed,
	events.TaskRejected,
	events.TicketRejected,
	events.UserMessage,
	events.RelayStarted,
}
