package server

import (
	"errors"
	"io"
	"time"

	"github.com/gorilla/websocket"

	"github.com/aishell/aishell/relay/hub"
)

// wsTransport adapts a gorilla WebSocket to hub.Transport. The hub's writer
// goroutine is its only writer and the hub's read loop its only reader.
type wsTransport struct {
	c        *websocket.Conn
	maxFrame int
	// idle is how long a read may wait: a peer that answers no ping within
	// it is gone.
	idle         time.Duration
	writeTimeout time.Duration
}

func newTransport(c *websocket.Conn, maxFrame int, ping time.Duration) *wsTransport {
	t := &wsTransport{c: c, maxFrame: maxFrame, idle: 2*ping + 10*time.Second, writeTimeout: 10 * time.Second}
	// A hard cap well above the frame limit; frames over the limit are
	// refused by ReadFrame with an error frame first.
	c.SetReadLimit(int64(maxFrame) * 4)
	c.SetReadDeadline(time.Now().Add(t.idle))
	c.SetPongHandler(func(string) error {
		return c.SetReadDeadline(time.Now().Add(t.idle))
	})
	return t
}

func (t *wsTransport) ReadFrame() ([]byte, error) {
	kind, r, err := t.c.NextReader()
	if err != nil {
		return nil, err
	}
	t.c.SetReadDeadline(time.Now().Add(t.idle))
	p, err := io.ReadAll(io.LimitReader(r, int64(t.maxFrame)+1))
	if err != nil {
		if errors.Is(err, websocket.ErrReadLimit) {
			return nil, hub.ErrFrameTooLarge
		}
		return nil, err
	}
	if len(p) > t.maxFrame {
		// Read the rest of the frame (bounded by the read limit), so that
		// closing does not reset the connection before the client has read
		// why.
		io.Copy(io.Discard, r)
		return nil, hub.ErrFrameTooLarge
	}
	if kind != websocket.TextMessage {
		return nil, hub.ErrBinaryFrame
	}
	return p, nil
}

func (t *wsTransport) WriteFrame(p []byte) error {
	t.c.SetWriteDeadline(time.Now().Add(t.writeTimeout))
	return t.c.WriteMessage(websocket.TextMessage, p)
}

func (t *wsTransport) WritePing() error {
	return t.c.WriteControl(websocket.PingMessage, nil, time.Now().Add(t.writeTimeout))
}

func (t *wsTransport) WriteClose(code int, reason string) error {
	return t.c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason),
		time.Now().Add(time.Second))
}

func (t *wsTransport) Close() error { return t.c.Close() }
