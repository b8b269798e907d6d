package hub

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/aishell/aishell/relay/wire"
	"github.com/aishell/aishell/shared/events"
	"github.com/aishell/aishell/shared/logging"
	"github.com/aishell/aishell/shared/session"
	"github.com/aishell/aishell/shared/workflow"
)

// Steps the relay adds to the workflow's when naming a failure.
const (
	stepBegin    = "begin_restart"
	stepBackstop = "relay_backstop"
)

// restart runs the restart workflow for the session unless one runs
// already (R5, R6). The relay keeps its own deadline as a backstop, so the
// client hears the outcome even if the workflow hangs.
func (s *sess) restart(reason string) {
	s.mu.Lock()
	if s.restarting || s.ended || s.h.isClosing() {
		s.mu.Unlock()
		return
	}
	s.restarting = true
	s.ready = false
	s.stopIdle()
	s.stopStartWatch()
	abort := make(chan string, 1)
	s.restartAbort = abort
	ctx, cancel := context.WithCancel(context.Background())
	s.restartStop = cancel
	s.setState(wire.StateRestarting)
	s.mu.Unlock()

	s.log.InfoContext(ctx, "restart begins", logging.KeyEvent, "task_restart_begin", "reason", reason)
	if !s.h.track() {
		// The relay began shutting down meanwhile: the restart is the next
		// relay's, when the user resumes.
		cancel()
		s.mu.Lock()
		s.restarting, s.restartAbort, s.restartStop = false, nil, nil
		s.mu.Unlock()
		return
	}
	go func() {
		defer s.h.wg.Done()
		defer cancel()
		s.runRestart(ctx, abort)
	}()
}

func (s *sess) runRestart(ctx context.Context, abort <-chan string) {
	start := time.Now()
	rec, err := s.h.svc.BeginRestart(ctx, s.id)
	if err != nil {
		s.restartFailed(ctx, start, stepBegin, fmt.Sprintf("mark session restarting: %v", err))
		return
	}
	outcome, err := s.h.restarter.StartRestart(ctx, workflow.RestartInput{
		SessionID: s.id, Attempt: rec.Restarts, TraceID: rec.TraceID,
	})
	if err != nil {
		s.restartFailed(ctx, start, stepBegin, fmt.Sprintf("start restart workflow: %v", err))
		return
	}

	backstop := time.NewTimer(s.h.cfg.RestartLimit)
	defer backstop.Stop()
	select {
	case o := <-outcome:
		if !o.Success {
			s.restartFailed(ctx, start, o.Step, o.Reason)
			return
		}
		s.restartSucceeded(ctx, start, o)
	case reason := <-abort:
		s.restartFailed(ctx, start, session.StepWaitConnection, reason)
	case <-backstop.C:
		s.restartFailed(ctx, start, stepBackstop,
			fmt.Sprintf("the restart did not finish within %s", s.h.cfg.RestartLimit))
	case <-ctx.Done():
		s.restartFailed(ctx, start, stepBegin, "the restart was cancelled: the session ended or the relay is shutting down")
	case <-s.h.quit:
		s.restartFailed(ctx, start, stepBegin, "the relay is shutting down")
	}
}

// restartSucceeded restores the queued input to the new task, checks that
// its connection is still alive, and only then reports success (R6).
func (s *sess) restartSucceeded(ctx context.Context, start time.Time, o workflow.Outcome) {
	s.mu.Lock()
	tc := s.task
	ok := tc != nil && tc.id == o.TaskID && tc.ready && tc.alive()
	s.mu.Unlock()
	if !ok {
		s.restartFailed(ctx, start, session.StepCheckAlive,
			fmt.Sprintf("task %s connected but its socket is gone", o.TaskID))
		return
	}
	rec, _, err := s.h.svc.MarkReady(ctx, s.id, o.TaskID)
	if err != nil {
		s.restartFailed(ctx, start, session.StepRestoreQueue, fmt.Sprintf("mark session ready: %v", err))
		return
	}

	s.mu.Lock()
	if s.task != tc || !tc.alive() || s.ended {
		s.mu.Unlock()
		s.restartFailed(ctx, start, session.StepCheckAlive,
			fmt.Sprintf("task %s lost its socket while queued input was restored", o.TaskID))
		return
	}
	s.restarting = false
	s.restartAbort, s.restartStop = nil, nil
	s.becomeReady(tc, rec)
	s.mu.Unlock()

	logEvent(ctx, s.log.With(logging.KeyTaskArn, rec.TaskHandle), slog.LevelInfo, events.TaskLifecycle, "restart succeeded",
		phase(events.PhaseTaskRestart), logging.Duration(time.Since(start)),
		slog.Bool(events.FieldSuccess, true), slog.Bool(events.FieldWarm, rec.Warm))
	s.logReady(ctx, tc, rec, true)
}

// restartFailed tells the client TASK_RESTART_FAILED with the step and
// the concrete reason, and stops the task the restart started, if any.
func (s *sess) restartFailed(ctx context.Context, start time.Time, step, reason string) {
	msg := fmt.Sprintf("restart failed in step %s: %s", step, reason)
	s.mu.Lock()
	tc := s.task
	s.task = nil
	s.ready = false
	s.restarting = false
	s.restartAbort, s.restartStop = nil, nil
	if tc != nil {
		tc.close(CloseNormal, "restart failed")
	}
	if s.client != nil {
		s.client.send(errFrame(wire.CodeTaskRestartFailed, msg))
	}
	s.setState(wire.StateStopped)
	s.mu.Unlock()

	ctx = context.WithoutCancel(ctx)
	logEvent(ctx, s.log, slog.LevelError, events.TaskRestartFailed, msg,
		slog.String(events.FieldReason, reason), slog.String(events.FieldStep, step))
	logEvent(ctx, s.log, slog.LevelInfo, events.TaskLifecycle, "restart failed",
		phase(events.PhaseTaskRestart), logging.Duration(time.Since(start)),
		slog.Bool(events.FieldSuccess, false))

	s.h.forget(s)

	// Leave nothing running that no session will use.
	rec, err := s.h.svc.EndRestart(ctx, s.id)
	if err != nil {
		s.log.WarnContext(ctx, "mark session stopped", logging.KeyEvent, "session_update_failed", "error", err.Error())
		return
	}
	if rec.TaskHandle != "" {
		if err := s.h.svc.Runner.Stop(ctx, rec.TaskHandle, "restart failed: "+reason); err != nil {
			s.log.WarnContext(ctx, "stop task of failed restart", logging.KeyEvent, "task_stop_failed", "error", err.Error())
		}
	}
}
