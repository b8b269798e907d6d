// Package bench measures the product on this machine (`make bench`):
// session start from the API call to session_ready, warm and cold; the
// relay's round trip against a direct WebSocket echo, as a ratio; memory
// per idle session. Figures are benchmark metrics; compare them as ratios
// within one run, since the machines are shared and noisy.
package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"github.com/aishell/aishell/relay/internal/buildtest"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/aishell/aishell/relay/local"
	"github.com/aishell/aishell/relay/wire"
	"github.com/aishell/aishell/shared/session"
	"github.com/aishell/aishell/shared/sessionapi"
	"github.com/aishell/aishell/shared/ticket"
)

// sessions is how many sessions each start benchmark measures.
const sessions = 200

var binDir string

func TestMain(m *testing.M) {
	dir, err := buildtest.Build("bridge", "relay")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func startProduct(b *testing.B, warm int, agent, mode string) *local.Product {
	b.Helper()
	return buildtest.Product(b, local.Config{
		BridgePath: filepath.Join(binDir, "bridge"), AgentCommand: agent, AgentMode: mode,
		WarmPool: warm > 0, WarmPoolSize: warm, RefillInterval: 200 * time.Millisecond,
	})
}

type api struct {
	base, token string
}

func newAPI(b *testing.B, base, user string) *api {
	resp, err := http.Get(base + "/api/dev/token?user=" + user)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	var t struct{ Token string }
	json.NewDecoder(resp.Body).Decode(&t)
	return &api{base: base + "/api", token: t.Token}
}

func (a *api) do(method, path string, body any) (int, []byte, error) {
	var r io.Reader
	if body != nil {
		p, _ := json.Marshal(body)
		r = bytes.NewReader(p)
	}
	req, _ := http.NewRequest(method, a.base+path, r)
	req.Header.Set("Authorization", "Bearer "+a.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out, nil
}

// startSession measures one start: API call to session_ready.
func startSession(a *api) (time.Duration, bool, string, error) {
	t0 := time.Now()
	status, body, err := a.do(http.MethodPost, "/sessions", map[string]any{})
	if err != nil || status != http.StatusCreated {
		return 0, false, "", fmt.Errorf("create: %d %s %v", status, body, err)
	}
	var s sessionapi.SessionObject
	json.Unmarshal(body, &s)
	c, _, err := websocket.DefaultDialer.Dial(s.RelayURL+"?ticket="+url.QueryEscape(s.Ticket), nil)
	if err != nil {
		return 0, false, "", err
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	for {
		var f struct {
			Type string `json:"type"`
			Warm bool   `json:"warm"`
		}
		if err := c.ReadJSON(&f); err != nil {
			return 0, false, "", err
		}
		if f.Type == wire.TypeSessionReady {
			return time.Since(t0), f.Warm, s.SessionID, nil
		}
	}
}

func percentile(d []time.Duration, p float64) float64 {
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(float64(len(s))*p+0.999999) - 1
	return float64(s[max(0, min(i, len(s)-1))].Microseconds()) / 1000
}

// BenchmarkSessionStart measures sessions from POST /sessions to
// session_ready over real sockets with real bridge processes and shells.
func BenchmarkSessionStart(b *testing.B) {
	for _, mode := range []struct {
		name string
		warm int
	}{{"cold", 0}, {"warm", 4}} {
		b.Run(mode.name, func(b *testing.B) {
			p := startProduct(b, mode.warm, "/bin/sh", "")
			a := newAPI(b, p.URL, "bench")
			for b.Loop() {
				var took []time.Duration
				warmCount := 0
				for i := 0; i < sessions; i++ {
					if mode.warm > 0 {
						waitWarm(b, p)
					}
					d, warm, id, err := startSession(a)
					if err != nil {
						b.Fatalf("session %d: %v", i, err)
					}
					took = append(took, d)
					if warm {
						warmCount++
					}
					// End it so that tasks do not pile up on the machine.
					if status, body, err := a.do(http.MethodDelete, "/sessions/"+id, nil); status != 204 {
						b.Fatalf("delete: %d %s %v", status, body, err)
					}
				}
				b.ReportMetric(percentile(took, 0.50), "p50-ms")
				b.ReportMetric(percentile(took, 0.99), "p99-ms")
				b.ReportMetric(float64(warmCount)/float64(sessions), "warm-fraction")
			}
		})
	}
}

// waitWarm waits, outside the measured time, for a warm task to be free:
// the benchmark measures a start from a pool that has one.
func waitWarm(b *testing.B, p *local.Product) {
	deadline := time.Now().Add(30 * time.Second)
	for p.Hub.Stats().WarmAvailable == 0 {
		if time.Now().After(deadline) {
			b.Fatal("no warm task within 30 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// BenchmarkRoundTrip compares a keystroke's round trip through the relay
// with a direct WebSocket echo on the same machine, all with the
// protocol's JSON frames:
//   - direct: client -> echo server -> client;
//   - relay: client -> relay -> echoing task socket -> relay -> client, the
//     relay's own cost;
//   - relay+bridge: client -> relay -> bridge -> agent (cat on pipes) ->
//     bridge -> relay -> client, what a user's keystroke takes;
//   - bridge: client -> bridge -> agent -> bridge -> client, the same task
//     reached directly, without the relay.
func BenchmarkRoundTrip(b *testing.B) {
	const trips = 2000
	direct := measureTrips(b, directEcho(b), trips)
	bridge := measureTrips(b, directBridge(b), trips)

	p := startProduct(b, 0, "cat", "pipes")
	relay := measureTrips(b, echoTaskSession(b, p), trips)

	a := newAPI(b, p.URL, "rtt")
	_, body, err := a.do(http.MethodPost, "/sessions", map[string]any{})
	if err != nil {
		b.Fatal(err)
	}
	var s sessionapi.SessionObject
	json.Unmarshal(body, &s)
	c := dialReady(b, s.RelayURL+"?ticket="+url.QueryEscape(s.Ticket))
	full := measureTrips(b, c, trips)

	for b.Loop() {
	}
	d50 := percentile(direct, 0.5)
	b.ReportMetric(d50*1000, "direct-p50-us")
	b.ReportMetric(percentile(relay, 0.5)*1000, "relay-p50-us")
	b.ReportMetric(percentile(full, 0.5)*1000, "relay+bridge-p50-us")
	b.ReportMetric(percentile(bridge, 0.5)*1000, "bridge-p50-us")
	b.ReportMetric(percentile(relay, 0.5)/d50, "relay/direct")
	b.ReportMetric(percentile(full, 0.5)/percentile(bridge, 0.5), "relay+bridge/bridge")
}

// directBridge starts a bridge process (agent cat on pipes) whose "relay"
// is a socket server here that hands the task socket to the benchmark,
// which then talks to the task directly.
func directBridge(b *testing.B) *websocket.Conn {
	got := make(chan *websocket.Conn, 1)
	up := websocket.Upgrader{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		got <- c
	}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv.Listener = ln
	srv.Start()
	b.Cleanup(srv.Close)

	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "bridge"))
	cmd.Env = append(os.Environ(), "RELAY_URL=ws://"+ln.Addr().String(), "TASK_ID=t_direct",
		"TASK_CREDENTIAL=unchecked", "SESSION_ID=s_direct", "USER_ID=direct",
		"WORKSPACE_ROOT="+buildtest.OpenTempDir(b), "AGENT_COMMAND=cat", "AGENT_MODE=pipes")
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cancel(); cmd.Wait() })
	var c *websocket.Conn
	select {
	case c = <-got:
	case <-time.After(10 * time.Second):
		b.Fatal("bridge did not connect")
	}
	b.Cleanup(func() { c.Close() })
	for {
		var f struct{ Type string }
		if err := c.ReadJSON(&f); err != nil {
			b.Fatal(err)
		}
		if f.Type == wire.TypeReady {
			return c
		}
	}
}

func dialReady(b *testing.B, u string) *websocket.Conn {
	c, _, err := websocket.DefaultDialer.Dial(u, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	for {
		var f struct{ Type string }
		if err := c.ReadJSON(&f); err != nil {
			b.Fatal(err)
		}
		if f.Type == wire.TypeSessionReady {
			return c
		}
	}
}

// echoTaskSession makes a session whose task is an echoing socket in this
// process, connected to the relay like a bridge, and returns its client.
func echoTaskSession(b *testing.B, p *local.Product) *websocket.Conn {
	ctx := context.Background()
	now := time.Now()
	rec, err := p.Store.CreateSession(ctx, session.Session{
		ID: session.NewID("s_"), UserID: "echo", State: session.StateStarting, RelayID: "relay-local",
		TaskID: "t_echo", CreatedAt: now, UpdatedAt: now,
	})
	if err != nil {
		b.Fatal(err)
	}
	cred, _, _ := ticket.NewKeyring(p.Keys.Task).Sign(ticket.Claims{Kind: ticket.KindTask, TaskID: "t_echo", SessionID: rec.ID}, now, time.Hour)
	h := http.Header{}
	h.Set("Authorization", "Bearer "+cred)
	task, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(p.URL, "http")+"/internal/task/"+rec.ID, h)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { task.Close() })
	task.WriteJSON(wire.Ready{Type: wire.TypeReady})
	go func() {
		for {
			var in wire.Inbound
			if err := task.ReadJSON(&in); err != nil {
				return
			}
			if in.Type == wire.TypeInput {
				if err := task.WriteJSON(wire.Output{Type: wire.TypeOutput, Data: in.Data}); err != nil {
					return
				}
			}
		}
	}()
	tk, _, _ := ticket.NewKeyring(p.Keys.Ticket).Sign(ticket.Claims{Kind: ticket.KindClient, UserID: "echo", SessionID: rec.ID}, now, time.Minute)
	return dialReady(b, strings.Replace(p.URL, "http", "ws", 1)+"/ws?ticket="+url.QueryEscape(tk))
}

// measureTrips sends keystrokes (no Enter, as most are) and waits for each
// echo.
func measureTrips(b *testing.B, c *websocket.Conn, n int) []time.Duration {
	var out []time.Duration
	for i := 0; i < n; i++ {
		want := "k" + strconv.Itoa(i) + ";"
		t0 := time.Now()
		if err := c.WriteJSON(wire.Input{Type: wire.TypeInput, Data: want}); err != nil {
			b.Fatal(err)
		}
		var got strings.Builder
		for !strings.Contains(got.String(), want) {
			var f struct{ Type, Data string }
			if err := c.ReadJSON(&f); err != nil {
				b.Fatal(err)
			}
			got.WriteString(f.Data)
		}
		out = append(out, time.Since(t0))
	}
	return out
}

// directEcho starts a WebSocket server that answers each input frame with
// an output frame of the same data, and returns a client of it.
func directEcho(b *testing.B) *websocket.Conn {
	up := websocket.Upgrader{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			var in wire.Inbound
			if err := c.ReadJSON(&in); err != nil {
				return
			}
			if err := c.WriteJSON(wire.Output{Type: wire.TypeOutput, Data: in.Data}); err != nil {
				return
			}
		}
	}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv.Listener = ln
	srv.Start()
	b.Cleanup(srv.Close)
	c, _, err := websocket.DefaultDialer.Dial("ws://"+ln.Addr().String(), nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return c
}

// BenchmarkIdleSessionMemory runs the relay as its own process (bin/relay,
// as `make run` does), attaches idle sessions, and reports the relay's
// resident memory per idle session and a bridge's resident memory.
func BenchmarkIdleSessionMemory(b *testing.B) {
	const n = 50
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cmd := exec.Command(filepath.Join(binDir, "relay"))
	cmd.Env = append(os.Environ(), "PORT="+strconv.Itoa(port), "DATA_DIR="+buildtest.OpenTempDir(b),
		"ENABLE_WARM_POOL=false", "AGENT_COMMAND=/bin/sh", "LOG_LEVEL=warn")
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
	})
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	deadline := time.Now().Add(20 * time.Second)
	for {
		if resp, err := http.Get(base + "/healthz"); err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("relay did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
	before := rss(b, cmd.Process.Pid)

	var conns []*websocket.Conn
	for i := 0; i < n; i++ {
		a := newAPI(b, base, "idle"+strconv.Itoa(i))
		_, body, err := a.do(http.MethodPost, "/sessions", map[string]any{})
		if err != nil {
			b.Fatal(err)
		}
		var s sessionapi.SessionObject
		json.Unmarshal(body, &s)
		c, _, err := websocket.DefaultDialer.Dial(s.RelayURL+"?ticket="+url.QueryEscape(s.Ticket), nil)
		if err != nil {
			b.Fatal(err)
		}
		conns = append(conns, c)
		for {
			var f struct{ Type string }
			if err := c.ReadJSON(&f); err != nil {
				b.Fatal(err)
			}
			if f.Type == wire.TypeSessionReady {
				break
			}
		}
	}
	after := rss(b, cmd.Process.Pid)
	bridges := bridgeRSS(b, cmd.Process.Pid)
	for _, c := range conns {
		c.Close()
	}
	for b.Loop() {
	}
	b.ReportMetric(float64(after-before)/n/1024, "relay-KiB/session")
	b.ReportMetric(bridges/1024, "bridge-KiB/task")
}

// rss reads a process's resident set size in bytes.
func rss(b *testing.B, pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb * 1024
		}
	}
	b.Fatalf("no VmRSS for %d", pid)
	return 0
}

// bridgeRSS averages the resident size of the relay's child bridges (the
// children of any of its threads: bridges are started from locked threads).
func bridgeRSS(b *testing.B, relayPid int) float64 {
	files, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", relayPid))
	var total, count float64
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(data)) {
			pid, _ := strconv.Atoi(f)
			total += float64(rss(b, pid))
			count++
		}
	}
	if count == 0 {
		return 0
	}
	return total / count
}
