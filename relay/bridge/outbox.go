package bridge

import (
	"strings"
	"sync"
)

// maxBuffered bounds the agent output held for the relay while it is out of
// reach; past it the oldest output is dropped.
const maxBuffered = 1 << 20

// outbox holds agent output on its way to the relay. The output reader puts
// text in; the bridge's loop takes it out and writes it to the socket. While
// the relay is connected a full outbox makes the reader wait, which in turn
// makes the agent wait on its terminal: nothing is lost. While the relay is
// out of reach the outbox keeps the newest maxBuffered bytes and counts what
// it dropped.
type outbox struct {
	limit int
	// ready is signalled (without blocking) when text was added.
	ready chan struct{}

	mu   sync.Mutex // guards the fields below
	cond sync.Cond  // on mu: room was made, or linked or closed changed
	// parts are pieces of text of at most maxFrameData bytes, oldest first.
	parts   []string
	size    int
	dropped int
	linked  bool
	closed  bool
}

func newOutbox(limit int) *outbox {
	o := &outbox{limit: limit, ready: make(chan struct{}, 1)}
	o.cond.L = &o.mu
	return o
}

// put adds text, waiting for room while the relay is connected.
func (o *outbox) put(text string) {
	for _, part := range splitText(text, maxFrameData) {
		o.mu.Lock()
		for o.linked && !o.closed && o.size > 0 && o.size+len(part) > o.limit {
			o.cond.Wait()
		}
		if o.closed {
			o.mu.Unlock()
			return
		}
		o.parts = append(o.parts, part)
		o.size += len(part)
		o.trimLocked()
		o.mu.Unlock()

		select {
		case o.ready <- struct{}{}:
		default:
		}
	}
}

// take removes and returns all pieces held.
func (o *outbox) take() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	parts := o.parts
	o.parts, o.size = nil, 0
	o.cond.Broadcast()
	return parts
}

// giveBack puts pieces that could not be sent back in front, in order.
func (o *outbox) giveBack(parts []string) {
	if len(parts) == 0 {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	o.parts = append(append([]string(nil), parts...), o.parts...)
	o.size += n
	o.trimLocked()
}

// setLinked records whether the relay is connected.
func (o *outbox) setLinked(linked bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.linked = linked
	o.cond.Broadcast()
}

// takeDropped returns how many bytes were dropped since the last call.
func (o *outbox) takeDropped() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := o.dropped
	o.dropped = 0
	return n
}

// close ends put calls, present and future.
func (o *outbox) close() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.closed = true
	o.cond.Broadcast()
}

// trimLocked drops the oldest pieces past the limit. Called with mu held.
func (o *outbox) trimLocked() {
	for o.size > o.limit && len(o.parts) > 1 {
		o.size -= len(o.parts[0])
		o.dropped += len(o.parts[0])
		o.parts = o.parts[1:]
	}
}

// coalesce joins neighbouring pieces of text into as few pieces of at most
// max bytes as their order allows, so that output that piled up while a
// write was under way goes out in few frames.
func coalesce(parts []string, max int) []string {
	if len(parts) < 2 {
		return parts
	}
	var (
		out []string
		cur strings.Builder
	)
	for _, p := range parts {
		if cur.Len() > 0 && cur.Len()+len(p) > max {
			out = append(out, cur.String())
			cur.Reset()
		}
		cur.WriteString(p)
	}
	if cur.Len() > 0 {
		out = append(out, cur.String())
	}
	return out
}
