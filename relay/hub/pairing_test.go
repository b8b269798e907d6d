package hub_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/aishell/aishell/relay/hub"
	"github.com/aishell/aishell/shared/logging"
	"github.com/aishell/aishell/shared/session"
)

// A cold start pairs the client with the task that the session API
// started: the client hears the session is starting, then ready; its input
// reaches the bridge and the agent's output comes back in order (R2).
func TestColdStartPairsClientAndTask(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t)
		defer r.close()

		v := r.create("alice")
		id := v.Session.ID
		b := r.nextBridge()
		if b.spec.SessionID != id || b.spec.UserID != "alice" || b.spec.Warm {
			t.Fatalf("task spec: got session %q user %q warm %v; want %q alice cold",
				b.spec.SessionID, b.spec.UserID, b.spec.Warm, id)
		}
		b.connect()
		c := r.attach("alice", id)
		c.expectStatus(t, "starting")
		c.expectQuiet(t)

		b.ready()
		c.expectStatus(t, "ready")
		ready := c.expectSessionReady(t, id, false)
		if ready.Resumed {
			t.Errorf("session_ready resumed: got true; want false")
		}
		if got := r.session(id).State; got != session.StateReady {
			t.Errorf("stored state: got %s; want ready", got)
		}

		c.send(map[string]string{"type": "input", "data": "echo hi\n", "id": "m1"})
		if f := b.p.expectInput(t, "echo hi\n"); f.ID != "m1" {
			t.Errorf("input id at the bridge: got %q; want m1", f.ID)
		}

		outputs := []string{"echo hi\r\n", "hi\r\n", "$ "}
		for _, o := range outputs {
			b.output(o)
		}
		for _, o := range outputs {
			if f := c.expectType(t, "output"); f.Data != o {
				t.Fatalf("output: got %q; want %q", f.Data, o)
			}
		}

		// The start is told in lifecycle events (R13), written off the
		// task's reading path.
		synctest.Wait()
		lines := r.logs.Events(t, "task_lifecycle")
		for _, p := range []string{"task_start", "task_pending", "task_connect", "task_ready",
			"session_create", "message_roundtrip"} {
			if got := phases(lines, p); len(got) != 1 {
				t.Errorf("task_lifecycle %s lines: got %d; want 1", p, len(got))
			}
		}
		if ready := phases(lines, "task_ready"); len(ready) == 1 {
			bd, _ := ready[0]["breakdown"].(map[string]any)
			for _, k := range []string{"access_point_ms", "register_taskdef_ms", "run_task_ms",
				"pending_to_running_ms", "wait_connection_ms"} {
				if _, ok := bd[k]; !ok {
					t.Errorf("task_ready breakdown %v lacks %s", bd, k)
				}
			}
			if ready[0]["restart"] != false || ready[0]["sessionId"] != id {
				t.Errorf("task_ready: got %v; want restart false for %s", ready[0], id)
			}
		}
		if got := r.logs.Events(t, "user_message"); len(got) != 1 {
			t.Errorf("user_message lines: got %d; want 1", len(got))
		}
	})
}

// session_ready's startup_ms counts from the task's start for a client
// that waited for it, and from the attach for a session already ready.
func TestSessionReadyStartupMs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t)
		defer r.close()
		v := r.create("alice")
		id := v.Session.ID
		b := r.nextBridge()
		time.Sleep(time.Second)
		c := r.attach("alice", id)
		c.expectStatus(t, "starting")
		b.connect()
		time.Sleep(2 * time.Second)
		b.ready()
		c.expectStatus(t, "ready")
		if f := c.expectSessionReady(t, id, false); f.StartupMs != 3000 {
			t.Errorf("startup_ms of the first attach: got %d; want 3000 (from the start)", f.StartupMs)
		}

		time.Sleep(5 * time.Minute)
		again := r.attach("alice", id)
		again.expectStatus(t, "ready")
		if f := again.expectSessionReady(t, id, false); f.StartupMs != 0 {
			t.Errorf("startup_ms of a later attach: got %d; want 0 (from the attach)", f.StartupMs)
		}
	})
}

// A terminal size sent before the task is ready reaches the bridge before
// the queued input, so that the agent starts at the right size.
func TestResizeBeforeReady(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t)
		defer r.close()
		v := r.create("alice")
		b := r.nextBridge()
		b.connect()
		c := r.attach("alice", v.Session.ID)
		c.expectStatus(t, "starting")
		c.sendRaw(`{"type":"resize","cols":100,"rows":30}`)
		c.send(map[string]string{"type": "input", "data": "ls\n"})
		c.sendRaw(`{"type":"resize","cols":132,"rows":43}`)
		synctest.Wait()
		b.p.expectQuiet(t)

		b.ready()
		if f := b.p.expectType(t, "resize"); f.Cols != 132 || f.Rows != 43 {
			t.Errorf("resize: got %dx%d; want the latest, 132x43", f.Cols, f.Rows)
		}
		b.p.expectInput(t, "ls\n")
		b.p.expectQuiet(t)
	})
}

// Both sockets carry a keep-alive ping every PingInterval (25 s).
func TestKeepAlivePings(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t)
		defer r.close()
		_, c, b := r.readySession("alice")
		if got := r.hub.Config().PingInterval; got != 25*time.Second {
			t.Fatalf("ping interval: got %s; want 25s", got)
		}
		c0, b0 := c.pings.Load(), b.p.pings.Load()
		time.Sleep(100 * time.Second)
		synctest.Wait()
		if got := c.pings.Load() - c0; got != 4 {
			t.Errorf("pings to the client in 100 s: got %d; want 4", got)
		}
		if got := b.p.pings.Load() - b0; got != 4 {
			t.Errorf("pings to the bridge in 100 s: got %d; want 4", got)
		}
	})
}

// A task may reach the relay before its session names it. The relay holds
// it, and the change of the session record lets it in without any polling
// of the store (R3).
func TestEarlyTaskIsAcceptedWhenItsSessionNamesIt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t)
		defer r.close()
		ctx := context.Background()

		rec, err := r.store.CreateSession(ctx, session.Session{
			ID: "s_early", UserID: "alice", State: session.StateStarting, RelayID: relayID,
			CreatedAt: time.Now(),
		})
		if err != nil {
			t.Fatal(err)
		}
		counting := &countingStore{Store: r.store}
		r.svc.Store = counting

		task := newPipe("early task")
		r.track(task)
		r.serve(func() { r.hub.ServeTask(task, "s_early", "t_early") })
		synctest.Wait()
		reads := counting.gets.Load()
		if got := r.hub.Stats().Tasks; got != 0 {
			t.Fatalf("tasks paired before the session named the task: got %d; want 0", got)
		}

		// Nothing changes for a while: the held task costs no store reads.
		time.Sleep(4 * time.Second)
		synctest.Wait()
		if got := counting.gets.Load(); got != reads {
			t.Errorf("store reads while nothing changed: got %d; want %d (no polling)", got, reads)
		}

		start := time.Now()
		rec.TaskID = "t_early"
		if _, err := r.store.UpdateSession(ctx, rec); err != nil {
			t.Fatal(err)
		}
		r.hub.SessionChanged("s_early")
		synctest.Wait()
		if got := r.hub.Stats().Tasks; got != 1 {
			t.Fatalf("tasks paired after the session named the task: got %d; want 1", got)
		}
		if waited := time.Since(start); waited != 0 {
			t.Errorf("accepted after %s; want at once", waited)
		}
		if task.closedByHub() {
			t.Errorf("early task socket closed; want it kept")
		}
		if got := r.logs.Events(t, "task_held"); len(got) != 1 {
			t.Errorf("task_held log lines: got %d; want 1", len(got))
		}
	})
}

// countingStore counts session reads, to tell an event-driven wait from a
// polling one.
type countingStore struct {
	session.Store
	gets atomic.Int64
}

func (s *countingStore) GetSession(ctx context.Context, id string) (session.Session, error) {
	s.gets.Add(1)
	return s.Store.GetSession(ctx, id)
}

// A task of a session the relay never hears of is held for exactly the
// hold time-out, then closed with 1008, and the relay logs why (R3, R13a).
func TestTaskOfUnknownSessionIsClosedAfterHold(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t)
		defer r.close()
		hold := r.hub.Config().HoldTimeout
		if hold != 5*time.Second {
			t.Fatalf("default hold time-out: got %s; want 5s", hold)
		}

		task := newPipe("stray task")
		r.track(task)
		start := time.Now()
		r.serve(func() { r.hub.ServeTask(task, "s_nobody", "t_stray") })

		time.Sleep(hold - time.Millisecond)
		task.expectQuiet(t)
		if task.closedByHub() {
			t.Fatalf("task closed after %s; want it held for %s", time.Since(start), hold)
		}

		task.expectClose(t, hub.ClosePolicy)
		if waited := time.Since(start); waited != hold {
			t.Errorf("closed after %s; want %s", waited, hold)
		}
		synctest.Wait()
		lines := r.logs.Events(t, "task_rejected")
		if len(lines) != 1 {
			t.Fatalf("task_rejected log lines: got %d; want 1", len(lines))
		}
		l := lines[0]
		want := map[string]any{"level": "warn", "reason": "unknown_session", "sessionId": "s_nobody",
			"taskArn": "t_stray", "waited_ms": float64(5000), "service": "relay"}
		for k, v := range want {
			if l[k] != v {
				t.Errorf("task_rejected %s: got %v; want %v", k, l[k], v)
			}
		}
	})
}

// Input sent while the task is not ready waits, in order, and is delivered
// once it is; past the bound the client is told QUEUE_FULL for the one
// message refused, and nothing else is lost (R2).
func TestInputQueuedBeforeReady(t *testing.T) {
	tests := []struct {
		name string
		// inputs are sent before the task is ready; refused are the
		// indexes expected to be refused.
		inputs  []string
		refused map[int]bool
	}{
		{
			name:    "257th message",
			inputs:  numbered(258),
			refused: map[int]bool{256: true, 257: true},
		},
		{
			name: "over 1 MiB",
			inputs: append(repeatN(strings.Repeat("x", 60000), 18),
				"small one after the refusal\n"),
			refused: map[int]bool{17: true},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := newRig(t)
				defer r.close()
				v := r.create("alice")
				id := v.Session.ID
				b := r.nextBridge()
				b.connect()
				c := r.attach("alice", id)
				c.expectStatus(t, "starting")

				for i, in := range tt.inputs {
					c.send(map[string]string{"type": "input", "data": in, "id": fmt.Sprint(i)})
				}
				for i := range tt.inputs {
					if !tt.refused[i] {
						continue
					}
					f := c.expectError(t, "QUEUE_FULL")
					if f.ID != fmt.Sprint(i) {
						t.Errorf("QUEUE_FULL id: got %q; want %q", f.ID, fmt.Sprint(i))
					}
					if f.Error.Message == "" {
						t.Errorf("QUEUE_FULL without a message")
					}
				}
				c.expectQuiet(t)
				b.p.expectQuiet(t)

				b.ready()
				for i, in := range tt.inputs {
					if tt.refused[i] {
						continue
					}
					f := b.p.expectFrame(t)
					if f.Type != "input" || f.Data != in || f.ID != fmt.Sprint(i) {
						t.Fatalf("delivered frame: got %v id %q; want input %d", f, f.ID, i)
					}
				}
				b.p.expectQuiet(t)
				c.expectStatus(t, "ready")
				c.expectSessionReady(t, id, false)
			})
		})
	}
}

func numbered(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("line %d\n", i)
	}
	return out
}

func repeatN(s string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = s
	}
	return out
}

// Malformed, unknown and oversized client frames are answered with an
// error code; only an oversized frame ends the socket (1009).
func TestClientFrames(t *testing.T) {
	tests := []struct {
		name string
		// raw is the text frame sent; readErr, if set, is what the
		// transport reports instead.
		raw     string
		readErr error
		// want is the code of the error answer, or "" for none.
		want string
		// pong: the answer is a pong.
		pong bool
		// closeCode is the close that follows, or 0 if the socket stays open.
		closeCode int
		// toBridge is the frame type the bridge gets, if any.
		toBridge string
	}{
		{name: "malformed JSON", raw: `{"type": "input", "data": `, want: "BAD_MESSAGE"},
		{name: "not an object", raw: `["input"]`, want: "BAD_MESSAGE"},
		{name: "no type", raw: `{"data": "x"}`, want: "BAD_MESSAGE"},
		{name: "unknown type", raw: `{"type": "launch"}`, want: "BAD_MESSAGE"},
		{name: "ping", raw: `{"type": "ping"}`, pong: true},
		{name: "resize to zero columns", raw: `{"type":"resize","cols":0,"rows":24}`, want: "BAD_MESSAGE"},
		{name: "resize to negative rows", raw: `{"type":"resize","cols":80,"rows":-1}`, want: "BAD_MESSAGE"},
		{name: "resize far too wide", raw: `{"type":"resize","cols":5000,"rows":24}`, want: "BAD_MESSAGE"},
		{name: "resize with text size", raw: `{"type":"resize","cols":"80","rows":24}`, want: "BAD_MESSAGE"},
		{name: "valid resize", raw: `{"type":"resize","cols":120,"rows":40}`, toBridge: "resize"},
		{name: "binary frame", readErr: hub.ErrBinaryFrame, want: "BAD_MESSAGE"},
		{name: "oversized frame", readErr: hub.ErrFrameTooLarge, want: "MESSAGE_TOO_LARGE",
			closeCode: hub.CloseTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := newRig(t)
				defer r.close()
				_, c, b := r.readySession("alice")

				if tt.readErr != nil {
					c.inject(tt.readErr)
				} else {
					c.sendRaw(tt.raw)
				}
				switch {
				case tt.pong:
					c.expectType(t, "pong")
				case tt.want != "":
					if f := c.expectError(t, tt.want); f.Error.Message == "" {
						t.Errorf("error %s without a message", tt.want)
					}
				}
				if tt.toBridge != "" {
					b.p.expectType(t, tt.toBridge)
				}
				if tt.closeCode != 0 {
					c.expectClose(t, tt.closeCode)
					return
				}

				// The socket stays open and in use.
				c.sendRaw(`{"type": "ping"}`)
				c.expectType(t, "pong")
				c.send(map[string]string{"type": "input", "data": "after\n"})
				b.p.expectInput(t, "after\n")
				if c.closedByHub() {
					t.Errorf("client socket closed; want it open")
				}
			})
		})
	}
}

// Ending the session (DELETE) tells the client SESSION_ENDED and closes it
// normally, and tells the bridge to shut down.
func TestSessionEndedClosesBothSockets(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// ECS takes a while to stop a task: its bridge is still connected
		// when the session ends.
		r := newRig(t)
		defer r.close()
		r.runner.stopLag = 2 * time.Second
		id, c, b := r.readySession("alice")

		if err := r.svc.Delete(context.Background(), session.Request{}, "alice", id); err != nil {
			t.Fatalf("Delete: %v", err)
		}
		c.expectError(t, "SESSION_ENDED")
		c.expectClose(t, hub.CloseNormal)
		if f := b.p.expectType(t, "shutdown"); f.Reason == "" {
			t.Errorf("shutdown without a reason")
		}
		b.p.expectClose(t, hub.CloseNormal)
		if got := r.runner.stopsOf(b.handle); len(got) != 1 {
			t.Errorf("stops of the task: got %q; want one", got)
		}
		time.Sleep(time.Minute)
		r.expectNoRun()
	})
}

// When stopping the task makes its bridge exit at once, the relay sees the
// task's socket close before the session's end reaches it. Ending the
// session must still succeed, and must not restart the task.
func TestSessionEndedWhileTaskExitsAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t)
		defer r.close()
		id, c, b := r.readySession("alice")

		// Let the relay take in the bridge's exit before Delete goes on.
		r.runner.setOnStop(func() { synctest.Wait() })
		if err := r.svc.Delete(context.Background(), session.Request{}, "alice", id); err != nil {
			t.Errorf("Delete: got %v; want nil", err)
		}
		r.runner.setOnStop(nil)
		if _, err := r.store.GetSession(context.Background(), id); err == nil {
			t.Errorf("session still stored after Delete")
		}
		r.expectNoRun()
		for {
			f := c.expectFrame(t)
			if f.Type == "error" {
				if f.Error.Code != "SESSION_ENDED" {
					t.Errorf("client got %v; want SESSION_ENDED", f)
				}
				break
			}
			if f.Type != "status" {
				t.Fatalf("client got %v; want status or SESSION_ENDED", f)
			}
		}
		c.expectClose(t, hub.CloseNormal)
		_ = b
	})
}

// A relay shutdown delivers what was already queued for the client, then
// RELAY_SHUTTING_DOWN, then close 1001 so that the client reconnects.
func TestShutdownFlushesThenTellsClientToReconnect(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t)
		defer r.close()
		_, c, b := r.readySession("alice")

		// A slow client: output queues up in the relay.
		c.pause()
		for i := range 3 {
			b.output(fmt.Sprintf("chunk %d\n", i))
		}
		synctest.Wait()

		done := make(chan error, 1)
		go func() { done <- r.hub.Shutdown(context.Background()) }()
		synctest.Wait()
		c.resume()

		for i := range 3 {
			if f := c.expectType(t, "output"); f.Data != fmt.Sprintf("chunk %d\n", i) {
				t.Fatalf("output %d: got %q", i, f.Data)
			}
		}
		if f := c.expectError(t, "RELAY_SHUTTING_DOWN"); f.Error.Message == "" {
			t.Errorf("RELAY_SHUTTING_DOWN without a message")
		}
		c.expectClose(t, hub.CloseGoingAway)
		b.p.expectClose(t, hub.CloseGoingAway)
		if err := <-done; err != nil {
			t.Errorf("Shutdown: %v", err)
		}

		// A client that comes during the shutdown is told the same.
		late := r.attach("alice", "s_any")
		late.expectError(t, "RELAY_SHUTTING_DOWN")
		late.expectClose(t, hub.CloseGoingAway)
	})
}

// A second attach of the same session replaces the first socket, which is
// closed normally; the session carries on with the new one.
func TestSecondClientReplacesFirst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t)
		defer r.close()
		id, first, b := r.readySession("alice")

		second := r.attach("alice", id)
		second.expectStatus(t, "ready")
		second.expectSessionReady(t, id, false)
		first.expectClose(t, hub.CloseNormal)
		synctest.Wait()
		if !first.closedByHub() {
			t.Errorf("first socket still open")
		}

		second.send(map[string]string{"type": "input", "data": "ls\n"})
		b.p.expectInput(t, "ls\n")
		b.output("file\n")
		if f := second.expectType(t, "output"); f.Data != "file\n" {
			t.Errorf("output to the second client: got %q; want %q", f.Data, "file\n")
		}
		if got := r.runner.stopCalls(); len(got) != 0 {
			t.Errorf("stops: got %v; want none", got)
		}
		if got := r.hub.Stats(); got.Clients != 1 || got.Tasks != 1 {
			t.Errorf("stats: got %+v; want 1 client, 1 task", got)
		}
	})
}

// A client whose ticket names a session that does not exist, or that is
// someone else's, is told SESSION_NOT_FOUND and closed with 1008.
func TestClientForUnknownSession(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t)
		defer r.close()
		v := r.create("alice")
		r.nextBridge()

		cases := []struct{ user, id string }{{"alice", "s_missing"}, {"mallory", v.Session.ID}}
		for _, tc := range cases {
			c := r.attach(tc.user, tc.id)
			c.expectError(t, "SESSION_NOT_FOUND")
			c.expectClose(t, hub.ClosePolicy)
		}
	})
}

// A relay that shuts down leaves the tasks alive: their bridges reconnect
// to the next relay and keep the agent, so that a client that resumes
// after close 1001, as protocol.md tells it to, gets the same running
// agent (R1) and no new task.
func TestShutdownLeavesLiveTasksToReconnect(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t)
		defer r.close()
		ctx := context.Background()
		id, c, b := r.readySession("alice")

		if err := r.hub.Shutdown(ctx); err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
		c.expectError(t, "RELAY_SHUTTING_DOWN")
		c.expectClose(t, hub.CloseGoingAway)
		b.p.expectClose(t, hub.CloseGoingAway)
		synctest.Wait()
		if got := r.runner.stopCalls(); len(got) != 0 {
			t.Errorf("stops: got %v; want none, the tasks outlive the relay", got)
		}
		if got := r.session(id).State; got == session.StateStopped {
			t.Errorf("stored state: got %s; want the live task's session not stopped", got)
		}

		// The client resumes, as told.
		if _, err := r.svc.Resume(ctx, session.Request{}, "alice", id); err != nil {
			t.Fatalf("Resume: %v", err)
		}
		r.expectNoRun()
		if got := r.runner.stopsOf(b.handle); len(got) != 0 {
			t.Fatalf("stops of the live task after the resume: got %q; want none", got)
		}

		// The next relay: the client attaches, the bridge reconnects.
		next := hub.New(hub.Config{RelayID: relayID}, r.svc, silentRestarter{}, logging.Discard(), nil)
		defer next.Shutdown(ctx)
		c2 := newPipe("client after the relay restart")
		r.track(c2)
		r.serve(func() { next.ServeClient(c2, "alice", id, true) })
		synctest.Wait()
		b2 := newPipe("bridge reconnected")
		r.track(b2)
		r.serve(func() { next.ServeTask(b2, id, b.spec.TaskID) })
		b2.send(map[string]any{"type": "ready"})
		for f := c2.expectFrame(t); f.Type != "session_ready"; f = c2.expectFrame(t) {
			if f.Type != "status" {
				t.Fatalf("client after the relay restart: got %v; want status, then session_ready", f)
			}
			if f.State != "starting" && f.State != "ready" {
				t.Errorf("client after the relay restart: got %v; want starting or ready", f)
			}
		}
		r.expectNoRun()
	})
}

// A client that attaches while the session's live task has not yet
// reconnected to this relay (the relay restarted) is told the session is
// starting, like any client whose task is on its way, and then ready.
func TestAttachWhileLiveTaskReconnects(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t)
		defer r.close()
		ctx := context.Background()
		v := r.create("alice")
		id := v.Session.ID
		b := r.nextBridge()
		// The task was ready on the relay that went away.
		if _, _, err := r.svc.MarkReady(ctx, id, b.spec.TaskID); err != nil {
			t.Fatal(err)
		}

		c := r.attach("alice", id)
		c.expectStatus(t, "starting")
		b.connect()
		b.ready()
		c.expectStatus(t, "ready")
		c.expectSessionReady(t, id, false)
		r.expectNoRun()
		if got := r.runner.stopCalls(); len(got) != 0 {
			t.Errorf("stops: got %v; want none", got)
		}
	})
}

// A cold start whose task never connects fails after the start time-out:
// the client hears TASK_START_FAILED naming the task and its state, and
// the task is stopped.
func TestColdStartThatNeverConnects(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t)
		defer r.close()
		start := time.Now()
		v := r.create("alice")
		id := v.Session.ID
		b := r.nextBridge()
		c := r.attach("alice", id)
		c.expectStatus(t, "starting")

		f := c.expectError(t, "TASK_START_FAILED")
		if took, limit := time.Since(start), r.hub.Config().StartTimeout; took != limit {
			t.Errorf("TASK_START_FAILED after %s; want %s", took, limit)
		}
		for _, want := range []string{b.spec.TaskID, "RUNNING"} {
			if !strings.Contains(f.Error.Message, want) {
				t.Errorf("message %q does not name %q", f.Error.Message, want)
			}
		}
		c.expectStatus(t, "stopped")
		synctest.Wait()
		if got := r.runner.stopsOf(b.handle); len(got) != 1 {
			t.Errorf("stops of the task: got %q; want one", got)
		}
		if got := r.session(id).State; got != session.StateStopped {
			t.Errorf("stored state: got %s; want stopped", got)
		}
		if got := r.logs.Events(t, "task_connect_timeout"); len(got) != 1 {
			t.Errorf("task_connect_timeout lines: got %d; want 1", len(got))
		}
	})
}
