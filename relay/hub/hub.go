// Package hub pairs the sockets of clients and tasks by session. It owns
// the per-session input queue and kept output (R2), the early-connection
// hold (R3), restarts with their guard and backstop (R5, R6), idle stops
// (R7), and hands claimed warm tasks their user (R8). The relay's HTTP
// surface (package server) authenticates sockets and passes them here.
package hub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aishell/aishell/relay/wire"
	"github.com/aishell/aishell/shared/events"
	"github.com/aishell/aishell/shared/logging"
	"github.com/aishell/aishell/shared/session"
	"github.com/aishell/aishell/shared/workflow"
)

// Restarter runs restart workflows: in process on one machine, Step
// Functions in AWS.
type Restarter interface {
	// StartRestart begins a restart; its outcome arrives on the channel.
	StartRestart(ctx context.Context, in workflow.RestartInput) (<-chan workflow.Outcome, error)
	// TaskConnected is the wait_connection step's callback.
	TaskConnected(sessionID, taskID string)
}

// Config holds the hub's limits and time-outs; zero values take the
// defaults of protocol.md and product.md.
type Config struct {
	RelayID string
	// HoldTimeout bounds how long an early task is held (R3, 5 s).
	HoldTimeout time.Duration
	// StartTimeout bounds a start from the client's view (30 s).
	StartTimeout time.Duration
	// IdleTimeout stops a task with no client and no work (R7, 10 min).
	IdleTimeout time.Duration
	// RestartLimit is the relay's own backstop on a restart (R5, 30 s).
	RestartLimit time.Duration
	// ReconnectWait is how long a live task that lost its socket (a relay
	// restart) may take to reconnect before the session restarts.
	ReconnectWait time.Duration
	// MaxFrame is the largest client frame (64 KiB).
	MaxFrame int
	// MaxQueueMsgs and MaxQueueBytes bound queued input (256, 1 MiB).
	MaxQueueMsgs  int
	MaxQueueBytes int
	// MaxKeptOutput bounds output kept for an absent client (4 MiB).
	MaxKeptOutput int
	// PingInterval is the keep-alive period on every socket (25 s).
	PingInterval time.Duration
	// CrashLimit restarts after task loss within CrashWindow stop the
	// automatic restarts (3 in 1 min); user input tries again.
	CrashLimit  int
	CrashWindow time.Duration
}

func (c *Config) defaults() {
	set := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	set(&c.HoldTimeout, 5*time.Second)
	set(&c.StartTimeout, 30*time.Second)
	set(&c.IdleTimeout, 10*time.Minute)
	set(&c.RestartLimit, workflow.RestartLimit+2*time.Second)
	set(&c.ReconnectWait, 10*time.Second)
	set(&c.PingInterval, 25*time.Second)
	set(&c.CrashWindow, time.Minute)
	if c.MaxFrame == 0 {
		c.MaxFrame = 64 << 10
	}
	if c.MaxQueueMsgs == 0 {
		c.MaxQueueMsgs = 256
	}
	if c.MaxQueueBytes == 0 {
		c.MaxQueueBytes = 1 << 20
	}
	if c.MaxKeptOutput == 0 {
		c.MaxKeptOutput = 4 << 20
	}
	if c.CrashLimit == 0 {
		c.CrashLimit = 3
	}
}

// Hub pairs clients and tasks. It implements session.WarmDispatcher and
// session.Notifier for the session service of the same process.
type Hub struct {
	cfg       Config
	svc       *session.Service
	restarter Restarter
	log       *slog.Logger
	// OnWarmGone is called when a warm task is lost or claimed (refill).
	onWarmGone func()

	mu       sync.Mutex           // guards sessions, warm, changed
	sessions map[string]*sess     // by session id
	warm     map[string]*taskConn // connected, unclaimed warm tasks by task id
	// changed is closed and replaced whenever a session changes, waking
	// tasks held by the early-connection hold (R3).
	changed chan struct{}
	// closing is set once by Shutdown; read without h.mu, so that it may be
	// asked with a session's lock held (lock order is h.mu, then a
	// session's).
	closing atomic.Bool

	quit chan struct{} // closed by Shutdown
	wg   sync.WaitGroup
}

// New returns a hub. onWarmGone may be nil.
func New(cfg Config, svc *session.Service, r Restarter, log *slog.Logger, onWarmGone func()) *Hub {
	cfg.defaults()
	if onWarmGone == nil {
		onWarmGone = func() {}
	}
	return &Hub{
		cfg:        cfg,
		svc:        svc,
		restarter:  r,
		log:        logging.Module(log, "hub"),
		onWarmGone: onWarmGone,
		sessions:   map[string]*sess{},
		warm:       map[string]*taskConn{},
		changed:    make(chan struct{}),
		quit:       make(chan struct{}),
	}
}

// Config returns the hub's configuration with defaults filled in.
func (h *Hub) Config() Config { return h.cfg }

// SessionChanged wakes tasks held for an unknown session (R3).
func (h *Hub) SessionChanged(string) {
	h.mu.Lock()
	close(h.changed)
	h.changed = make(chan struct{})
	h.mu.Unlock()
}

func (h *Hub) changedChan() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.changed
}

// SessionEnded closes the sockets of a deleted session.
func (h *Hub) SessionEnded(id string) {
	h.mu.Lock()
	s := h.sessions[id]
	delete(h.sessions, id)
	h.mu.Unlock()
	if s != nil {
		s.end()
	}
}

// track counts a background goroutine (a restart) that Shutdown waits
// for; it refuses once the relay is shutting down. Add and Wait never
// race: both happen under h.mu's order with the closing flag.
func (h *Hub) track() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closing.Load() {
		return false
	}
	h.wg.Add(1)
	return true
}

// background runs f on its own goroutine, which Shutdown waits for; once
// the relay is shutting down it runs f at once instead.
func (h *Hub) background(f func()) {
	if !h.track() {
		f()
		return
	}
	go func() {
		defer h.wg.Done()
		f()
	}()
}

// forget drops a session's state from the hub when nothing is left in it:
// no client, no task, no restart, no output kept. Sessions would pile up
// in a long-running relay otherwise. It takes h.mu, then the session's.
func (h *Hub) forget(s *sess) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if h.sessions[s.id] != s || s.client != nil || s.task != nil || s.restarting ||
		len(s.kept) > 0 || len(s.queue) > 0 || s.dropped > 0 {
		return
	}
	s.stopIdle()
	s.stopStartWatch()
	delete(h.sessions, s.id)
}

// session returns the hub's state for a session, creating it.
func (h *Hub) session(id, userID, traceID string) *sess {
	h.mu.Lock()
	defer h.mu.Unlock()
	s, ok := h.sessions[id]
	if !ok {
		s = newSess(h, id, userID, traceID)
		h.sessions[id] = s
	}
	return s
}

// Stats is a snapshot of the hub for health checks and the operator.
type Stats struct {
	Sessions      int `json:"sessions"`
	Clients       int `json:"clients"`
	Tasks         int `json:"tasks"`
	WarmAvailable int `json:"warmAvailable"`
}

// Stats counts the hub's sockets.
func (h *Hub) Stats() Stats {
	h.mu.Lock()
	list := make([]*sess, 0, len(h.sessions))
	for _, s := range h.sessions {
		list = append(list, s)
	}
	st := Stats{Sessions: len(list), WarmAvailable: len(h.warm)}
	h.mu.Unlock()
	for _, s := range list {
		s.mu.Lock()
		if s.client != nil {
			st.Clients++
		}
		if s.task != nil {
			st.Tasks++
		}
		s.mu.Unlock()
	}
	return st
}

// SessionInfo is what the relay knows of one session, for operators.
type SessionInfo struct {
	ID         string `json:"sessionId"`
	UserID     string `json:"userId"`
	State      string `json:"state"`
	Client     bool   `json:"client"`
	TaskID     string `json:"taskId,omitempty"`
	Ready      bool   `json:"ready"`
	Busy       bool   `json:"busy"`
	Restarting bool   `json:"restarting"`
	Queued     int    `json:"queued"`
	KeptBytes  int    `json:"keptBytes"`
}

// Sessions lists the sessions the relay holds.
func (h *Hub) Sessions() []SessionInfo {
	h.mu.Lock()
	list := make([]*sess, 0, len(h.sessions))
	for _, s := range h.sessions {
		list = append(list, s)
	}
	h.mu.Unlock()
	out := make([]SessionInfo, 0, len(list))
	for _, s := range list {
		s.mu.Lock()
		info := SessionInfo{
			ID: s.id, UserID: s.userID, State: s.state, Client: s.client != nil,
			Ready: s.ready, Busy: s.busy, Restarting: s.restarting,
			Queued: len(s.queue), KeptBytes: len(s.kept),
		}
		if s.task != nil {
			info.TaskID = s.task.id
		}
		s.mu.Unlock()
		out = append(out, info)
	}
	return out
}

// ServeClient runs a client socket, authenticated for userID and
// sessionID, until it closes. resumed comes from the ticket.
func (h *Hub) ServeClient(t Transport, userID, sessionID string, resumed bool) {
	c := &clientConn{conn: newConn(t, h.cfg.PingInterval), attachedAt: time.Now(), resumed: resumed}
	log := h.log.With(logging.KeySessionID, sessionID, logging.KeyUserID, userID)
	ctx := context.Background()

	if h.isClosing() {
		c.send(errFrame(wire.CodeRelayShuttingDown, "the relay is shutting down; resume the session"))
		c.close(CloseGoingAway, "relay shutting down")
		<-c.done
		return
	}
	rec, err := h.svc.Store.GetSession(ctx, sessionID)
	if err != nil || rec.UserID != userID {
		msg := fmt.Sprintf("session %s not found", sessionID)
		if err != nil && !errors.Is(err, session.ErrNotFound) {
			msg = fmt.Sprintf("read session %s: %v", sessionID, err)
		}
		log.WarnContext(ctx, "client for unknown session", logging.KeyEvent, "client_rejected", "reason", msg)
		c.send(errFrame(wire.CodeSessionNotFound, msg))
		c.close(ClosePolicy, "session not found")
		<-c.done
		return
	}
	s := h.session(rec.ID, rec.UserID, rec.TraceID)
	h.SessionChanged(rec.ID)
	s.attachClient(c, rec)

	reason := h.readLoop(c.conn, func(f []byte) { s.clientFrame(c, f) }, func(code, msg string) {
		c.send(errFrame(code, msg))
	})
	// The client is gone: stop writing, so that what it did not take is
	// known before the session keeps it.
	c.abort()
	<-c.done
	s.detachClient(c, reason)
	h.forget(s)
}

// readLoop reads frames until the socket fails, passing each to handle.
// An oversized frame is answered with MESSAGE_TOO_LARGE and close 1009.
func (h *Hub) readLoop(c *conn, handle func([]byte), reject func(code, msg string)) string {
	for {
		f, err := c.t.ReadFrame()
		if errors.Is(err, ErrFrameTooLarge) {
			reject(wire.CodeMessageTooLarge, fmt.Sprintf("frame over the %d byte limit", h.cfg.MaxFrame))
			c.close(CloseTooLarge, "frame too large")
			<-c.done
			return "frame too large"
		}
		if errors.Is(err, ErrBinaryFrame) {
			reject(wire.CodeBadMessage, "binary frames are not accepted; send JSON text frames")
			continue
		}
		if err != nil {
			return closeReason(err)
		}
		handle(f)
	}
}

func (h *Hub) isClosing() bool {
	return h.closing.Load()
}

// Shutdown tells every client to reconnect (RELAY_SHUTTING_DOWN, close
// 1001) after what was already queued for it, closes task sockets, and
// waits for the sockets to flush or ctx to end.
func (h *Hub) Shutdown(ctx context.Context) error {
	h.mu.Lock()
	if h.closing.Load() {
		h.mu.Unlock()
		return nil
	}
	h.closing.Store(true)
	close(h.quit)
	list := make([]*sess, 0, len(h.sessions))
	for _, s := range h.sessions {
		list = append(list, s)
	}
	warm := make([]*taskConn, 0, len(h.warm))
	for _, tc := range h.warm {
		warm = append(warm, tc)
	}
	h.mu.Unlock()

	var conns []*conn
	for _, s := range list {
		conns = append(conns, s.shutdown()...)
	}
	for _, tc := range warm {
		tc.close(CloseGoingAway, "relay shutting down")
		conns = append(conns, tc.conn)
	}
	for _, c := range conns {
		select {
		case <-c.done:
		case <-ctx.Done():
			return fmt.Errorf("shutdown: sockets still flushing: %w", ctx.Err())
		}
	}
	done := make(chan struct{})
	go func() { h.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("shutdown: restarts still running: %w", ctx.Err())
	}
}

func errFrame(code, msg string) wire.Error {
	return wire.Error{Type: wire.TypeError, Error: wire.ErrorBody{Code: code, Message: msg}}
}

func statusFrame(state string) wire.Status {
	return wire.Status{Type: wire.TypeStatus, State: state}
}

func closeReason(err error) string {
	if err == nil {
		return "closed"
	}
	return err.Error()
}

// logEvent writes one R13 event line.
func logEvent(ctx context.Context, l *slog.Logger, level slog.Level, event, msg string, attrs ...slog.Attr) {
	logging.Event(ctx, l, level, event, msg, attrs...)
}

func phase(p string) slog.Attr { return slog.String(events.FieldPhase, p) }
