package storetest

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/aishell/aishell/shared/session"
)

// warmTaskWrites: a warm task starts at version 1 and every write raises
// it by one; deleting a record that is gone is no error.
func (c *contract) warmTaskWrites(t *testing.T) {
	ctx := t.Context()
	s := c.newStore(t)
	w := mustPut(t, s, session.WarmTask{
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
		c.run(t, tc.name, func(t *testing.T) {
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

// claimOldest: a claim takes the relay's available warm task that started
// first, and raises its version like any write.
func (c *contract) claimOldest(t *testing.T) {
	ctx := t.Context()
	s := c.newStore(t)
	for _, w := range []session.WarmTask{
		{ID: "t_young", RelayID: "r1", State: session.WarmAvailable, StartedAt: t0.Add(2 * time.Minute)},
		{ID: "t_old", RelayID: "r1", State: session.WarmAvailable, StartedAt: t0.Add(time.Minute)},
		{ID: "t_starting", RelayID: "r1", State: session.WarmStarting, StartedAt: t0},
		{ID: "t_claimed", RelayID: "r1", State: session.WarmClaimed, StartedAt: t0},
		{ID: "t_other", RelayID: "r2", State: session.WarmAvailable, StartedAt: t0},
	} {
		mustPut(t, s, w)
	}
	before, err := s.ListWarmTasks(ctx, "r1")
	if err != nil {
		t.Fatalf("ListWarmTasks: %v", err)
	}

	now := t0.Add(time.Hour)
	for _, id := range []string{"t_old", "t_young"} {
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
	want := []string{"t_claimed", "t_starting", "t_old", "t_young"}
	if ids := idsOf(list, warmID); !slices.Equal(ids, want) {
		t.Errorf("ListWarmTasks(r1): got %v; want %v", ids, want)
	}

	// A writer holding the record as it was before the claim loses.
	i := slices.IndexFunc(before, func(w session.WarmTask) bool { return w.ID == "t_old" })
	if i < 0 {
		t.Fatalf("ListWarmTasks before the claims: got %v; want t_old among them",
			idsOf(before, warmID))
	}
	stale := before[i]
	stale.State = session.WarmClaimed
	if _, err := s.UpdateWarmTask(ctx, stale); !errors.Is(err, session.ErrConflict) {
		t.Errorf("update of t_old with its pre-claim version: got %v; want ErrConflict", err)
	}
}

// concurrentClaims: claimers race for a relay's warm tasks; each task goes
// to exactly one of them, and the others are told there is none.
func (c *contract) concurrentClaims(t *testing.T) {
	tests := []struct {
		name     string
		tasks    int
		claimers int
	}{
		{"sixteen claimers, one task", 1, 16},
		{"sixteen claimers, four tasks", 4, 16},
	}
	for _, tc := range tests {
		c.run(t, tc.name, func(t *testing.T) {
			ctx := t.Context()
			s := c.newStore(t)
			for i := range tc.tasks {
				mustPut(t, s, session.WarmTask{
					ID: fmt.Sprintf("t_%d", i), RelayID: "r1", State: session.WarmAvailable,
					StartedAt: t0.Add(time.Duration(i) * time.Second),
				})
			}

			var (
				wg    sync.WaitGroup
				start = make(chan struct{})
				// mu guards won and losers.
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

			// The store holds each claim as its winner was told.
			list, err := s.ListWarmTasks(ctx, "r1")
			if err != nil {
				t.Fatalf("ListWarmTasks: %v", err)
			}
			if len(list) != tc.tasks {
				t.Errorf("stored tasks: got %v; want %d", idsOf(list, warmID), tc.tasks)
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
