package hub_test

import (
	"fmt"
	"strings"
	"testing"
	"testing/synctest"
	"time"
	"unicode/utf8"

	"github.com/aishell/aishell/relay/hub"
	"github.com/aishell/aishell/shared/session"
)

// A task with no client and no work is stopped after the idle time-out; a
// busy task keeps running; a client that comes back in time disarms the
// timer (R7).
func TestIdleStop(t *testing.T) {
	const idle = 10 * time.Minute
	tests := []struct {
		name string
		// busy: the agent is working when the client leaves.
		busy bool
		// away runs once the client has gone; it returns how long after
		// the client left the task must be stopped, or 0 for never.
		away func(t *testing.T, r *rig, id string, b *bridge) time.Duration
	}{
		{
			name: "idle task is stopped after the time-out",
			away: func(t *testing.T, r *rig, id string, b *bridge) time.Duration {
				return idle
			},
		},
		{
			name: "busy task keeps running",
			busy: true,
			away: func(t *testing.T, r *rig, id string, b *bridge) time.Duration {
				time.Sleep(3 * idle)
				return 0
			},
		},
		{
			name: "task that turns idle is stopped a time-out later",
			busy: true,
			away: func(t *testing.T, r *rig, id string, b *bridge) time.Duration {
				time.Sleep(idle + time.Minute)
				b.p.send(map[string]any{"type": "processing", "busy": false})
				return 2*idle + time.Minute
			},
		},
		{
			name: "client back before the time-out",
			away: func(t *testing.T, r *rig, id string, b *bridge) time.Duration {
				time.Sleep(idle - time.Minute)
				c := r.attach("alice", id)
				c.expectStatus(t, "ready")
				c.expectSessionReady(t, id, false)
				time.Sleep(3 * idle)
				return 0
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := newRig(t)
				defer r.close()
				// ECS takes a moment to stop a task, so the bridge hears why.
				r.runner.stopLag = time.Second
				id, c, b := r.readySession("alice")
				if tt.busy {
					b.p.send(map[string]any{"type": "processing", "busy": true})
				}
				synctest.Wait()

				left := time.Now()
				c.hangUp()
				want := tt.away(t, r, id, b)

				if want == 0 {
					synctest.Wait()
					if got := r.runner.stopCalls(); len(got) != 0 {
						t.Fatalf("stops: got %v; want none", got)
					}
					if got := r.session(id).State; got != session.StateReady {
						t.Errorf("stored state: got %s; want ready", got)
					}
					return
				}
				time.Sleep(want - time.Since(left) - time.Millisecond)
				synctest.Wait()
				if got := r.runner.stopCalls(); len(got) != 0 {
					t.Fatalf("stopped %s after the client left: %v; want after %s",
						time.Since(left), got, want)
				}
				time.Sleep(time.Millisecond)
				synctest.Wait()
				stops := r.runner.stopsOf(b.handle)
				if len(stops) != 1 || !strings.Contains(stops[0], "idle") {
					t.Fatalf("stops of the task: got %q; want one naming idleness", stops)
				}
				if f := b.p.expectType(t, "shutdown"); f.Reason != "idle" {
					t.Errorf("shutdown reason to the bridge: got %q; want idle", f.Reason)
				}
				if got := r.session(id).State; got != session.StateStopped {
					t.Errorf("stored state: got %s; want stopped", got)
				}
				lines := r.logs.Events(t, "task_idle_stop")
				if len(lines) != 1 {
					t.Errorf("task_idle_stop log lines: got %d; want 1", len(lines))
				}
			})
		})
	}
}

// Output the agent writes while the client is away waits for it and is
// delivered, in order, when it comes back (R2).
func TestOutputKeptForAbsentClient(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t)
		defer r.close()
		id, c, b := r.readySession("alice")
		c.hangUp()
		synctest.Wait()

		want := ""
		for i := range 5 {
			o := fmt.Sprintf("line %d\n", i)
			b.output(o)
			want += o
		}
		synctest.Wait()

		back := r.attach("alice", id)
		back.expectStatus(t, "ready")
		got := ""
		for {
			f := back.expectFrame(t)
			if f.Type == "session_ready" {
				break
			}
			if f.Type != "output" {
				t.Fatalf("got %v; want output, then session_ready", f)
			}
			got += f.Data
		}
		if got != want {
			t.Errorf("kept output: got %q; want %q", got, want)
		}

		// What the agent writes now goes straight through.
		b.output("live\n")
		if f := back.expectType(t, "output"); f.Data != "live\n" {
			t.Errorf("live output: got %q; want %q", f.Data, "live\n")
		}
	})
}

// Past the bound on kept output, the returning client is told QUEUE_FULL
// with the number of bytes dropped, then gets the newest output, cut at a
// character boundary so that it stays valid UTF-8 (R2).
func TestKeptOutputBound(t *testing.T) {
	const limit = 100
	tests := []struct {
		name    string
		outputs []string
		// kept is the output the client gets; dropped is the byte count
		// the QUEUE_FULL names.
		kept    string
		dropped int
	}{
		{
			name:    "three-byte characters",
			outputs: repeatN("€", 50),
			kept:    strings.Repeat("€", 33),
			dropped: 51,
		},
		{
			name:    "one large chunk",
			outputs: []string{strings.Repeat("a", 40) + strings.Repeat("é", 80)},
			kept:    strings.Repeat("é", 50),
			dropped: 100,
		},
		{
			name:    "at the bound nothing is dropped",
			outputs: []string{strings.Repeat("z", 60), strings.Repeat("y", 40)},
			kept:    strings.Repeat("z", 60) + strings.Repeat("y", 40),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := newRig(t, withHub(func(c *hub.Config) { c.MaxKeptOutput = limit }))
				defer r.close()
				id, c, b := r.readySession("alice")
				c.hangUp()
				synctest.Wait()
				for _, o := range tt.outputs {
					b.output(o)
				}
				synctest.Wait()

				back := r.attach("alice", id)
				back.expectStatus(t, "ready")
				if tt.dropped > 0 {
					f := back.expectError(t, "QUEUE_FULL")
					if want := fmt.Sprintf("%d bytes", tt.dropped); !strings.Contains(f.Error.Message, want) {
						t.Errorf("QUEUE_FULL message: got %q; want it to name %q", f.Error.Message, want)
					}
				}
				got := ""
				for {
					f := back.expectFrame(t)
					if f.Type == "session_ready" {
						break
					}
					if f.Type != "output" {
						t.Fatalf("got %v; want output, then session_ready", f)
					}
					if !utf8.ValidString(f.Data) {
						t.Errorf("output %q is not valid UTF-8", f.Data)
					}
					got += f.Data
				}
				if got != tt.kept {
					t.Errorf("kept output: got %q (%d bytes); want %q (%d bytes)",
						got, len(got), tt.kept, len(tt.kept))
				}
			})
		})
	}
}
