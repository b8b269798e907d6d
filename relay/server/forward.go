package server

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gorilla/websocket"

	"github.com/aishell/aishell/relay/hub"
	"github.com/aishell/aishell/relay/wire"
	"github.com/aishell/aishell/shared/logging"
)

// Owners tells which relay owns a session, for relays that share one
// public address (several relays behind one load balancer): a client that
// lands on a relay that does not own its session is forwarded to the one
// that does.
type Owners interface {
	// Owner returns the owning relay's internal base URL (ws://ip:port),
	// or "" when this relay owns the session. An error means no relay can
	// serve it now (the client is to resume).
	Owner(ctx context.Context, sessionID string) (string, error)
}

// forwardedHeader marks a forwarded client socket, so that a relay never
// forwards what it was forwarded (no loops).
const forwardedHeader = "X-Aishell-Forwarded"

// forward pipes a client socket to the relay that owns its session. It
// reports false when the session is this relay's own.
func (s *Server) forward(w http.ResponseWriter, r *http.Request, sessionID, ticket string) bool {
	if s.o.Owners == nil || r.Header.Get(forwardedHeader) != "" {
		return false
	}
	owner, err := s.o.Owners.Owner(r.Context(), sessionID)
	if err == nil && owner == "" {
		return false
	}
	ws, uerr := s.upgrader.Upgrade(w, r, nil)
	if uerr != nil {
		return true
	}
	defer ws.Close()
	log := s.log.With(logging.KeySessionID, sessionID)
	if err != nil {
		log.WarnContext(r.Context(), "no relay owns the session now", logging.KeyEvent, "client_forward_failed",
			"error", err.Error())
		refuseSocket(ws, wire.CodeRelayShuttingDown, hub.CloseGoingAway,
			"the session's relay is gone; resume the session to reconnect")
		return true
	}

	h := http.Header{}
	h.Set(forwardedHeader, "1")
	target := strings.TrimSuffix(owner, "/") + "/ws?ticket=" + url.QueryEscape(ticket)
	dialer := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	up, _, err := dialer.DialContext(r.Context(), target, h)
	if err != nil {
		log.WarnContext(r.Context(), "owning relay unreachable", logging.KeyEvent, "client_forward_failed",
			"owner", owner, "error", err.Error())
		refuseSocket(ws, wire.CodeRelayShuttingDown, hub.CloseGoingAway,
			"the session's relay cannot be reached; resume the session to reconnect")
		return true
	}
	defer up.Close()
	log.InfoContext(r.Context(), "client forwarded to the session's relay", logging.KeyEvent, "client_forwarded",
		"owner", owner)

	done := make(chan struct{}, 2)
	go pipe(up, ws, done)
	go pipe(ws, up, done)
	<-done
	return true
}

// pipe copies frames from src to dst until src ends, then passes src's
// close code on to dst.
func pipe(dst, src *websocket.Conn, done chan<- struct{}) {
	defer func() { done <- struct{}{} }()
	for {
		kind, p, err := src.ReadMessage()
		if err != nil {
			code, text := websocket.CloseGoingAway, "peer gone"
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				code, text = ce.Code, ce.Text
			}
			if code == websocket.CloseNoStatusReceived || code == websocket.CloseAbnormalClosure {
				code = websocket.CloseGoingAway
			}
			dst.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, text),
				time.Now().Add(time.Second))
			return
		}
		dst.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if err := dst.WriteMessage(kind, p); err != nil {
			return
		}
	}
}

// refuseSocket sends an error frame and closes with code.
func refuseSocket(ws *websocket.Conn, errCode string, closeCode int, msg string) {
	ws.SetWriteDeadline(time.Now().Add(time.Second))
	ws.WriteJSON(wire.Error{Type: wire.TypeError, Error: wire.ErrorBody{Code: errCode, Message: msg}})
	ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(closeCode, errCode),
		time.Now().Add(time.Second))
}
