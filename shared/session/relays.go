package session

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// ErrNoRelay: no healthy relay to give a session to.
var ErrNoRelay = errors.New("no healthy relay")

// PickRelay chooses the relay that owns a session by rendezvous hashing
// over the healthy relays (a heartbeat within maxAge of now): every caller
// with the same view picks the same relay, and a relay's loss moves only
// its own sessions.
func PickRelay(relays []Relay, sessionID string, now time.Time, maxAge time.Duration) (Relay, bool) {
	var best Relay
	var bestScore uint64
	found := false
	for _, r := range relays {
		if now.Sub(r.HeartbeatAt) > maxAge {
			continue
		}
		h := sha256.Sum256([]byte(r.ID + "\x00" + sessionID))
		score := binary.BigEndian.Uint64(h[:8])
		if !found || score > bestScore || (score == bestScore && r.ID < best.ID) {
			best, bestScore, found = r, score, true
		}
	}
	return best, found
}

// relayOf returns the relay a session belongs to: this process's own
// relay on one machine, else the relay's record from the store.
func (s *Service) relayOf(ctx context.Context, relayID string) (Relay, error) {
	if relayID == s.cfg.RelayID && !s.cfg.AssignRelays {
		return Relay{ID: relayID, ClientURL: s.cfg.ClientRelayURL, TaskURL: s.cfg.TaskRelayURL}, nil
	}
	list, err := s.Store.ListRelays(ctx)
	if err != nil {
		return Relay{}, fmt.Errorf("list relays: %w", err)
	}
	for _, r := range list {
		if r.ID == relayID {
			return r, nil
		}
	}
	return Relay{}, fmt.Errorf("relay %s: %w", relayID, ErrNoRelay)
}

// assignRelay picks the relay for a new session (AssignRelays) or returns
// the configured one.
func (s *Service) assignRelay(ctx context.Context, sessionID string) (Relay, error) {
	if !s.cfg.AssignRelays {
		return s.relayOf(ctx, s.cfg.RelayID)
	}
	list, err := s.Store.ListRelays(ctx)
	if err != nil {
		return Relay{}, fmt.Errorf("list relays: %w", err)
	}
	r, ok := PickRelay(list, sessionID, s.Clock.Now(), s.cfg.RelayMaxAge)
	if !ok {
		return Relay{}, &CodedError{Code: "NoCapacity", Err: fmt.Errorf("assign relay: %w among %d", ErrNoRelay, len(list))}
	}
	return r, nil
}

// rehome gives a session whose relay is gone (no heartbeat within
// RelayMaxAge) to a healthy one, so that its client, told by the old relay
// to resume (1001), can reconnect. The task of the old relay cannot follow
// (its bridge knows the old relay's address only), so the session is
// marked stopped: the start that follows stops that task (R4) and starts a
// new one for the new relay, on the same workspace.
// It returns the session's relay when it read it, for the answer.
func (s *Service) rehome(ctx context.Context, log *slog.Logger, sess Session) (Session, Relay, error) {
	if !s.cfg.AssignRelays {
		return sess, Relay{}, nil
	}
	list, err := s.Store.ListRelays(ctx)
	if err != nil {
		return sess, Relay{}, fmt.Errorf("list relays: %w", err)
	}
	now := s.Clock.Now()
	for _, r := range list {
		if r.ID == sess.RelayID && now.Sub(r.HeartbeatAt) <= s.cfg.RelayMaxAge {
			return sess, r, nil
		}
	}
	r, ok := PickRelay(list, sess.ID, now, s.cfg.RelayMaxAge)
	if !ok {
		return sess, Relay{}, &CodedError{Code: "NoCapacity",
			Err: fmt.Errorf("session %s: its relay %s is gone: %w", sess.ID, sess.RelayID, ErrNoRelay)}
	}
	old := sess.RelayID
	next, err := s.updateSession(ctx, sess.ID, func(cur *Session) error {
		if cur.RelayID != old {
			return errNoChange
		}
		cur.RelayID = r.ID
		cur.State = StateStopped
		return nil
	})
	if err != nil {
		return sess, Relay{}, fmt.Errorf("move session %s to relay %s: %w", sess.ID, r.ID, err)
	}
	log.InfoContext(ctx, "session moved to a healthy relay", "event", "session_rehomed",
		"fromRelay", old, "toRelay", r.ID)
	return next, r, nil
}
