// Package report builds the daily report of R14 from the log events of R13:
// sessions, task starts and their start-up latency, errors by class,
// disconnects, relay restarts and message round trips, for a day or a range
// of UTC days, with anomalies highlighted against the period before (or a
// chosen one) and against fixed thresholds.
//
// Events come from a Source: the local JSON-lines files (Dir) or CloudWatch
// Logs (package shared/report/cloudwatch). The report is written as JSON
// (an interface other tools read), markdown, or HTML with inline charts.
package report

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"
)

// Period is a run of whole UTC days.
type Period struct {
	First time.Time // midnight UTC of the first day
	Days  int
}

// PeriodEnding is the period of days whole UTC days ending with the day of
// last.
func PeriodEnding(last time.Time, days int) Period {
	y, m, d := last.UTC().Date()
	lastDay := time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
	return Period{First: lastDay.AddDate(0, 0, 1-days), Days: days}
}

// Start is the first instant of the period.
func (p Period) Start() time.Time { return p.First }

// End is the first instant after the period.
func (p Period) End() time.Time { return p.First.AddDate(0, 0, p.Days) }

// Last is midnight of the period's last day.
func (p Period) Last() time.Time { return p.First.AddDate(0, 0, p.Days-1) }

// Before is the period of the same length that ends where p starts.
func (p Period) Before() Period {
	return Period{First: p.First.AddDate(0, 0, -p.Days), Days: p.Days}
}

// String names the period: "2026-12-04" or "2026-11-28 to 2026-12-04".
func (p Period) String() string {
	if p.Days == 1 {
		return p.First.Format(time.DateOnly)
	}
	return p.First.Format(time.DateOnly) + " to " + p.Last().Format(time.DateOnly)
}

// Options say what to report on.
type Options struct {
	Env    string
	Period Period
	// Compare is any instant of the last day of the baseline period, which
	// is as long as Period. Zero means the period just before Period.
	Compare time.Time
}

// Report is the R14 report. Its JSON form is an interface that other tools
// read:
//
//	{"from","to","env","sessions","tasks","startup_ms","errors",
//	 "disconnects","relay_starts","messages","anomalies"}
//
// from and to are the first and last UTC day of the period, both included,
// as YYYY-MM-DD. The fields after anomalies are what the markdown and HTML
// forms show besides.
type Report struct {
	From string `json:"from"`
	To   string `json:"to"`
	Env  string `json:"env"`
	Figures
	Anomalies []Anomaly `json:"anomalies"`

	Period   Period    `json:"-"`
	Days     []Day     `json:"-"` // one per day of Period, in order
	Startups []float64 `json:"-"` // the task_ready durations, sorted
	Baseline *Baseline `json:"-"` // nil when the baseline period had no events
	// Compared is the baseline period scanned, events or not.
	Compared Period    `json:"-"`
	Scanned  ScanStats `json:"-"` // lines read for Period
}

// Day holds the figures of one day of the period.
type Day struct {
	Date    time.Time
	Figures Figures
}

// Baseline is the period the report compares with.
type Baseline struct {
	Period  Period
	When    string // how a sentence names it: "the day before", "on 2026-12-01"
	Figures Figures
}

// Build reads the events of the period and of its baseline from src and
// makes the report.
func Build(ctx context.Context, src Source, opts Options) (*Report, error) {
	p := opts.Period
	if p.Days < 1 {
		return nil, fmt.Errorf("build report: period of %d days", p.Days)
	}

	total := &Tally{}
	days := make([]Tally, p.Days)
	stats, err := src.Scan(ctx, p.Start(), p.End(), func(e Event) {
		total.Add(e)
		if i := int(e.Time.Sub(p.Start()) / (24 * time.Hour)); i >= 0 && i < len(days) {
			days[i].Add(e)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("read events of %s: %w", p, err)
	}

	bp := p.Before()
	if !opts.Compare.IsZero() {
		bp = PeriodEnding(opts.Compare, p.Days)
	}
	base := &Tally{}
	if _, err := src.Scan(ctx, bp.Start(), bp.End(), base.Add); err != nil {
		return nil, fmt.Errorf("read events of %s: %w", bp, err)
	}

	r := &Report{
		From:     p.First.Format(time.DateOnly),
		To:       p.Last().Format(time.DateOnly),
		Env:      opts.Env,
		Figures:  total.Figures(),
		Period:   p,
		Startups: total.Startups(),
		Scanned:  stats,
		Compared: bp,
	}
	for i := range days {
		r.Days = append(r.Days, Day{Date: p.First.AddDate(0, 0, i), Figures: days[i].Figures()})
	}
	// A baseline without a single event (the first day of an environment,
	// or a gap in the logs) would make every figure look like a rise.
	if base.Events() > 0 {
		r.Baseline = &Baseline{Period: bp, When: When(p, bp), Figures: base.Figures()}
	}
	r.Anomalies = Detect(r.Figures, r.Baseline)
	return r, nil
}

// When says how an anomaly line names the baseline period base of a report
// on cur.
func When(cur, base Period) string {
	adjacent := base.End().Equal(cur.Start())
	switch {
	case base.Days == 1 && adjacent:
		return "the day before"
	case base.Days == 1:
		return "on " + base.First.Format(time.DateOnly)
	case adjacent:
		return fmt.Sprintf("in the previous %d days", base.Days)
	default:
		return fmt.Sprintf("in the %d days to %s", base.Days, base.Last().Format(time.DateOnly))
	}
}

// WriteJSON writes the report's JSON form, indented, with a final newline.
func WriteJSON(w io.Writer, r *Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		return fmt.Errorf("write report json: %w", err)
	}
	return nil
}
