package storetest

import (
	"errors"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aishell/aishell/shared/session"
)

// sessionWrites: a session starts at version 1 and every write raises it by
// one; a write or delete holding another version gets ErrConflict, one of
// an unknown id ErrNotFound.
func (c *contract) sessionWrites(t *testing.T) {
	ctx := t.Context()
	s := c.newStore(t)

	created := mustCreate(t, s, "s_1", "alice", t0)
	if created.Version != 1 {
		t.Errorf("version after create: got %d; want 1", created.Version)
	}

	refused := []struct {
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
	for _, tc := range refused {
		c.run(t, tc.name, func(t *testing.T) {
			if err := tc.do(); !errors.Is(err, tc.wantErr) {
				t.Errorf("got %v; want %v", err, tc.wantErr)
			}
		})
	}

	// An update raises the version by one, and a second writer holding the
	// version the first one held loses, told which versions clashed.
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
}

// listAndNewestSession: ListSessions is oldest first; SessionOfUser is the
// user's newest session as it stands now.
func (c *contract) listAndNewestSession(t *testing.T) {
	ctx := t.Context()
	s := c.newStore(t)
	mustCreate(t, s, "s_b", "alice", t0.Add(time.Minute))
	mustCreate(t, s, "s_a", "alice", t0)
	mustCreate(t, s, "s_c", "bob", t0)
	// Same CreatedAt as s_b, created later and with a higher id: the newer
	// under either rule of ties.
	mustCreate(t, s, "s_d", "alice", t0.Add(time.Minute))
	// Whole seconds and fractions: a store that wrote times with a varying
	// width would sort s_e before s_b.
	mustCreate(t, s, "s_e", "erin", t0.Add(time.Second))
	mustCreate(t, s, "s_f", "erin", t0.Add(500*time.Millisecond))

	list, err := s.ListSessions(ctx)
	if err != nil {
		t.Fatalf("ListSessions: %v", err)
	}
	want := []string{"s_a", "s_c", "s_f", "s_e", "s_b", "s_d"}
	if ids := idsOf(list, sessionID); !slices.Equal(ids, want) {
		t.Errorf("ListSessions: got %v; want %v", ids, want)
	}

	newest := []struct {
		name    string
		user    string
		want    string
		wantErr error
	}{
		{"alice", "alice", "s_d", nil},
		{"bob", "bob", "s_c", nil},
		{"erin", "erin", "s_e", nil},
		{"carol", "carol", "", session.ErrNotFound},
		{"empty user", "", "", session.ErrNotFound},
	}
	for _, tc := range newest {
		c.run(t, tc.name, func(t *testing.T) {
			got, err := s.SessionOfUser(ctx, tc.user)
			if !errors.Is(err, tc.wantErr) || got.ID != tc.want {
				t.Errorf("got %q, %v; want %q, %v", got.ID, err, tc.want, tc.wantErr)
			}
		})
	}

	// The newest session comes with its current version, and once it is
	// gone the next newest is the user's.
	d, err := s.GetSession(ctx, "s_d")
	if err != nil {
		t.Fatalf("GetSession: %v", err)
	}
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

// sameInstant: of sessions with the same CreatedAt, SessionOfUser returns
// the one ListSessions puts last, and both follow the store's TieBreak.
func (c *contract) sameInstant(t *testing.T) {
	ctx := t.Context()
	s := c.newStore(t)
	// Created first but with the higher id, so that the two rules disagree.
	mustCreate(t, s, "s_z", "tess", t0)
	mustCreate(t, s, "s_y", "tess", t0)

	list, err := s.ListSessions(ctx)
	if err != nil {
		t.Fatalf("ListSessions: %v", err)
	}
	ids := idsOf(list, sessionID)
	newest, err := s.SessionOfUser(ctx, "tess")
	if err != nil {
		t.Fatalf("SessionOfUser: %v", err)
	}
	if len(ids) != 2 || newest.ID != ids[1] {
		t.Errorf("newest: got %s; want the last of ListSessions %v", newest.ID, ids)
	}

	var want []string
	switch c.tieBreak {
	case NewerByCreation:
		want = []string{"s_z", "s_y"}
	case NewerByID:
		want = []string{"s_y", "s_z"}
	default:
		return
	}
	if !slices.Equal(ids, want) {
		t.Errorf("ListSessions: got %v; want %v", ids, want)
	}
}

// userUID: a user's first call allocates the next uid, later calls return
// the same one.
func (c *contract) userUID(t *testing.T) {
	ctx := t.Context()
	s := c.newStore(t)

	first := c.firstUID
	if first == 0 {
		uid, err := s.UserUID(ctx, "alice")
		if err != nil {
			t.Fatalf("UserUID(alice): %v", err)
		}
		first = uid
	}
	steps := []struct {
		user string
		want int
	}{
		{"alice", first},
		{"bob", first + 1},
		{"alice", first},
		{"carol", first + 2},
		{"bob", first + 1},
		// User ids that look like a store's own keys are ordinary users.
		{"counter#uid", first + 3},
		{"user#alice", first + 4},
	}
	for _, st := range steps {
		got, err := s.UserUID(ctx, st.user)
		if err != nil || got != st.want {
			t.Errorf("UserUID(%s): got %d, %v; want %d", st.user, got, err, st.want)
		}
	}
}

// concurrentUserUID: first calls racing for one user agree on one uid;
// first calls of different users never share one.
func (c *contract) concurrentUserUID(t *testing.T) {
	ctx := t.Context()
	s := c.newStore(t)

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

	// A uid below the first, or 0 (root) when no first is stated, is wrong.
	lowest := max(c.firstUID, 1)
	byUser := map[string]int{}
	owner := map[int]string{}
	for i, u := range users {
		if errs[i] != nil {
			t.Fatalf("UserUID(%s): %v", u, errs[i])
		}
		if uids[i] < lowest {
			t.Errorf("UserUID(%s): got %d; want at least %d", u, uids[i], lowest)
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
