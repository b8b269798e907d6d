package warmpool

import (
	"reflect"
	"testing"
	"time"

	"github.com/aishell/aishell/shared/session"
)

var now = time.Date(2026, 2, 8, 12, 0, 0, 0, time.UTC)

func avail(id string, age time.Duration) session.WarmTask {
	return session.WarmTask{ID: id, State: session.WarmAvailable, StartedAt: now.Add(-age)}
}

func starting(id string, age time.Duration) session.WarmTask {
	return session.WarmTask{ID: id, State: session.WarmStarting, StartedAt: now.Add(-age)}
}

func claimed(id string, claimAge time.Duration) session.WarmTask {
	return session.WarmTask{
		ID: id, State: session.WarmClaimed, SessionID: "s_" + id,
		StartedAt: now.Add(-time.Hour), ClaimedAt: now.Add(-claimAge),
	}
}

// want is Actions with the task lists reduced to their ids.
type want struct {
	Start        int
	Recycle      []string
	Surplus      []string
	Expire       []string
	Abandon      []string
	BackoffUntil time.Time
	Available    int
	Starting     int
}

func ids(ws []session.WarmTask) []string {
	var out []string
	for _, w := range ws {
		out = append(out, w.ID)
	}
	return out
}

func TestPlan(t *testing.T) {
	// base is a snapshot with the Refiller's defaults and no failures.
	base := func(target int, tasks ...session.WarmTask) Snapshot {
		return Snapshot{
			Now: now, Target: target, Tasks: tasks,
			MaxAge: 30 * time.Minute, ClaimTTL: 2 * time.Minute, StartTimeout: time.Minute,
			BackoffBase: time.Second, BackoffMax: time.Minute,
		}
	}
	failing := func(s Snapshot, failures int, ago time.Duration) Snapshot {
		s.ConsecutiveFailures, s.LastFailure = failures, now.Add(-ago)
		return s
	}

	tests := []struct {
		name string
		snap Snapshot
		want want
	}{
		{"empty pool fills to target", base(3), want{Start: 3}},
		{"target zero starts nothing", base(0), want{}},
		{"negative target counts as zero", base(-2), want{}},
		{"full pool starts nothing",
			base(2, avail("a", time.Minute), avail("b", time.Minute)),
			want{Available: 2}},
		{"starting tasks count toward the target",
			base(3, avail("a", time.Minute), starting("b", time.Second)),
			want{Start: 1, Available: 1, Starting: 1}},
		{"task past max age is recycled and replaced",
			base(2, avail("old", 31*time.Minute), avail("new", time.Minute)),
			want{Start: 1, Recycle: []string{"old"}, Available: 1}},
		{"task exactly at max age is kept",
			base(1, avail("a", 30*time.Minute)),
			want{Available: 1}},
		{"zero max age never recycles",
			func() Snapshot { s := base(1, avail("a", 1000*time.Hour)); s.MaxAge = 0; return s }(),
			want{Available: 1}},
		{"starting task past the start timeout is abandoned and replaced",
			base(2, starting("stuck", 61*time.Second), starting("fresh", time.Second)),
			want{Start: 1, Abandon: []string{"stuck"}, Starting: 1}},
		{"starting task exactly at the start timeout is kept",
			base(1, starting("a", time.Minute)),
			want{Starting: 1}},
		{"live claim is left alone and not counted",
			base(1, claimed("c", time.Minute)),
			want{Start: 1}},
		{"stale claim expires",
			base(1, claimed("c", 3*time.Minute), avail("a", time.Minute)),
			want{Expire: []string{"c"}, Available: 1}},
		{"claim without a claim time expires",
			base(0, session.WarmTask{ID: "c", State: session.WarmClaimed, StartedAt: now}),
			want{Expire: []string{"c"}}},
		{"record in an unknown state is abandoned",
			base(1, session.WarmTask{ID: "x", State: "exploded", StartedAt: now}),
			want{Start: 1, Abandon: []string{"x"}}},
		{"available beyond target are surplus, oldest first",
			base(2, avail("a", 3*time.Minute), avail("b", 2*time.Minute),
				avail("c", 4*time.Minute), avail("d", time.Minute)),
			want{Surplus: []string{"c", "a"}, Available: 2}},
		{"starting beyond target trims only available ones",
			base(2, avail("a", time.Minute), starting("b", time.Second),
				starting("c", time.Second), starting("d", time.Second)),
			want{Surplus: []string{"a"}, Starting: 3}},
		{"recycled tasks do not count as surplus",
			base(1, avail("old", time.Hour), avail("a", time.Minute)),
			want{Recycle: []string{"old"}, Available: 1}},
		{"mixed pool",
			base(4, avail("old", time.Hour), avail("a", time.Minute), starting("stuck", 5*time.Minute),
				starting("b", 10*time.Second), claimed("live", time.Minute), claimed("stale", time.Hour)),
			want{Start: 2, Recycle: []string{"old"}, Expire: []string{"stale"},
				Abandon: []string{"stuck"}, Available: 1, Starting: 1}},
		{"one failure holds starts for the base wait",
			failing(base(2), 1, 500*time.Millisecond),
			want{BackoffUntil: now.Add(500 * time.Millisecond)}},
		{"back-off ends exactly at its end",
			failing(base(2), 1, time.Second),
			want{Start: 2}},
		{"three failures wait four times the base",
			failing(base(2), 3, 3*time.Second),
			want{BackoffUntil: now.Add(time.Second)}},
		{"three failures, past the wait",
			failing(base(2), 3, 4*time.Second),
			want{Start: 2}},
		{"many failures wait at most the maximum",
			failing(base(2), 10, 59*time.Second),
			want{BackoffUntil: now.Add(time.Second)}},
		{"very many failures do not overflow",
			failing(base(2), 1000, time.Minute+time.Nanosecond),
			want{Start: 2}},
		{"no base, no back-off",
			func() Snapshot { s := failing(base(1), 5, 0); s.BackoffBase = 0; return s }(),
			want{Start: 1}},
		{"back-off keeps old tasks instead of recycling them",
			failing(base(2, avail("old", time.Hour)), 1, 0),
			want{Available: 1, BackoffUntil: now.Add(time.Second)}},
		{"back-off still expires claims and abandons stuck starts",
			failing(base(2, claimed("c", time.Hour), starting("stuck", time.Hour)), 2, 0),
			want{Expire: []string{"c"}, Abandon: []string{"stuck"},
				BackoffUntil: now.Add(2 * time.Second)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := Plan(tc.snap)
			got := want{
				Start: a.Start, Recycle: ids(a.Recycle), Surplus: ids(a.Surplus),
				Expire: ids(a.Expire), Abandon: ids(a.Abandon), BackoffUntil: a.BackoffUntil,
				Available: a.Available, Starting: a.Starting,
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %+v;\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestPlanLeavesSnapshotAlone(t *testing.T) {
	tasks := []session.WarmTask{avail("b", time.Minute), avail("a", time.Hour)}
	Plan(Snapshot{Now: now, Target: 1, MaxAge: time.Minute, Tasks: tasks})
	if got := ids(tasks); !reflect.DeepEqual(got, []string{"b", "a"}) {
		t.Errorf("snapshot tasks after Plan: got %v; want [b a]", got)
	}
}

func TestBackoff(t *testing.T) {
	const day = 24 * time.Hour
	tests := []struct {
		failures    int
		base, limit time.Duration
		want        time.Duration
	}{
		{0, time.Second, time.Minute, 0},
		{-1, time.Second, time.Minute, 0},
		{1, 0, time.Minute, 0},
		{1, time.Second, time.Minute, time.Second},
		{2, time.Second, time.Minute, 2 * time.Second},
		{6, time.Second, time.Minute, 32 * time.Second},
		{7, time.Second, time.Minute, time.Minute},
		{1 << 30, time.Second, time.Minute, time.Minute},
		{1, 2 * time.Minute, time.Minute, time.Minute},
		{3, time.Second, 0, 4 * time.Second},
		{200, day, 0, time.Duration(1<<63 - 1)},
	}
	for _, tc := range tests {
		if got := Backoff(tc.failures, tc.base, tc.limit); got != tc.want {
			t.Errorf("Backoff(%d, %s, %s): got %s; want %s", tc.failures, tc.base, tc.limit, got, tc.want)
		}
	}
}
