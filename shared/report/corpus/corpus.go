// Package corpus generates realistic AI Shell log corpora for testing the
// daily report: sessions created and resumed, warm and cold task starts,
// restarts, failures of every class, disconnects while processing and while
// idle, message round trips and relay restarts, over several UTC days, with
// the noise real logs carry (start-up banners, a line cut short, events the
// report does not count, lines written just after midnight).
//
// The generator knows the true figures because it decides them: every
// counted event it writes is tallied at the moment it is written, so a test
// compares the report with what happened rather than with a second reading
// of the same lines.
package corpus

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"time"

	"github.com/aishell/aishell/shared/events"
	"github.com/aishell/aishell/shared/logging"
	"github.com/aishell/aishell/shared/report"
)

// Services that write the corpus, each with its own files and log group.
const (
	ServiceRelay   = "relay"
	ServiceLambdas = "lambdas"
)

// Designed values of the incident day (Options.BadDay).
const (
	BadDayRestartFailures = 3
	BadDaySlowStartMs     = 12400
	BadDayRelayStarts     = 2
)

// Options shape a corpus.
type Options struct {
	First          time.Time // the first UTC day
	Days           int
	Seed           uint64
	SessionsPerDay int // on average; 40 when zero
	// BadDay is the index of a day with an incident: exactly
	// BadDayRestartFailures restart failures (one of them access denied),
	// one start of BadDaySlowStartMs that is the day's slowest, and
	// BadDayRelayStarts relay restarts. The day before it is calm: no
	// restart failure, no relay restart and no start above 10 s.
	// Negative: no incident.
	BadDay int
}

// Line is one log line of the corpus.
type Line struct {
	Service string
	Time    time.Time // the event's timestamp
	Written time.Time // when it was written, which names its file
	Text    string    // without the newline
}

// Corpus is a generated set of log lines with the true figures per day.
type Corpus struct {
	Lines   []Line // in order of Time
	first   time.Time
	days    []truth
	garbage map[time.Time]int // unparseable lines per day of file
}

// truth is what the generator wrote on one day, counted as it wrote it.
type truth struct {
	figures    report.Figures // counts only; derived figures are left zero
	startups   []float64
	roundSumMs float64
	roundtrips int
}

// Generate makes a corpus. The same options give the same corpus.
func Generate(o Options) *Corpus {
	if o.SessionsPerDay == 0 {
		o.SessionsPerDay = 40
	}
	y, m, d := o.First.UTC().Date()
	g := &gen{
		c: &Corpus{
			first:   time.Date(y, m, d, 0, 0, 0, 0, time.UTC),
			days:    make([]truth, o.Days),
			garbage: map[time.Time]int{},
		},
		loggers: map[string]*slog.Logger{},
		buf:     &bytes.Buffer{},
	}
	for _, svc := range []string{ServiceRelay, ServiceLambdas} {
		g.loggers[svc] = logging.New(g.buf, svc, slog.LevelDebug)
	}
	for day := range o.Days {
		g.rng = rand.New(rand.NewPCG(o.Seed, uint64(day)))
		g.day(day, o)
	}
	sort.SliceStable(g.c.Lines, func(i, j int) bool { return g.c.Lines[i].Time.Before(g.c.Lines[j].Time) })
	return g.c
}

// Want returns the true figures of the days of p that the corpus covers.
func (c *Corpus) Want(p report.Period) report.Figures {
	var f report.Figures
	var startups []float64
	var roundSum float64
	var roundtrips int
	for day := p.First; day.Before(p.End()); day = day.AddDate(0, 0, 1) {
		i := int(day.Sub(c.first) / (24 * time.Hour))
		if i < 0 || i >= len(c.days) {
			continue
		}
		t := c.days[i]
		f = addCounts(f, t.figures)
		startups = append(startups, t.startups...)
		roundSum += t.roundSumMs
		roundtrips += t.roundtrips
	}

	f.Tasks.ConnectFailures = max(0, f.Tasks.Starts-f.Tasks.Connected)
	f.Tasks.ConnectSuccessRate = 1
	if f.Tasks.Starts > 0 {
		r := float64(f.Tasks.Connected) / float64(f.Tasks.Starts)
		f.Tasks.ConnectSuccessRate = min(1, float64(int64(r*1e4+0.5))/1e4)
	}
	slices.Sort(startups)
	f.StartupMs.Count = len(startups)
	f.StartupMs.P50 = nearestRank(startups, 50)
	f.StartupMs.P90 = nearestRank(startups, 90)
	f.StartupMs.P99 = nearestRank(startups, 99)
	for _, ms := range startups {
		f.StartupMs.Max = max(f.StartupMs.Max, ms)
		if ms > 10000 {
			f.StartupMs.Over10s++
		}
		if ms > 30000 {
			f.StartupMs.Over30s++
		}
	}
	if roundtrips > 0 {
		f.Messages.FirstTokenAvgMs = float64(int64(roundSum/float64(roundtrips) + 0.5))
	}
	return f
}

// Startups returns the true task_ready durations of p, sorted.
func (c *Corpus) Startups(p report.Period) []float64 {
	var out []float64
	for i, t := range c.days {
		day := c.first.AddDate(0, 0, i)
		if !day.Before(p.Start()) && day.Before(p.End()) {
			out = append(out, t.startups...)
		}
	}
	slices.Sort(out)
	return out
}

// Garbage is the number of unparseable lines in the files of one UTC day.
func (c *Corpus) Garbage(day time.Time) int {
	return c.garbage[day.UTC().Truncate(24*time.Hour)]
}

// nearestRank is the smallest value with at least p % of values at or below
// it, found by walking the sorted values.
func nearestRank(sorted []float64, p int) float64 {
	n := len(sorted)
	for i, v := range sorted {
		if (i+1)*100 >= p*n {
			return v
		}
	}
	return 0
}

func addCounts(a, b report.Figures) report.Figures {
	a.Sessions.Created += b.Sessions.Created
	a.Sessions.Resumed += b.Sessions.Resumed
	a.Tasks.Starts += b.Tasks.Starts
	a.Tasks.Restarts += b.Tasks.Restarts
	a.Tasks.Connected += b.Tasks.Connected
	a.Errors.AccessDenied += b.Errors.AccessDenied
	a.Errors.TaskConnectTimeout += b.Errors.TaskConnectTimeout
	a.Errors.NoBridge += b.Errors.NoBridge
	a.Errors.TokenExpired += b.Errors.TokenExpired
	a.Errors.RestartFailed += b.Errors.RestartFailed
	a.Disconnects.Processing += b.Disconnects.Processing
	a.Disconnects.Idle += b.Disconnects.Idle
	a.RelayStarts += b.RelayStarts
	a.Messages.UserMessages += b.Messages.UserMessages
	return a
}

// WriteFiles writes the corpus as shared/logging.DailyFile does on one
// machine: SERVICE-YYYY-MM-DD.jsonl in dir, by the UTC day each line was
// written.
func (c *Corpus) WriteFiles(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create corpus folder: %w", err)
	}
	files := map[string]*bytes.Buffer{}
	var names []string
	for _, l := range c.Lines {
		name := l.Service + "-" + l.Written.Format(time.DateOnly) + ".jsonl"
		if files[name] == nil {
			files[name] = &bytes.Buffer{}
			names = append(names, name)
		}
		files[name].WriteString(l.Text + "\n")
	}
	for _, name := range names {
		if err := os.WriteFile(filepath.Join(dir, name), files[name].Bytes(), 0o644); err != nil {
			return fmt.Errorf("write corpus file: %w", err)
		}
	}
	return nil
}

// gen holds the state of one generation.
type gen struct {
	c       *Corpus
	rng     *rand.Rand
	loggers map[string]*slog.Logger
	buf     *bytes.Buffer
}

// ids of one session.
type ids struct {
	session, user, task, trace string
}

func (g *gen) hex(n int) string {
	const digits = "0123456789abcdef"
	b := make([]byte, n)
	for i := range b {
		b[i] = digits[g.rng.IntN(16)]
	}
	return string(b)
}

func (g *gen) newIDs() ids {
	return ids{
		session: "s-" + g.hex(12),
		user:    fmt.Sprintf("user-%03d", g.rng.IntN(60)),
		task:    "arn:aws:ecs:us-east-1:000000000000:task/aishell-local/" + g.hex(32),
		trace:   "1-" + g.hex(8) + "-" + g.hex(24),
	}
}

func (id ids) attrs() []slog.Attr {
	return []slog.Attr{
		slog.String(logging.KeySessionID, id.session),
		slog.String(logging.KeyUserID, id.user),
		slog.String(logging.KeyTaskArn, id.task),
		slog.String(logging.KeyTraceID, id.trace),
	}
}

// truthOf is the truth of the day of t; events outside the corpus's days
// are written but belong to no day.
func (g *gen) truthOf(t time.Time) *truth {
	i := int(t.Sub(g.c.first) / (24 * time.Hour))
	if t.Before(g.c.first) || i >= len(g.c.days) {
		return &truth{}
	}
	return &g.c.days[i]
}

// log writes one event line through shared/logging's handler, so the corpus
// has exactly the format the product writes.
func (g *gen) log(t time.Time, svc, module string, level slog.Level, event, msg string, attrs ...slog.Attr) {
	written := t.Add(time.Duration(g.rng.IntN(3)) * time.Millisecond)
	g.writeAt(t, written, svc, module, level, event, msg, attrs...)
}

func (g *gen) writeAt(t, written time.Time, svc, module string, level slog.Level,
	event, msg string, attrs ...slog.Attr) {
	g.buf.Reset()
	r := slog.NewRecord(t, level, msg, 0)
	r.AddAttrs(slog.String(logging.KeyModule, module), slog.String(logging.KeyEvent, event))
	r.AddAttrs(attrs...)
	if err := g.loggers[svc].Handler().Handle(context.Background(), r); err != nil {
		panic(fmt.Sprintf("corpus: write log line: %v", err)) // a bytes.Buffer does not fail
	}
	g.c.Lines = append(g.c.Lines, Line{
		Service: svc, Time: t, Written: written,
		Text: string(bytes.TrimSuffix(g.buf.Bytes(), []byte("\n"))),
	})
}

// garbageLine writes a line that is not a JSON event.
func (g *gen) garbageLine(t time.Time, svc, text string) {
	g.c.Lines = append(g.c.Lines, Line{Service: svc, Time: t, Written: t, Text: text})
	g.c.garbage[t.UTC().Truncate(24*time.Hour)]++
}

func ms(n int) time.Duration { return time.Duration(n) * time.Millisecond }

func lifecycle(phase string) slog.Attr { return slog.String(events.FieldPhase, phase) }

func durationMs(n int) slog.Attr { return slog.Int64(logging.KeyDurationMs, int64(n)) }

// day writes the events of day index i.
func (g *gen) day(i int, o Options) {
	start := g.c.first.AddDate(0, 0, i)
	bad := i == o.BadDay
	calm := i == o.BadDay-1

	// Midnight exactly belongs to the new day; a line stamped a moment
	// before midnight is written into the next day's file.
	g.ticketRejected(start, events.ReasonExpired)
	late := start.Add(24*time.Hour - time.Millisecond)
	id := g.newIDs()
	g.writeAt(late, late.Add(3*time.Millisecond), ServiceRelay, "pairing", slog.LevelInfo,
		events.UserMessage, "user message", id.attrs()...)
	g.truthOf(late).figures.Messages.UserMessages++

	if i == 0 {
		g.relayStarted(start.Add(2 * time.Minute))
	}
	if bad {
		g.relayStarted(start.Add(9*time.Hour + 13*time.Minute))
		g.relayStarted(start.Add(9*time.Hour + 14*time.Minute))
	}
	g.garbageLine(start.Add(17*time.Hour+ms(g.rng.IntN(3600000))), ServiceLambdas,
		`{"timestamp":"`+start.Add(17*time.Hour).Format("2006-01-02T15:04:05.000Z07:00")+
			`","level":"info","event":"task_lif`)

	// Warm pool size every hour: read by nobody in the report.
	for h := range 24 {
		t := start.Add(time.Duration(h)*time.Hour + 30*time.Second)
		g.log(t, ServiceRelay, "refill", slog.LevelInfo, events.WarmPool, "warm pool",
			slog.Int(events.FieldAvailable, g.rng.IntN(3)), slog.Int(events.FieldStarting, g.rng.IntN(2)),
			slog.Int(events.FieldTarget, 2))
	}

	for range g.rng.IntN(4) {
		g.ticketRejected(g.at(start), events.ReasonExpired)
	}
	for range g.rng.IntN(3) {
		g.ticketRejected(g.at(start), events.ReasonInvalid)
	}
	for range g.rng.IntN(2) {
		g.log(g.at(start), ServiceRelay, "pairing", slog.LevelWarn, events.TaskRejected,
			"task rejected", slog.String(events.FieldReason, events.ReasonBadCredential))
	}

	n := o.SessionsPerDay + g.rng.IntN(11) - 5
	slowDone := false
	restartFailures := 0
	for s := range n {
		t := g.at(start)
		id := g.newIDs()
		slow := 0
		switch {
		case bad && !slowDone:
			slow, slowDone = BadDaySlowStartMs, true
		case i == 1 && s == 0 && !bad && !calm:
			slow = 31000
		case !bad && !calm && g.rng.Float64() < 0.02:
			slow = 10500 + g.rng.IntN(3000)
		}
		t = g.newSession(t, id, slow, !calm)

		if g.rng.Float64() < 0.3 || (bad && restartFailures < BadDayRestartFailures) {
			fail := ""
			switch {
			case bad && restartFailures < BadDayRestartFailures:
				fail = []string{"access_denied", "timeout", "no_capacity"}[restartFailures]
				restartFailures++
			case !bad && !calm && g.rng.Float64() < 0.1:
				fail = "timeout"
			}
			g.resume(t.Add(time.Duration(30+g.rng.IntN(90))*time.Minute), id, fail)
		}
	}
}

// at is a random instant of the day starting at start, clear of midnight by
// more than a session's length.
func (g *gen) at(start time.Time) time.Time {
	return start.Add(10*time.Minute + ms(g.rng.IntN(int((21 * time.Hour).Milliseconds()))))
}

func (g *gen) ticketRejected(t time.Time, reason string) {
	g.log(t, ServiceRelay, "pairing", slog.LevelWarn, events.TicketRejected, "ticket rejected",
		slog.String(events.FieldReason, reason))
	if reason == events.ReasonExpired {
		g.truthOf(t).figures.Errors.TokenExpired++
	}
}

func (g *gen) relayStarted(t time.Time) {
	g.garbageLine(t, ServiceRelay, "aishell relay listening on 127.0.0.1:8080")
	g.log(t.Add(ms(1)), ServiceRelay, "main", slog.LevelInfo, events.RelayStarted, "relay started",
		slog.String(events.FieldRelayID, "relay-"+g.hex(6)))
	g.truthOf(t.Add(ms(1))).figures.RelayStarts++
}

// newSession writes a new session from create to its client leaving, and
// returns when it ended. slow > 0 forces a cold start of that many ms;
// failures says whether start failures may happen.
func (g *gen) newSession(t time.Time, id ids, slow int, failures bool) time.Time {
	warm := slow == 0 && g.rng.Float64() < 0.6
	g.log(t, ServiceLambdas, "session", slog.LevelInfo, events.SessionCreated, "session created",
		append(id.attrs(), slog.Bool(events.FieldResumed, false), slog.Bool(events.FieldWarm, warm))...)
	g.truthOf(t).figures.Sessions.Created++

	outcome := "ready"
	if failures && slow == 0 {
		switch p := g.rng.Float64(); {
		case p < 0.02:
			outcome = "access_denied"
		case p < 0.04:
			outcome = "no_capacity"
		case p < 0.07:
			outcome = "timeout"
		case p < 0.10:
			outcome = "early"
		}
	}
	t, ok := g.start(t.Add(ms(5+g.rng.IntN(20))), id, warm, false, slow, outcome)
	if !ok {
		return t
	}
	g.log(t, ServiceRelay, "pairing", slog.LevelInfo, events.TaskLifecycle, "session ready",
		append(id.attrs(), lifecycle(events.PhaseSessionCreate), durationMs(g.rng.IntN(400)+50))...)
	return g.converse(t, id)
}

// start writes one task start and its outcome; it returns when the task was
// ready (or failed) and whether it became ready.
func (g *gen) start(t time.Time, id ids, warm, restart bool, slow int, outcome string) (time.Time, bool) {
	g.log(t, ServiceLambdas, "session", slog.LevelInfo, events.TaskLifecycle, "task start",
		append(id.attrs(), lifecycle(events.PhaseTaskStart), slog.Bool(events.FieldRestart, restart))...)
	tr := g.truthOf(t)
	tr.figures.Tasks.Starts++
	if restart {
		tr.figures.Tasks.Restarts++
	}

	switch outcome {
	case "access_denied", "no_capacity":
		code, reason := "AccessDeniedException", "not authorized to perform ecs:RunTask"
		if outcome == "no_capacity" {
			code, reason = "RESOURCE:MEMORY", "no container instance has enough memory"
		}
		t = t.Add(ms(80 + g.rng.IntN(200)))
		g.log(t, ServiceLambdas, "session", slog.LevelError, events.TaskStartFailed, "task start failed",
			append(id.attrs(), slog.String(events.FieldErrorCode, code),
				slog.String(events.FieldReason, reason))...)
		if code == "AccessDeniedException" {
			g.truthOf(t).figures.Errors.AccessDenied++
		}
		return t, false
	case "timeout":
		t = t.Add(30 * time.Second)
		g.log(t, ServiceRelay, "pairing", slog.LevelError, events.TaskConnectTimeout, "task never connected",
			append(id.attrs(), slog.Int(events.FieldWaitedMs, 30000))...)
		g.truthOf(t).figures.Errors.TaskConnectTimeout++
		return t, false
	}

	// The parts of a start, in ms; they add up to its duration.
	var parts []slog.Attr
	total := 0
	part := func(key string, n int) {
		parts = append(parts, slog.Int(key, n))
		total += n
	}
	if warm {
		part(events.BreakdownWarmClaim, 20+g.rng.IntN(60))
		part(events.BreakdownWaitConnection, 90+g.rng.IntN(270))
	} else {
		part(events.BreakdownAccessPoint, 0)
		part(events.BreakdownRegisterTaskDef, 0)
		part(events.BreakdownRunTask, 250+g.rng.IntN(500))
		pending := 1700 + g.rng.IntN(2800)
		if slow > 0 {
			pending = slow - total - 400
		}
		part(events.BreakdownPendingToRunning, pending)
		g.log(t.Add(ms(total)), ServiceLambdas, "session", slog.LevelInfo, events.TaskLifecycle,
			"task running",
			append(id.attrs(), lifecycle(events.PhaseTaskPending), durationMs(pending))...)
		wait := 250 + g.rng.IntN(700)
		if slow > 0 {
			wait = slow - total
		}
		part(events.BreakdownWaitConnection, wait)
	}

	if outcome == "early" {
		// The task reached the relay before its session: turned away,
		// then accepted on its retry (R3).
		g.log(t.Add(ms(total-40)), ServiceRelay, "pairing", slog.LevelWarn, events.TaskRejected,
			"task rejected",
			append(id.attrs(), slog.String(events.FieldReason, events.ReasonUnknownSession))...)
		g.truthOf(t.Add(ms(total-40))).figures.Errors.NoBridge++
	}
	g.log(t.Add(ms(total-2)), ServiceRelay, "pairing", slog.LevelInfo, events.TaskLifecycle, "task connected",
		append(id.attrs(), lifecycle(events.PhaseTaskConnect), durationMs(g.rng.IntN(300)))...)
	t = t.Add(ms(total))
	g.log(t, ServiceRelay, "pairing", slog.LevelInfo, events.TaskLifecycle, "task ready",
		append(id.attrs(), lifecycle(events.PhaseTaskReady), durationMs(total),
			slog.Bool(events.FieldRestart, restart), slog.GroupAttrs(events.FieldBreakdown, parts...))...)
	tr = g.truthOf(t)
	tr.figures.Tasks.Connected++
	tr.startups = append(tr.startups, float64(total))
	return t, true
}

// converse writes a few user messages with their round trips and the
// client's disconnect; it returns when the client left.
func (g *gen) converse(t time.Time, id ids) time.Time {
	for range g.rng.IntN(6) {
		t = t.Add(ms(5000 + g.rng.IntN(120000)))
		g.log(t, ServiceRelay, "pairing", slog.LevelInfo, events.UserMessage, "user message", id.attrs()...)
		g.truthOf(t).figures.Messages.UserMessages++
		rt := 1200 + g.rng.IntN(5000)
		g.log(t.Add(ms(rt)), ServiceRelay, "pairing", slog.LevelInfo, events.TaskLifecycle, "first output",
			append(id.attrs(), lifecycle(events.PhaseMessageRoundtrip), durationMs(rt))...)
		tr := g.truthOf(t.Add(ms(rt)))
		tr.roundSumMs += float64(rt)
		tr.roundtrips++
		t = t.Add(ms(rt))
	}

	t = t.Add(ms(1000 + g.rng.IntN(600000)))
	state, reason := events.Idle, "client_closed"
	if g.rng.Float64() < 0.25 {
		state, reason = events.Processing, "network"
	}
	g.log(t, ServiceRelay, "pairing", slog.LevelInfo, events.TaskLifecycle, "client disconnected",
		append(id.attrs(), lifecycle(events.PhaseWSDisconnect),
			slog.String(events.FieldProcessingState, state), slog.String(events.FieldReason, reason))...)
	tr := g.truthOf(t)
	if state == events.Processing {
		tr.figures.Disconnects.Processing++
	} else {
		tr.figures.Disconnects.Idle++
	}
	return t
}

// resume writes the user coming back. Half the time the task is still
// there; otherwise it was stopped for idleness and the session restarts,
// failing with fail when that is not empty.
func (g *gen) resume(t time.Time, id ids, fail string) {
	g.log(t, ServiceLambdas, "session", slog.LevelInfo, events.SessionCreated, "session resumed",
		append(id.attrs(), slog.Bool(events.FieldResumed, true), slog.Bool(events.FieldWarm, false))...)
	g.truthOf(t).figures.Sessions.Resumed++
	if fail == "" && g.rng.Float64() < 0.5 {
		g.converse(t.Add(ms(200)), id)
		return
	}

	id.task = "arn:aws:ecs:us-east-1:000000000000:task/aishell-local/" + g.hex(32)
	begin := t.Add(ms(40))
	switch fail {
	case "":
		ready, _ := g.start(begin, id, false, true, 0, "ready")
		took := int(ready.Sub(t).Milliseconds()) + 30
		g.log(ready.Add(ms(30)), ServiceLambdas, "restart", slog.LevelInfo, events.TaskLifecycle,
			"restart done", append(id.attrs(), lifecycle(events.PhaseTaskRestart), durationMs(took),
				slog.Bool(events.FieldSuccess, true))...)
		g.converse(ready.Add(ms(30)), id)
		return
	case "timeout":
		end, _ := g.start(begin, id, false, true, 0, "timeout")
		g.restartFailed(end, t, id, "wait_connection", "", "task did not connect within 30 s")
	case "access_denied":
		// The production fault: status checks denied, the restart broke.
		g.log(begin, ServiceLambdas, "session", slog.LevelInfo, events.TaskLifecycle, "task start",
			append(id.attrs(), lifecycle(events.PhaseTaskStart), slog.Bool(events.FieldRestart, true))...)
		tr := g.truthOf(begin)
		tr.figures.Tasks.Starts++
		tr.figures.Tasks.Restarts++
		g.restartFailed(begin.Add(ms(600)), t, id, "wait_running", "AccessDeniedException",
			"not authorized to perform ecs:DescribeTasks")
		g.truthOf(begin.Add(ms(600))).figures.Errors.AccessDenied++
	case "no_capacity":
		end, _ := g.start(begin, id, false, true, 0, "no_capacity")
		g.restartFailed(end.Add(ms(5)), t, id, "start_task", "RESOURCE:MEMORY", "no capacity")
	}
}

func (g *gen) restartFailed(at, begin time.Time, id ids, step, code, reason string) {
	attrs := append(id.attrs(), slog.String(events.FieldStep, step), slog.String(events.FieldReason, reason))
	if code != "" {
		attrs = append(attrs, slog.String(events.FieldErrorCode, code))
	}
	g.log(at, ServiceLambdas, "restart", slog.LevelError, events.TaskRestartFailed, "restart failed",
		attrs...)
	g.truthOf(at).figures.Errors.RestartFailed++
	g.log(at.Add(ms(1)), ServiceLambdas, "restart", slog.LevelInfo, events.TaskLifecycle, "restart done",
		append(id.attrs(), lifecycle(events.PhaseTaskRestart), durationMs(int(at.Sub(begin).Milliseconds())),
			slog.Bool(events.FieldSuccess, false))...)
}
