package bridge

import (
	"strings"
	"testing"
	"time"
)

func TestOutboxDropsOldestWhileUnlinked(t *testing.T) {
	o := newOutbox(10)
	for _, s := range []string{"aaaa", "bbbb", "cccc", "dddd"} {
		o.put(s)
	}
	if got := strings.Join(o.take(), ""); got != "ccccdddd" {
		t.Errorf("kept: got %q; want the newest %q", got, "ccccdddd")
	}
	if got := o.takeDropped(); got != 8 {
		t.Errorf("dropped: got %d bytes; want 8", got)
	}
	if got := o.takeDropped(); got != 0 {
		t.Errorf("dropped after reporting: got %d; want 0", got)
	}
}

func TestOutboxGiveBackKeepsOrder(t *testing.T) {
	o := newOutbox(100)
	o.put("one")
	parts := o.take()
	o.put("two")
	o.giveBack(parts)
	if got := strings.Join(o.take(), ","); got != "one,two" {
		t.Errorf("after give back: got %q; want %q", got, "one,two")
	}
}

func TestOutboxWaitsForRoomWhileLinked(t *testing.T) {
	o := newOutbox(4)
	o.setLinked(true)
	o.put("abcd")
	done := make(chan struct{})
	go func() {
		o.put("efgh")
		close(done)
	}()
	// The second put can only finish once the first text was taken; then
	// nothing was dropped.
	if got := strings.Join(o.take(), ""); got != "abcd" {
		t.Fatalf("first take: got %q; want %q", got, "abcd")
	}
	select {
	case <-done:
	case <-time.After(waitLimit):
		t.Fatal("put still waiting after take; want it done")
	}
	if got := strings.Join(o.take(), ""); got != "efgh" {
		t.Errorf("second take: got %q; want %q", got, "efgh")
	}
	if got := o.takeDropped(); got != 0 {
		t.Errorf("dropped while linked: got %d; want 0", got)
	}
}

func TestOutboxCloseReleasesWaitingPut(t *testing.T) {
	o := newOutbox(1)
	o.setLinked(true)
	o.put("a")
	done := make(chan struct{})
	go func() {
		o.put("b")
		close(done)
	}()
	o.close()
	select {
	case <-done:
	case <-time.After(waitLimit):
		t.Fatal("put still waiting after close; want it released")
	}
}

func TestCoalesce(t *testing.T) {
	cases := []struct {
		name  string
		parts []string
		want  []string
	}{
		{"nothing", nil, nil},
		{"one piece stays", []string{"abc"}, []string{"abc"}},
		{"small pieces join", []string{"a", "b", "c"}, []string{"abc"}},
		{"joined up to the limit", []string{"ab", "cd", "e"}, []string{"abcd", "e"}},
		{"full piece stays alone", []string{"abcd", "e", "f"}, []string{"abcd", "ef"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := coalesce(tc.parts, 4)
			if strings.Join(got, "|") != strings.Join(tc.want, "|") || len(got) != len(tc.want) {
				t.Fatalf("coalesce(%q, 4): got %q; want %q", tc.parts, got, tc.want)
			}
		})
	}
}
