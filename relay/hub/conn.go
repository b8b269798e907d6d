package hub

import (
	"encoding/json"
	"errors"
	"sync"
	"time"
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

	mu      sync.Mutex // guards queue, queued, writing, closing, closeCode, closeMsg
	queue   [][]byte
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
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return false
	}
	c.queue = append(c.queue, p)
	c.queued += len(p)
	c.mu.Unlock()
	c.signal()
	return true
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
		c.queue = append(c.queue, p)
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

		for _, p := range batch {
			if err := c.t.WriteFrame(p); err != nil {
				c.fail()
				return
			}
			c.mu.Lock()
			c.queued -= len(p)
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

// fail marks the conn closed after a write error and wakes any waiter.
func (c *conn) fail() {
	c.mu.Lock()
	c.closing = true
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
