package hub

import (
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/aishell/aishell/relay/wire"
)

// Transport is one socket as the hub sees it: whole text frames in and out.
// The relay wraps a WebSocket in it; tests use an in-memory pair, so that
// time-outs can run under testing/synctest.
type Transport interface {
	// ReadFrame returns the next text frame. A frame over the limit given
	// to the transport returns ErrFrameTooLarge.
	ReadFrame() ([]byte, error)
	// WriteFrame writes one text frame.
	WriteFrame(p []byte) error
	// WritePing writes a keep-alive ping.
	WritePing() error
	// WriteClose writes a close frame with a code and reason.
	WriteClose(code int, reason string) error
	// Close closes the socket; a blocked ReadFrame returns.
	Close() error
}

// ErrBinaryFrame is returned by ReadFrame for a binary frame; the protocol
// has text frames only.
var ErrBinaryFrame = errors.New("binary frame")

// ErrFrameTooLarge is returned by ReadFrame for an oversized frame.
var ErrFrameTooLarge = errors.New("frame too large")

// Close codes of protocol.md.
const (
	CloseNormal         = 1000
	CloseGoingAway      = 1001
	ClosePolicy         = 1008
	CloseTooLarge       = 1009
	CloseInternalError  = 1011
	closeReasonMaxBytes = 120
)

// conn is one socket with its own writer goroutine, so that no hub lock is
// ever held across a network write. Frames queue without bound in count;
// the bytes queued are tracked so that output to a slow client can wait
// (backpressure) instead of piling up. On the hot path (output and input)
// sendNow writes from the caller's goroutine when nothing is queued,
// sparing a hand-off to the writer.
type conn struct {
	t       Transport
	ping    time.Duration
	timeout time.Duration

	mu    sync.Mutex // guards queue, queued, unsent, writing, closing, closeCode, closeMsg
	queue []frame
	// unsent holds the frames a failed socket never took, so that output
	// in them can be kept for the client's return.
	unsent  []frame
	queued  int
	writing bool // a goroutine (the writer, or a sendNow) is writing
	closing bool
	// closeCode and closeMsg are written after the queue drains.
	closeCode int
	closeMsg  string

	wake    chan struct{} // a frame or a close was queued
	drained chan struct{} // replaced and closed whenever the queue empties
	done    chan struct{} // closed when the writer has finished
}

// frame is one queued frame; output frames also carry their data.
type frame struct {
	p      []byte
	output string
}

func newConn(t Transport, ping time.Duration) *conn {
	c := &conn{
		t:       t,
		ping:    ping,
		wake:    make(chan struct{}, 1),
		drained: make(chan struct{}),
		done:    make(chan struct{}),
	}
	go c.writeLoop()
	return c
}

// send queues v as a JSON frame; it reports false if the conn is closing.
func (c *conn) send(v any) bool {
	p, err := json.Marshal(v)
	if err != nil {
		return false
	}
	return c.sendRaw(p)
}

func (c *conn) sendRaw(p []byte) bool {
	return c.enqueue(frame{p: p})
}

// sendOutput queues an output frame whose data is kept if the socket
// fails before taking it.
func (c *conn) sendOutput(data string) bool {
	p, err := json.Marshal(wire.Output{Type: wire.TypeOutput, Data: data})
	if err != nil {
		return false
	}
	return c.enqueue(frame{p: p, output: data})
}

func (c *conn) enqueue(f frame) bool {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return false
	}
	c.queue = append(c.queue, f)
	c.queued += len(f.p)
	c.mu.Unlock()
	c.signal()
	return true
}

// unsentOutput returns, in order, the output data of frames the socket
// never took. Call it after the conn is done.
func (c *conn) unsentOutput() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var b strings.Builder
	for _, f := range append(c.unsent, c.queue...) {
		b.WriteString(f.output)
	}
	c.unsent, c.queue = nil, nil
	return b.String()
}

// sendNow writes v at once when nothing is queued or being written, else
// queues it behind what is; order is kept either way. It may block on the
// socket, so it must be called with no hub lock held. It reports false if
// the conn is closing or the write failed.
func (c *conn) sendNow(v any) bool {
	p, err := json.Marshal(v)
	if err != nil {
		return false
	}
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return false
	}
	if c.writing || len(c.queue) > 0 {
		c.queue = append(c.queue, frame{p: p})
		c.queued += len(p)
		c.mu.Unlock()
		c.signal()
		return true
	}
	c.writing = true
	c.mu.Unlock()

	err = c.t.WriteFrame(p)

	c.mu.Lock()
	c.writing = false
	c.mu.Unlock()
	if err != nil {
		c.fail()
		c.t.Close()
	}
	// Wake the writer for anything queued meanwhile, or a close.
	c.signal()
	return err == nil
}

func (c *conn) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// backlog returns the bytes queued and a channel closed when they drain.
func (c *conn) backlog() (int, <-chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.queued, c.drained
}

// close queues a close frame after what is already queued; later sends are
// refused. The first close wins.
func (c *conn) close(code int, reason string) {
	if len(reason) > closeReasonMaxBytes {
		reason = reason[:closeReasonMaxBytes]
	}
	c.mu.Lock()
	if !c.closing {
		c.closing, c.closeCode, c.closeMsg = true, code, reason
	}
	c.mu.Unlock()
	c.signal()
}

// abort closes the socket at once, dropping what is queued; used when the
// peer is gone.
func (c *conn) abort() {
	c.close(CloseInternalError, "")
	c.t.Close()
}

func (c *conn) writeLoop() {
	defer close(c.done)
	defer c.t.Close()
	var ticker *time.Ticker
	var tick <-chan time.Time
	if c.ping > 0 {
		ticker = time.NewTicker(c.ping)
		defer ticker.Stop()
		tick = ticker.C
	}
	for {
		c.mu.Lock()
		if c.writing {
			// A sendNow is writing; it wakes us when done.
			c.mu.Unlock()
			select {
			case <-c.wake:
			case <-tick:
				if err := c.t.WritePing(); err != nil {
					c.fail()
					return
				}
			}
			continue
		}
		batch := c.queue
		c.queue = nil
		c.writing = len(batch) > 0
		closing, code, msg := c.closing, c.closeCode, c.closeMsg
		c.mu.Unlock()

		for i, f := range batch {
			if err := c.t.WriteFrame(f.p); err != nil {
				// The frame that failed may or may not have left; count it
				// unsent: a repeat beats a loss.
				c.mu.Lock()
				c.queue = append(batch[i:], c.queue...)
				c.mu.Unlock()
				c.fail()
				return
			}
			c.mu.Lock()
			c.queued -= len(f.p)
			c.mu.Unlock()
		}
		c.mu.Lock()
		c.writing = false
		if len(c.queue) == 0 {
			close(c.drained)
			c.drained = make(chan struct{})
		}
		more := len(c.queue) > 0
		c.mu.Unlock()
		if more {
			continue
		}
		if closing {
			c.t.WriteClose(code, msg)
			return
		}
		select {
		case <-c.wake:
		case <-tick:
			if err := c.t.WritePing(); err != nil {
				c.fail()
				return
			}
		}
	}
}

// fail marks the conn closed after a write error, sets what it never sent
// aside, and wakes any waiter.
func (c *conn) fail() {
	c.mu.Lock()
	c.closing = true
	c.unsent = append(c.unsent, c.queue...)
	c.queue, c.queued = nil, 0
	close(c.drained)
	c.drained = make(chan struct{})
	c.mu.Unlock()
}

// alive reports whether the conn still takes frames.
func (c *conn) alive() bool {
	select {
	case <-c.done:
		return false
	default:
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.closing
}
