package report_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/aishell/aishell/shared/report"
	"github.com/aishell/aishell/shared/report/corpus"
)

// The test corpus: five days, the incident on the last one.
var (
	corpusFirst = time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)
	badDay      = time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC)
)

// shared is the test corpus, generated once and written to corpusDir.
var (
	shared    *corpus.Corpus
	corpusDir string
)

func TestMain(m *testing.M) {
	shared = corpus.Generate(corpus.Options{First: corpusFirst, Days: 5, Seed: 7, BadDay: 4})
	dir, err := os.MkdirTemp("", "report-corpus-")
	if err == nil {
		corpusDir = dir
		err = shared.WriteFiles(dir)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "write corpus:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func testCorpus(t *testing.T) (*corpus.Corpus, string) {
	t.Helper()
	return shared, corpusDir
}

// wantReport is the report the corpus's true figures call for.
func wantReport(c *corpus.Corpus, p report.Period, compare time.Time) *report.Report {
	bp := p.Before()
	if !compare.IsZero() {
		bp = report.PeriodEnding(compare, p.Days)
	}
	want := &report.Report{
		From:    p.First.Format(time.DateOnly),
		To:      p.Last().Format(time.DateOnly),
		Env:     "test",
		Figures: c.Want(p),
	}
	base := &report.Baseline{Period: bp, When: report.When(p, bp), Figures: c.Want(bp)}
	want.Anomalies = report.Detect(want.Figures, base)
	return want
}

func jsonOf(t *testing.T, r *report.Report) string {
	t.Helper()
	var b bytes.Buffer
	if err := report.WriteJSON(&b, r); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestReportReproducesCorpus(t *testing.T) {
	c, dir := testCorpus(t)
	src := report.Dir{Path: dir}

	tests := []struct {
		name    string
		period  report.Period
		compare time.Time
	}{
		{"incident day against the day before", report.PeriodEnding(badDay, 1), time.Time{}},
		{"calm day", report.PeriodEnding(badDay.AddDate(0, 0, -1), 1), time.Time{}},
		{"day with a 31 s start", report.PeriodEnding(corpusFirst.AddDate(0, 0, 1), 1), time.Time{}},
		{"three days against the three before", report.PeriodEnding(badDay, 3), time.Time{}},
		{"incident day against a chosen date", report.PeriodEnding(badDay, 1), corpusFirst},
		{"two days against two chosen", report.PeriodEnding(badDay, 2), corpusFirst.AddDate(0, 0, 1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := report.Build(context.Background(), src,
				report.Options{Env: "test", Period: tt.period, Compare: tt.compare})
			if err != nil {
				t.Fatal(err)
			}
			want := wantReport(c, tt.period, tt.compare)
			if g, w := jsonOf(t, got), jsonOf(t, want); g != w {
				t.Errorf("json:\ngot  %s\nwant %s", g, w)
			}
			if g, w := got.Startups, c.Startups(tt.period); !reflect.DeepEqual(g, w) {
				t.Errorf("startups: got %v; want %v", g, w)
			}
			for _, d := range got.Days {
				if g, w := d.Figures, c.Want(report.PeriodEnding(d.Date, 1)); g != w {
					t.Errorf("day %s: got %+v; want %+v", d.Date.Format(time.DateOnly), g, w)
				}
			}
			// Files of the day before the period up to the day after
			// are read, and their unparseable lines counted.
			wantGarbage := 0
			for d := tt.period.First.AddDate(0, 0, -1); !d.After(tt.period.End()); d = d.AddDate(0, 0, 1) {
				wantGarbage += c.Garbage(d)
			}
			if got.Scanned.Unparsed != wantGarbage {
				t.Errorf("unparsed lines: got %d; want %d", got.Scanned.Unparsed, wantGarbage)
			}
		})
	}
}

func TestIncidentDayAnomalies(t *testing.T) {
	c, dir := testCorpus(t)
	day := report.PeriodEnding(badDay, 1)
	calm := c.Want(day.Before())
	cur := c.Want(day)

	// The corpus's design, checked before the report is.
	if cur.StartupMs.P99 != corpus.BadDaySlowStartMs || cur.Errors.RestartFailed != corpus.BadDayRestartFailures ||
		calm.Errors.RestartFailed != 0 || calm.RelayStarts != 0 || calm.StartupMs.P99 > 8000 {
		t.Fatalf("corpus off its design: incident %+v, day before %+v", cur, calm)
	}

	r, err := report.Build(context.Background(), report.Dir{Path: dir}, report.Options{Env: "test", Period: day})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, a := range r.Anomalies {
		got[a.Metric] = a.Message
	}
	want := map[string]string{
		"startup_ms.p99": fmt.Sprintf("p99 start-up 12400 ms, above the 10000 ms threshold, up from %.0f ms the day before",
			calm.StartupMs.P99),
		"errors.restart_failed": "restart failures 3, up from 0 the day before",
		"relay_starts":          "relay restarts 2, up from 0 the day before",
	}
	for metric, w := range want {
		if got[metric] != w {
			t.Errorf("anomaly %s: got %q; want %q", metric, got[metric], w)
		}
	}

	// The markdown form carries the same figures and lines.
	var md bytes.Buffer
	if err := report.WriteMarkdown(&md, r); err != nil {
		t.Fatal(err)
	}
	rows := []string{
		"# AI Shell report: test, 2026-12-04",
		"Compared with 2026-12-03.",
		"- " + want["startup_ms.p99"],
		"- " + want["errors.restart_failed"],
		fmt.Sprintf("| sessions created | %d | %d |", cur.Sessions.Created, calm.Sessions.Created),
		fmt.Sprintf("| sessions resumed | %d | %d |", cur.Sessions.Resumed, calm.Sessions.Resumed),
		fmt.Sprintf("| task starts | %d | %d |", cur.Tasks.Starts, calm.Tasks.Starts),
		fmt.Sprintf("| of which restarts | %d | %d |", cur.Tasks.Restarts, calm.Tasks.Restarts),
		fmt.Sprintf("| tasks connected | %d | %d |", cur.Tasks.Connected, calm.Tasks.Connected),
		fmt.Sprintf("| connect failures | %d | %d |", cur.Tasks.ConnectFailures, calm.Tasks.ConnectFailures),
		fmt.Sprintf("| connect success rate | %.1f%% | %.1f%% |",
			cur.Tasks.ConnectSuccessRate*100, calm.Tasks.ConnectSuccessRate*100),
		fmt.Sprintf("| p50 | %.0f ms | %.0f ms |", cur.StartupMs.P50, calm.StartupMs.P50),
		fmt.Sprintf("| p90 | %.0f ms | %.0f ms |", cur.StartupMs.P90, calm.StartupMs.P90),
		"| p99 | 12400 ms |",
		fmt.Sprintf("| above 10 s | %d | %d |", cur.StartupMs.Over10s, calm.StartupMs.Over10s),
		fmt.Sprintf("| access denied | %d | %d |", cur.Errors.AccessDenied, calm.Errors.AccessDenied),
		fmt.Sprintf("| task connect time-out | %d | %d |", cur.Errors.TaskConnectTimeout, calm.Errors.TaskConnectTimeout),
		fmt.Sprintf("| no bridge (task before its session) | %d | %d |", cur.Errors.NoBridge, calm.Errors.NoBridge),
		fmt.Sprintf("| expired ticket | %d | %d |", cur.Errors.TokenExpired, calm.Errors.TokenExpired),
		"| restart failed | 3 | 0 |",
		fmt.Sprintf("| while processing | %d | %d |", cur.Disconnects.Processing, calm.Disconnects.Processing),
		fmt.Sprintf("| while idle | %d | %d |", cur.Disconnects.Idle, calm.Disconnects.Idle),
		"| relay restarts | 2 | 0 |",
		fmt.Sprintf("| user messages | %d | %d |", cur.Messages.UserMessages, calm.Messages.UserMessages),
		fmt.Sprintf("| average first-token latency | %.0f ms | %.0f ms |",
			cur.Messages.FirstTokenAvgMs, calm.Messages.FirstTokenAvgMs),
	}
	lines := map[string]bool{}
	for l := range strings.Lines(md.String()) {
		lines[strings.TrimSuffix(l, "\n")] = true
	}
	for _, w := range rows {
		if !lines[w] && !strings.Contains(md.String(), w) {
			t.Errorf("markdown lacks %q; got:\n%s", w, md.String())
		}
	}
}

func TestJSONShape(t *testing.T) {
	_, dir := testCorpus(t)
	r, err := report.Build(context.Background(), report.Dir{Path: dir},
		report.Options{Env: "test", Period: report.PeriodEnding(badDay, 7)})
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(jsonOf(t, r)), &got); err != nil {
		t.Fatal(err)
	}

	// The interface other tools read: these keys and no others.
	want := map[string][]string{
		"from": nil, "to": nil, "env": nil, "relay_starts": nil, "anomalies": nil,
		"sessions":    {"created", "resumed"},
		"tasks":       {"starts", "restarts", "connected", "connect_failures", "connect_success_rate"},
		"startup_ms":  {"count", "p50", "p90", "p99", "max", "over_10s", "over_30s"},
		"errors":      {"access_denied", "task_connect_timeout", "no_bridge", "token_expired", "restart_failed"},
		"disconnects": {"processing", "idle"},
		"messages":    {"user_messages", "first_token_avg_ms"},
	}
	if len(got) != len(want) {
		t.Errorf("top-level keys: got %d; want %d", len(got), len(want))
	}
	for key, inner := range want {
		v, ok := got[key]
		if !ok {
			t.Errorf("key %q: got none; want it", key)
			continue
		}
		if inner == nil {
			continue
		}
		obj, _ := v.(map[string]any)
		if len(obj) != len(inner) {
			t.Errorf("%s: got keys %v; want %v", key, obj, inner)
		}
		for _, k := range inner {
			if _, ok := obj[k]; !ok {
				t.Errorf("%s.%s: got none; want it", key, k)
			}
		}
	}
	if got["from"] != "2026-11-28" || got["to"] != "2026-12-04" {
		t.Errorf("from, to: got %v, %v; want 2026-11-28, 2026-12-04", got["from"], got["to"])
	}
	for _, a := range got["anomalies"].([]any) {
		if m := a.(map[string]any); len(m) != 2 || m["metric"] == nil || m["message"] == nil {
			t.Errorf("anomaly: got %v; want metric and message", m)
		}
	}
}
