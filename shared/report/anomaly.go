package report

import (
	"fmt"
	"strings"
)

// Anomaly is one highlighted line of the report: the figure that moved
// (its JSON path, such as "startup_ms.p99") and a sentence saying by how
// much.
type Anomaly struct {
	Metric  string `json:"metric"`
	Message string `json:"message"`
}

// rule says when one figure is worth a line: above a fixed threshold, or
// moved the wrong way against the baseline by at least minAbs and, when the
// baseline is not zero, by at least minRel of it.
type rule struct {
	metric    string
	label     string
	value     func(Figures) float64
	format    func(float64) string
	threshold float64
	hasLimit  bool    // threshold applies
	worse     int     // +1: a rise is bad; -1: a fall is bad
	minAbs    float64 // smallest change that counts
	minRel    float64 // smallest change relative to the baseline
}

func formatCount(v float64) string { return fmt.Sprintf("%.0f", v) }
func formatMs(v float64) string    { return fmt.Sprintf("%.0f ms", v) }
func formatRate(v float64) string  { return fmt.Sprintf("%.1f%%", v*100) }

// rules are checked in this order, which is the order of the lines: the
// start-up first, then failures, then volumes.
var rules = []rule{
	{metric: "startup_ms.p99", label: "p99 start-up", format: formatMs,
		value:     func(f Figures) float64 { return f.StartupMs.P99 },
		threshold: SlowStartMs, hasLimit: true, worse: +1, minAbs: 250, minRel: 0.2},
	{metric: "startup_ms.p90", label: "p90 start-up", format: formatMs,
		value: func(f Figures) float64 { return f.StartupMs.P90 },
		worse: +1, minAbs: 250, minRel: 0.2},
	{metric: "startup_ms.p50", label: "p50 start-up", format: formatMs,
		value: func(f Figures) float64 { return f.StartupMs.P50 },
		worse: +1, minAbs: 250, minRel: 0.2},
	{metric: "tasks.connect_failures", label: "connect failures", format: formatCount,
		value:    func(f Figures) float64 { return float64(f.Tasks.ConnectFailures) },
		hasLimit: true, worse: +1, minAbs: 1},
	{metric: "tasks.connect_success_rate", label: "connect success rate", format: formatRate,
		value: func(f Figures) float64 { return f.Tasks.ConnectSuccessRate },
		worse: -1, minAbs: 0.02},
	{metric: "errors.restart_failed", label: "restart failures", format: formatCount,
		value:    func(f Figures) float64 { return float64(f.Errors.RestartFailed) },
		hasLimit: true, worse: +1, minAbs: 1},
	{metric: "errors.access_denied", label: "access-denied errors", format: formatCount,
		value:    func(f Figures) float64 { return float64(f.Errors.AccessDenied) },
		hasLimit: true, worse: +1, minAbs: 1},
	{metric: "errors.task_connect_timeout", label: "task connect time-outs", format: formatCount,
		value: func(f Figures) float64 { return float64(f.Errors.TaskConnectTimeout) },
		worse: +1, minAbs: 1},
	{metric: "errors.no_bridge", label: "no-bridge rejections", format: formatCount,
		value: func(f Figures) float64 { return float64(f.Errors.NoBridge) },
		worse: +1, minAbs: 1},
	{metric: "errors.token_expired", label: "expired tickets", format: formatCount,
		value: func(f Figures) float64 { return float64(f.Errors.TokenExpired) },
		worse: +1, minAbs: 5, minRel: 1},
	{metric: "disconnects.processing", label: "disconnects while processing", format: formatCount,
		value: func(f Figures) float64 { return float64(f.Disconnects.Processing) },
		worse: +1, minAbs: 3, minRel: 0.5},
	{metric: "relay_starts", label: "relay restarts", format: formatCount,
		value: func(f Figures) float64 { return float64(f.RelayStarts) },
		worse: +1, minAbs: 1},
	{metric: "messages.first_token_avg_ms", label: "average first-token latency", format: formatMs,
		value: func(f Figures) float64 { return f.Messages.FirstTokenAvgMs },
		worse: +1, minAbs: 250, minRel: 0.2},
	{metric: "sessions.created", label: "sessions created", format: formatCount,
		value: func(f Figures) float64 { return float64(f.Sessions.Created) },
		worse: -1, minAbs: 5, minRel: 0.5},
}

// Detect lists the anomalies of cur: figures above their threshold (p99
// start-up above 10 s; any connect failure, restart failure or access-denied
// error), and figures that moved the wrong way against base, which is nil
// when there is nothing to compare with. The answer is never nil.
func Detect(cur Figures, base *Baseline) []Anomaly {
	out := []Anomaly{}
	for _, r := range rules {
		if line, ok := r.check(cur, base); ok {
			out = append(out, Anomaly{Metric: r.metric, Message: line})
		}
	}
	return out
}

func (r rule) check(cur Figures, base *Baseline) (string, bool) {
	v := r.value(cur)
	over := r.hasLimit && v > r.threshold
	var b float64
	moved := false
	if base != nil {
		b = r.value(base.Figures)
		moved = r.movedWrongWay(v, b)
	}
	if !over && !moved {
		return "", false
	}

	parts := []string{r.label + " " + r.format(v)}
	switch {
	case over && r.threshold > 0:
		parts = append(parts, "above the "+r.format(r.threshold)+" threshold")
	case over && !moved:
		// A zero threshold needs no words when "up from 0" follows.
		parts = append(parts, "expected none")
	}
	if moved {
		dir := "up"
		if v < b {
			dir = "down"
		}
		parts = append(parts, fmt.Sprintf("%s from %s %s", dir, r.format(b), base.When))
	}
	line := strings.Join(parts, ", ")
	if over && !moved && base != nil {
		line += fmt.Sprintf(" (%s %s)", r.format(b), base.When)
	}
	return line, true
}

func (r rule) movedWrongWay(v, b float64) bool {
	delta := (v - b) * float64(r.worse)
	// The epsilon keeps a change of exactly minAbs (0.95 to 0.93) counting
	// despite binary fractions.
	if delta <= 0 || delta < r.minAbs-1e-9 {
		return false
	}
	return b == 0 || delta/b >= r.minRel
}
