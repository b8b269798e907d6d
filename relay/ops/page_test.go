package ops_test

import (
	"bytes"
	"context"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/aishell/aishell/relay/hub"
	"github.com/aishell/aishell/relay/ops"
	"github.com/aishell/aishell/shared/report"
	"github.com/aishell/aishell/shared/report/corpus"
)

// A week of generated logs, 2026-11-28 to 2026-12-04, with an incident on
// the last day (three failed restarts, a 12.4 s start); the page is looked
// at in the afternoon of that day.
var (
	weekStart = time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC)
	afternoon = time.Date(2026, 12, 4, 15, 4, 5, 0, time.UTC)
)

func weekOfLogs(t *testing.T) (*corpus.Corpus, string) {
	t.Helper()
	c := corpus.Generate(corpus.Options{First: weekStart, Days: 7, Seed: 7, BadDay: 6})
	dir := filepath.Join(t.TempDir(), "logs")
	if err := c.WriteFiles(dir); err != nil {
		t.Fatal(err)
	}
	return c, dir
}

func TestBuildReport(t *testing.T) {
	c, dir := weekOfLogs(t)
	r := ops.BuildReport(context.Background(), dir, "local", afternoon)
	if r.Error != "" {
		t.Fatal(r.Error)
	}

	day := func(i int) report.Period { return report.PeriodEnding(weekStart.AddDate(0, 0, i), 1) }
	if r.Day != "2026-12-04" || r.Today == nil || *r.Today != c.Want(day(6)) {
		t.Errorf("today %s: got %+v; want %+v", r.Day, r.Today, c.Want(day(6)))
	}
	if r.Yesterday == nil || *r.Yesterday != c.Want(day(5)) {
		t.Errorf("yesterday: got %+v; want %+v", r.Yesterday, c.Want(day(5)))
	}
	if len(r.Days) != ops.TrendDays {
		t.Fatalf("days: got %d; want %d", len(r.Days), ops.TrendDays)
	}
	for i, d := range r.Days {
		if want := day(i); d.Date != want.String() || d.Figures != c.Want(want) {
			t.Errorf("day %d: got %s %+v; want %s %+v", i, d.Date, d.Figures, want, c.Want(want))
		}
	}
	if r.Week == nil || r.Week.Figures != c.Want(report.PeriodEnding(afternoon, 7)) {
		t.Errorf("week: got %+v; want the week's figures", r.Week)
	}

	// Today is part of a day: only thresholds speak, no comparison.
	if want := report.Detect(*r.Today, nil); !reflect.DeepEqual(r.Anomalies, want) || len(want) == 0 {
		t.Errorf("anomalies: got %v; want the incident's threshold lines %v", r.Anomalies, want)
	}
	for _, a := range r.Anomalies {
		if strings.Contains(a.Message, "from") {
			t.Errorf("anomaly %q compares a part of a day with a whole one", a.Message)
		}
	}
	sum := 0
	for _, b := range r.Startup {
		sum += b.Count
	}
	if sum != r.Week.StartupMs.Count || len(r.Startup) == 0 {
		t.Errorf("histogram: %d starts in %d bins; want the week's %d", sum, len(r.Startup), r.Week.StartupMs.Count)
	}
	if r.Charts() != 3 {
		t.Errorf("charts: got %d; want the histogram, starts per day and p99 per day", r.Charts())
	}
	if r.Lines == 0 || r.Unparsed == 0 {
		t.Errorf("lines read: got %d, unparsed %d; want the corpus's, with its bad lines", r.Lines, r.Unparsed)
	}
}

func TestBuildReportWithoutLogFiles(t *testing.T) {
	r := ops.BuildReport(context.Background(), filepath.Join(t.TempDir(), "none"), "local", afternoon)
	if !strings.Contains(r.Error, "read the log files") || r.Today != nil || r.Week != nil {
		t.Errorf("got error %q, today %v; want the reason and no figures", r.Error, r.Today)
	}
}

func TestWritePage(t *testing.T) {
	_, dir := weekOfLogs(t)
	week := ops.BuildReport(context.Background(), dir, "local", afternoon)
	hostile := `<img src=x onerror="alert(1)">`

	tests := []struct {
		name    string
		snap    ops.Snapshot
		want    []string
		notWant []string
	}{
		{
			name: "sessions, warm pool and today",
			snap: ops.Snapshot{
				Time: afternoon, Env: "local", RelayID: "relay-local",
				Hub:    hub.Stats{Sessions: 2, Clients: 1, Tasks: 1, WarmAvailable: 1},
				Limits: ops.Limits{QueueMsgs: 256, KeptOutput: 4 << 20},
				Sessions: []hub.SessionInfo{
					{ID: "s-ready", UserID: "ada", State: "ready", Client: true, TaskID: "task-1", Ready: true,
						Busy: true},
					{ID: "s-away", UserID: hostile, State: "restarting", Restarting: true, Queued: 256,
						KeptBytes: 3 << 20},
				},
				Warm: ops.WarmPool{Target: 3, Connected: 1, Tasks: []ops.WarmTask{
					{ID: "warm-a", State: "available", AgeMs: 95_000},
					{ID: "warm-b", State: "claimed", AgeMs: 4_000, SessionID: "s-ready"},
				}},
				Report: week,
			},
			want: []string{
				`data-state="ready" data-session="s-ready"`, `data-state="restarting" data-session="s-away"`,
				"client attached", "client away", `class="on busy"`, `class="on warn">restarting`,
				`class="fill full" width="100"`, "3.0 MiB",
				`<tr data-task="warm-a"><td><code>warm-a</code></td><td>available</td><td>1 min</td>`,
				`<rect class="task claimed"`, `<rect class="slot"`, "target 3, 1 connected and free",
				`<svg class="chart"`, `data-metric="startup_ms.p99"`, `<li class="tile bad"><div class="value">12.4 s`,
				"&lt;img src=x", `href="/ops/report"`, `data-refresh="5"`,
			},
			notWant: []string{hostile, "http://", "https://", "No session."},
		},
		{
			name: "nothing yet, logs unreadable",
			snap: ops.Snapshot{Time: afternoon, Env: "local", RelayID: "relay-local",
				Report: ops.Report{Day: "2026-12-04", Error: "read the log files: no such folder"}},
			want:    []string{"No session.", "No warm task.", "off", "read the log files: no such folder"},
			notWant: []string{`<svg class="chart"`, `<svg class="pool"`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := ops.WritePage(&b, tt.snap, 5*time.Second); err != nil {
				t.Fatal(err)
			}
			page := b.String()
			for _, w := range tt.want {
				if !strings.Contains(page, w) {
					t.Errorf("page lacks %q", w)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(page, w) {
					t.Errorf("page has %q", w)
				}
			}
			if n := strings.Count(page, `<svg class="chart"`); n != tt.snap.Report.Charts() {
				t.Errorf("charts on the page: got %d; want %d", n, tt.snap.Report.Charts())
			}
		})
	}
}
