package bridge

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/sys/unix"

	"github.com/aishell/aishell/relay/wire"
	"github.com/aishell/aishell/shared/logging"
	"github.com/aishell/aishell/shared/workspace"
)

// Timing and sizes of the relay connection and the agent's streams.
const (
	readBuffer = 32 << 10
	// busyInterval is how often the terminal's foreground group is looked
	// at besides on every output. The kernel tells nobody when a shell
	// hands its terminal to a command, and a command that writes nothing
	// (sleep, a long build with quiet output) gives no output to look at,
	// so this is the one place the bridge polls.
	busyInterval = 200 * time.Millisecond
	pingInterval = 20 * time.Second
	// readTimeout drops a connection that has been silent, pongs included,
	// for this long.
	readTimeout  = 3 * pingInterval
	writeTimeout = 10 * time.Second
	// closeWait bounds the wait for the relay's reply to our close.
	closeWait = time.Second
	// drainWait bounds the reading of the agent's last output once it has
	// exited, in case something that left its session holds the terminal.
	drainWait = time.Second
	// reapWait bounds the wait for a killed agent to be reaped at the end.
	reapWait     = 5 * time.Second
	backoffStart = 100 * time.Millisecond
	backoffMax   = 2 * time.Second
	// maxQueuedInputs is how many input frames wait for the agent before
	// the bridge stops reading its socket.
	maxQueuedInputs = 256
	maxFrameRead    = 1 << 20
	defaultCols     = 80
	defaultRows     = 24
)

// Event names of the bridge's log lines.
const (
	evBridgeStarted      = "bridge_started"
	evBridgeStopped      = "bridge_stopped"
	evRelayConnected     = "relay_connected"
	evRelayConnectFailed = "relay_connect_failed"
	evRelayDisconnected  = "relay_disconnected"
	evRelayRefused       = "relay_refused_task"
	evRelayFrameInvalid  = "relay_frame_invalid"
	evInitUser           = "init_user_received"
	evInitUserIgnored    = "init_user_ignored"
	evWorkspacePrepared  = "workspace_prepared"
	evIsolationOff       = "isolation_off"
	evAgentStarted       = "agent_started"
	evAgentStartFailed   = "agent_start_failed"
	evAgentExited        = "agent_exited"
	evAgentStopping      = "agent_stopping"
	evAgentKilled        = "agent_killed"
	evOutputDropped      = "output_dropped"
)

// Run runs one bridge until its agent has ended or it was stopped; see the
// package comment for when it returns an error. Stopping ctx stops the agent
// as a relay shutdown frame does. Run makes its process non-dumpable, so that
// an agent running as the same user cannot read the task's credential from
// /proc.
func Run(ctx context.Context, cfg Config, logger *slog.Logger) error {
	cfg = cfg.withDefaults()
	logger = logger.With(logging.KeyTaskArn, cfg.TaskID)
	b, err := newBridge(cfg, logger)
	if err != nil {
		logging.Event(ctx, logger, slog.LevelError, evBridgeStopped, err.Error(),
			slog.String("reason", err.Error()), slog.Int("exitStatus", 1))
		return err
	}
	_ = unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0)

	logging.Event(ctx, b.log, slog.LevelInfo, evBridgeStarted, "bridge started",
		slog.Bool("warm", cfg.Warm), slog.String("mode", string(cfg.Mode)),
		slog.String("relay", b.base), slog.String("workspaceRoot", cfg.WorkspaceRoot))

	res := b.loop(ctx)
	b.cleanup()
	if n := b.out.takeDropped(); n > 0 {
		logging.Event(ctx, b.log, slog.LevelWarn, evOutputDropped,
			"agent output dropped while the relay was out of reach", slog.Int("bytes", n))
	}

	level, status := slog.LevelInfo, 0
	if res.err != nil {
		level, status = slog.LevelError, 1
	}
	logging.Event(context.WithoutCancel(ctx), b.log, level, evBridgeStopped, res.reason,
		slog.String("reason", res.reason), slog.Int("exitStatus", status))
	return res.err
}

// outcome is how a bridge ended: the reason, and an error when it failed.
type outcome struct {
	reason string
	err    error
}

func failed(err error) outcome { return outcome{reason: err.Error(), err: err} }

// bridge is one run of a bridge.
type bridge struct {
	cfg    Config
	base   string
	dialer websocket.Dialer

	out *outbox
	// inputs carries input frames from the socket readers to the input
	// writer, in order.
	inputs chan string
	// inputSeen tells the loop that input reached a pipes-mode agent.
	inputSeen chan struct{}
	// initUser carries a warm task's init_user frame to the loop.
	initUser chan wire.InitUser
	// stopReq carries the reason of the relay's shutdown frame.
	stopReq chan string
	// quit is closed when the bridge ends, releasing every goroutine.
	quit       chan struct{}
	dialCtx    context.Context
	dialCancel context.CancelFunc
	wg         sync.WaitGroup

	mu sync.Mutex // guards agent, cols and rows, which socket readers use
	// agent is set once, when the agent has started.
	agent      *agent
	cols, rows int

	// The fields below belong to the loop goroutine alone.
	log       *slog.Logger
	sessionID string
	userID    string
	uid       int
	link      *link
	dials     <-chan dialResult
	// busy is the agent's state; sentBusy what the relay was last told,
	// busyUnsent that the relay must be told again (a new connection).
	busy       bool
	sentBusy   bool
	busyUnsent bool
}

func newBridge(cfg Config, logger *slog.Logger) (*bridge, error) {
	base, err := relayBase(cfg.RelayURL)
	if err != nil {
		return nil, fmt.Errorf("bridge configuration: relay URL: %w", err)
	}
	switch {
	case cfg.Warm && cfg.TaskID == "":
		return nil, errors.New("bridge configuration: a warm task needs its task id")
	case !cfg.Warm && (cfg.SessionID == "" || cfg.UserID == ""):
		return nil, errors.New("bridge configuration: a cold task needs its session and user")
	case cfg.WorkspaceRoot == "":
		return nil, errors.New("bridge configuration: no workspace root")
	case cfg.UID < 0:
		return nil, fmt.Errorf("bridge configuration: negative uid %d", cfg.UID)
	}
	b := &bridge{
		cfg:  cfg,
		base: base,
		dialer: websocket.Dialer{
			Proxy:            http.ProxyFromEnvironment,
			HandshakeTimeout: writeTimeout,
			ReadBufferSize:   readBuffer,
			WriteBufferSize:  readBuffer,
		},
		out:       newOutbox(maxBuffered),
		inputs:    make(chan string, maxQueuedInputs),
		inputSeen: make(chan struct{}, 1),
		initUser:  make(chan wire.InitUser, 1),
		stopReq:   make(chan string, 1),
		quit:      make(chan struct{}),
		cols:      defaultCols,
		rows:      defaultRows,
		log:       logger,
	}
	b.dialCtx, b.dialCancel = context.WithCancel(context.Background())
	if !cfg.Warm {
		b.setUser(cfg.SessionID, cfg.UserID, cfg.UID)
	}
	return b, nil
}

// setUser records the task's session and user and names them in the log.
func (b *bridge) setUser(sessionID, userID string, uid int) {
	b.sessionID, b.userID, b.uid = sessionID, userID, uid
	b.log = b.log.With(logging.KeySessionID, sessionID, logging.KeyUserID, userID)
}

// socketURL is the task socket to dial: the session's once it is known.
func (b *bridge) socketURL() string {
	if b.sessionID != "" {
		return taskURL(b.base, b.sessionID)
	}
	return warmURL(b.base, b.cfg.TaskID)
}

// loop is the bridge's one decision maker: it owns the connection, starts
// and stops the agent, and moves output to the relay. Everything that
// happens elsewhere reaches it over a channel.
func (b *bridge) loop(ctx context.Context) outcome {
	var (
		a          *agent
		linkDone   <-chan struct{}
		exited     <-chan struct{}
		outputDone chan struct{}
		ctxDone    = ctx.Done()

		// ended is set when the agent has exited, outputOver when its last
		// output is in the outbox.
		ended      bool
		outputOver bool
		endReason  string
		endCode    int

		// stopReason is why the bridge stops the agent; failure is set
		// when the bridge must end with an error once the agent is gone.
		stopReason string
		failure    error
		stopping   bool
		killTimer  *time.Timer
		killC      <-chan time.Time
	)
	busyTick := time.NewTicker(busyInterval)
	defer busyTick.Stop()
	pingTick := time.NewTicker(pingInterval)
	defer pingTick.Stop()
	quiet := time.NewTimer(time.Hour)
	quiet.Stop()
	defer func() {
		if killTimer != nil {
			killTimer.Stop()
		}
	}()

	// stop starts stopping the agent. It reports whether the bridge can
	// end at once because there is no agent.
	stop := func(why string) bool {
		if stopReason == "" {
			stopReason = why
		}
		if a == nil {
			return true
		}
		if stopping || ended {
			return false
		}
		stopping = true
		logging.Event(ctx, b.log, slog.LevelInfo, evAgentStopping, why,
			slog.String("reason", why), slog.Int("pid", a.pid))
		a.signal(syscall.SIGHUP)
		a.signal(syscall.SIGTERM)
		killTimer = time.NewTimer(b.cfg.StopGrace)
		killC = killTimer.C
		return false
	}
	// fail ends the bridge with err once the agent is gone.
	fail := func(err error) bool {
		if failure == nil {
			failure = err
		}
		return stop(err.Error())
	}
	// begin starts the agent and tells the relay, or tells it why not.
	begin := func() error {
		var err error
		a, err = b.startAgent(ctx)
		if err != nil {
			reason := "agent failed to start: " + err.Error()
			logging.Event(ctx, b.log, slog.LevelError, evAgentStartFailed, reason,
				slog.String("reason", reason))
			b.send(wire.Shutdown{Type: wire.TypeShutdown, Reason: reason})
			b.closeLink()
			return errors.New(reason)
		}
		exited = a.exited
		outputDone = make(chan struct{})
		b.wg.Add(2)
		go b.readOutput(a, outputDone)
		go b.writeInputs(a)
		b.send(wire.Ready{Type: wire.TypeReady, PID: a.pid})
		return nil
	}

	b.dials = b.dial(b.socketURL())
	for {
		if ended && outputOver {
			shutdown := endReason
			if stopReason != "" {
				shutdown = stopReason + " (" + endReason + ")"
			}
			if failure != nil {
				return failed(failure)
			}
			if b.link != nil && !b.link.broken {
				b.flush()
				b.send(wire.Shutdown{Type: wire.TypeShutdown, Reason: shutdown, ExitCode: endCode})
				if !b.link.broken {
					b.closeLink()
					return outcome{reason: shutdown}
				}
			}
			// With no connection, wait for the one being dialled, unless the
			// bridge was told to stop: then nobody waits for the news.
			if b.link == nil && (b.dials == nil || stopReason != "") {
				return outcome{reason: shutdown}
			}
		}

		select {
		case r := <-b.dials:
			b.dials = nil
			if r.err != nil {
				if a == nil || ended {
					return failed(r.err)
				}
				fail(r.err)
				continue
			}
			b.link = b.attach(r.conn, r.path)
			linkDone = b.link.done
			if n := b.out.takeDropped(); n > 0 {
				logging.Event(ctx, b.log, slog.LevelWarn, evOutputDropped,
					"agent output dropped while the relay was out of reach",
					slog.Int("bytes", n))
			}
			switch {
			case a != nil && !ended && !stopping:
				b.send(wire.Ready{Type: wire.TypeReady, PID: a.pid})
				b.busyUnsent = true
				b.flush()
			case a != nil:
				b.flush()
			case !b.cfg.Warm:
				if err := begin(); err != nil {
					return failed(err)
				}
			}

		case <-linkDone:
			l := b.link
			b.link, linkDone = nil, nil
			b.out.setLinked(false)
			l.conn.Close()
			if ce, ok := errors.AsType[*websocket.CloseError](l.cause()); ok &&
				ce.Code == websocket.ClosePolicyViolation {
				err := fmt.Errorf("relay refused the task: %s", ce.Text)
				logging.Event(ctx, b.log, slog.LevelError, evRelayRefused, err.Error(),
					slog.String("reason", ce.Text))
				if fail(err) {
					return failed(err)
				}
				continue
			}
			logging.Event(ctx, b.log, slog.LevelWarn, evRelayDisconnected, "relay connection lost",
				slog.String("error", l.cause().Error()))
			if !stopping && failure == nil {
				b.dials = b.dial(b.socketURL())
			}

		case iu := <-b.initUser:
			if a != nil || !b.cfg.Warm || b.sessionID != "" {
				logging.Event(ctx, b.log, slog.LevelWarn, evInitUserIgnored,
					"init_user for a task that has its user", slog.String("to", iu.SessionID))
				continue
			}
			if iu.SessionID == "" || iu.UserID == "" || iu.UID < 0 {
				err := fmt.Errorf("bad init_user: session %q, user %q, uid %d",
					iu.SessionID, iu.UserID, iu.UID)
				reason := "agent failed to start: " + err.Error()
				b.send(wire.Shutdown{Type: wire.TypeShutdown, Reason: reason})
				b.closeLink()
				return failed(errors.New(reason))
			}
			b.setUser(iu.SessionID, iu.UserID, iu.UID)
			logging.Event(ctx, b.log, slog.LevelInfo, evInitUser, "warm task claimed",
				slog.Int("uid", iu.UID))
			if err := begin(); err != nil {
				return failed(err)
			}

		case <-exited:
			exited = nil
			ended = true
			endReason, endCode = exitReason(a.state)
			logging.Event(ctx, b.log, slog.LevelInfo, evAgentExited, endReason,
				slog.Int("pid", a.pid), slog.Int("exitCode", endCode))
			if killTimer != nil {
				killTimer.Stop()
				killC = nil
			}
			a.sweep()
			_ = a.out.SetReadDeadline(time.Now().Add(drainWait))

		case <-outputDone:
			outputDone = nil
			outputOver = true
			b.flush()

		case <-ctxDone:
			ctxDone = nil
			if stop("bridge stopped: " + context.Cause(ctx).Error()) {
				b.closeLink()
				return outcome{reason: stopReason}
			}

		case why := <-b.stopReq:
			if why == "" {
				why = "shutdown requested"
			}
			if stop("stopped by the relay: " + why) {
				b.closeLink()
				return outcome{reason: stopReason}
			}

		case <-killC:
			killC = nil
			logging.Event(ctx, b.log, slog.LevelWarn, evAgentKilled,
				"agent still running after the grace period", slog.Int("pid", a.pid))
			a.signal(syscall.SIGKILL)
			a.sweep()

		case <-b.out.ready:
			if a != nil && a.mode == ModePipes && b.busy {
				quiet.Reset(b.cfg.QuietPeriod)
			}
			b.checkBusy(a)
			b.flush()

		case <-busyTick.C:
			if b.checkBusy(a) {
				b.flush()
			}

		case <-b.inputSeen:
			b.busy = true
			quiet.Reset(b.cfg.QuietPeriod)
			b.flush()

		case <-quiet.C:
			b.busy = false
			b.flush()

		case <-pingTick.C:
			if l := b.link; l != nil && !l.broken {
				if err := l.conn.WriteControl(websocket.PingMessage, nil,
					time.Now().Add(writeTimeout)); err != nil {
					b.broke(l, err)
				}
			}
		}
	}
}

// checkBusy updates the busy state of a pty-mode agent and reports whether
// it changed.
func (b *bridge) checkBusy(a *agent) bool {
	if a == nil || a.mode != ModePTY || !a.running() {
		return false
	}
	busy := a.busy()
	changed := busy != b.busy
	b.busy = busy
	return changed
}

// startAgent prepares the workspace and starts the agent in it.
func (b *bridge) startAgent(ctx context.Context) (*agent, error) {
	dir, err := workspace.Prepare(b.cfg.WorkspaceRoot, b.userID, b.uid)
	if err != nil {
		return nil, fmt.Errorf("prepare workspace: %w", err)
	}
	logging.Event(ctx, b.log, slog.LevelInfo, evWorkspacePrepared, "workspace ready",
		slog.String("dir", dir))

	isolate := os.Geteuid() == 0 && b.uid > 0
	if !isolate {
		why := "the bridge does not run as root"
		if os.Geteuid() == 0 {
			why = "the user has no uid"
		}
		logging.Event(ctx, b.log, slog.LevelWarn, evIsolationOff,
			"agent isolation is off: "+why+"; the agent runs as the bridge's user",
			slog.Int("uid", os.Geteuid()))
	}

	shell := loginShell("/etc/passwd", os.Getuid(), os.Getenv)
	argv, arg0, err := agentCommand(b.cfg.AgentCommand, shell)
	if err != nil {
		return nil, err
	}
	env := agentEnv(dir, envSafe(b.userID), shell, os.Getenv("PATH"), b.cfg.Mode)

	b.mu.Lock()
	defer b.mu.Unlock()
	a, err := startAgent(agentSpec{
		argv:    argv,
		arg0:    arg0,
		dir:     dir,
		env:     env,
		mode:    b.cfg.Mode,
		uid:     b.uid,
		isolate: isolate,
		cols:    b.cols,
		rows:    b.rows,
	})
	if err != nil {
		return nil, err
	}
	b.agent = a
	logging.Event(ctx, b.log, slog.LevelInfo, evAgentStarted, "agent started",
		slog.Int("pid", a.pid), slog.Any("command", argv), slog.Bool("isolated", isolate),
		slog.Int("uid", b.uid), slog.String("mode", string(b.cfg.Mode)))
	return a, nil
}

// envSafe makes a value fit for an environment variable: no NUL bytes.
func envSafe(v string) string {
	return strings.ReplaceAll(v, "\x00", "?")
}

// resize records the terminal size and applies it to a running agent.
func (b *bridge) resize(cols, rows int) {
	if cols <= 0 || rows <= 0 || cols > 0xffff || rows > 0xffff {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.cols, b.rows = cols, rows
	if b.agent != nil {
		// A resize that races the agent's end has nothing left to size.
		_ = b.agent.resize(cols, rows)
	}
}

// readOutput moves the agent's output into the outbox until its terminal or
// pipe ends.
func (b *bridge) readOutput(a *agent, done chan<- struct{}) {
	defer b.wg.Done()
	defer close(done)
	var dec textDecoder
	buf := make([]byte, readBuffer)
	for {
		n, err := a.out.Read(buf)
		if n > 0 {
			if text := dec.decode(buf[:n]); text != "" {
				b.out.put(text)
			}
		}
		if err != nil {
			// EIO (the terminal's last user closed it), EOF (the pipe's),
			// a closed file or the drain deadline: all mean the end.
			if text := dec.flush(); text != "" {
				b.out.put(text)
			}
			return
		}
	}
}

// writeInputs writes input frames to the agent, in order.
func (b *bridge) writeInputs(a *agent) {
	defer b.wg.Done()
	for {
		select {
		case data := <-b.inputs:
			if _, err := io.WriteString(a.in, data); err != nil {
				// The agent is gone or going; its exit is reported.
				return
			}
			if a.mode == ModePipes {
				select {
				case b.inputSeen <- struct{}{}:
				default:
				}
			}
		case <-a.exited:
			return
		case <-b.quit:
			return
		}
	}
}

// cleanup makes sure nothing the bridge started outlives Run.
func (b *bridge) cleanup() {
	b.mu.Lock()
	a := b.agent
	b.mu.Unlock()
	if a != nil {
		if a.running() {
			a.signal(syscall.SIGKILL)
			select {
			case <-a.exited:
			case <-time.After(reapWait):
			}
		}
		a.sweep()
	}

	b.out.close()
	close(b.quit)
	if a != nil {
		a.closeFiles()
	}
	if b.link != nil {
		b.link.conn.Close()
		b.link = nil
	}
	b.dialCancel()
	b.wg.Wait()
	if b.dials != nil {
		if r := <-b.dials; r.conn != nil {
			r.conn.Close()
		}
	}
}

// flush sends the output waiting in the outbox, then the busy state if the
// relay has not heard it yet.
func (b *bridge) flush() {
	l := b.link
	if l == nil || l.broken {
		return
	}
	parts := coalesce(b.out.take(), maxFrameData)
	for i, p := range parts {
		if !b.send(wire.Output{Type: wire.TypeOutput, Data: p}) {
			b.out.giveBack(parts[i:])
			return
		}
	}
	b.mu.Lock()
	started := b.agent != nil
	b.mu.Unlock()
	if started && (b.busy != b.sentBusy || b.busyUnsent) {
		if b.send(wire.Processing{Type: wire.TypeProcessing, Busy: b.busy}) {
			b.sentBusy, b.busyUnsent = b.busy, false
		}
	}
}

// send writes one frame to the relay and reports whether it went out. A
// failed write breaks the connection; the loop hears of it from the reader.
func (b *bridge) send(frame any) bool {
	l := b.link
	if l == nil || l.broken {
		return false
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(frame); err != nil {
		// Only our own frame types pass here; they always encode.
		panic(fmt.Sprintf("encode %T: %v", frame, err))
	}
	_ = l.conn.SetWriteDeadline(time.Now().Add(writeTimeout))
	data := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	if err := l.conn.WriteMessage(websocket.TextMessage, data); err != nil {
		b.broke(l, err)
		return false
	}
	return true
}

// broke marks a connection whose write failed. Its reader is given a
// moment to read what the relay sent before the failure (a close frame
// that says why), then ends.
func (b *bridge) broke(l *link, err error) {
	l.broken = true
	l.writeErr = err
	l.winding.Store(true)
	_ = l.conn.SetReadDeadline(time.Now().Add(brokenReadWait))
}

// brokenReadWait is how long the reader of a connection whose write
// failed may still read.
const brokenReadWait = time.Second

// closeLink closes the connection normally and waits briefly for the
// relay's answer.
func (b *bridge) closeLink() {
	l := b.link
	if l == nil {
		return
	}
	b.link = nil
	b.out.setLinked(false)
	if !l.broken {
		msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
		if err := l.conn.WriteControl(websocket.CloseMessage, msg,
			time.Now().Add(writeTimeout)); err == nil {
			t := time.NewTimer(closeWait)
			select {
			case <-l.done:
			case <-t.C:
			}
			t.Stop()
		}
	}
	l.conn.Close()
}

// link is one connection to the relay.
type link struct {
	conn *websocket.Conn
	// done is closed when the reader has ended; readErr says why.
	done    chan struct{}
	readErr error
	// broken and writeErr are the loop's: a write failed.
	broken   bool
	writeErr error
	// winding is set with broken, for the reader: stop extending the read
	// deadline.
	winding atomic.Bool
}

// cause is why the connection ended. Call it after done is closed.
func (l *link) cause() error {
	// The relay's close frame says why, even when a write failed first.
	if _, ok := errors.AsType[*websocket.CloseError](l.readErr); ok {
		return l.readErr
	}
	if l.writeErr != nil {
		return l.writeErr
	}
	if l.readErr != nil {
		return l.readErr
	}
	return errors.New("connection closed")
}

// attach starts reading a new connection.
func (b *bridge) attach(conn *websocket.Conn, path string) *link {
	l := &link{conn: conn, done: make(chan struct{})}
	conn.SetReadLimit(maxFrameRead)
	extend := func() {
		if !l.winding.Load() {
			_ = conn.SetReadDeadline(time.Now().Add(readTimeout))
		}
	}
	conn.SetPongHandler(func(string) error { extend(); return nil })
	conn.SetPingHandler(func(data string) error {
		extend()
		err := conn.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(writeTimeout))
		if err != nil && !errors.Is(err, websocket.ErrCloseSent) {
			return err
		}
		return nil
	})
	b.out.setLinked(true)
	b.wg.Add(1)
	go b.read(l, b.log)
	logging.Event(context.Background(), b.log, slog.LevelInfo, evRelayConnected,
		"connected to the relay", slog.String("path", path))
	return l
}

// read hands the frames of one connection to where they go, until it ends.
func (b *bridge) read(l *link, log *slog.Logger) {
	defer b.wg.Done()
	defer close(l.done)
	for {
		if !l.winding.Load() {
			_ = l.conn.SetReadDeadline(time.Now().Add(readTimeout))
		}
		_, data, err := l.conn.ReadMessage()
		if err != nil {
			l.readErr = err
			return
		}
		var f wire.Inbound
		if err := json.Unmarshal(data, &f); err != nil {
			logging.Event(context.Background(), log, slog.LevelWarn, evRelayFrameInvalid,
				"frame from the relay is not JSON", slog.String("error", err.Error()))
			continue
		}
		switch f.Type {
		case wire.TypeInput:
			select {
			case b.inputs <- f.Data:
			case <-b.quit:
				return
			}
		case wire.TypeResize:
			b.resize(f.Cols, f.Rows)
		case wire.TypeShutdown:
			select {
			case b.stopReq <- f.Reason:
			default:
			}
		case wire.TypeInitUser:
			var iu wire.InitUser
			if err := json.Unmarshal(data, &iu); err != nil {
				continue
			}
			select {
			case b.initUser <- iu:
			default:
			}
		default:
			log.Debug("frame of an unknown type ignored", logging.KeyEvent, evRelayFrameInvalid,
				"frameType", f.Type)
		}
	}
}

// dialResult is the end of a dial: a connection, or why there is none.
type dialResult struct {
	conn *websocket.Conn
	path string
	err  error
}

// dial connects to target in the background, retrying with exponential
// back-off until the reconnect window has passed.
func (b *bridge) dial(target string) <-chan dialResult {
	ch := make(chan dialResult, 1)
	deadline := time.Now().Add(b.cfg.ReconnectWindow)
	log := b.log
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		ch <- b.dialUntil(target, deadline, log)
	}()
	return ch
}

func (b *bridge) dialUntil(target string, deadline time.Time, log *slog.Logger) dialResult {
	header := http.Header{"Authorization": {"Bearer " + b.cfg.Credential}}
	path := target
	if u, err := url.Parse(target); err == nil {
		path = u.Path
	}
	wait := backoffStart
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithDeadline(b.dialCtx, deadline)
		conn, resp, err := b.dialer.DialContext(ctx, target, header)
		cancel()
		if err == nil {
			return dialResult{conn: conn, path: path}
		}
		status := 0
		if resp != nil {
			status = resp.StatusCode
			err = fmt.Errorf("HTTP %d: %w", status, err)
		}
		logging.Event(context.Background(), log, slog.LevelWarn, evRelayConnectFailed,
			"could not connect to the relay", slog.String("path", path),
			slog.Int("attempt", attempt), slog.Int("status", status),
			slog.String("error", err.Error()))

		if status == http.StatusUnauthorized || status == http.StatusForbidden {
			return dialResult{err: fmt.Errorf("relay refused the task: %w", err)}
		}
		if b.dialCtx.Err() != nil {
			return dialResult{err: fmt.Errorf("connect to the relay: %w", b.dialCtx.Err())}
		}
		if time.Now().Add(wait).After(deadline) {
			return dialResult{err: fmt.Errorf("relay out of reach for %s: %w",
				b.cfg.ReconnectWindow, err)}
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-b.dialCtx.Done():
			t.Stop()
			return dialResult{err: fmt.Errorf("connect to the relay: %w", b.dialCtx.Err())}
		}
		wait = min(2*wait, backoffMax)
	}
}
