package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/aishell/aishell/relay/wire"
	"github.com/aishell/aishell/shared/sessionapi"
)

// apiClient calls the session API as a signed-in user.
type apiClient struct {
	t     testing.TB
	base  string // http://127.0.0.1:PORT/api
	user  string
	token string
}

func newAPIClient(t testing.TB, baseURL, user string) *apiClient {
	t.Helper()
	resp, err := http.Get(baseURL + "/api/dev/token?user=" + url.QueryEscape(user))
	if err != nil {
		t.Fatalf("dev token: %v", err)
	}
	defer resp.Body.Close()
	var tok struct{ Token string }
	if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil || tok.Token == "" {
		t.Fatalf("dev token: status %d, err %v", resp.StatusCode, err)
	}
	return &apiClient{t: t, base: baseURL + "/api", user: user, token: tok.Token}
}

// call makes one API call and returns the status and body.
func (a *apiClient) call(method, path string, body any) (int, []byte) {
	a.t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, a.base+path, r)
	req.Header.Set("Authorization", "Bearer "+a.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

// create starts a new session and returns its object.
func (a *apiClient) create() sessionapi.SessionObject {
	a.t.Helper()
	status, body := a.call(http.MethodPost, "/sessions", map[string]any{})
	if status != http.StatusCreated {
		a.t.Fatalf("create session: status %d; want 201; body %s", status, body)
	}
	return decodeSession(a.t, body)
}

// resume resumes a session and returns its object.
func (a *apiClient) resume(id string) sessionapi.SessionObject {
	a.t.Helper()
	status, body := a.call(http.MethodPost, "/sessions", map[string]any{"resume": id})
	if status != http.StatusOK {
		a.t.Fatalf("resume session: status %d; want 200; body %s", status, body)
	}
	return decodeSession(a.t, body)
}

func decodeSession(t testing.TB, body []byte) sessionapi.SessionObject {
	t.Helper()
	var s sessionapi.SessionObject
	if err := json.Unmarshal(body, &s); err != nil {
		t.Fatalf("decode session object %s: %v", body, err)
	}
	return s
}

// frame is one frame the relay sent to a client.
type frame struct {
	Type      string          `json:"type"`
	State     string          `json:"state"`
	Data      string          `json:"data"`
	SessionID string          `json:"sessionId"`
	Warm      bool            `json:"warm"`
	Resumed   bool            `json:"resumed"`
	StartupMs int64           `json:"startup_ms"`
	Error     wire.ErrorBody  `json:"error"`
	ID        string          `json:"id"`
	Raw       json.RawMessage `json:"-"`
}

// wsClient is a client socket with a reader goroutine collecting frames.
type wsClient struct {
	t    testing.TB
	conn *websocket.Conn

	mu     sync.Mutex // guards frames, closed, closeErr
	frames []frame
	closed bool
	// closeErr is the read error that ended the socket (a CloseError
	// carries the close code).
	closeErr error
	wake     chan struct{}
	done     chan struct{}
}

func dial(t testing.TB, s sessionapi.SessionObject) *wsClient {
	t.Helper()
	c, err := dialURL(t, s.RelayURL+"?ticket="+url.QueryEscape(s.Ticket))
	if err != nil {
		t.Fatalf("dial relay: %v", err)
	}
	return c
}

func dialURL(t testing.TB, u string) (*wsClient, error) {
	conn, _, err := websocket.DefaultDialer.Dial(u, nil)
	if err != nil {
		return nil, err
	}
	c := &wsClient{t: t, conn: conn, wake: make(chan struct{}, 1), done: make(chan struct{})}
	go c.read()
	t.Cleanup(func() { c.close() })
	return c, nil
}

func (c *wsClient) read() {
	defer close(c.done)
	for {
		_, p, err := c.conn.ReadMessage()
		c.mu.Lock()
		if err != nil {
			c.closed, c.closeErr = true, err
			c.mu.Unlock()
			c.signal()
			return
		}
		var f frame
		json.Unmarshal(p, &f)
		f.Raw = append(json.RawMessage(nil), p...)
		c.frames = append(c.frames, f)
		c.mu.Unlock()
		c.signal()
	}
}

func (c *wsClient) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *wsClient) send(v any) {
	c.t.Helper()
	if err := c.conn.WriteJSON(v); err != nil {
		c.t.Fatalf("send %v: %v", v, err)
	}
}

// input sends keystrokes.
func (c *wsClient) input(data string) {
	c.send(wire.Input{Type: wire.TypeInput, Data: data})
}

func (c *wsClient) close() {
	c.conn.Close()
	<-c.done
}

// waitFor waits until some frame from index `from` on satisfies ok, and
// returns it with the index after it.
func (c *wsClient) waitFor(from int, limit time.Duration, what string, ok func(frame) bool) (frame, int) {
	c.t.Helper()
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		for i := from; i < len(c.frames); i++ {
			if ok(c.frames[i]) {
				f := c.frames[i]
				c.mu.Unlock()
				return f, i + 1
			}
		}
		from = len(c.frames)
		closed, cerr := c.closed, c.closeErr
		c.mu.Unlock()
		if closed {
			c.t.Fatalf("socket closed (%v) before %s; frames: %s", cerr, what, c.dump())
		}
		select {
		case <-c.wake:
		case <-deadline.C:
			c.t.Fatalf("no %s within %s; frames: %s", what, limit, c.dump())
		}
	}
}

// waitReady waits for session_ready.
func (c *wsClient) waitReady(limit time.Duration) frame {
	c.t.Helper()
	f, _ := c.waitFor(0, limit, "session_ready", func(f frame) bool { return f.Type == wire.TypeSessionReady })
	return f
}

// waitOutput waits until the output received so far contains want.
func (c *wsClient) waitOutput(want string, limit time.Duration) {
	c.t.Helper()
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	for {
		if strings.Contains(c.output(), want) {
			return
		}
		c.mu.Lock()
		closed := c.closed
		c.mu.Unlock()
		if closed {
			c.t.Fatalf("socket closed before output %q; output so far: %q", want, c.output())
		}
		select {
		case <-c.wake:
		case <-deadline.C:
			c.t.Fatalf("no output %q within %s; output so far: %q", want, limit, c.output())
		}
	}
}

// output is all output data received so far.
func (c *wsClient) output() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var b strings.Builder
	for _, f := range c.frames {
		if f.Type == wire.TypeOutput {
			b.WriteString(f.Data)
		}
	}
	return b.String()
}

// waitError waits for an error frame with the code.
func (c *wsClient) waitError(code string, limit time.Duration) frame {
	c.t.Helper()
	f, _ := c.waitFor(0, limit, "error "+code, func(f frame) bool {
		return f.Type == wire.TypeError && f.Error.Code == code
	})
	return f
}

// waitClosed waits for the socket to close and returns its close code.
func (c *wsClient) waitClosed(limit time.Duration) int {
	c.t.Helper()
	select {
	case <-c.done:
	case <-time.After(limit):
		c.t.Fatalf("socket not closed within %s", limit)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if ce, ok := c.closeErr.(*websocket.CloseError); ok {
		return ce.Code
	}
	return -1
}

func (c *wsClient) dump() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var b strings.Builder
	for _, f := range c.frames {
		s := string(f.Raw)
		if len(s) > 200 {
			s = s[:200] + "..."
		}
		fmt.Fprintf(&b, "\n  %s", s)
	}
	return b.String()
}
