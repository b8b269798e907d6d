package dynamostore

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/aishell/aishell/shared/awsclient"
	"github.com/aishell/aishell/shared/awsops"
	"github.com/aishell/aishell/shared/awstest"
	"github.com/aishell/aishell/shared/session"
)

var (
	// admin creates and inspects tables; its calls are not recorded, as no
	// component of the product creates tables.
	admin *dynamodb.Client
	// client is the store's client; its calls are recorded as the relay's.
	client *dynamodb.Client
	rec    = awsops.NewRecorder()
	tables atomic.Int64
)

var t0 = time.Date(2026, 2, 8, 12, 0, 0, 0, time.UTC)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	moto, err := awstest.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, "dynamostore tests need moto:", err)
		return 1
	}
	defer moto.Close()

	admin = dynamodb.NewFromConfig(serialized(moto.Config()))
	cfg := serialized(moto.Config())
	awsclient.Prepare(&cfg, awsops.Relay, rec)
	client = dynamodb.NewFromConfig(cfg)

	code := m.Run()
	if err := rec.Check(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if code != 0 {
		fmt.Fprintln(os.Stderr, "moto said:\n"+moto.Output())
	}
	return code
}

// serialized makes the clients of cfg send one request at a time.
//
// Moto gap: moto_server (5.2.1) answers requests on several threads and
// checks an UpdateItem's condition and applies the update without a lock,
// so two concurrent conditional updates of one item can both succeed (seen
// in about one run in ten with sixteen claimers). DynamoDB applies each
// write to an item atomically; serializing the requests restores that
// here while the store's callers still interleave between their calls.
func serialized(cfg aws.Config) aws.Config {
	cfg.HTTPClient = serialClient{next: cfg.HTTPClient}
	return cfg
}

// serialMu is shared by every serialClient, so that both clients' requests
// queue behind one another.
var serialMu sync.Mutex

type serialClient struct{ next aws.HTTPClient }

// Do sends r once no other request is under way. Moto answers only once
// the request is carried out, so the body may be read after the unlock.
func (c serialClient) Do(r *http.Request) (*http.Response, error) {
	serialMu.Lock()
	defer serialMu.Unlock()
	return c.next.Do(r)
}

// newTables creates a fresh set of tables for one test, so that tests need
// no reset of the server between them.
func newTables(t *testing.T) Tables {
	t.Helper()
	n := tables.Add(1)
	tb := Tables{
		Sessions:  fmt.Sprintf("t%d-sessions", n),
		WarmTasks: fmt.Sprintf("t%d-warm-tasks", n),
		Users:     fmt.Sprintf("t%d-users", n),
		Relays:    fmt.Sprintf("t%d-relays", n),
	}
	if err := CreateTables(context.Background(), admin, tb); err != nil {
		t.Fatalf("CreateTables: %v", err)
	}
	return tb
}

func open(t *testing.T) *Store {
	t.Helper()
	return New(client, newTables(t))
}

func mustSession(t *testing.T, s *Store, id, user string, created time.Time) session.Session {
	t.Helper()
	sess, err := s.CreateSession(context.Background(), session.Session{
		ID: id, UserID: user, State: session.StateStarting, CreatedAt: created,
	})
	if err != nil {
		t.Fatalf("CreateSession(%s): %v", id, err)
	}
	return sess
}

func mustWarm(t *testing.T, s *Store, w session.WarmTask) session.WarmTask {
	t.Helper()
	got, err := s.PutWarmTask(context.Background(), w)
	if err != nil {
		t.Fatalf("PutWarmTask(%s): %v", w.ID, err)
	}
	return got
}

func TestSessionWrites(t *testing.T) {
	ctx := context.Background()
	s := open(t)

	created := mustSession(t, s, "s_1", "alice", t0)
	if created.Version != 1 {
		t.Errorf("version after create: got %d; want 1", created.Version)
	}

	tests := []struct {
		name    string
		do      func() error
		wantErr error
	}{
		{"create with taken id", func() error {
			_, err := s.CreateSession(ctx, session.Session{ID: "s_1"})
			return err
		}, session.ErrExists},
		{"get unknown id", func() error {
			_, err := s.GetSession(ctx, "s_nope")
			return err
		}, session.ErrNotFound},
		{"get empty id", func() error {
			_, err := s.GetSession(ctx, "")
			return err
		}, session.ErrNotFound},
		{"update with stale version", func() error {
			stale := created
			stale.Version = 0
			_, err := s.UpdateSession(ctx, stale)
			return err
		}, session.ErrConflict},
		{"update unknown id", func() error {
			_, err := s.UpdateSession(ctx, session.Session{ID: "s_nope", Version: 1})
			return err
		}, session.ErrNotFound},
		{"delete with stale version", func() error {
			return s.DeleteSession(ctx, "s_1", 7)
		}, session.ErrConflict},
		{"delete unknown id", func() error {
			return s.DeleteSession(ctx, "s_nope", 1)
		}, session.ErrNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.do(); !errors.Is(err, tc.wantErr) {
				t.Errorf("got %v; want %v", err, tc.wantErr)
			}
		})
	}

	// A successful update raises the version by one and wins over a second
	// writer holding the same version.
	next := created
	next.State = session.StateReady
	next, err := s.UpdateSession(ctx, next)
	if err != nil {
		t.Fatalf("UpdateSession: %v", err)
	}
	if next.Version != 2 || next.State != session.StateReady {
		t.Errorf("after update: got version %d state %s; want 2 ready", next.Version, next.State)
	}
	_, err = s.UpdateSession(ctx, created)
	if !errors.Is(err, session.ErrConflict) {
		t.Errorf("second writer with version 1: got %v; want ErrConflict", err)
	} else if !strings.Contains(err.Error(), "version 1, stored 2") {
		t.Errorf("second writer with version 1: got %q; want it to name both versions", err)
	}
	got, err := s.GetSession(ctx, "s_1")
	if err != nil || !reflect.DeepEqual(got, next) {
		t.Errorf("GetSession: got %+v, %v; want %+v", got, err, next)
	}

	if err := s.DeleteSession(ctx, "s_1", next.Version); err != nil {
		t.Fatalf("DeleteSession: %v", err)
	}
	if _, err := s.GetSession(ctx, "s_1"); !errors.Is(err, session.ErrNotFound) {
		t.Errorf("get after delete: got %v; want ErrNotFound", err)
	}
	if _, err := s.CreateSession(ctx, session.Session{}); err == nil {
		t.Errorf("create with empty id: got nil error; want one")
	}
}

func TestListAndNewestSession(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	mustSession(t, s, "s_b", "alice", t0.Add(time.Minute))
	mustSession(t, s, "s_a", "alice", t0)
	mustSession(t, s, "s_c", "bob", t0)
	// Same CreatedAt as s_b: the higher id counts as the newer.
	mustSession(t, s, "s_d", "alice", t0.Add(time.Minute))
	// Whole seconds and fractions: a variable-width time format would sort
	// this one before s_b.
	mustSession(t, s, "s_e", "erin", t0.Add(time.Second))
	mustSession(t, s, "s_f", "erin", t0.Add(500*time.Millisecond))

	list, err := s.ListSessions(ctx)
	if err != nil {
		t.Fatalf("ListSessions: %v", err)
	}
	var ids []string
	for _, l := range list {
		ids = append(ids, l.ID)
	}
	if want := []string{"s_a", "s_c", "s_f", "s_e", "s_b", "s_d"}; !reflect.DeepEqual(ids, want) {
		t.Errorf("ListSessions: got %v; want %v", ids, want)
	}

	tests := []struct {
		user    string
		want    string
		wantErr error
	}{
		{"alice", "s_d", nil},
		{"bob", "s_c", nil},
		{"erin", "s_e", nil},
		{"carol", "", session.ErrNotFound},
		{"", "", session.ErrNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.user, func(t *testing.T) {
			got, err := s.SessionOfUser(ctx, tc.user)
			if !errors.Is(err, tc.wantErr) || got.ID != tc.want {
				t.Errorf("got %q, %v; want %q, %v", got.ID, err, tc.want, tc.wantErr)
			}
		})
	}

	// The newest session carries its current version, and once it is gone
	// the next newest is the user's.
	d, _ := s.GetSession(ctx, "s_d")
	d.State = session.StateReady
	if d, err = s.UpdateSession(ctx, d); err != nil {
		t.Fatalf("UpdateSession: %v", err)
	}
	if got, err := s.SessionOfUser(ctx, "alice"); err != nil || got.Version != d.Version {
		t.Errorf("newest after update: got version %d, %v; want %d", got.Version, err, d.Version)
	}
	if err := s.DeleteSession(ctx, "s_d", d.Version); err != nil {
		t.Fatalf("DeleteSession: %v", err)
	}
	if got, err := s.SessionOfUser(ctx, "alice"); err != nil || got.ID != "s_b" {
		t.Errorf("newest after delete: got %q, %v; want s_b", got.ID, err)
	}
}

func TestUserUID(t *testing.T) {
	ctx := context.Background()
	tb := newTables(t)
	s := New(client, tb)

	steps := []struct {
		user string
		want int
	}{
		{"alice", FirstUID},
		{"bob", FirstUID + 1},
		{"alice", FirstUID},
		{"carol", FirstUID + 2},
		{"bob", FirstUID + 1},
		// Ids that look like the table's own keys are ordinary users.
		{"counter#uid", FirstUID + 3},
		{"user#alice", FirstUID + 4},
	}
	for _, st := range steps {
		got, err := s.UserUID(ctx, st.user)
		if err != nil || got != st.want {
			t.Errorf("UserUID(%s): got %d, %v; want %d", st.user, got, err, st.want)
		}
	}
	if _, err := s.UserUID(ctx, ""); err == nil {
		t.Errorf("UserUID of empty user: got nil error; want one")
	}

	// Another process on the same tables agrees on old users and hands out
	// no uid twice.
	other := New(client, tb)
	if got, _ := other.UserUID(ctx, "bob"); got != FirstUID+1 {
		t.Errorf("bob from another store: got %d; want %d", got, FirstUID+1)
	}
	if got, _ := other.UserUID(ctx, "dave"); got != FirstUID+5 {
		t.Errorf("dave from another store: got %d; want %d", got, FirstUID+5)
	}
}

// First uses racing for one user agree on one uid; first uses of different
// users never share one.
func TestConcurrentUserUID(t *testing.T) {
	ctx := context.Background()
	s := open(t)

	const callers = 16
	users := make([]string, callers)
	for i := range users {
		if i%2 == 0 {
			users[i] = "shared"
		} else {
			users[i] = "u" + strconv.Itoa(i)
		}
	}
	var (
		wg    sync.WaitGroup
		start = make(chan struct{})
		uids  = make([]int, callers)
		errs  = make([]error, callers)
	)
	for i, u := range users {
		wg.Go(func() {
			<-start
			uids[i], errs[i] = s.UserUID(ctx, u)
		})
	}
	close(start)
	wg.Wait()

	byUser := map[string]int{}
	owner := map[int]string{}
	for i, u := range users {
		if errs[i] != nil {
			t.Fatalf("UserUID(%s): %v", u, errs[i])
		}
		if uids[i] < FirstUID {
			t.Errorf("UserUID(%s): got %d; want at least %d", u, uids[i], FirstUID)
		}
		if prev, ok := byUser[u]; ok && prev != uids[i] {
			t.Errorf("UserUID(%s): got %d and %d; want one uid", u, prev, uids[i])
		}
		byUser[u] = uids[i]
		if o, ok := owner[uids[i]]; ok && o != u {
			t.Errorf("uid %d: got users %s and %s; want one", uids[i], o, u)
		}
		owner[uids[i]] = u
	}
	// Later calls read what the race settled.
	for u, want := range byUser {
		if got, err := s.UserUID(ctx, u); err != nil || got != want {
			t.Errorf("UserUID(%s) after the race: got %d, %v; want %d", u, got, err, want)
		}
	}
}

func TestWarmTaskWrites(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	w := mustWarm(t, s, session.WarmTask{
		ID: "t_1", RelayID: "r1", State: session.WarmStarting, StartedAt: t0,
	})
	if w.Version != 1 {
		t.Errorf("version after put: got %d; want 1", w.Version)
	}

	tests := []struct {
		name    string
		do      func() error
		wantErr error
	}{
		{"put with taken id", func() error {
			_, err := s.PutWarmTask(ctx, session.WarmTask{ID: "t_1"})
			return err
		}, session.ErrExists},
		{"update with stale version", func() error {
			stale := w
			stale.Version = 5
			_, err := s.UpdateWarmTask(ctx, stale)
			return err
		}, session.ErrConflict},
		{"update unknown id", func() error {
			_, err := s.UpdateWarmTask(ctx, session.WarmTask{ID: "t_nope", Version: 1})
			return err
		}, session.ErrNotFound},
		{"delete unknown id", func() error {
			return s.DeleteWarmTask(ctx, "t_nope")
		}, nil},
		{"claim with none available", func() error {
			_, err := s.ClaimWarmTask(ctx, "r1", "s_1", t0)
			return err
		}, session.ErrNoWarmTask},
		{"claim of a relay without tasks", func() error {
			_, err := s.ClaimWarmTask(ctx, "r9", "s_1", t0)
			return err
		}, session.ErrNoWarmTask},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.do(); !errors.Is(err, tc.wantErr) {
				t.Errorf("got %v; want %v", err, tc.wantErr)
			}
		})
	}
	if _, err := s.PutWarmTask(ctx, session.WarmTask{}); err == nil {
		t.Errorf("put with empty id: got nil error; want one")
	}

	w.State, w.Handle = session.WarmAvailable, "h1"
	w, err := s.UpdateWarmTask(ctx, w)
	if err != nil || w.Version != 2 {
		t.Fatalf("UpdateWarmTask: got version %d, %v; want 2, nil", w.Version, err)
	}
	list, err := s.ListWarmTasks(ctx, "r1")
	if err != nil || len(list) != 1 || !reflect.DeepEqual(list[0], w) {
		t.Errorf("ListWarmTasks after update: got %+v, %v; want [%+v]", list, err, w)
	}
	if err := s.DeleteWarmTask(ctx, "t_1"); err != nil {
		t.Fatalf("DeleteWarmTask: %v", err)
	}
	if err := s.DeleteWarmTask(ctx, "t_1"); err != nil {
		t.Errorf("second DeleteWarmTask: got %v; want nil", err)
	}
	if list, _ := s.ListWarmTasks(ctx, "r1"); len(list) != 0 {
		t.Errorf("ListWarmTasks after delete: got %v; want none", list)
	}
}

func TestClaimTakesOldestAvailableOfRelay(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	for _, w := range []session.WarmTask{
		{ID: "t_young", RelayID: "r1", State: session.WarmAvailable, StartedAt: t0.Add(2 * time.Minute)},
		{ID: "t_old", RelayID: "r1", State: session.WarmAvailable, StartedAt: t0.Add(time.Minute)},
		{ID: "t_starting", RelayID: "r1", State: session.WarmStarting, StartedAt: t0},
		{ID: "t_claimed", RelayID: "r1", State: session.WarmClaimed, StartedAt: t0},
		{ID: "t_other", RelayID: "r2", State: session.WarmAvailable, StartedAt: t0},
	} {
		mustWarm(t, s, w)
	}
	before, _ := s.ListWarmTasks(ctx, "r1")

	now := t0.Add(time.Hour)
	want := []string{"t_old", "t_young"}
	for _, id := range want {
		got, err := s.ClaimWarmTask(ctx, "r1", "s_"+id, now)
		if err != nil {
			t.Fatalf("ClaimWarmTask: %v", err)
		}
		if got.ID != id || got.State != session.WarmClaimed || got.SessionID != "s_"+id ||
			!got.ClaimedAt.Equal(now) || got.Version != 2 {
			t.Errorf("claim: got %+v; want %s claimed by s_%s at %v, version 2", got, id, id, now)
		}
	}
	if _, err := s.ClaimWarmTask(ctx, "r1", "s_x", now); !errors.Is(err, session.ErrNoWarmTask) {
		t.Errorf("third claim: got %v; want ErrNoWarmTask", err)
	}

	list, err := s.ListWarmTasks(ctx, "r1")
	if err != nil {
		t.Fatalf("ListWarmTasks: %v", err)
	}
	var ids []string
	for _, w := range list {
		ids = append(ids, w.ID)
	}
	if want := []string{"t_claimed", "t_starting", "t_old", "t_young"}; !reflect.DeepEqual(ids, want) {
		t.Errorf("ListWarmTasks(r1): got %v; want %v", ids, want)
	}

	// A writer holding the record as it was before the claim loses.
	for _, w := range before {
		if w.ID != "t_old" {
			continue
		}
		w.State = session.WarmClaimed
		if _, err := s.UpdateWarmTask(ctx, w); !errors.Is(err, session.ErrConflict) {
			t.Errorf("update of t_old with its pre-claim version: got %v; want ErrConflict", err)
		}
	}
}

// Claimers race for a relay's warm tasks: each task goes to exactly one of
// them, and the others are told there is none.
func TestConcurrentClaims(t *testing.T) {
	tests := []struct {
		name     string
		tasks    int
		claimers int
	}{
		{"sixteen claimers, one task", 1, 16},
		{"sixteen claimers, four tasks", 4, 16},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			s := open(t)
			for i := range tc.tasks {
				mustWarm(t, s, session.WarmTask{
					ID: fmt.Sprintf("t_%d", i), RelayID: "r1", State: session.WarmAvailable,
					StartedAt: t0.Add(time.Duration(i) * time.Second),
				})
			}

			var (
				wg     sync.WaitGroup
				start  = make(chan struct{})
				mu     sync.Mutex
				won    = map[string]string{} // task id to session id
				losers []error
			)
			for i := range tc.claimers {
				wg.Go(func() {
					<-start
					sid := fmt.Sprintf("s_%d", i)
					w, err := s.ClaimWarmTask(ctx, "r1", sid, t0)
					mu.Lock()
					defer mu.Unlock()
					if err != nil {
						losers = append(losers, err)
						return
					}
					if prev, ok := won[w.ID]; ok {
						t.Errorf("task %s: claimed by %s and %s; want one", w.ID, prev, sid)
					}
					won[w.ID] = sid
				})
			}
			close(start)
			wg.Wait()

			if len(won) != tc.tasks {
				t.Errorf("winners: got %d; want %d", len(won), tc.tasks)
			}
			if len(losers) != tc.claimers-tc.tasks {
				t.Errorf("losers: got %d; want %d", len(losers), tc.claimers-tc.tasks)
			}
			for _, err := range losers {
				if !errors.Is(err, session.ErrNoWarmTask) {
					t.Errorf("losing claim: got %v; want ErrNoWarmTask", err)
				}
			}
			list, err := s.ListWarmTasks(ctx, "r1")
			if err != nil {
				t.Fatalf("ListWarmTasks: %v", err)
			}
			for _, w := range list {
				if w.State != session.WarmClaimed || w.SessionID != won[w.ID] || w.Version != 2 {
					t.Errorf("stored %s: got %s by %q version %d; want claimed by %q version 2",
						w.ID, w.State, w.SessionID, w.Version, won[w.ID])
				}
			}
		})
	}
}

// allSet fails the test when a field of v (a struct, looked into
// recursively) has its zero value, so that a field added to a record later
// cannot go unstored without a round-trip test noticing.
func allSet(t *testing.T, name string, v reflect.Value) {
	t.Helper()
	if v.Type() == reflect.TypeFor[time.Time]() {
		if v.Interface().(time.Time).IsZero() {
			t.Fatalf("fixture %s is zero; set it so the round trip covers it", name)
		}
		return
	}
	if v.Kind() == reflect.Struct {
		for i := range v.NumField() {
			allSet(t, name+"."+v.Type().Field(i).Name, v.Field(i))
		}
		return
	}
	if v.IsZero() {
		t.Fatalf("fixture %s is zero; set it so the round trip covers it", name)
	}
}

// A record written and read back equals the original, every field set.
func TestRecordsRoundTrip(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	ns := 123456789 * time.Nanosecond

	sess := session.Session{
		ID: "s_1", UserID: "alice", State: session.StateRestarting, RelayID: "r1",
		TaskID: "t_1", TaskHandle: "arn:aws:ecs:us-east-1:1:task/c/abc", Warm: true,
		Start: session.StartRecord{
			At: t0.Add(ns), Restart: true, AccessPointMs: 1, RegisterTaskDefMs: 2,
			RunTaskMs: 3, WarmClaimMs: 4,
		},
		Restarts: 2, TraceID: "1-abc-def", ConnectToken: "token", ConnectedTaskID: "t_0",
		CreatedAt: t0, UpdatedAt: t0.Add(time.Second + ns), Version: 1,
	}
	warm := session.WarmTask{
		ID: "t_1", Handle: "arn:aws:ecs:us-east-1:1:task/c/def", RelayID: "r1",
		State: session.WarmClaimed, StartedAt: t0.Add(ns), ReadyAt: t0.Add(time.Second),
		ClaimedAt: t0.Add(time.Minute), SessionID: "s_1", Version: 1,
	}
	relay := session.Relay{
		ID: "r1", ClientURL: "wss://relay.example/ws", TaskURL: "ws://10.0.0.1:8081",
		ControlURL: "http://10.0.0.1:8082", HeartbeatAt: t0.Add(ns),
	}
	allSet(t, "Session", reflect.ValueOf(sess))
	allSet(t, "WarmTask", reflect.ValueOf(warm))
	allSet(t, "Relay", reflect.ValueOf(relay))

	if _, err := s.CreateSession(ctx, sess); err != nil {
		t.Fatalf("CreateSession: %v", err)
	}
	if got, err := s.GetSession(ctx, sess.ID); err != nil || !reflect.DeepEqual(got, sess) {
		t.Errorf("session: got %+v, %v; want %+v", got, err, sess)
	}
	if _, err := s.PutWarmTask(ctx, warm); err != nil {
		t.Fatalf("PutWarmTask: %v", err)
	}
	warms, err := s.ListWarmTasks(ctx, "r1")
	if err != nil || len(warms) != 1 || !reflect.DeepEqual(warms[0], warm) {
		t.Errorf("warm task: got %+v, %v; want [%+v]", warms, err, warm)
	}
	if err := s.PutRelay(ctx, relay); err != nil {
		t.Fatalf("PutRelay: %v", err)
	}
	relays, err := s.ListRelays(ctx)
	if err != nil || len(relays) != 1 || !reflect.DeepEqual(relays[0], relay) {
		t.Errorf("relay: got %+v, %v; want [%+v]", relays, err, relay)
	}

	// Unset times stay unset; times of another zone come back as the same
	// instant in UTC.
	zone := time.FixedZone("UTC+2", 2*60*60)
	bare := session.Session{ID: "s_2", CreatedAt: t0.In(zone)}
	if _, err := s.CreateSession(ctx, bare); err != nil {
		t.Fatalf("CreateSession: %v", err)
	}
	got, err := s.GetSession(ctx, "s_2")
	if err != nil {
		t.Fatalf("GetSession: %v", err)
	}
	if !got.CreatedAt.Equal(t0) || got.CreatedAt.Location() != time.UTC {
		t.Errorf("CreatedAt: got %v; want %v", got.CreatedAt, t0)
	}
	if !got.UpdatedAt.IsZero() || !got.Start.At.IsZero() {
		t.Errorf("unset times: got %v and %v; want zero", got.UpdatedAt, got.Start.At)
	}

	// The expiry attributes DynamoDB's TTL reads.
	expiry := []struct {
		table, id string
		want      time.Time
	}{
		{s.t.WarmTasks, warm.ID, warm.StartedAt.Add(WarmTaskTTL)},
		{s.t.Relays, relay.ID, relay.HeartbeatAt.Add(RelayTTL)},
	}
	for _, e := range expiry {
		out, err := admin.GetItem(ctx, &dynamodb.GetItemInput{
			TableName: aws.String(e.table), Key: key(e.id),
		})
		if err != nil {
			t.Fatalf("GetItem %s: %v", e.table, err)
		}
		n, ok := out.Item[attrExpiresAt].(*types.AttributeValueMemberN)
		if want := strconv.FormatInt(e.want.Unix(), 10); !ok || n.Value != want {
			t.Errorf("%s expiresAt: got %v; want number %s", e.table, out.Item[attrExpiresAt], want)
		}
	}
}

func TestStampOrderIsTimeOrder(t *testing.T) {
	times := []time.Time{
		{},
		t0,
		t0.Add(time.Nanosecond),
		t0.Add(500 * time.Millisecond),
		t0.Add(time.Second),
		t0.Add(time.Second + 10*time.Microsecond),
		t0.Add(time.Hour).In(time.FixedZone("UTC-5", -5*60*60)),
		time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC),
	}
	for i := 1; i < len(times); i++ {
		a, b := keyStamp(times[i-1]), keyStamp(times[i])
		if a >= b {
			t.Errorf("stamps of %v and %v: got %q >= %q; want ascending", times[i-1], times[i], a, b)
		}
		if len(a) != len(b) {
			t.Errorf("stamps %q and %q: got lengths %d and %d; want equal", a, b, len(a), len(b))
		}
	}
}

func TestRelays(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	for _, r := range []session.Relay{
		{ID: "r2", ClientURL: "wss://b/ws", HeartbeatAt: t0},
		{ID: "r1", ClientURL: "wss://a/ws", HeartbeatAt: t0},
	} {
		if err := s.PutRelay(ctx, r); err != nil {
			t.Fatalf("PutRelay(%s): %v", r.ID, err)
		}
	}
	// A heartbeat replaces the record.
	beat := session.Relay{ID: "r2", ClientURL: "wss://b/ws", HeartbeatAt: t0.Add(time.Minute)}
	if err := s.PutRelay(ctx, beat); err != nil {
		t.Fatalf("PutRelay heartbeat: %v", err)
	}

	steps := []struct {
		name   string
		do     func() error
		wantID []string
	}{
		{"listed by id", func() error { return nil }, []string{"r1", "r2"}},
		{"deleted", func() error { return s.DeleteRelay(ctx, "r1") }, []string{"r2"}},
		{"deleted again", func() error { return s.DeleteRelay(ctx, "r1") }, []string{"r2"}},
	}
	for _, st := range steps {
		if err := st.do(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		list, err := s.ListRelays(ctx)
		if err != nil {
			t.Fatalf("%s: ListRelays: %v", st.name, err)
		}
		var ids []string
		for _, r := range list {
			ids = append(ids, r.ID)
			if r.ID == "r2" && !r.HeartbeatAt.Equal(beat.HeartbeatAt) {
				t.Errorf("%s: r2 heartbeat: got %v; want %v", st.name, r.HeartbeatAt, beat.HeartbeatAt)
			}
		}
		if !slices.Equal(ids, st.wantID) {
			t.Errorf("%s: got %v; want %v", st.name, ids, st.wantID)
		}
	}
	if err := s.PutRelay(ctx, session.Relay{}); err == nil {
		t.Errorf("PutRelay with empty id: got nil error; want one")
	}
}

func TestTablesFromEnv(t *testing.T) {
	all := map[string]string{
		"SESSIONS_TABLE": "s", "WARM_TASKS_TABLE": "w", "USERS_TABLE": "u", "RELAYS_TABLE": "r",
	}
	tests := []struct {
		name    string
		unset   []string
		want    Tables
		wantErr string
	}{
		{"all set", nil, Tables{Sessions: "s", WarmTasks: "w", Users: "u", Relays: "r"}, ""},
		{"one missing", []string{"USERS_TABLE"}, Tables{}, "USERS_TABLE not set"},
		{"two missing", []string{"SESSIONS_TABLE", "RELAYS_TABLE"}, Tables{},
			"SESSIONS_TABLE, RELAYS_TABLE not set"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range all {
				if slices.Contains(tc.unset, k) {
					v = ""
				}
				t.Setenv(k, v)
			}
			got, err := TablesFromEnv()
			gotErr := ""
			if err != nil {
				gotErr = err.Error()
			}
			if (tc.wantErr == "") != (err == nil) || !strings.Contains(gotErr, tc.wantErr) {
				t.Errorf("error: got %v; want %q", err, tc.wantErr)
			}
			if got != tc.want {
				t.Errorf("got %+v; want %+v", got, tc.want)
			}
		})
	}
}

// The tables are made exactly as the package comment (and the CDK stack)
// declares them.
func TestCreateTablesSchema(t *testing.T) {
	ctx := context.Background()
	tb := newTables(t)
	type gsi struct{ name, partition, sort, projection string }
	tests := []struct {
		table     string
		partition string
		index     *gsi
		ttl       bool
	}{
		{tb.Sessions, "id", &gsi{"byUser", "userId", "createdAt", "ALL"}, false},
		{tb.WarmTasks, "id", &gsi{"byRelay", "relayId", "startedAt", "ALL"}, true},
		{tb.Users, "userId", nil, false},
		{tb.Relays, "id", nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.table, func(t *testing.T) {
			name := aws.String(tc.table)
			out, err := admin.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: name})
			if err != nil {
				t.Fatalf("DescribeTable: %v", err)
			}
			d := out.Table
			if b := d.BillingModeSummary; b == nil || b.BillingMode != types.BillingModePayPerRequest {
				t.Errorf("billing mode: got %+v; want PAY_PER_REQUEST", d.BillingModeSummary)
			}
			if got := keys(d.KeySchema); got != tc.partition {
				t.Errorf("key schema: got %s; want %s", got, tc.partition)
			}
			for _, a := range d.AttributeDefinitions {
				if a.AttributeType != types.ScalarAttributeTypeS {
					t.Errorf("attribute %s: got type %s; want S", *a.AttributeName, a.AttributeType)
				}
			}
			var got []gsi
			for _, g := range d.GlobalSecondaryIndexes {
				got = append(got, gsi{*g.IndexName, keys(g.KeySchema[:1]), keys(g.KeySchema[1:]),
					string(g.Projection.ProjectionType)})
			}
			var want []gsi
			if tc.index != nil {
				want = []gsi{*tc.index}
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("indexes: got %+v; want %+v", got, want)
			}

			ttl, err := admin.DescribeTimeToLive(ctx, &dynamodb.DescribeTimeToLiveInput{TableName: name})
			if err != nil {
				t.Fatalf("DescribeTimeToLive: %v", err)
			}
			d2 := ttl.TimeToLiveDescription
			on := d2 != nil && d2.TimeToLiveStatus == types.TimeToLiveStatusEnabled
			if on != tc.ttl || on && aws.ToString(d2.AttributeName) != "expiresAt" {
				t.Errorf("TTL: got %+v; want on=%v on expiresAt", d2, tc.ttl)
			}
		})
	}
	if err := CreateTables(ctx, admin, tb); err == nil {
		t.Errorf("CreateTables again: got nil error; want ResourceInUseException")
	}
}

// keys writes a key schema as "partition" or "partition,sort".
func keys(ks []types.KeySchemaElement) string {
	var names []string
	for _, k := range ks {
		names = append(names, aws.ToString(k.AttributeName))
	}
	return strings.Join(names, ",")
}

// AWS errors reach the caller wrapped with the step and keep their code.
func TestAWSErrorsKeepTheirCode(t *testing.T) {
	ctx := context.Background()
	s := New(client, Tables{
		Sessions: "no-such", WarmTasks: "no-such", Users: "no-such", Relays: "no-such",
	})
	tests := []struct {
		name string
		do   func() error
		step string
	}{
		{"get session", func() error { _, err := s.GetSession(ctx, "s_1"); return err },
			"get session s_1"},
		{"claim", func() error { _, err := s.ClaimWarmTask(ctx, "r1", "s_1", t0); return err },
			"claim warm task of relay r1"},
		{"uid", func() error { _, err := s.UserUID(ctx, "alice"); return err }, "allocate uid of alice"},
		{"relays", func() error { _, err := s.ListRelays(ctx); return err }, "list relays"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.do()
			if code := session.ErrorCode(err); code != "ResourceNotFoundException" {
				t.Errorf("code: got %q (%v); want ResourceNotFoundException", code, err)
			}
			if err == nil || !strings.HasPrefix(err.Error(), tc.step) {
				t.Errorf("error: got %v; want it to start with %q", err, tc.step)
			}
		})
	}
}

func TestCanceledContext(t *testing.T) {
	s := open(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.CreateSession(ctx, session.Session{ID: "s_1"}); !errors.Is(err, context.Canceled) {
		t.Errorf("CreateSession: got %v; want context.Canceled", err)
	}
}
