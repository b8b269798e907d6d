package localstore

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/aishell/aishell/shared/session"
	"github.com/aishell/aishell/shared/session/storetest"
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

// The embedded store keeps the contract of every session.Store.
func TestContract(t *testing.T) {
	storetest.Run(t,
		func(t *testing.T) session.Store { return open(t) },
		storetest.FirstUID(FirstUID),
		// A sequence number records the order of creations. (Times come
		// back in the zone they were written in, so no TimesInUTC.)
		storetest.SameInstantOrder(storetest.NewerByCreation),
	)
}

// Users keep their uid across a restart, and a new user never gets one that
// was handed out before.
func TestUserUIDSurvivesReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state.json")
	s, err := Open(path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	for _, user := range []string{"alice", "bob", "carol"} {
		if _, err := s.UserUID(ctx, user); err != nil {
			t.Fatalf("UserUID(%s): %v", user, err)
		}
	}

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
