package workflow_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/aishell/aishell/shared/localstore"
	"github.com/aishell/aishell/shared/logging"
	"github.com/aishell/aishell/shared/session"
	"github.com/aishell/aishell/shared/ticket"
	"github.com/aishell/aishell/shared/workflow"
)

// These tests run the in-process restart on the real session service and
// the embedded store, with a fake task platform, in fake time.

type fakeTask struct {
	state  session.TaskState
	reason string
}

// fakeRunner plays the task platform for a restart.
type fakeRunner struct {
	mu    sync.Mutex // guards the fields below
	tasks map[string]*fakeTask
	runs  []session.TaskSpec
	stops []string
	// pending is how long a new task stays PENDING; pendingForever keeps
	// it there.
	pending        time.Duration
	pendingForever bool
	// diesWith makes a new task stop on its own with this reason.
	diesWith string
	// runErr and stopErr fail the calls; runHangs blocks Run until its
	// context ends; stopNever leaves stopped tasks STOPPING.
	runErr    error
	stopErr   error
	runHangs  bool
	stopNever bool
	// runTakes is how long RunTask takes to answer.
	runTakes time.Duration
	// onRun runs inside Run.
	onRun func(spec session.TaskSpec)
}

func (r *fakeRunner) Run(ctx context.Context, spec session.TaskSpec) (string, error) {
	r.mu.Lock()
	r.runs = append(r.runs, spec)
	hangs, err, onRun, takes := r.runHangs, r.runErr, r.onRun, r.runTakes
	r.mu.Unlock()
	time.Sleep(takes)
	if hangs {
		<-ctx.Done()
		return "", ctx.Err()
	}
	if err != nil {
		return "", err
	}

	handle := "arn:task/" + spec.TaskID
	r.mu.Lock()
	task := &fakeTask{state: session.TaskPending}
	r.tasks[handle] = task
	switch {
	case r.diesWith != "":
		task.state, task.reason = session.TaskStopped, r.diesWith
	case r.pendingForever:
	case r.pending > 0:
		time.AfterFunc(r.pending, func() { r.set(handle, session.TaskRunning) })
	default:
		task.state = session.TaskRunning
	}
	r.mu.Unlock()
	if onRun != nil {
		onRun(spec)
	}
	return handle, nil
}

func (r *fakeRunner) Stop(ctx context.Context, handle, reason string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stops = append(r.stops, handle)
	if r.stopErr != nil {
		return r.stopErr
	}
	task := r.tasks[handle]
	if task == nil {
		return nil
	}
	if r.stopNever {
		task.state = session.TaskStopping
		return nil
	}
	task.state, task.reason = session.TaskStopped, reason
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

func (r *fakeRunner) set(handle string, state session.TaskState) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if task := r.tasks[handle]; task != nil && task.state == session.TaskPending {
		task.state = state
	}
}

func (r *fakeRunner) started() []session.TaskSpec {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]session.TaskSpec(nil), r.runs...)
}

func (r *fakeRunner) stopped() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.stops...)
}

type env struct {
	t      *testing.T
	store  *localstore.Store
	runner *fakeRunner
	svc    *session.Service
	local  *workflow.Local
}

// newEnv stores session s_1 of alice with a running task, as it stands
// when its relay found the task lost, and returns a Local with limit.
func newEnv(t *testing.T, limit time.Duration) *env {
	t.Helper()
	store, err := localstore.Open(filepath.Join(t.TempDir(), "state.json"))
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { store.Close() })
	r := &fakeRunner{tasks: map[string]*fakeTask{
		"arn:task/old": {state: session.TaskRunning},
	}}
	svc := session.NewService(session.Config{RelayID: "relay-test", PollInterval: 100 * time.Millisecond},
		session.Deps{
			Store:    store,
			Runner:   r,
			Tickets:  ticket.NewKeyring(ticket.NewKey()),
			TaskKeys: ticket.NewKeyring(ticket.NewKey()),
		})
	now := time.Now()
	_, err = store.CreateSession(context.Background(), session.Session{
		ID: "s_1", UserID: "alice", State: session.StateRestarting, RelayID: "relay-test",
		TaskID: "t_old", TaskHandle: "arn:task/old", CreatedAt: now, UpdatedAt: now,
	})
	if err != nil {
		t.Fatalf("store session: %v", err)
	}
	return &env{t: t, store: store, runner: r, svc: svc,
		local: workflow.NewLocal(svc, limit, logging.Discard())}
}

// restart starts a restart of s_1 and returns its outcome channel.
func (e *env) restart(ctx context.Context) <-chan workflow.Outcome {
	e.t.Helper()
	out, err := e.local.StartRestart(ctx, workflow.RestartInput{SessionID: "s_1", Attempt: 1})
	if err != nil {
		e.t.Fatalf("StartRestart: %v", err)
	}
	return out
}

// newTask waits until the restart has started a task and returns its id.
func (e *env) newTask() string {
	e.t.Helper()
	synctest.Wait()
	runs := e.runner.started()
	if len(runs) != 1 {
		e.t.Fatalf("tasks started: got %d; want 1", len(runs))
	}
	return runs[0].TaskID
}

// A restart stops the old task, starts a new one, waits for it to run and
// to connect, and reports it.
func TestRestartSucceeds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, 0)
		e.runner.pending = 2 * time.Second
		start := time.Now()
		out := e.restart(context.Background())

		task := e.newTask()
		if got := e.runner.stopped(); len(got) != 1 || got[0] != "arn:task/old" {
			t.Errorf("stops: got %v; want the old task", got)
		}
		time.Sleep(3 * time.Second)
		synctest.Wait()
		select {
		case o := <-out:
			t.Fatalf("outcome before the task connected: %+v", o)
		default:
		}

		e.local.TaskConnected("s_1", task)
		o := <-out
		if !o.Success || o.TaskID != task || o.Warm || o.Step != "" || o.Reason != "" {
			t.Errorf("outcome: got %+v; want success with task %s", o, task)
		}
		if o.Duration != time.Since(start) {
			t.Errorf("duration: got %s; want %s", o.Duration, time.Since(start))
		}
		rec, err := e.store.GetSession(context.Background(), "s_1")
		if err != nil {
			t.Fatal(err)
		}
		if rec.TaskID != task || !rec.Start.Restart {
			t.Errorf("stored session: got task %s restart %v; want %s, a restart", rec.TaskID, rec.Start.Restart, task)
		}
	})
}

// A report that the task connected, arriving before the restart waits for
// it, is kept and not lost.
func TestTaskConnectedBeforeTheWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, 0)
		e.runner.pending = 2 * time.Second
		// The bridge is quick: it connects while the task is still PENDING.
		e.runner.onRun = func(spec session.TaskSpec) { e.local.TaskConnected(spec.SessionID, spec.TaskID) }
		start := time.Now()
		o := <-e.restart(context.Background())
		if !o.Success {
			t.Fatalf("outcome: got %+v; want success", o)
		}
		if took := time.Since(start); took > 3*time.Second {
			t.Errorf("restart took %s; want it done once the task ran", took)
		}
	})
}

// A report for another task, or another session, does not end the wait.
func TestTaskConnectedForAnotherTask(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, 0)
		out := e.restart(context.Background())
		task := e.newTask()
		e.local.TaskConnected("s_1", "t_old")
		e.local.TaskConnected("s_2", task)
		o := <-out
		if o.Success || o.Step != session.StepWaitConnection {
			t.Errorf("outcome: got %+v; want a failure in wait_connection", o)
		}
	})
}

// Each step that fails names itself and the concrete cause (R5).
func TestRestartStepFailures(t *testing.T) {
	tests := []struct {
		name  string
		setup func(r *fakeRunner)
		step  string
		// reason is a part of the outcome's reason.
		reason string
		// took is the fake time until the outcome.
		took time.Duration
	}{
		{
			name: "old task cannot be stopped",
			setup: func(r *fakeRunner) {
				r.stopErr = &session.CodedError{Code: "AccessDeniedException", Err: errors.New("ecs:StopTask denied")}
			},
			step:   session.StepStopOldTask,
			reason: "AccessDeniedException",
		},
		{
			name:   "old task never stops",
			setup:  func(r *fakeRunner) { r.stopNever = true },
			step:   session.StepStopOldTask,
			reason: "STOPPING",
			took:   10 * time.Second,
		},
		{
			name: "RunTask denied",
			setup: func(r *fakeRunner) {
				r.runErr = &session.CodedError{Code: "AccessDeniedException", Err: errors.New("ecs:RunTask denied")}
			},
			step:   session.StepStartTask,
			reason: "AccessDeniedException",
		},
		{
			name: "no capacity",
			setup: func(r *fakeRunner) {
				r.runErr = &session.CodedError{Code: "NoCapacity", Err: errors.New("no container instance")}
			},
			step:   session.StepStartTask,
			reason: "NoCapacity",
		},
		{
			name:   "task stops before running",
			setup:  func(r *fakeRunner) { r.diesWith = "CannotPullContainerError: image not found" },
			step:   session.StepWaitRunning,
			reason: "CannotPullContainerError: image not found",
		},
		{
			name:   "task never connects",
			setup:  func(r *fakeRunner) {},
			step:   session.StepWaitConnection,
			reason: "did not connect",
			took:   workflow.RestartLimit,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := newEnv(t, 0)
				tt.setup(e.runner)
				start := time.Now()
				o := <-e.restart(context.Background())
				if o.Success {
					t.Fatalf("outcome: got success; want a failure in %s", tt.step)
				}
				if o.Step != tt.step {
					t.Errorf("step: got %q; want %q (reason %q)", o.Step, tt.step, o.Reason)
				}
				if !strings.Contains(o.Reason, tt.reason) {
					t.Errorf("reason %q does not name %q", o.Reason, tt.reason)
				}
				if took := time.Since(start); took != tt.took {
					t.Errorf("outcome after %s; want %s", took, tt.took)
				}
			})
		})
	}
}

// The whole restart is bounded: a step still running at the limit fails
// the restart then, named as the step in progress (R5).
func TestRestartTimeOutNamesStepInProgress(t *testing.T) {
	const limit = 5 * time.Second
	tests := []struct {
		name  string
		setup func(r *fakeRunner)
		step  string
	}{
		{"stop never completes", func(r *fakeRunner) { r.stopNever = true }, session.StepStopOldTask},
		{"RunTask hangs", func(r *fakeRunner) { r.runHangs = true }, session.StepStartTask},
		{"task stays pending", func(r *fakeRunner) {
			r.pendingForever = true
			r.runTakes = 300 * time.Millisecond
		}, session.StepWaitRunning},
		{"task never connects", func(r *fakeRunner) {}, session.StepWaitConnection},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := newEnv(t, limit)
				tt.setup(e.runner)
				start := time.Now()
				o := <-e.restart(context.Background())
				if took := time.Since(start); took != limit {
					t.Errorf("outcome after %s; want %s", took, limit)
				}
				if o.Success || o.Step != tt.step {
					t.Errorf("outcome: got success %v step %q; want a failure in %s", o.Success, o.Step, tt.step)
				}
				for _, want := range []string{"timed out", tt.step} {
					if !strings.Contains(o.Reason, want) {
						t.Errorf("reason %q does not name %q", o.Reason, want)
					}
				}
			})
		})
	}
}

// The default limit is the 30 s of R5.
func TestDefaultRestartLimit(t *testing.T) {
	if workflow.RestartLimit != 30*time.Second {
		t.Errorf("RestartLimit: got %s; want 30s", workflow.RestartLimit)
	}
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, 0)
		e.runner.pendingForever = true
		start := time.Now()
		<-e.restart(context.Background())
		if took := time.Since(start); took != 30*time.Second {
			t.Errorf("outcome after %s; want 30s", took)
		}
	})
}

// Cancelling the restart (the relay gave up on it) ends it at once, with
// an outcome still delivered.
func TestRestartCancelled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, 0)
		ctx, cancel := context.WithCancel(context.Background())
		out := e.restart(ctx)
		e.newTask()
		time.Sleep(time.Second)
		cancel()
		o := <-out
		if o.Success || o.Step != session.StepWaitConnection {
			t.Errorf("outcome: got %+v; want a failure in wait_connection", o)
		}
	})
}
