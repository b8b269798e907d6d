// Package localtask is the task runner of one machine (make run): each task
// is the bridge binary started as a local process, standing in for an ECS
// task. It implements session.TaskRunner; the handle of a task is its
// TaskID. The bridge's output lines are copied into a log sink, standing in
// for CloudWatch Logs.
package localtask

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/aishell/aishell/shared/logging"
	"github.com/aishell/aishell/shared/session"
)

// Error codes of the runner, carried by *session.CodedError.
const (
	// CodeNoCapacity: MaxTasks tasks are running already.
	CodeNoCapacity = "NoCapacity"
	// CodeStartFailed: the bridge process could not be started.
	CodeStartFailed = "BridgeStartFailed"
	// CodeTaskExists: a task with the same id is still running.
	CodeTaskExists = "TaskExists"
	// CodeInvalidSpec: the task spec lacks its id.
	CodeInvalidSpec = "InvalidTaskSpec"
	// CodeClosed: StopAll was called; no task starts any more.
	CodeClosed = "RunnerClosed"
)

// Environment variables of the bridge's start-up contract.
const (
	EnvRelayURL      = "RELAY_URL"
	EnvTaskID        = "TASK_ID"
	EnvCredential    = "TASK_CREDENTIAL"
	EnvWarm          = "WARM"
	EnvSessionID     = "SESSION_ID"
	EnvUserID        = "USER_ID"
	EnvUserUID       = "USER_UID"
	EnvWorkspaceRoot = "WORKSPACE_ROOT"
	EnvAgentCommand  = "AGENT_COMMAND"
	EnvAgentMode     = "AGENT_MODE"
)

// contractVars are never inherited from the runner's own environment: a
// bridge gets exactly the values its task spec and Config give it.
var contractVars = []string{
	EnvRelayURL, EnvTaskID, EnvCredential, EnvWarm, EnvSessionID, EnvUserID, EnvUserUID,
	EnvWorkspaceRoot, EnvAgentCommand, EnvAgentMode,
}

// Config is how bridges are started. Zero values take the defaults named
// on each field.
type Config struct {
	// BridgePath is the bridge binary; required.
	BridgePath string
	// WorkspaceRoot is the folder holding the users' workspaces.
	WorkspaceRoot string
	// AgentCommand and AgentMode are handed to every bridge when set.
	AgentCommand string
	AgentMode    string
	// MaxTasks is how many bridges may run at once (16); beyond it Run
	// fails with code NoCapacity.
	MaxTasks int
	// StopGrace is how long a bridge has to exit after SIGTERM before it
	// is killed (3 s).
	StopGrace time.Duration
	// KeepStopped is how many stopped tasks are remembered, so that
	// Describe still tells why they stopped (1000).
	KeepStopped int
	// Env is added to each bridge's environment, after the runner's own
	// environment and before the contract variables.
	Env []string
	// LogSink receives every line the bridges write: JSON lines as they
	// are, other lines wrapped into JSON lines. Nil discards them.
	LogSink io.Writer
	// Clock stamps the task times (the wall clock by default).
	Clock session.Clock
	// Log receives the runner's own events.
	Log *slog.Logger
}

func (c *Config) defaults() {
	if c.MaxTasks <= 0 {
		c.MaxTasks = 16
	}
	if c.StopGrace <= 0 {
		c.StopGrace = 3 * time.Second
	}
	if c.KeepStopped <= 0 {
		c.KeepStopped = 1000
	}
	if c.LogSink == nil {
		c.LogSink = io.Discard
	}
	if c.Clock == nil {
		c.Clock = session.SystemClock{}
	}
	if c.Log == nil {
		c.Log = logging.Discard()
	}
}

// Runner starts bridges as local processes. It is safe for concurrent use.
type Runner struct {
	cfg  Config
	log  *slog.Logger
	sink *lockedWriter
	// wrapLog writes non-JSON bridge lines into the sink as JSON lines.
	wrapLog *slog.Logger
	// procs counts supervising goroutines, one per started process.
	procs sync.WaitGroup

	mu      sync.Mutex // guards tasks, stopped, live and closed, and every task's fields
	tasks   map[string]*task
	stopped []*task // stopped tasks, oldest first, at most cfg.KeepStopped
	live    int     // tasks not yet stopped
	closed  bool
}

// task is one bridge process. Its fields are guarded by Runner.mu.
type task struct {
	id         string
	state      session.TaskState
	stopReason string
	createdAt  time.Time
	startedAt  time.Time
	stoppedAt  time.Time
	proc       *os.Process
	killTimer  *time.Timer
	done       chan struct{} // closed once the task is STOPPED

	out lastWords
}

// New checks cfg and returns a Runner.
func New(cfg Config) (*Runner, error) {
	cfg.defaults()
	if cfg.BridgePath == "" {
		return nil, errors.New("local task runner: no bridge binary given")
	}
	info, err := os.Stat(cfg.BridgePath)
	if err != nil {
		return nil, fmt.Errorf("local task runner: bridge binary: %w", err)
	}
	if !info.Mode().IsRegular() || info.Mode().Perm()&0o111 == 0 {
		return nil, fmt.Errorf("local task runner: bridge binary %s is not an executable file",
			cfg.BridgePath)
	}
	sink := &lockedWriter{w: cfg.LogSink}
	return &Runner{
		cfg:     cfg,
		log:     logging.Module(cfg.Log, "localtask"),
		sink:    sink,
		wrapLog: logging.New(sink, "bridge", slog.LevelDebug),
		tasks:   map[string]*task{},
	}, nil
}

// Run starts a bridge for spec and returns its handle (the TaskID) once the
// process runs. The process outlives ctx: it ends when it exits, is
// stopped, or the runner's process dies.
func (r *Runner) Run(ctx context.Context, spec session.TaskSpec) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("run task %s: %w", spec.TaskID, err)
	}
	if spec.TaskID == "" {
		return "", &session.CodedError{Code: CodeInvalidSpec, Err: errors.New("run task: empty task id")}
	}

	t, err := r.register(spec.TaskID)
	if err != nil {
		return "", err
	}
	cmd := exec.Command(r.cfg.BridgePath)
	cmd.Env = r.env(spec)
	stdout := &outputLines{r: r, t: t, stream: "stdout"}
	stderr := &outputLines{r: r, t: t, stream: "stderr"}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Its own process group: a Ctrl-C at the terminal reaches the relay
		// only, which stops the bridges in order; and a kill reaches what
		// the bridge left behind in its group.
		Setpgid: true,
		// A relay that dies leaves no bridge behind.
		Pdeathsig: syscall.SIGKILL,
	}
	// Whatever inherited the bridge's output pipes may keep them open after
	// the bridge exits; do not wait for it longer than this.
	cmd.WaitDelay = time.Second

	started := make(chan error, 1)
	go r.supervise(t, cmd, []*outputLines{stdout, stderr}, started)
	if err := <-started; err != nil {
		r.mu.Lock()
		delete(r.tasks, t.id)
		r.live--
		r.mu.Unlock()
		return "", &session.CodedError{Code: CodeStartFailed,
			Err: fmt.Errorf("run task %s: start bridge %s: %w", t.id, r.cfg.BridgePath, err)}
	}
	return t.id, nil
}

// register records a new PENDING task, if capacity allows, and counts its
// supervisor in r.procs under the same lock as the closed check, so that
// StopAll never misses a process about to start.
func (r *Runner) register(id string) (*task, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, &session.CodedError{Code: CodeClosed,
			Err: fmt.Errorf("run task %s: task runner is shutting down", id)}
	}
	if old, ok := r.tasks[id]; ok && old.state != session.TaskStopped {
		return nil, &session.CodedError{Code: CodeTaskExists,
			Err: fmt.Errorf("run task %s: a task with this id is %s", id, old.state)}
	}
	if r.live >= r.cfg.MaxTasks {
		return nil, &session.CodedError{Code: CodeNoCapacity,
			Err: fmt.Errorf("run task %s: %d of %d local tasks running", id, r.live, r.cfg.MaxTasks)}
	}
	t := &task{
		id:        id,
		state:     session.TaskPending,
		createdAt: r.cfg.Clock.Now(),
		done:      make(chan struct{}),
	}
	r.tasks[id] = t
	r.live++
	r.procs.Add(1)
	return t, nil
}

// env is the bridge's environment: the runner's own without the contract
// variables, then Config.Env, then the contract variables of spec.
func (r *Runner) env(spec session.TaskSpec) []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if !slices.Contains(contractVars, name) {
			env = append(env, kv)
		}
	}
	env = append(env, r.cfg.Env...)
	set := func(name, value string) { env = append(env, name+"="+value) }

	set(EnvRelayURL, spec.RelayURL)
	set(EnvTaskID, spec.TaskID)
	set(EnvCredential, spec.Credential)
	if r.cfg.WorkspaceRoot != "" {
		set(EnvWorkspaceRoot, r.cfg.WorkspaceRoot)
	}
	if spec.Warm {
		set(EnvWarm, "1")
	} else {
		set(EnvSessionID, spec.SessionID)
		set(EnvUserID, spec.UserID)
		if spec.UID > 0 {
			set(EnvUserUID, strconv.Itoa(spec.UID))
		}
	}
	if r.cfg.AgentCommand != "" {
		set(EnvAgentCommand, r.cfg.AgentCommand)
	}
	if r.cfg.AgentMode != "" {
		set(EnvAgentMode, r.cfg.AgentMode)
	}
	return env
}

// supervise starts the bridge, reports the start on started, and waits for
// the process to exit.
//
// Linux sends the parent-death signal when the thread that forked the child
// ends, not the process; Go may end a thread that a goroutine locked and
// left. So the fork happens on a thread locked here, which this goroutine
// keeps (blocked in Wait) until the bridge has exited. Threads are never
// ended otherwise, and a dying relay ends them all.
func (r *Runner) supervise(t *task, cmd *exec.Cmd, outs []*outputLines, started chan<- error) {
	defer r.procs.Done()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	if err := cmd.Start(); err != nil {
		started <- err
		return
	}
	r.mu.Lock()
	t.proc = cmd.Process
	t.state = session.TaskRunning
	t.startedAt = r.cfg.Clock.Now()
	if t.stopReason != "" {
		// Stop came while the process was being started.
		t.state = session.TaskStopping
		r.terminate(t)
	}
	r.mu.Unlock()
	started <- nil
	r.log.Info("bridge started", logging.KeyEvent, "bridge_started", logging.KeyTaskArn, t.id,
		"pid", cmd.Process.Pid)

	waitErr := cmd.Wait()
	for _, o := range outs {
		o.flush()
	}
	r.exited(t, cmd, waitErr)
}

// exited records a bridge's end and why.
func (r *Runner) exited(t *task, cmd *exec.Cmd, waitErr error) {
	// Whatever the bridge left in its process group goes with it.
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)

	r.mu.Lock()
	if t.killTimer != nil {
		t.killTimer.Stop()
	}
	onPurpose := t.stopReason != ""
	if !onPurpose {
		t.stopReason = exitReason(cmd.ProcessState, waitErr, t.out.words())
	}
	t.state = session.TaskStopped
	t.stoppedAt = r.cfg.Clock.Now()
	r.live--
	r.stopped = append(r.stopped, t)
	for len(r.stopped) > r.cfg.KeepStopped {
		old := r.stopped[0]
		r.stopped = r.stopped[1:]
		if r.tasks[old.id] == old {
			delete(r.tasks, old.id)
		}
	}
	reason, ran := t.stopReason, t.stoppedAt.Sub(t.startedAt)
	r.mu.Unlock()
	close(t.done)

	level := slog.LevelInfo
	if !onPurpose && (cmd.ProcessState == nil || !cmd.ProcessState.Success()) {
		level = slog.LevelWarn
	}
	logging.Event(context.Background(), r.log, level, "bridge_exited", "bridge exited",
		slog.String(logging.KeyTaskArn, t.id), slog.String("reason", reason), logging.Duration(ran))
}

// exitReason says why a bridge ended that nobody stopped.
func exitReason(ps *os.ProcessState, waitErr error, words string) string {
	var reason string
	if ps == nil {
		reason = fmt.Sprintf("bridge lost: %v", waitErr)
	} else if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		reason = fmt.Sprintf("bridge killed by signal %s", ws.Signal())
	} else {
		reason = fmt.Sprintf("bridge exited with status %d", ps.ExitCode())
	}
	if words != "" {
		reason += ": " + words
	}
	return reason
}

// Stop asks a task to stop: SIGTERM now, SIGKILL after StopGrace. It
// returns at once; Describe says STOPPING until the bridge has exited.
// Stopping a stopped or unknown task, or stopping twice, is no error; the
// first reason is the one kept.
func (r *Runner) Stop(ctx context.Context, handle, reason string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	t, ok := r.tasks[handle]
	if !ok || t.state == session.TaskStopped || t.stopReason != "" {
		return nil
	}
	t.stopReason = "stopped: " + reason
	t.state = session.TaskStopping
	if t.proc != nil {
		r.terminate(t)
	}
	return nil
}

// terminate sends SIGTERM and arms the SIGKILL. It must be called with
// r.mu held, once the process runs.
func (r *Runner) terminate(t *task) {
	t.proc.Signal(syscall.SIGTERM) // an error means it exited already
	t.killTimer = time.AfterFunc(r.cfg.StopGrace, func() { r.kill(t) })
}

// kill ends a bridge and its process group at once, unless it has exited.
func (r *Runner) kill(t *task) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if t.state == session.TaskStopped || t.proc == nil {
		return
	}
	r.log.Warn("bridge did not exit in time; killing it", logging.KeyEvent, "bridge_killed",
		logging.KeyTaskArn, t.id, "grace_ms", r.cfg.StopGrace.Milliseconds())
	t.proc.Signal(syscall.SIGKILL)
	syscall.Kill(-t.proc.Pid, syscall.SIGKILL)
}

// Describe reports a task's state. An unknown handle is STOPPED with a
// reason saying so.
func (r *Runner) Describe(ctx context.Context, handle string) (session.TaskStatus, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t, ok := r.tasks[handle]
	if !ok {
		return session.TaskStatus{State: session.TaskStopped,
			StopReason: fmt.Sprintf("task %s unknown", handle)}, nil
	}
	return t.status(), nil
}

// status must be called with Runner.mu held.
func (t *task) status() session.TaskStatus {
	return session.TaskStatus{
		State: t.state, StopReason: t.stopReason,
		CreatedAt: t.createdAt, StartedAt: t.startedAt, StoppedAt: t.stoppedAt,
	}
}

// Wait blocks until a task is STOPPED and returns its final status, or
// returns ctx's error. An unknown handle answers at once, as Describe does.
func (r *Runner) Wait(ctx context.Context, handle string) (session.TaskStatus, error) {
	r.mu.Lock()
	t, ok := r.tasks[handle]
	r.mu.Unlock()
	if !ok {
		return r.Describe(ctx, handle)
	}
	select {
	case <-t.done:
		r.mu.Lock()
		defer r.mu.Unlock()
		return t.status(), nil
	case <-ctx.Done():
		return session.TaskStatus{}, fmt.Errorf("wait for task %s: %w", handle, ctx.Err())
	}
}

// StopAll stops every task and waits until every bridge has exited; no
// task starts afterwards. Bridges still running when ctx ends are killed at
// once (and waited for); StopAll then returns ctx's error.
func (r *Runner) StopAll(ctx context.Context) error {
	r.mu.Lock()
	r.closed = true
	for _, t := range r.tasks {
		if t.state != session.TaskStopped && t.stopReason == "" {
			t.stopReason = "stopped: task runner shutting down"
			t.state = session.TaskStopping
			if t.proc != nil {
				r.terminate(t)
			}
		}
	}
	r.mu.Unlock()

	allDone := make(chan struct{})
	go func() {
		r.procs.Wait()
		close(allDone)
	}()
	select {
	case <-allDone:
		return nil
	case <-ctx.Done():
	}

	r.mu.Lock()
	var left []*task
	for _, t := range r.tasks {
		if t.state != session.TaskStopped {
			left = append(left, t)
		}
	}
	r.mu.Unlock()
	for _, t := range left {
		r.kill(t)
	}
	<-allDone
	return fmt.Errorf("stop all tasks: killed %d bridges still running: %w", len(left), ctx.Err())
}

var _ session.TaskRunner = (*Runner)(nil)
