package awse2e

import (
	"context"
	"encoding/json"
	"github.com/aishell/aishell/relay/internal/buildtest"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	ecstypes "github.com/aws/aws-sdk-go-v2/service/ecs/types"
	"github.com/gorilla/websocket"

	"github.com/aishell/aishell/relay/wire"
	"github.com/aishell/aishell/shared/awsops"
	"github.com/aishell/aishell/shared/ecsrunner"
	"github.com/aishell/aishell/shared/session"
	"github.com/aishell/aishell/shared/sessionapi"
	"github.com/aishell/aishell/shared/workspace"
)

func TestCommandOutputComesBack(t *testing.T) {
	p := newProduct(t, options{})
	r := p.startRelay("a", 0)

	s := p.create("alice")
	if s.State != string(session.StateStarting) || s.Warm || s.RelayURL != r.clientURL {
		t.Errorf("new session: state %q, warm %v, relay %q; want starting, cold, %q",
			s.State, s.Warm, s.RelayURL, r.clientURL)
	}
	rec := p.session(s.SessionID)
	if rec.RelayID != r.id {
		t.Errorf("session given to relay %q; want %q, the one relay with a heartbeat", rec.RelayID, r.id)
	}
	task := p.ecsTask(rec.TaskHandle)
	if by := aws.ToString(task.StartedBy); by != s.SessionID {
		t.Errorf("ECS task started by %q; want the session %s", by, s.SessionID)
	}
	def := aws.ToString(task.TaskDefinitionArn)
	if !strings.Contains(def, "/"+cluster.taskDefinition+":") {
		t.Errorf("ECS task runs %s; want the fixed task definition %s", def, cluster.taskDefinition)
	}

	c := dial(t, s)
	if ready := c.ready(); ready.SessionID != s.SessionID || ready.Warm || ready.Resumed {
		t.Errorf("session_ready %s; want session %s, cold, not resumed", ready.text, s.SessionID)
	}
	c.input("echo hello-$((40+2))\r")
	c.sees("hello-42")

	resp := p.call("alice", http.MethodGet, "/sessions/"+s.SessionID, "")
	var got sessionapi.SessionObject
	json.Unmarshal([]byte(resp.Body), &got)
	if resp.StatusCode != http.StatusOK || got.State != string(session.StateReady) {
		t.Errorf("GET the session: %d %s; want 200 and state ready", resp.StatusCode, resp.Body)
	}
}

func TestWarmStartIsClaimedThroughTheRelay(t *testing.T) {
	p := newProduct(t, options{warm: true})
	r := p.startRelay("a", 0)
	ctx := context.Background()

	if acts := p.refill(r, 1); acts.Start != 1 {
		t.Fatalf("refill planned %d starts; want 1", acts.Start)
	}
	var warm session.WarmTask
	eventually(t, frameWait, "the warm task's bridge connected to the relay", func() bool {
		list, err := p.inspect.ListWarmTasks(ctx, r.id)
		if err != nil || len(list) != 1 || list[0].State != session.WarmAvailable {
			return false
		}
		warm = list[0]
		return true
	})
	if by := aws.ToString(p.ecsTask(warm.Handle).StartedBy); by != ecsrunner.StartedByWarm {
		t.Errorf("warm ECS task started by %q; want %q", by, ecsrunner.StartedByWarm)
	}

	s := p.create("bob")
	if !s.Warm {
		t.Errorf("session object warm %v; want true, a warm task was free", s.Warm)
	}
	if rec := p.session(s.SessionID); rec.TaskID != warm.ID || rec.TaskHandle != warm.Handle {
		t.Errorf("session runs task %s (%s); want the warm task %s (%s)",
			rec.TaskID, rec.TaskHandle, warm.ID, warm.Handle)
	}
	c := dial(t, s)
	if ready := c.ready(); !ready.Warm {
		t.Errorf("session_ready %s; want warm true", ready.text)
	}
	c.input("echo warm-$((3*5))\r")
	c.sees("warm-15")
	eventually(t, frameWait, "the claimed warm task's record removed", func() bool {
		list, err := p.inspect.ListWarmTasks(ctx, r.id)
		return err == nil && len(list) == 0
	})
}

func TestDisconnectAndResumeReturnToTheSameShell(t *testing.T) {
	p := newProduct(t, options{})
	p.startRelay("a", 0)

	s := p.create("carol")
	c := dial(t, s)
	c.ready()
	c.input("MARK=kept-$((6*7)); echo marked-$((1+1))\r")
	c.sees("marked-2")
	before := p.session(s.SessionID)
	c.close()

	again := dial(t, p.resume("carol", s.SessionID))
	if ready := again.ready(); !ready.Resumed {
		t.Errorf("session_ready %s; want resumed true", ready.text)
	}
	again.input("echo $MARK\r")
	again.sees("kept-42")
	if after := p.session(s.SessionID); after.TaskHandle != before.TaskHandle {
		t.Errorf("resume moved the session from task %s to %s; want the same running task",
			before.TaskHandle, after.TaskHandle)
	}
}

func TestKilledAgentRestartsAndKeepsWorkspace(t *testing.T) {
	p := newProduct(t, options{})
	p.startRelay("a", 0)

	s := p.create("dave")
	c := dial(t, s)
	c.ready()
	c.input("echo precious > notes.txt; echo wrote-$((1+1))\r")
	c.sees("wrote-2")
	first := p.session(s.SessionID)

	c.input("kill -9 $$\r")
	c.status(wire.StateRestarting)
	// session_ready comes once per attach; a restart ends in status ready.
	c.status(wire.StateReady)
	c.input("cat notes.txt\r")
	c.sees("precious")

	second := p.session(s.SessionID)
	if second.TaskHandle == first.TaskHandle || second.Restarts != 1 {
		t.Errorf("after the restart: task %s, restarts %d; want a new task than %s, 1 restart",
			second.TaskHandle, second.Restarts, first.TaskHandle)
	}
	if st := aws.ToString(p.ecsTask(second.TaskHandle).LastStatus); st != "RUNNING" {
		t.Errorf("the restart's ECS task is %s; want RUNNING", st)
	}
	p.fleet.wait(t, first.TaskHandle, frameWait)
	if !slices.Contains(ops.Ops()[awsops.RestartLambda], "ecs:RunTask") {
		t.Errorf("the restart's task was not started by the restart steps' RunTask")
	}
	// The relay logs the restart just after it reports ready.
	restarts := p.logs.waitMatching(t, map[string]any{"service": awsops.Relay,
		"event": "task_lifecycle", "phase": "task_restart"})
	if len(restarts) != 1 || restarts[0]["success"] != true {
		t.Errorf("task_restart lines of the relay: %v; want one, successful", restarts)
	}
}

func TestAgentThatCannotStartFailsRestartWithReason(t *testing.T) {
	// The agent is a script deleted once the first task runs, so the
	// restart's agent cannot start.
	agent := filepath.Join(buildtest.OpenTempDir(t), "agent.sh")
	if err := os.WriteFile(agent, []byte("#!/bin/sh\nexec /bin/sh -i\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	p := newProduct(t, options{agent: agent})
	p.startRelay("a", 0)

	s := p.create("erin")
	c := dial(t, s)
	c.ready()
	c.input("echo armed-$((3*3))\r")
	c.sees("armed-9")
	if err := os.Remove(agent); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	c.input("kill -9 $$\r")
	f := c.expectWithin(30*time.Second, "error "+wire.CodeTaskRestartFailed, func(f frame) bool {
		return f.is(wire.TypeError) && f.Error.Code == wire.CodeTaskRestartFailed
	})
	took := time.Since(start)
	t.Logf("TASK_RESTART_FAILED after %s: %s", took.Round(time.Millisecond), f.Error.Message)
	if took > 15*time.Second {
		t.Errorf("TASK_RESTART_FAILED after %s; want well inside 30 s", took.Round(time.Millisecond))
	}
	if !strings.Contains(f.Error.Message, "agent.sh") {
		t.Errorf("error message %q does not name the cause, the missing agent.sh", f.Error.Message)
	}
	c.status(wire.StateStopped)

	// The session is stopped, and the task the failed restart started is
	// stopped through ECS, saying why.
	eventually(t, frameWait, "the session stopped and its task stopped in ECS", func() bool {
		rec := p.session(s.SessionID)
		task := p.ecsTask(rec.TaskHandle)
		return rec.State == session.StateStopped && aws.ToString(task.LastStatus) == "STOPPED" &&
			strings.HasPrefix(aws.ToString(task.StoppedReason), "restart failed")
	})
}

func TestIdleTaskIsStoppedThroughECS(t *testing.T) {
	p := newProduct(t, options{idle: 300 * time.Millisecond})
	p.startRelay("a", 0)

	s := p.create("frank")
	c := dial(t, s)
	c.ready()
	c.input("echo kept > f.txt; echo ok-$((2*2))\r")
	c.sees("ok-4")
	first := p.session(s.SessionID)
	c.close()

	p.fleet.wait(t, first.TaskHandle, frameWait)
	eventually(t, frameWait, "the idle task stopped by StopTask", func() bool {
		return aws.ToString(p.ecsTask(first.TaskHandle).LastStatus) == "STOPPED"
	})
	reason := aws.ToString(p.ecsTask(first.TaskHandle).StoppedReason)
	if !strings.Contains(reason, "idle") {
		t.Errorf("ECS stop reason %q does not name idleness", reason)
	}

	again := dial(t, p.resume("frank", s.SessionID))
	again.ready()
	again.input("cat f.txt\r")
	again.sees("kept")
	if second := p.session(s.SessionID); second.TaskHandle == first.TaskHandle {
		t.Errorf("resume after the idle stop kept the stopped task %s", first.TaskHandle)
	}
}

func TestDeleteEndsTheSessionAndKeepsTheWorkspace(t *testing.T) {
	p := newProduct(t, options{})
	p.startRelay("a", 0)

	s := p.create("gina")
	c := dial(t, s)
	c.ready()
	c.input("echo stays > kept.txt; echo saved-$((5+5))\r")
	c.sees("saved-10")
	rec := p.session(s.SessionID)

	resp := p.call("gina", http.MethodDelete, "/sessions/"+s.SessionID, "")
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE the session: %d %s; want 204", resp.StatusCode, resp.Body)
	}
	c.failure(wire.CodeSessionEnded)
	if code := c.closedWith(); code != websocket.CloseNormalClosure {
		t.Errorf("client socket closed with %d; want %d", code, websocket.CloseNormalClosure)
	}
	p.fleet.wait(t, rec.TaskHandle, frameWait)
	task := p.ecsTask(rec.TaskHandle)
	status, reason := aws.ToString(task.LastStatus), aws.ToString(task.StoppedReason)
	if status != "STOPPED" || reason != "session ended by its user" {
		t.Errorf("ECS task %s (%q); want STOPPED, ended by its user", status, reason)
	}
	resp = p.call("gina", http.MethodGet, "/sessions/"+s.SessionID, "")
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET the deleted session: %d; want 404", resp.StatusCode)
	}
	dir, err := workspace.Dir(p.ecs.WorkspaceRoot, "gina")
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "kept.txt")); err != nil || string(b) != "stays\n" {
		t.Errorf("workspace file after the delete: %q, %v; want it kept", b, err)
	}
}

func TestStaleRelayGetsNoNewSessions(t *testing.T) {
	p := newProduct(t, options{})
	stale := p.startRelay("stale", time.Hour)
	p.ageHeartbeat(stale, 10*time.Minute)

	resp := p.call("hank", http.MethodPost, "/sessions", "{}")
	var e sessionapi.ErrorObject
	json.Unmarshal([]byte(resp.Body), &e)
	if resp.StatusCode != http.StatusServiceUnavailable || e.Error.Code != sessionapi.CodeNoCapacity {
		t.Errorf("create with no healthy relay: %d %s; want 503 %s", resp.StatusCode, resp.Body,
			sessionapi.CodeNoCapacity)
	}
	if resp.Headers["Retry-After"] == "" {
		t.Errorf("503 without Retry-After; headers %v", resp.Headers)
	}
	if list, err := p.inspect.ListSessions(context.Background()); err != nil || len(list) != 0 {
		t.Errorf("sessions stored after the refused create: %d (%v); want none", len(list), err)
	}

	// A relay whose heartbeat went stale is healthy again once it renews it.
	fresh := p.startRelay("fresh", 200*time.Millisecond)
	p.ageHeartbeat(fresh, 10*time.Minute)
	eventually(t, frameWait, "the fresh relay's heartbeat renewed", func() bool {
		return time.Since(p.heartbeat(fresh)) < 5*time.Second
	})
	var first sessionapi.SessionObject
	for i, user := range []string{"hank", "iris", "jack"} {
		s := p.create(user)
		if rec := p.session(s.SessionID); rec.RelayID != fresh.id || s.RelayURL != fresh.clientURL {
			t.Errorf("session of %s on relay %s (%s); want the healthy %s",
				user, rec.RelayID, s.RelayURL, fresh.id)
		}
		if i == 0 {
			first = s
		}
	}
	c := dial(t, first)
	c.ready()
	c.input("echo fresh-$((7+1))\r")
	c.sees("fresh-8")
}

// ecsTask returns a task as moto describes it.
func (p *product) ecsTask(arn string) ecstypes.Task {
	p.t.Helper()
	task, err := p.fleet.task(context.Background(), arn)
	if err != nil {
		p.t.Fatal(err)
	}
	return task
}

// ageHeartbeat rewrites a relay's record as if its last heartbeat were age
// ago.
func (p *product) ageHeartbeat(r *relayUnderTest, age time.Duration) {
	p.t.Helper()
	ctx := context.Background()
	list, err := p.inspect.ListRelays(ctx)
	if err != nil {
		p.t.Fatal(err)
	}
	for _, rec := range list {
		if rec.ID == r.id {
			rec.HeartbeatAt = time.Now().Add(-age)
			if err := p.inspect.PutRelay(ctx, rec); err != nil {
				p.t.Fatal(err)
			}
			return
		}
	}
	p.t.Fatalf("relay %s has no record", r.id)
}

// heartbeat returns a relay's last heartbeat on record.
func (p *product) heartbeat(r *relayUnderTest) time.Time {
	p.t.Helper()
	list, err := p.inspect.ListRelays(context.Background())
	if err != nil {
		p.t.Fatal(err)
	}
	for _, rec := range list {
		if rec.ID == r.id {
			return rec.HeartbeatAt
		}
	}
	return time.Time{}
}
