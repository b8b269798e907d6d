package localstore

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aishell/aishell/shared/session"
)

var t0 = time.Date(2026, 2, 8, 12, 0, 0, 0, time.UTC)

func open(t *testing.T) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "data", "state.json"))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
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
	if _, err := s.UpdateSession(ctx, created); !errors.Is(err, session.ErrConflict) {
		t.Errorf("second writer with version 1: got %v; want ErrConflict", err)
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
	// Same CreatedAt as s_b but created later: the newer one.
	mustSession(t, s, "s_d", "alice", t0.Add(time.Minute))

	list, err := s.ListSessions(ctx)
	if err != nil {
		t.Fatalf("ListSessions: %v", err)
	}
	var ids []string
	for _, l := range list {
		ids = append(ids, l.ID)
	}
	if want := []string{"s_a", "s_c", "s_b", "s_d"}; !reflect.DeepEqual(ids, want) {
		t.Errorf("ListSessions: got %v; want %v", ids, want)
	}

	tests := []struct {
		user    string
		want    string
		wantErr error
	}{
		{"alice", "s_d", nil},
		{"bob", "s_c", nil},
		{"carol", "", session.ErrNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.user, func(t *testing.T) {
			got, err := s.SessionOfUser(ctx, tc.user)
			if !errors.Is(err, tc.wantErr) || got.ID != tc.want {
				t.Errorf("got %q, %v; want %q, %v", got.ID, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestUserUID(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state.json")
	s, err := Open(path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}

	steps := []struct {
		user string
		want int
	}{
		{"alice", FirstUID},
		{"bob", FirstUID + 1},
		{"alice", FirstUID},
		{"carol", FirstUID + 2},
		{"bob", FirstUID + 1},
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

	// After a restart, old users keep their uid and new ones never get one
	// that was handed out before.
	s.Close()
	s, err = Open(path)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s.Close()
	if got, _ := s.UserUID(ctx, "bob"); got != FirstUID+1 {
		t.Errorf("bob after reopen: got %d; want %d", got, FirstUID+1)
	}
	if got, _ := s.UserUID(ctx, "dave"); got != FirstUID+3 {
		t.Errorf("dave after reopen: got %d; want %d", got, FirstUID+3)
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
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.do(); !errors.Is(err, tc.wantErr) {
				t.Errorf("got %v; want %v", err, tc.wantErr)
			}
		})
	}

	w.State, w.Handle = session.WarmAvailable, "h1"
	w, err := s.UpdateWarmTask(ctx, w)
	if err != nil || w.Version != 2 {
		t.Fatalf("UpdateWarmTask: got version %d, %v; want 2, nil", w.Version, err)
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
}

// Sixteen claimers race for one warm task: exactly one wins, the others are
// told there is none.
func TestConcurrentClaimsHaveOneWinner(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	mustWarm(t, s, session.WarmTask{ID: "t_1", RelayID: "r1", State: session.WarmAvailable, StartedAt: t0})

	const claimers = 16
	var (
		wg      sync.WaitGroup
		start   = make(chan struct{})
		mu      sync.Mutex
		winners []string
		others  []error
	)
	for i := range claimers {
		wg.Go(func() {
			<-start
			w, err := s.ClaimWarmTask(ctx, "r1", "s_"+string(rune('a'+i)), t0)
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				winners = append(winners, w.SessionID)
			} else {
				others = append(others, err)
			}
		})
	}
	close(start)
	wg.Wait()

	if len(winners) != 1 {
		t.Fatalf("winners: got %v; want exactly one", winners)
	}
	for _, err := range others {
		if !errors.Is(err, session.ErrNoWarmTask) {
			t.Errorf("losing claim: got %v; want ErrNoWarmTask", err)
		}
	}
	list, _ := s.ListWarmTasks(ctx, "r1")
	if len(list) != 1 || list[0].SessionID != winners[0] {
		t.Errorf("stored claim: got %+v; want claimed by %s", list, winners[0])
	}
}

func TestStateSurvivesReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state.json")
	s, err := Open(path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	sess := mustSession(t, s, "s_1", "alice", t0)
	sess.State, sess.TaskID = session.StateReady, "t_9"
	sess.Start = session.StartRecord{At: t0, RunTaskMs: 42}
	if sess, err = s.UpdateSession(ctx, sess); err != nil {
		t.Fatalf("UpdateSession: %v", err)
	}
	w := mustWarm(t, s, session.WarmTask{
		ID: "t_1", Handle: "h1", RelayID: "r1", State: session.WarmAvailable,
		StartedAt: t0, ReadyAt: t0.Add(time.Second),
	})
	uid, _ := s.UserUID(ctx, "alice")
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	info, err := os.Stat(path)
	if err != nil {
		t.Fatalf("stat state file: %v", err)
	}
	if perm := info.Mode().Perm(); perm != 0o600 {
		t.Errorf("state file mode: got %o; want 600", perm)
	}

	s, err = Open(path)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s.Close()
	gotSess, err := s.GetSession(ctx, "s_1")
	if err != nil || !reflect.DeepEqual(gotSess, sess) {
		t.Errorf("session after reopen: got %+v, %v; want %+v", gotSess, err, sess)
	}
	list, err := s.ListWarmTasks(ctx, "r1")
	if err != nil || len(list) != 1 || !reflect.DeepEqual(list[0], w) {
		t.Errorf("warm tasks after reopen: got %+v, %v; want [%+v]", list, err, w)
	}
	if got, _ := s.UserUID(ctx, "alice"); got != uid {
		t.Errorf("uid after reopen: got %d; want %d", got, uid)
	}
	// Versions go on from where they were.
	sess.State = session.StateStopped
	if next, err := s.UpdateSession(ctx, sess); err != nil || next.Version != 3 {
		t.Errorf("update after reopen: got version %d, %v; want 3, nil", next.Version, err)
	}
}

func TestOpenRefusesBadFile(t *testing.T) {
	tests := []struct {
		name    string
		content string
		wantErr string
	}{
		{"not JSON", "{not json", "parse"},
		{"truncated", `{"format":1,"sessions":{`, "parse"},
		{"unknown format", `{"format":9}`, "format 9"},
		{"id mismatch", `{"format":1,"sessions":{"s_1":{"session":{"id":"s_2"}}}}`, "has id"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.json")
			if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := Open(path)
			if err == nil {
				s.Close()
				t.Fatalf("Open: got nil error; want one")
			}
			if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Open: got %q; want it to name %s and say %q", err, path, tc.wantErr)
			}
			if data, _ := os.ReadFile(path); string(data) != tc.content {
				t.Errorf("file after failed open: got %q; want it untouched", data)
			}
		})
	}
}

func TestOneStorePerFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	first, err := Open(path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if second, err := Open(path); err == nil {
		second.Close()
		t.Fatalf("second Open while the first is open: got nil error; want one")
	} else if !strings.Contains(err.Error(), "in use") {
		t.Errorf("second Open: got %q; want it to say the store is in use", err)
	}

	first.Close()
	if _, err := first.GetSession(context.Background(), "s_1"); !errors.Is(err, ErrClosed) {
		t.Errorf("GetSession after Close: got %v; want ErrClosed", err)
	}
	again, err := Open(path)
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	again.Close()
}

// A write that cannot reach the file leaves memory as it was, so memory
// never holds what a restart would lose.
func TestFailedWriteChangesNothing(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	sess := mustSession(t, s, "s_1", "alice", t0)
	mustWarm(t, s, session.WarmTask{ID: "t_1", RelayID: "r1", State: session.WarmAvailable, StartedAt: t0})

	// A non-empty folder where the file was makes the rename fail.
	if err := os.Remove(s.Path()); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(s.Path(), "blocker"), 0o700); err != nil {
		t.Fatal(err)
	}

	writes := []struct {
		name string
		do   func() error
	}{
		{"create session", func() error {
			_, err := s.CreateSession(ctx, session.Session{ID: "s_2"})
			return err
		}},
		{"update session", func() error { _, err := s.UpdateSession(ctx, sess); return err }},
		{"delete session", func() error { return s.DeleteSession(ctx, "s_1", sess.Version) }},
		{"allocate uid", func() error { _, err := s.UserUID(ctx, "bob"); return err }},
		{"claim warm task", func() error {
			_, err := s.ClaimWarmTask(ctx, "r1", "s_1", t0)
			return err
		}},
		{"delete warm task", func() error { return s.DeleteWarmTask(ctx, "t_1") }},
	}
	for _, w := range writes {
		t.Run(w.name, func(t *testing.T) {
			if err := w.do(); err == nil || !strings.Contains(err.Error(), "persist state") {
				t.Errorf("got %v; want a persist state error", err)
			}
		})
	}

	if got, err := s.GetSession(ctx, "s_1"); err != nil || got.Version != 1 {
		t.Errorf("session after failed writes: got %+v, %v; want version 1", got, err)
	}
	if _, err := s.GetSession(ctx, "s_2"); !errors.Is(err, session.ErrNotFound) {
		t.Errorf("session s_2: got %v; want ErrNotFound", err)
	}
	if list, _ := s.ListWarmTasks(ctx, "r1"); len(list) != 1 || list[0].State != session.WarmAvailable {
		t.Errorf("warm tasks after failed writes: got %+v; want t_1 still available", list)
	}

	// Once the file can be written again, the uid that failed is handed out.
	if err := os.RemoveAll(s.Path()); err != nil {
		t.Fatal(err)
	}
	if uid, err := s.UserUID(ctx, "bob"); err != nil || uid != FirstUID {
		t.Errorf("UserUID after recovery: got %d, %v; want %d", uid, err, FirstUID)
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
