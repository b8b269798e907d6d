package bridge

import (
	"context"
	"errors"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"

	"github.com/aishell/aishell/relay/wire"
	"github.com/aishell/aishell/shared/logging"
)

func TestColdStartRunsAgentAndReportsItsExit(t *testing.T) {
	cases := []struct {
		name       string
		exit       string
		wantReason string
		wantCode   int
	}{
		{"exit with a status", "exit 3\n", "agent exited with status 3", 3},
		{"clean exit", "exit\n", "agent exited with status 0", 0},
		{"killed by a signal", "kill -KILL $$\n", "agent killed by signal KILL", 137},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			relay := newFakeRelay(t)
			cfg := testConfig(t, relay)
			b := startBridge(t, cfg)

			c := relay.accept("/internal/task/s1")
			ready := c.frame(wire.TypeReady)
			if ready.PID <= 0 {
				t.Fatalf("ready pid: got %d; want a process id", ready.PID)
			}
			c.input("pwd; echo hel''lo\n")
			out := c.outputContains("hello")
			if dir := filepath.Join(cfg.WorkspaceRoot, "alice"); !strings.Contains(out, dir+"\r\n") {
				t.Errorf("output %q: want the working folder %s", out, dir)
			}

			c.input(tc.exit)
			sd := c.frame(wire.TypeShutdown)
			if sd.Reason != tc.wantReason || sd.ExitCode != tc.wantCode {
				t.Errorf("shutdown: got %q, exit code %d; want %q, %d",
					sd.Reason, sd.ExitCode, tc.wantReason, tc.wantCode)
			}
			c.ended()
			if err := b.wait(); err != nil {
				t.Errorf("Run: got error %v; want none", err)
			}
			last := b.lastLog()
			if last[logging.KeyEvent] != evBridgeStopped || last["reason"] != tc.wantReason {
				t.Errorf("last log line: got %v; want %s with reason %q", last, evBridgeStopped, tc.wantReason)
			}
			if last[logging.KeySessionID] != "s1" || last[logging.KeyUserID] != "alice" ||
				last[logging.KeyTaskArn] != "task-1" {
				t.Errorf("last log line: got %v; want sessionId s1, userId alice, taskArn task-1", last)
			}
			if !processGone(ready.PID) {
				t.Errorf("agent %d still runs after Run returned", ready.PID)
			}
		})
	}
}

func TestAgentEnvironmentIsSmallAndHoldsNoSecret(t *testing.T) {
	t.Setenv("TASK_CREDENTIAL", testCredential)
	t.Setenv("RELAY_URL", "ws://127.0.0.1:1")
	relay := newFakeRelay(t)
	cfg := testConfig(t, relay)
	startBridge(t, cfg)

	c := relay.accept("/internal/task/s1")
	c.frame(wire.TypeReady)
	c.input("env; echo env''-done\n")
	out := c.outputContains("env-done")

	lines := map[string]bool{}
	for _, line := range strings.Split(out, "\r\n") {
		lines[strings.TrimPrefix(line, "# ")] = true
	}
	dir := filepath.Join(cfg.WorkspaceRoot, "alice")
	for _, want := range []string{"HOME=" + dir, "USER=alice", "LOGNAME=alice", "LANG=C.UTF-8",
		"TERM=xterm-256color", "PATH=" + os.Getenv("PATH")} {
		if !lines[want] {
			t.Errorf("environment %q: want %s", out, want)
		}
	}
	for _, banned := range []string{testCredential, "TASK_", "RELAY_URL", "WORKSPACE_ROOT"} {
		if strings.Contains(out, banned) {
			t.Errorf("environment %q: holds %q; want it absent", out, banned)
		}
	}
}

func TestDefaultAgentIsTheLoginShell(t *testing.T) {
	relay := newFakeRelay(t)
	cfg := testConfig(t, relay)
	cfg.AgentCommand = nil
	startBridge(t, cfg)

	c := relay.accept("/internal/task/s1")
	c.frame(wire.TypeReady)
	c.input("echo \"name=$0\"; echo shell''-done\n")
	out := c.outputContains("shell-done")
	shell := loginShell("/etc/passwd", os.Getuid(), os.Getenv)
	if want := "name=-" + filepath.Base(shell) + "\r\n"; !strings.Contains(out, want) {
		t.Errorf("output %q: want %q (a login shell)", out, want)
	}
}

func TestWarmStartWaitsForInitUser(t *testing.T) {
	relay := newFakeRelay(t)
	cfg := testConfig(t, relay)
	cfg.Warm, cfg.SessionID, cfg.UserID = true, "", ""
	b := startBridge(t, cfg)

	c := relay.accept("/internal/warm/task-1")
	dir := filepath.Join(cfg.WorkspaceRoot, "bob")
	if _, err := os.Lstat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("workspace before init_user: got %v; want none yet", err)
	}
	c.send(wire.InitUser{Type: wire.TypeInitUser, SessionID: "s9", UserID: "bob"})
	c.frame(wire.TypeReady)

	st, err := os.Lstat(dir)
	if err != nil || !st.IsDir() || st.Mode().Perm() != 0o700 {
		t.Fatalf("workspace after init_user: got %v, %v; want a folder of mode 0700", st, err)
	}
	c.input("pwd\n")
	c.outputContains(dir + "\r\n")

	if m := b.logs.First(t, evAgentStarted); m == nil || m[logging.KeySessionID] != "s9" ||
		m[logging.KeyUserID] != "bob" {
		t.Errorf("agent_started log line: got %v; want sessionId s9 and userId bob", m)
	}
}

func TestResizeReachesTheTerminal(t *testing.T) {
	cases := []struct {
		name string
		// early sends the resize before the agent starts.
		early bool
	}{
		{"before the agent starts", true},
		{"while the agent runs", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			relay := newFakeRelay(t)
			cfg := testConfig(t, relay)
			cfg.Warm, cfg.SessionID, cfg.UserID = true, "", ""
			startBridge(t, cfg)

			c := relay.accept("/internal/warm/task-1")
			resize := wire.Resize{Type: wire.TypeResize, Cols: 100, Rows: 40}
			if tc.early {
				c.send(resize)
			}
			c.send(wire.InitUser{Type: wire.TypeInitUser, SessionID: "s2", UserID: "carol"})
			c.frame(wire.TypeReady)
			if !tc.early {
				c.send(resize)
			}
			c.input("stty size\n")
			c.outputContains("40 100\r\n")
		})
	}
}

func TestBusyWhileACommandRuns(t *testing.T) {
	relay := newFakeRelay(t)
	startBridge(t, testConfig(t, relay))

	c := relay.accept("/internal/task/s1")
	c.frame(wire.TypeReady)
	c.input("sleep 1\n")
	if f := c.frame(wire.TypeProcessing); !f.Busy {
		t.Fatalf("first processing frame: got busy=%v; want true", f.Busy)
	}
	if f := c.frame(wire.TypeProcessing); f.Busy {
		t.Fatalf("second processing frame: got busy=%v; want false", f.Busy)
	}
}

func TestPipesMode(t *testing.T) {
	relay := newFakeRelay(t)
	cfg := testConfig(t, relay)
	cfg.Mode = ModePipes
	cfg.AgentCommand = []string{"/bin/cat"}
	startBridge(t, cfg)

	c := relay.accept("/internal/task/s1")
	c.frame(wire.TypeReady)
	c.input("ping\n")
	if f := c.frame(wire.TypeProcessing); !f.Busy {
		t.Fatalf("processing after input: got busy=%v; want true", f.Busy)
	}
	if f := c.frame(wire.TypeProcessing); f.Busy {
		t.Fatalf("processing after a quiet period: got busy=%v; want false", f.Busy)
	}
	if got := c.output.String(); got != "ping\n" {
		t.Errorf("output: got %q; want %q (no echo, no terminal)", got, "ping\n")
	}
}

func TestAgentThatCannotStart(t *testing.T) {
	cases := []struct {
		name    string
		command []string
		// setup runs on the workspace root before the bridge starts.
		setup     func(t *testing.T, root string)
		wantCause string
	}{
		{
			name:      "program not in PATH",
			command:   []string{"no-such-agent-program", "--flag"},
			wantCause: `exec: "no-such-agent-program": executable file not found in $PATH`,
		},
		{
			name:      "missing path",
			command:   []string{"/no/such/agent"},
			wantCause: "no such file or directory",
		},
		{
			name:    "workspace taken by a file",
			command: []string{"/bin/sh"},
			setup: func(t *testing.T, root string) {
				if err := os.MkdirAll(root, 0o711); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(root, "alice"), nil, 0o600); err != nil {
					t.Fatal(err)
				}
			},
			wantCause: "prepare workspace: workspace folder",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			relay := newFakeRelay(t)
			cfg := testConfig(t, relay)
			cfg.AgentCommand = tc.command
			if tc.setup != nil {
				tc.setup(t, cfg.WorkspaceRoot)
			}
			b := startBridge(t, cfg)

			c := relay.accept("/internal/task/s1")
			sd := c.frame(wire.TypeShutdown)
			if !strings.HasPrefix(sd.Reason, "agent failed to start: ") ||
				!strings.Contains(sd.Reason, tc.wantCause) {
				t.Errorf("shutdown reason: got %q; want \"agent failed to start: ...%s...\"",
					sd.Reason, tc.wantCause)
			}
			c.ended()
			err := b.wait()
			if err == nil || err.Error() != sd.Reason {
				t.Errorf("Run: got error %v; want %q", err, sd.Reason)
			}
			if last := b.lastLog(); last["reason"] != sd.Reason || last["level"] != "error" {
				t.Errorf("last log line: got %v; want an error with reason %q", last, sd.Reason)
			}
		})
	}
}

var bgPID = regexp.MustCompile(`bg=(\d+)`)

func TestStopEndsAgentAndItsJobs(t *testing.T) {
	cases := []struct {
		name string
		stop func(c *relayConn, b *running)
		// wantShutdown is the start of the bridge's last frame, "" for none.
		wantShutdown string
	}{
		{
			name: "shutdown frame from the relay",
			stop: func(c *relayConn, b *running) {
				c.send(wire.Shutdown{Type: wire.TypeShutdown, Reason: "session deleted"})
			},
			wantShutdown: "stopped by the relay: session deleted (agent ",
		},
		{
			name:         "signal to the bridge",
			stop:         func(c *relayConn, b *running) { b.cancel() },
			wantShutdown: "bridge stopped: context canceled (agent ",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			relay := newFakeRelay(t)
			b := startBridge(t, testConfig(t, relay))

			c := relay.accept("/internal/task/s1")
			agentPID := c.frame(wire.TypeReady).PID
			c.input("sleep 300 & echo bg=$!\n")
			c.until("the job's pid", func(frame) bool { return bgPID.MatchString(c.output.String()) })
			m := bgPID.FindStringSubmatch(c.output.String())
			jobPID, _ := strconv.Atoi(m[1])

			tc.stop(c, b)
			sd := c.frame(wire.TypeShutdown)
			if !strings.HasPrefix(sd.Reason, tc.wantShutdown) {
				t.Errorf("shutdown: got %q; want it to start with %q", sd.Reason, tc.wantShutdown)
			}
			if err := b.wait(); err != nil {
				t.Errorf("Run: got error %v; want none", err)
			}
			for name, pid := range map[string]int{"agent": agentPID, "background job": jobPID} {
				if !processGone(pid) {
					t.Errorf("%s %d still runs after Run returned", name, pid)
				}
			}
		})
	}
}

func TestStopKillsAnAgentThatIgnoresSignals(t *testing.T) {
	relay := newFakeRelay(t)
	cfg := testConfig(t, relay)
	cfg.StopGrace = 300 * time.Millisecond
	b := startBridge(t, cfg)

	c := relay.accept("/internal/task/s1")
	pid := c.frame(wire.TypeReady).PID
	c.input("trap '' HUP TERM; echo trap''-set\n")
	c.outputContains("trap-set")
	c.send(wire.Shutdown{Type: wire.TypeShutdown, Reason: "session deleted"})

	sd := c.frame(wire.TypeShutdown)
	want := "stopped by the relay: session deleted (agent killed by signal KILL)"
	if sd.Reason != want {
		t.Errorf("shutdown: got %q; want %q", sd.Reason, want)
	}
	if err := b.wait(); err != nil {
		t.Errorf("Run: got error %v; want none", err)
	}
	if b.logs.First(t, evAgentKilled) == nil {
		t.Errorf("no %s log line; want one", evAgentKilled)
	}
	if !processGone(pid) {
		t.Errorf("agent %d still runs after Run returned", pid)
	}
}

func TestStopBeforeTheAgentStarts(t *testing.T) {
	cases := []struct {
		name       string
		stop       func(c *relayConn, b *running)
		wantReason string
	}{
		{
			name: "shutdown frame from the relay",
			stop: func(c *relayConn, b *running) {
				c.send(wire.Shutdown{Type: wire.TypeShutdown, Reason: "pool shrinks"})
			},
			wantReason: "stopped by the relay: pool shrinks",
		},
		{
			name:       "signal to the bridge",
			stop:       func(c *relayConn, b *running) { b.cancel() },
			wantReason: "bridge stopped: context canceled",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			relay := newFakeRelay(t)
			cfg := testConfig(t, relay)
			cfg.Warm, cfg.SessionID, cfg.UserID = true, "", ""
			b := startBridge(t, cfg)

			c := relay.accept("/internal/warm/task-1")
			tc.stop(c, b)
			c.ended()
			if err := b.wait(); err != nil {
				t.Errorf("Run: got error %v; want none", err)
			}
			if last := b.lastLog(); last["reason"] != tc.wantReason {
				t.Errorf("last log line: got %v; want reason %q", last, tc.wantReason)
			}
			if b.logs.First(t, evAgentStarted) != nil {
				t.Errorf("an agent started; want none before init_user")
			}
		})
	}
}

func TestReconnectKeepsAgentAndOutput(t *testing.T) {
	relay := newFakeRelay(t)
	cfg := testConfig(t, relay)
	cfg.Warm, cfg.SessionID, cfg.UserID = true, "", ""
	b := startBridge(t, cfg)

	c := relay.accept("/internal/warm/task-1")
	c.send(wire.InitUser{Type: wire.TypeInitUser, SessionID: "s9", UserID: "bob"})
	pid := c.frame(wire.TypeReady).PID

	// The agent waits on a FIFO that the test writes once the relay is
	// away, so that its output is made while the bridge has no connection:
	// a line, then 1.5 MB, more than the bridge keeps. It says on a second
	// FIFO when it is through.
	dir := filepath.Join(cfg.WorkspaceRoot, "bob")
	for _, name := range []string{"go", "through"} {
		if err := syscall.Mkfifo(filepath.Join(dir, name), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c.input("cat go; head -c 1500000 /dev/zero | tr '\\0' x; echo; echo > through; echo cat''-done\n")
	c.outputContains("cat go;")

	relay.setRefuse(http.StatusServiceUnavailable)
	c.drop()
	relay.waitRefused()
	writeFIFO(t, filepath.Join(dir, "go"), "made while away\n")
	readFIFO(t, filepath.Join(dir, "through"))
	relay.setRefuse(0)

	c2 := relay.accept("/internal/task/s9")
	if got := c2.frame(wire.TypeReady).PID; got != pid {
		t.Errorf("ready after reconnecting: got pid %d; want the same agent %d", got, pid)
	}
	out := c2.outputContains("\r\ncat-done")
	if n := len(out); n > maxBuffered || n < maxBuffered-64<<10 {
		t.Errorf("output kept while away: got %d bytes; want about %d, the newest", n, maxBuffered)
	}
	c2.input("echo still''-here\n")
	c2.outputContains("still-here")

	m := b.logs.First(t, evRelayConnectFailed)
	if m == nil || m["status"] != float64(http.StatusServiceUnavailable) {
		t.Errorf("relay_connect_failed log line: got %v; want status 503", m)
	}
	if b.logs.First(t, evRelayDisconnected) == nil {
		t.Errorf("no %s log line; want one", evRelayDisconnected)
	}
	if m := b.logs.First(t, evOutputDropped); m == nil || m["bytes"].(float64) < 400_000 {
		t.Errorf("output_dropped log line: got %v; want one counting the bytes dropped", m)
	}
}

// readFIFO reads a FIFO to its end once its writer has opened it.
func readFIFO(t *testing.T, path string) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		_, err := os.ReadFile(path)
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(waitLimit):
		t.Fatalf("nobody wrote the FIFO after %s", waitLimit)
	}
}

// writeFIFO writes data to a FIFO once its reader has opened it.
func writeFIFO(t *testing.T, path, data string) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err == nil {
			_, err = f.WriteString(data)
			f.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(waitLimit):
		t.Fatalf("nobody read the FIFO after %s", waitLimit)
	}
}

func TestGivesUpWhenRelayStaysAway(t *testing.T) {
	relay := newFakeRelay(t)
	cfg := testConfig(t, relay)
	cfg.ReconnectWindow = 500 * time.Millisecond
	b := startBridge(t, cfg)

	c := relay.accept("/internal/task/s1")
	pid := c.frame(wire.TypeReady).PID
	relay.setRefuse(http.StatusBadGateway)
	c.drop()

	err := b.wait()
	if err == nil || !strings.Contains(err.Error(), "relay out of reach for 500ms") {
		t.Errorf("Run: got error %v; want \"relay out of reach for 500ms: ...\"", err)
	}
	if !processGone(pid) {
		t.Errorf("agent %d still runs after Run returned", pid)
	}
}

func TestRelayRefusesTheTask(t *testing.T) {
	cases := []struct {
		name       string
		credential string
		// refuse acts on the connection, when there is one.
		refuse  func(c *relayConn)
		wantErr string
	}{
		{
			name:       "bad credential",
			credential: "forged",
			wantErr:    "relay refused the task: HTTP 401",
		},
		{
			name:       "policy close",
			credential: testCredential,
			refuse: func(c *relayConn) {
				c.frame(wire.TypeReady)
				msg := websocket.FormatCloseMessage(websocket.ClosePolicyViolation, "unknown task")
				deadline := time.Now().Add(time.Second)
				if err := c.ws.WriteControl(websocket.CloseMessage, msg, deadline); err != nil {
					c.t.Fatal(err)
				}
			},
			wantErr: "relay refused the task: unknown task",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			relay := newFakeRelay(t)
			cfg := testConfig(t, relay)
			cfg.Credential = tc.credential
			b := startBridge(t, cfg)
			if tc.refuse != nil {
				tc.refuse(relay.accept("/internal/task/s1"))
			}
			err := b.wait()
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Run: got error %v; want one containing %q", err, tc.wantErr)
			}
			if last := b.lastLog(); last["event"] != evBridgeStopped || last["reason"] != err.Error() {
				t.Errorf("last log line: got %v; want %s with the error", last, evBridgeStopped)
			}
		})
	}
}

func TestOutputFramesCarryWholeCharacters(t *testing.T) {
	relay := newFakeRelay(t)
	startBridge(t, testConfig(t, relay))

	c := relay.accept("/internal/task/s1")
	c.frame(wire.TypeReady)
	// 20000 lines of 日本, 160 kB; the command line itself names them in
	// octal so that its echo does not count.
	c.input(`yes "$(printf '\346\227\245\346\234\254')" | head -n 20000; echo end''-of-output` + "\n")
	c.until("end of output", func(f frame) bool {
		if f.Type == wire.TypeOutput {
			if len(f.Data) > maxFrameData {
				t.Errorf("output frame of %d bytes; want at most %d", len(f.Data), maxFrameData)
			}
			if !utf8.ValidString(f.Data) || strings.ContainsRune(f.Data, utf8.RuneError) {
				t.Errorf("output frame with a broken character: %q", f.Data)
			}
		}
		return strings.Contains(c.output.String(), "end-of-output")
	})
	if got := strings.Count(c.output.String(), "日本\r\n"); got != 20000 {
		t.Errorf("lines of 日本: got %d; want 20000", got)
	}
}

func TestRunRefusesIncompleteConfig(t *testing.T) {
	cases := []struct {
		name string
		edit func(*Config)
	}{
		{"no relay", func(c *Config) { c.RelayURL = "" }},
		{"cold without session", func(c *Config) { c.SessionID = "" }},
		{"warm without task id", func(c *Config) { c.Warm, c.TaskID = true, "" }},
		{"no workspace root", func(c *Config) { c.WorkspaceRoot = "" }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{RelayURL: "ws://127.0.0.1:1", TaskID: "t", Credential: "c",
				SessionID: "s", UserID: "u", WorkspaceRoot: t.TempDir()}
			tc.edit(&cfg)
			if err := Run(context.Background(), cfg, logging.Discard()); err == nil {
				t.Fatalf("Run(%+v): got no error; want one", cfg)
			}
		})
	}
}
