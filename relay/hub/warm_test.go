package hub_test

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/aishell/aishell/shared/session"
)

// connectWarm stores a warm task as the refill does, and connects its
// bridge; it returns once the task is available.
func (r *rig) connectWarm(id string) *pipe {
	r.t.Helper()
	ctx := context.Background()
	handle := "arn:task/" + id
	p := newPipe("warm " + id)
	r.track(p)
	r.runner.addWarm(handle, p)
	_, err := r.store.PutWarmTask(ctx, session.WarmTask{
		ID: id, Handle: handle, RelayID: relayID, State: session.WarmStarting, StartedAt: time.Now(),
	})
	if err != nil {
		r.t.Fatalf("put warm task %s: %v", id, err)
	}
	r.serve(func() { r.hub.ServeWarm(p, id) })
	synctest.Wait()
	if got := r.warmTask(id); got == nil || got.State != session.WarmAvailable {
		r.t.Fatalf("warm task %s after its bridge connected: got %+v; want available", id, got)
	}
	return p
}

func (r *rig) warmTask(id string) *session.WarmTask {
	list, err := r.store.ListWarmTasks(context.Background(), relayID)
	if err != nil {
		r.t.Fatalf("list warm tasks: %v", err)
	}
	for _, w := range list {
		if w.ID == id {
			return &w
		}
	}
	return nil
}

// A session start claims a connected warm task: the bridge is told its
// user, the client hears the session is ready and warm, and the warm
// record is gone (R8).
func TestWarmClaim(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, withWarmPool())
		defer r.close()
		w := r.connectWarm("w_1")
		if got := r.hub.Stats().WarmAvailable; got != 1 {
			t.Errorf("warm tasks available: got %d; want 1", got)
		}

		start := time.Now()
		v := r.create("alice")
		if took := time.Since(start); took != 0 {
			t.Errorf("warm start took %s of fake time; want none", took)
		}
		id := v.Session.ID
		if !v.Session.Warm || v.Session.TaskID != "w_1" {
			t.Fatalf("session: got task %q warm %v; want w_1 warm", v.Session.TaskID, v.Session.Warm)
		}
		if got := r.runner.runs(); len(got) != 0 {
			t.Errorf("cold starts: got %d; want none", len(got))
		}
		init := w.expectType(t, "init_user")
		if init.SessionID != id || init.UserID != "alice" || init.UID < 1000 {
			t.Errorf("init_user: got session %q user %q uid %d; want %q alice and a user uid",
				init.SessionID, init.UserID, init.UID, id)
		}
		if rec := r.warmTask("w_1"); rec == nil || rec.State != session.WarmClaimed || rec.SessionID != id {
			t.Errorf("warm record after the claim: got %+v; want claimed by %s", rec, id)
		}

		c := r.attach("alice", id)
		c.expectStatus(t, "starting")
		w.send(map[string]any{"type": "ready"})
		c.expectStatus(t, "ready")
		c.expectSessionReady(t, id, true)
		synctest.Wait()
		if rec := r.warmTask("w_1"); rec != nil {
			t.Errorf("warm record after ready: got %+v; want it removed", rec)
		}
		ready := phases(r.logs.Events(t, "task_lifecycle"), "task_ready")
		if len(ready) != 1 {
			t.Errorf("task_ready lines: got %d; want 1", len(ready))
		} else if bd, _ := ready[0]["breakdown"].(map[string]any); bd["warm_claim_ms"] == nil ||
			ready[0]["warm"] != true {
			t.Errorf("task_ready: got %v; want warm with warm_claim_ms in its breakdown", ready[0])
		}
		if got := r.warmGone.Load(); got < 1 {
			t.Errorf("refill told of the claim: got %d times; want at least 1", got)
		}

		c.send(map[string]string{"type": "input", "data": "pwd\n"})
		w.expectInput(t, "pwd\n")
		w.send(map[string]any{"type": "output", "data": "/workspace\n"})
		if f := c.expectType(t, "output"); f.Data != "/workspace\n" {
			t.Errorf("output: got %q; want %q", f.Data, "/workspace\n")
		}
	})
}

// A warm task whose socket closed before any claim is stopped and its
// record removed, so that the refill replaces it.
func TestWarmTaskLostBeforeClaim(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, withWarmPool())
		defer r.close()
		w := r.connectWarm("w_1")

		w.hangUp()
		synctest.Wait()
		if got := r.runner.stopsOf("arn:task/w_1"); len(got) != 1 {
			t.Errorf("stops of the warm task: got %q; want one", got)
		}
		if rec := r.warmTask("w_1"); rec != nil {
			t.Errorf("warm record: got %+v; want it removed", rec)
		}
		if got := r.warmGone.Load(); got != 1 {
			t.Errorf("refill told: got %d times; want 1", got)
		}
		if got := r.hub.Stats().WarmAvailable; got != 0 {
			t.Errorf("warm tasks available: got %d; want 0", got)
		}

		// The next start finds the pool empty and goes cold.
		v := r.create("alice")
		if v.Session.Warm {
			t.Errorf("session warm: got true; want a cold start")
		}
		r.nextBridge()
	})
}

// A warm task the pool does not know is closed after the hold, with 1008.
func TestUnknownWarmTaskIsClosed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, withWarmPool())
		defer r.close()
		p := newPipe("stray warm task")
		r.track(p)
		start := time.Now()
		r.serve(func() { r.hub.ServeWarm(p, "w_stray") })
		p.expectClose(t, 1008)
		if took := time.Since(start); took != r.hub.Config().HoldTimeout {
			t.Errorf("closed after %s; want %s", took, r.hub.Config().HoldTimeout)
		}
	})
}

// A restart claims a warm task when the pool has one: the bridge is told
// its user, and the restart ends in ready without any cold start.
func TestRestartClaimsWarmTask(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, withWarmPool())
		defer r.close()
		v := r.create("alice")
		id := v.Session.ID
		old := r.nextBridge()
		old.connect()
		c := r.attach("alice", id)
		c.expectStatus(t, "starting")
		old.ready()
		c.expectStatus(t, "ready")
		c.expectSessionReady(t, id, false)
		w := r.connectWarm("w_1")

		old.p.hangUp()
		c.expectStatus(t, "restarting")
		c.send(map[string]string{"type": "input", "data": "queued\n"})
		if init := w.expectType(t, "init_user"); init.SessionID != id {
			t.Fatalf("init_user session: got %q; want %q", init.SessionID, id)
		}
		w.send(map[string]any{"type": "ready"})
		w.expectInput(t, "queued\n")
		c.expectStatus(t, "ready")
		r.expectNoRun()
		rec := r.session(id)
		if rec.State != session.StateReady || rec.TaskID != "w_1" || !rec.Warm {
			t.Errorf("stored session: got %s task %q warm %v; want ready w_1 warm", rec.State, rec.TaskID, rec.Warm)
		}
	})
}
