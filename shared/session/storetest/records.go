package storetest

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/aishell/aishell/shared/session"
)

// recordsRoundTrip: a record written and read back equals the original,
// with every field set, times to the nanosecond.
func (c *contract) recordsRoundTrip(t *testing.T) {
	ctx := t.Context()
	s := c.newStore(t)
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

	// Unset times stay unset; a time of another zone comes back as the same
	// instant (in UTC, for a store that says so).
	zone := time.FixedZone("UTC+2", 2*60*60)
	bare := session.Session{ID: "s_2", CreatedAt: t0.In(zone)}
	if _, err := s.CreateSession(ctx, bare); err != nil {
		t.Fatalf("CreateSession: %v", err)
	}
	got, err := s.GetSession(ctx, "s_2")
	if err != nil {
		t.Fatalf("GetSession: %v", err)
	}
	if !got.CreatedAt.Equal(t0) {
		t.Errorf("CreatedAt: got %v; want %v", got.CreatedAt, t0)
	}
	if c.utc && got.CreatedAt.Location() != time.UTC {
		t.Errorf("CreatedAt: got zone %v; want UTC", got.CreatedAt.Location())
	}
	if !got.UpdatedAt.IsZero() || !got.Start.At.IsZero() {
		t.Errorf("unset times: got %v and %v; want zero", got.UpdatedAt, got.Start.At)
	}
}

// relays: a relay's record is replaced by each heartbeat, listed by id, and
// deleting one that is gone is no error.
func (c *contract) relays(t *testing.T) {
	ctx := t.Context()
	s := c.newStore(t)
	for _, r := range []session.Relay{
		{ID: "r2", ClientURL: "wss://b/ws", HeartbeatAt: t0},
		{ID: "r1", ClientURL: "wss://a/ws", HeartbeatAt: t0},
	} {
		if err := s.PutRelay(ctx, r); err != nil {
			t.Fatalf("PutRelay(%s): %v", r.ID, err)
		}
	}
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
		for _, r := range list {
			if r.ID == "r2" && !r.HeartbeatAt.Equal(beat.HeartbeatAt) {
				t.Errorf("%s: r2 heartbeat: got %v; want %v", st.name, r.HeartbeatAt, beat.HeartbeatAt)
			}
		}
		if ids := idsOf(list, relayID); !slices.Equal(ids, st.wantID) {
			t.Errorf("%s: got %v; want %v", st.name, ids, st.wantID)
		}
	}
}

// emptyIDs: a record without an id, or a user without one, is refused
// rather than stored under "".
func (c *contract) emptyIDs(t *testing.T) {
	ctx := t.Context()
	s := c.newStore(t)
	tests := []struct {
		name string
		do   func() error
	}{
		{"create session", func() error {
			_, err := s.CreateSession(ctx, session.Session{})
			return err
		}},
		{"put warm task", func() error {
			_, err := s.PutWarmTask(ctx, session.WarmTask{})
			return err
		}},
		{"put relay", func() error { return s.PutRelay(ctx, session.Relay{}) }},
		{"allocate uid", func() error { _, err := s.UserUID(ctx, ""); return err }},
	}
	for _, tc := range tests {
		c.run(t, tc.name, func(t *testing.T) {
			if err := tc.do(); err == nil {
				t.Errorf("got nil error; want one")
			}
		})
	}
}

// canceledContext: every method gives up on a canceled context and says
// why, and a canceled write leaves nothing behind.
func (c *contract) canceledContext(t *testing.T) {
	s := c.newStore(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()

	calls := []struct {
		name string
		do   func() error
	}{
		{"create session", func() error {
			_, err := s.CreateSession(ctx, session.Session{ID: "s_1"})
			return err
		}},
		{"get session", func() error { _, err := s.GetSession(ctx, "s_1"); return err }},
		{"update session", func() error {
			_, err := s.UpdateSession(ctx, session.Session{ID: "s_1", Version: 1})
			return err
		}},
		{"delete session", func() error { return s.DeleteSession(ctx, "s_1", 1) }},
		{"list sessions", func() error { _, err := s.ListSessions(ctx); return err }},
		{"session of user", func() error { _, err := s.SessionOfUser(ctx, "alice"); return err }},
		{"allocate uid", func() error { _, err := s.UserUID(ctx, "alice"); return err }},
		{"put warm task", func() error {
			_, err := s.PutWarmTask(ctx, session.WarmTask{ID: "t_1", RelayID: "r1"})
			return err
		}},
		{"update warm task", func() error {
			_, err := s.UpdateWarmTask(ctx, session.WarmTask{ID: "t_1", Version: 1})
			return err
		}},
		{"claim warm task", func() error {
			_, err := s.ClaimWarmTask(ctx, "r1", "s_1", t0)
			return err
		}},
		{"delete warm task", func() error { return s.DeleteWarmTask(ctx, "t_1") }},
		{"list warm tasks", func() error { _, err := s.ListWarmTasks(ctx, "r1"); return err }},
		{"put relay", func() error { return s.PutRelay(ctx, session.Relay{ID: "r1"}) }},
		{"list relays", func() error { _, err := s.ListRelays(ctx); return err }},
		{"delete relay", func() error { return s.DeleteRelay(ctx, "r1") }},
	}
	for _, tc := range calls {
		c.run(t, tc.name, func(t *testing.T) {
			if err := tc.do(); !errors.Is(err, context.Canceled) {
				t.Errorf("got %v; want context.Canceled", err)
			}
		})
	}

	live := t.Context()
	if _, err := s.GetSession(live, "s_1"); !errors.Is(err, session.ErrNotFound) {
		t.Errorf("session after a canceled create: got %v; want ErrNotFound", err)
	}
	if list, err := s.ListWarmTasks(live, "r1"); err != nil || len(list) != 0 {
		t.Errorf("warm tasks after a canceled put: got %v, %v; want none", list, err)
	}
	if list, err := s.ListRelays(live); err != nil || len(list) != 0 {
		t.Errorf("relays after a canceled put: got %v, %v; want none", list, err)
	}
}
