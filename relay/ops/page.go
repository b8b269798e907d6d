package ops

import (
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"html/template"
	"io"
	"math"
	"time"

	"github.com/aishell/aishell/relay/hub"
	"github.com/aishell/aishell/shared/report"
)

// style is the page's look: the web page's dark colours (relay/web's
// app.css), cards for sessions, slots for the warm pool, and the report's
// charts recoloured to match.
const style = `
:root {
  color-scheme: dark;
  --bg: #0d1117; --panel: #161b22; --line: #30363d; --text: #e6edf3; --muted: #9aa4ae;
  --accent: #58a6ff; --ok: #3fb950; --warn: #d29922; --bad: #f85149;
  --mono: ui-monospace, "DejaVu Sans Mono", "Liberation Mono", Menlo, Consolas, monospace;
  --sans: system-ui, "DejaVu Sans", "Liberation Sans", Arial, sans-serif;
}
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--text); font: 14px/1.4 var(--sans); }
.bar { display: flex; flex-wrap: wrap; align-items: center; gap: .75rem 1.5rem; padding: .5rem 1rem;
  background: var(--panel); border-bottom: 1px solid var(--line); }
h1 { margin: 0; font-size: 1rem; font-weight: 600; letter-spacing: .02em; }
h2 { font-size: 1rem; font-weight: 600; margin: 1.6rem 0 .6rem; }
h2 small { color: var(--muted); font-weight: 400; margin-left: .5rem; }
.muted, .bar .where { color: var(--muted); }
#live::before { content: "\25CF  "; color: var(--ok); }
#live[data-state="stale"]::before { color: var(--bad); }
main { padding: 0 1rem 2rem; max-width: 1200px; margin: 0 auto; }
code { font-family: var(--mono); font-size: .85em; color: var(--muted); word-break: break-all; }
.tiles { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: .6rem;
  list-style: none; margin: 0; padding: 0; }
.tile { background: var(--panel); border: 1px solid var(--line); border-radius: 8px; padding: .6rem .8rem; }
.tile .value { font-size: 1.6rem; font-weight: 600; font-variant-numeric: tabular-nums; }
.tile .label { color: var(--muted); }
.tile .note { color: var(--muted); font-size: .85em; }
.tile.bad { border-color: var(--bad); }
.tile.bad .value { color: var(--bad); }
.tile.good .value { color: var(--ok); }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(260px, 1fr)); gap: .6rem;
  list-style: none; margin: 0; padding: 0; }
.card { background: var(--panel); border: 1px solid var(--line); border-left: 4px solid var(--muted);
  border-radius: 8px; padding: .6rem .8rem; }
.card[data-state="ready"] { border-left-color: var(--ok); }
.card[data-state="starting"], .card[data-state="restarting"] { border-left-color: var(--warn); }
.card[data-state="stopped"] { border-left-color: var(--bad); }
.card .muted { font-size: .85em; }
.card .head { display: flex; align-items: baseline; gap: .5rem; }
.card .head strong { flex: 1; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.state { font-size: .85em; color: var(--muted); }
.flags { display: flex; flex-wrap: wrap; gap: .3rem; list-style: none; margin: .4rem 0; padding: 0; }
.flags li { font-size: .8em; padding: 0 .45rem; border-radius: 999px; border: 1px solid var(--line);
  color: var(--muted); }
.flags li.on { color: var(--text); border-color: var(--accent); }
.flags li.on.busy { border-color: var(--warn); }
.flags li.on.warn { border-color: var(--warn); color: var(--warn); }
.meter { display: grid; grid-template-columns: 7.5em 1fr 5.5em; align-items: center; gap: .4rem;
  font-size: .85em; color: var(--muted); }
.meter svg { width: 100%; height: 6px; }
.meter .num { text-align: right; font-variant-numeric: tabular-nums; }
svg .track { fill: var(--line); }
svg .fill { fill: var(--accent); }
svg .fill.full { fill: var(--bad); }
.pool { max-width: 100%; height: auto; }
.pool .slot { fill: none; stroke: var(--line); stroke-dasharray: 4 3; }
.pool .task { stroke: none; }
.pool .task.available { fill: var(--ok); }
.pool .task.starting { fill: var(--warn); }
.pool .task.claimed { fill: var(--accent); }
.pool text { fill: var(--muted); font-size: 11px; text-anchor: middle; }
table { border-collapse: collapse; margin: .6rem 0; }
th, td { padding: .2rem .8rem; border-bottom: 1px solid var(--line); text-align: left; white-space: nowrap; }
th { color: var(--muted); font-weight: 400; }
ul.anomalies { list-style: none; padding: 0; margin: .6rem 0; }
ul.anomalies li { border-left: 4px solid var(--bad); background: rgba(248, 81, 73, .1);
  margin: .25rem 0; padding: .25rem .6rem; }
.charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(520px, 1fr)); gap: .6rem; }
.charts figure { margin: 0; background: var(--panel); border: 1px solid var(--line); border-radius: 8px;
  padding: .4rem; }
.chart { width: 100%; height: auto; }
.chart .bar { fill: var(--accent); }
.chart .axis { stroke: var(--muted); }
.chart .limit { stroke: var(--bad); stroke-dasharray: 6 4; }
.chart text { font-size: 11px; text-anchor: middle; fill: var(--muted); }
.chart text.title { font-size: 13px; text-anchor: start; font-weight: 600; fill: var(--text); }
.chart text.value { fill: var(--text); }
.error { color: var(--bad); }
a { color: var(--accent); }
`

// script refreshes the page's data in place every data-refresh seconds,
// keeping the scroll position, and pauses while the tab is hidden.
// Without scripts a meta refresh reloads the page instead.
const script = `
(() => {
  const every = Number(document.body.dataset.refresh || 5) * 1000;
  const live = document.getElementById("live");
  async function refresh() {
    if (!document.hidden) {
      try {
        const res = await fetch(location.pathname, { cache: "no-store" });
        if (!res.ok) throw new Error("HTTP " + res.status);
        const doc = new DOMParser().parseFromString(await res.text(), "text/html");
        const next = doc.getElementById("ops");
        if (!next) throw new Error("no data in the answer");
        document.getElementById("ops").replaceWith(next);
        live.dataset.state = "live";
        live.textContent = "live";
      } catch (err) {
        live.dataset.state = "stale";
        live.textContent = "not updated: " + err.message;
      }
    }
    setTimeout(refresh, every);
  }
  setTimeout(refresh, every);
})();
`

// hashSource is a CSP source allowing exactly one inline element's text.
func hashSource(text string) string {
	sum := sha256.Sum256([]byte(text))
	return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
}

// pagePolicy lets the page run its own script and style only, and fetch
// only from its own origin.
var pagePolicy = "default-src 'none'; script-src " + hashSource(script) + "; style-src " +
	hashSource(style) + "; img-src data:; connect-src 'self'; base-uri 'none'; " +
	"form-action 'none'; frame-ancestors 'none'"

// reportPolicy is report.WriteHTML's page's: its own inline style only.
const reportPolicy = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; " +
	"form-action 'none'; frame-ancestors 'none'"

type tile struct {
	Label, Value, Note string
	Class              string // "bad", "good" or ""
}

type sessionView struct {
	hub.SessionInfo
	QueuePct, KeptPct float64 // of the hub's bounds, 0 to 100
	Kept              string
}

type slotView struct {
	X                 int
	Empty             bool
	ID, State, Age    string
	SessionID, Status string
}

type pageView struct {
	S           Snapshot
	Refresh     int
	Updated     string
	ReportBuilt string // when the log files were last read
	Style       template.CSS
	Script      template.JS
	Now         []tile
	Sessions    []sessionView
	Slots       []slotView
	PoolW       int
	Today       []tile
	Charts      []template.HTML
}

const slotW = 64 // the width of one warm pool slot in SVG units

var page = template.Must(template.New("ops").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>AI Shell operator: {{.S.RelayID}}</title>
<link rel="icon" href="data:,">
<noscript><meta http-equiv="refresh" content="{{.Refresh}}"></noscript>
<style>{{.Style}}</style>
</head>
<body data-refresh="{{.Refresh}}">
<header class="bar">
<h1>AI Shell operator</h1>
<span class="where">{{.S.RelayID}} · {{.S.Env}}</span>
<span id="live" data-state="live">live</span>
</header>
<main id="ops">
<h2>Now <small>updated {{.Updated}} UTC, every {{.Refresh}} s</small></h2>
<ul class="tiles">
{{range .Now}}<li class="tile {{.Class}}"><div class="value">{{.Value}}</div><div class="label">{{.Label}}</div>{{with .Note}}<div class="note">{{.}}</div>{{end}}</li>
{{end}}</ul>

<h2>Sessions <small>{{len .Sessions}} held by the relay</small></h2>
{{if .Sessions}}<ul class="cards">
{{range .Sessions}}<li class="card" data-state="{{.State}}" data-session="{{.ID}}">
<div class="head"><strong title="user">{{.UserID}}</strong><span class="state">{{.State}}</span></div>
<code title="session">{{.ID}}</code>
<ul class="flags">
<li{{if .Client}} class="on"{{end}}>client {{if .Client}}attached{{else}}away{{end}}</li>
<li{{if .Ready}} class="on"{{end}}>{{if .Ready}}ready{{else}}not ready{{end}}</li>
<li{{if .Busy}} class="on busy"{{end}}>{{if .Busy}}busy{{else}}idle{{end}}</li>
{{if .Restarting}}<li class="on warn">restarting</li>{{end}}
</ul>
<div class="meter"><span>queued input</span><svg viewBox="0 0 100 6" preserveAspectRatio="none" aria-hidden="true"><rect class="track" width="100" height="6"/><rect class="fill{{if ge .QueuePct 100.0}} full{{end}}" width="{{.QueuePct}}" height="6"/></svg><span class="num">{{.Queued}}</span></div>
<div class="meter"><span>kept output</span><svg viewBox="0 0 100 6" preserveAspectRatio="none" aria-hidden="true"><rect class="track" width="100" height="6"/><rect class="fill{{if ge .KeptPct 100.0}} full{{end}}" width="{{.KeptPct}}" height="6"/></svg><span class="num">{{.Kept}}</span></div>
<div class="muted">{{with .TaskID}}task <code>{{.}}</code>{{else}}no task connected{{end}}</div>
</li>
{{end}}</ul>{{else}}<p class="muted">No session.</p>{{end}}

<h2>Warm pool <small>{{if .S.Warm.Target}}target {{.S.Warm.Target}}, {{.S.Warm.Connected}} connected and free{{else}}off{{end}}</small></h2>
{{with .S.Warm.Error}}<p class="error">{{.}}</p>{{end}}
{{if .Slots}}<svg class="pool" viewBox="0 0 {{.PoolW}} 70" width="{{.PoolW}}" height="70" role="img" aria-label="warm pool">
{{range .Slots}}{{if .Empty}}<rect class="slot" x="{{.X}}" y="4" width="52" height="40" rx="6"><title>free slot</title></rect><text x="{{.X}}" dx="26" y="62">empty</text>
{{else}}<rect class="task {{.State}}" x="{{.X}}" y="4" width="52" height="40" rx="6"><title>{{.ID}}: {{.Status}}</title></rect><text x="{{.X}}" dx="26" y="62">{{.Age}}</text>
{{end}}{{end}}</svg>{{end}}
{{if .S.Warm.Tasks}}<table>
<tr><th>warm task</th><th>state</th><th>age</th><th>session</th></tr>
{{range .Slots}}{{if not .Empty}}<tr data-task="{{.ID}}"><td><code>{{.ID}}</code></td><td>{{.State}}</td><td>{{.Age}}</td><td>{{with .SessionID}}<code>{{.}}</code>{{end}}</td></tr>
{{end}}{{end}}</table>{{else}}<p class="muted">No warm task.</p>{{end}}

<h2>Today <small>{{.S.Report.Day}} (UTC) so far, from the log files</small></h2>
{{with .S.Report.Error}}<p class="error">{{.}}</p>{{end}}
{{if .Today}}<ul class="tiles">
{{range .Today}}<li class="tile {{.Class}}"><div class="value">{{.Value}}</div><div class="label">{{.Label}}</div>{{with .Note}}<div class="note">{{.}}</div>{{end}}</li>
{{end}}</ul>
{{if .S.Report.Anomalies}}<ul class="anomalies">
{{range .S.Report.Anomalies}}<li data-metric="{{.Metric}}">{{.Message}}</li>
{{end}}</ul>{{else}}<p class="muted">No figure past its threshold today.</p>{{end}}{{end}}
{{if .Charts}}<h2>Start-up and the last {{len .S.Report.Days}} days</h2>
<div class="charts">
{{range .Charts}}<figure>{{.}}</figure>
{{end}}</div>{{end}}
{{if .S.Report.Week}}<p class="muted">{{.S.Report.Lines}} log lines read at {{.ReportBuilt}} UTC{{if .S.Report.Unparsed}}, {{.S.Report.Unparsed}} of them not log events{{end}}. <a href="/ops/report">The report of the last {{len .S.Report.Days}} days</a> · <a href="/ops.json">JSON</a></p>{{end}}
</main>
<script>{{.Script}}</script>
</body>
</html>
`))

// WritePage writes the operator page of s, refreshing every refresh.
func WritePage(w io.Writer, s Snapshot, refresh time.Duration) error {
	v := pageView{
		S:           s,
		Refresh:     max(1, int(refresh.Round(time.Second)/time.Second)),
		Updated:     s.Time.UTC().Format(time.TimeOnly),
		ReportBuilt: s.Report.BuiltAt.UTC().Format(time.TimeOnly),
		Style:       template.CSS(style),
		Script:      template.JS(script),
		Charts:      s.Report.charts,
	}

	clients := 0
	for _, si := range s.Sessions {
		if si.Client {
			clients++
		}
		v.Sessions = append(v.Sessions, sessionView{
			SessionInfo: si,
			QueuePct:    percent(si.Queued, s.Limits.QueueMsgs),
			KeptPct:     percent(si.KeptBytes, s.Limits.KeptOutput),
			Kept:        formatBytes(si.KeptBytes),
		})
	}
	available := 0
	for _, t := range s.Warm.Tasks {
		if t.State == "available" {
			available++
		}
	}
	warm := tile{Label: "warm tasks available", Value: fmt.Sprint(available), Note: "pool off"}
	if s.Warm.Target > 0 {
		warm.Value = fmt.Sprintf("%d / %d", available, s.Warm.Target)
		warm.Note = fmt.Sprintf("%d connected and free", s.Warm.Connected)
		if available == 0 {
			warm.Class = "bad"
		}
	}
	v.Now = []tile{
		{Label: "sessions held", Value: fmt.Sprint(s.Hub.Sessions)},
		{Label: "clients attached", Value: fmt.Sprint(s.Hub.Clients)},
		{Label: "tasks connected", Value: fmt.Sprint(s.Hub.Tasks)},
		warm,
	}

	for i := range max(s.Warm.Target, len(s.Warm.Tasks)) {
		sv := slotView{X: 4 + i*slotW, Empty: i >= len(s.Warm.Tasks)}
		if !sv.Empty {
			t := s.Warm.Tasks[i]
			sv.ID, sv.State, sv.SessionID = t.ID, t.State, t.SessionID
			sv.Age = formatAge(time.Duration(t.AgeMs) * time.Millisecond)
			sv.Status = t.State + ", started " + sv.Age + " ago"
		}
		v.Slots = append(v.Slots, sv)
	}
	v.PoolW = 8 + len(v.Slots)*slotW

	if r := s.Report; r.Today != nil {
		v.Today = todayTiles(*r.Today, r.Yesterday)
	}
	return page.Execute(w, v)
}

// todayTiles lays out today's figures, yesterday's beside them.
func todayTiles(f report.Figures, y *report.Figures) []tile {
	was := func(format string, args ...any) string {
		if y == nil {
			return ""
		}
		return "yesterday " + fmt.Sprintf(format, args...)
	}
	var yf report.Figures
	if y != nil {
		yf = *y
	}
	errs := f.Errors.AccessDenied + f.Errors.TaskConnectTimeout + f.Errors.NoBridge + f.Errors.TokenExpired +
		f.Errors.RestartFailed
	yerrs := yf.Errors.AccessDenied + yf.Errors.TaskConnectTimeout + yf.Errors.NoBridge + yf.Errors.TokenExpired +
		yf.Errors.RestartFailed
	tiles := []tile{
		{Label: "sessions created", Value: fmt.Sprint(f.Sessions.Created),
			Note: was("%d", yf.Sessions.Created)},
		{Label: "task starts", Value: fmt.Sprint(f.Tasks.Starts),
			Note: fmt.Sprintf("%d restarts", f.Tasks.Restarts)},
		{Label: "connect success", Value: fmt.Sprintf("%.1f%%", f.Tasks.ConnectSuccessRate*100),
			Note: fmt.Sprintf("%d of %d connected", f.Tasks.Connected, f.Tasks.Starts)},
		{Label: "start-up p50", Value: formatMs(f.StartupMs.P50), Note: was("%s", formatMs(yf.StartupMs.P50))},
		{Label: "start-up p90", Value: formatMs(f.StartupMs.P90), Note: was("%s", formatMs(yf.StartupMs.P90))},
		{Label: "start-up p99", Value: formatMs(f.StartupMs.P99), Note: was("%s", formatMs(yf.StartupMs.P99))},
		{Label: "errors", Value: fmt.Sprint(errs), Note: was("%d", yerrs)},
		{Label: "disconnects while processing", Value: fmt.Sprint(f.Disconnects.Processing),
			Note: fmt.Sprintf("%d while idle", f.Disconnects.Idle)},
		{Label: "user messages", Value: fmt.Sprint(f.Messages.UserMessages),
			Note: "first output after " + formatMs(f.Messages.FirstTokenAvgMs)},
		{Label: "relay starts", Value: fmt.Sprint(f.RelayStarts)},
	}
	if f.Tasks.ConnectFailures > 0 {
		tiles[2].Class = "bad"
	} else if f.Tasks.Starts > 0 {
		tiles[2].Class = "good"
	}
	if f.StartupMs.P99 > report.SlowStartMs {
		tiles[5].Class = "bad"
	}
	if f.Errors.AccessDenied+f.Errors.RestartFailed > 0 {
		tiles[6].Class = "bad"
	}
	return tiles
}

// percent is n of limit, from 0 to 100; a positive n shows at least a
// sliver.
func percent(n, limit int) float64 {
	if n <= 0 || limit <= 0 {
		return 0
	}
	return math.Min(100, math.Max(2, math.Round(float64(n)*1000/float64(limit))/10))
}

func formatMs(ms float64) string {
	if ms >= 10000 {
		return fmt.Sprintf("%.1f s", ms/1000)
	}
	return fmt.Sprintf("%.0f ms", ms)
}

func formatAge(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%d s", max(0, int(d/time.Second)))
	case d < time.Hour:
		return fmt.Sprintf("%d min", int(d/time.Minute))
	default:
		return fmt.Sprintf("%d h %d min", int(d/time.Hour), int(d%time.Hour/time.Minute))
	}
}

func formatBytes(n int) string {
	switch {
	case n < 1<<10:
		return fmt.Sprintf("%d B", n)
	case n < 1<<20:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	default:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
}
