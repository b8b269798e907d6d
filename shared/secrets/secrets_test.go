package secrets

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/aishell/aishell/shared/awsclient"
	"github.com/aishell/aishell/shared/awsops"
	"github.com/aishell/aishell/shared/awstest"
	"github.com/aishell/aishell/shared/session"
	"github.com/aishell/aishell/shared/ticket"
)

var (
	// admin creates and changes secrets; its calls are not recorded, as
	// the product's components only read the secret.
	admin *secretsmanager.Client
	// clients read the secret as the components that do.
	clients = map[string]*secretsmanager.Client{}
	rec     = awsops.NewRecorder()
	names   atomic.Int64
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	moto, err := awstest.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, "secrets tests need moto:", err)
		return 1
	}
	defer moto.Close()

	admin = secretsmanager.NewFromConfig(moto.Config())
	for _, component := range []string{awsops.Relay, awsops.SessionLambda} {
		cfg := moto.Config()
		awsclient.Prepare(&cfg, component, rec)
		clients[component] = secretsmanager.NewFromConfig(cfg)
	}

	code := m.Run()
	if err := rec.Check(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return code
}

// newSecret creates a secret with a fresh name holding value.
func newSecret(t *testing.T, value string) string {
	t.Helper()
	name := fmt.Sprintf("aishell/test/keys-%d", names.Add(1))
	_, err := admin.CreateSecret(context.Background(), &secretsmanager.CreateSecretInput{
		Name: aws.String(name), SecretString: aws.String(value),
	})
	if err != nil {
		t.Fatalf("CreateSecret: %v", err)
	}
	return name
}

func putValue(t *testing.T, name, value string) {
	t.Helper()
	_, err := admin.PutSecretValue(context.Background(), &secretsmanager.PutSecretValueInput{
		SecretId: aws.String(name), SecretString: aws.String(value),
	})
	if err != nil {
		t.Fatalf("PutSecretValue: %v", err)
	}
}

func mustValue(t *testing.T) string {
	t.Helper()
	v, err := NewSecretValue()
	if err != nil {
		t.Fatalf("NewSecretValue: %v", err)
	}
	return v
}

func mustRotate(t *testing.T, old string) string {
	t.Helper()
	v, err := Rotate(old)
	if err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	return v
}

var now = time.Date(2026, 2, 8, 12, 0, 0, 0, time.UTC)

// signed is a token and the keyring and kind to check it with.
type signed struct {
	name  string
	ring  func(Keys) *ticket.Keyring
	kind  string
	token string
}

// newestOnly returns keyrings holding only the newest keys of value.
func newestOnly(t *testing.T, value string) Keys {
	t.Helper()
	v, err := parse(value)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return Keys{Tickets: ticket.NewKeyring(v.ticket[0]), TaskKeys: ticket.NewKeyring(v.task[0])}
}

// signBoth signs a client ticket and a task credential with the source's
// current keys.
func signBoth(t *testing.T, src *Source, label string) []signed {
	t.Helper()
	tickets := func(k Keys) *ticket.Keyring { return k.Tickets }
	tasks := func(k Keys) *ticket.Keyring { return k.TaskKeys }
	out := []signed{
		{label + " ticket", tickets, ticket.KindClient, ""},
		{label + " task credential", tasks, ticket.KindTask, ""},
	}
	for i := range out {
		c := ticket.Claims{Kind: out[i].kind, UserID: "alice"}
		tok, _, err := out[i].ring(src.Keys()).Sign(c, now, time.Hour)
		if err != nil {
			t.Fatalf("sign %s: %v", out[i].name, err)
		}
		out[i].token = tok
	}
	return out
}

// verify checks tokens against keys; want says whether each should pass.
func verify(t *testing.T, keys Keys, tokens []signed, want bool) {
	t.Helper()
	for _, s := range tokens {
		_, err := s.ring(keys).Verify(s.token, s.kind, now)
		if (err == nil) != want {
			t.Errorf("verify %s: got %v; want valid=%v", s.name, err, want)
		}
	}
}

// Tokens signed before a rotation still verify after a refresh, new ones
// are signed with the new key, and a key falls out after KeepOld more
// rotations.
func TestRotationWithoutRestart(t *testing.T) {
	ctx := context.Background()
	value := mustValue(t)
	name := newSecret(t, value)

	// Both readers of the secret load it; the relay's source goes on.
	if _, err := Load(ctx, clients[awsops.SessionLambda], name); err != nil {
		t.Fatalf("Load (session Lambda): %v", err)
	}
	src, err := Load(ctx, clients[awsops.Relay], name)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	keys := src.Keys()
	first := signBoth(t, src, "first-key")
	verify(t, src.Keys(), first, true)

	value = mustRotate(t, value)
	putValue(t, name, value)
	if err := src.Refresh(ctx); err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	if got := src.Keys(); got.Tickets != keys.Tickets || got.TaskKeys != keys.TaskKeys {
		t.Errorf("Keys after Refresh: got new keyrings; want the same ones refreshed in place")
	}
	verify(t, src.Keys(), first, true)
	second := signBoth(t, src, "second-key")
	verify(t, src.Keys(), second, true)

	// The second tokens are signed with the new key.
	verify(t, newestOnly(t, value), second, true)
	verify(t, newestOnly(t, value), first, false)

	// One more rotation keeps the first key (KeepOld old ones are kept);
	// the next drops it.
	for i := range 2 {
		value = mustRotate(t, value)
		putValue(t, name, value)
		if err := src.Refresh(ctx); err != nil {
			t.Fatalf("Refresh: %v", err)
		}
		verify(t, src.Keys(), first, i == 0)
		verify(t, src.Keys(), second, true)
	}
}

func TestMalformedSecrets(t *testing.T) {
	ctx := context.Background()
	short := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 16))
	good := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{9}, 32))
	lists := func(ticket, task string) string {
		return fmt.Sprintf(`{"ticket":[%s],"task":[%s]}`, ticket, task)
	}
	tests := []struct {
		name    string
		value   string
		wantErr string
	}{
		{"not JSON", `ticket=` + good, "not JSON (syntax error at byte"},
		{"blank", ` `, "empty or truncated"},
		{"truncated", `{"ticket":["` + good, "empty or truncated"},
		{"a list", `["` + good + `"]`, "not a JSON object"},
		{"unknown field", `{"tickets":["` + good + `"]}`, `unknown field "tickets"`},
		{"trailing data", lists(`"`+good+`"`, `"`+good+`"`) + ` {}`, "data after the JSON object"},
		{"no ticket key", lists(``, `"`+good+`"`), `field "ticket" has no key`},
		{"task missing", `{"ticket":["` + good + `"]}`, `field "task" has no key`},
		{"not base64", lists(`"`+good+`"`, `"`+good+`","%%%"`), `field "task" key 1 is not base64`},
		{"short key", lists(`"`+good+`","`+short+`"`, `"`+good+`"`),
			`field "ticket" key 1 is 16 bytes; want at least 32`},
		{"key not a string", lists(`42`, `"`+good+`"`), `field "ticket" is not a list of strings`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			name := newSecret(t, tc.value)
			_, err := Load(ctx, clients[awsops.Relay], name)
			if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Load: got %v; want ErrMalformed saying %q", err, tc.wantErr)
			}
			if !strings.Contains(err.Error(), name) {
				t.Errorf("Load: got %q; want it to name the secret %s", err, name)
			}
			for _, material := range []string{good, short, "%%%"} {
				if strings.Contains(err.Error(), material) {
					t.Errorf("Load: got %q; want no key material in it", err)
				}
			}
			if _, err := Rotate(tc.value); !errors.Is(err, ErrMalformed) {
				t.Errorf("Rotate: got %v; want ErrMalformed", err)
			}
		})
	}

	t.Run("binary secret", func(t *testing.T) {
		name := fmt.Sprintf("aishell/test/binary-%d", names.Add(1))
		_, err := admin.CreateSecret(ctx, &secretsmanager.CreateSecretInput{
			Name: aws.String(name), SecretBinary: []byte(mustValue(t)),
		})
		if err != nil {
			t.Fatalf("CreateSecret: %v", err)
		}
		if _, err := Load(ctx, clients[awsops.Relay], name); !errors.Is(err, ErrMalformed) ||
			!strings.Contains(err.Error(), "no string value") {
			t.Errorf("Load: got %v; want ErrMalformed saying there is no string value", err)
		}
	})
}

func TestMissingSecretKeepsAWSCode(t *testing.T) {
	_, err := Load(context.Background(), clients[awsops.Relay], "aishell/test/nope")
	if code := session.ErrorCode(err); code != "ResourceNotFoundException" {
		t.Errorf("Load: got code %q (%v); want ResourceNotFoundException", code, err)
	}
	if err == nil || !strings.HasPrefix(err.Error(), "load keys: read secret aishell/test/nope: ") {
		t.Errorf("Load: got %v; want it to name the step and the secret", err)
	}
}

func TestRefreshKeepsLastGoodKeys(t *testing.T) {
	ctx := context.Background()
	name := newSecret(t, mustValue(t))
	src, err := Load(ctx, clients[awsops.Relay], name)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	before := signBoth(t, src, "before")

	putValue(t, name, `{"ticket":[]}`)
	if err := src.Refresh(ctx); !errors.Is(err, ErrMalformed) {
		t.Fatalf("Refresh of a malformed value: got %v; want ErrMalformed", err)
	}
	verify(t, src.Keys(), before, true)
	verify(t, src.Keys(), signBoth(t, src, "after"), true)
}

// records collects log records.
type records struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (r *records) Enabled(context.Context, slog.Level) bool { return true }
func (r *records) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recs = append(r.recs, rec.Clone())
	return nil
}
func (r *records) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *records) WithGroup(string) slog.Handler      { return r }

func (r *records) all() []slog.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]slog.Record(nil), r.recs...)
}

// Run picks up a rotation on its own, logs each failed refresh once and
// keeps the last good keys meanwhile, and stops with its context.
func TestRunRefreshesOnSchedule(t *testing.T) {
	value := mustValue(t)
	name := newSecret(t, value)
	src, err := Load(context.Background(), clients[awsops.Relay], name)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	logs := &records{}
	src.Log = slog.New(logs)
	type outcome struct {
		err    error
		logged bool
	}
	refreshed := make(chan outcome)
	src.afterRefresh = func(err error, logged bool) { refreshed <- outcome{err, logged} }

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		src.Run(ctx, time.Millisecond)
	}()

	// A rotation is picked up: after some refresh the keys sign with the
	// new key. (A refresh already under way may still read the old value.)
	first := signBoth(t, src, "first")
	rotated := mustRotate(t, value)
	putValue(t, name, rotated)
	for {
		o := <-refreshed
		if o.err != nil {
			t.Fatalf("refresh after rotation: %v", o.err)
		}
		probe := signBoth(t, src, "probe")[0]
		_, err := probe.ring(newestOnly(t, rotated)).Verify(probe.token, probe.kind, now)
		if err == nil {
			break
		}
	}
	verify(t, newestOnly(t, rotated), signBoth(t, src, "after rotation"), true)
	verify(t, src.Keys(), first, true)

	// Failures: each is logged once, and the keys stay.
	putValue(t, name, `{"ticket":["AAAA"],"task":[]}`)
	var failed, logged int
	for failed < 3 {
		o := <-refreshed
		if o.err != nil {
			failed++
			if !errors.Is(o.err, ErrMalformed) {
				t.Errorf("refresh of a malformed value: got %v; want ErrMalformed", o.err)
			}
		}
		if o.logged {
			logged++
		}
	}
	cancel()
	// Take the outcomes of refreshes under way until Run ends.
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		for o := range refreshed {
			if o.logged {
				logged++
			}
		}
	}()
	<-done
	close(refreshed)
	<-drained

	var events int
	for _, r := range logs.all() {
		attrs := map[string]string{}
		r.Attrs(func(a slog.Attr) bool { attrs[a.Key] = a.Value.String(); return true })
		if attrs["event"] != EventRefreshFailed {
			continue
		}
		events++
		if r.Level != slog.LevelWarn || attrs["secretId"] != name ||
			!strings.Contains(attrs["error"], `field "ticket" key 0 is 3 bytes`) {
			t.Errorf("log record: got level %s attrs %v; want warn naming the secret and the fault",
				r.Level, attrs)
		}
		if strings.Contains(attrs["error"], "AAAA") {
			t.Errorf("log record: got %q; want no key material", attrs["error"])
		}
	}
	if events != logged || logged < failed {
		t.Errorf("%s events: got %d; want one per failed refresh (%d, of which %d before the stop)",
			EventRefreshFailed, events, logged, failed)
	}
	verify(t, src.Keys(), first, true)
}

func TestNewSecretValueAndRotate(t *testing.T) {
	a, b := mustValue(t), mustValue(t)
	if a == b {
		t.Errorf("two new values: got the same; want fresh keys each time")
	}
	v, err := parse(a)
	if err != nil {
		t.Fatalf("parse new value: %v", err)
	}
	if len(v.ticket) != 1 || len(v.task) != 1 || len(v.ticket[0]) != MinKeyBytes ||
		bytes.Equal(v.ticket[0], v.task[0]) {
		t.Errorf("new value: got %d ticket and %d task keys; want one distinct key each of %d bytes",
			len(v.ticket), len(v.task), MinKeyBytes)
	}

	// Each rotation puts a new key first and keeps at most KeepOld old ones.
	value := a
	var history [][]byte // ticket keys, newest first
	history = append(history, v.ticket[0])
	for round, want := range []int{2, 3, 3, 3} {
		value = mustRotate(t, value)
		got, err := parse(value)
		if err != nil {
			t.Fatalf("round %d: parse: %v", round, err)
		}
		if len(got.ticket) != want || len(got.task) != want {
			t.Fatalf("round %d: got %d ticket and %d task keys; want %d each",
				round, len(got.ticket), len(got.task), want)
		}
		for i, k := range got.ticket[1:] {
			if !bytes.Equal(k, history[i]) {
				t.Errorf("round %d: ticket key %d: got a key other than the one before; want kept in order",
					round, i+1)
			}
		}
		history = got.ticket
	}

	// The value is the documented JSON.
	var doc map[string][]string
	if err := json.Unmarshal([]byte(value), &doc); err != nil || len(doc) != 2 ||
		len(doc["ticket"]) != 3 || len(doc["task"]) != 3 {
		t.Errorf("value: got %v, %v; want {ticket: [3 keys], task: [3 keys]}", doc, err)
	}
}
