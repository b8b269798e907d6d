package hub_test

import (
	"testing"
	"testing/synctest"
	"time"
)

// A session with nothing left in the relay (no client, no task, no output
// kept) is forgotten, so that sessions do not pile up in a long-running
// relay; its user coming back starts from the store as usual.
func TestIdleSessionIsForgottenOnceEmpty(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t)
		defer r.close()
		id, c, _ := r.readySession("alice")
		if got := r.hub.Stats().Sessions; got != 1 {
			t.Fatalf("sessions held: got %d; want 1", got)
		}

		c.hangUp()
		time.Sleep(r.hub.Config().IdleTimeout + time.Second)
		synctest.Wait()
		if got := r.hub.Stats().Sessions; got != 0 {
			t.Errorf("sessions held after the idle stop: got %d; want 0", got)
		}

		back := r.attach("alice", id)
		back.expectStatus(t, "restarting")
	})
}
