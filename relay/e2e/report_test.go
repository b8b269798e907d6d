package e2e

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/aishell/aishell/relay/wire"
	"github.com/aishell/aishell/shared/report"
)

// The daily report, run on the logs of a real session of the product,
// counts what happened: sessions created and resumed, starts and the one
// restart, connected tasks and their start-ups, messages, disconnects, the
// relay's start.
func TestReportOnTheProductsOwnLogs(t *testing.T) {
	p := startProduct(t, options{warm: 1})
	eventually(t, wait, "a warm task", func() bool { return p.Hub.Stats().WarmAvailable == 1 })

	// Two sessions (one warm, one cold), three messages, a resume, and a
	// restart after the agent is killed.
	api := newAPIClient(t, p.URL, "rita")
	s := api.create()
	c := dial(t, s)
	c.waitReady(wait)
	c.input("echo one-$((1+1))\r")
	c.waitOutput("one-2", wait)
	c.close()
	c = dial(t, api.resume(s.SessionID))
	c.waitReady(wait)
	c.input("kill -9 $$\r")
	_, next := c.waitFor(0, wait, "restarting", func(f frame) bool { return f.State == wire.StateRestarting })
	c.waitFor(next, wait, "ready again", func(f frame) bool { return f.Type == wire.TypeStatus && f.State == wire.StateReady })

	other := dial(t, newAPIClient(t, p.URL, "sam").create())
	other.waitReady(wait)
	other.input("echo two-$((2+2))\r")
	other.waitOutput("two-4", wait)

	// Everything has reached the log files once the ready lines are there.
	eventually(t, wait, "three task_ready lines and the disconnect", func() bool {
		lines := logLines(t, p)
		return len(findLog(lines, map[string]any{"phase": "task_ready"})) == 3 &&
			len(findLog(lines, map[string]any{"phase": "ws_disconnect"})) == 1
	})
	r, err := report.Build(context.Background(), report.Dir{Path: p.LogsDir}, report.Options{
		Env: "local", Period: report.PeriodEnding(time.Now().UTC(), 1),
	})
	if err != nil {
		t.Fatalf("report: %v", err)
	}
	f := r.Figures
	checks := []struct {
		name      string
		got, want int
	}{
		{"sessions created", f.Sessions.Created, 2},
		{"sessions resumed", f.Sessions.Resumed, 1},
		{"task starts", f.Tasks.Starts, 3},
		{"restarts", f.Tasks.Restarts, 1},
		{"connected", f.Tasks.Connected, 3},
		{"connect failures", f.Tasks.ConnectFailures, 0},
		{"start-ups measured", f.StartupMs.Count, 3},
		{"user messages", f.Messages.UserMessages, 3},
		{"relay starts", f.RelayStarts, 1},
		{"restart failures", f.Errors.RestartFailed, 0},
		{"idle disconnects", f.Disconnects.Idle + f.Disconnects.Processing, 1},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %d; want %d", c.name, c.got, c.want)
		}
	}
	if f.StartupMs.P50 <= 0 || f.StartupMs.Max > 10000 {
		t.Errorf("start-up %+v: want measured, below 10 s", f.StartupMs)
	}
	// Round trips on one machine take under a millisecond; what counts is
	// that each message's was measured.
	if got := findLog(logLines(t, p), map[string]any{"phase": "message_roundtrip"}); len(got) < 3 {
		t.Errorf("message round trips logged: %d; want one per message", len(got))
	}
	if r.Scanned.Unparsed != 0 {
		t.Errorf("%d log lines the report could not read", r.Scanned.Unparsed)
	}

	var md bytes.Buffer
	if err := report.WriteMarkdown(&md, r); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(md.String(), "restart") {
		t.Errorf("markdown report without restarts:\n%s", md.String())
	}
}
