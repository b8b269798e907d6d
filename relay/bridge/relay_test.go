package bridge

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"github.com/aishell/aishell/shared/logging/logtest"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/aishell/aishell/relay/wire"
	"github.com/aishell/aishell/shared/logging"
)

// waitLimit bounds every wait of these tests; nothing here should take long.
const waitLimit = 15 * time.Second

const testCredential = "task-credential-for-tests"

// fakeRelay is the relay's task socket, as far as a bridge can tell: it
// checks the credential and the path, and hands each connection to the test.
type fakeRelay struct {
	t     *testing.T
	srv   *httptest.Server
	conns chan *relayConn

	// refused tells of each dial answered with refuse.
	refused chan int

	mu sync.Mutex // guards refuse
	// refuse, when not 0, answers every dial with this HTTP status.
	refuse int
}

// frame is a frame from the bridge: any type, and the ready frame's pid.
type frame struct {
	wire.Inbound
	PID int `json:"pid"`
}

// relayConn is one task connection as the relay sees it.
type relayConn struct {
	t      *testing.T
	path   string
	ws     *websocket.Conn
	frames chan frame
	done   chan struct{}
	// output is the output text received so far, across calls.
	output strings.Builder
}

func newFakeRelay(t *testing.T) *fakeRelay {
	t.Helper()
	r := &fakeRelay{t: t, conns: make(chan *relayConn, 16), refused: make(chan int, 1)}
	up := websocket.Upgrader{}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if got := req.Header.Get("Authorization"); got != "Bearer "+testCredential {
			http.Error(w, "bad credential", http.StatusUnauthorized)
			return
		}
		if !strings.HasPrefix(req.URL.Path, "/internal/task/") &&
			!strings.HasPrefix(req.URL.Path, "/internal/warm/") {
			http.Error(w, "no such socket", http.StatusNotFound)
			return
		}
		r.mu.Lock()
		refuse := r.refuse
		r.mu.Unlock()
		if refuse != 0 {
			http.Error(w, "refused by the test", refuse)
			select {
			case r.refused <- refuse:
			default:
			}
			return
		}
		ws, err := up.Upgrade(w, req, nil)
		if err != nil {
			return
		}
		c := &relayConn{t: t, path: req.URL.Path, ws: ws,
			frames: make(chan frame, 4096), done: make(chan struct{})}
		go c.read()
		r.conns <- c
	}))
	t.Cleanup(r.srv.Close)
	return r
}

// URL is the relay's base URL.
func (r *fakeRelay) URL() string { return "ws" + strings.TrimPrefix(r.srv.URL, "http") }

// waitRefused waits for a dial that was refused.
func (r *fakeRelay) waitRefused() {
	r.t.Helper()
	select {
	case <-r.refused:
	case <-time.After(waitLimit):
		r.t.Fatalf("no dial from the bridge after %s; want one", waitLimit)
	}
}

func (r *fakeRelay) setRefuse(status int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.refuse = status
}

// accept waits for the bridge's next connection and checks its path.
func (r *fakeRelay) accept(wantPath string) *relayConn {
	r.t.Helper()
	select {
	case c := <-r.conns:
		r.t.Cleanup(func() { c.ws.Close() })
		if c.path != wantPath {
			r.t.Fatalf("bridge connected to %s; want %s", c.path, wantPath)
		}
		return c
	case <-time.After(waitLimit):
		r.t.Fatalf("no connection from the bridge after %s; want one to %s", waitLimit, wantPath)
		return nil
	}
}

func (c *relayConn) read() {
	defer close(c.done)
	defer close(c.frames)
	for {
		_, data, err := c.ws.ReadMessage()
		if err != nil {
			return
		}
		var f frame
		if err := json.Unmarshal(data, &f); err != nil {
			c.t.Errorf("bridge sent a frame that is not JSON: %q", data)
			continue
		}
		c.frames <- f
	}
}

func (c *relayConn) send(frame any) {
	c.t.Helper()
	if err := c.ws.WriteJSON(frame); err != nil {
		c.t.Fatalf("send %v: %v", frame, err)
	}
}

func (c *relayConn) input(data string) {
	c.t.Helper()
	c.send(wire.Input{Type: wire.TypeInput, Data: data})
}

// next returns the next frame; ok is false once the connection has ended.
func (c *relayConn) next() (f frame, ok bool) {
	c.t.Helper()
	select {
	case f, ok = <-c.frames:
		if ok && f.Type == wire.TypeOutput {
			c.output.WriteString(f.Data)
		}
		return f, ok
	case <-time.After(waitLimit):
		c.t.Fatalf("no frame from the bridge after %s; output so far: %q", waitLimit, c.output.String())
		return f, false
	}
}

// until reads frames until one satisfies match, and returns it.
func (c *relayConn) until(what string, match func(frame) bool) frame {
	c.t.Helper()
	for {
		f, ok := c.next()
		if !ok {
			c.t.Fatalf("connection ended while waiting for %s; output so far: %q",
				what, c.output.String())
		}
		if match(f) {
			return f
		}
	}
}

// frame reads frames until one of type typ.
func (c *relayConn) frame(typ string) frame {
	c.t.Helper()
	return c.until(typ+" frame", func(f frame) bool { return f.Type == typ })
}

// outputContains reads frames until the output holds want, and returns the
// output received so far.
func (c *relayConn) outputContains(want string) string {
	c.t.Helper()
	c.until("output "+want, func(frame) bool {
		return strings.Contains(c.output.String(), want)
	})
	return c.output.String()
}

// ended waits for the bridge to close the connection.
func (c *relayConn) ended() {
	c.t.Helper()
	select {
	case <-c.done:
	case <-time.After(waitLimit):
		c.t.Fatalf("connection still open after %s; want it closed", waitLimit)
	}
}

// drop cuts the connection without a close frame, as a network failure would.
func (c *relayConn) drop() {
	c.ws.NetConn().Close()
}

// logBuffer captures the JSON log lines under test.
type logBuffer = logtest.Buffer

// running is a bridge under test.
type running struct {
	t      *testing.T
	cancel context.CancelFunc
	done   chan error
	logs   *logBuffer
}

// startBridge runs a bridge until the test ends.
func startBridge(t *testing.T, cfg Config) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{t: t, cancel: cancel, done: make(chan error, 1), logs: &logBuffer{}}
	logger := logging.New(r.logs, "bridge", slog.LevelDebug)
	go func() { r.done <- Run(ctx, cfg, logger) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(waitLimit):
			t.Errorf("bridge still running %s after the test; want it ended", waitLimit)
		}
	})
	return r
}

// wait waits for Run to return, and returns its error.
func (r *running) wait() error {
	r.t.Helper()
	select {
	case err := <-r.done:
		r.done <- err // for the cleanup
		return err
	case <-time.After(waitLimit):
		r.t.Fatalf("bridge still running after %s; want it ended", waitLimit)
		return nil
	}
}

// lastLog is the bridge's last log line.
func (r *running) lastLog() map[string]any {
	lines := r.logs.Lines(r.t)
	if len(lines) == 0 {
		return nil
	}
	return lines[len(lines)-1]
}

// workspaceRoot returns a workspace root that agents of any uid can pass
// through, as on the real file system.
func workspaceRoot(t *testing.T) string {
	t.Helper()
	tmp := t.TempDir()
	for _, dir := range []string{filepath.Dir(tmp), tmp} {
		if err := os.Chmod(dir, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(tmp, "workspaces")
}

// testConfig is a cold task of session s1 for alice, running /bin/sh.
func testConfig(t *testing.T, relay *fakeRelay) Config {
	return Config{
		RelayURL:        relay.URL(),
		TaskID:          "task-1",
		Credential:      testCredential,
		SessionID:       "s1",
		UserID:          "alice",
		WorkspaceRoot:   workspaceRoot(t),
		AgentCommand:    []string{"/bin/sh"},
		Mode:            ModePTY,
		ReconnectWindow: 5 * time.Second,
		StopGrace:       time.Second,
		QuietPeriod:     200 * time.Millisecond,
	}
}

// processGone reports whether pid no longer runs (gone, or a zombie that
// nobody reaped yet).
func processGone(pid int) bool {
	stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if errors.Is(err, fs.ErrNotExist) {
		return true
	}
	if err != nil {
		return false
	}
	rest := string(stat[bytes.LastIndexByte(stat, ')')+1:])
	f := strings.Fields(rest)
	return len(f) > 0 && (f[0] == "Z" || f[0] == "X")
}
