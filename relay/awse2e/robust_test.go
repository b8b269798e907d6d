package awse2e

import (
	"context"
	"encoding/json"
	"github.com/aishell/aishell/relay/internal/buildtest"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/aishell/aishell/relay/hub"
	"github.com/aishell/aishell/relay/wire"
	"github.com/aishell/aishell/shared/session"
	"github.com/aishell/aishell/shared/sessionapi"
)

func TestOutputWhileAwayIsDeliveredOnReturn(t *testing.T) {
	p := newProduct(t, options{})
	r := p.startRelay("a", 0)

	s := p.create("kate")
	c := dial(t, s)
	c.ready()
	c.input("sleep 1; echo later-$((2+3))\r")
	eventually(t, frameWait, "the relay sees the agent busy", func() bool {
		return sessionInfo(r, s.SessionID).Busy
	})
	c.close()
	eventually(t, frameWait, "the command finished and its output kept", func() bool {
		info := sessionInfo(r, s.SessionID)
		return !info.Busy && info.KeptBytes > 0
	})

	again := dial(t, p.resume("kate", s.SessionID))
	again.sees("later-5")
	p.logs.waitMatching(t, map[string]any{"event": "task_lifecycle", "phase": "ws_disconnect",
		"processingState": "processing"})
}

func TestResumeWhileStoppingNeverYieldsTwoTasks(t *testing.T) {
	// An agent that ignores hang-up and terminate keeps its bridge in its
	// grace period after an idle stop, so the resume lands mid-stop.
	agent := filepath.Join(buildtest.OpenTempDir(t), "stubborn.sh")
	script := "#!/bin/sh\ntrap '' HUP TERM\nexec /bin/sh -i\n"
	if err := os.WriteFile(agent, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	p := newProduct(t, options{agent: agent, idle: 300 * time.Millisecond})
	p.startRelay("a", 0)
	// Its calls are the test's own, and go unrecorded.
	observer := p.fleet.runner(base)
	ctx := context.Background()

	s := p.create("liam")
	c := dial(t, s)
	c.ready()
	old := p.session(s.SessionID)
	c.close()
	eventually(t, frameWait, "the idle stop under way", func() bool {
		st, err := observer.Describe(ctx, old.TaskHandle)
		return err == nil && st.State == session.TaskStopping
	})

	again := dial(t, p.resume("liam", s.SessionID))
	again.ready()
	cur := p.session(s.SessionID)
	if cur.TaskHandle == old.TaskHandle {
		t.Fatalf("resume kept the stopping task %s", old.TaskHandle)
	}
	oldSt, err := observer.Describe(ctx, old.TaskHandle)
	if err != nil {
		t.Fatal(err)
	}
	newSt, err := observer.Describe(ctx, cur.TaskHandle)
	if err != nil {
		t.Fatal(err)
	}
	if oldSt.State != session.TaskStopped || oldSt.StoppedAt.After(newSt.CreatedAt) {
		t.Errorf("old task %s (stopped at %s) overlapped the new one (created at %s)", oldSt.State,
			oldSt.StoppedAt.Format(time.StampMicro), newSt.CreatedAt.Format(time.StampMicro))
	}
}

func TestRestartGuardHoldsWhenSocketReattaches(t *testing.T) {
	p := newProduct(t, options{idle: 200 * time.Millisecond})
	p.startRelay("a", 0)
	observer := p.fleet.runner(base)

	s := p.create("mia")
	c := dial(t, s)
	c.ready()
	c.input("kill -9 $$\r")
	c.status(wire.StateRestarting)
	// Detach and re-attach while the restart runs.
	c.close()
	again := dial(t, p.resume("mia", s.SessionID))
	again.ready()
	again.input("echo alive-$((5+5))\r")
	again.sees("alive-10")

	cur := p.session(s.SessionID)
	st, err := observer.Describe(context.Background(), cur.TaskHandle)
	if err != nil || st.State != session.TaskRunning {
		t.Errorf("new task is %s (%q, %v); want RUNNING", st.State, st.StopReason, err)
	}
	restarts := p.logs.waitMatching(t, map[string]any{"service": "relay", "event": "task_lifecycle",
		"phase": "task_restart"})
	if len(restarts) != 1 {
		t.Errorf("restarts logged: %d; want exactly 1", len(restarts))
	}
}

func TestRelayShutdownTellsClientsToReconnect(t *testing.T) {
	p := newProduct(t, options{})
	r := p.startRelay("a", 0)

	c := dial(t, p.create("nora"))
	c.ready()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := r.Close(ctx); err != nil {
		t.Fatalf("close the relay: %v", err)
	}
	c.failure(wire.CodeRelayShuttingDown)
	if code := c.closedWith(); code != hub.CloseGoingAway {
		t.Errorf("client socket closed with %d; want %d", code, hub.CloseGoingAway)
	}

	// The relay withdrew its record: no new session goes to it.
	if hb := p.heartbeat(r); !hb.IsZero() {
		t.Errorf("closed relay still on record, heartbeat %s", hb)
	}
	resp := p.call("olga", http.MethodPost, "/sessions", "{}")
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("create with the only relay gone: %d %s; want 503", resp.StatusCode, resp.Body)
	}
}

func TestClientOfAClosedRelayResumesOnAnother(t *testing.T) {
	p := newProduct(t, options{})
	first := p.startRelay("a", 0)
	s := p.create("pia")
	c := dial(t, s)
	c.ready()
	c.input("echo safe > kept.txt; echo stored-$((4+4))\r")
	c.sees("stored-8")
	second := p.startRelay("b", 0)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := first.Close(ctx); err != nil {
		t.Fatalf("close relay a: %v", err)
	}
	c.failure(wire.CodeRelayShuttingDown)

	resp := p.call("pia", http.MethodPost, "/sessions", `{"resume":"`+s.SessionID+`"}`)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("resume after its relay closed: %d %s; want 200", resp.StatusCode, resp.Body)
	}
	var moved sessionapi.SessionObject
	if err := json.Unmarshal([]byte(resp.Body), &moved); err != nil {
		t.Fatal(err)
	}
	if moved.RelayURL != second.clientURL {
		t.Errorf("resumed on %s; want the healthy relay %s", moved.RelayURL, second.clientURL)
	}
	again := dial(t, moved)
	again.expectWithin(30*time.Second, "session_ready", func(f frame) bool {
		return f.is(wire.TypeSessionReady)
	})
	again.input("cat kept.txt\r")
	again.sees("safe")
}

// sessionInfo returns what a relay's hub knows of a session.
func sessionInfo(r *relayUnderTest, id string) hub.SessionInfo {
	for _, s := range r.Hub.Sessions() {
		if s.ID == id {
			return s
		}
	}
	return hub.SessionInfo{}
}
