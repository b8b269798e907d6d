package session_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/aishell/aishell/shared/session"
	"github.com/aishell/aishell/shared/ticket"
)

// Create stores a session, names its task on the record before the task
// exists (R3), starts the task with the user's settings as overrides (R9),
// and answers with a ticket bound to the user and session (R1).
func TestCreate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, session.Config{})
		ctx := context.Background()
		var namedFirst []bool
		e.runner.onRun = func(spec session.TaskSpec) {
			rec, err := e.store.GetSession(ctx, spec.SessionID)
			namedFirst = append(namedFirst, err == nil && rec.TaskID == spec.TaskID)
		}

		now := time.Now()
		v, err := e.svc.Create(ctx, session.Request{TraceID: "trace-1"}, "alice")
		if err != nil {
			t.Fatalf("Create: %v", err)
		}
		s := v.Session
		if !v.Created || s.UserID != "alice" || s.State != session.StateStarting || s.RelayID != relayID ||
			s.Warm || s.TaskID == "" || s.TaskHandle == "" || !strings.HasPrefix(s.ID, "s_") {
			t.Errorf("created session: got %+v (created %v); want a starting cold session of alice", s, v.Created)
		}
		if got := e.get(s.ID); got.TaskHandle != s.TaskHandle || got.TraceID != "trace-1" {
			t.Errorf("stored session: got handle %q trace %q; want %q trace-1",
				got.TaskHandle, got.TraceID, s.TaskHandle)
		}

		runs := e.runner.runs()
		if len(runs) != 1 {
			t.Fatalf("tasks started: got %d; want 1", len(runs))
		}
		spec := runs[0]
		if spec.SessionID != s.ID || spec.UserID != "alice" || spec.TaskID != s.TaskID || spec.Warm ||
			spec.UID < 1000 || spec.RelayURL != "ws://127.0.0.1:0" {
			t.Errorf("task spec: got %+v; want alice's session %s with a user uid", spec, s.ID)
		}
		if len(namedFirst) != 1 || !namedFirst[0] {
			t.Errorf("session named the task before it started: got %v; want [true]", namedFirst)
		}
		if changed, _ := e.notifier.calls(); len(changed) == 0 || changed[0] != s.ID {
			t.Errorf("relay told of the change: got %v; want %s", changed, s.ID)
		}

		cred, err := e.svc.TaskKeys.Verify(spec.Credential, ticket.KindTask, now)
		if err != nil || cred.TaskID != spec.TaskID || cred.SessionID != s.ID {
			t.Errorf("task credential: got %+v, %v; want task %s of %s", cred, err, spec.TaskID, s.ID)
		}
		tk, err := e.svc.Tickets.Verify(v.Ticket, ticket.KindClient, now)
		if err != nil || tk.UserID != "alice" || tk.SessionID != s.ID || tk.Resumed {
			t.Errorf("ticket: got %+v, %v; want alice's, for %s, not resumed", tk, err, s.ID)
		}
		if got, want := v.TicketExpiresAt.Sub(now), time.Minute; got != want {
			t.Errorf("ticket lifetime: got %s; want %s", got, want)
		}
		if _, err := e.svc.Tickets.Verify(v.Ticket, ticket.KindTask, now); err == nil {
			t.Errorf("client ticket accepted as a task credential")
		}

		lines := e.logs.Events(t, "session_created")
		if len(lines) != 1 || lines[0]["resumed"] != false || lines[0]["warm"] != false ||
			lines[0]["sessionId"] != s.ID || lines[0]["traceId"] != "trace-1" {
			t.Errorf("session_created lines: got %v; want one, not resumed, cold", lines)
		}
	})
}

// A user reaches only their own sessions: someone else's is forbidden (the
// API answers 403), an unknown one is not found (404).
func TestSessionOwnership(t *testing.T) {
	tests := []struct {
		name string
		call func(e *env, user, id string) error
	}{
		{"get", func(e *env, user, id string) error {
			_, err := e.svc.Get(context.Background(), user, id)
			return err
		}},
		{"get view", func(e *env, user, id string) error {
			_, err := e.svc.GetView(context.Background(), user, id)
			return err
		}},
		{"resume", func(e *env, user, id string) error {
			_, err := e.svc.Resume(context.Background(), session.Request{}, user, id)
			return err
		}},
		{"delete", func(e *env, user, id string) error {
			return e.svc.Delete(context.Background(), session.Request{}, user, id)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := newEnv(t, session.Config{})
				e.put("s_alice", "alice", session.StateReady, "arn:task/a", session.TaskRunning)

				err := tt.call(e, "mallory", "s_alice")
				if !errors.Is(err, session.ErrForbidden) {
					t.Errorf("someone else's session: got %v; want ErrForbidden", err)
				}
				err = tt.call(e, "alice", "s_missing")
				if !errors.Is(err, session.ErrNotFound) {
					t.Errorf("unknown session: got %v; want ErrNotFound", err)
				}
				if got := e.runner.stopped(); len(got) != 0 {
					t.Errorf("stops: got %v; want none", got)
				}
				if got := e.runner.runs(); len(got) != 0 {
					t.Errorf("tasks started: got %d; want none", len(got))
				}
				if got := e.get("s_alice"); got.State != session.StateReady || got.TaskHandle != "arn:task/a" {
					t.Errorf("alice's session: got %s with %q; want it untouched", got.State, got.TaskHandle)
				}
			})
		})
	}
}

// Delete stops the task, keeps nothing of the session, and tells the
// relay.
func TestDelete(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, session.Config{})
		e.put("s_1", "alice", session.StateReady, "arn:task/1", session.TaskRunning)

		if err := e.svc.Delete(context.Background(), session.Request{}, "alice", "s_1"); err != nil {
			t.Fatalf("Delete: %v", err)
		}
		if got := e.runner.stopped(); len(got) != 1 || got[0] != "arn:task/1" {
			t.Errorf("stops: got %v; want [arn:task/1]", got)
		}
		if _, err := e.store.GetSession(context.Background(), "s_1"); !errors.Is(err, session.ErrNotFound) {
			t.Errorf("session after Delete: got %v; want ErrNotFound", err)
		}
		if _, ended := e.notifier.calls(); len(ended) != 1 || ended[0] != "s_1" {
			t.Errorf("relay told of the end: got %v; want [s_1]", ended)
		}
	})
}

// Delete succeeds even when the record changes under it, as when the relay
// sees the stopped task's socket close and marks the session stopped.
func TestDeleteWhileRelayChangesRecord(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, session.Config{})
		e.put("s_1", "alice", session.StateReady, "arn:task/1", session.TaskRunning)
		var once sync.Once
		e.runner.onStop = func(handle string) {
			once.Do(func() {
				if _, _, err := e.svc.MarkStopped(context.Background(), "s_1", "t_s_1"); err != nil {
					t.Errorf("MarkStopped: %v", err)
				}
			})
		}

		if err := e.svc.Delete(context.Background(), session.Request{}, "alice", "s_1"); err != nil {
			t.Fatalf("Delete: %v", err)
		}
		if _, err := e.store.GetSession(context.Background(), "s_1"); !errors.Is(err, session.ErrNotFound) {
			t.Errorf("session after Delete: got %v; want ErrNotFound", err)
		}
		if _, ended := e.notifier.calls(); len(ended) != 1 {
			t.Errorf("relay told of the end: got %v; want once", ended)
		}
	})
}

// Resume keeps a live task, starts one for a session without, and leaves
// a restart under way alone (R1, R5).
func TestResume(t *testing.T) {
	tests := []struct {
		name      string
		state     session.State
		taskState session.TaskState // "" for a session without a task
		age       time.Duration     // since the record last changed
		newTask   bool
	}{
		{name: "live task is kept", state: session.StateReady, taskState: session.TaskRunning},
		{name: "pending task is kept", state: session.StateStarting, taskState: session.TaskPending},
		{name: "stopped session gets a task", state: session.StateStopped, taskState: session.TaskStopped,
			newTask: true},
		{name: "dead task behind a ready record is replaced", state: session.StateReady,
			taskState: session.TaskStopped, newTask: true},
		{name: "stopped record with a running task is replaced", state: session.StateStopped,
			taskState: session.TaskRunning, newTask: true},
		{name: "session without a task gets one", state: session.StateStopped, newTask: true},
		{name: "restart under way is left alone", state: session.StateRestarting,
			taskState: session.TaskStopped, age: 10 * time.Second},
		{name: "abandoned restart is taken over", state: session.StateRestarting,
			taskState: session.TaskStopped, age: 2 * time.Minute, newTask: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := newEnv(t, session.Config{})
				handle := ""
				if tt.taskState != "" {
					handle = "arn:task/old"
				}
				e.put("s_1", "alice", tt.state, handle, tt.taskState)
				time.Sleep(tt.age)

				v, err := e.svc.Resume(context.Background(), session.Request{}, "alice", "s_1")
				if err != nil {
					t.Fatalf("Resume: %v", err)
				}
				if v.Created || v.Session.ID != "s_1" {
					t.Errorf("view: got session %s created %v; want s_1, resumed", v.Session.ID, v.Created)
				}
				tk, err := e.svc.Tickets.Verify(v.Ticket, ticket.KindClient, time.Now())
				if err != nil || !tk.Resumed || tk.SessionID != "s_1" {
					t.Errorf("ticket: got %+v, %v; want a resumed ticket for s_1", tk, err)
				}
				runs := len(e.runner.runs())
				switch {
				case tt.newTask && runs != 1:
					t.Errorf("tasks started: got %d; want 1", runs)
				case !tt.newTask && runs != 0:
					t.Errorf("tasks started: got %d; want none", runs)
				}
				if tt.newTask && handle != "" && tt.taskState == session.TaskRunning {
					if got := e.runner.stopped(); len(got) != 1 || got[0] != handle {
						t.Errorf("stops: got %v; want the old task stopped first", got)
					}
				}
				if got := e.runner.overlapping(); len(got) != 0 {
					t.Errorf("started while another task of the session lived: %v", got)
				}
				if lines := e.logs.Events(t, "session_created"); len(lines) != 1 || lines[0]["resumed"] != true {
					t.Errorf("session_created lines: got %v; want one, resumed", lines)
				}
			})
		})
	}
}

// R4: a resume while the old task is still stopping waits for the stop to
// finish, then starts exactly one task; the session never has two live
// tasks, however many resumes race.
func TestResumeWhileOldTaskStops(t *testing.T) {
	const drain = 3 * time.Second
	for _, resumes := range []int{1, 2, 5} {
		t.Run(fmt.Sprintf("%d resumes", resumes), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := newEnv(t, session.Config{})
				e.runner.stopLag = drain
				e.put("s_1", "alice", session.StateReady, "arn:task/old", session.TaskRunning)
				// The relay stopped the task for idleness a moment ago.
				if err := e.runner.Stop(context.Background(), "arn:task/old", "idle"); err != nil {
					t.Fatal(err)
				}
				start := time.Now()

				var wg sync.WaitGroup
				errs := make(chan error, resumes)
				for range resumes {
					wg.Go(func() {
						_, err := e.svc.Resume(context.Background(), session.Request{}, "alice", "s_1")
						errs <- err
					})
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					if err != nil {
						t.Errorf("Resume: %v", err)
					}
				}

				took := time.Since(start)
				poll := e.svc.Config().PollInterval
				if took < drain || took > drain+poll {
					t.Errorf("resume took %s; want the %s the old task took to stop (+ one poll)", took, drain)
				}
				if got := len(e.runner.runs()); got != 1 {
					t.Errorf("tasks started: got %d; want exactly 1", got)
				}
				if got := e.runner.overlapping(); len(got) != 0 {
					t.Errorf("started while another task of the session lived: %v", got)
				}
				rec := e.get("s_1")
				if rec.TaskHandle == "" || rec.TaskHandle == "arn:task/old" {
					t.Errorf("stored task: got %q; want the new task", rec.TaskHandle)
				}
			})
		})
	}
}

// A stop that never completes fails the start after the stop wait (10 s),
// naming the step; no task is started beside the old one (R4).
func TestResumeWhenOldTaskNeverStops(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, session.Config{})
		e.runner.stopNever = true
		e.put("s_1", "alice", session.StateStopped, "arn:task/old", session.TaskStopping)
		wait := e.svc.Config().StopWait
		if wait != 10*time.Second {
			t.Fatalf("default stop wait: got %s; want 10s", wait)
		}

		start := time.Now()
		_, err := e.svc.Resume(context.Background(), session.Request{}, "alice", "s_1")
		if took := time.Since(start); took != wait {
			t.Errorf("gave up after %s; want %s", took, wait)
		}
		var se *session.StartError
		if !errors.As(err, &se) {
			t.Fatalf("Resume: got %v; want a StartError", err)
		}
		if se.Step != session.StepStopOldTask || !strings.Contains(err.Error(), "stop_old_task") {
			t.Errorf("StartError: got step %q (%v); want stop_old_task", se.Step, err)
		}
		if !strings.Contains(err.Error(), "arn:task/old") {
			t.Errorf("error %q does not name the task", err)
		}
		if got := len(e.runner.runs()); got != 0 {
			t.Errorf("tasks started: got %d; want none while the old one lives", got)
		}
	})
}

// A failed RunTask is a StartError carrying the platform's error code; it
// is logged as task_start_failed with that code, and leaves the session
// stopped with no task (R5, R13a).
func TestStartFailure(t *testing.T) {
	tests := []struct {
		code     string
		capacity bool
	}{
		{code: "AccessDeniedException"},
		{code: "InvalidParameterException"},
		{code: "NoCapacity", capacity: true},
		{code: "ThrottlingException", capacity: true},
		{code: "RESOURCE:MEMORY", capacity: true},
	}
	for _, tt := range tests {
		t.Run(tt.code, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := newEnv(t, session.Config{})
				e.runner.runErr = &session.CodedError{Code: tt.code, Err: errors.New("the platform said no")}

				_, err := e.svc.Create(context.Background(), session.Request{}, "alice")
				var se *session.StartError
				if !errors.As(err, &se) {
					t.Fatalf("Create: got %v; want a StartError", err)
				}
				if se.Step != session.StepStartTask || se.Code != tt.code {
					t.Errorf("StartError: got step %q code %q; want start_task %s", se.Step, se.Code, tt.code)
				}
				if got := session.ErrorCode(err); got != tt.code {
					t.Errorf("ErrorCode: got %q; want %q", got, tt.code)
				}
				for _, want := range []string{"start_task", tt.code, "the platform said no"} {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error %q does not name %q", err, want)
					}
				}
				if got := session.IsCapacity(err); got != tt.capacity {
					t.Errorf("IsCapacity: got %v; want %v", got, tt.capacity)
				}

				lines := e.logs.Events(t, "task_start_failed")
				if len(lines) != 1 || lines[0]["errorCode"] != tt.code || lines[0]["level"] != "error" {
					t.Errorf("task_start_failed lines: got %v; want one error with errorCode %s", lines, tt.code)
				}
				// The caller never learnt the session's id: no record is left.
				if rec, err := e.store.SessionOfUser(context.Background(), "alice"); !errors.Is(err, session.ErrNotFound) {
					t.Errorf("stored session after a failed create: got %+v, %v; want none", rec, err)
				}
			})
		})
	}
}

// IsCapacity tells "no capacity now, try again" (503) from other errors.
func TestIsCapacity(t *testing.T) {
	coded := func(code string) error { return &session.CodedError{Code: code, Err: errors.New("x")} }
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"no capacity", coded("NoCapacity"), true},
		{"throttled", coded("ThrottlingException"), true},
		{"resource limit", coded("ResourceLimit"), true},
		{"placement resource", coded("RESOURCE:CPU"), true},
		{"wrapped", fmt.Errorf("run task: %w", coded("NoCapacity")), true},
		{"start error", &session.StartError{Step: session.StepStartTask, Code: "NoCapacity",
			Err: coded("NoCapacity")}, true},
		{"access denied", coded("AccessDeniedException"), false},
		{"no code", errors.New("boom"), false},
		{"nil", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := session.IsCapacity(tt.err); got != tt.want {
				t.Errorf("IsCapacity(%v): got %v; want %v", tt.err, got, tt.want)
			}
		})
	}
}

// With the pool on, a start claims an available warm task and hands it
// its user instead of starting a cold task (R8).
func TestWarmClaim(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, session.Config{WarmPool: true})
		e.putWarm("w_old", session.WarmAvailable)
		time.Sleep(time.Second)
		e.putWarm("w_new", session.WarmAvailable)
		e.putWarm("w_booting", session.WarmStarting)

		v, err := e.svc.Create(context.Background(), session.Request{}, "alice")
		if err != nil {
			t.Fatalf("Create: %v", err)
		}
		s := v.Session
		if !s.Warm || s.TaskID != "w_old" || s.TaskHandle != "arn:task/w_old" {
			t.Errorf("session: got task %q (%q) warm %v; want the oldest warm task", s.TaskID, s.TaskHandle, s.Warm)
		}
		if got := len(e.runner.runs()); got != 0 {
			t.Errorf("cold starts: got %d; want none", got)
		}
		e.warm.mu.Lock()
		calls := append([]session.InitUser(nil), e.warm.calls...)
		e.warm.mu.Unlock()
		if len(calls) != 1 || calls[0].TaskID != "w_old" || calls[0].SessionID != s.ID ||
			calls[0].UserID != "alice" || calls[0].UID < 1000 {
			t.Errorf("init_user: got %+v; want w_old told alice's session and uid", calls)
		}
		if got := e.claims.Load(); got != 1 {
			t.Errorf("refill kicked: got %d; want 1", got)
		}
		if changed, _ := e.notifier.calls(); len(changed) == 0 {
			t.Errorf("relay not told of the change")
		}
		for _, w := range e.warmTasks() {
			want := session.WarmAvailable
			switch w.ID {
			case "w_old":
				want = session.WarmClaimed
			case "w_booting":
				want = session.WarmStarting
			}
			if w.State != want {
				t.Errorf("warm task %s: got %s; want %s", w.ID, w.State, want)
			}
		}
	})
}

// With the pool empty, or switched off, a start goes cold (R8).
func TestWarmPoolEmptyOrOff(t *testing.T) {
	tests := []struct {
		name string
		pool bool
		warm session.WarmState // "" for no warm task
	}{
		{name: "pool empty", pool: true},
		{name: "only a booting warm task", pool: true, warm: session.WarmStarting},
		{name: "pool switched off", pool: false, warm: session.WarmAvailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := newEnv(t, session.Config{WarmPool: tt.pool})
				if tt.warm != "" {
					e.putWarm("w_1", tt.warm)
				}
				v, err := e.svc.Create(context.Background(), session.Request{}, "alice")
				if err != nil {
					t.Fatalf("Create: %v", err)
				}
				if v.Session.Warm || len(e.runner.runs()) != 1 {
					t.Errorf("got warm %v with %d cold starts; want one cold start", v.Session.Warm, len(e.runner.runs()))
				}
				for _, w := range e.warmTasks() {
					if w.State != tt.warm {
						t.Errorf("warm task %s: got %s; want it untouched (%s)", w.ID, w.State, tt.warm)
					}
				}
			})
		})
	}
}

// A claimed warm task that cannot take its user (its socket is gone) is
// stopped and forgotten, and the start falls back to a cold task (R8).
func TestWarmClaimFallsBackToCold(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, session.Config{WarmPool: true})
		e.putWarm("w_1", session.WarmAvailable)
		e.warm.err = errors.New("warm task w_1 is not connected")

		v, err := e.svc.Create(context.Background(), session.Request{}, "alice")
		if err != nil {
			t.Fatalf("Create: got %v; want a cold start", err)
		}
		if v.Session.Warm || v.Session.TaskID == "w_1" {
			t.Errorf("session: got task %q warm %v; want a cold task", v.Session.TaskID, v.Session.Warm)
		}
		if got := len(e.runner.runs()); got != 1 {
			t.Errorf("cold starts: got %d; want 1", got)
		}
		if got := e.runner.stopped(); len(got) != 1 || got[0] != "arn:task/w_1" {
			t.Errorf("stops: got %v; want the unusable warm task stopped", got)
		}
		if got := e.warmTasks(); len(got) != 0 {
			t.Errorf("warm records: got %+v; want the unusable one removed", got)
		}
		rec := e.get(v.Session.ID)
		if rec.Warm || rec.TaskHandle != v.Session.TaskHandle || rec.TaskHandle == "arn:task/w_1" {
			t.Errorf("stored session: got task %q warm %v; want the cold task", rec.TaskHandle, rec.Warm)
		}
	})
}

// StartError reads as "step: code: cause" and unwraps to the cause.
func TestStartErrorText(t *testing.T) {
	cause := errors.New("boom")
	tests := []struct {
		err  *session.StartError
		want string
	}{
		{&session.StartError{Step: "start_task", Code: "AccessDeniedException", Err: cause},
			"start_task: AccessDeniedException: boom"},
		{&session.StartError{Step: "stop_old_task", Err: cause}, "stop_old_task: boom"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error(): got %q; want %q", got, tt.want)
		}
		if !errors.Is(tt.err, cause) {
			t.Errorf("%q does not unwrap to its cause", tt.err)
		}
	}
}
