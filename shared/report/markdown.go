package report

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"time"
)

// row is one figure as the markdown and HTML forms show it.
type row struct {
	label string
	value func(Figures) string
}

// section is a titled table of figures.
type section struct {
	title string
	rows  []row
}

func count(n int) string { return strconv.Itoa(n) }

// sections lay out the figures of the readable forms, in the order of R14.
var sections = []section{
	{"Sessions and tasks", []row{
		{"sessions created", func(f Figures) string { return count(f.Sessions.Created) }},
		{"sessions resumed", func(f Figures) string { return count(f.Sessions.Resumed) }},
		{"task starts", func(f Figures) string { return count(f.Tasks.Starts) }},
		{"of which restarts", func(f Figures) string { return count(f.Tasks.Restarts) }},
		{"tasks connected", func(f Figures) string { return count(f.Tasks.Connected) }},
		{"connect failures", func(f Figures) string { return count(f.Tasks.ConnectFailures) }},
		{"connect success rate", func(f Figures) string { return formatRate(f.Tasks.ConnectSuccessRate) }},
	}},
	{"Start-up, RunTask to ready", []row{
		{"tasks ready", func(f Figures) string { return count(f.StartupMs.Count) }},
		{"p50", func(f Figures) string { return formatMs(f.StartupMs.P50) }},
		{"p90", func(f Figures) string { return formatMs(f.StartupMs.P90) }},
		{"p99", func(f Figures) string { return formatMs(f.StartupMs.P99) }},
		{"max", func(f Figures) string { return formatMs(f.StartupMs.Max) }},
		{"above 10 s", func(f Figures) string { return count(f.StartupMs.Over10s) }},
		{"above 30 s", func(f Figures) string { return count(f.StartupMs.Over30s) }},
	}},
	{"Errors by class", []row{
		{"access denied", func(f Figures) string { return count(f.Errors.AccessDenied) }},
		{"task connect time-out", func(f Figures) string { return count(f.Errors.TaskConnectTimeout) }},
		{"no bridge (task before its session)", func(f Figures) string { return count(f.Errors.NoBridge) }},
		{"expired ticket", func(f Figures) string { return count(f.Errors.TokenExpired) }},
		{"restart failed", func(f Figures) string { return count(f.Errors.RestartFailed) }},
	}},
	{"Socket disconnects", []row{
		{"while processing", func(f Figures) string { return count(f.Disconnects.Processing) }},
		{"while idle", func(f Figures) string { return count(f.Disconnects.Idle) }},
	}},
	{"Relay and messages", []row{
		{"relay restarts", func(f Figures) string { return count(f.RelayStarts) }},
		{"user messages", func(f Figures) string { return count(f.Messages.UserMessages) }},
		{"average first-token latency", func(f Figures) string {
			return formatMs(f.Messages.FirstTokenAvgMs)
		}},
	}},
}

// dailyColumns are the columns of the per-day table.
var dailyColumns = []row{
	{"sessions", func(f Figures) string { return count(f.Sessions.Created) }},
	{"starts", func(f Figures) string { return count(f.Tasks.Starts) }},
	{"restarts", func(f Figures) string { return count(f.Tasks.Restarts) }},
	{"connected", func(f Figures) string { return count(f.Tasks.Connected) }},
	{"p50", func(f Figures) string { return formatMs(f.StartupMs.P50) }},
	{"p99", func(f Figures) string { return formatMs(f.StartupMs.P99) }},
	{"errors", func(f Figures) string { return count(f.Errors.total()) }},
	{"disconnects (processing / idle)", func(f Figures) string {
		return fmt.Sprintf("%d / %d", f.Disconnects.Processing, f.Disconnects.Idle)
	}},
	{"messages", func(f Figures) string { return count(f.Messages.UserMessages) }},
}

func (e Errors) total() int {
	return e.AccessDenied + e.TaskConnectTimeout + e.NoBridge + e.TokenExpired + e.RestartFailed
}

// Title is the report's heading.
func (r *Report) Title() string {
	return fmt.Sprintf("AI Shell report: %s, %s", r.Env, r.Period)
}

// comparedWith says what the report compares with, as a sentence.
func (r *Report) comparedWith() string {
	if r.Baseline == nil {
		compared := r.Compared
		if compared.Days == 0 {
			compared = r.Period.Before()
		}
		return fmt.Sprintf("No events in %s to compare with.", compared)
	}
	return fmt.Sprintf("Compared with %s.", r.Baseline.Period)
}

// footnote says how many log lines were skipped, or nothing.
func (r *Report) footnote() string {
	if r.Scanned.Unparsed == 0 {
		return ""
	}
	return fmt.Sprintf("%d of %d log lines read could not be parsed and were skipped.",
		r.Scanned.Unparsed, r.Scanned.Lines)
}

// WriteMarkdown writes the report as markdown: the anomalies first, then a
// table per section with the baseline beside the period, then a table per
// day when the period has more than one.
func WriteMarkdown(w io.Writer, r *Report) error {
	b := bufio.NewWriter(w)
	fmt.Fprintf(b, "# %s\n\n%s\n\n## Anomalies\n\n", r.Title(), r.comparedWith())
	if len(r.Anomalies) == 0 {
		fmt.Fprintf(b, "None.\n")
	}
	for _, a := range r.Anomalies {
		fmt.Fprintf(b, "- %s\n", a.Message)
	}

	for _, s := range sections {
		fmt.Fprintf(b, "\n## %s\n\n| | %s |", s.title, r.Period)
		if r.Baseline != nil {
			fmt.Fprintf(b, " %s |", r.Baseline.Period)
		}
		fmt.Fprintf(b, "\n|---|---:|")
		if r.Baseline != nil {
			fmt.Fprintf(b, "---:|")
		}
		fmt.Fprintln(b)
		for _, row := range s.rows {
			fmt.Fprintf(b, "| %s | %s |", row.label, row.value(r.Figures))
			if r.Baseline != nil {
				fmt.Fprintf(b, " %s |", row.value(r.Baseline.Figures))
			}
			fmt.Fprintln(b)
		}
	}

	if len(r.Days) > 1 {
		fmt.Fprintf(b, "\n## Day by day\n\n| day |")
		for _, c := range dailyColumns {
			fmt.Fprintf(b, " %s |", c.label)
		}
		fmt.Fprintf(b, "\n|---|")
		for range dailyColumns {
			fmt.Fprintf(b, "---:|")
		}
		fmt.Fprintln(b)
		for _, d := range r.Days {
			fmt.Fprintf(b, "| %s |", d.Date.Format(time.DateOnly))
			for _, c := range dailyColumns {
				fmt.Fprintf(b, " %s |", c.value(d.Figures))
			}
			fmt.Fprintln(b)
		}
	}

	if note := r.footnote(); note != "" {
		fmt.Fprintf(b, "\n%s\n", note)
	}
	if err := b.Flush(); err != nil {
		return fmt.Errorf("write report markdown: %w", err)
	}
	return nil
}
