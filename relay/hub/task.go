package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/aishell/aishell/relay/wire"
	"github.com/aishell/aishell/shared/events"
	"github.com/aishell/aishell/shared/logging"
	"github.com/aishell/aishell/shared/session"
)

// taskConn is the socket of one task's bridge.
type taskConn struct {
	*conn
	id          string
	connectedAt time.Time
	// sess is nil while a warm task waits for its claim.
	sess atomic.Pointer[sess]
	// forRestart marks a task accepted while its session restarts.
	forRestart bool
	// ready is set when the bridge said its agent runs (guarded by the
	// session's mutex).
	ready bool
	// lastWords is the reason of the bridge's own shutdown frame.
	lastWords atomic.Value
}

func (tc *taskConn) reason(fallback string) string {
	if w, ok := tc.lastWords.Load().(string); ok && w != "" {
		return w
	}
	return fallback
}

// ServeTask runs the socket of a task started for sessionID, whose
// credential named taskID, until it closes. A task whose session does not
// name it yet is held for up to HoldTimeout, woken by session changes
// rather than polling, then closed with 1008 (R3).
func (h *Hub) ServeTask(t Transport, sessionID, taskID string) {
	tc := &taskConn{conn: newConn(t, h.cfg.PingInterval), id: taskID, connectedAt: time.Now()}
	log := h.log.With(logging.KeySessionID, sessionID, logging.KeyTaskArn, taskID)
	ctx := context.Background()
	if h.isClosing() {
		tc.close(CloseGoingAway, "relay shutting down")
		<-tc.done
		return
	}

	rec, waited, ok := h.hold(ctx, sessionID, taskID)
	if !ok {
		logEvent(ctx, log, slog.LevelWarn, events.TaskRejected,
			fmt.Sprintf("task held %s but session %s never named it; closing", waited.Round(time.Millisecond), sessionID),
			slog.String(events.FieldReason, events.ReasonUnknownSession),
			slog.Int64(events.FieldWaitedMs, waited.Milliseconds()))
		tc.close(ClosePolicy, "unknown session")
		<-tc.done
		return
	}
	if waited > 0 {
		log.InfoContext(ctx, "early task connection held until its session named it",
			logging.KeyEvent, "task_held", events.FieldWaitedMs, waited.Milliseconds())
	}
	s := h.session(rec.ID, rec.UserID, rec.TraceID)
	tc.sess.Store(s)
	s.acceptTask(tc)
	h.serveTaskFrames(tc)
}

// hold waits until the session's record names taskID as its task.
func (h *Hub) hold(ctx context.Context, sessionID, taskID string) (session.Session, time.Duration, bool) {
	start := time.Now()
	deadline := time.NewTimer(h.cfg.HoldTimeout)
	defer deadline.Stop()
	for {
		// Take the change signal before reading, so no change is missed.
		changed := h.changedChan()
		rec, err := h.svc.Store.GetSession(ctx, sessionID)
		if err == nil && rec.TaskID == taskID {
			return rec, time.Since(start), true
		}
		select {
		case <-changed:
		case <-deadline.C:
			return session.Session{}, time.Since(start), false
		case <-h.quit:
			return session.Session{}, time.Since(start), false
		}
	}
}

// ServeWarm runs the socket of a warm task until it closes. The task waits
// in the pool until a session claims it (InitUser).
func (h *Hub) ServeWarm(t Transport, taskID string) {
	tc := &taskConn{conn: newConn(t, h.cfg.PingInterval), id: taskID, connectedAt: time.Now()}
	log := h.log.With(logging.KeyTaskArn, taskID)
	ctx := context.Background()

	w, ok := h.holdWarm(ctx, taskID)
	if !ok {
		logEvent(ctx, log, slog.LevelWarn, events.TaskRejected, "warm task unknown to the pool; closing",
			slog.String(events.FieldReason, events.ReasonUnknownSession))
		tc.close(ClosePolicy, "unknown warm task")
		<-tc.done
		return
	}
	if err := h.markAvailable(ctx, w); err != nil {
		log.ErrorContext(ctx, "mark warm task available", logging.KeyEvent, "warm_update_failed", "error", err.Error())
		tc.close(CloseInternalError, "store unavailable")
		<-tc.done
		return
	}
	h.mu.Lock()
	if h.closing.Load() {
		h.mu.Unlock()
		tc.close(CloseGoingAway, "relay shutting down")
		<-tc.done
		return
	}
	h.warm[taskID] = tc
	h.mu.Unlock()
	log.InfoContext(ctx, "warm task connected", logging.KeyEvent, "warm_task_connected")
	h.serveTaskFrames(tc)
}

// markAvailable records that a warm task's bridge connected, reading the
// record again if the refiller wrote it meanwhile (its handle).
func (h *Hub) markAvailable(ctx context.Context, w session.WarmTask) error {
	for attempt := 0; ; attempt++ {
		w.State, w.ReadyAt = session.WarmAvailable, time.Now()
		_, err := h.svc.Store.UpdateWarmTask(ctx, w)
		if !errors.Is(err, session.ErrConflict) || attempt == 5 {
			return err
		}
		list, lerr := h.svc.Store.ListWarmTasks(ctx, h.cfg.RelayID)
		if lerr != nil {
			return lerr
		}
		found := false
		for _, cur := range list {
			if cur.ID == w.ID && cur.State == session.WarmStarting {
				w, found = cur, true
			}
		}
		if !found {
			return fmt.Errorf("warm task %s was removed or claimed while it connected", w.ID)
		}
	}
}

func (h *Hub) holdWarm(ctx context.Context, taskID string) (session.WarmTask, bool) {
	deadline := time.NewTimer(h.cfg.HoldTimeout)
	defer deadline.Stop()
	for {
		changed := h.changedChan()
		list, err := h.svc.Store.ListWarmTasks(ctx, h.cfg.RelayID)
		if err == nil {
			for _, w := range list {
				if w.ID == taskID && w.State != session.WarmClaimed {
					return w, true
				}
			}
		}
		select {
		case <-changed:
		case <-deadline.C:
			return session.WarmTask{}, false
		case <-h.quit:
			return session.WarmTask{}, false
		}
	}
}

// serveTaskFrames reads a task's frames until its socket closes, then
// reports the loss to its session (or the pool).
func (h *Hub) serveTaskFrames(tc *taskConn) {
	reason := h.readLoop(tc.conn, func(f []byte) {
		var in wire.Inbound
		if err := json.Unmarshal(f, &in); err != nil {
			h.log.Warn("malformed task frame", logging.KeyEvent, "task_bad_frame",
				logging.KeyTaskArn, tc.id, "error", err.Error())
			return
		}
		if in.Type == wire.TypeShutdown {
			tc.lastWords.Store(in.Reason)
		}
		if s := tc.sess.Load(); s != nil {
			s.taskFrame(tc, in)
		}
	}, func(string, string) {})
	tc.close(CloseNormal, "")
	<-tc.done

	if s := tc.sess.Load(); s != nil {
		s.taskLost(tc, tc.reason("task socket closed: "+reason))
		h.forget(s)
		return
	}
	h.warmLost(tc, tc.reason(reason))
}

// warmLost forgets a warm task whose socket closed before a claim, and
// stops it so the refill replaces it.
func (h *Hub) warmLost(tc *taskConn, reason string) {
	h.mu.Lock()
	cur, ok := h.warm[tc.id]
	if ok && cur == tc {
		delete(h.warm, tc.id)
	}
	closing := h.closing.Load()
	h.mu.Unlock()
	if !ok || cur != tc || closing {
		return
	}
	ctx := context.Background()
	h.log.WarnContext(ctx, "warm task lost before a claim", logging.KeyEvent, "warm_task_lost",
		logging.KeyTaskArn, tc.id, "reason", reason)
	if list, err := h.svc.Store.ListWarmTasks(ctx, h.cfg.RelayID); err == nil {
		for _, w := range list {
			if w.ID == tc.id && w.State != session.WarmClaimed {
				if w.Handle != "" {
					if err := h.svc.Runner.Stop(ctx, w.Handle, "warm task lost its relay socket"); err != nil {
						h.log.WarnContext(ctx, "stop lost warm task", logging.KeyEvent, "warm_stop_failed",
							logging.KeyTaskArn, tc.id, "error", err.Error())
					}
				}
				h.svc.Store.DeleteWarmTask(ctx, w.ID)
			}
		}
	}
	h.onWarmGone()
}

// InitUser hands a claimed warm task its user and session (R8). The task's
// socket moves from the pool to the session.
func (h *Hub) InitUser(ctx context.Context, u session.InitUser) error {
	h.mu.Lock()
	tc, ok := h.warm[u.TaskID]
	if ok {
		delete(h.warm, u.TaskID)
	}
	h.mu.Unlock()
	if !ok || !tc.alive() {
		return fmt.Errorf("init user: warm task %s is not connected to relay %s", u.TaskID, h.cfg.RelayID)
	}
	s := h.session(u.SessionID, u.UserID, u.TraceID)
	tc.sess.Store(s)
	s.acceptTask(tc)
	if !tc.send(wire.InitUser{Type: wire.TypeInitUser, SessionID: u.SessionID, UserID: u.UserID, UID: u.UID}) {
		return errors.New("init user: warm task socket closed")
	}
	h.onWarmGone()
	return nil
}
