package sfnflow

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"

	"github.com/aishell/aishell/shared/events"
	"github.com/aishell/aishell/shared/logging"
	"github.com/aishell/aishell/shared/session"
	"github.com/aishell/aishell/shared/ticket"
	"github.com/aishell/aishell/shared/warmpool"
)

// Plan is the plan step's answer: the payloads of the start and retire
// steps (never null, so that the Maps always have a list) and a summary
// per relay.
type Plan struct {
	Starts  []StepInput `json:"starts"`
	Retires []StepInput `json:"retires"`
	Pools   []PoolPlan  `json:"pools"`
}

// PoolPlan sums up the plan of one relay's pool.
type PoolPlan struct {
	RelayID   string `json:"relayId"`
	Healthy   bool   `json:"healthy"`
	Target    int    `json:"target"`
	Available int    `json:"available"`
	Starting  int    `json:"starting"`
	Start     int    `json:"start"`
	Retire    int    `json:"retire"`
}

// ReapOutput is reap_orphans' answer.
type ReapOutput struct {
	// Checked counts the running tasks looked at; Stopped lists the
	// handles of those stopped.
	Checked int      `json:"checked"`
	Stopped []string `json:"stopped"`
}

// Reasons given to the task platform when the refill stops a task.
const (
	reasonMaxAge   = "warm task past its maximum age"
	reasonSurplus  = "warm pool above its target"
	reasonExpired  = "warm task claim expired"
	reasonNotReady = "warm task did not connect in time"
	reasonUnknown  = "warm task record in an unknown state"
	reasonOrphan   = "no session or warm task owns this task"
)

// plan reads every relay's pool and plans it with warmpool.Plan. A relay
// whose heartbeat is stale is planned with a target of zero, so its
// available warm tasks are retired. The refill keeps no memory between
// runs: its schedule is the back-off after failed starts.
func (s *Steps) plan(ctx context.Context, log *slog.Logger) (any, error) {
	relays, err := s.deps.Store.ListRelays(ctx)
	if err != nil {
		return nil, fmt.Errorf("list relays: %w", err)
	}
	slices.SortFunc(relays, func(a, b session.Relay) int { return cmp.Compare(a.ID, b.ID) })

	now := s.deps.Clock.Now()
	p := Plan{Starts: []StepInput{}, Retires: []StepInput{}, Pools: []PoolPlan{}}
	for _, r := range relays {
		tasks, err := s.deps.Store.ListWarmTasks(ctx, r.ID)
		if err != nil {
			return nil, fmt.Errorf("list warm tasks of relay %s: %w", r.ID, err)
		}
		healthy := now.Sub(r.HeartbeatAt) <= s.cfg.Session.RelayMaxAge && r.TaskURL != ""
		target := s.cfg.Pool.Target
		if !s.cfg.Session.WarmPool || !healthy {
			target = 0
		}
		acts := warmpool.Plan(warmpool.Snapshot{
			Now: now, Target: target, Tasks: tasks,
			MaxAge: s.cfg.Pool.MaxAge, ClaimTTL: s.cfg.Pool.ClaimTTL,
			StartTimeout: s.cfg.Pool.StartTimeout,
		})

		for range acts.Start {
			p.Starts = append(p.Starts, StepInput{Step: StepStartWarmTask, RelayID: r.ID, RelayURL: r.TaskURL})
		}
		before := len(p.Retires)
		retire := func(kind, reason string, w session.WarmTask) {
			p.Retires = append(p.Retires, StepInput{Step: StepRetireWarmTask, RelayID: r.ID,
				Retire: &Retirement{Kind: kind, Reason: reason, WarmTask: w}})
		}
		for _, w := range acts.Recycle {
			retire(RetireRecycle, reasonMaxAge, w)
		}
		for _, w := range acts.Surplus {
			retire(RetireSurplus, reasonSurplus, w)
		}
		for _, w := range acts.Abandon {
			reason := reasonNotReady
			if w.State != session.WarmStarting {
				reason = reasonUnknown
			}
			retire(RetireAbandon, reason, w)
		}
		for _, w := range acts.Expire {
			retire(RetireExpire, reasonExpired, w)
		}

		pool := PoolPlan{RelayID: r.ID, Healthy: healthy, Target: target, Available: acts.Available,
			Starting: acts.Starting, Start: acts.Start, Retire: len(p.Retires) - before}
		p.Pools = append(p.Pools, pool)
		logging.Event(ctx, log, slog.LevelInfo, events.WarmPool, "warm pool planned",
			slog.Int(events.FieldAvailable, pool.Available),
			slog.Int(events.FieldStarting, pool.Starting),
			slog.Int(events.FieldTarget, pool.Target),
			slog.String(events.FieldRelayID, r.ID),
			slog.Bool("healthy", healthy),
			slog.Int("start", pool.Start), slog.Int("retire", pool.Retire))
	}
	return p, nil
}

// startWarmTask starts one warm task for a relay. Its record is written
// before the task runs, so the relay knows it however early its bridge
// connects (R3); a failed start removes the record again.
func (s *Steps) startWarmTask(ctx context.Context, log *slog.Logger, in StepInput) (any, error) {
	if in.RelayID == "" || in.RelayURL == "" {
		return nil, fmt.Errorf("start warm task: relay id and URL are required (got %q, %q)",
			in.RelayID, in.RelayURL)
	}
	id := session.NewID("t_")
	now := s.deps.Clock.Now()
	cred, _, err := s.deps.TaskKeys.Sign(ticket.Claims{Kind: ticket.KindTask, TaskID: id}, now,
		s.cfg.Pool.CredentialTTL)
	if err != nil {
		return nil, fmt.Errorf("start warm task %s: sign credential: %w", id, err)
	}
	w, err := s.deps.Store.PutWarmTask(ctx, session.WarmTask{
		ID: id, RelayID: in.RelayID, State: session.WarmStarting, StartedAt: now,
	})
	if err != nil {
		return nil, fmt.Errorf("start warm task %s: record: %w", id, err)
	}

	handle, err := s.deps.Runner.Run(ctx, session.TaskSpec{
		TaskID: id, Warm: true, RelayURL: in.RelayURL, Credential: cred,
	})
	runTime := s.deps.Clock.Now().Sub(now)
	if err != nil {
		logging.Event(ctx, log, slog.LevelError, events.TaskStartFailed, "warm task start failed",
			slog.String(events.FieldErrorCode, session.ErrorCode(err)),
			slog.String(events.FieldReason, err.Error()),
			slog.Bool(events.FieldWarm, true), slog.String("taskId", id),
			slog.String(events.FieldRelayID, in.RelayID))
		err = fmt.Errorf("start warm task %s: run task: %w", id, err)
		if derr := s.deps.Store.DeleteWarmTask(ctx, id); derr != nil {
			err = errors.Join(err, fmt.Errorf("remove record after failed start: %w", derr))
		}
		return nil, err
	}

	log = log.With(logging.KeyTaskArn, handle, "taskId", id)
	logging.Event(ctx, log, slog.LevelInfo, "warm_task_started", "warm task started",
		logging.Duration(runTime), slog.String(events.FieldRelayID, in.RelayID))
	if err := s.recordHandle(ctx, log, w, handle); err != nil {
		return nil, fmt.Errorf("start warm task %s: %w", id, err)
	}
	return StepDone{Step: StepStartWarmTask, TaskID: id, Handle: handle}, nil
}

// recordHandle writes the runner's handle into a warm task's record. The
// relay may have changed the record meanwhile (the bridge connected), so a
// conflict reads it again and retries.
func (s *Steps) recordHandle(ctx context.Context, log *slog.Logger, w session.WarmTask, handle string) error {
	for attempt := 1; ; attempt++ {
		w.Handle = handle
		_, err := s.deps.Store.UpdateWarmTask(ctx, w)
		if err == nil {
			return nil
		}
		gone := errors.Is(err, session.ErrNotFound)
		if !gone {
			if !errors.Is(err, session.ErrConflict) || attempt >= maxWriteAttempts {
				return fmt.Errorf("record handle: %w", err)
			}
			var found bool
			if w, found, err = s.findWarmTask(ctx, w.RelayID, w.ID); err != nil {
				return fmt.Errorf("record handle: %w", err)
			}
			gone = !found
		}
		if gone {
			// Whoever removed the record (the relay, on the bridge's end)
			// owns what happens to the task.
			log.WarnContext(ctx, "warm task record gone before its handle was written",
				logging.KeyEvent, "warm_task_record_gone")
			return nil
		}
	}
}

func (s *Steps) findWarmTask(ctx context.Context, relayID, id string) (session.WarmTask, bool, error) {
	tasks, err := s.deps.Store.ListWarmTasks(ctx, relayID)
	if err != nil {
		return session.WarmTask{}, false, fmt.Errorf("list warm tasks of relay %s: %w", relayID, err)
	}
	for _, w := range tasks {
		if w.ID == id {
			return w, true, nil
		}
	}
	return session.WarmTask{}, false, nil
}

// retireWarmTask takes one warm task out of its pool. A recycled, surplus
// or abandoned task is first claimed for nobody, conditionally on the
// version the plan read, so that a session claiming it at the same moment
// either wins (and the task is left alone) or never sees it. An expired
// claim whose session still names the task only loses its record.
func (s *Steps) retireWarmTask(ctx context.Context, log *slog.Logger, in StepInput) (any, error) {
	if in.Retire == nil || in.Retire.WarmTask.ID == "" {
		return nil, errors.New("retire warm task: no warm task given")
	}
	r := *in.Retire
	w := r.WarmTask
	log = log.With(logging.KeyTaskArn, w.Handle, "taskId", w.ID, "kind", r.Kind)
	done := StepDone{Step: StepRetireWarmTask, TaskID: w.ID, Handle: w.Handle}

	if r.Kind == RetireExpire {
		if w.SessionID != "" {
			sess, err := s.deps.Store.GetSession(ctx, w.SessionID)
			switch {
			case err == nil && sess.TaskID == w.ID && sess.State != session.StateStopped:
				if err := s.deps.Store.DeleteWarmTask(ctx, w.ID); err != nil {
					return nil, fmt.Errorf("settle claim on warm task %s: %w", w.ID, err)
				}
				log.InfoContext(ctx, "stale claim settled: the session owns the task",
					logging.KeyEvent, "warm_claim_settled", logging.KeySessionID, w.SessionID)
				done.Note = "the claiming session owns the task"
				return done, nil
			case err != nil && !errors.Is(err, session.ErrNotFound):
				return nil, fmt.Errorf("expire claim on warm task %s: read session %s: %w",
					w.ID, w.SessionID, err)
			}
		}
	} else {
		w.State, w.SessionID, w.ClaimedAt = session.WarmClaimed, "", s.deps.Clock.Now()
		retired, err := s.deps.Store.UpdateWarmTask(ctx, w)
		if errors.Is(err, session.ErrConflict) || errors.Is(err, session.ErrNotFound) {
			log.InfoContext(ctx, "warm task changed before it could be retired",
				logging.KeyEvent, "warm_task_retire_skipped", "error", err.Error())
			done.Note = "the warm task changed since the plan; left alone"
			return done, nil
		}
		if err != nil {
			return nil, fmt.Errorf("retire warm task %s: %w", w.ID, err)
		}
		w = retired
	}

	if w.Handle != "" {
		if err := s.deps.Runner.Stop(ctx, w.Handle, r.Reason); err != nil {
			return nil, fmt.Errorf("stop warm task %s: %w", w.ID, err)
		}
	} else {
		// Its start never recorded a handle; reap_orphans stops the task
		// once it is past the grace period, as nothing owns it then.
		log.WarnContext(ctx, "warm task without handle removed; reaping will stop its task",
			logging.KeyEvent, "warm_task_without_handle")
	}
	if err := s.deps.Store.DeleteWarmTask(ctx, w.ID); err != nil {
		return nil, fmt.Errorf("remove warm task %s: %w", w.ID, err)
	}
	log.InfoContext(ctx, "warm task removed", logging.KeyEvent, "warm_task_removed",
		events.FieldReason, r.Reason)
	return done, nil
}

// reapOrphans stops running tasks that no session and no warm task names,
// once they are older than the grace period: tasks left by a start that
// died half-way, or by a session deleted while its stop failed, so that
// nothing runs unbilled by mistake. Tasks are listed before the records
// are read, so a task recorded in between is never taken for an orphan.
func (s *Steps) reapOrphans(ctx context.Context, log *slog.Logger) (any, error) {
	if s.deps.Tasks == nil {
		return nil, errors.New("reap orphans: no task lister configured")
	}
	running, err := s.deps.Tasks.ListTasks(ctx, "")
	if err != nil {
		return nil, fmt.Errorf("list running tasks: %w", err)
	}

	owned := map[string]bool{}
	sessions, err := s.deps.Store.ListSessions(ctx)
	if err != nil {
		return nil, fmt.Errorf("list sessions: %w", err)
	}
	for _, sess := range sessions {
		owned[sess.TaskHandle] = true
	}
	relays, err := s.deps.Store.ListRelays(ctx)
	if err != nil {
		return nil, fmt.Errorf("list relays: %w", err)
	}
	for _, r := range relays {
		tasks, err := s.deps.Store.ListWarmTasks(ctx, r.ID)
		if err != nil {
			return nil, fmt.Errorf("list warm tasks of relay %s: %w", r.ID, err)
		}
		for _, w := range tasks {
			owned[w.Handle] = true
		}
	}

	out := ReapOutput{Checked: len(running), Stopped: []string{}}
	now := s.deps.Clock.Now()
	var errs []error
	for _, h := range running {
		if owned[h] {
			continue
		}
		st, err := s.deps.Runner.Describe(ctx, h)
		if err != nil {
			errs = append(errs, fmt.Errorf("describe task %s: %w", h, err))
			continue
		}
		// A task whose age is unknown may be a start not yet recorded.
		if st.State == session.TaskStopped || st.CreatedAt.IsZero() ||
			now.Sub(st.CreatedAt) < s.cfg.ReapGrace {
			continue
		}
		if err := s.deps.Runner.Stop(ctx, h, reasonOrphan); err != nil {
			errs = append(errs, fmt.Errorf("stop orphaned task %s: %w", h, err))
			continue
		}
		out.Stopped = append(out.Stopped, h)
		log.WarnContext(ctx, "orphaned task stopped", logging.KeyEvent, "task_reaped",
			logging.KeyTaskArn, h, events.FieldReason, reasonOrphan)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("reap orphans (stopped %d): %w", len(out.Stopped), err)
	}
	return out, nil
}
