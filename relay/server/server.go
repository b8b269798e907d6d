// Package server is the relay's HTTP surface: the client socket, the task
// sockets, the session API on one machine, the web page and the health
// check. It authenticates each socket and hands it to the hub.
package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gorilla/websocket"

	"github.com/aishell/aishell/relay/hub"
	"github.com/aishell/aishell/relay/wire"
	"github.com/aishell/aishell/shared/events"
	"github.com/aishell/aishell/shared/logging"
	"github.com/aishell/aishell/shared/session"
	"github.com/aishell/aishell/shared/sessionapi"
	"github.com/aishell/aishell/shared/ticket"
)

// Options configure the HTTP surface.
type Options struct {
	Hub *hub.Hub
	// Tickets checks client tickets; TaskKeys checks task credentials.
	Tickets  *ticket.Keyring
	TaskKeys *ticket.Keyring
	// API serves /api/ on one machine; nil in AWS, where API Gateway does.
	API *sessionapi.Handler
	// DevJWTKey signs and checks development tokens for /api (one machine).
	DevJWTKey []byte
	// Owners, when set, forwards client sockets of sessions that another
	// relay owns to that relay (several relays behind one address).
	Owners Owners
	// Control turns on the control API (relayclient) for a control plane
	// in other processes (AWS); one machine has no need of it.
	Control bool
	// AllowedHosts are the host names the relay answers to (one machine:
	// 127.0.0.1 and localhost); empty allows any. It also decides which
	// page origins may open the client socket.
	AllowedHosts []string
	// DenyPeerUID refuses sign-in (development tokens) to loopback peers
	// whose uid it names: one machine's agents run under their own uids and
	// must not sign in as another user.
	DenyPeerUID func(uid int) bool
	// Static serves the web page at /; may be nil.
	Static http.Handler
	Clock  session.Clock
	Log    *slog.Logger

	// Ops serves the operator page at /ops, /ops/ and /ops.json (one
	// machine, relay/ops); may be nil.
	Ops http.Handler
}

// Server routes the relay's requests.
type Server struct {
	o        Options
	log      *slog.Logger
	upgrader websocket.Upgrader
	mux      *http.ServeMux
}

// New returns the relay's HTTP handler.
func New(o Options) *Server {
	if o.Clock == nil {
		o.Clock = session.SystemClock{}
	}
	s := &Server{
		o:   o,
		log: logging.Module(o.Log, "server"),
		upgrader: websocket.Upgrader{
			ReadBufferSize:  32 << 10,
			WriteBufferSize: 32 << 10,
		},
		mux: http.NewServeMux(),
	}
	s.mux.HandleFunc("GET /ws", s.client)
	s.mux.HandleFunc("GET /internal/task/{sessionId}", s.task)
	s.mux.HandleFunc("GET /internal/warm/{taskId}", s.warm)
	s.mux.HandleFunc("GET /healthz", s.health)
	if o.Control {
		s.mux.HandleFunc("POST /internal/control/", s.control)
	}
	if o.API != nil {
		s.mux.HandleFunc("GET /api/dev/token", s.devToken)
		s.mux.HandleFunc("/api/dev/token", func(w http.ResponseWriter, r *http.Request) {
			writeAPIError(w, http.StatusMethodNotAllowed, "METHOD_NOT_ALLOWED", r.Method+" not allowed; use GET")
		})
		s.mux.HandleFunc("/api/", s.api)
	}
	if o.Ops != nil {
		s.mux.Handle("GET /ops", o.Ops)
		s.mux.Handle("GET /ops/", o.Ops)
		s.mux.Handle("GET /ops.json", o.Ops)
	}
	if o.Static != nil {
		s.mux.Handle("/", o.Static)
	}
	s.upgrader.CheckOrigin = s.checkOrigin
	return s
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !s.hostAllowed(r.Host) {
		writeAPIError(w, http.StatusMisdirectedRequest, "WRONG_HOST",
			fmt.Sprintf("this server answers to %s, not %q", strings.Join(s.o.AllowedHosts, " or "), r.Host))
		return
	}
	s.mux.ServeHTTP(w, r)
}

// checkOrigin lets a page open the client socket if it has no Origin (not
// a browser) or comes from an allowed host, or, with no list, from the
// socket's own host.
func (s *Server) checkOrigin(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil {
		return false
	}
	if len(s.o.AllowedHosts) == 0 {
		return strings.EqualFold(u.Host, r.Host)
	}
	return s.hostAllowed(u.Host)
}

// client authenticates a client socket by its ticket. A bad ticket still
// gets the socket, to hear the error code, then close 1008.
func (s *Server) client(w http.ResponseWriter, r *http.Request) {
	tk := r.URL.Query().Get("ticket")
	claims, err := s.o.Tickets.Verify(tk, ticket.KindClient, s.o.Clock.Now())
	if err == nil && s.forward(w, r, claims.SessionID, tk) {
		return
	}
	ws, uerr := s.upgrader.Upgrade(w, r, nil)
	if uerr != nil {
		return // the upgrader has answered the request
	}
	cfg := s.o.Hub.Config()
	t := newTransport(ws, cfg.MaxFrame, cfg.PingInterval)
	if err != nil {
		code, reason := wire.CodeUnauthorized, events.ReasonInvalid
		if errors.Is(err, ticket.ErrExpired) {
			code, reason = wire.CodeTicketExpired, events.ReasonExpired
		}
		logging.Event(r.Context(), s.log.With(logging.KeySessionID, claims.SessionID), slog.LevelWarn,
			events.TicketRejected, "client ticket rejected: "+err.Error(), slog.String(events.FieldReason, reason))
		s.refuse(t, code, "ticket refused: "+err.Error())
		return
	}
	s.o.Hub.ServeClient(t, claims.UserID, claims.SessionID, claims.Resumed)
}

// refuse sends an error frame and closes with 1008.
func (s *Server) refuse(t *wsTransport, code, msg string) {
	p, _ := json.Marshal(wire.Error{Type: wire.TypeError, Error: wire.ErrorBody{Code: code, Message: msg}})
	t.WriteFrame(p)
	t.WriteClose(hub.ClosePolicy, code)
	t.Close()
}

// taskClaims checks a task's bearer credential.
func (s *Server) taskClaims(r *http.Request) (ticket.Claims, error) {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return ticket.Claims{}, errors.New("no bearer credential")
	}
	return s.o.TaskKeys.Verify(token, ticket.KindTask, s.o.Clock.Now())
}

func (s *Server) task(w http.ResponseWriter, r *http.Request) {
	sessionID := r.PathValue("sessionId")
	claims, err := s.taskClaims(r)
	if err == nil && claims.SessionID != "" && claims.SessionID != sessionID {
		err = errors.New("credential is for session " + claims.SessionID)
	}
	s.serveTask(w, r, claims, err, func(t *wsTransport) {
		s.o.Hub.ServeTask(t, sessionID, claims.TaskID)
	})
}

func (s *Server) warm(w http.ResponseWriter, r *http.Request) {
	taskID := r.PathValue("taskId")
	claims, err := s.taskClaims(r)
	if err == nil && (claims.TaskID != taskID || claims.SessionID != "") {
		err = errors.New("credential is not for warm task " + taskID)
	}
	s.serveTask(w, r, claims, err, func(t *wsTransport) {
		s.o.Hub.ServeWarm(t, taskID)
	})
}

// serveTask upgrades a task socket; a forged or expired credential is
// logged as task_rejected and closed with 1008.
func (s *Server) serveTask(w http.ResponseWriter, r *http.Request, claims ticket.Claims, err error, serve func(*wsTransport)) {
	ws, uerr := s.upgrader.Upgrade(w, r, nil)
	if uerr != nil {
		return
	}
	cfg := s.o.Hub.Config()
	t := newTransport(ws, 1<<20, cfg.PingInterval)
	if err != nil {
		logging.Event(r.Context(), s.log.With(logging.KeyTaskArn, claims.TaskID), slog.LevelWarn,
			events.TaskRejected, "task credential rejected: "+err.Error(),
			slog.String(events.FieldReason, events.ReasonBadCredential), slog.String("path", r.URL.Path))
		t.WriteClose(hub.ClosePolicy, "bad credential")
		t.Close()
		return
	}
	serve(t)
}

func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(struct {
		Status string    `json:"status"`
		Hub    hub.Stats `json:"hub"`
		Time   time.Time `json:"time"`
	}{"ok", s.o.Hub.Stats(), s.o.Clock.Now().UTC()})
}
