package session

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/aishell/aishell/shared/events"
	"github.com/aishell/aishell/shared/logging"
	"github.com/aishell/aishell/shared/ticket"
)

// Errors of the session API beside the store's.
var (
	// ErrForbidden: the session belongs to another user.
	ErrForbidden = errors.New("session belongs to another user")
	// ErrBusy: another start of the same session won; the caller reads
	// the session again.
	ErrBusy = errors.New("session is being started by another request")
)

// StartError is a failed task start: the step, the runner's error code and
// the concrete cause. The relay sends it as TASK_START_FAILED or
// TASK_RESTART_FAILED; the API as 503 when NoCapacity says so.
type StartError struct {
	Step string
	Code string
	Err  error
}

func (e *StartError) Error() string {
	if e.Code != "" {
		return fmt.Sprintf("%s: %s: %v", e.Step, e.Code, e.Err)
	}
	return fmt.Sprintf("%s: %v", e.Step, e.Err)
}
func (e *StartError) Unwrap() error     { return e.Err }
func (e *StartError) ErrorCode() string { return e.Code }

// Codes that mean "no capacity now, try again": the API answers 503.
var capacityCodes = map[string]bool{
	"NoCapacity":          true,
	"ThrottlingException": true,
	"ResourceLimit":       true,
}

// IsCapacity reports whether err means the platform had no capacity.
func IsCapacity(err error) bool {
	code := ErrorCode(err)
	return capacityCodes[code] || strings.HasPrefix(code, "RESOURCE:")
}

// Notifier lets the relay that owns a session hear of changes made by the
// session API at once. On one machine the relay implements it in process.
type Notifier interface {
	// SessionChanged says the session's record changed (a task was
	// assigned to it), waking a task that connected early (R3).
	SessionChanged(sessionID string)
	// SessionEnded says the session was deleted.
	SessionEnded(sessionID string)
}

// Config is what varies between environments.
type Config struct {
	// RelayID names the relay that owns new sessions.
	RelayID string
	// ClientRelayURL is the client socket URL handed to clients.
	ClientRelayURL string
	// TaskRelayURL is the relay's base URL as tasks reach it.
	TaskRelayURL string
	// TicketTTL is how long a client ticket is valid (default 60 s).
	TicketTTL time.Duration
	// TaskCredentialTTL is how long a task credential is valid (24 h).
	TaskCredentialTTL time.Duration
	// WarmPool turns warm claims on (ENABLE_WARM_POOL).
	WarmPool bool
	// StopWait bounds the wait for an old task to stop (R4, 10 s).
	StopWait time.Duration
	// PollInterval is how often a task's state is read while waiting.
	PollInterval time.Duration
	// StaleRestart is how old a "restarting" record must be before a
	// resume takes the session over (the restart's owner died).
	StaleRestart time.Duration
	// AssignRelays gives each new session to a healthy relay from the
	// store by rendezvous hashing (several relays, in AWS); otherwise every
	// session belongs to RelayID.
	AssignRelays bool
	// RelayMaxAge is how old a relay's heartbeat may be for it to count as
	// healthy (90 s).
	RelayMaxAge time.Duration
}

func (c *Config) defaults() {
	if c.TicketTTL == 0 {
		c.TicketTTL = time.Minute
	}
	if c.TaskCredentialTTL == 0 {
		c.TaskCredentialTTL = 24 * time.Hour
	}
	if c.StopWait == 0 {
		c.StopWait = 10 * time.Second
	}
	if c.PollInterval == 0 {
		c.PollInterval = 250 * time.Millisecond
	}
	if c.StaleRestart == 0 {
		c.StaleRestart = time.Minute
	}
	if c.RelayMaxAge == 0 {
		c.RelayMaxAge = 90 * time.Second
	}
}

// Deps are the ports the service works through.
type Deps struct {
	Store  Store
	Runner TaskRunner
	// Warm hands claimed warm tasks their user; nil turns claims off.
	Warm WarmDispatcher
	// Notifier is told of changes; may be nil.
	Notifier Notifier
	// Tickets signs client tickets; TaskKeys signs task credentials.
	Tickets  *ticket.Keyring
	TaskKeys *ticket.Keyring
	Clock    Clock
	Log      *slog.Logger
	// OnWarmClaim is called after a warm task was claimed (refill kick).
	OnWarmClaim func()
}

// Service carries out the session rules.
type Service struct {
	cfg Config
	Deps
}

// NewService returns a service with cfg's defaults filled in.
func NewService(cfg Config, deps Deps) *Service {
	cfg.defaults()
	if deps.Clock == nil {
		deps.Clock = SystemClock{}
	}
	if deps.Log == nil {
		deps.Log = logging.Discard()
	}
	return &Service{cfg: cfg, Deps: deps}
}

// Config returns the service's configuration with defaults filled in.
func (s *Service) Config() Config { return s.cfg }

// View is a session as the API answers it.
type View struct {
	Session         Session
	Ticket          string
	TicketExpiresAt time.Time
	// Created is true for a new session, false for a resumed one.
	Created bool
	// RelayURL is the client socket URL of the session's relay.
	RelayURL string
}

// Request carries the ids of the calling request, for logs.
type Request struct {
	TraceID   string
	RequestID string
}

func (s *Service) logger(r Request, sess Session) *slog.Logger {
	l := s.Log
	if r.TraceID != "" {
		l = l.With(logging.KeyTraceID, r.TraceID)
	}
	if r.RequestID != "" {
		l = l.With(logging.KeyRequestID, r.RequestID)
	}
	if sess.ID != "" {
		l = l.With(logging.KeySessionID, sess.ID, logging.KeyUserID, sess.UserID)
	}
	return l
}

// Create makes a new session for userID and starts its task (warm if one
// is free, else cold). It does not wait for the task.
func (s *Service) Create(ctx context.Context, r Request, userID string) (View, error) {
	now := s.Clock.Now()
	id := NewID("s_")
	relay, err := s.assignRelay(ctx, id)
	if err != nil {
		return View{}, err
	}
	sess, err := s.Store.CreateSession(ctx, Session{
		ID:        id,
		UserID:    userID,
		State:     StateStarting,
		RelayID:   relay.ID,
		TraceID:   r.TraceID,
		CreatedAt: now,
		UpdatedAt: now,
	})
	if err != nil {
		return View{}, fmt.Errorf("create session: %w", err)
	}
	log := s.logger(r, sess)

	sess, err = s.StartTask(ctx, r, sess, false)
	if err != nil {
		// The caller never hears of this session: leave no record of it.
		if cur, gerr := s.Store.GetSession(ctx, sess.ID); gerr == nil && cur.TaskHandle == "" {
			if derr := s.Store.DeleteSession(ctx, cur.ID, cur.Version); derr != nil {
				log.WarnContext(ctx, "remove session of a failed start", logging.KeyEvent, "session_update_failed",
					"error", derr.Error())
			}
		}
		return View{}, err
	}
	logging.Event(ctx, log, slog.LevelInfo, events.SessionCreated, "session created",
		slog.Bool(events.FieldResumed, false), slog.Bool(events.FieldWarm, sess.Warm))
	return s.view(ctx, sess, true, relay)
}

// Resume returns the user's session id, starting a task for it if it has
// none. While the old task is still stopping it waits for the stop (R4), so
// a session never has two live tasks.
func (s *Service) Resume(ctx context.Context, r Request, userID, id string) (View, error) {
	sess, err := s.Get(ctx, userID, id)
	if err != nil {
		return View{}, err
	}
	log := s.logger(r, sess)
	sess, relay, err := s.rehome(ctx, log, sess)
	if err != nil {
		return View{}, err
	}

	for attempt := 0; ; attempt++ {
		live, err := s.needsTask(ctx, sess)
		if err != nil {
			return View{}, err
		}
		if !live {
			break
		}
		sess, err = s.StartTask(ctx, r, sess, false)
		if errors.Is(err, ErrBusy) && attempt < 3 {
			// Another request started it first; read it again.
			if sess, err = s.Store.GetSession(ctx, id); err != nil {
				return View{}, fmt.Errorf("read session: %w", err)
			}
			continue
		}
		if err != nil {
			return View{}, err
		}
		break
	}
	logging.Event(ctx, log, slog.LevelInfo, events.SessionCreated, "session resumed",
		slog.Bool(events.FieldResumed, true), slog.Bool(events.FieldWarm, sess.Warm))
	return s.view(ctx, sess, false, relay)
}

// needsTask reports whether a resumed session must get a new task: it has
// none, or its task has stopped. A live task, or a restart under way, keeps
// the session as it is.
func (s *Service) needsTask(ctx context.Context, sess Session) (bool, error) {
	if sess.State == StateRestarting && s.Clock.Now().Sub(sess.UpdatedAt) < s.cfg.StaleRestart {
		return false, nil
	}
	if sess.State == StateStarting && sess.TaskHandle == "" &&
		s.Clock.Now().Sub(sess.UpdatedAt) < s.cfg.StaleRestart {
		// A start is under way in another request.
		return false, nil
	}
	if sess.TaskHandle == "" {
		return true, nil
	}
	st, err := s.Runner.Describe(ctx, sess.TaskHandle)
	if err != nil {
		return false, fmt.Errorf("describe task %s: %w", sess.TaskHandle, err)
	}
	switch st.State {
	case TaskPending, TaskRunning:
		return sess.State == StateStopped, nil
	default:
		return true, nil
	}
}

// Get returns a session of userID.
func (s *Service) Get(ctx context.Context, userID, id string) (Session, error) {
	sess, err := s.Store.GetSession(ctx, id)
	if err != nil {
		// The store's error names the session and the step already.
		return Session{}, err
	}
	if sess.UserID != userID {
		return Session{}, fmt.Errorf("read session %s: %w", id, ErrForbidden)
	}
	return sess, nil
}

// GetView returns a session of userID with a fresh ticket.
func (s *Service) GetView(ctx context.Context, userID, id string) (View, error) {
	sess, err := s.Get(ctx, userID, id)
	if err != nil {
		return View{}, err
	}
	return s.view(ctx, sess, false, Relay{})
}

// Delete ends a session: its task is stopped, its workspace kept. The
// relay hears of it first, so that it takes the task's exit for the end it
// is rather than a crash to restart from. A concurrent change of the
// record makes it read the record again and stop whatever task it names.
func (s *Service) Delete(ctx context.Context, r Request, userID, id string) error {
	sess, err := s.Get(ctx, userID, id)
	if err != nil {
		return err
	}
	if s.Notifier != nil {
		s.Notifier.SessionEnded(id)
	}
	for attempt := 0; ; attempt++ {
		if sess.TaskHandle != "" {
			if err := s.Runner.Stop(ctx, sess.TaskHandle, "session ended by its user"); err != nil {
				return fmt.Errorf("stop task %s: %w", sess.TaskID, err)
			}
		}
		err = s.Store.DeleteSession(ctx, id, sess.Version)
		if errors.Is(err, ErrConflict) && attempt < 10 {
			if sess, err = s.Get(ctx, userID, id); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("delete session %s: %w", id, err)
		}
		s.logger(r, sess).InfoContext(ctx, "session ended", logging.KeyEvent, "session_deleted",
			logging.KeyTaskArn, sess.TaskHandle)
		return nil
	}
}

// view answers with sess and a fresh ticket. known is the session's relay
// when the caller has just read it (zero: look it up).
func (s *Service) view(ctx context.Context, sess Session, created bool, known Relay) (View, error) {
	tk, exp, err := s.Tickets.Sign(ticket.Claims{
		Kind: ticket.KindClient, UserID: sess.UserID, SessionID: sess.ID, Resumed: !created,
	}, s.Clock.Now(), s.cfg.TicketTTL)
	if err != nil {
		return View{}, fmt.Errorf("issue ticket: %w", err)
	}
	relay, err := known, error(nil)
	if relay.ID != sess.RelayID {
		relay, err = s.relayOf(ctx, sess.RelayID)
	}
	if errors.Is(err, ErrNoRelay) {
		// The session's relay is gone: nothing serves it until a resume
		// moves it to a healthy one, which is what the client is to do.
		sess.State = StateStopped
		return View{Session: sess, Ticket: tk, TicketExpiresAt: exp, Created: created}, nil
	}
	if err != nil {
		return View{}, fmt.Errorf("find the session's relay: %w", err)
	}
	return View{Session: sess, Ticket: tk, TicketExpiresAt: exp, Created: created, RelayURL: relay.ClientURL}, nil
}

// NewID returns a random id with the given prefix.
func NewID(prefix string) string {
	b := make([]byte, 10)
	rand.Read(b)
	return prefix + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b))
}
