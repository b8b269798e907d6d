package session_test

import (
	"context"
	"fmt"
	"github.com/aishell/aishell/shared/logging/logtest"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aishell/aishell/shared/localstore"
	"github.com/aishell/aishell/shared/logging"
	"github.com/aishell/aishell/shared/session"
	"github.com/aishell/aishell/shared/ticket"
)

// The tests of this package run the session service on the embedded store
// with a fake task platform (fakeRunner), inside synctest bubbles so that
// the stop wait of R4 passes in fake time.

const relayID = "relay-test"

type fakeTask struct {
	spec   session.TaskSpec
	state  session.TaskState
	reason string
}

// fakeRunner plays the task platform. A stopped task stays STOPPING for
// stopLag (ECS drains it), or for ever when stopNever is set.
type fakeRunner struct {
	mu        sync.Mutex // guards the fields below
	tasks     map[string]*fakeTask
	specs     []session.TaskSpec
	stops     []string // handles, in the order Stop was called
	runErr    error    // returned by every Run when set
	stopErr   error    // returned by every Stop when set
	stopLag   time.Duration
	stopNever bool
	// overlaps records each Run that found another task of the same
	// session not yet STOPPED: two live tasks for one session (R4).
	overlaps []string
	// onRun runs inside Run, before it returns; onStop after Stop.
	onRun  func(spec session.TaskSpec)
	onStop func(handle string)
}

func newFakeRunner() *fakeRunner {
	return &fakeRunner{tasks: map[string]*fakeTask{}}
}

func (r *fakeRunner) Run(ctx context.Context, spec session.TaskSpec) (string, error) {
	r.mu.Lock()
	r.specs = append(r.specs, spec)
	if r.runErr != nil {
		err := r.runErr
		r.mu.Unlock()
		return "", err
	}
	for h, task := range r.tasks {
		if spec.SessionID != "" && task.spec.SessionID == spec.SessionID && task.state != session.TaskStopped {
			r.overlaps = append(r.overlaps, fmt.Sprintf("%s is %s", h, task.state))
		}
	}
	handle := "arn:task/" + spec.TaskID
	r.tasks[handle] = &fakeTask{spec: spec, state: session.TaskRunning}
	onRun := r.onRun
	r.mu.Unlock()
	if onRun != nil {
		onRun(spec)
	}
	return handle, nil
}

func (r *fakeRunner) Stop(ctx context.Context, handle, reason string) error {
	err := r.stop(handle, reason)
	r.mu.Lock()
	onStop := r.onStop
	r.mu.Unlock()
	if onStop != nil {
		onStop(handle)
	}
	return err
}

func (r *fakeRunner) stop(handle, reason string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stops = append(r.stops, handle)
	if r.stopErr != nil {
		return r.stopErr
	}
	task := r.tasks[handle]
	if task == nil || task.state == session.TaskStopped || task.state == session.TaskStopping {
		return nil
	}
	task.reason = reason
	switch {
	case r.stopNever:
		task.state = session.TaskStopping
	case r.stopLag > 0:
		task.state = session.TaskStopping
		time.AfterFunc(r.stopLag, func() { r.set(handle, session.TaskStopped) })
	default:
		task.state = session.TaskStopped
	}
	return nil
}

func (r *fakeRunner) Describe(ctx context.Context, handle string) (session.TaskStatus, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	task := r.tasks[handle]
	if task == nil {
		return session.TaskStatus{State: session.TaskStopped, StopReason: "unknown task"}, nil
	}
	return session.TaskStatus{State: task.state, StopReason: task.reason}, nil
}

// add registers a task of a session in a given state.
func (r *fakeRunner) add(handle, sessionID string, state session.TaskState) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tasks[handle] = &fakeTask{spec: session.TaskSpec{SessionID: sessionID}, state: state}
}

func (r *fakeRunner) set(handle string, state session.TaskState) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if task := r.tasks[handle]; task != nil {
		task.state = state
	}
}

func (r *fakeRunner) runs() []session.TaskSpec {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]session.TaskSpec(nil), r.specs...)
}

func (r *fakeRunner) stopped() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.stops...)
}

func (r *fakeRunner) overlapping() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.overlaps...)
}

// fakeNotifier records what the relay would be told.
type fakeNotifier struct {
	mu      sync.Mutex
	changed []string
	ended   []string
}

func (n *fakeNotifier) SessionChanged(id string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.changed = append(n.changed, id)
}

func (n *fakeNotifier) SessionEnded(id string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.ended = append(n.ended, id)
}

func (n *fakeNotifier) calls() (changed, ended []string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.changed...), append([]string(nil), n.ended...)
}

// fakeDispatcher plays the relay that holds warm tasks' sockets.
type fakeDispatcher struct {
	mu    sync.Mutex
	err   error
	calls []session.InitUser
}

func (d *fakeDispatcher) InitUser(ctx context.Context, u session.InitUser) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls = append(d.calls, u)
	return d.err
}

// logBuffer captures the JSON log lines under test.
type logBuffer = logtest.Buffer

// env is a session service with its fakes.
type env struct {
	t        *testing.T
	store    *localstore.Store
	runner   *fakeRunner
	notifier *fakeNotifier
	warm     *fakeDispatcher
	logs     *logBuffer
	svc      *session.Service
	claims   atomic.Int32
}

func newEnv(t *testing.T, cfg session.Config) *env {
	t.Helper()
	store, err := localstore.Open(filepath.Join(t.TempDir(), "state.json"))
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { store.Close() })
	cfg.RelayID = relayID
	cfg.ClientRelayURL = "ws://127.0.0.1:0/ws"
	cfg.TaskRelayURL = "ws://127.0.0.1:0"
	if cfg.PollInterval == 0 {
		cfg.PollInterval = 100 * time.Millisecond
	}
	e := &env{t: t, store: store, runner: newFakeRunner(), notifier: &fakeNotifier{},
		warm: &fakeDispatcher{}, logs: &logBuffer{}}
	e.svc = session.NewService(cfg, session.Deps{
		Store:       store,
		Runner:      e.runner,
		Warm:        e.warm,
		Notifier:    e.notifier,
		Tickets:     ticket.NewKeyring(ticket.NewKey()),
		TaskKeys:    ticket.NewKeyring(ticket.NewKey()),
		Clock:       session.SystemClock{},
		Log:         logging.New(e.logs, "session-api", slog.LevelDebug),
		OnWarmClaim: func() { e.claims.Add(1) },
	})
	return e
}

// put stores a session in the given state, its task (if handle is not
// empty) known to the runner in taskState.
func (e *env) put(
	id, user string, state session.State, handle string, taskState session.TaskState,
) session.Session {
	e.t.Helper()
	now := time.Now()
	s := session.Session{ID: id, UserID: user, State: state, RelayID: relayID,
		CreatedAt: now, UpdatedAt: now}
	if handle != "" {
		s.TaskID, s.TaskHandle = "t_"+id, handle
		e.runner.add(handle, id, taskState)
	}
	s, err := e.store.CreateSession(context.Background(), s)
	if err != nil {
		e.t.Fatalf("store session %s: %v", id, err)
	}
	return s
}

func (e *env) get(id string) session.Session {
	e.t.Helper()
	s, err := e.store.GetSession(context.Background(), id)
	if err != nil {
		e.t.Fatalf("read session %s: %v", id, err)
	}
	return s
}

func (e *env) putWarm(id string, state session.WarmState) session.WarmTask {
	e.t.Helper()
	handle := "arn:task/" + id
	e.runner.add(handle, "", session.TaskRunning)
	w, err := e.store.PutWarmTask(context.Background(), session.WarmTask{
		ID: id, Handle: handle, RelayID: relayID, State: state, StartedAt: time.Now(),
	})
	if err != nil {
		e.t.Fatalf("put warm task %s: %v", id, err)
	}
	return w
}

func (e *env) warmTasks() []session.WarmTask {
	e.t.Helper()
	list, err := e.store.ListWarmTasks(context.Background(), relayID)
	if err != nil {
		e.t.Fatalf("list warm tasks: %v", err)
	}
	return list
}
