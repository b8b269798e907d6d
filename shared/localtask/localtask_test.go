package localtask

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aishell/aishell/shared/logging"
	"github.com/aishell/aishell/shared/session"
)

// patience bounds every wait on a real process.
const patience = 20 * time.Second

// sink collects the lines a Runner copies, and lets a test wait for one.
type sink struct {
	mu      sync.Mutex
	data    []byte
	changed chan struct{}
}

func newSink() *sink { return &sink{changed: make(chan struct{})} }

func (s *sink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.data = append(s.data, p...)
	close(s.changed)
	s.changed = make(chan struct{})
	return len(p), nil
}

func (s *sink) lines() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Split(strings.TrimSuffix(string(s.data), "\n"), "\n")
}

// waitFor waits until a line containing substr was written, and returns it.
func (s *sink) waitFor(t *testing.T, substr string) string {
	t.Helper()
	deadline := time.NewTimer(patience)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		changed := s.changed
		s.mu.Unlock()
		for _, l := range s.lines() {
			if strings.Contains(l, substr) {
				return l
			}
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("no line with %q after %s; lines: %q", substr, patience, s.lines())
		}
	}
}

// newRunner returns a Runner whose bridge is this test binary acting as a
// fake bridge configured by env, and stops all its tasks at the end.
func newRunner(t *testing.T, cfg Config, env ...string) (*Runner, *sink) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	out := newSink()
	cfg.BridgePath = exe
	// A race-enabled binary sleeps a second at exit unless told not to.
	cfg.Env = append([]string{helperVar + "=bridge", "GORACE=atexit_sleep_ms=0"}, env...)
	cfg.LogSink = out
	r, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), patience)
		defer cancel()
		if err := r.StopAll(ctx); err != nil {
			t.Errorf("StopAll at cleanup: %v", err)
		}
	})
	return r, out
}

func chunks(s ...string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func waitStopped(t *testing.T, r *Runner, handle string) session.TaskStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	st, err := r.Wait(ctx, handle)
	if err != nil {
		t.Fatalf("Wait(%s): %v", handle, err)
	}
	return st
}

func TestRunPassesTheEnvContract(t *testing.T) {
	t.Setenv(EnvAgentCommand, "inherited-agent")
	t.Setenv(EnvSessionID, "s_inherited")

	tests := []struct {
		name string
		cfg  Config
		spec session.TaskSpec
		want map[string]string
	}{
		{
			name: "warm task",
			cfg:  Config{WorkspaceRoot: "/ws", AgentCommand: "bash -l", AgentMode: "pty"},
			spec: session.TaskSpec{TaskID: "t_warm", Warm: true, RelayURL: "http://127.0.0.1:1/",
				Credential: "cred"},
			want: map[string]string{
				EnvRelayURL: "http://127.0.0.1:1/", EnvTaskID: "t_warm", EnvCredential: "cred",
				EnvWarm: "1", EnvWorkspaceRoot: "/ws", EnvAgentCommand: "bash -l", EnvAgentMode: "pty",
			},
		},
		{
			name: "session task, inherited agent and session dropped",
			cfg:  Config{WorkspaceRoot: "/ws"},
			spec: session.TaskSpec{TaskID: "t_cold", SessionID: "s_1", UserID: "alice", UID: 100001,
				RelayURL: "http://127.0.0.1:1/", Credential: "cred"},
			want: map[string]string{
				EnvRelayURL: "http://127.0.0.1:1/", EnvTaskID: "t_cold", EnvCredential: "cred",
				EnvSessionID: "s_1", EnvUserID: "alice", EnvUserUID: "100001", EnvWorkspaceRoot: "/ws",
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, out := newRunner(t, tc.cfg, "FAKE_PRINT_ENV=1")
			handle, err := r.Run(context.Background(), tc.spec)
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if handle != tc.spec.TaskID {
				t.Errorf("handle: got %q; want the task id %q", handle, tc.spec.TaskID)
			}
			var line struct {
				Env map[string]string `json:"env"`
			}
			if err := json.Unmarshal([]byte(out.waitFor(t, `"env"`)), &line); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(line.Env, tc.want) {
				t.Errorf("bridge environment:\ngot  %v\nwant %v", line.Env, tc.want)
			}
			waitStopped(t, r, handle)
		})
	}
}

func TestStopReasonOfABridgeThatEnded(t *testing.T) {
	tests := []struct {
		name string
		env  []string
		want string
	}{
		{"agent ended", []string{
			"FAKE_STDOUT=" + chunks(`{"level":"info","message":"agent started"}`+"\n",
				`{"level":"info","message":"agent exited with status 0"}`+"\n"),
		}, "bridge exited with status 0: agent exited with status 0"},
		{"relay refused", []string{
			"FAKE_STDOUT=" + chunks(`{"message":"connecting"}`+"\n",
				`{"level":"error","message":"relay refused the task: 401"}`+"\n"),
			"FAKE_EXIT=1",
		}, "bridge exited with status 1: relay refused the task: 401"},
		{"last JSON line wins over later plain text", []string{
			"FAKE_STDOUT=" + chunks(`{"message":"agent could not start"}`+"\n", "some noise\n"),
			"FAKE_EXIT=1",
		}, "bridge exited with status 1: agent could not start"},
		{"no words at all", []string{"FAKE_EXIT=3"}, "bridge exited with status 3"},
		{"only plain text", []string{
			"FAKE_STDERR=" + chunks("cannot exec: no such file\n"), "FAKE_EXIT=1",
		},
			"bridge exited with status 1: cannot exec: no such file"},
		{"crash", []string{
			"FAKE_STDOUT=" + chunks(`{"message":"agent started"}`+"\n"),
			"FAKE_END=panic",
		}, "bridge exited with status 2: panic: boom"},
		{"killed by a signal", []string{"FAKE_END=selfkill"}, "bridge killed by signal killed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := newRunner(t, Config{}, tc.env...)
			handle, err := r.Run(context.Background(), session.TaskSpec{TaskID: "t_1", Warm: true})
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			st := waitStopped(t, r, handle)
			if st.State != session.TaskStopped || st.StopReason != tc.want {
				t.Errorf("got %s %q; want STOPPED %q", st.State, st.StopReason, tc.want)
			}
			inOrder := !st.StartedAt.Before(st.CreatedAt) && !st.StoppedAt.Before(st.StartedAt)
			if st.CreatedAt.IsZero() || !inOrder {
				t.Errorf("times: got created %v started %v stopped %v; want them set and in order",
					st.CreatedAt, st.StartedAt, st.StoppedAt)
			}
			again, _ := r.Describe(context.Background(), handle)
			if again != st {
				t.Errorf("Describe after Wait: got %+v; want %+v", again, st)
			}
		})
	}
}

func TestStop(t *testing.T) {
	ctx := context.Background()
	r, out := newRunner(t, Config{}, "FAKE_WAIT=term")
	handle, err := r.Run(ctx, session.TaskSpec{TaskID: "t_1", Warm: true})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	out.waitFor(t, `"ready"`)
	if st, _ := r.Describe(ctx, handle); st.State != session.TaskRunning || st.StartedAt.IsZero() {
		t.Errorf("before Stop: got %+v; want RUNNING with a start time", st)
	}

	if err := r.Stop(ctx, handle, "session ended by its user"); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := r.Stop(ctx, handle, "a second reason"); err != nil {
		t.Errorf("second Stop: got %v; want nil", err)
	}
	st := waitStopped(t, r, handle)
	if want := "stopped: session ended by its user"; st.StopReason != want {
		t.Errorf("stop reason: got %q; want %q", st.StopReason, want)
	}
	out.waitFor(t, `"told to stop"`)

	if err := r.Stop(ctx, handle, "once more"); err != nil {
		t.Errorf("Stop of a stopped task: got %v; want nil", err)
	}
	if err := r.Stop(ctx, "t_nope", "never ran"); err != nil {
		t.Errorf("Stop of an unknown task: got %v; want nil", err)
	}
	if again, _ := r.Describe(ctx, handle); again.StopReason != st.StopReason {
		t.Errorf("reason after more Stops: got %q; want %q", again.StopReason, st.StopReason)
	}
}

// A bridge that ignores SIGTERM is STOPPING until the grace ends, then
// killed; the reason stays the one given to Stop.
func TestStopKillsAfterTheGrace(t *testing.T) {
	ctx := context.Background()
	var logs bytes.Buffer
	var logsMu sync.Mutex
	r, out := newRunner(t, Config{
		StopGrace: 200 * time.Millisecond,
		Log:       logging.New(lockedTo(&logs, &logsMu), "relay", slog.LevelInfo),
	}, "FAKE_WAIT=ignore")
	handle, err := r.Run(ctx, session.TaskSpec{TaskID: "t_1", Warm: true})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	out.waitFor(t, `"ready"`)

	r.Stop(ctx, handle, "warm task past its maximum age")
	if st, _ := r.Describe(ctx, handle); st.State != session.TaskStopping {
		t.Errorf("right after Stop: got %s; want STOPPING", st.State)
	}
	st := waitStopped(t, r, handle)
	if want := "stopped: warm task past its maximum age"; st.StopReason != want {
		t.Errorf("stop reason: got %q; want %q", st.StopReason, want)
	}
	if grace := st.StoppedAt.Sub(st.StartedAt); grace < 200*time.Millisecond {
		t.Errorf("ran %s; want at least the grace of 200ms", grace)
	}
	logsMu.Lock()
	defer logsMu.Unlock()
	if !strings.Contains(logs.String(), `"event":"bridge_killed"`) {
		t.Errorf("runner log: got %s; want a bridge_killed event", logs.String())
	}
}

type lockedBuffer struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func lockedTo(w io.Writer, mu *sync.Mutex) io.Writer { return lockedBuffer{mu, w} }

func TestCapacity(t *testing.T) {
	ctx := context.Background()
	r, out := newRunner(t, Config{MaxTasks: 1}, "FAKE_WAIT=term")
	first, err := r.Run(ctx, session.TaskSpec{TaskID: "t_1", Warm: true})
	if err != nil {
		t.Fatalf("first Run: %v", err)
	}

	_, err = r.Run(ctx, session.TaskSpec{TaskID: "t_2", Warm: true})
	var coded *session.CodedError
	if !errors.As(err, &coded) || coded.Code != CodeNoCapacity || !session.IsCapacity(err) {
		t.Fatalf("Run beyond capacity: got %v; want a NoCapacity coded error", err)
	}
	if st, _ := r.Describe(ctx, "t_2"); st.StopReason != "task t_2 unknown" {
		t.Errorf("refused task: got %+v; want it unknown", st)
	}
	_, err = r.Run(ctx, session.TaskSpec{TaskID: "t_1", Warm: true})
	if session.ErrorCode(err) != CodeTaskExists {
		t.Errorf("Run of a running id: got %v; want code %s", err, CodeTaskExists)
	}

	out.waitFor(t, `"ready"`)
	r.Stop(ctx, first, "make room")
	waitStopped(t, r, first)
	if _, err := r.Run(ctx, session.TaskSpec{TaskID: "t_2", Warm: true}); err != nil {
		t.Errorf("Run after a stop freed room: %v", err)
	}
}

func TestBridgeOutputIsCopied(t *testing.T) {
	jsonOut := `{"timestamp":"2026-02-08T12:00:00.000Z","level":"info","service":"bridge",` +
		`"event":"agent_started","taskArn":"t_1","message":"agent started"}`
	jsonErr := `{"level":"error","service":"bridge","message":"stderr json","n":1}`
	r, out := newRunner(t, Config{},
		"FAKE_STDOUT="+chunks(jsonOut[:20], jsonOut[20:]+"\nplain words\r\n\n", "no newline at end"),
		"FAKE_STDERR="+chunks(jsonErr+"\n", "oops: something\n"),
	)
	handle, err := r.Run(context.Background(), session.TaskSpec{TaskID: "t_1", Warm: true})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	waitStopped(t, r, handle)

	lines := out.lines()
	if len(lines) != 5 {
		t.Fatalf("sink: got %d lines %q; want 5", len(lines), lines)
	}
	byMessage := map[string]map[string]any{}
	raw := map[string]string{}
	for _, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("sink line %q is not JSON: %v", l, err)
		}
		msg, _ := m["message"].(string)
		byMessage[msg], raw[msg] = m, l
	}
	for _, want := range []string{jsonOut, jsonErr} {
		var m map[string]any
		json.Unmarshal([]byte(want), &m)
		if got := raw[m["message"].(string)]; got != want {
			t.Errorf("JSON line: got %q; want it unchanged: %q", got, want)
		}
	}

	wrapped := []struct {
		message, stream, level string
	}{
		{"plain words", "stdout", "info"},
		{"no newline at end", "stdout", "info"},
		{"oops: something", "stderr", "warn"},
	}
	for _, w := range wrapped {
		m := byMessage[w.message]
		if m == nil {
			t.Errorf("no wrapped line for %q", w.message)
			continue
		}
		for field, want := range map[string]any{
			"service": "bridge", "event": "bridge_output", "taskArn": handle,
			"stream": w.stream, "level": w.level,
		} {
			if m[field] != want {
				t.Errorf("wrapped %q: %s got %v; want %v", w.message, field, m[field], want)
			}
		}
		if _, ok := m["timestamp"]; !ok {
			t.Errorf("wrapped %q: no timestamp", w.message)
		}
	}
}

func TestUnknownHandle(t *testing.T) {
	r, _ := newRunner(t, Config{})
	st, err := r.Describe(context.Background(), "t_nope")
	want := session.TaskStatus{State: session.TaskStopped, StopReason: "task t_nope unknown"}
	if err != nil || st != want {
		t.Errorf("got %+v, %v; want %+v", st, err, want)
	}
	if st, err := r.Wait(context.Background(), "t_nope"); err != nil || st != want {
		t.Errorf("Wait: got %+v, %v; want %+v", st, err, want)
	}
}

func TestStoppedTasksAreRememberedBounded(t *testing.T) {
	r, _ := newRunner(t, Config{KeepStopped: 2}, "FAKE_EXIT=1")
	for _, id := range []string{"t_1", "t_2", "t_3"} {
		if _, err := r.Run(context.Background(), session.TaskSpec{TaskID: id, Warm: true}); err != nil {
			t.Fatalf("Run(%s): %v", id, err)
		}
		waitStopped(t, r, id)
	}
	for id, want := range map[string]string{
		"t_1": "task t_1 unknown",
		"t_2": "bridge exited with status 1",
		"t_3": "bridge exited with status 1",
	} {
		if st, _ := r.Describe(context.Background(), id); st.StopReason != want {
			t.Errorf("%s: got %q; want %q", id, st.StopReason, want)
		}
	}
	// An id can run again once its task stopped.
	if _, err := r.Run(context.Background(), session.TaskSpec{TaskID: "t_3", Warm: true}); err != nil {
		t.Errorf("Run of a stopped id: %v", err)
	}
}

func TestStopAll(t *testing.T) {
	ctx := context.Background()
	r, out := newRunner(t, Config{}, "FAKE_WAIT=term")
	ids := []string{"t_1", "t_2", "t_3"}
	for _, id := range ids {
		if _, err := r.Run(ctx, session.TaskSpec{TaskID: id, Warm: true}); err != nil {
			t.Fatalf("Run(%s): %v", id, err)
		}
	}
	for range ids {
		out.waitFor(t, `"ready"`)
	}

	stopCtx, cancel := context.WithTimeout(ctx, patience)
	defer cancel()
	if err := r.StopAll(stopCtx); err != nil {
		t.Fatalf("StopAll: %v", err)
	}
	for _, id := range ids {
		st, _ := r.Describe(ctx, id)
		if st.State != session.TaskStopped || st.StopReason != "stopped: task runner shutting down" {
			t.Errorf("%s after StopAll: got %s %q; want STOPPED by the shutdown",
				id, st.State, st.StopReason)
		}
	}
	_, err := r.Run(ctx, session.TaskSpec{TaskID: "t_4", Warm: true})
	if session.ErrorCode(err) != CodeClosed {
		t.Errorf("Run after StopAll: got %v; want code %s", err, CodeClosed)
	}
}

// StopAll kills what does not exit before its ctx ends, and still waits
// for it, so that no process outlives it.
func TestStopAllKillsWhenItsTimeIsUp(t *testing.T) {
	ctx := context.Background()
	r, out := newRunner(t, Config{StopGrace: time.Hour}, "FAKE_WAIT=ignore")
	handle, err := r.Run(ctx, session.TaskSpec{TaskID: "t_1", Warm: true})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	out.waitFor(t, `"ready"`)

	stopCtx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	err = r.StopAll(stopCtx)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "killed 1") {
		t.Errorf("StopAll: got %v; want the deadline, with 1 bridge killed", err)
	}
	st, _ := r.Describe(ctx, handle)
	if st.State != session.TaskStopped || st.StopReason != "stopped: task runner shutting down" {
		t.Errorf("after StopAll: got %s %q; want STOPPED by the shutdown", st.State, st.StopReason)
	}
}

func TestRunRefusals(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Errorf("New without a bridge: got nil error; want one")
	}
	if _, err := New(Config{BridgePath: filepath.Join(t.TempDir(), "nope")}); err == nil {
		t.Errorf("New with a missing bridge: got nil error; want one")
	}
	notExec := filepath.Join(t.TempDir(), "bridge")
	os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644)
	if _, err := New(Config{BridgePath: notExec}); err == nil {
		t.Errorf("New with a bridge that is not executable: got nil error; want one")
	}

	// The binary disappears after New: Run fails with a code and leaves no
	// task behind.
	gone := filepath.Join(t.TempDir(), "bridge")
	os.WriteFile(gone, []byte("#!/bin/sh\nexit 0\n"), 0o755)
	r, err := New(Config{BridgePath: gone, MaxTasks: 1})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	os.Remove(gone)
	_, err = r.Run(context.Background(), session.TaskSpec{TaskID: "t_1", Warm: true})
	if session.ErrorCode(err) != CodeStartFailed || !strings.Contains(err.Error(), gone) {
		t.Errorf("Run: got %v; want code %s naming %s", err, CodeStartFailed, gone)
	}
	if st, _ := r.Describe(context.Background(), "t_1"); st.StopReason != "task t_1 unknown" {
		t.Errorf("failed task: got %+v; want it unknown", st)
	}
	os.WriteFile(gone, []byte("#!/bin/sh\nexit 0\n"), 0o755)
	if _, err := r.Run(context.Background(), session.TaskSpec{TaskID: "t_2", Warm: true}); err != nil {
		t.Errorf("Run after a failed start: got %v; want the capacity given back", err)
	}
	waitStopped(t, r, "t_2")

	_, err = r.Run(context.Background(), session.TaskSpec{})
	if session.ErrorCode(err) != CodeInvalidSpec {
		t.Errorf("Run without id: got %v; want code %s", err, CodeInvalidSpec)
	}
}

// openFIFO makes a FIFO and returns a reader of it once a writer opened it.
func openFIFO(t *testing.T) (string, func() *os.File) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "alive")
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatalf("mkfifo: %v", err)
	}
	return path, func() *os.File {
		opened := make(chan *os.File, 1)
		go func() {
			f, err := os.Open(path) // blocks until the holder opens it
			if err != nil {
				t.Errorf("open FIFO: %v", err)
			}
			opened <- f
		}()
		select {
		case f := <-opened:
			if f == nil {
				t.FailNow()
			}
			t.Cleanup(func() { f.Close() })
			return f
		case <-time.After(patience):
			t.Fatalf("no holder opened the FIFO within %s", patience)
			return nil
		}
	}
}

// waitHolderGone reads the holder's "alive" line, then runs end, then
// waits until the FIFO's write end closes: the holder is dead.
func waitHolderGone(t *testing.T, f *os.File, end func()) {
	t.Helper()
	f.SetReadDeadline(time.Now().Add(patience))
	rd := bufio.NewReader(f)
	line, err := rd.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "alive ") {
		t.Fatalf("holder: got %q, %v; want alive <pid>", line, err)
	}
	pid, err := strconv.Atoi(strings.TrimPrefix(strings.TrimSpace(line), "alive "))
	if err != nil {
		t.Fatal(err)
	}

	end()
	f.SetReadDeadline(time.Now().Add(patience))
	if rest, err := io.ReadAll(rd); err != nil {
		syscall.Kill(pid, syscall.SIGKILL)
		t.Fatalf("holder %d still alive (%v, read %q); want it killed", pid, err, rest)
	}
}

// A relay that dies takes its bridges with it (the parent-death signal).
func TestBridgesDieWithTheRelay(t *testing.T) {
	fifo, open := openFIFO(t)
	relay := exec.Command(os.Args[0])
	relay.Env = append(os.Environ(), helperVar+"=relay", "FAKE_FIFO="+fifo)
	stdout, err := relay.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := relay.Start(); err != nil {
		t.Fatalf("start relay: %v", err)
	}
	t.Cleanup(func() { relay.Process.Kill(); relay.Wait() })
	f := open()
	if line, _ := bufio.NewReader(stdout).ReadString('\n'); line != "started\n" {
		t.Fatalf("relay said %q; want started", line)
	}

	waitHolderGone(t, f, func() {
		relay.Process.Kill()
		relay.Wait()
	})
}

// What a bridge leaves behind in its process group dies with it.
func TestBridgeLeavesNoProcessBehind(t *testing.T) {
	fifo, open := openFIFO(t)
	r, out := newRunner(t, Config{}, "FAKE_SPAWN=1", "FAKE_FIFO="+fifo, "FAKE_WAIT=term")
	handle, err := r.Run(context.Background(), session.TaskSpec{TaskID: "t_1", Warm: true})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	f := open()
	out.waitFor(t, `"ready"`)
	waitHolderGone(t, f, func() {
		r.Stop(context.Background(), handle, "test over")
		waitStopped(t, r, handle)
	})
}
