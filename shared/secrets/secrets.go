// Package secrets loads the keys that sign client tickets and task
// credentials from one Secrets Manager secret, and keeps them current: a
// Source refreshes the keyrings in place, so a rotated secret takes effect
// without a restart. On one machine the key file of shared/keys plays this
// part.
//
// The secret's value is JSON with two lists of base64 (standard encoding)
// keys, newest first, each key at least MinKeyBytes long:
//
//	{"ticket": ["<newest>", "<older>"], "task": ["<newest>"]}
//
// The newest key of each list signs; every key listed is accepted. Rotate
// prepends a fresh key and keeps at most KeepOld older ones, so tickets and
// credentials signed before a rotation stay valid until they expire.
package secrets

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/aishell/aishell/shared/logging"
	"github.com/aishell/aishell/shared/ticket"
)

// Limits of a secret value.
const (
	// MinKeyBytes is the shortest key accepted, in bytes.
	MinKeyBytes = 32
	// KeepOld is how many older keys per list Rotate keeps.
	KeepOld = 2
)

// DefaultRefresh is how often Run re-reads the secret when not told.
const DefaultRefresh = 5 * time.Minute

// EventRefreshFailed is the log event of a failed refresh.
const EventRefreshFailed = "secret_refresh_failed"

// ErrMalformed says the secret's value is not of the expected form; the
// error wrapping it says what is wrong, never what a key is.
var ErrMalformed = errors.New("malformed secret value")

// Keys are the keyrings a Source keeps current.
type Keys struct {
	// Tickets signs and checks client tickets.
	Tickets *ticket.Keyring
	// TaskKeys signs and checks task credentials.
	TaskKeys *ticket.Keyring
}

// Source reads the keys from one secret and refreshes them. Its methods
// are safe for concurrent use; the keyrings it hands out stay the same
// objects for its whole life, with their keys replaced on refresh.
type Source struct {
	client   *secretsmanager.Client
	secretID string
	keys     Keys

	// Log receives an EventRefreshFailed event for every failed refresh of
	// Run; nil means slog.Default(). Set it before Run.
	Log *slog.Logger

	// afterRefresh, when set (by tests), is called after each refresh of
	// Run with its outcome and whether it was logged.
	afterRefresh func(err error, logged bool)
}

// Load reads the secret once and returns a Source holding its keys. The
// error of a failed read keeps the AWS error code (ResourceNotFoundException
// for a missing secret, AccessDeniedException, ...).
func Load(ctx context.Context, c *secretsmanager.Client, secretID string) (*Source, error) {
	s := &Source{
		client:   c,
		secretID: secretID,
		keys:     Keys{Tickets: ticket.NewKeyring(), TaskKeys: ticket.NewKeyring()},
	}
	v, err := s.fetch(ctx)
	if err != nil {
		return nil, fmt.Errorf("load keys: %w", err)
	}
	s.set(v)
	return s, nil
}

// Keys returns the keyrings. They are refreshed in place.
func (s *Source) Keys() Keys { return s.keys }

// Refresh reads the secret again and replaces the keys. On failure the keys
// stay as they were.
func (s *Source) Refresh(ctx context.Context) error {
	v, err := s.fetch(ctx)
	if err != nil {
		return fmt.Errorf("refresh keys: %w", err)
	}
	s.set(v)
	return nil
}

// Run refreshes the keys every interval (DefaultRefresh if every is not
// positive) until ctx is done. A failed refresh is logged once, as
// EventRefreshFailed, and the last good keys stay in use.
func (s *Source) Run(ctx context.Context, every time.Duration) {
	if every <= 0 {
		every = DefaultRefresh
	}
	log := s.Log
	if log == nil {
		log = slog.Default()
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := s.Refresh(ctx)
		// A refresh cut short by the stop is no failure worth a line.
		logged := err != nil && ctx.Err() == nil
		if logged {
			logging.Event(ctx, log, slog.LevelWarn, EventRefreshFailed,
				"secret refresh failed; keeping the last good keys",
				slog.String("secretId", s.secretID), slog.String("error", err.Error()))
		}
		if s.afterRefresh != nil {
			s.afterRefresh(err, logged)
		}
	}
}

// set puts parsed keys into the keyrings.
func (s *Source) set(v keyLists) {
	s.keys.Tickets.Set(v.ticket...)
	s.keys.TaskKeys.Set(v.task...)
}

// fetch reads and parses the secret's current value.
func (s *Source) fetch(ctx context.Context) (keyLists, error) {
	out, err := s.client.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{
		SecretId: aws.String(s.secretID),
	})
	if err != nil {
		return keyLists{}, fmt.Errorf("read secret %s: %w", s.secretID, err)
	}
	if out.SecretString == nil {
		return keyLists{}, fmt.Errorf("secret %s: %w: no string value", s.secretID, ErrMalformed)
	}
	v, err := parse(*out.SecretString)
	if err != nil {
		return keyLists{}, fmt.Errorf("secret %s: %w", s.secretID, err)
	}
	return v, nil
}

// secretValue is the JSON form of a secret's value.
type secretValue struct {
	Ticket []string `json:"ticket"`
	Task   []string `json:"task"`
}

// keyLists are a secret's keys, decoded, newest first.
type keyLists struct {
	ticket, task [][]byte
}

// parse decodes and checks a secret value. Its errors wrap ErrMalformed and
// never quote the value.
func parse(value string) (keyLists, error) {
	var sv secretValue
	dec := json.NewDecoder(strings.NewReader(value))
	dec.DisallowUnknownFields()
	err := dec.Decode(&sv)
	if err == nil && dec.Decode(&struct{}{}) != io.EOF {
		err = errors.New("data after the JSON object")
	}
	if err != nil {
		return keyLists{}, fmt.Errorf("%w: %s", ErrMalformed, describeJSONError(err))
	}

	var out keyLists
	for _, f := range []struct {
		name string
		keys []string
		dst  *[][]byte
	}{
		{"ticket", sv.Ticket, &out.ticket},
		{"task", sv.Task, &out.task},
	} {
		if len(f.keys) == 0 {
			return keyLists{}, fmt.Errorf("%w: field %q has no key", ErrMalformed, f.name)
		}
		for i, k := range f.keys {
			b, err := base64.StdEncoding.DecodeString(k)
			if err != nil {
				return keyLists{}, fmt.Errorf("%w: field %q key %d is not base64", ErrMalformed, f.name, i)
			}
			if len(b) < MinKeyBytes {
				return keyLists{}, fmt.Errorf("%w: field %q key %d is %d bytes; want at least %d",
					ErrMalformed, f.name, i, len(b), MinKeyBytes)
			}
			*f.dst = append(*f.dst, b)
		}
	}
	return out, nil
}

// describeJSONError says what is wrong with a value's JSON without quoting
// it (a syntax error's message quotes the offending character).
func describeJSONError(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("not JSON (syntax error at byte %d)", syn.Offset)
	case errors.As(err, &typ):
		if typ.Field == "" {
			return "not a JSON object"
		}
		return fmt.Sprintf("field %q is not a list of strings", typ.Field)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "empty or truncated"
	case strings.HasPrefix(err.Error(), "json: unknown field"):
		return strings.TrimPrefix(err.Error(), "json: ")
	default:
		return err.Error()
	}
}

// encode writes key lists as a secret value.
func encode(v keyLists) (string, error) {
	sv := secretValue{}
	for _, k := range v.ticket {
		sv.Ticket = append(sv.Ticket, base64.StdEncoding.EncodeToString(k))
	}
	for _, k := range v.task {
		sv.Task = append(sv.Task, base64.StdEncoding.EncodeToString(k))
	}
	b, err := json.Marshal(sv)
	if err != nil {
		return "", fmt.Errorf("encode secret value: %w", err)
	}
	return string(b), nil
}

// NewSecretValue returns a fresh secret value with one random key in each
// list, for a new environment's secret.
func NewSecretValue() (string, error) {
	return encode(keyLists{
		ticket: [][]byte{ticket.NewKey()},
		task:   [][]byte{ticket.NewKey()},
	})
}

// Rotate returns old with a fresh random key first in each list and at most
// KeepOld of the older keys after it. A malformed old value is an error.
func Rotate(old string) (string, error) {
	v, err := parse(old)
	if err != nil {
		return "", fmt.Errorf("rotate keys: %w", err)
	}
	v.ticket = append([][]byte{ticket.NewKey()}, v.ticket[:min(len(v.ticket), KeepOld)]...)
	v.task = append([][]byte{ticket.NewKey()}, v.task[:min(len(v.task), KeepOld)]...)
	return encode(v)
}
