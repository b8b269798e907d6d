package awse2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/gorilla/websocket"

	"github.com/aishell/aishell/relay/wire"
	"github.com/aishell/aishell/shared/sessionapi"
)

// frameWait bounds each wait for something the relay sends.
const frameWait = 10 * time.Second

// call makes one session API call as API Gateway hands it to the session
// Lambda: the JWT authorizer put the signed-in user in the sub claim.
func (p *product) call(user, method, path, body string) events.APIGatewayV2HTTPResponse {
	p.t.Helper()
	var req events.APIGatewayV2HTTPRequest
	req.RawPath, req.Body = path, body
	req.RequestContext.HTTP.Method = method
	req.RequestContext.Authorizer = &events.APIGatewayV2HTTPRequestContextAuthorizerDescription{
		JWT: &events.APIGatewayV2HTTPRequestContextAuthorizerJWTDescription{
			Claims: map[string]string{"sub": user},
		},
	}
	resp, err := p.api.Handle(context.Background(), req)
	if err != nil {
		p.t.Fatalf("%s %s: handler error %v", method, path, err)
	}
	return resp
}

// create starts a new session for user.
func (p *product) create(user string) sessionapi.SessionObject {
	p.t.Helper()
	return p.sessionCall(user, `{}`, http.StatusCreated)
}

// resume resumes a session of user.
func (p *product) resume(user, id string) sessionapi.SessionObject {
	p.t.Helper()
	body, _ := json.Marshal(map[string]string{"resume": id})
	return p.sessionCall(user, string(body), http.StatusOK)
}

func (p *product) sessionCall(user, body string, want int) sessionapi.SessionObject {
	p.t.Helper()
	resp := p.call(user, http.MethodPost, "/sessions", body)
	if resp.StatusCode != want {
		p.t.Fatalf("POST /sessions %s: status %d (%s); want %d", body, resp.StatusCode, resp.Body, want)
	}
	var s sessionapi.SessionObject
	if err := json.Unmarshal([]byte(resp.Body), &s); err != nil {
		p.t.Fatalf("session object %s: %v", resp.Body, err)
	}
	return s
}

// frame is a frame from the relay, decoded into the fields of every type.
type frame struct {
	Type      string         `json:"type"`
	State     string         `json:"state"`
	Data      string         `json:"data"`
	SessionID string         `json:"sessionId"`
	Warm      bool           `json:"warm"`
	Resumed   bool           `json:"resumed"`
	Error     wire.ErrorBody `json:"error"`
	text      string
}

func (f frame) is(typ string) bool { return f.Type == typ }

// socket is a client's WebSocket to the relay. A reader goroutine keeps
// every frame; waits scan them from a cursor, so a test reads the frames
// in their order.
type socket struct {
	t    *testing.T
	conn *websocket.Conn
	done chan struct{} // closed when the reader has stopped

	mu     sync.Mutex // guards frames, ended and news
	frames []frame
	// ended is the read error that ended the socket (a *websocket.CloseError
	// for a close frame); nil while it is open.
	ended error
	// news is closed and replaced whenever frames or ended change.
	news chan struct{}
	// cursor is where the next expect starts scanning; only the test's
	// goroutine uses it.
	cursor int
}

// dial opens the client socket of a session object.
func dial(t *testing.T, s sessionapi.SessionObject) *socket {
	t.Helper()
	conn, _, err := websocket.DefaultDialer.Dial(s.RelayURL+"?ticket="+url.QueryEscape(s.Ticket), nil)
	if err != nil {
		t.Fatalf("dial %s: %v", s.RelayURL, err)
	}
	c := &socket{t: t, conn: conn, done: make(chan struct{}), news: make(chan struct{})}
	go c.read()
	t.Cleanup(c.close)
	return c
}

func (c *socket) read() {
	defer close(c.done)
	for {
		_, b, err := c.conn.ReadMessage()
		c.mu.Lock()
		if err != nil {
			c.ended = err
		} else {
			f := frame{text: string(b)}
			if jerr := json.Unmarshal(b, &f); jerr != nil {
				f.Type = "undecodable"
			}
			c.frames = append(c.frames, f)
		}
		close(c.news)
		c.news = make(chan struct{})
		c.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// close closes the socket from the client's side.
func (c *socket) close() {
	c.conn.Close()
	<-c.done
}

// input sends keystrokes to the agent.
func (c *socket) input(keys string) {
	c.t.Helper()
	if err := c.conn.WriteJSON(wire.Input{Type: wire.TypeInput, Data: keys}); err != nil {
		c.t.Fatalf("send input %q: %v", keys, err)
	}
}

// waitFor waits until check, given every frame so far, reports done, at
// most limit; a socket that ends first fails the test.
func (c *socket) waitFor(limit time.Duration, what string, check func([]frame) bool) {
	c.t.Helper()
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		ok, ended, news := check(c.frames), c.ended, c.news
		c.mu.Unlock()
		if ok {
			return
		}
		if ended != nil {
			c.t.Fatalf("socket ended (%v) before %s; frames:%s", ended, what, c.dump())
		}
		select {
		case <-news:
		case <-deadline.C:
			c.t.Fatalf("no %s within %s; frames:%s", what, limit, c.dump())
		}
	}
}

// expect waits for the next frame from the cursor on that matches, and
// moves the cursor past it.
func (c *socket) expect(what string, match func(frame) bool) frame {
	c.t.Helper()
	return c.expectWithin(frameWait, what, match)
}

// expectWithin is expect with its own limit.
func (c *socket) expectWithin(limit time.Duration, what string, match func(frame) bool) frame {
	c.t.Helper()
	var found frame
	c.waitFor(limit, what, func(frames []frame) bool {
		for i := c.cursor; i < len(frames); i++ {
			if match(frames[i]) {
				found, c.cursor = frames[i], i+1
				return true
			}
		}
		return false
	})
	return found
}

// ready waits for session_ready.
func (c *socket) ready() frame {
	c.t.Helper()
	return c.expect("session_ready", func(f frame) bool { return f.is(wire.TypeSessionReady) })
}

// status waits for a status frame with state.
func (c *socket) status(state string) {
	c.t.Helper()
	c.expect("status "+state, func(f frame) bool { return f.is(wire.TypeStatus) && f.State == state })
}

// failure waits for an error frame with code.
func (c *socket) failure(code string) frame {
	c.t.Helper()
	return c.expect("error "+code, func(f frame) bool {
		return f.is(wire.TypeError) && f.Error.Code == code
	})
}

// sees waits until the agent's output so far holds want.
func (c *socket) sees(want string) {
	c.t.Helper()
	c.waitFor(frameWait, fmt.Sprintf("output %q", want), func(frames []frame) bool {
		return strings.Contains(output(frames), want)
	})
}

func output(frames []frame) string {
	var b strings.Builder
	for _, f := range frames {
		if f.is(wire.TypeOutput) {
			b.WriteString(f.Data)
		}
	}
	return b.String()
}

// closedWith waits for the relay to close the socket and returns the close
// code, or -1 if it ended without a close frame.
func (c *socket) closedWith() int {
	c.t.Helper()
	select {
	case <-c.done:
	case <-time.After(frameWait):
		c.t.Fatalf("socket still open after %s; frames:%s", frameWait, c.dump())
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var ce *websocket.CloseError
	if errors.As(c.ended, &ce) {
		return ce.Code
	}
	return -1
}

func (c *socket) dump() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var b strings.Builder
	for _, f := range c.frames {
		s := f.text
		if len(s) > 160 {
			s = s[:160] + "..."
		}
		b.WriteString("\n  " + s)
	}
	return b.String()
}
