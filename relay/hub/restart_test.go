package hub_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/aishell/aishell/relay/hub"
	"github.com/aishell/aishell/shared/logging"
	"github.com/aishell/aishell/shared/session"
	"github.com/aishell/aishell/shared/workflow"
)

// A task lost while its client is attached is restarted: the client hears
// restarting, the workflow stops the old task and starts a new one, input
// sent meanwhile reaches the new task in order, then the session is ready
// (R5).
func TestRestartAfterTaskLost(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t)
		defer r.close()
		id, c, old := r.readySession("alice")

		// The task's socket drops; the task itself still runs.
		old.p.hangUp()
		c.expectStatus(t, "restarting")
		inputs := []string{"first\n", "second\n", "third\n"}
		for _, in := range inputs {
			c.send(map[string]string{"type": "input", "data": in})
		}

		b := r.nextBridge()
		if b.spec.SessionID != id || b.spec.TaskID == old.spec.TaskID {
			t.Fatalf("new task: got session %q task %q; want a new task of %q",
				b.spec.SessionID, b.spec.TaskID, id)
		}
		if got := r.runner.stopsOf(old.handle); len(got) != 1 || got[0] != "restart" {
			t.Errorf("stops of the old task: got %q; want [restart]", got)
		}
		if got := r.runner.state(old.handle); got != session.TaskStopped {
			t.Errorf("old task: got %s; want STOPPED before the new task started", got)
		}
		b.connect()
		synctest.Wait()
		b.p.expectQuiet(t)
		c.expectQuiet(t)

		b.ready()
		for _, in := range inputs {
			b.p.expectInput(t, in)
		}
		c.expectStatus(t, "ready")
		// session_ready is sent once per attach, and this attach had it.
		c.expectQuiet(t)

		rec := r.session(id)
		if rec.State != session.StateReady || rec.TaskID != b.spec.TaskID {
			t.Errorf("stored session: got %s with task %s; want ready with %s",
				rec.State, rec.TaskID, b.spec.TaskID)
		}
		if got := r.runner.stopsOf(b.handle); len(got) != 0 {
			t.Errorf("stops of the new task: got %q; want none", got)
		}
		restarts := phases(r.logs.Events(t, "task_lifecycle"), "task_restart")
		if len(restarts) != 1 || restarts[0]["success"] != true {
			t.Errorf("task_restart lines: got %v; want one with success true", restarts)
		}

		c.send(map[string]string{"type": "input", "data": "fourth\n"})
		b.p.expectInput(t, "fourth\n")
	})
}

func phases(lines []map[string]any, phase string) []map[string]any {
	var out []map[string]any
	for _, l := range lines {
		if l["phase"] == phase {
			out = append(out, l)
		}
	}
	return out
}

// A session whose task ended while its client was away restarts when the
// client comes back (R5).
func TestRestartWhenClientReturns(t *testing.T) {
	tests := []struct {
		name string
		end  func(r *rig, b *bridge)
	}{
		{
			name: "task died",
			end: func(r *rig, b *bridge) {
				r.runner.end(b.handle, "Essential container in task exited")
			},
		},
		{
			name: "task stopped for idleness",
			end:  func(r *rig, b *bridge) { time.Sleep(r.hub.Config().IdleTimeout) },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := newRig(t)
				defer r.close()
				id, c, old := r.readySession("alice")
				c.hangUp()
				synctest.Wait()
				tt.end(r, old)
				synctest.Wait()
				if got := r.session(id).State; got != session.StateStopped {
					t.Fatalf("stored state: got %s; want stopped", got)
				}
				r.expectNoRun()

				back := r.attach("alice", id)
				back.expectStatus(t, "restarting")
				b := r.nextBridge()
				b.connect()
				b.ready()
				back.expectStatus(t, "ready")
				back.expectSessionReady(t, id, false)
			})
		})
	}
}

// While a restart runs, the client leaving and coming back never stops
// the new task, arms no idle timer and starts no second restart; the
// restart ends in ready (R6).
func TestRestartGuard(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t)
		defer r.close()
		id, c, old := r.readySession("alice")

		old.p.hangUp()
		c.expectStatus(t, "restarting")

		// Away and back before the new task connects...
		c.hangUp()
		synctest.Wait()
		c = r.attach("alice", id)
		c.expectStatus(t, "restarting")
		b := r.nextBridge()
		b.connect()
		synctest.Wait()

		// ...and again once it has connected, for longer than the idle
		// time-out would be.
		c.hangUp()
		time.Sleep(time.Second)
		synctest.Wait()
		c = r.attach("alice", id)
		c.expectStatus(t, "restarting")

		b.ready()
		c.expectStatus(t, "ready")
		c.expectSessionReady(t, id, false)

		time.Sleep(2 * r.hub.Config().IdleTimeout)
		synctest.Wait()
		if got := r.runner.stopsOf(b.handle); len(got) != 0 {
			t.Errorf("stops of the new task: got %q; want none", got)
		}
		if got := len(r.runner.runs()); got != 2 {
			t.Errorf("tasks started: got %d; want 2 (the first and one restart)", got)
		}
		if got := r.logs.Events(t, "task_restart_begin"); len(got) != 1 {
			t.Errorf("restarts begun: got %d; want 1", len(got))
		}
		if got := r.session(id).State; got != session.StateReady {
			t.Errorf("stored state: got %s; want ready", got)
		}
		c.send(map[string]string{"type": "input", "data": "still here\n"})
		b.p.expectInput(t, "still here\n")
	})
}

// A restart whose new task never connects fails within the restart limit:
// the client hears TASK_RESTART_FAILED naming the step and the reason, the
// session is stopped, and the task the restart started is stopped (R5).
func TestRestartThatCannotFinish(t *testing.T) {
	tests := []struct {
		name      string
		restarter func(*session.Service) hub.Restarter
		// setup runs once the session is ready.
		setup func(r *rig)
		// step is named in the message; within bounds the fake time it
		// takes.
		step     string
		reason   string
		min, max time.Duration
		// stopsNew: the new task the restart started is stopped.
		stopsNew bool
	}{
		{
			name:     "new task never connects",
			step:     "wait_connection",
			reason:   "did not connect",
			min:      workflow.RestartLimit,
			max:      workflow.RestartLimit + 2*time.Second,
			stopsNew: true,
		},
		{
			name: "RunTask denied",
			setup: func(r *rig) {
				r.runner.failRuns(&session.CodedError{Code: "AccessDeniedException",
					Err: errors.New("not authorized to perform ecs:RunTask")})
			},
			step:   "start_task",
			reason: "AccessDeniedException",
		},
		{
			name:      "workflow never answers",
			restarter: func(*session.Service) hub.Restarter { return silentRestarter{} },
			step:      "relay_backstop",
			reason:    "did not finish",
			min:       workflow.RestartLimit,
			max:       workflow.RestartLimit + 2*time.Second,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := newRig(t, withRestarter(tt.restarter))
				defer r.close()
				id, c, old := r.readySession("alice")
				if tt.setup != nil {
					tt.setup(r)
				}

				start := time.Now()
				old.p.hangUp()
				c.expectStatus(t, "restarting")

				f := c.expectError(t, "TASK_RESTART_FAILED")
				took := time.Since(start)
				if took < tt.min || took > tt.max {
					t.Errorf("TASK_RESTART_FAILED after %s; want within [%s, %s]", took, tt.min, tt.max)
				}
				for _, want := range []string{tt.step, tt.reason} {
					if !strings.Contains(f.Error.Message, want) {
						t.Errorf("message %q does not name %q", f.Error.Message, want)
					}
				}
				c.expectStatus(t, "stopped")
				synctest.Wait()
				if got := r.session(id).State; got != session.StateStopped {
					t.Errorf("stored state: got %s; want stopped", got)
				}
				lines := r.logs.Events(t, "task_restart_failed")
				if len(lines) != 1 || lines[0]["step"] != tt.step || lines[0]["level"] != "error" {
					t.Errorf("task_restart_failed lines: got %v; want one error with step %s", lines, tt.step)
				}
				if tt.stopsNew {
					b := r.nextBridge()
					stops := r.runner.stopsOf(b.handle)
					if len(stops) != 1 || !strings.Contains(stops[0], "restart failed") {
						t.Errorf("stops of the new task: got %q; want one naming the failed restart", stops)
					}
				}
			})
		})
	}
}

// silentRestarter is a restart workflow that never reports an outcome, to
// prove the relay's own backstop.
type silentRestarter struct{}

func (silentRestarter) StartRestart(
	context.Context, workflow.RestartInput,
) (<-chan workflow.Outcome, error) {
	return make(chan workflow.Outcome), nil
}

func (silentRestarter) TaskConnected(string, string) {}

// A new task whose agent cannot start ends before it is ready; the restart
// fails at once with the bridge's own reason (R5).
func TestRestartFailsAtOnceWhenNewTaskEnds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t)
		defer r.close()
		id, c, old := r.readySession("alice")

		old.p.hangUp()
		c.expectStatus(t, "restarting")
		b := r.nextBridge()
		b.connect()
		synctest.Wait()

		start := time.Now()
		const why = `agent failed to start: exec: "agent": executable file not found in $PATH`
		b.p.send(map[string]any{"type": "shutdown", "reason": why, "exitCode": 127})
		r.runner.end(b.handle, "Essential container in task exited")

		f := c.expectError(t, "TASK_RESTART_FAILED")
		if took := time.Since(start); took != 0 {
			t.Errorf("TASK_RESTART_FAILED after %s; want at once", took)
		}
		if !strings.Contains(f.Error.Message, why) {
			t.Errorf("message %q does not carry the bridge's reason %q", f.Error.Message, why)
		}
		c.expectStatus(t, "stopped")
		synctest.Wait()
		if got := r.session(id).State; got != session.StateStopped {
			t.Errorf("stored state: got %s; want stopped", got)
		}
		if got := r.runner.stopsOf(b.handle); len(got) != 1 {
			t.Errorf("stops of the new task: got %q; want one", got)
		}
		r.expectNoRun()
	})
}

// A task that keeps dying is restarted automatically at most CrashLimit
// times within CrashWindow; past that the client is told, and its next
// input tries again.
func TestCrashLoop(t *testing.T) {
	tests := []struct {
		name string
		// gap is the fake time between a task's start and its crash.
		gap time.Duration
		// gaveUp: the fourth loss stops the automatic restarts.
		gaveUp bool
	}{
		{name: "four losses within a minute", gap: 0, gaveUp: true},
		{name: "losses spread out", gap: 61 * time.Second, gaveUp: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := newRig(t)
				defer r.close()
				cfg := r.hub.Config()
				if cfg.CrashLimit != 3 || cfg.CrashWindow != time.Minute {
					t.Fatalf("crash bound: got %d in %s; want 3 in 1m", cfg.CrashLimit, cfg.CrashWindow)
				}
				id, c, b := r.readySession("alice")

				for loss := 1; loss <= cfg.CrashLimit; loss++ {
					time.Sleep(tt.gap)
					agentExits(r, b, fmt.Sprintf("agent exited: exit status %d", loss))
					c.expectStatus(t, "restarting")
					b = r.nextBridge()
					b.connect()
					b.ready()
					c.expectStatus(t, "ready")
				}

				time.Sleep(tt.gap)
				agentExits(r, b, "agent exited: exit status 4")
				if !tt.gaveUp {
					c.expectStatus(t, "restarting")
					b = r.nextBridge()
					b.connect()
					b.ready()
					c.expectStatus(t, "ready")
					return
				}
				f := c.expectError(t, "TASK_RESTART_FAILED")
				for _, want := range []string{"agent exited: exit status 4", "4 times"} {
					if !strings.Contains(f.Error.Message, want) {
						t.Errorf("message %q does not name %q", f.Error.Message, want)
					}
				}
				c.expectStatus(t, "stopped")
				time.Sleep(time.Minute)
				r.expectNoRun()
				if got := r.session(id).State; got != session.StateStopped {
					t.Errorf("stored state: got %s; want stopped", got)
				}

				// The user's input tries again, and is delivered.
				c.send(map[string]string{"type": "input", "data": "again\n"})
				c.expectStatus(t, "restarting")
				b = r.nextBridge()
				b.connect()
				b.ready()
				b.p.expectInput(t, "again\n")
				c.expectStatus(t, "ready")
			})
		})
	}
}

// agentExits plays a bridge whose agent ended: it says why, and the task
// stops.
func agentExits(r *rig, b *bridge, why string) {
	b.p.send(map[string]any{"type": "shutdown", "reason": why, "exitCode": 1})
	r.runner.end(b.handle, "Essential container in task exited")
}

// A task killed from outside (out of memory) has no last words; the
// client still hears the concrete cause, the task's stop reason, when the
// relay gives up on it (protocol.md: the message names the concrete cause,
// for example the ECS stop reason).
func TestCrashLoopNamesStopReasonOfKilledTask(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t)
		defer r.close()
		_, c, b := r.readySession("alice")
		const oom = "OutOfMemoryError: Container killed due to memory usage"

		limit := r.hub.Config().CrashLimit
		for range limit {
			r.runner.end(b.handle, oom)
			c.expectStatus(t, "restarting")
			b = r.nextBridge()
			b.connect()
			b.ready()
			c.expectStatus(t, "ready")
		}
		r.runner.end(b.handle, oom)
		f := c.expectError(t, "TASK_RESTART_FAILED")
		if !strings.Contains(f.Error.Message, oom) {
			t.Errorf("message %q does not name the stop reason %q", f.Error.Message, oom)
		}
	})
}

// The relay reports a restart's success only for a task whose socket is
// alive and ready: a success from the workflow for a task that is not (or
// no longer) connected fails the restart instead (R6).
func TestRestartChecksTaskIsAlive(t *testing.T) {
	tests := []struct {
		name      string
		restarter func(*session.Service) hub.Restarter
		// newTask: a new task is started and its socket drops after ready.
		newTask bool
		step    string
	}{
		{
			name: "workflow vouches for a task that never connected",
			restarter: func(*session.Service) hub.Restarter {
				return vouchingRestarter{taskID: "t_ghost"}
			},
			step: "check_alive",
		},
		{
			name: "new task drops before the outcome arrives",
			restarter: func(svc *session.Service) hub.Restarter {
				return &heldRestarter{inner: workflow.NewLocal(svc, 0, logging.Discard()),
					release: make(chan struct{})}
			},
			newTask: true,
			step:    "wait_connection",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var held *heldRestarter
				r := newRig(t, withRestarter(func(svc *session.Service) hub.Restarter {
					rs := tt.restarter(svc)
					held, _ = rs.(*heldRestarter)
					return rs
				}))
				defer r.close()
				defer func() {
					if held != nil {
						close(held.release)
					}
				}()
				id, c, old := r.readySession("alice")

				old.p.hangUp()
				c.expectStatus(t, "restarting")
				var b *bridge
				if tt.newTask {
					b = r.nextBridge()
					b.connect()
					b.ready()
					synctest.Wait()
					b.p.hangUp()
				}

				f := c.expectError(t, "TASK_RESTART_FAILED")
				if !strings.Contains(f.Error.Message, tt.step) {
					t.Errorf("message %q does not name step %s", f.Error.Message, tt.step)
				}
				c.expectStatus(t, "stopped")
				if held != nil {
					close(held.release)
					held = nil
				}
				c.expectQuiet(t)
				if got := r.session(id).State; got != session.StateStopped {
					t.Errorf("stored state: got %s; want stopped", got)
				}
				if b != nil {
					if got := r.runner.stopsOf(b.handle); len(got) != 1 {
						t.Errorf("stops of the new task: got %q; want one", got)
					}
				}
			})
		})
	}
}

// vouchingRestarter reports success at once for a task of its choosing.
type vouchingRestarter struct{ taskID string }

func (v vouchingRestarter) StartRestart(
	context.Context, workflow.RestartInput,
) (<-chan workflow.Outcome, error) {
	out := make(chan workflow.Outcome, 1)
	out <- workflow.Outcome{Success: true, TaskID: v.taskID}
	return out, nil
}

func (vouchingRestarter) TaskConnected(string, string) {}

// heldRestarter runs the real workflow but holds its outcome until
// release is closed.
type heldRestarter struct {
	inner   *workflow.Local
	release chan struct{}
}

func (h *heldRestarter) StartRestart(
	ctx context.Context, in workflow.RestartInput,
) (<-chan workflow.Outcome, error) {
	out, err := h.inner.StartRestart(ctx, in)
	if err != nil {
		return nil, err
	}
	held := make(chan workflow.Outcome, 1)
	go func() {
		o := <-out
		<-h.release
		held <- o
	}()
	return held, nil
}

func (h *heldRestarter) TaskConnected(sessionID, taskID string) {
	h.inner.TaskConnected(sessionID, taskID)
}
