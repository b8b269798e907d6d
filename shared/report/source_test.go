package report_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aishell/aishell/shared/events"
	"github.com/aishell/aishell/shared/report"
)

func writeFile(t *testing.T, dir, name string, lines ...string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(strings.Join(lines, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
}

func message(ts string) string {
	return `{"timestamp":"` + ts + `","level":"info","event":"user_message"}`
}

func TestDirScan(t *testing.T) {
	dir := t.TempDir()
	long := `{"timestamp":"2026-12-04T12:00:00.000Z","event":"user_message","pad":"` +
		strings.Repeat("x", 200<<10) + `"}`
	writeFile(t, dir, "relay-2026-12-04.jsonl",
		message("2026-12-04T00:00:00.000Z"), // first instant of the day: in
		message("2026-12-04T23:59:59.999Z"), // last: in
		"aishell relay listening on 127.0.0.1:8080",
		"",
		long,
		`{"timestamp":"2026-12-04T13:00:00.000Z","event":"task_lif`) // cut short, no newline
	writeFile(t, dir, "relay-2026-12-05.jsonl",
		message("2026-12-04T23:59:59.998Z"), // written after midnight: in
		message("2026-12-05T00:00:00.000Z")) // next day: out
	writeFile(t, dir, "lambdas-2026-12-03.jsonl",
		message("2026-12-03T23:59:59.999Z"), // the day before: out
		"not json")
	writeFile(t, dir, "lambdas-2026-11-20.jsonl", "far away and not json") // not opened
	writeFile(t, dir, "imported.jsonl", message("2026-12-04T08:00:00.000Z"), "junk")
	writeFile(t, dir, "relay-2026-12-04.txt", message("2026-12-04T09:00:00.000Z")) // not *.jsonl

	p := report.PeriodEnding(time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC), 1)
	var got []time.Time
	stats, err := report.Dir{Path: dir}.Scan(context.Background(), p.Start(), p.End(), func(e report.Event) {
		if e.Name != events.UserMessage {
			t.Errorf("event: got %q; want %q", e.Name, events.UserMessage)
		}
		got = append(got, e.Time)
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 5 {
		t.Errorf("events in the day: got %d %v; want 5", len(got), got)
	}
	// Lines: 5 + 2 + 2 + 2 (the blank one not counted); unparsed: the
	// banner, the cut line, "not json" and "junk".
	if want := (report.ScanStats{Lines: 11, Unparsed: 4}); stats != want {
		t.Errorf("stats: got %+v; want %+v", stats, want)
	}
}

func TestDirScanErrors(t *testing.T) {
	p := report.PeriodEnding(time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC), 1)
	tests := []struct {
		name    string
		dir     func(t *testing.T) string
		wantErr bool
	}{
		{"missing folder", func(t *testing.T) string { return filepath.Join(t.TempDir(), "nope") }, true},
		{"empty folder", func(t *testing.T) string { return t.TempDir() }, false},
		{"unreadable file", func(t *testing.T) string {
			dir := t.TempDir()
			if err := os.Mkdir(filepath.Join(dir, "relay-2026-12-04.jsonl"), 0o755); err != nil {
				t.Fatal(err)
			}
			return dir
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := report.Dir{Path: tt.dir(t)}.Scan(context.Background(), p.Start(), p.End(),
				func(report.Event) {})
			if (err != nil) != tt.wantErr {
				t.Errorf("error: got %v; want error %v", err, tt.wantErr)
			}
		})
	}
}
