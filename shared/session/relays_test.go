package session

import (
	"fmt"
	"testing"
	"time"
)

func TestPickRelay(t *testing.T) {
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	fresh := func(id string) Relay { return Relay{ID: id, HeartbeatAt: now.Add(-10 * time.Second)} }
	stale := func(id string) Relay { return Relay{ID: id, HeartbeatAt: now.Add(-5 * time.Minute)} }

	tests := []struct {
		name   string
		relays []Relay
		ok     bool
		oneOf  []string
	}{
		{"none", nil, false, nil},
		{"only stale", []Relay{stale("a"), stale("b")}, false, nil},
		{"one healthy", []Relay{stale("a"), fresh("b")}, true, []string{"b"}},
		{"several", []Relay{fresh("a"), fresh("b"), fresh("c")}, true, []string{"a", "b", "c"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, ok := PickRelay(tt.relays, "s_1", now, 90*time.Second)
			if ok != tt.ok {
				t.Fatalf("ok %v; want %v", ok, tt.ok)
			}
			if ok && !contains(tt.oneOf, r.ID) {
				t.Errorf("picked %s; want one of %v", r.ID, tt.oneOf)
			}
		})
	}
}

// Rendezvous hashing: the choice does not depend on the list's order, and
// losing a relay moves only the sessions it owned.
func TestPickRelayIsStable(t *testing.T) {
	now := time.Now()
	all := []Relay{{ID: "a", HeartbeatAt: now}, {ID: "b", HeartbeatAt: now}, {ID: "c", HeartbeatAt: now}}
	reversed := []Relay{all[2], all[1], all[0]}
	withoutB := []Relay{all[0], all[2]}
	counts := map[string]int{}
	for i := range 300 {
		id := fmt.Sprintf("s_%d", i)
		first, _ := PickRelay(all, id, now, time.Minute)
		again, _ := PickRelay(reversed, id, now, time.Minute)
		if first.ID != again.ID {
			t.Fatalf("session %s: %s, then %s with the list reversed", id, first.ID, again.ID)
		}
		after, _ := PickRelay(withoutB, id, now, time.Minute)
		if first.ID != "b" && after.ID != first.ID {
			t.Errorf("session %s moved from %s to %s though its relay stayed", id, first.ID, after.ID)
		}
		counts[first.ID]++
	}
	for _, r := range all {
		if counts[r.ID] < 60 {
			t.Errorf("relay %s got %d of 300 sessions; want a fair share", r.ID, counts[r.ID])
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
