package session

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/aishell/aishell/shared/events"
	"github.com/aishell/aishell/shared/logging"
	"github.com/aishell/aishell/shared/ticket"
)

// Steps of a start or restart, as named in errors and in task_restart_failed.
const (
	StepStopOldTask    = "stop_old_task"
	StepStartTask      = "start_task"
	StepWaitRunning    = "wait_running"
	StepWaitConnection = "wait_connection"
	StepRestoreQueue   = "restore_queue"
	StepCheckAlive     = "check_alive"
)

// StartTask gives sess a new task: a claimed warm task when the pool has
// one, else a cold RunTask. An old task still recorded on the session is
// stopped first and waited for (R4). The session's record names the new
// task before the task can connect, so the relay always knows it (R3).
// It returns ErrBusy when another start of the same session won the record.
func (s *Service) StartTask(ctx context.Context, r Request, sess Session, restart bool) (Session, error) {
	log := s.logger(r, sess)

	if sess.TaskHandle != "" {
		if err := s.StopAndWait(ctx, sess.TaskHandle, "replaced by a new task"); err != nil {
			return sess, &StartError{Step: StepStopOldTask, Code: ErrorCode(err), Err: err}
		}
	}

	// Take the right to start: the first writer wins, others get ErrBusy.
	now := s.Clock.Now()
	sess.State = StateStarting
	if restart {
		sess.State = StateRestarting
	}
	sess.TaskID, sess.TaskHandle, sess.Warm = "", "", false
	sess.Start = StartRecord{At: now, Restart: restart}
	sess.UpdatedAt = now
	if r.TraceID != "" {
		sess.TraceID = r.TraceID
	}
	next, err := s.Store.UpdateSession(ctx, sess)
	if errors.Is(err, ErrConflict) {
		return sess, ErrBusy
	}
	if err != nil {
		return sess, &StartError{Step: StepStartTask, Err: fmt.Errorf("write session: %w", err)}
	}
	sess = next

	uid, err := s.Store.UserUID(ctx, sess.UserID)
	if err != nil {
		return sess, &StartError{Step: StepStartTask, Err: fmt.Errorf("allocate uid: %w", err)}
	}
	if s.cfg.WarmPool && s.Warm != nil {
		if next, ok := s.startWarm(ctx, log, sess, uid); ok {
			return next, nil
		}
	}
	return s.startCold(ctx, log, sess, uid)
}

func (s *Service) startWarm(ctx context.Context, log *slog.Logger, sess Session, uid int) (Session, bool) {
	t0 := s.Clock.Now()
	w, err := s.Store.ClaimWarmTask(ctx, sess.RelayID, sess.ID, t0)
	if errors.Is(err, ErrNoWarmTask) {
		return sess, false
	}
	if err != nil {
		log.WarnContext(ctx, "warm claim failed; starting cold", logging.KeyEvent, "warm_claim_failed",
			"error", err.Error())
		return sess, false
	}
	claimMs := s.Clock.Now().Sub(t0).Milliseconds()
	if s.OnWarmClaim != nil {
		s.OnWarmClaim()
	}

	next, err := s.updateSession(ctx, sess.ID, func(cur *Session) error {
		if cur.TaskID != "" || !cur.Start.At.Equal(sess.Start.At) {
			return ErrBusy
		}
		cur.TaskID, cur.TaskHandle, cur.Warm = w.ID, w.Handle, true
		cur.Start.WarmClaimMs = claimMs
		return nil
	})
	if err == nil {
		err = s.Warm.InitUser(ctx, InitUser{
			TaskID: w.ID, SessionID: sess.ID, UserID: sess.UserID, UID: uid, TraceID: next.TraceID,
		})
	}
	if err != nil {
		// The claimed task is unusable (its socket is gone, or the session
		// moved on); stop it so it never serves anyone, and go cold.
		log.WarnContext(ctx, "claimed warm task unusable; starting cold",
			logging.KeyEvent, "warm_claim_failed", logging.KeyTaskArn, w.Handle, "error", err.Error())
		if serr := s.Runner.Stop(ctx, w.Handle, "warm task unusable after claim"); serr != nil {
			log.WarnContext(ctx, "stop unusable warm task", logging.KeyEvent, "warm_stop_failed",
				logging.KeyTaskArn, w.Handle, "error", serr.Error())
		}
		if derr := s.Store.DeleteWarmTask(ctx, w.ID); derr != nil {
			log.WarnContext(ctx, "remove unusable warm task", logging.KeyEvent, "warm_update_failed",
				logging.KeyTaskArn, w.Handle, "error", derr.Error())
		}
		// Take the warm task off the record again, so the cold start may
		// name its own.
		cleared, cerr := s.updateSession(ctx, sess.ID, func(cur *Session) error {
			if cur.TaskID != w.ID {
				return errNoChange
			}
			cur.TaskID, cur.TaskHandle, cur.Warm = "", "", false
			cur.Start.WarmClaimMs = 0
			return nil
		})
		if cerr != nil {
			return sess, false
		}
		return cleared, false
	}

	log = log.With(logging.KeyTaskArn, w.Handle)
	logging.Event(ctx, log, slog.LevelInfo, events.TaskLifecycle, "warm task claimed",
		slog.String(events.FieldPhase, events.PhaseTaskStart),
		slog.Int64(logging.KeyDurationMs, claimMs),
		slog.Bool(events.FieldRestart, next.Start.Restart),
		slog.Bool(events.FieldWarm, true))
	if s.Notifier != nil {
		s.Notifier.SessionChanged(sess.ID)
	}
	return next, true
}

func (s *Service) startCold(ctx context.Context, log *slog.Logger, sess Session, uid int) (Session, error) {
	taskID := NewID("t_")
	cred, _, err := s.TaskKeys.Sign(ticket.Claims{
		Kind: ticket.KindTask, TaskID: taskID, SessionID: sess.ID, UserID: sess.UserID,
	}, s.Clock.Now(), s.cfg.TaskCredentialTTL)
	if err != nil {
		return sess, &StartError{Step: StepStartTask, Err: err}
	}

	// Name the task on the session before it exists, so that it is known
	// however early it connects (R3).
	sess, err = s.updateSession(ctx, sess.ID, func(cur *Session) error {
		if cur.TaskID != "" || !cur.Start.At.Equal(sess.Start.At) {
			return ErrBusy
		}
		cur.TaskID = taskID
		return nil
	})
	if err != nil {
		return sess, &StartError{Step: StepStartTask, Err: fmt.Errorf("write session: %w", err)}
	}
	if s.Notifier != nil {
		s.Notifier.SessionChanged(sess.ID)
	}

	relay, err := s.relayOf(ctx, sess.RelayID)
	if err != nil {
		return sess, &StartError{Step: StepStartTask, Err: err}
	}
	t0 := s.Clock.Now()
	handle, err := s.Runner.Run(ctx, TaskSpec{
		TaskID:     taskID,
		SessionID:  sess.ID,
		UserID:     sess.UserID,
		UID:        uid,
		RelayURL:   relay.TaskURL,
		Credential: cred,
	})
	runMs := s.Clock.Now().Sub(t0).Milliseconds()
	if err != nil {
		code := ErrorCode(err)
		logging.Event(ctx, log, slog.LevelError, events.TaskStartFailed, "task start failed",
			slog.String(events.FieldErrorCode, code), slog.String(events.FieldReason, err.Error()),
			slog.Bool(events.FieldRestart, sess.Start.Restart))
		s.updateSession(ctx, sess.ID, func(cur *Session) error {
			if cur.TaskID != taskID {
				return ErrBusy
			}
			cur.State, cur.TaskID = StateStopped, ""
			return nil
		})
		return sess, &StartError{Step: StepStartTask, Code: code, Err: fmt.Errorf("run task: %w", err)}
	}

	sess, err = s.updateSession(ctx, sess.ID, func(cur *Session) error {
		if cur.TaskID != taskID {
			return ErrBusy
		}
		cur.TaskHandle = handle
		cur.Start.RunTaskMs = runMs
		return nil
	})
	if err != nil {
		// The session moved on while the task started: stop it, so that the
		// session never has two live tasks.
		s.Runner.Stop(ctx, handle, "session moved on during start")
		return sess, &StartError{Step: StepStartTask, Err: fmt.Errorf("record task: %w", err)}
	}
	logging.Event(ctx, log.With(logging.KeyTaskArn, handle), slog.LevelInfo, events.TaskLifecycle,
		"task started", slog.String(events.FieldPhase, events.PhaseTaskStart),
		slog.Int64(logging.KeyDurationMs, runMs),
		slog.Bool(events.FieldRestart, sess.Start.Restart),
		slog.Bool(events.FieldWarm, false))
	return sess, nil
}

// errNoChange tells updateSession that nothing is to be written.
var errNoChange = errors.New("no change")

// updateSession reads, changes and conditionally writes a session, trying
// again when another writer got there first. change may refuse with an
// error, which is returned as it is.
func (s *Service) updateSession(ctx context.Context, id string, change func(*Session) error) (Session, error) {
	for attempt := 0; ; attempt++ {
		cur, err := s.Store.GetSession(ctx, id)
		if err != nil {
			return Session{}, err
		}
		if err := change(&cur); errors.Is(err, errNoChange) {
			return cur, nil
		} else if err != nil {
			return cur, err
		}
		cur.UpdatedAt = s.Clock.Now()
		next, err := s.Store.UpdateSession(ctx, cur)
		if errors.Is(err, ErrConflict) && attempt < 10 {
			continue
		}
		return next, err
	}
}

// StopAndWait stops a task and waits until it has stopped, for at most the
// configured StopWait (R4).
func (s *Service) StopAndWait(ctx context.Context, handle, reason string) error {
	st, err := s.Runner.Describe(ctx, handle)
	if err != nil {
		return fmt.Errorf("describe task %s: %w", handle, err)
	}
	if st.State == TaskStopped {
		return nil
	}
	if err := s.Runner.Stop(ctx, handle, reason); err != nil {
		return fmt.Errorf("stop task %s: %w", handle, err)
	}
	_, err = s.waitState(ctx, handle, TaskStopped, s.cfg.StopWait)
	return err
}

// WaitRunning waits until a task runs, for at most limit. A task that stops
// instead fails the wait with its stop reason.
func (s *Service) WaitRunning(ctx context.Context, handle string, limit time.Duration) (TaskStatus, error) {
	return s.waitState(ctx, handle, TaskRunning, limit)
}

func (s *Service) waitState(ctx context.Context, handle string, want TaskState, limit time.Duration) (TaskStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	tick := time.NewTicker(s.cfg.PollInterval)
	defer tick.Stop()
	for {
		st, err := s.Runner.Describe(ctx, handle)
		if err != nil {
			return st, fmt.Errorf("describe task %s: %w", handle, err)
		}
		if st.State == want {
			return st, nil
		}
		if st.State == TaskStopped {
			return st, fmt.Errorf("task %s stopped: %s", handle, st.StopReason)
		}
		select {
		case <-ctx.Done():
			return st, fmt.Errorf("task %s still %s after %s, waiting for %s", handle, st.State, limit, want)
		case <-tick.C:
		}
	}
}

// BeginRestart marks a session as restarting and returns it. It fails with
// ErrBusy if a restart of it is already under way.
func (s *Service) BeginRestart(ctx context.Context, id string) (Session, error) {
	return s.updateSession(ctx, id, func(cur *Session) error {
		if cur.State == StateRestarting && s.Clock.Now().Sub(cur.UpdatedAt) < s.cfg.StaleRestart {
			return ErrBusy
		}
		cur.State = StateRestarting
		cur.Restarts++
		return nil
	})
}

// MarkReady records that taskID is the session's connected, ready task,
// and reports whether it was so already (a task reconnecting rather than
// a new start). A task that is no longer the session's gets ErrConflict.
func (s *Service) MarkReady(ctx context.Context, id, taskID string) (Session, bool, error) {
	already := false
	sess, err := s.updateSession(ctx, id, func(cur *Session) error {
		if cur.TaskID != taskID {
			return fmt.Errorf("task %s is not the session's task (%s): %w", taskID, cur.TaskID, ErrConflict)
		}
		already = cur.State == StateReady
		cur.State = StateReady
		return nil
	})
	return sess, already, err
}

// MarkStopped records that the session's task taskID is gone or stopping.
// It changes nothing if the session has moved on to another task, so a
// late event about an old task never touches the new one (R6).
func (s *Service) MarkStopped(ctx context.Context, id, taskID string) (Session, bool, error) {
	changed := false
	sess, err := s.updateSession(ctx, id, func(cur *Session) error {
		if cur.TaskID != taskID || cur.State == StateRestarting {
			return errNoChange
		}
		changed = true
		cur.State = StateStopped
		return nil
	})
	return sess, changed, err
}

// EndRestart records that a restart failed: the session is stopped, and
// its record still names the task the restart started, for the caller to
// stop.
func (s *Service) EndRestart(ctx context.Context, id string) (Session, error) {
	return s.updateSession(ctx, id, func(cur *Session) error {
		cur.State = StateStopped
		return nil
	})
}
