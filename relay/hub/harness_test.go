package hub_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/aishell/aishell/shared/logging/logtest"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/aishell/aishell/relay/hub"
	"github.com/aishell/aishell/shared/localstore"
	"github.com/aishell/aishell/shared/logging"
	"github.com/aishell/aishell/shared/session"
	"github.com/aishell/aishell/shared/ticket"
	"github.com/aishell/aishell/shared/workflow"
)

// The tests in this package run the hub as the relay runs it: the real
// session service on the embedded store, the in-process restart workflow,
// and the hub in front. Only what lies outside the machine is faked: the
// sockets (pipe, an in-memory hub.Transport) and the task platform
// (fakeRunner). Every test runs in a synctest bubble, so the 5 s, 30 s and
// 10 min time-outs pass in fake time.

// waitLimit bounds every wait for a frame, in fake time. It is far above
// any time-out of the hub, so hitting it means the frame never came.
const waitLimit = time.Hour

const relayID = "relay-test"

// errPeerGone is what ReadFrame returns once the peer hung up.
var errPeerGone = errors.New("peer went away")

// sent is one thing the hub wrote to a socket: a text frame, or the close
// frame with its code.
type sent struct {
	frame  []byte
	close  bool
	code   int
	reason string
}

type inbound struct {
	data []byte
	err  error
}

// pipe is one socket. The hub holds it as its Transport; the test plays the
// peer (a browser, or a task's bridge) through the other methods.
type pipe struct {
	name string
	in   chan inbound // frames from the peer, read by the hub

	mu      sync.Mutex // guards written, read, gate
	written []sent
	read    int           // how many of written the test has taken
	gate    chan struct{} // non-nil: the hub's writes wait until it closes

	wrote     chan struct{} // signalled after each write
	hubClosed chan struct{} // closed by Close (the hub's side)
	peerGone  chan struct{} // closed by hangUp (the peer's side)
	closeOnce sync.Once
	hangOnce  sync.Once
	pings     atomic.Int32
}

func newPipe(name string) *pipe {
	return &pipe{
		name:      name,
		in:        make(chan inbound, 1024),
		wrote:     make(chan struct{}, 1),
		hubClosed: make(chan struct{}),
		peerGone:  make(chan struct{}),
	}
}

// ReadFrame returns what the peer sent, in order, then an error once the
// peer hung up or the hub closed the socket.
func (p *pipe) ReadFrame() ([]byte, error) {
	select {
	case <-p.hubClosed:
		return nil, net.ErrClosed
	default:
	}
	// Frames sent before a hang-up are read before it, as on a socket.
	select {
	case m := <-p.in:
		return m.data, m.err
	default:
	}
	select {
	case m := <-p.in:
		return m.data, m.err
	case <-p.peerGone:
		return nil, errPeerGone
	case <-p.hubClosed:
		return nil, net.ErrClosed
	}
}

func (p *pipe) WriteFrame(b []byte) error {
	p.mu.Lock()
	gate := p.gate
	p.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-p.hubClosed:
			return net.ErrClosed
		case <-p.peerGone:
			return errPeerGone
		}
	}
	if err := p.shut(); err != nil {
		return err
	}
	p.record(sent{frame: append([]byte(nil), b...)})
	return nil
}

func (p *pipe) WritePing() error {
	if err := p.shut(); err != nil {
		return err
	}
	p.pings.Add(1)
	return nil
}

func (p *pipe) WriteClose(code int, reason string) error {
	if err := p.shut(); err != nil {
		return err
	}
	p.record(sent{close: true, code: code, reason: reason})
	return nil
}

func (p *pipe) Close() error {
	p.closeOnce.Do(func() { close(p.hubClosed) })
	return nil
}

func (p *pipe) shut() error {
	select {
	case <-p.hubClosed:
		return net.ErrClosed
	case <-p.peerGone:
		return errPeerGone
	default:
		return nil
	}
}

func (p *pipe) record(s sent) {
	p.mu.Lock()
	p.written = append(p.written, s)
	p.mu.Unlock()
	select {
	case p.wrote <- struct{}{}:
	default:
	}
}

// send sends v as a JSON text frame from the peer.
func (p *pipe) send(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	p.sendRaw(string(b))
}

func (p *pipe) sendRaw(s string) { p.push(inbound{data: []byte(s)}) }

// inject makes the hub's next read fail with err, as the WebSocket adapter
// does for an oversized or a binary frame.
func (p *pipe) inject(err error) { p.push(inbound{err: err}) }

func (p *pipe) push(m inbound) {
	select {
	case p.in <- m:
	case <-p.hubClosed:
	case <-p.peerGone:
	}
}

// hangUp is the peer going away: the hub's reads and writes fail.
func (p *pipe) hangUp() { p.hangOnce.Do(func() { close(p.peerGone) }) }

// pause makes the hub's writes wait, as on a slow network; resume lets
// them through.
func (p *pipe) pause() {
	p.mu.Lock()
	p.gate = make(chan struct{})
	p.mu.Unlock()
}

func (p *pipe) resume() {
	p.mu.Lock()
	if p.gate != nil {
		close(p.gate)
		p.gate = nil
	}
	p.mu.Unlock()
}

func (p *pipe) closedByHub() bool {
	select {
	case <-p.hubClosed:
		return true
	default:
		return false
	}
}

// next returns the next thing the hub wrote, waiting for it in fake time;
// ok is false once the hub closed the socket with nothing more written.
func (p *pipe) next(t *testing.T) (s sent, ok bool) {
	t.Helper()
	deadline := time.NewTimer(waitLimit)
	defer deadline.Stop()
	for {
		p.mu.Lock()
		if p.read < len(p.written) {
			s = p.written[p.read]
			p.read++
			p.mu.Unlock()
			return s, true
		}
		p.mu.Unlock()
		select {
		case <-p.wrote:
		case <-p.hubClosed:
			p.mu.Lock()
			more := p.read < len(p.written)
			p.mu.Unlock()
			if !more {
				return sent{}, false
			}
		case <-deadline.C:
			t.Fatalf("%s: nothing written within %s", p.name, waitLimit)
		}
	}
}

// frame is any frame of either socket, decoded.
type frame struct {
	Type      string `json:"type"`
	State     string `json:"state"`
	SessionID string `json:"sessionId"`
	UserID    string `json:"userId"`
	UID       int    `json:"uid"`
	Warm      bool   `json:"warm"`
	Resumed   bool   `json:"resumed"`
	StartupMs int64  `json:"startup_ms"`
	Data      string `json:"data"`
	ID        string `json:"id"`
	Reason    string `json:"reason"`
	Cols      int    `json:"cols"`
	Rows      int    `json:"rows"`
	Error     struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func (f frame) String() string {
	switch f.Type {
	case "status":
		return "status " + f.State
	case "error":
		return fmt.Sprintf("error %s (%s)", f.Error.Code, f.Error.Message)
	case "output", "input":
		return fmt.Sprintf("%s %q", f.Type, f.Data)
	}
	return f.Type
}

// expectFrame returns the next frame the hub wrote.
func (p *pipe) expectFrame(t *testing.T) frame {
	t.Helper()
	s, ok := p.next(t)
	if !ok {
		t.Fatalf("%s: socket closed; want a frame", p.name)
	}
	if s.close {
		t.Fatalf("%s: got close %d (%q); want a frame", p.name, s.code, s.reason)
	}
	var f frame
	if err := json.Unmarshal(s.frame, &f); err != nil {
		t.Fatalf("%s: frame %q is not JSON: %v", p.name, s.frame, err)
	}
	return f
}

func (p *pipe) expectType(t *testing.T, typ string) frame {
	t.Helper()
	f := p.expectFrame(t)
	if f.Type != typ {
		t.Fatalf("%s: got %v; want a %s frame", p.name, f, typ)
	}
	return f
}

func (p *pipe) expectStatus(t *testing.T, state string) {
	t.Helper()
	if f := p.expectFrame(t); f.Type != "status" || f.State != state {
		t.Fatalf("%s: got %v; want status %s", p.name, f, state)
	}
}

func (p *pipe) expectError(t *testing.T, code string) frame {
	t.Helper()
	f := p.expectFrame(t)
	if f.Type != "error" || f.Error.Code != code {
		t.Fatalf("%s: got %v; want error %s", p.name, f, code)
	}
	return f
}

// expectSessionReady reads session_ready and checks its session and warmth.
func (p *pipe) expectSessionReady(t *testing.T, sessionID string, warm bool) frame {
	t.Helper()
	f := p.expectType(t, "session_ready")
	if f.SessionID != sessionID || f.Warm != warm {
		t.Fatalf("%s: got session_ready{sessionId %q, warm %v}; want {%q, %v}",
			p.name, f.SessionID, f.Warm, sessionID, warm)
	}
	return f
}

func (p *pipe) expectInput(t *testing.T, data string) frame {
	t.Helper()
	f := p.expectFrame(t)
	if f.Type != "input" || f.Data != data {
		t.Fatalf("%s: got %v; want input %q", p.name, f, data)
	}
	return f
}

// expectClose reads the close frame and checks its code.
func (p *pipe) expectClose(t *testing.T, code int) {
	t.Helper()
	s, ok := p.next(t)
	switch {
	case !ok:
		t.Fatalf("%s: socket closed without a close frame; want close %d", p.name, code)
	case !s.close:
		t.Fatalf("%s: got frame %s; want close %d", p.name, s.frame, code)
	case s.code != code:
		t.Fatalf("%s: got close %d (%q); want close %d", p.name, s.code, s.reason, code)
	}
}

// expectQuiet checks that the hub wrote nothing more once every goroutine
// has settled.
func (p *pipe) expectQuiet(t *testing.T) {
	t.Helper()
	synctest.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.read < len(p.written) {
		s := p.written[p.read]
		t.Fatalf("%s: got %q (close %v %d); want nothing written", p.name, s.frame, s.close, s.code)
	}
}

// stopCall is one call of the runner's Stop.
type stopCall struct {
	handle, reason string
}

type fakeTask struct {
	spec    session.TaskSpec
	state   session.TaskState
	reason  string
	created time.Time
	started time.Time
	bridge  *pipe // the hub's side of the task's socket
}

// fakeRunner plays the task platform. Run records the spec and hands the
// test a bridge to drive; Stop stops the task, which ends its bridge (at
// once, or after stopLag as ECS does), and Describe reports per handle.
type fakeRunner struct {
	mu      sync.Mutex // guards the fields below
	tasks   map[string]*fakeTask
	specs   []session.TaskSpec
	stops   []stopCall
	runErrs []error       // returned by the next Run calls, in order
	stopLag time.Duration // how long a task stays STOPPING
	onRun   func(spec session.TaskSpec, handle string, bridge *pipe)
	// onStop runs after each Stop took effect.
	onStop func()
}

func newFakeRunner() *fakeRunner {
	return &fakeRunner{tasks: map[string]*fakeTask{}}
}

func (r *fakeRunner) Run(ctx context.Context, spec session.TaskSpec) (string, error) {
	r.mu.Lock()
	r.specs = append(r.specs, spec)
	if len(r.runErrs) > 0 {
		err := r.runErrs[0]
		r.runErrs = r.runErrs[1:]
		r.mu.Unlock()
		return "", err
	}
	handle := "arn:task/" + spec.TaskID
	bridge := newPipe("bridge " + spec.TaskID)
	now := time.Now()
	r.tasks[handle] = &fakeTask{spec: spec, state: session.TaskRunning, created: now, started: now,
		bridge: bridge}
	onRun := r.onRun
	r.mu.Unlock()
	if onRun != nil {
		onRun(spec, handle, bridge)
	}
	return handle, nil
}

func (r *fakeRunner) Stop(ctx context.Context, handle, reason string) error {
	r.mu.Lock()
	r.stops = append(r.stops, stopCall{handle, reason})
	task := r.tasks[handle]
	onStop := r.onStop
	switch {
	case task == nil || task.state == session.TaskStopped || task.state == session.TaskStopping:
		r.mu.Unlock()
	case r.stopLag > 0:
		task.state, task.reason = session.TaskStopping, reason
		time.AfterFunc(r.stopLag, func() { r.end(handle, reason) })
		r.mu.Unlock()
	default:
		r.mu.Unlock()
		r.end(handle, reason)
	}
	if onStop != nil {
		onStop()
	}
	return nil
}

// end marks a task STOPPED and its bridge gone: the process exited.
// failRuns makes the next Run calls fail with errs, in order.
func (r *fakeRunner) failRuns(errs ...error) {
	r.mu.Lock()
	r.runErrs = append(r.runErrs, errs...)
	r.mu.Unlock()
}

// setOnStop sets the hook run after each Stop.
func (r *fakeRunner) setOnStop(f func()) {
	r.mu.Lock()
	r.onStop = f
	r.mu.Unlock()
}

func (r *fakeRunner) end(handle, reason string) {
	r.mu.Lock()
	task := r.tasks[handle]
	var bridge *pipe
	if task != nil {
		task.state, task.reason = session.TaskStopped, reason
		bridge = task.bridge
	}
	r.mu.Unlock()
	if bridge != nil {
		bridge.hangUp()
	}
}

func (r *fakeRunner) Describe(ctx context.Context, handle string) (session.TaskStatus, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	task := r.tasks[handle]
	if task == nil {
		return session.TaskStatus{State: session.TaskStopped, StopReason: "unknown task " + handle}, nil
	}
	return session.TaskStatus{State: task.state, StopReason: task.reason,
		CreatedAt: task.created, StartedAt: task.started}, nil
}

// addWarm registers a running warm task (started by the refill).
func (r *fakeRunner) addWarm(handle string, bridge *pipe) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	r.tasks[handle] = &fakeTask{spec: session.TaskSpec{Warm: true}, state: session.TaskRunning,
		created: now, started: now, bridge: bridge}
}

func (r *fakeRunner) runs() []session.TaskSpec {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]session.TaskSpec(nil), r.specs...)
}

func (r *fakeRunner) stopCalls() []stopCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]stopCall(nil), r.stops...)
}

// stopsOf returns the reasons given when handle was stopped.
func (r *fakeRunner) stopsOf(handle string) []string {
	var out []string
	for _, c := range r.stopCalls() {
		if c.handle == handle {
			out = append(out, c.reason)
		}
	}
	return out
}

func (r *fakeRunner) state(handle string) session.TaskState {
	st, _ := r.Describe(context.Background(), handle)
	return st.State
}

// logBuffer captures the JSON log lines under test.
type logBuffer = logtest.Buffer

// bridge is a task's bridge as the test plays it.
type bridge struct {
	p      *pipe
	spec   session.TaskSpec
	handle string
	rig    *rig
}

// connect opens the task's socket to the relay.
func (b *bridge) connect() {
	b.rig.serve(func() { b.rig.hub.ServeTask(b.p, b.spec.SessionID, b.spec.TaskID) })
}

func (b *bridge) ready() { b.p.send(map[string]any{"type": "ready", "pid": 42}) }

func (b *bridge) output(data string) { b.p.send(map[string]any{"type": "output", "data": data}) }

// rig is the relay of one machine, wired as the product wires it.
type rig struct {
	t       *testing.T
	store   *localstore.Store
	runner  *fakeRunner
	svc     *session.Service
	hub     *hub.Hub
	logs    *logBuffer
	bridges chan *bridge // one per Run, in order
	wg      sync.WaitGroup

	mu       sync.Mutex // guards pipes
	pipes    []*pipe
	warmGone atomic.Int32
}

// rigConfig is what a test may change in the relay's wiring.
type rigConfig struct {
	hub     hub.Config
	session session.Config
	// restarter replaces the in-process restart workflow when set.
	restarter func(*session.Service) hub.Restarter
}

type rigOption func(*rigConfig)

// newRig builds the relay; call it inside a synctest bubble and defer
// close.
func newRig(t *testing.T, opts ...rigOption) *rig {
	t.Helper()
	cfg := rigConfig{
		hub: hub.Config{RelayID: relayID},
		session: session.Config{
			RelayID:        relayID,
			ClientRelayURL: "ws://127.0.0.1:0/ws",
			TaskRelayURL:   "ws://127.0.0.1:0",
			PollInterval:   50 * time.Millisecond,
		},
	}
	for _, o := range opts {
		o(&cfg)
	}

	store, err := localstore.Open(filepath.Join(t.TempDir(), "state.json"))
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	r := &rig{t: t, store: store, runner: newFakeRunner(), logs: &logBuffer{},
		bridges: make(chan *bridge, 64)}
	log := logging.New(r.logs, "relay", slog.LevelDebug)
	r.runner.onRun = func(spec session.TaskSpec, handle string, p *pipe) {
		r.track(p)
		r.bridges <- &bridge{p: p, spec: spec, handle: handle, rig: r}
	}
	r.svc = session.NewService(cfg.session, session.Deps{
		Store:    store,
		Runner:   r.runner,
		Tickets:  ticket.NewKeyring(ticket.NewKey()),
		TaskKeys: ticket.NewKeyring(ticket.NewKey()),
		Clock:    session.SystemClock{},
		Log:      log,
	})
	var restarter hub.Restarter = workflow.NewLocal(r.svc, 0, log)
	if cfg.restarter != nil {
		restarter = cfg.restarter(r.svc)
	}
	r.hub = hub.New(cfg.hub, r.svc, restarter, log, func() { r.warmGone.Add(1) })
	r.svc.Warm = r.hub
	r.svc.Notifier = r.hub
	return r
}

func withHub(f func(*hub.Config)) rigOption {
	return func(c *rigConfig) { f(&c.hub) }
}

func withWarmPool() rigOption {
	return func(c *rigConfig) { c.session.WarmPool = true }
}

func withRestarter(f func(*session.Service) hub.Restarter) rigOption {
	return func(c *rigConfig) { c.restarter = f }
}

// close shuts the relay down and waits for every socket it served.
func (r *rig) close() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := r.hub.Shutdown(ctx); err != nil {
		r.t.Errorf("Shutdown: %v", err)
	}
	r.mu.Lock()
	for _, p := range r.pipes {
		p.resume()
		p.hangUp()
	}
	r.mu.Unlock()
	r.wg.Wait()
	r.store.Close()
}

func (r *rig) track(p *pipe) {
	r.mu.Lock()
	r.pipes = append(r.pipes, p)
	r.mu.Unlock()
}

func (r *rig) serve(f func()) {
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		f()
	}()
}

// create starts a new session for user, as POST /sessions does.
func (r *rig) create(user string) session.View {
	r.t.Helper()
	v, err := r.svc.Create(context.Background(), session.Request{}, user)
	if err != nil {
		r.t.Fatalf("Create(%s): %v", user, err)
	}
	return v
}

// attach connects a client socket for the user's session.
func (r *rig) attach(user, sessionID string) *pipe {
	p := newPipe("client of " + user)
	r.track(p)
	r.serve(func() { r.hub.ServeClient(p, user, sessionID, false) })
	return p
}

// nextBridge returns the bridge of the next task the runner started.
func (r *rig) nextBridge() *bridge {
	r.t.Helper()
	select {
	case b := <-r.bridges:
		return b
	case <-time.After(waitLimit):
		r.t.Fatalf("no task started within %s", waitLimit)
		return nil
	}
}

// expectNoRun checks that no task was started beyond those taken.
func (r *rig) expectNoRun() {
	r.t.Helper()
	synctest.Wait()
	select {
	case b := <-r.bridges:
		r.t.Fatalf("task %s started; want no new task", b.spec.TaskID)
	default:
	}
}

func (r *rig) session(id string) session.Session {
	r.t.Helper()
	s, err := r.store.GetSession(context.Background(), id)
	if err != nil {
		r.t.Fatalf("read session %s: %v", id, err)
	}
	return s
}

// readySession creates a session for user, connects its task and a client,
// and returns once the client was told the session is ready.
func (r *rig) readySession(user string) (string, *pipe, *bridge) {
	r.t.Helper()
	v := r.create(user)
	id := v.Session.ID
	b := r.nextBridge()
	b.connect()
	c := r.attach(user, id)
	c.expectStatus(r.t, "starting")
	b.ready()
	c.expectStatus(r.t, "ready")
	c.expectSessionReady(r.t, id, false)
	return id, c, b
}
