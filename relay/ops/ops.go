// Package ops serves the operator page of one machine: what the relay holds
// right now (its live sessions and the warm pool) and how today went (the
// daily report of R14 over the product's own log files, with its start-up
// histogram and the trend of the last seven days), as a picture that
// refreshes itself.
//
//	GET /ops         the page (no external resource; charts are inline SVG)
//	GET /ops.json    the same data as JSON
//	GET /ops/report  the full report of the last seven days (report.WriteHTML)
//
// It answers loopback peers only: the page names every user and session.
// The relay mounts it on one machine only (relay/local).
package ops

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"html/template"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/aishell/aishell/relay/hub"
	"github.com/aishell/aishell/shared/logging"
	"github.com/aishell/aishell/shared/report"
	"github.com/aishell/aishell/shared/session"
)

// Paths the handler answers.
const (
	PagePath   = "/ops"
	JSONPath   = "/ops.json"
	ReportPath = "/ops/report"
)

// Events of the page's own log lines.
const (
	eventReportFailed = "ops_report_failed"
	eventWarmFailed   = "ops_warm_pool_failed"
)

// TrendDays is how many days the trend and the histogram cover.
const TrendDays = 7

// Hub is what the page reads of the relay's hub; *hub.Hub is one.
type Hub interface {
	Sessions() []hub.SessionInfo
	Stats() hub.Stats
	Config() hub.Config
}

// WarmTasks lists a relay's warm task records; the session store is one.
type WarmTasks interface {
	ListWarmTasks(ctx context.Context, relayID string) ([]session.WarmTask, error)
}

// Options configure the page.
type Options struct {
	Hub   Hub
	Store WarmTasks
	// RelayID names the relay whose warm tasks are listed.
	RelayID string
	// WarmTarget is the pool's configured size; 0 when the pool is off.
	WarmTarget int
	// LogsDir holds the product's JSON log files ($DATA_DIR/logs).
	LogsDir string
	// Env names the report ("local").
	Env string
	// Refresh is how often the page reloads its data (5 s).
	Refresh time.Duration
	// ReportEvery bounds how often the log files are read again (30 s):
	// every refresh of every open page would otherwise read a week of
	// logs.
	ReportEvery time.Duration
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	Log *slog.Logger
}

// Handler serves the operator page.
type Handler struct {
	o   Options
	log *slog.Logger

	// reportMu guards cached, and is held while a report builds, so that
	// pages opened at once read the files once.
	reportMu sync.Mutex
	cached   *Report

	warmMu  sync.Mutex // guards lastErr
	lastErr string     // the last warm-pool error logged, so that it is logged once
}

// New returns the page's handler.
func New(o Options) *Handler {
	if o.Refresh <= 0 {
		o.Refresh = 5 * time.Second
	}
	if o.ReportEvery <= 0 {
		o.ReportEvery = 30 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = logging.Discard()
	}
	return &Handler{o: o, log: logging.Module(o.Log, "ops")}
}

// Snapshot is everything the page shows, at one moment.
type Snapshot struct {
	Time     time.Time         `json:"time"`
	Env      string            `json:"env"`
	RelayID  string            `json:"relayId"`
	Hub      hub.Stats         `json:"hub"`
	Limits   Limits            `json:"limits"`
	Sessions []hub.SessionInfo `json:"sessions"` // by session id
	Warm     WarmPool          `json:"warmPool"`
	Report   Report            `json:"report"`
}

// Limits are the hub's bounds that the page draws the sessions' queues
// and kept output against.
type Limits struct {
	QueueMsgs  int `json:"queueMsgs"`
	KeptOutput int `json:"keptOutputBytes"`
}

// WarmPool is the relay's warm pool: its target, the warm sockets the hub
// holds, and the store's records.
type WarmPool struct {
	Target    int        `json:"target"`
	Connected int        `json:"connected"`
	Tasks     []WarmTask `json:"tasks"` // oldest first
	Error     string     `json:"error,omitempty"`
}

// WarmTask is one warm task record.
type WarmTask struct {
	ID        string    `json:"id"`
	State     string    `json:"state"`
	StartedAt time.Time `json:"startedAt"`
	AgeMs     int64     `json:"age_ms"`
	SessionID string    `json:"sessionId,omitempty"`
}

// Report is today's report and the trend of the last TrendDays days, read
// from the log files.
type Report struct {
	BuiltAt time.Time `json:"builtAt"`
	Day     string    `json:"day"` // today, YYYY-MM-DD (UTC)
	// Today's figures so far, and yesterday's whole day beside them.
	Today     *report.Figures `json:"today,omitempty"`
	Yesterday *report.Figures `json:"yesterday,omitempty"`
	// Anomalies are today's figures past a fixed threshold. A part of a
	// day is not compared with a whole one, so no "down from" lines.
	Anomalies []report.Anomaly `json:"anomalies"`
	// Week is the report of the last TrendDays days against the ones
	// before, in its JSON form.
	Week    *report.Report `json:"week,omitempty"`
	Days    []Day          `json:"days"`
	Startup []Bin          `json:"startupHistogram"` // of the week
	// Lines and Unparsed count the log lines read for the week.
	Lines    int    `json:"lines"`
	Unparsed int    `json:"unparsed"`
	Error    string `json:"error,omitempty"`

	charts []template.HTML // the week report's SVG charts
}

// Day is one day of the trend.
type Day struct {
	Date    string         `json:"date"`
	Figures report.Figures `json:"figures"`
}

// Bin is one bar of the start-up histogram.
type Bin struct {
	Label string `json:"label"`
	Count int    `json:"count"`
}

// ServeHTTP serves the page, its JSON and the week's report to loopback
// peers.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if !loopback(r.RemoteAddr) {
		http.Error(w, "the operator page answers this machine only", http.StatusForbidden)
		return
	}
	hdr := w.Header()
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Referrer-Policy", "no-referrer")

	switch r.URL.Path {
	case PagePath, PagePath + "/":
		var b bytes.Buffer
		if err := WritePage(&b, h.Snapshot(r.Context()), h.o.Refresh); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		hdr.Set("Content-Type", "text/html; charset=utf-8")
		hdr.Set("Content-Security-Policy", pagePolicy)
		w.Write(b.Bytes())
	case JSONPath:
		b, err := json.MarshalIndent(h.Snapshot(r.Context()), "", "  ")
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		hdr.Set("Content-Type", "application/json")
		w.Write(append(b, '\n'))
	case ReportPath:
		h.serveReport(w, r)
	default:
		http.NotFound(w, r)
	}
}

// serveReport writes the week's report as report.WriteHTML makes it.
func (h *Handler) serveReport(w http.ResponseWriter, r *http.Request) {
	rep := h.report(r.Context(), h.o.Now())
	if rep.Week == nil {
		http.Error(w, "no report: "+rep.Error, http.StatusServiceUnavailable)
		return
	}
	var b bytes.Buffer
	if err := report.WriteHTML(&b, rep.Week); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", reportPolicy)
	w.Write(b.Bytes())
}

// loopback reports whether a peer address is on this machine.
func loopback(remoteAddr string) bool {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Snapshot gathers what the page shows. Nothing in it fails the page: a
// part that cannot be read says why in its Error.
func (h *Handler) Snapshot(ctx context.Context) Snapshot {
	now := h.o.Now()
	cfg := h.o.Hub.Config()
	s := Snapshot{
		Time:     now.UTC(),
		Env:      h.o.Env,
		RelayID:  h.o.RelayID,
		Hub:      h.o.Hub.Stats(),
		Limits:   Limits{QueueMsgs: cfg.MaxQueueMsgs, KeptOutput: cfg.MaxKeptOutput},
		Sessions: h.o.Hub.Sessions(),
	}
	if s.Sessions == nil {
		s.Sessions = []hub.SessionInfo{}
	}
	slices.SortFunc(s.Sessions, func(a, b hub.SessionInfo) int { return strings.Compare(a.ID, b.ID) })
	s.Warm = h.warmPool(ctx, now, s.Hub.WarmAvailable)
	s.Report = h.report(ctx, now)
	return s
}

func (h *Handler) warmPool(ctx context.Context, now time.Time, connected int) WarmPool {
	p := WarmPool{Target: h.o.WarmTarget, Connected: connected, Tasks: []WarmTask{}}
	list, err := h.o.Store.ListWarmTasks(ctx, h.o.RelayID)
	h.warmMu.Lock()
	logIt := err != nil && err.Error() != h.lastErr
	if err != nil {
		h.lastErr = err.Error()
	} else {
		h.lastErr = ""
	}
	h.warmMu.Unlock()
	if err != nil {
		if logIt {
			logging.Event(ctx, h.log, slog.LevelWarn, eventWarmFailed, "list warm tasks: "+err.Error())
		}
		p.Error = "list warm tasks: " + err.Error()
		return p
	}
	for _, t := range list {
		p.Tasks = append(p.Tasks, WarmTask{
			ID: t.ID, State: string(t.State), StartedAt: t.StartedAt.UTC(),
			AgeMs: now.Sub(t.StartedAt).Milliseconds(), SessionID: t.SessionID,
		})
	}
	return p
}

// report returns today's report, read again from the log files when the
// cached one is older than ReportEvery or of another day.
func (h *Handler) report(ctx context.Context, now time.Time) Report {
	h.reportMu.Lock()
	defer h.reportMu.Unlock()
	day := now.UTC().Format(time.DateOnly)
	if c := h.cached; c != nil && c.Day == day && now.Sub(c.BuiltAt) < h.o.ReportEvery {
		return *c
	}
	// The files are local and bounded: a reader that goes away does not
	// cut the build short and leave a failed report cached.
	r := BuildReport(context.WithoutCancel(ctx), h.o.LogsDir, h.o.Env, now)
	if r.Error != "" {
		logging.Event(ctx, h.log, slog.LevelWarn, eventReportFailed, r.Error)
	}
	h.cached = &r
	return r
}

// BuildReport reads the log files in dir for the TrendDays days ending with
// now's UTC day. A failure is in the answer's Error.
func BuildReport(ctx context.Context, dir, env string, now time.Time) Report {
	out := Report{
		BuiltAt:   now.UTC(),
		Day:       now.UTC().Format(time.DateOnly),
		Anomalies: []report.Anomaly{},
		Days:      []Day{},
		Startup:   []Bin{},
	}
	week, err := report.Build(ctx, report.Dir{Path: dir},
		report.Options{Env: env, Period: report.PeriodEnding(now, TrendDays)})
	if err != nil {
		out.Error = "read the log files: " + err.Error()
		return out
	}
	out.Week = week
	out.Lines, out.Unparsed = week.Scanned.Lines, week.Scanned.Unparsed
	for _, d := range week.Days {
		out.Days = append(out.Days, Day{Date: d.Date.Format(time.DateOnly), Figures: d.Figures})
	}
	today, yesterday := week.Days[TrendDays-1].Figures, week.Days[TrendDays-2].Figures
	out.Today, out.Yesterday = &today, &yesterday
	out.Anomalies = report.Detect(today, nil)
	for _, b := range report.Histogram(week.Startups) {
		out.Startup = append(out.Startup, Bin{Label: b.Label, Count: b.Count})
	}

	var page bytes.Buffer
	if err := report.WriteHTML(&page, week); err != nil {
		out.Error = err.Error()
		return out
	}
	out.charts = charts(page.String())
	if len(out.charts) == 0 {
		out.Error = errNoCharts.Error()
	}
	return out
}

var errNoCharts = errors.New("the report's page has no charts to show")

// chartSVG matches the inline SVG charts of report.WriteHTML. They are
// taken from its page rather than drawn again, so that this page and the
// report show the same pictures.
var chartSVG = regexp.MustCompile(`(?s)<svg class="chart".*?</svg>`)

// charts returns the SVG charts of a report page, in order.
func charts(page string) []template.HTML {
	var out []template.HTML
	for _, svg := range chartSVG.FindAllString(page, -1) {
		// WriteHTML escaped every text in them.
		out = append(out, template.HTML(svg))
	}
	return out
}

// Charts returns how many charts the page shows with the report.
func (r Report) Charts() int { return len(r.charts) }
