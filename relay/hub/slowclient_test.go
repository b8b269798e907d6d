package hub_test

import (
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// A client that reads nothing does not stall the task: after a while its
// socket is dropped, and every byte it did not take is kept and delivered
// when the user comes back, in order (R2: nothing lost silently).
func TestSlowClientLosesNoOutput(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t)
		defer r.close()
		id, c, b := r.readySession("alice")

		c.pause()
		var want strings.Builder
		for i := range 48 {
			chunk := strings.Repeat(string(rune('a'+i%26)), 32<<10)
			want.WriteString(chunk)
			b.output(chunk)
		}
		time.Sleep(15 * time.Second)
		synctest.Wait()
		if !c.closedByHub() {
			t.Fatalf("a client that read nothing for 15 s is still attached")
		}

		back := r.attach("alice", id)
		back.expectStatus(t, "ready")
		var got strings.Builder
		for got.Len() < want.Len() {
			f := back.expectFrame(t)
			if f.Type == "output" {
				got.WriteString(f.Data)
			}
		}
		if got.String() != want.String() {
			t.Errorf("got %d bytes back; want the %d produced, in order", got.Len(), want.Len())
		}
	})
}
