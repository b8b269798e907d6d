// Package ticket signs and checks the short-lived credentials of AI Shell:
// client tickets (bound to a user and a session), task credentials (bound to
// a task and, once known, its session) and, on one machine, development JWTs
// standing in for the identity provider's tokens.
//
// Tickets and task credentials are HMAC-SHA256 signed; a Keyring signs with
// its newest key and accepts every key it holds, so keys rotate without a
// restart.
package ticket

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

// Errors returned by the Verify functions. A caller tells the client
// TICKET_EXPIRED for ErrExpired and UNAUTHORIZED for ErrInvalid.
var (
	ErrExpired = errors.New("ticket expired")
	ErrInvalid = errors.New("ticket invalid")
)

// Kinds of signed token; a token of one kind never passes as another.
const (
	KindClient = "client"
	KindTask   = "task"
	// KindControl authenticates the control plane's calls to a relay's
	// control API (signed with the task keys).
	KindControl = "control"
)

// Claims is what a ticket or task credential states.
type Claims struct {
	Kind      string `json:"k"`
	UserID    string `json:"u,omitempty"`
	SessionID string `json:"s,omitempty"`
	TaskID    string `json:"t,omitempty"`
	// Resumed marks a client ticket issued on resume rather than create.
	Resumed   bool      `json:"r,omitempty"`
	ExpiresAt time.Time `json:"-"`
	Exp       int64     `json:"e"`
	Nonce     string    `json:"n"`
}

// Keyring holds the signing keys, newest first. It is safe for concurrent
// use; Set replaces the keys (rotation).
type Keyring struct {
	mu   sync.RWMutex // guards keys
	keys [][]byte
}

// NewKeyring returns a keyring with the given keys, newest first.
func NewKeyring(keys ...[]byte) *Keyring {
	k := &Keyring{}
	k.Set(keys...)
	return k
}

// Set replaces the keys, newest first.
func (k *Keyring) Set(keys ...[]byte) {
	cp := make([][]byte, 0, len(keys))
	for _, key := range keys {
		if len(key) > 0 {
			cp = append(cp, append([]byte(nil), key...))
		}
	}
	k.mu.Lock()
	k.keys = cp
	k.mu.Unlock()
}

func (k *Keyring) snapshot() [][]byte {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.keys
}

// Sign returns a token for c, valid for ttl from now.
func (k *Keyring) Sign(c Claims, now time.Time, ttl time.Duration) (string, time.Time, error) {
	keys := k.snapshot()
	if len(keys) == 0 {
		return "", time.Time{}, errors.New("sign ticket: no key")
	}
	exp := now.Add(ttl).Truncate(time.Second)
	c.Exp = exp.Unix()
	c.Nonce = randomString(8)
	payload, err := json.Marshal(c)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("sign ticket: %w", err)
	}
	body := base64.RawURLEncoding.EncodeToString(payload)
	return "v1." + body + "." + mac(keys[0], body), exp, nil
}

// Verify checks a token's signature, kind and expiry at now.
func (k *Keyring) Verify(token, kind string, now time.Time) (Claims, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 || parts[0] != "v1" {
		return Claims{}, fmt.Errorf("%w: malformed", ErrInvalid)
	}
	ok := false
	for _, key := range k.snapshot() {
		if hmac.Equal([]byte(mac(key, parts[1])), []byte(parts[2])) {
			ok = true
			break
		}
	}
	if !ok {
		return Claims{}, fmt.Errorf("%w: bad signature", ErrInvalid)
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return Claims{}, fmt.Errorf("%w: malformed payload", ErrInvalid)
	}
	var c Claims
	if err := json.Unmarshal(payload, &c); err != nil {
		return Claims{}, fmt.Errorf("%w: malformed payload", ErrInvalid)
	}
	if c.Kind != kind {
		return Claims{}, fmt.Errorf("%w: a %s token where a %s token belongs", ErrInvalid, c.Kind, kind)
	}
	c.ExpiresAt = time.Unix(c.Exp, 0).UTC()
	if !now.Before(c.ExpiresAt) {
		return c, fmt.Errorf("%w at %s", ErrExpired, c.ExpiresAt.Format(time.RFC3339))
	}
	return c, nil
}

func mac(key []byte, body string) string {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(body))
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil))
}

func randomString(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// NewKey returns a fresh random 32-byte key.
func NewKey() []byte {
	b := make([]byte, 32)
	rand.Read(b)
	return b
}
