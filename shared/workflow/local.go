package workflow

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/aishell/aishell/shared/logging"
	"github.com/aishell/aishell/shared/session"
)

// Local runs restarts in process: the same steps, in the same order and
// under the same time limit as the restart state machine.
type Local struct {
	svc   *session.Service
	limit time.Duration
	log   *slog.Logger

	mu        sync.Mutex               // guards connected and waiters
	connected map[string]bool          // "session/task" pairs reported connected
	waiters   map[string]chan struct{} // closed when the pair connects
}

// NewLocal returns a local runner; limit 0 means RestartLimit.
func NewLocal(svc *session.Service, limit time.Duration, log *slog.Logger) *Local {
	if limit == 0 {
		limit = RestartLimit
	}
	return &Local{
		svc:       svc,
		limit:     limit,
		log:       logging.Module(log, "workflow"),
		connected: map[string]bool{},
		waiters:   map[string]chan struct{}{},
	}
}

// StartRestart begins a restart and returns at once; the outcome arrives on
// the channel, always, within the time limit. Cancelling ctx ends the
// restart early (the relay does so when it has given up on it).
func (l *Local) StartRestart(ctx context.Context, in RestartInput) (<-chan Outcome, error) {
	out := make(chan Outcome, 1)
	go func() {
		out <- l.run(ctx, in)
	}()
	return out, nil
}

// TaskConnected reports that the bridge of taskID connected for the
// session: the wait_connection step's callback (SendTaskSuccess in AWS).
// A report that comes before the step waits is kept.
func (l *Local) TaskConnected(sessionID, taskID string) {
	key := sessionID + "/" + taskID
	l.mu.Lock()
	defer l.mu.Unlock()
	l.connected[key] = true
	if ch, ok := l.waiters[key]; ok {
		close(ch)
		delete(l.waiters, key)
	}
}

func (l *Local) run(ctx context.Context, in RestartInput) Outcome {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, l.limit)
	defer cancel()
	log := l.log.With(logging.KeySessionID, in.SessionID, "attempt", in.Attempt)

	step := session.StepStopOldTask
	fail := func(err error) Outcome {
		reason := err.Error()
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			reason = fmt.Sprintf("restart timed out after %s in step %s: %v", l.limit, step, err)
		}
		return Outcome{Step: step, Reason: reason, Duration: time.Since(start)}
	}

	sess, err := l.svc.Store.GetSession(ctx, in.SessionID)
	if err != nil {
		return fail(fmt.Errorf("read session: %w", err))
	}
	if sess.TaskHandle != "" {
		if err := l.svc.StopAndWait(ctx, sess.TaskHandle, "restart"); err != nil {
			return fail(err)
		}
	}
	log.DebugContext(ctx, "restart step done", logging.KeyEvent, "restart_step", "step", step)

	step = session.StepStartTask
	sess, err = l.svc.StartTask(ctx, session.Request{TraceID: in.TraceID}, sess, true)
	if err != nil {
		return fail(err)
	}
	log.DebugContext(ctx, "restart step done", logging.KeyEvent, "restart_step", "step", step)

	step = session.StepWaitRunning
	if _, err := l.svc.WaitRunning(ctx, sess.TaskHandle, l.limit); err != nil {
		return fail(err)
	}

	step = session.StepWaitConnection
	if err := l.waitConnected(ctx, in.SessionID, sess.TaskID, sess.TaskHandle); err != nil {
		return fail(err)
	}
	return Outcome{Success: true, TaskID: sess.TaskID, Warm: sess.Warm, Duration: time.Since(start)}
}

// waitConnected waits for the task's connection; a runner that hears of a
// task's end at once (session.StopWaiter) ends the wait when the task
// dies first, with its stop reason.
func (l *Local) waitConnected(ctx context.Context, sessionID, taskID, handle string) error {
	key := sessionID + "/" + taskID
	l.mu.Lock()
	if l.connected[key] {
		delete(l.connected, key)
		l.mu.Unlock()
		return nil
	}
	ch, ok := l.waiters[key]
	if !ok {
		ch = make(chan struct{})
		l.waiters[key] = ch
	}
	l.mu.Unlock()

	died := make(chan string, 1)
	if w, ok := l.svc.Runner.(session.StopWaiter); ok && handle != "" {
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		go func() {
			if st, err := w.Wait(wctx, handle); err == nil {
				died <- st.StopReason
			}
		}()
	}

	select {
	case <-ch:
		l.mu.Lock()
		delete(l.connected, key)
		l.mu.Unlock()
		return nil
	case reason := <-died:
		l.mu.Lock()
		delete(l.waiters, key)
		l.mu.Unlock()
		return fmt.Errorf("task %s stopped before it connected: %s", taskID, reason)
	case <-ctx.Done():
		l.mu.Lock()
		delete(l.waiters, key)
		l.mu.Unlock()
		return fmt.Errorf("task %s did not connect: %w", taskID, ctx.Err())
	}
}
