package e2e

import (
	"context"
	"github.com/aishell/aishell/relay/internal/buildtest"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aishell/aishell/relay/local"
	"github.com/aishell/aishell/relay/wire"
	"github.com/aishell/aishell/shared/session"
)

const wait = 10 * time.Second

func TestCommandOutputComesBack(t *testing.T) {
	p := startProduct(t, options{})
	api := newAPIClient(t, p.URL, "alice")
	s := api.create()
	if s.State != "starting" || s.Warm {
		t.Errorf("new session state %q warm %v; want starting, cold", s.State, s.Warm)
	}
	c := dial(t, s)
	ready := c.waitReady(wait)
	if ready.SessionID != s.SessionID || ready.Resumed {
		t.Errorf("session_ready %+v; want session %s, not resumed", ready, s.SessionID)
	}
	c.input("echo hello-$((40+2))\r")
	c.waitOutput("hello-42", wait)

	status, body := api.call(http.MethodGet, "/sessions/"+s.SessionID, nil)
	if status != http.StatusOK || !strings.Contains(string(body), `"state":"ready"`) {
		t.Errorf("GET session: %d %s; want 200 and state ready", status, body)
	}
}

func TestWarmAndColdStartsAndPoolRefills(t *testing.T) {
	p := startProduct(t, options{warm: 2})
	ctx := context.Background()
	eventually(t, wait, "two warm tasks available", func() bool {
		return countWarm(t, p.Store, session.WarmAvailable) == 2
	})

	var sessions []*wsClient
	for i, want := range []bool{true, true, false} {
		api := newAPIClient(t, p.URL, "user"+string(rune('a'+i)))
		// Claim faster than the pool refills: the third start is cold
		// unless a new warm task already connected.
		s := api.create()
		c := dial(t, s)
		ready := c.waitReady(wait)
		if i < 2 && !ready.Warm {
			t.Errorf("start %d: warm %v; want %v", i, ready.Warm, want)
		}
		c.input("echo up-$((1+1))\r")
		c.waitOutput("up-2", wait)
		sessions = append(sessions, c)
	}
	eventually(t, 3*wait, "pool refilled to two", func() bool {
		return countWarm(t, p.Store, session.WarmAvailable) == 2
	})
	list, _ := p.Store.ListSessions(ctx)
	if len(list) != 3 {
		t.Errorf("sessions stored: %d; want 3", len(list))
	}
}

func countWarm(t *testing.T, st session.Store, state session.WarmState) int {
	t.Helper()
	list, err := st.ListWarmTasks(context.Background(), "relay-local")
	if err != nil {
		t.Fatalf("list warm tasks: %v", err)
	}
	n := 0
	for _, w := range list {
		if w.State == state {
			n++
		}
	}
	return n
}

func TestColdStartWithPoolOff(t *testing.T) {
	p := startProduct(t, options{warm: 0})
	api := newAPIClient(t, p.URL, "bob")
	s := api.create()
	if s.Warm {
		t.Errorf("warm start with the pool off")
	}
	c := dial(t, s)
	if ready := c.waitReady(wait); ready.Warm {
		t.Errorf("session_ready warm with the pool off")
	}
}

func TestDisconnectAndResumeReturnToTheSameShell(t *testing.T) {
	p := startProduct(t, options{})
	api := newAPIClient(t, p.URL, "carol")
	s := api.create()
	c := dial(t, s)
	c.waitReady(wait)
	c.input("MARK=kept-$((6*7)); echo pid=$$ set\r")
	c.waitOutput("set", wait)
	c.close()

	again := dial(t, api.resume(s.SessionID))
	ready := again.waitReady(wait)
	if !ready.Resumed {
		t.Errorf("session_ready resumed %v; want true", ready.Resumed)
	}
	again.input("echo $MARK\r")
	again.waitOutput("kept-42", wait)
}

func TestOutputWhileAwayIsDeliveredOnReturn(t *testing.T) {
	p := startProduct(t, options{})
	api := newAPIClient(t, p.URL, "dave")
	s := api.create()
	c := dial(t, s)
	c.waitReady(wait)
	c.input("sleep 1; echo later-$((2+3))\r")
	eventually(t, wait, "relay sees the agent busy", func() bool { return busy(p, s.SessionID) })
	c.close()

	// Resume after the output was produced (kept by the relay).
	eventually(t, wait, "output kept for the absent client", func() bool {
		for _, info := range p.Hub.Sessions() {
			if info.ID == s.SessionID && !info.Client && info.KeptBytes > 0 && !info.Busy {
				return true
			}
		}
		return false
	})
	again := dial(t, api.resume(s.SessionID))
	again.waitOutput("later-5", wait)
	lines := logLines(t, p)
	if got := findLog(lines, map[string]any{"event": "task_lifecycle", "phase": "ws_disconnect", "processingState": "processing"}); len(got) == 0 {
		t.Errorf("no ws_disconnect with processingState processing logged")
	}
}

func TestKilledAgentRestartsAndKeepsWorkspace(t *testing.T) {
	p := startProduct(t, options{})
	api := newAPIClient(t, p.URL, "erin")
	s := api.create()
	c := dial(t, s)
	c.waitReady(wait)
	c.input("echo precious > notes.txt; echo wrote-$((1+1))\r")
	c.waitOutput("wrote-2", wait)
	c.input("kill -9 $$\r")

	_, next := c.waitFor(0, wait, "status restarting", func(f frame) bool {
		return f.Type == wire.TypeStatus && f.State == wire.StateRestarting
	})
	// session_ready comes once per attach; a restart ends in status ready.
	c.waitFor(next, wait, "status ready after restart", func(f frame) bool {
		return f.Type == wire.TypeStatus && f.State == wire.StateReady
	})
	c.input("cat notes.txt\r")
	c.waitOutput("precious", wait)

	eventually(t, wait, "the restart logged", func() bool {
		return len(findLog(logLines(t, p), map[string]any{"phase": "task_restart"})) > 0
	})
	lines := logLines(t, p)
	if got := findLog(lines, map[string]any{"event": "task_lifecycle", "phase": "task_restart", "success": true}); len(got) != 1 {
		t.Errorf("task_restart success lines: %d; want 1", len(got))
	}
}

func TestAgentThatCannotStartFailsRestartWithReason(t *testing.T) {
	// The agent is a script that the test deletes once the first task
	// runs, so the restart's agent cannot start.
	dir := buildtest.OpenTempDir(t)
	agent := filepath.Join(dir, "agent.sh")
	if err := os.WriteFile(agent, []byte("#!/bin/sh\nexec /bin/sh -i\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	p := startProduct(t, options{agent: agent})
	api := newAPIClient(t, p.URL, "frank")
	c := dial(t, api.create())
	c.waitReady(wait)
	c.input("echo armed-$((3*3))\r")
	c.waitOutput("armed-9", wait)
	if err := os.Remove(agent); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	c.input("kill -9 $$\r")
	f := c.waitError(wire.CodeTaskRestartFailed, 30*time.Second)
	if took := time.Since(start); took > 15*time.Second {
		t.Errorf("TASK_RESTART_FAILED after %s; want well inside 30 s", took)
	}
	if !strings.Contains(f.Error.Message, "agent.sh") {
		t.Errorf("error message %q does not name the cause (the missing agent.sh)", f.Error.Message)
	}
	c.waitFor(0, wait, "status stopped", func(f frame) bool { return f.Type == wire.TypeStatus && f.State == wire.StateStopped })
}

// busy reports whether the relay sees the session's agent processing.
func busy(p *local.Product, id string) bool {
	for _, s := range p.Hub.Sessions() {
		if s.ID == id {
			return s.Busy
		}
	}
	return false
}
