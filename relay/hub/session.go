package hub

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/aishell/aishell/relay/wire"
	"github.com/aishell/aishell/shared/events"
	"github.com/aishell/aishell/shared/logging"
	"github.com/aishell/aishell/shared/session"
)

// outputChunk is the most output data put in one frame when replaying.
const outputChunk = 32 << 10

// backpressureBytes is the client backlog past which task output waits.
const backpressureBytes = 1 << 20

// slowClientLimit is how long task output waits for a client that reads
// nothing before the client's socket is dropped.
const slowClientLimit = 10 * time.Second

type clientConn struct {
	*conn
	attachedAt time.Time
	resumed    bool
	// wantReady: this attach has not had its session_ready yet.
	wantReady bool
}

type queuedInput struct {
	data string
	id   string
}

// sess is the hub's state for one session.
type sess struct {
	h   *Hub
	id  string
	log *slog.Logger

	mu      sync.Mutex // guards the fields below
	userID  string
	client  *clientConn
	task    *taskConn
	state   string // the client-facing state of protocol.md
	ready   bool   // task is connected, ready, and the session marked ready
	ended   bool
	queue   []queuedInput
	qbytes  int
	kept    []byte // output kept for an absent client
	dropped int64  // bytes of kept output dropped at the bound
	busy    bool   // the agent is processing (R7)
	size    *wire.Resize

	idle       *time.Timer
	startWatch *time.Timer
	// startWaitStop cancels the wait for the starting task's end.
	startWaitStop context.CancelFunc
	// restarting guards the session during a restart (R6): no idle timer,
	// no second restart, socket changes never stop the new task.
	restarting   bool
	restartAbort chan string
	restartStop  context.CancelFunc
	crashes      []time.Time
	// roundtripFrom is when the oldest unanswered user message was sent.
	roundtripFrom time.Time
}

func newSess(h *Hub, id, userID, traceID string) *sess {
	log := h.log.With(logging.KeySessionID, id, logging.KeyUserID, userID)
	if traceID != "" {
		// The trace of the session's start, so that the relay's lines join
		// the API's and the workflows' (R16).
		log = log.With(logging.KeyTraceID, traceID)
	}
	return &sess{
		h:      h,
		id:     id,
		userID: userID,
		state:  wire.StateStarting,
		log:    log,
	}
}

// setState changes the client-facing state and tells the client. Called
// with s.mu held.
func (s *sess) setState(state string) {
	if s.state == state {
		return
	}
	s.state = state
	if s.client != nil {
		s.client.send(statusFrame(state))
	}
}

// attachClient attaches a client socket, replacing any older one.
func (s *sess) attachClient(c *clientConn, rec session.Session) {
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		c.send(errFrame(wire.CodeSessionEnded, "the session was ended"))
		c.close(CloseNormal, "session ended")
		return
	}
	if old := s.client; old != nil {
		old.close(CloseNormal, "replaced by a newer connection")
	}
	s.client = c
	c.wantReady = true
	s.stopIdle()

	switch {
	case s.ready && s.task != nil && s.task.alive():
		c.send(statusFrame(wire.StateReady))
		s.flushKept(c)
		s.sendSessionReady(rec, false)
		s.mu.Unlock()
		return
	case s.restarting:
		c.send(statusFrame(wire.StateRestarting))
		s.flushKept(c)
		s.mu.Unlock()
		return
	}
	s.flushKept(c)
	if s.task != nil || (rec.TaskID != "" && rec.State == session.StateStarting) {
		// The session's task is on its way.
		s.state = wire.StateStarting
		c.send(statusFrame(wire.StateStarting))
		s.watchStart(rec)
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	s.recover(rec)
}

// recover decides what a session with no task here needs: a live task
// that lost its socket (a relay restart) gets time to reconnect; a
// stopped one means a restart (R5).
func (s *sess) recover(rec session.Session) {
	ctx := context.Background()
	if rec.TaskHandle != "" && rec.State != session.StateStopped {
		st, err := s.h.svc.Runner.Describe(ctx, rec.TaskHandle)
		if err == nil && (st.State == session.TaskRunning || st.State == session.TaskPending) {
			s.mu.Lock()
			s.state = wire.StateStarting
			if s.client != nil {
				s.client.send(statusFrame(wire.StateStarting))
			}
			s.watchStartFor(rec, s.h.cfg.ReconnectWait)
			s.mu.Unlock()
			return
		}
	}
	reason := "the session had no task"
	if rec.TaskHandle != "" {
		reason = "the session's task had stopped"
	}
	s.restart(reason)
}

// watchStart arms the start watchdog for the rest of StartTimeout.
// Called with s.mu held.
func (s *sess) watchStart(rec session.Session) {
	limit := s.h.cfg.StartTimeout
	if !rec.Start.At.IsZero() {
		if left := limit - time.Since(rec.Start.At); left < limit {
			limit = max(left, time.Second)
		}
	}
	s.watchStartFor(rec, limit)
}

func (s *sess) watchStartFor(rec session.Session, limit time.Duration) {
	s.stopStartWatch()
	begun := time.Now()
	s.startWatch = time.AfterFunc(limit, func() { s.startTimedOut(rec, begun) })

	// A runner that hears of a task's end at once fails the start then,
	// with the task's stop reason, rather than at the time-out.
	w, ok := s.h.svc.Runner.(session.StopWaiter)
	if !ok || rec.TaskHandle == "" {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.startWaitStop = cancel
	go func() {
		st, err := w.Wait(ctx, rec.TaskHandle)
		if err != nil {
			return
		}
		s.mu.Lock()
		live := !s.ready && !s.restarting && !s.ended && s.startWaitStop != nil
		s.mu.Unlock()
		if live {
			s.failStart(context.Background(), rec, "the task stopped before it was ready: "+st.StopReason)
		}
	}()
}

// stopStartWatch disarms the start watchdog. Called with s.mu held.
func (s *sess) stopStartWatch() {
	if s.startWatch != nil {
		s.startWatch.Stop()
		s.startWatch = nil
	}
	if s.startWaitStop != nil {
		s.startWaitStop()
		s.startWaitStop = nil
	}
}

// startTimedOut fails a start whose task never became ready.
func (s *sess) startTimedOut(rec session.Session, begun time.Time) {
	s.mu.Lock()
	if s.ready || s.restarting || s.ended {
		s.mu.Unlock()
		return
	}
	task := s.task
	s.mu.Unlock()

	ctx := context.Background()
	cur, err := s.h.svc.Store.GetSession(ctx, s.id)
	if err != nil {
		cur = rec
	}
	reason := fmt.Sprintf("task %s did not connect and become ready within %s", cur.TaskID, time.Since(begun).Round(time.Second))
	if task != nil {
		reason = fmt.Sprintf("task %s connected but its agent did not become ready within %s", task.id, time.Since(begun).Round(time.Second))
	}
	if cur.TaskHandle != "" {
		if st, err := s.h.svc.Runner.Describe(ctx, cur.TaskHandle); err == nil {
			reason += fmt.Sprintf(" (task is %s", st.State)
			if st.StopReason != "" {
				reason += ": " + st.StopReason
			}
			reason += ")"
		}
	}
	logEvent(ctx, s.log.With(logging.KeyTaskArn, cur.TaskHandle), slog.LevelError, events.TaskConnectTimeout, reason,
		slog.Int64(events.FieldWaitedMs, time.Since(begun).Milliseconds()))
	s.failStart(ctx, cur, reason)
}

// failStart ends a failed (non-restart) start: the client hears
// TASK_START_FAILED with the reason, the task is stopped.
func (s *sess) failStart(ctx context.Context, rec session.Session, reason string) {
	s.mu.Lock()
	if s.restarting || s.ended {
		s.mu.Unlock()
		return
	}
	s.stopStartWatch()
	if s.task != nil {
		s.task.close(CloseNormal, "start failed")
		s.task = nil
	}
	s.ready = false
	if s.client != nil {
		s.client.send(errFrame(wire.CodeTaskStartFailed, reason))
	}
	s.setState(wire.StateStopped)
	s.mu.Unlock()

	if _, _, err := s.h.svc.MarkStopped(ctx, s.id, rec.TaskID); err != nil {
		s.log.WarnContext(ctx, "mark session stopped", logging.KeyEvent, "session_update_failed", "error", err.Error())
	}
	if rec.TaskHandle != "" {
		if err := s.h.svc.Runner.Stop(ctx, rec.TaskHandle, "start failed: "+reason); err != nil {
			s.log.WarnContext(ctx, "stop failed task", logging.KeyEvent, "task_stop_failed", "error", err.Error())
		}
	}
}

// detachClient forgets a client socket that closed (R7: a busy task keeps
// running; an idle one is stopped after the idle time-out).
func (s *sess) detachClient(c *clientConn, reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.client != c {
		return
	}
	s.client = nil
	if out := c.unsentOutput(); out != "" {
		// Output the socket never took goes before anything kept since.
		later := s.kept
		s.kept = nil
		s.keep(out)
		s.keep(string(later))
	}
	state := events.Idle
	if s.busy {
		state = events.Processing
	}
	logEvent(context.Background(), s.log, slog.LevelInfo, events.TaskLifecycle, "client disconnected",
		phase(events.PhaseWSDisconnect),
		slog.String(events.FieldProcessingState, state),
		slog.String(events.FieldReason, reason),
		logging.Duration(time.Since(c.attachedAt)))
	s.armIdle()
}

// armIdle starts the idle timer if the session is idle: no client, a ready
// task doing no work, no restart. Called with s.mu held.
func (s *sess) armIdle() {
	if s.client != nil || s.busy || s.restarting || !s.ready || s.task == nil || s.ended {
		return
	}
	s.stopIdle()
	task := s.task
	s.idle = time.AfterFunc(s.h.cfg.IdleTimeout, func() { s.idleFired(task) })
}

// stopIdle disarms the idle timer. Called with s.mu held.
func (s *sess) stopIdle() {
	if s.idle != nil {
		s.idle.Stop()
		s.idle = nil
	}
}

func (s *sess) idleFired(task *taskConn) {
	s.mu.Lock()
	if s.task != task || s.client != nil || s.busy || s.restarting || !s.ready || s.ended {
		s.mu.Unlock()
		return
	}
	s.ready = false
	s.state = wire.StateStopped
	task.send(wire.Shutdown{Type: wire.TypeShutdown, Reason: "idle"})
	s.mu.Unlock()

	ctx := context.Background()
	rec, changed, err := s.h.svc.MarkStopped(ctx, s.id, task.id)
	if err != nil {
		s.log.ErrorContext(ctx, "mark idle session stopped", logging.KeyEvent, "session_update_failed", "error", err.Error())
	}
	reason := fmt.Sprintf("idle for %s with no client", s.h.cfg.IdleTimeout)
	s.log.InfoContext(ctx, "task stopped for idleness", logging.KeyEvent, "task_idle_stop",
		logging.KeyTaskArn, rec.TaskHandle, "reason", reason)
	if changed && rec.TaskHandle != "" {
		if err := s.h.svc.Runner.Stop(ctx, rec.TaskHandle, reason); err != nil {
			s.log.ErrorContext(ctx, "stop idle task", logging.KeyEvent, "task_stop_failed", "error", err.Error())
		}
	}
}

// clientFrame handles one frame from the client.
func (s *sess) clientFrame(c *clientConn, f []byte) {
	var in wire.Inbound
	if err := json.Unmarshal(f, &in); err != nil {
		// Name the refused frame's id when it has a readable one.
		var withID struct {
			ID string `json:"id"`
		}
		json.Unmarshal(f, &withID)
		c.send(wire.Error{Type: wire.TypeError, ID: withID.ID, Error: wire.ErrorBody{
			Code: wire.CodeBadMessage, Message: "frame is not a valid message: " + err.Error()}})
		return
	}
	switch in.Type {
	case wire.TypePing:
		c.send(wire.Simple{Type: wire.TypePong})
	case wire.TypeInput:
		s.input(c, in)
	case wire.TypeResize:
		if in.Cols < 1 || in.Rows < 1 || in.Cols > 1000 || in.Rows > 1000 {
			c.send(errFrame(wire.CodeBadMessage, fmt.Sprintf("resize to %dx%d is out of range (1..1000)", in.Cols, in.Rows)))
			return
		}
		s.mu.Lock()
		s.size = &wire.Resize{Type: wire.TypeResize, Cols: in.Cols, Rows: in.Rows}
		if s.ready && s.task != nil {
			s.task.send(*s.size)
		}
		s.mu.Unlock()
	case "":
		c.send(errFrame(wire.CodeBadMessage, "frame has no type"))
	default:
		c.send(errFrame(wire.CodeBadMessage, fmt.Sprintf("unknown frame type %q", in.Type)))
	}
}

func (s *sess) input(c *clientConn, in wire.Inbound) {
	if !utf8.ValidString(in.Data) {
		c.send(wire.Error{Type: wire.TypeError, ID: in.ID,
			Error: wire.ErrorBody{Code: wire.CodeBadMessage, Message: "input data is not valid UTF-8"}})
		return
	}
	s.mu.Lock()
	if s.client != c {
		s.mu.Unlock()
		return
	}
	if strings.ContainsAny(in.Data, "\r\n") {
		logEvent(context.Background(), s.log, slog.LevelInfo, events.UserMessage, "user message")
		if s.roundtripFrom.IsZero() {
			s.roundtripFrom = time.Now()
		}
	}
	if s.ready && s.task != nil {
		task := s.task
		s.mu.Unlock()
		if task.sendNow(wire.Input{Type: wire.TypeInput, Data: in.Data, ID: in.ID}) {
			return
		}
		// The task's socket is going; queue the input for the next task.
		s.mu.Lock()
		if s.client != c {
			s.mu.Unlock()
			return
		}
	}

	if len(s.queue) >= s.h.cfg.MaxQueueMsgs || s.qbytes+len(in.Data) > s.h.cfg.MaxQueueBytes {
		c.send(wire.Error{Type: wire.TypeError, ID: in.ID, Error: wire.ErrorBody{Code: wire.CodeQueueFull,
			Message: fmt.Sprintf("input not queued: %d messages (%d bytes) already wait for the task (limits %d messages, %d bytes)",
				len(s.queue), s.qbytes, s.h.cfg.MaxQueueMsgs, s.h.cfg.MaxQueueBytes)}})
		s.mu.Unlock()
		return
	}
	s.queue = append(s.queue, queuedInput{data: in.Data, id: in.ID})
	s.qbytes += len(in.Data)
	stopped := s.state == wire.StateStopped && !s.restarting && s.task == nil
	s.mu.Unlock()
	if stopped {
		s.restart("the user sent input to a stopped session")
	}
}

// acceptTask makes tc the session's task. An older task socket of the
// session is closed: it is not the session's task any more.
func (s *sess) acceptTask(tc *taskConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.task != nil && s.task != tc {
		s.task.close(ClosePolicy, "replaced by task "+tc.id)
	}
	s.task = tc
	s.ready = false
	tc.forRestart = s.restarting
}

// taskFrame handles one frame from the session's task.
func (s *sess) taskFrame(tc *taskConn, in wire.Inbound) {
	switch in.Type {
	case wire.TypeOutput:
		s.output(tc, in.Data)
	case wire.TypeReady:
		s.taskReady(tc)
	case wire.TypeProcessing:
		s.mu.Lock()
		if s.task == tc {
			s.busy = in.Busy
			if in.Busy {
				s.stopIdle()
			} else {
				s.armIdle()
			}
		}
		s.mu.Unlock()
	case wire.TypeShutdown:
		s.log.Info("task is shutting down", logging.KeyEvent, "task_shutdown",
			logging.KeyTaskArn, tc.id, "reason", in.Reason, "exitCode", in.ExitCode)
	}
}

// output passes agent output to the client, or keeps it while the client
// is away (bounded; the client hears of anything dropped). Output goes
// through the client's queue, not inline, so that the relay reads the
// task's output ahead of a slow client and flushes it at shutdown; past
// backpressureBytes the task's reader waits rather than pile output up.
func (s *sess) output(tc *taskConn, data string) {
	s.mu.Lock()
	if s.task != tc {
		s.mu.Unlock()
		return
	}
	if !s.roundtripFrom.IsZero() {
		logEvent(context.Background(), s.log, slog.LevelInfo, events.TaskLifecycle, "first output after a user message",
			phase(events.PhaseMessageRoundtrip), logging.Duration(time.Since(s.roundtripFrom)))
		s.roundtripFrom = time.Time{}
	}
	c := s.client
	if c == nil || !c.sendOutput(data) {
		s.keep(data)
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()

	var slow <-chan time.Time
	for {
		n, drained := c.backlog()
		if n < backpressureBytes {
			return
		}
		if slow == nil {
			t := time.NewTimer(slowClientLimit)
			defer t.Stop()
			slow = t.C
		}
		select {
		case <-drained:
		case <-c.done:
			return
		case <-slow:
			// A client that reads nothing must not stall the task: drop
			// its socket; what it did not take is kept for its return.
			s.log.Warn("client reads no output; dropping its socket", logging.KeyEvent, "client_too_slow",
				"backlogBytes", n)
			c.abort()
			return
		}
	}
}

// keep appends output for an absent client, dropping the oldest bytes past
// the bound. Called with s.mu held.
func (s *sess) keep(data string) {
	s.kept = append(s.kept, data...)
	if over := len(s.kept) - s.h.cfg.MaxKeptOutput; over > 0 {
		// Cut at a character boundary so what is kept stays valid UTF-8.
		for over < len(s.kept) && !utf8.RuneStart(s.kept[over]) {
			over++
		}
		s.dropped += int64(over)
		s.kept = append(s.kept[:0:0], s.kept[over:]...)
	}
}

// flushKept sends kept output to a client that came back. Called with
// s.mu held.
func (s *sess) flushKept(c *clientConn) {
	if s.dropped > 0 {
		c.send(errFrame(wire.CodeQueueFull, fmt.Sprintf(
			"%d bytes of output were dropped while you were away (limit %d bytes); the newest output follows",
			s.dropped, s.h.cfg.MaxKeptOutput)))
		s.dropped = 0
	}
	for len(s.kept) > 0 {
		n := min(outputChunk, len(s.kept))
		for n < len(s.kept) && !utf8.RuneStart(s.kept[n]) {
			n--
		}
		c.send(wire.Output{Type: wire.TypeOutput, Data: string(s.kept[:n])})
		s.kept = s.kept[n:]
	}
	s.kept = nil
}

// taskReady handles the bridge's ready frame: its agent runs.
func (s *sess) taskReady(tc *taskConn) {
	s.mu.Lock()
	if s.task != tc || s.ended {
		s.mu.Unlock()
		return
	}
	tc.ready = true
	if s.restarting {
		// The restart finishes the job once its workflow has seen this.
		s.mu.Unlock()
		s.h.restarter.TaskConnected(s.id, tc.id)
		return
	}
	s.mu.Unlock()

	ctx := context.Background()
	// A task that was the session's ready task already is reconnecting
	// (after a relay restart or a network fault): it is not a new start.
	rec, reconnect, err := s.h.svc.MarkReady(ctx, s.id, tc.id)
	if err != nil {
		s.log.WarnContext(ctx, "task is not the session's; closing it", logging.KeyEvent, "task_superseded",
			logging.KeyTaskArn, tc.id, "error", err.Error())
		tc.close(ClosePolicy, "not the session's task")
		return
	}
	s.mu.Lock()
	if s.task != tc || !tc.alive() || s.restarting {
		s.mu.Unlock()
		return
	}
	s.becomeReady(tc, rec)
	s.mu.Unlock()
	if reconnect {
		s.log.InfoContext(ctx, "task reconnected", logging.KeyEvent, "task_reconnected", logging.KeyTaskArn, rec.TaskHandle)
		return
	}
	s.logReady(ctx, tc, rec, false)
}

// becomeReady delivers queued input to the task, in order, then tells the
// client. Called with s.mu held.
func (s *sess) becomeReady(tc *taskConn, rec session.Session) {
	s.stopStartWatch()
	if s.size != nil {
		tc.send(*s.size)
	}
	for _, q := range s.queue {
		tc.send(wire.Input{Type: wire.TypeInput, Data: q.data, ID: q.id})
	}
	s.queue, s.qbytes = nil, 0
	s.ready = true
	s.setState(wire.StateReady)
	if s.client != nil {
		s.sendSessionReady(rec, true)
	}
	s.armIdle()
}

// sendSessionReady sends session_ready once per attach. Its startup_ms
// counts from the task's start when this attach waited for that start
// (started is true), else from the attach. Called with s.mu held.
func (s *sess) sendSessionReady(rec session.Session, started bool) {
	c := s.client
	if c == nil || !c.wantReady {
		return
	}
	c.wantReady = false
	now := time.Now()
	from := c.attachedAt
	if started && !rec.Start.At.IsZero() && rec.Start.At.Before(from) &&
		from.Sub(rec.Start.At) < s.h.cfg.StartTimeout {
		from = rec.Start.At
	}
	c.send(wire.SessionReady{
		Type: wire.TypeSessionReady, SessionID: s.id, Warm: rec.Warm, Resumed: c.resumed,
		StartupMs: now.Sub(from).Milliseconds(),
	})
	logEvent(context.Background(), s.log, slog.LevelInfo, events.TaskLifecycle, "session ready for its client",
		phase(events.PhaseSessionCreate), logging.Duration(now.Sub(c.attachedAt)))
}

// logReady writes task_ready with its breakdown and, for cold tasks, the
// task_pending and task_connect phases from the runner's timestamps.
func (s *sess) logReady(ctx context.Context, tc *taskConn, rec session.Session, restart bool) {
	// Its runner and store calls (DescribeTasks, the warm record's removal)
	// stay off the task's reading path: the agent's first output must not
	// wait for them.
	now := time.Now()
	s.h.background(func() { s.writeReady(ctx, tc, rec, restart, now) })
}

func (s *sess) writeReady(ctx context.Context, tc *taskConn, rec session.Session, restart bool, now time.Time) {
	log := s.log.With(logging.KeyTaskArn, rec.TaskHandle)
	if rec.TraceID != "" {
		log = log.With(logging.KeyTraceID, rec.TraceID)
	}
	breakdown := []any{
		events.BreakdownAccessPoint, rec.Start.AccessPointMs,
		events.BreakdownRegisterTaskDef, rec.Start.RegisterTaskDefMs,
		events.BreakdownRunTask, rec.Start.RunTaskMs,
	}
	if rec.Warm {
		breakdown = append(breakdown,
			events.BreakdownPendingToRunning, int64(0),
			events.BreakdownWaitConnection, now.Sub(rec.Start.At).Milliseconds()-rec.Start.WarmClaimMs,
			events.BreakdownWarmClaim, rec.Start.WarmClaimMs)
	} else if st, err := s.h.svc.Runner.Describe(ctx, rec.TaskHandle); err == nil && !st.StartedAt.IsZero() {
		pending := st.StartedAt.Sub(st.CreatedAt)
		connect := tc.connectedAt.Sub(st.StartedAt)
		logEvent(ctx, log, slog.LevelInfo, events.TaskLifecycle, "task running",
			phase(events.PhaseTaskPending), logging.Duration(pending))
		logEvent(ctx, log, slog.LevelInfo, events.TaskLifecycle, "task connected",
			phase(events.PhaseTaskConnect), logging.Duration(connect))
		breakdown = append(breakdown,
			events.BreakdownPendingToRunning, pending.Milliseconds(),
			events.BreakdownWaitConnection, now.Sub(st.StartedAt).Milliseconds())
	}
	logEvent(ctx, log, slog.LevelInfo, events.TaskLifecycle, "task ready",
		phase(events.PhaseTaskReady), logging.Duration(now.Sub(rec.Start.At)),
		slog.Bool(events.FieldRestart, restart), slog.Bool(events.FieldWarm, rec.Warm),
		slog.Group(events.FieldBreakdown, breakdown...))
	if rec.Warm {
		if err := s.h.svc.Store.DeleteWarmTask(ctx, tc.id); err != nil {
			log.WarnContext(ctx, "remove claimed warm task record", logging.KeyEvent, "warm_update_failed", "error", err.Error())
		}
	}
}

// taskLost handles the close of a task's socket. A socket that is not the
// session's current task changes nothing (R6).
func (s *sess) taskLost(tc *taskConn, reason string) {
	ctx := context.Background()
	s.mu.Lock()
	if s.task != tc || s.ended {
		s.mu.Unlock()
		return
	}
	s.task = nil
	wasReady := s.ready
	s.ready = false
	s.busy = false
	s.stopIdle()
	if s.restarting {
		if tc.forRestart && s.restartAbort != nil {
			select {
			case s.restartAbort <- "the new task ended before it was ready: " + reason:
			default:
			}
		}
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()

	if s.h.isClosing() {
		// The relay is going away, not the task: the task reconnects to
		// the next relay and the session stays as it is.
		return
	}
	if _, said := tc.lastWords.Load().(string); !said {
		reason = s.stopReason(ctx, tc.id, reason)
	}
	s.log.InfoContext(ctx, "task lost", logging.KeyEvent, "task_lost", logging.KeyTaskArn, tc.id, "reason", reason)
	rec, _, err := s.h.svc.MarkStopped(ctx, s.id, tc.id)
	if err != nil {
		s.log.ErrorContext(ctx, "mark session stopped", logging.KeyEvent, "session_update_failed", "error", err.Error())
	}

	s.mu.Lock()
	if s.task != nil || s.restarting || s.ended {
		s.mu.Unlock()
		return
	}
	if s.client == nil {
		s.state = wire.StateStopped
		s.mu.Unlock()
		return
	}
	if !wasReady {
		s.mu.Unlock()
		s.failStart(ctx, rec, "the task ended before it was ready: "+reason)
		return
	}
	now := time.Now()
	recent := s.crashes[:0]
	for _, t := range s.crashes {
		if now.Sub(t) < s.h.cfg.CrashWindow {
			recent = append(recent, t)
		}
	}
	s.crashes = append(recent, now)
	if len(s.crashes) > s.h.cfg.CrashLimit {
		s.crashes = nil
		s.client.send(errFrame(wire.CodeTaskRestartFailed, fmt.Sprintf(
			"the agent ended %d times within %s, last: %s; not restarting automatically, send input to try again",
			s.h.cfg.CrashLimit+1, s.h.cfg.CrashWindow, reason)))
		s.setState(wire.StateStopped)
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	s.restart(reason)
}

// stopReason asks the runner why a task that left without last words
// ended (the ECS stop reason, or the bridge's exit status); fallback if the
// runner does not know yet. It does not wait: a restart must not be held
// up by a task that is only slow to report.
func (s *sess) stopReason(ctx context.Context, taskID, fallback string) string {
	rec, err := s.h.svc.Store.GetSession(ctx, s.id)
	if err != nil || rec.TaskID != taskID || rec.TaskHandle == "" {
		return fallback
	}
	st, err := s.h.svc.Runner.Describe(ctx, rec.TaskHandle)
	if err != nil || st.StopReason == "" {
		return fallback
	}
	return "task stopped: " + st.StopReason
}

// end closes a deleted session's sockets.
func (s *sess) end() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ended = true
	s.stopIdle()
	s.stopStartWatch()
	if s.restartStop != nil {
		s.restartStop()
	}
	if s.client != nil {
		s.client.send(errFrame(wire.CodeSessionEnded, "the session was ended"))
		s.client.close(CloseNormal, "session ended")
	}
	if s.task != nil {
		s.task.send(wire.Shutdown{Type: wire.TypeShutdown, Reason: "session ended"})
		s.task.close(CloseNormal, "session ended")
	}
}

// shutdown closes the session's sockets for a relay shutdown and returns
// them, to wait for their flush.
func (s *sess) shutdown() []*conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopIdle()
	s.stopStartWatch()
	var out []*conn
	if s.client != nil {
		s.client.send(errFrame(wire.CodeRelayShuttingDown, "the relay is shutting down; resume the session to reconnect"))
		s.client.close(CloseGoingAway, "relay shutting down")
		out = append(out, s.client.conn)
	}
	if s.task != nil {
		s.task.close(CloseGoingAway, "relay shutting down")
		out = append(out, s.task.conn)
	}
	return out
}
