package warmpool

import (
	"context"
	"errors"
	"github.com/aishell/aishell/shared/logging/logtest"
	"log/slog"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/aishell/aishell/shared/events"
	"github.com/aishell/aishell/shared/localstore"
	"github.com/aishell/aishell/shared/logging"
	"github.com/aishell/aishell/shared/session"
	"github.com/aishell/aishell/shared/ticket"
)

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

type stopCall struct{ handle, reason string }

// fakeRunner stands in for ECS or local processes: it records what it is
// asked and fails when told to.
type fakeRunner struct {
	mu      sync.Mutex
	runs    []session.TaskSpec
	stops   []stopCall
	runErr  error
	stopErr error
	// onRun runs inside Run, before it answers.
	onRun func(session.TaskSpec)
}

func (f *fakeRunner) Run(ctx context.Context, spec session.TaskSpec) (string, error) {
	f.mu.Lock()
	f.runs = append(f.runs, spec)
	onRun, err := f.onRun, f.runErr
	f.mu.Unlock()
	if onRun != nil {
		onRun(spec)
	}
	if err != nil {
		return "", err
	}
	return "h-" + spec.TaskID, nil
}

func (f *fakeRunner) Stop(ctx context.Context, handle, reason string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stops = append(f.stops, stopCall{handle, reason})
	return f.stopErr
}

func (f *fakeRunner) Describe(ctx context.Context, handle string) (session.TaskStatus, error) {
	return session.TaskStatus{State: session.TaskStopped, StopReason: "fake"}, nil
}

func (f *fakeRunner) set(runErr, stopErr error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.runErr, f.stopErr = runErr, stopErr
}

func (f *fakeRunner) calls() ([]session.TaskSpec, []stopCall) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.runs), slices.Clone(f.stops)
}

// hookStore is a real store with hooks to step in between calls.
type hookStore struct {
	session.Store
	mu        sync.Mutex
	lists     int
	afterList func()
	listErr   error
	putErr    error
}

func (h *hookStore) ListWarmTasks(ctx context.Context, relayID string) ([]session.WarmTask, error) {
	h.mu.Lock()
	h.lists++
	after, listErr := h.afterList, h.listErr
	h.afterList = nil
	h.mu.Unlock()
	if listErr != nil {
		return nil, listErr
	}
	list, err := h.Store.ListWarmTasks(ctx, relayID)
	if after != nil {
		after()
	}
	return list, err
}

func (h *hookStore) PutWarmTask(ctx context.Context, w session.WarmTask) (session.WarmTask, error) {
	if h.putErr != nil {
		return session.WarmTask{}, h.putErr
	}
	return h.Store.PutWarmTask(ctx, w)
}

func (h *hookStore) listCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.lists
}

// logBuffer captures the JSON log lines under test.
type logBuffer = logtest.Buffer

type testEnv struct {
	store  *hookStore
	runner *fakeRunner
	clock  *fakeClock
	keys   *ticket.Keyring
	logs   *logBuffer
	r      *Refiller
}

func newEnv(t *testing.T, cfg Config, clock session.Clock) *testEnv {
	t.Helper()
	st, err := localstore.Open(filepath.Join(t.TempDir(), "state.json"))
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	e := &testEnv{
		store:  &hookStore{Store: st},
		runner: &fakeRunner{},
		keys:   ticket.NewKeyring(ticket.NewKey()),
		logs:   &logBuffer{},
	}
	if clock == nil {
		e.clock = &fakeClock{now: now}
		clock = e.clock
	}
	if cfg.RelayID == "" {
		cfg.RelayID = "r1"
	}
	e.r = NewRefiller(cfg, Deps{
		Store: e.store, Runner: e.runner, TaskKeys: e.keys, Clock: clock,
		Log: logging.New(e.logs, "relay", slog.LevelDebug),
	})
	return e
}

func (e *testEnv) put(t *testing.T, w session.WarmTask) {
	t.Helper()
	w.RelayID = "r1"
	if _, err := e.store.PutWarmTask(context.Background(), w); err != nil {
		t.Fatalf("PutWarmTask(%s): %v", w.ID, err)
	}
}

func (e *testEnv) records(t *testing.T) []session.WarmTask {
	t.Helper()
	list, err := e.store.ListWarmTasks(context.Background(), "r1")
	if err != nil {
		t.Fatalf("ListWarmTasks: %v", err)
	}
	return list
}

func TestRunOnceStartsTheDeficit(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, Config{RelayURL: "ws://127.0.0.1:8080", Target: 2}, nil)
	e.put(t, session.WarmTask{ID: "t_have", Handle: "h-have", State: session.WarmAvailable,
		StartedAt: now.Add(-time.Minute)})

	// When the runner is asked, the record must already be there: the
	// bridge may connect before Run returns.
	var seen []session.WarmTask
	e.runner.onRun = func(spec session.TaskSpec) {
		for _, w := range e.records(t) {
			if w.ID == spec.TaskID {
				seen = append(seen, w)
			}
		}
	}

	acts, err := e.r.RunOnce(ctx)
	if err != nil {
		t.Fatalf("RunOnce: %v", err)
	}
	if acts.Start != 1 || acts.Available != 1 {
		t.Errorf("actions: got start %d available %d; want 1 and 1", acts.Start, acts.Available)
	}
	runs, _ := e.runner.calls()
	if len(runs) != 1 {
		t.Fatalf("runs: got %d; want 1", len(runs))
	}
	spec := runs[0]
	if !spec.Warm || spec.RelayURL != "ws://127.0.0.1:8080" || spec.SessionID != "" ||
		!strings.HasPrefix(spec.TaskID, "t_") {
		t.Errorf("task spec: got %+v; want a warm task t_... for ws://127.0.0.1:8080", spec)
	}
	claims, err := e.keys.Verify(spec.Credential, ticket.KindTask, now)
	if err != nil || claims.TaskID != spec.TaskID {
		t.Errorf("credential: got claims %+v, %v; want a task credential for %s", claims, err, spec.TaskID)
	}
	wantSeen := session.WarmTask{ID: spec.TaskID, RelayID: "r1", State: session.WarmStarting,
		StartedAt: now, Version: 1}
	if len(seen) != 1 || !reflect.DeepEqual(seen[0], wantSeen) {
		t.Errorf("record during Run: got %+v; want [%+v]", seen, wantSeen)
	}

	var started session.WarmTask
	for _, w := range e.records(t) {
		if w.ID == spec.TaskID {
			started = w
		}
	}
	if started.Handle != "h-"+spec.TaskID || started.State != session.WarmStarting {
		t.Errorf("record after Run: got %+v; want starting with handle h-%s", started, spec.TaskID)
	}

	pool := e.logs.Events(t, events.WarmPool)
	if len(pool) != 1 {
		t.Fatalf("warm_pool events: got %d; want 1", len(pool))
	}
	for field, want := range map[string]any{
		events.FieldAvailable: 1.0, events.FieldStarting: 1.0, events.FieldTarget: 2.0,
		"level": "info", logging.KeyModule: "warmpool",
	} {
		if got := pool[0][field]; got != want {
			t.Errorf("warm_pool %s: got %v; want %v", field, got, want)
		}
	}

	// The pool is full now: the next round starts nothing.
	if acts, err := e.r.RunOnce(ctx); err != nil || acts.Start != 0 || acts.Starting != 1 {
		t.Errorf("second round: got %+v, %v; want no start and one starting", acts, err)
	}
}

func TestFailedStartsBackOff(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, Config{Target: 2}, nil)
	noCapacity := &session.CodedError{Code: "NoCapacity", Err: errors.New("4 of 4 tasks running")}

	steps := []struct {
		name      string
		advance   time.Duration
		runErr    error
		wantRuns  int // runs asked in this round
		wantUntil time.Duration
	}{
		{"first failure stops the round", 0, noCapacity, 1, time.Second},
		{"no start while backing off", 999 * time.Millisecond, nil, 0, time.Millisecond},
		{"second failure doubles the wait", time.Millisecond, noCapacity, 1, 2 * time.Second},
		{"third failure doubles again", 2 * time.Second, noCapacity, 1, 4 * time.Second},
		{"a success resets the count", 4 * time.Second, nil, 2, 0},
	}
	total := 0
	for _, st := range steps {
		e.clock.Advance(st.advance)
		e.runner.set(st.runErr, nil)
		acts, err := e.r.RunOnce(ctx)
		if err != nil {
			t.Fatalf("%s: RunOnce: %v", st.name, err)
		}
		runs, _ := e.runner.calls()
		if got := len(runs) - total; got != st.wantRuns {
			t.Errorf("%s: runs: got %d; want %d", st.name, got, st.wantRuns)
		}
		total = len(runs)
		var wantUntil time.Time
		if st.wantUntil != 0 {
			wantUntil = e.clock.Now().Add(st.wantUntil)
		}
		if !acts.BackoffUntil.Equal(wantUntil) {
			t.Errorf("%s: backoff until: got %v; want %v", st.name, acts.BackoffUntil, wantUntil)
		}
	}

	// Failed starts leave no record behind, and each is logged once.
	if got := len(e.records(t)); got != 2 {
		t.Errorf("records: got %d; want the 2 started ones", got)
	}
	failed := e.logs.Events(t, events.TaskStartFailed)
	if len(failed) != 3 {
		t.Fatalf("task_start_failed events: got %d; want 3", len(failed))
	}
	if got := failed[0][events.FieldErrorCode]; got != "NoCapacity" {
		t.Errorf("errorCode: got %v; want NoCapacity", got)
	}
	if got, _ := failed[0][events.FieldReason].(string); !strings.Contains(got, "4 of 4 tasks running") {
		t.Errorf("reason: got %q; want the runner's cause", got)
	}
	if got := failed[0]["level"]; got != "error" {
		t.Errorf("level: got %v; want error", got)
	}

	// After the reset, one failure waits the base again.
	for _, w := range e.records(t) {
		e.store.DeleteWarmTask(ctx, w.ID)
	}
	e.runner.set(noCapacity, nil)
	acts, _ := e.r.RunOnce(ctx)
	if want := e.clock.Now().Add(time.Second); !acts.BackoffUntil.Equal(want) {
		t.Errorf("after reset: backoff until %v; want %v", acts.BackoffUntil, want)
	}
}

func TestRemovals(t *testing.T) {
	old := now.Add(-time.Hour)
	tests := []struct {
		name       string
		target     int
		tasks      []session.WarmTask
		session    *session.Session
		wantStops  []stopCall
		wantRuns   int
		wantLeft   []string
		wantEvents []string
	}{
		{
			name:   "recycle a task past its maximum age",
			target: 1,
			tasks: []session.WarmTask{
				{ID: "t_old", Handle: "h-old", State: session.WarmAvailable, StartedAt: old},
			},
			wantStops:  []stopCall{{"h-old", reasonMaxAge}},
			wantRuns:   1,
			wantEvents: []string{"warm_task_removed"},
		},
		{
			name:   "stop the oldest surplus task",
			target: 1,
			tasks: []session.WarmTask{
				{ID: "t_a", Handle: "h-a", State: session.WarmAvailable, StartedAt: now.Add(-2 * time.Minute)},
				{ID: "t_b", Handle: "h-b", State: session.WarmAvailable, StartedAt: now.Add(-time.Minute)},
			},
			wantStops: []stopCall{{"h-a", reasonSurplus}},
			wantLeft:  []string{"t_b"},
		},
		{
			name:   "abandon a task that never connected",
			target: 1,
			tasks: []session.WarmTask{
				{ID: "t_stuck", Handle: "h-stuck", State: session.WarmStarting, StartedAt: old},
			},
			wantStops: []stopCall{{"h-stuck", reasonNotReady}},
			wantRuns:  1,
		},
		{
			name: "abandon a record in an unknown state",
			tasks: []session.WarmTask{
				{ID: "t_x", Handle: "h-x", State: "exploded", StartedAt: now},
			},
			wantStops: []stopCall{{"h-x", reasonUnknown}},
		},
		{
			name: "drop a stuck record that has no handle",
			tasks: []session.WarmTask{
				{ID: "t_nohandle", State: session.WarmStarting, StartedAt: old},
			},
			wantEvents: []string{"warm_task_without_handle"},
		},
		{
			name: "expire a claim whose session is gone",
			tasks: []session.WarmTask{
				{ID: "t_c", Handle: "h-c", State: session.WarmClaimed, StartedAt: old,
					SessionID: "s_gone", ClaimedAt: old},
			},
			wantStops: []stopCall{{"h-c", reasonExpired}},
		},
		{
			name: "expire a claim whose session moved to another task",
			tasks: []session.WarmTask{
				{ID: "t_c", Handle: "h-c", State: session.WarmClaimed, StartedAt: old,
					SessionID: "s_1", ClaimedAt: old},
			},
			session:   &session.Session{ID: "s_1", UserID: "alice", State: session.StateReady, TaskID: "t_other"},
			wantStops: []stopCall{{"h-c", reasonExpired}},
		},
		{
			name: "settle a claim whose session owns the task, without stopping it",
			tasks: []session.WarmTask{
				{ID: "t_c", Handle: "h-c", State: session.WarmClaimed, StartedAt: old,
					SessionID: "s_1", ClaimedAt: old},
			},
			session:    &session.Session{ID: "s_1", UserID: "alice", State: session.StateReady, TaskID: "t_c"},
			wantEvents: []string{"warm_claim_settled"},
		},
		{
			name: "leave a live claim alone",
			tasks: []session.WarmTask{
				{ID: "t_c", Handle: "h-c", State: session.WarmClaimed, StartedAt: old,
					SessionID: "s_1", ClaimedAt: now.Add(-time.Minute)},
			},
			wantLeft: []string{"t_c"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, Config{Target: tc.target}, nil)
			for _, w := range tc.tasks {
				e.put(t, w)
			}
			if tc.session != nil {
				if _, err := e.store.CreateSession(context.Background(), *tc.session); err != nil {
					t.Fatal(err)
				}
			}

			if _, err := e.r.RunOnce(context.Background()); err != nil {
				t.Fatalf("RunOnce: %v", err)
			}
			runs, stops := e.runner.calls()
			if !reflect.DeepEqual(stops, tc.wantStops) {
				t.Errorf("stops: got %v; want %v", stops, tc.wantStops)
			}
			if len(runs) != tc.wantRuns {
				t.Errorf("runs: got %d; want %d", len(runs), tc.wantRuns)
			}
			var left []string
			for _, w := range e.records(t) {
				if !strings.HasPrefix(w.Handle, "h-t_") { // not started in this round
					left = append(left, w.ID)
				}
			}
			if !reflect.DeepEqual(left, tc.wantLeft) {
				t.Errorf("records left: got %v; want %v", left, tc.wantLeft)
			}
			for _, ev := range tc.wantEvents {
				if len(e.logs.Events(t, ev)) != 1 {
					t.Errorf("event %s: got none; want one", ev)
				}
			}
		})
	}
}

// A session claims a warm task between the refill's read and its recycle:
// the session keeps the task.
func TestRecycleLosesToAClaim(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, Config{Target: 0}, nil)
	e.put(t, session.WarmTask{ID: "t_old", Handle: "h-old", State: session.WarmAvailable,
		StartedAt: now.Add(-time.Hour)})
	e.store.afterList = func() {
		if _, err := e.store.ClaimWarmTask(ctx, "r1", "s_lucky", now); err != nil {
			t.Errorf("claim: %v", err)
		}
	}

	if _, err := e.r.RunOnce(ctx); err != nil {
		t.Fatalf("RunOnce: %v", err)
	}
	if _, stops := e.runner.calls(); len(stops) != 0 {
		t.Errorf("stops: got %v; want none", stops)
	}
	list := e.records(t)
	if len(list) != 1 || list[0].SessionID != "s_lucky" {
		t.Errorf("records: got %+v; want t_old claimed by s_lucky", list)
	}
}

func TestFailedStopIsRetriedAfterTheClaimExpires(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, Config{Target: 0}, nil)
	e.put(t, session.WarmTask{ID: "t_old", Handle: "h-old", State: session.WarmAvailable,
		StartedAt: now.Add(-time.Hour)})
	e.runner.set(nil, errors.New("AccessDeniedException: not allowed to stop"))

	_, err := e.r.RunOnce(ctx)
	if err == nil || !strings.Contains(err.Error(), "stop warm task t_old") ||
		!strings.Contains(err.Error(), "AccessDenied") {
		t.Fatalf("RunOnce: got %v; want the failed stop", err)
	}
	list := e.records(t)
	if len(list) != 1 || list[0].State != session.WarmClaimed || list[0].SessionID != "" {
		t.Fatalf("record after failed stop: got %+v; want t_old claimed by nobody", list)
	}

	// Within the claim's TTL nothing happens; after it, the stop is retried.
	e.runner.set(nil, nil)
	if _, err := e.r.RunOnce(ctx); err != nil {
		t.Fatalf("RunOnce within TTL: %v", err)
	}
	if _, stops := e.runner.calls(); len(stops) != 1 {
		t.Errorf("stops within TTL: got %d; want still 1", len(stops))
	}
	e.clock.Advance(2*time.Minute + time.Second)
	if _, err := e.r.RunOnce(ctx); err != nil {
		t.Fatalf("RunOnce after TTL: %v", err)
	}
	_, stops := e.runner.calls()
	if want := (stopCall{"h-old", reasonExpired}); len(stops) != 2 || stops[1] != want {
		t.Errorf("stops: got %v; want a second stop %v", stops, want)
	}
	if list := e.records(t); len(list) != 0 {
		t.Errorf("records: got %+v; want none", list)
	}
}

// The bridge connects and the relay marks the task available before Run
// has returned: the handle is still recorded, and the state kept.
func TestHandleRecordedAfterTheRelayMarkedTheTaskAvailable(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, Config{Target: 1}, nil)
	e.runner.onRun = func(spec session.TaskSpec) {
		for _, w := range e.records(t) {
			if w.ID == spec.TaskID {
				w.State, w.ReadyAt = session.WarmAvailable, now
				if _, err := e.store.UpdateWarmTask(ctx, w); err != nil {
					t.Errorf("relay's update: %v", err)
				}
			}
		}
	}
	if _, err := e.r.RunOnce(ctx); err != nil {
		t.Fatalf("RunOnce: %v", err)
	}
	list := e.records(t)
	if len(list) != 1 || list[0].State != session.WarmAvailable || list[0].Handle != "h-"+list[0].ID {
		t.Errorf("record: got %+v; want available with its handle", list)
	}
}

func TestStoreFailuresAreReturned(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, Config{Target: 1}, nil)

	e.store.listErr = errors.New("table unreachable")
	if _, err := e.r.RunOnce(ctx); err == nil || !strings.Contains(err.Error(), "list warm tasks") {
		t.Errorf("list failure: got %v; want a list warm tasks error", err)
	}

	e.store.listErr = nil
	e.store.putErr = errors.New("disk full")
	acts, err := e.r.RunOnce(ctx)
	if err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Errorf("put failure: got %v; want the store's error", err)
	}
	if runs, _ := e.runner.calls(); len(runs) != 0 {
		t.Errorf("runs after put failure: got %d; want none", len(runs))
	}
	if !acts.BackoffUntil.IsZero() {
		t.Errorf("backoff after store failure: got %v; want none (only failed starts back off)",
			acts.BackoffUntil)
	}
}

func TestLoopRunsAtOnceOnScheduleAndOnKick(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, Config{Target: 0}, session.SystemClock{})
		// Kicks made before a round are answered by that round.
		e.r.Kick()
		e.r.Kick()
		e.r.Kick()

		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			e.r.Loop(ctx, time.Minute)
			close(done)
		}()

		synctest.Wait()
		if got := e.store.listCount(); got != 1 {
			t.Errorf("rounds at start: got %d; want 1", got)
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		if got := e.store.listCount(); got != 2 {
			t.Errorf("rounds after one interval: got %d; want 2", got)
		}
		e.r.Kick()
		synctest.Wait()
		if got := e.store.listCount(); got != 3 {
			t.Errorf("rounds after a kick: got %d; want 3", got)
		}
		// A kick restarts the interval: the next scheduled round comes a
		// whole interval after the kicked one.
		time.Sleep(time.Minute - time.Nanosecond)
		synctest.Wait()
		if got := e.store.listCount(); got != 3 {
			t.Errorf("rounds just before the next interval: got %d; want 3", got)
		}
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		if got := e.store.listCount(); got != 4 {
			t.Errorf("rounds after the next interval: got %d; want 4", got)
		}

		cancel()
		<-done
	})
}

func TestLoopRetriesWhenTheBackoffEnds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, Config{Target: 1}, session.SystemClock{})
		e.runner.set(&session.CodedError{Code: "NoCapacity", Err: errors.New("full")}, nil)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			e.r.Loop(ctx, time.Hour)
			close(done)
		}()

		steps := []struct {
			sleep    time.Duration
			wantRuns int
		}{
			{0, 1},
			{999 * time.Millisecond, 1},
			{time.Millisecond, 2},                // one failure: 1 s
			{2 * time.Second, 3},                 // two: 2 s
			{4*time.Second - time.Nanosecond, 3}, // three: 4 s
			{time.Nanosecond, 4},
		}
		for i, st := range steps {
			time.Sleep(st.sleep)
			synctest.Wait()
			if runs, _ := e.runner.calls(); len(runs) != st.wantRuns {
				t.Errorf("step %d: runs: got %d; want %d", i, len(runs), st.wantRuns)
			}
		}
		cancel()
		<-done
	})
}

// A kick that comes while a round runs (say a claim right after the round
// read the pool) brings one more round.
func TestKickDuringARoundBringsAnother(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, Config{Target: 0}, session.SystemClock{})
		e.store.afterList = e.r.Kick
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			e.r.Loop(ctx, time.Hour)
			close(done)
		}()
		synctest.Wait()
		if got := e.store.listCount(); got != 2 {
			t.Errorf("rounds: got %d; want 2", got)
		}
		cancel()
		<-done
	})
}
