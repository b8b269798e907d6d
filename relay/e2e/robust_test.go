package e2e

import (
	"context"
	"github.com/aishell/aishell/relay/internal/buildtest"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/aishell/aishell/relay/hub"
	"github.com/aishell/aishell/relay/wire"
	"github.com/aishell/aishell/shared/session"
	"github.com/aishell/aishell/shared/ticket"
)

func TestEarlyTaskIsHeldNotDropped(t *testing.T) {
	p := startProduct(t, options{hold: 2 * time.Second})
	api := newAPIClient(t, p.URL, "gina")
	s := api.create()
	dial(t, s).waitReady(wait)
	ctx := context.Background()

	// A task whose session names it only after it connected is held, then
	// accepted.
	cred := taskCredential(t, p.Keys.Task, "t_early", s.SessionID)
	early := dialTask(t, p.URL, "/internal/task/"+s.SessionID, cred)
	rec, err := p.Store.GetSession(ctx, s.SessionID)
	if err != nil {
		t.Fatal(err)
	}
	rec.TaskID = "t_early"
	if _, err := p.Store.UpdateSession(ctx, rec); err != nil {
		t.Fatal(err)
	}
	p.Hub.SessionChanged(s.SessionID)
	early.WriteJSON(wire.Ready{Type: wire.TypeReady})
	eventually(t, wait, "held task accepted as the session's", func() bool {
		got, _ := p.Store.GetSession(ctx, s.SessionID)
		return got.TaskID == "t_early" && got.State == session.StateReady
	})

	// A task that no session ever names is closed with 1008 after the hold.
	start := time.Now()
	never := dialTask(t, p.URL, "/internal/task/"+s.SessionID, taskCredential(t, p.Keys.Task, "t_never", s.SessionID))
	if code := readUntilClose(never); code != hub.ClosePolicy {
		t.Errorf("unknown task closed with %d; want 1008", code)
	}
	if took := time.Since(start); took < 2*time.Second {
		t.Errorf("unknown task closed after %s; want the 2 s hold", took)
	}
	if got := findLog(logLines(t, p), map[string]any{"event": "task_rejected", "reason": "unknown_session"}); len(got) != 1 {
		t.Errorf("task_rejected unknown_session lines: %d; want 1", len(got))
	}
}

func taskCredential(t *testing.T, key []byte, taskID, sessionID string) string {
	t.Helper()
	tok, _, err := ticket.NewKeyring(key).Sign(ticket.Claims{Kind: ticket.KindTask, TaskID: taskID, SessionID: sessionID},
		time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func dialTask(t *testing.T, base, path, cred string) *websocket.Conn {
	t.Helper()
	u := "ws" + strings.TrimPrefix(base, "http") + path
	h := http.Header{}
	h.Set("Authorization", "Bearer "+cred)
	c, _, err := websocket.DefaultDialer.Dial(u, h)
	if err != nil {
		t.Fatalf("dial %s: %v", path, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func readUntilClose(c *websocket.Conn) int {
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	for {
		if _, _, err := c.ReadMessage(); err != nil {
			if ce, ok := err.(*websocket.CloseError); ok {
				return ce.Code
			}
			return -1
		}
	}
}

func TestResumeWhileStoppingNeverYieldsTwoTasks(t *testing.T) {
	// An agent that ignores hang-up and terminate makes its task slow to
	// stop (the bridge's grace period), so the resume lands mid-stop.
	dir := buildtest.OpenTempDir(t)
	agent := dir + "/stubborn.sh"
	os.WriteFile(agent, []byte("#!/bin/sh\ntrap '' HUP TERM\nexec /bin/sh -i\n"), 0o755)
	p := startProduct(t, options{agent: agent, idle: 300 * time.Millisecond})
	ctx := context.Background()
	api := newAPIClient(t, p.URL, "hank")
	s := api.create()
	c := dial(t, s)
	c.waitReady(wait)
	old, _ := p.Store.GetSession(ctx, s.SessionID)
	c.close()

	eventually(t, wait, "idle stop under way", func() bool {
		st, _ := p.Runner.Describe(ctx, old.TaskHandle)
		return st.State == session.TaskStopping
	})
	again := dial(t, api.resume(s.SessionID))
	again.waitReady(wait)

	cur, _ := p.Store.GetSession(ctx, s.SessionID)
	if cur.TaskHandle == old.TaskHandle {
		t.Fatalf("resume kept the stopping task %s", old.TaskHandle)
	}
	oldSt, _ := p.Runner.Describe(ctx, old.TaskHandle)
	newSt, _ := p.Runner.Describe(ctx, cur.TaskHandle)
	if oldSt.State != session.TaskStopped || oldSt.StoppedAt.After(newSt.CreatedAt) {
		t.Errorf("old task %s (stopped at %s) overlapped the new one (created %s)",
			oldSt.State, oldSt.StoppedAt.Format(time.StampMicro), newSt.CreatedAt.Format(time.StampMicro))
	}
}

func TestRestartGuardHoldsWhenSocketReattaches(t *testing.T) {
	p := startProduct(t, options{idle: 200 * time.Millisecond})
	ctx := context.Background()
	api := newAPIClient(t, p.URL, "iris")
	s := api.create()
	c := dial(t, s)
	c.waitReady(wait)
	c.input("kill -9 $$\r")
	c.waitFor(0, wait, "status restarting", func(f frame) bool {
		return f.Type == wire.TypeStatus && f.State == wire.StateRestarting
	})
	// Detach and re-attach while the restart runs.
	c.close()
	again := dial(t, api.resume(s.SessionID))
	again.waitReady(wait)
	again.input("echo alive-$((5+5))\r")
	again.waitOutput("alive-10", wait)

	cur, _ := p.Store.GetSession(ctx, s.SessionID)
	st, _ := p.Runner.Describe(ctx, cur.TaskHandle)
	if st.State != session.TaskRunning {
		t.Errorf("new task is %s (%s); want RUNNING", st.State, st.StopReason)
	}
	// The restart's line follows its status frames: wait for it.
	eventually(t, wait, "the restart logged", func() bool {
		return len(findLog(logLines(t, p), map[string]any{"phase": "task_restart"})) > 0
	})
	if got := findLog(logLines(t, p), map[string]any{"event": "task_lifecycle", "phase": "task_restart"}); len(got) != 1 {
		t.Errorf("restarts logged: %d; want exactly 1", len(got))
	}
}

func TestIdleStopThenComeBack(t *testing.T) {
	p := startProduct(t, options{idle: 300 * time.Millisecond})
	ctx := context.Background()
	api := newAPIClient(t, p.URL, "jack")
	s := api.create()
	c := dial(t, s)
	c.waitReady(wait)
	c.input("echo kept > f.txt; echo ok-$((2*2))\r")
	c.waitOutput("ok-4", wait)
	first, _ := p.Store.GetSession(ctx, s.SessionID)
	c.close()

	eventually(t, wait, "idle task stopped", func() bool {
		st, _ := p.Runner.Describe(ctx, first.TaskHandle)
		return st.State == session.TaskStopped
	})
	if st, _ := p.Runner.Describe(ctx, first.TaskHandle); !strings.Contains(st.StopReason, "idle") {
		t.Errorf("stop reason %q does not name idleness", st.StopReason)
	}

	again := dial(t, api.resume(s.SessionID))
	again.waitReady(wait)
	again.input("cat f.txt\r")
	again.waitOutput("kept", wait)
}

func TestBadInputGetsCodesAndNothingCrashes(t *testing.T) {
	p := startProduct(t, options{})
	api := newAPIClient(t, p.URL, "kate")
	s := api.create()
	c := dial(t, s)
	c.waitReady(wait)

	c.conn.WriteMessage(websocket.TextMessage, []byte("{not json"))
	c.waitError(wire.CodeBadMessage, wait)
	c.send(map[string]any{"type": "launch_missiles"})
	_, n := c.waitFor(0, wait, "second BAD_MESSAGE", func(f frame) bool { return false || f.Type == wire.TypeError })
	c.waitFor(n, wait, "BAD_MESSAGE for unknown type", func(f frame) bool {
		return f.Type == wire.TypeError && strings.Contains(f.Error.Message, "launch_missiles")
	})
	c.send(map[string]any{"type": "ping"})
	c.waitFor(0, wait, "pong", func(f frame) bool { return f.Type == wire.TypePong })

	c.input(strings.Repeat("x", 70<<10))
	c.waitError(wire.CodeMessageTooLarge, wait)
	if code := c.waitClosed(wait); code != hub.CloseTooLarge {
		t.Errorf("oversized frame closed with %d; want 1009", code)
	}

	// Forged and expired tickets.
	for _, tc := range []struct {
		name, ticket, code string
	}{
		{"forged", "v1.e30.AAAA", wire.CodeUnauthorized},
		{"garbage", "hello", wire.CodeUnauthorized},
		{"expired", expiredTicket(t, p.Keys.Ticket, s.SessionID), wire.CodeTicketExpired},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := s.RelayURL + "?ticket=" + url.QueryEscape(tc.ticket)
			bad, err := dialURL(t, u)
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			bad.waitError(tc.code, wait)
			if code := bad.waitClosed(wait); code != hub.ClosePolicy {
				t.Errorf("close code %d; want 1008", code)
			}
		})
	}

	// A forged task credential is refused with 1008.
	forged := taskCredential(t, []byte("not the relay's key, not at all!"), "t_x", s.SessionID)
	if code := readUntilClose(dialTask(t, p.URL, "/internal/task/"+s.SessionID, forged)); code != hub.ClosePolicy {
		t.Errorf("forged task credential closed with %d; want 1008", code)
	}
	if got := findLog(logLines(t, p), map[string]any{"event": "task_rejected", "reason": "bad_credential"}); len(got) != 1 {
		t.Errorf("task_rejected bad_credential lines: %d; want 1", len(got))
	}

	// The session API refuses bad calls with their codes.
	other := newAPIClient(t, p.URL, "mallory")
	for _, tc := range []struct {
		name   string
		client *apiClient
		method string
		path   string
		body   any
		status int
	}{
		{"someone else's session", other, http.MethodGet, "/sessions/" + s.SessionID, nil, 403},
		{"resume someone else's", other, http.MethodPost, "/sessions", map[string]any{"resume": s.SessionID}, 403},
		{"no such session", api, http.MethodGet, "/sessions/s_nope", nil, 404},
		{"malformed body", api, http.MethodPost, "/sessions", "not an object", 400},
		{"unknown field", api, http.MethodPost, "/sessions", map[string]any{"resum": "x"}, 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if status, body := tc.client.call(tc.method, tc.path, tc.body); status != tc.status {
				t.Errorf("status %d (%s); want %d", status, body, tc.status)
			}
		})
	}
	noAuth, _ := http.Post(p.URL+"/api/sessions", "application/json", strings.NewReader("{}"))
	if noAuth.StatusCode != 401 {
		t.Errorf("no token: status %d; want 401", noAuth.StatusCode)
	}
	noAuth.Body.Close()

	// And the relay still serves.
	fresh := dial(t, api.resume(s.SessionID))
	fresh.waitReady(wait)
}

func expiredTicket(t *testing.T, key []byte, sessionID string) string {
	t.Helper()
	tok, _, err := ticket.NewKeyring(key).Sign(ticket.Claims{Kind: ticket.KindClient, UserID: "kate", SessionID: sessionID},
		time.Now().Add(-2*time.Minute), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestOneUserCannotReadAnothersWorkspace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("per-user uids need root; CI runs as root")
	}
	p := startProduct(t, options{})
	bob := dial(t, newAPIClient(t, p.URL, "bob").create())
	bob.waitReady(wait)
	bob.input("echo top-secret > secret.txt; pwd; echo done-$((1+1))\r")
	bob.waitOutput("done-2", wait)

	alice := dial(t, newAPIClient(t, p.URL, "alice").create())
	alice.waitReady(wait)
	alice.input("cat ../bob/secret.txt; ls ../bob; ls ..; echo uid=$(id -u) end-$((6*7))\r")
	alice.waitOutput("end-42", wait)
	out := alice.output()
	if strings.Contains(out, "top-secret\r\n") || strings.Count(out, "Permission denied") < 2 {
		t.Errorf("alice could reach bob's workspace; output: %q", out)
	}
	if strings.Contains(out, "uid=0") {
		t.Errorf("alice's agent runs as root; output: %q", out)
	}

	// Nor can her agent sign in as bob through the development tokens.
	alice.input("curl -s -o /dev/null -w 'signin=%{http_code}' '" + p.URL + "/api/dev/token?user=bob'; echo\r")
	alice.waitOutput("signin=", wait)
	alice.waitFor(0, wait, "the sign-in's answer", func(f frame) bool { return strings.Contains(f.Data, "signin=") && !strings.Contains(f.Data, "curl") })
	if out := alice.output(); !strings.Contains(out, "signin=403") {
		t.Errorf("an agent signed in as another user; output: %q", out)
	}
}

func TestOnlyLoopbackNamesAreServed(t *testing.T) {
	p := startProduct(t, options{})
	for _, tc := range []struct {
		host   string
		status int
	}{
		{"127.0.0.1", 200},
		{"localhost", 200},
		{"evil.example", http.StatusMisdirectedRequest},
	} {
		req, _ := http.NewRequest(http.MethodGet, p.URL+"/api/dev/token?user=x", nil)
		req.Host = tc.host + p.URL[strings.LastIndex(p.URL, ":"):]
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("Host %s: status %d; want %d", req.Host, resp.StatusCode, tc.status)
		}
	}

	// A page from another origin may not open the client socket; one
	// served as localhost may, though the socket URL says 127.0.0.1.
	s := newAPIClient(t, p.URL, "nina").create()
	port := p.URL[strings.LastIndex(p.URL, ":"):]
	for origin, ok := range map[string]bool{"http://evil.example" + port: false, "http://localhost" + port: true} {
		h := http.Header{}
		h.Set("Origin", origin)
		c, _, err := websocket.DefaultDialer.Dial(s.RelayURL+"?ticket="+url.QueryEscape(s.Ticket), h)
		if (err == nil) != ok {
			t.Errorf("origin %s: dial error %v; want allowed %v", origin, err, ok)
		}
		if c != nil {
			c.Close()
		}
	}
}

func TestShutdownTellsClientsToReconnect(t *testing.T) {
	p := startProduct(t, options{})
	c := dial(t, newAPIClient(t, p.URL, "lena").create())
	c.waitReady(wait)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := p.Close(ctx); err != nil {
		t.Fatalf("close: %v", err)
	}
	c.waitError(wire.CodeRelayShuttingDown, wait)
	if code := c.waitClosed(wait); code != hub.CloseGoingAway {
		t.Errorf("close code %d; want 1001", code)
	}
}

func TestEveryLogLineIsStructured(t *testing.T) {
	p := startProduct(t, options{warm: 1})
	api := newAPIClient(t, p.URL, "mona")
	c := dial(t, api.create())
	c.waitReady(wait)
	c.input("echo hi\r")
	c.waitOutput("hi", wait)
	c.close()
	eventually(t, wait, "ws_disconnect logged", func() bool {
		return len(findLog(logLines(t, p), map[string]any{"phase": "ws_disconnect"})) > 0
	})

	lines := logLines(t, p)
	for _, l := range lines {
		for _, k := range []string{"timestamp", "level", "service", "message", "event"} {
			if _, ok := l[k]; !ok {
				t.Errorf("log line without %q: %v", k, l)
			}
		}
	}
	for _, ph := range []string{"task_start", "task_ready", "session_create", "ws_disconnect", "message_roundtrip"} {
		if got := findLog(lines, map[string]any{"event": "task_lifecycle", "phase": ph}); len(got) == 0 {
			t.Errorf("no task_lifecycle phase %s logged", ph)
		}
	}
	ready := findLog(lines, map[string]any{"event": "task_lifecycle", "phase": "task_ready"})
	if len(ready) > 0 {
		if _, ok := ready[0]["breakdown"].(map[string]any); !ok {
			t.Errorf("task_ready without breakdown: %v", ready[0])
		}
	}
	// The relay's lines of a session carry the trace of its start (R16).
	created := findLog(lines, map[string]any{"event": "session_created"})
	if len(created) != 1 || created[0]["traceId"] == nil {
		t.Fatalf("session_created lines %v; want one with a traceId", created)
	}
	for _, ph := range []string{"ws_disconnect", "session_create", "task_ready"} {
		got := findLog(lines, map[string]any{"phase": ph, "sessionId": created[0]["sessionId"]})
		if len(got) == 0 || got[0]["traceId"] != created[0]["traceId"] {
			t.Errorf("%s lines %v; want the session's trace %v", ph, got, created[0]["traceId"])
		}
	}
	for _, ev := range []string{"session_created", "relay_started", "warm_pool", "user_message"} {
		if got := findLog(lines, map[string]any{"event": ev}); len(got) == 0 {
			t.Errorf("no %s event logged", ev)
		}
	}
}
