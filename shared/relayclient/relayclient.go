// Package relayclient lets the control plane (the session Lambda) reach
// the relay that owns a session, through the relay's control API: hand a
// claimed warm task its user (session.WarmDispatcher), and say that a
// session changed or ended (session.Notifier). On one machine the relay is
// in process and none of this is needed.
package relayclient

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/aishell/aishell/shared/logging"
	"github.com/aishell/aishell/shared/session"
	"github.com/aishell/aishell/shared/ticket"
)

// Paths of the relay's control API, under its ControlURL.
const (
	PathInitUser       = "/internal/control/init_user"
	PathSessionChanged = "/internal/control/session_changed"
	PathSessionEnded   = "/internal/control/session_ended"
)

// InitUserBody is the body of an init_user call.
type InitUserBody struct {
	TaskID    string `json:"taskId"`
	SessionID string `json:"sessionId"`
	UserID    string `json:"userId"`
	UID       int    `json:"uid"`
	TraceID   string `json:"traceId,omitempty"`
}

// SessionBody is the body of the session_changed and session_ended calls.
type SessionBody struct {
	SessionID string `json:"sessionId"`
}

// tokenTTL is how long a control token is valid.
const tokenTTL = time.Minute

// Client calls relays' control APIs.
type Client struct {
	store session.Store
	keys  *ticket.Keyring
	hc    *http.Client
	log   *slog.Logger
}

// New returns a client; hc nil means a client with a 5 s time-out.
func New(store session.Store, keys *ticket.Keyring, hc *http.Client, log *slog.Logger) *Client {
	if hc == nil {
		hc = &http.Client{Timeout: 5 * time.Second}
	}
	if log == nil {
		log = logging.Discard()
	}
	return &Client{store: store, keys: keys, hc: hc, log: logging.Module(log, "relayclient")}
}

// InitUser asks the session's relay to send init_user to the claimed warm
// task.
func (c *Client) InitUser(ctx context.Context, u session.InitUser) error {
	return c.call(ctx, u.SessionID, PathInitUser, InitUserBody{
		TaskID: u.TaskID, SessionID: u.SessionID, UserID: u.UserID, UID: u.UID, TraceID: u.TraceID,
	})
}

// SessionChanged tells the session's relay its record changed. A failure
// is logged: the relay also re-reads the record when the task connects.
func (c *Client) SessionChanged(id string) {
	c.notify(id, PathSessionChanged)
}

// SessionEnded tells the session's relay the session ended. A failure is
// logged: the relay then learns it when the task's socket closes and the
// record is gone.
func (c *Client) SessionEnded(id string) {
	c.notify(id, PathSessionEnded)
}

func (c *Client) notify(id, path string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.call(ctx, id, path, SessionBody{SessionID: id}); err != nil {
		c.log.WarnContext(ctx, "relay not told of a session change", logging.KeyEvent, "relay_notify_failed",
			logging.KeySessionID, id, "path", path, "error", err.Error())
	}
}

func (c *Client) call(ctx context.Context, sessionID, path string, body any) error {
	sess, err := c.store.GetSession(ctx, sessionID)
	if err != nil {
		return fmt.Errorf("find relay of session %s: %w", sessionID, err)
	}
	relays, err := c.store.ListRelays(ctx)
	if err != nil {
		return fmt.Errorf("list relays: %w", err)
	}
	var base string
	for _, r := range relays {
		if r.ID == sess.RelayID {
			base = r.ControlURL
		}
	}
	if base == "" {
		return fmt.Errorf("relay %s of session %s has no control URL on record: %w", sess.RelayID, sessionID, session.ErrNoRelay)
	}

	token, _, err := c.keys.Sign(ticket.Claims{Kind: ticket.KindControl, SessionID: sessionID}, time.Now(), tokenTTL)
	if err != nil {
		return fmt.Errorf("sign control token: %w", err)
	}
	b, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+path, bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("control call %s: %w", path, err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("control call %s to relay %s: %w", path, sess.RelayID, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return fmt.Errorf("control call %s to relay %s: %s: %s", path, sess.RelayID, resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}

var (
	_ session.WarmDispatcher = (*Client)(nil)
	_ session.Notifier       = (*Client)(nil)
)
