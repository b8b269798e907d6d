package warmpool

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/aishell/aishell/shared/events"
	"github.com/aishell/aishell/shared/logging"
	"github.com/aishell/aishell/shared/session"
	"github.com/aishell/aishell/shared/ticket"
)

// Config is what the refill of one relay's pool is told. Zero durations
// take the defaults named on each field.
type Config struct {
	// RelayID names the relay whose pool this is.
	RelayID string
	// RelayURL is the relay's base URL as tasks reach it.
	RelayURL string
	// Target is the wanted number of warm tasks.
	Target int
	// MaxAge: available tasks older than this are recycled (30 min).
	MaxAge time.Duration
	// ClaimTTL: claims older than this expire (2 min).
	ClaimTTL time.Duration
	// StartTimeout: tasks not connected this long after their start are
	// stopped (60 s).
	StartTimeout time.Duration
	// BackoffBase and BackoffMax bound the wait after failed starts
	// (1 s, doubling per failure, at most 1 min).
	BackoffBase time.Duration
	BackoffMax  time.Duration
	// CredentialTTL is how long a warm task's credential is valid (24 h);
	// it must cover the pool time and the session that follows.
	CredentialTTL time.Duration
}

func (c *Config) defaults() {
	setDefault(&c.MaxAge, 30*time.Minute)
	setDefault(&c.ClaimTTL, 2*time.Minute)
	setDefault(&c.StartTimeout, time.Minute)
	setDefault(&c.BackoffBase, time.Second)
	setDefault(&c.BackoffMax, time.Minute)
	setDefault(&c.CredentialTTL, 24*time.Hour)
}

func setDefault(d *time.Duration, v time.Duration) {
	if *d == 0 {
		*d = v
	}
}

// Deps are the ports the Refiller works through.
type Deps struct {
	Store  session.Store
	Runner session.TaskRunner
	// TaskKeys signs the warm tasks' credentials.
	TaskKeys *ticket.Keyring
	Clock    session.Clock
	Log      *slog.Logger
}

// Refiller keeps one relay's warm pool at its target: it plans from the
// store's records and starts, recycles, expires and abandons warm tasks.
// Its methods are safe for concurrent use; rounds never overlap.
type Refiller struct {
	cfg Config
	Deps
	kick chan struct{}

	mu          sync.Mutex // held for a whole round; guards failures and lastFailure
	failures    int
	lastFailure time.Time
}

// NewRefiller returns a Refiller with cfg's defaults filled in.
func NewRefiller(cfg Config, deps Deps) *Refiller {
	cfg.defaults()
	if deps.Clock == nil {
		deps.Clock = session.SystemClock{}
	}
	if deps.Log == nil {
		deps.Log = logging.Discard()
	}
	deps.Log = logging.Module(deps.Log, "warmpool")
	return &Refiller{cfg: cfg, Deps: deps, kick: make(chan struct{}, 1)}
}

// Config returns the configuration with defaults filled in.
func (r *Refiller) Config() Config { return r.cfg }

// Reasons given to the runner when the pool stops a task.
const (
	reasonMaxAge   = "warm task past its maximum age"
	reasonSurplus  = "warm pool above its target"
	reasonExpired  = "warm task claim expired"
	reasonNotReady = "warm task did not connect in time"
	reasonUnknown  = "warm task record in an unknown state"
)

// RunOnce carries out one round: read the relay's warm tasks, plan, stop
// and remove what must go, start the deficit, and log the warm_pool event.
// A failed start is logged as task_start_failed and backs the next starts
// off; other failures are returned, joined. The returned Actions are the
// plan, with BackoffUntil moved on when a start of this round failed.
func (r *Refiller) RunOnce(ctx context.Context) (Actions, error) {
	r.mu.Lock()
	defer r.mu.Unlock()

	tasks, err := r.Store.ListWarmTasks(ctx, r.cfg.RelayID)
	if err != nil {
		return Actions{}, fmt.Errorf("refill warm pool: list warm tasks: %w", err)
	}
	now := r.Clock.Now()
	acts := Plan(Snapshot{
		Now: now, Target: r.cfg.Target, Tasks: tasks,
		MaxAge: r.cfg.MaxAge, ClaimTTL: r.cfg.ClaimTTL, StartTimeout: r.cfg.StartTimeout,
		ConsecutiveFailures: r.failures, LastFailure: r.lastFailure,
		BackoffBase: r.cfg.BackoffBase, BackoffMax: r.cfg.BackoffMax,
	})

	// Remove first: a stopped task frees the capacity its replacement needs.
	var errs []error
	for _, w := range acts.Recycle {
		errs = append(errs, r.retire(ctx, w, now, reasonMaxAge))
	}
	for _, w := range acts.Surplus {
		errs = append(errs, r.retire(ctx, w, now, reasonSurplus))
	}
	for _, w := range acts.Abandon {
		reason := reasonNotReady
		if w.State != session.WarmStarting {
			reason = reasonUnknown
		}
		errs = append(errs, r.retire(ctx, w, now, reason))
	}
	for _, w := range acts.Expire {
		errs = append(errs, r.expire(ctx, w))
	}

	started, failed := 0, false
	for range acts.Start {
		res, err := r.startOne(ctx)
		errs = append(errs, err)
		if res != startOK {
			failed = res == startFailed
			break
		}
		started++
	}
	if failed {
		acts.BackoffUntil = r.lastFailure.Add(Backoff(r.failures, r.cfg.BackoffBase, r.cfg.BackoffMax))
	}

	attrs := []slog.Attr{
		slog.Int(events.FieldAvailable, acts.Available),
		slog.Int(events.FieldStarting, acts.Starting+started),
		slog.Int(events.FieldTarget, r.cfg.Target),
		slog.String(events.FieldRelayID, r.cfg.RelayID),
		slog.Int("started", started),
		slog.Int("recycled", len(acts.Recycle)+len(acts.Surplus)),
		slog.Int("expired", len(acts.Expire)),
		slog.Int("abandoned", len(acts.Abandon)),
	}
	if !acts.BackoffUntil.IsZero() {
		attrs = append(attrs, slog.Time("backoffUntil", acts.BackoffUntil),
			slog.Int("failures", r.failures))
	}
	logging.Event(ctx, r.Log, slog.LevelInfo, events.WarmPool, "warm pool refilled", attrs...)
	return acts, errors.Join(errs...)
}

// startResult is how one start went.
type startResult int

const (
	startOK      startResult = iota
	startFailed              // the runner refused; counts for the back-off
	startAborted             // the store or the keys failed; the error says why
)

// startOne starts one warm task. Its record is written before the task is
// run, so the relay knows the task however early its bridge connects (R3).
func (r *Refiller) startOne(ctx context.Context) (startResult, error) {
	id := session.NewID("t_")
	now := r.Clock.Now()
	cred, _, err := r.TaskKeys.Sign(ticket.Claims{Kind: ticket.KindTask, TaskID: id}, now,
		r.cfg.CredentialTTL)
	if err != nil {
		return startAborted, fmt.Errorf("start warm task %s: sign credential: %w", id, err)
	}
	w, err := r.Store.PutWarmTask(ctx, session.WarmTask{
		ID: id, RelayID: r.cfg.RelayID, State: session.WarmStarting, StartedAt: now,
	})
	if err != nil {
		return startAborted, fmt.Errorf("start warm task %s: record: %w", id, err)
	}

	handle, err := r.Runner.Run(ctx, session.TaskSpec{
		TaskID: id, Warm: true, RelayURL: r.cfg.RelayURL, Credential: cred,
	})
	runTime := r.Clock.Now().Sub(now)
	if err != nil {
		r.failures++
		r.lastFailure = r.Clock.Now()
		logging.Event(ctx, r.Log, slog.LevelError, events.TaskStartFailed, "warm task start failed",
			slog.String(events.FieldErrorCode, session.ErrorCode(err)),
			slog.String(events.FieldReason, err.Error()),
			slog.Bool(events.FieldWarm, true), slog.String("taskId", id),
			slog.Int("failures", r.failures))
		if err := r.Store.DeleteWarmTask(ctx, id); err != nil {
			return startFailed, fmt.Errorf("start warm task %s: remove record after failed start: %w",
				id, err)
		}
		return startFailed, nil
	}
	r.failures = 0

	log := r.Log.With(logging.KeyTaskArn, handle, "taskId", id)
	logging.Event(ctx, log, slog.LevelInfo, "warm_task_started", "warm task started",
		logging.Duration(runTime))
	if err := r.recordHandle(ctx, log, w, handle); err != nil {
		return startAborted, fmt.Errorf("start warm task %s: %w", id, err)
	}
	return startOK, nil
}

// recordHandle writes the runner's handle into a warm task's record. The
// relay may have changed the record meanwhile (the bridge connected), so a
// conflict reads it again and retries.
func (r *Refiller) recordHandle(
	ctx context.Context, log *slog.Logger, w session.WarmTask, handle string,
) error {
	for attempt := 0; ; attempt++ {
		w.Handle = handle
		_, err := r.Store.UpdateWarmTask(ctx, w)
		if err == nil {
			return nil
		}
		gone := errors.Is(err, session.ErrNotFound)
		if !gone {
			if !errors.Is(err, session.ErrConflict) || attempt >= 5 {
				return fmt.Errorf("record handle: %w", err)
			}
			var found bool
			if w, found, err = r.find(ctx, w.ID); err != nil {
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

// find reads one warm task of the relay.
func (r *Refiller) find(ctx context.Context, id string) (session.WarmTask, bool, error) {
	tasks, err := r.Store.ListWarmTasks(ctx, r.cfg.RelayID)
	if err != nil {
		return session.WarmTask{}, false, fmt.Errorf("list warm tasks: %w", err)
	}
	for _, w := range tasks {
		if w.ID == id {
			return w, true, nil
		}
	}
	return session.WarmTask{}, false, nil
}

// retire takes a task out of the pool and stops it. It first claims the
// record for nobody, conditionally, so that a session claiming the task at
// the same moment either wins (and the pool leaves the task alone) or never
// sees it. A task whose stop fails stays claimed by nobody; its claim
// expires after ClaimTTL and the stop is tried again.
func (r *Refiller) retire(
	ctx context.Context, w session.WarmTask, now time.Time, reason string,
) error {
	w.State, w.SessionID, w.ClaimedAt = session.WarmClaimed, "", now
	retired, err := r.Store.UpdateWarmTask(ctx, w)
	if errors.Is(err, session.ErrConflict) || errors.Is(err, session.ErrNotFound) {
		r.Log.DebugContext(ctx, "warm task changed before it could be retired",
			logging.KeyEvent, "warm_task_retire_skipped", logging.KeyTaskArn, w.Handle,
			"taskId", w.ID, "error", err.Error())
		return nil
	}
	if err != nil {
		return fmt.Errorf("retire warm task %s: %w", w.ID, err)
	}
	return r.stopAndDelete(ctx, retired, reason)
}

// expire ends a claim that is older than ClaimTTL. If the claiming session
// still names the task as its own, the session owns the task and only the
// pool's record is stale; otherwise nobody uses the task and it is stopped.
func (r *Refiller) expire(ctx context.Context, w session.WarmTask) error {
	if w.SessionID != "" {
		sess, err := r.Store.GetSession(ctx, w.SessionID)
		switch {
		case err == nil && sess.TaskID == w.ID && sess.State != session.StateStopped:
			if err := r.Store.DeleteWarmTask(ctx, w.ID); err != nil {
				return fmt.Errorf("settle claim on warm task %s: %w", w.ID, err)
			}
			r.Log.InfoContext(ctx, "stale claim settled: the session owns the task",
				logging.KeyEvent, "warm_claim_settled", logging.KeyTaskArn, w.Handle,
				logging.KeySessionID, w.SessionID, "taskId", w.ID)
			return nil
		case err != nil && !errors.Is(err, session.ErrNotFound):
			return fmt.Errorf("expire claim on warm task %s: read session %s: %w",
				w.ID, w.SessionID, err)
		}
	}
	return r.stopAndDelete(ctx, w, reasonExpired)
}

// stopAndDelete stops a task that left the pool and removes its record.
func (r *Refiller) stopAndDelete(ctx context.Context, w session.WarmTask, reason string) error {
	if w.Handle != "" {
		if err := r.Runner.Stop(ctx, w.Handle, reason); err != nil {
			return fmt.Errorf("stop warm task %s: %w", w.ID, err)
		}
	} else {
		// Its start never recorded a handle (the refill died between Run
		// and the record's update), so there is nothing to stop it by.
		r.Log.WarnContext(ctx, "warm task without handle removed; its task may still run",
			logging.KeyEvent, "warm_task_without_handle", "taskId", w.ID)
	}
	if err := r.Store.DeleteWarmTask(ctx, w.ID); err != nil {
		return fmt.Errorf("remove warm task %s: %w", w.ID, err)
	}
	r.Log.InfoContext(ctx, "warm task removed", logging.KeyEvent, "warm_task_removed",
		logging.KeyTaskArn, w.Handle, "taskId", w.ID, events.FieldReason, reason)
	return nil
}

// Kick asks the Loop for a round now; it never blocks, and kicks that come
// while one is pending make a single round.
func (r *Refiller) Kick() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Loop runs a round at once, then every interval and on each Kick, until
// ctx ends. While starts back off, the next round comes when the back-off
// ends if that is sooner than interval. A failed round is logged as
// warm_refill_failed.
func (r *Refiller) Loop(ctx context.Context, interval time.Duration) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-r.kick:
		}
		// This round answers every kick made before it starts.
		select {
		case <-r.kick:
		default:
		}

		acts, err := r.RunOnce(ctx)
		// A round cut short by the end of ctx is shutdown, not a failure.
		if err != nil && ctx.Err() == nil {
			logging.Event(ctx, r.Log, slog.LevelError, "warm_refill_failed", "warm pool refill failed",
				slog.String(events.FieldReason, err.Error()))
		}
		wait := interval
		if !acts.BackoffUntil.IsZero() {
			wait = min(wait, max(acts.BackoffUntil.Sub(r.Clock.Now()), 0))
		}
		timer.Reset(wait)
	}
}
