package report

import (
	"fmt"
	"html"
	"html/template"
	"io"
	"math"
	"strings"
	"time"
)

// Bin is one bar of the start-up histogram: the durations above the previous
// bin's upper bound and at most UpToMs (the last bin has no bound).
type Bin struct {
	Label  string
	UpToMs float64 // +Inf for the last bin
	Count  int
}

// histogramBounds are the upper bounds of the start-up bins in ms, chosen
// around the product's figures: a warm start near 260 ms, a cold one near
// 3 s, the 10 s threshold and the 30 s restart bound.
var histogramBounds = []struct {
	upTo  float64
	label string
}{
	{250, "≤0.25 s"}, {500, "0.25-0.5 s"}, {1000, "0.5-1 s"}, {2000, "1-2 s"},
	{3000, "2-3 s"}, {5000, "3-5 s"}, {SlowStartMs, "5-10 s"}, {20000, "10-20 s"},
	{VerySlowStartMs, "20-30 s"}, {math.Inf(1), ">30 s"},
}

// Histogram counts durations in ms into the report's start-up bins.
func Histogram(durations []float64) []Bin {
	bins := make([]Bin, len(histogramBounds))
	for i, b := range histogramBounds {
		bins[i] = Bin{Label: b.label, UpToMs: b.upTo}
	}
	for _, ms := range durations {
		for i := range bins {
			if ms <= bins[i].UpToMs {
				bins[i].Count++
				break
			}
		}
	}
	return bins
}

// Chart sizes in SVG user units.
const (
	chartW      = 720
	chartH      = 240
	chartTop    = 34 // room for the title and the value over the tallest bar
	chartBottom = 28 // room for the labels under the bars
	chartSide   = 12
)

// barChart draws one series as an inline SVG bar chart, one bar per label,
// each with its value above it, and a dashed line at limit when limit > 0.
// It reads no external resource.
func barChart(title string, labels []string, values []float64,
	format func(float64) string, limit float64) template.HTML {
	top := limit
	for _, v := range values {
		top = max(top, v)
	}
	if top <= 0 {
		top = 1
	}
	plotH := float64(chartH - chartTop - chartBottom)
	plotW := float64(chartW - 2*chartSide)
	y := func(v float64) float64 { return chartTop + plotH*(1-v/(top*1.05)) }
	slot := plotW / float64(max(1, len(values)))

	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart" viewBox="0 0 %d %d" width="%d" height="%d" `+
		`role="img" aria-label="%s">`, chartW, chartH, chartW, chartH, html.EscapeString(title))
	fmt.Fprintf(&b, `<text class="title" x="%d" y="16">%s</text>`, chartSide, html.EscapeString(title))
	fmt.Fprintf(&b, `<line class="axis" x1="%d" y1="%.1f" x2="%d" y2="%.1f"/>`,
		chartSide, y(0), chartW-chartSide, y(0))
	for i, v := range values {
		x := chartSide + slot*float64(i)
		fmt.Fprintf(&b, `<rect class="bar" x="%.1f" y="%.1f" width="%.1f" height="%.1f">`+
			`<title>%s: %s</title></rect>`, x+slot*0.15, y(v), slot*0.7, y(0)-y(v),
			html.EscapeString(labels[i]), html.EscapeString(format(v)))
		fmt.Fprintf(&b, `<text class="value" x="%.1f" y="%.1f">%s</text>`,
			x+slot/2, y(v)-4, html.EscapeString(format(v)))
		fmt.Fprintf(&b, `<text class="label" x="%.1f" y="%d">%s</text>`,
			x+slot/2, chartH-10, html.EscapeString(labels[i]))
	}
	if limit > 0 {
		fmt.Fprintf(&b, `<line class="limit" x1="%d" y1="%.1f" x2="%d" y2="%.1f"><title>%s</title></line>`,
			chartSide, y(limit), chartW-chartSide, y(limit), html.EscapeString(format(limit)))
	}
	b.WriteString(`</svg>`)
	// Every text in it went through html.EscapeString above.
	return template.HTML(b.String())
}

type htmlRow struct {
	Label, Value, Base string
}

type htmlSection struct {
	Title string
	Rows  []htmlRow
}

type htmlView struct {
	Title, ComparedWith, Footnote string
	Period, BaselinePeriod        string
	Anomalies                     []Anomaly
	Sections                      []htmlSection
	Charts                        []template.HTML
	DailyHead                     []string
	Daily                         [][]string
}

var page = template.Must(template.New("report").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{.Title}}</title>
<style>
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 900px; color: #1b1b1b; }
h1 { font-size: 1.5em; }
h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .4em 0; min-width: 60%; }
figure { margin: 1em 0; }
th, td { padding: .2em .8em; border-bottom: 1px solid #ddd; text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
ul.anomalies li { background: #fde8e6; border-left: 4px solid #c62828; margin: .25em 0;
  padding: .25em .6em; list-style: none; }
ul.anomalies { padding: 0; }
.chart .bar { fill: #3b6ea8; }
.chart .axis { stroke: #888; }
.chart .limit { stroke: #c62828; stroke-dasharray: 6 4; }
.chart text { font-size: 11px; text-anchor: middle; fill: #333; }
.chart text.title { font-size: 13px; text-anchor: start; font-weight: 600; }
.note { color: #666; }
</style>
</head>
<body>
<h1>{{.Title}}</h1>
<p>{{.ComparedWith}}</p>
<h2>Anomalies</h2>
{{if .Anomalies}}<ul class="anomalies">
{{range .Anomalies}}<li data-metric="{{.Metric}}">{{.Message}}</li>
{{end}}</ul>{{else}}<p>None.</p>{{end}}
{{range .Sections}}
<h2>{{.Title}}</h2>
<table>
<tr><th></th><th>{{$.Period}}</th>{{if $.BaselinePeriod}}<th>{{$.BaselinePeriod}}</th>{{end}}</tr>
{{range .Rows}}<tr><td>{{.Label}}</td><td>{{.Value}}</td>{{if $.BaselinePeriod}}<td>{{.Base}}</td>{{end}}</tr>
{{end}}</table>
{{end}}
<h2>Start-up distribution and daily trend</h2>
{{range .Charts}}<figure>{{.}}</figure>
{{end}}
<h2>Day by day</h2>
<table>
<tr><th>day</th>{{range .DailyHead}}<th>{{.}}</th>{{end}}</tr>
{{range .Daily}}<tr>{{range .}}<td>{{.}}</td>{{end}}</tr>
{{end}}</table>
{{with .Footnote}}<p class="note">{{.}}</p>{{end}}
</body>
</html>
`))

// WriteHTML writes the report as one self-contained HTML page: the figures
// of the markdown form, an SVG histogram of the start-up latency, and SVG
// charts of task starts and p99 start-up per day.
func WriteHTML(w io.Writer, r *Report) error {
	v := htmlView{
		Title:        r.Title(),
		ComparedWith: r.comparedWith(),
		Footnote:     r.footnote(),
		Period:       r.Period.String(),
		Anomalies:    r.Anomalies,
	}
	if r.Baseline != nil {
		v.BaselinePeriod = r.Baseline.Period.String()
	}
	for _, s := range sections {
		hs := htmlSection{Title: s.title}
		for _, row := range s.rows {
			hr := htmlRow{Label: row.label, Value: row.value(r.Figures)}
			if r.Baseline != nil {
				hr.Base = row.value(r.Baseline.Figures)
			}
			hs.Rows = append(hs.Rows, hr)
		}
		v.Sections = append(v.Sections, hs)
	}

	bins := Histogram(r.Startups)
	labels := make([]string, len(bins))
	counts := make([]float64, len(bins))
	for i, b := range bins {
		labels[i], counts[i] = b.Label, float64(b.Count)
	}
	v.Charts = append(v.Charts, barChart("Start-up latency (task_ready), tasks per bin",
		labels, counts, formatCount, 0))

	days := make([]string, len(r.Days))
	starts := make([]float64, len(r.Days))
	p99 := make([]float64, len(r.Days))
	for i, d := range r.Days {
		days[i] = d.Date.Format("01-02")
		starts[i] = float64(d.Figures.Tasks.Starts)
		p99[i] = d.Figures.StartupMs.P99
	}
	v.Charts = append(v.Charts,
		barChart("Task starts per day", days, starts, formatCount, 0),
		barChart("p99 start-up per day (dashed: the 10 s threshold)", days, p99, formatMs, SlowStartMs))

	for _, c := range dailyColumns {
		v.DailyHead = append(v.DailyHead, c.label)
	}
	for _, d := range r.Days {
		cells := []string{d.Date.Format(time.DateOnly)}
		for _, c := range dailyColumns {
			cells = append(cells, c.value(d.Figures))
		}
		v.Daily = append(v.Daily, cells)
	}

	if err := page.Execute(w, v); err != nil {
		return fmt.Errorf("write report html: %w", err)
	}
	return nil
}
