// Package warmpool keeps a relay's pool of warm tasks (R8): tasks whose
// bridge is connected and waiting for init_user, so that a session start
// only has to claim one.
//
// The decision is pure: Plan turns a Snapshot of the pool into Actions
// (start so many, recycle, expire, abandon, back off). The Refiller reads
// the store, plans, and carries the actions out through the session ports.
package warmpool

import (
	"cmp"
	"slices"
	"time"

	"github.com/aishell/aishell/shared/session"
)

// Snapshot is everything the planner decides from.
type Snapshot struct {
	Now time.Time
	// Target is the wanted number of warm tasks, available or starting.
	Target int
	// MaxAge: available tasks started longer ago than this are recycled.
	MaxAge time.Duration
	// ClaimTTL: claims made longer ago than this have expired (the claim's
	// session never took the task over).
	ClaimTTL time.Duration
	// StartTimeout: starting tasks whose bridge has not connected for
	// longer than this are abandoned.
	StartTimeout time.Duration
	// Tasks are the relay's warm task records.
	Tasks []session.WarmTask

	// ConsecutiveFailures counts the failed starts since the last good
	// one; LastFailure is when the latest of them failed.
	ConsecutiveFailures int
	LastFailure         time.Time
	// BackoffBase is the wait after one failure; it doubles with each
	// further failure up to BackoffMax.
	BackoffBase time.Duration
	BackoffMax  time.Duration
}

// Actions is what the planner decided. A zero duration in the Snapshot
// turns the matching rule off.
type Actions struct {
	// Start is the number of warm tasks to start.
	Start int
	// Recycle are available tasks past MaxAge, to stop and replace.
	Recycle []session.WarmTask
	// Surplus are available tasks beyond Target (the target was lowered),
	// oldest first, to stop without replacement.
	Surplus []session.WarmTask
	// Expire are claims older than ClaimTTL.
	Expire []session.WarmTask
	// Abandon are tasks stuck starting past StartTimeout, and records in a
	// state the planner does not know, to stop and replace.
	Abandon []session.WarmTask
	// BackoffUntil is when starts may resume after failures; zero when not
	// backing off.
	BackoffUntil time.Time

	// Available and Starting count the tasks kept in the pool.
	Available int
	Starting  int
}

// Plan decides what to do with a relay's warm pool. The deficit is Target
// minus the available tasks not recycled and the starting ones not
// abandoned; it is started unless failures call for a back-off.
//
// While backing off, tasks past MaxAge are kept: an old warm task still
// serves a user, and its replacement could not be started.
func Plan(s Snapshot) Actions {
	var a Actions
	a.BackoffUntil = backoffUntil(s)
	backingOff := !a.BackoffUntil.IsZero()

	tasks := slices.Clone(s.Tasks)
	slices.SortStableFunc(tasks, func(x, y session.WarmTask) int {
		if c := x.StartedAt.Compare(y.StartedAt); c != 0 {
			return c
		}
		return cmp.Compare(x.ID, y.ID)
	})

	var available []session.WarmTask
	for _, w := range tasks {
		switch w.State {
		case session.WarmAvailable:
			if olderThan(s.Now, w.StartedAt, s.MaxAge) && !backingOff {
				a.Recycle = append(a.Recycle, w)
				continue
			}
			available = append(available, w)
		case session.WarmStarting:
			if olderThan(s.Now, w.StartedAt, s.StartTimeout) {
				a.Abandon = append(a.Abandon, w)
				continue
			}
			a.Starting++
		case session.WarmClaimed:
			if olderThan(s.Now, w.ClaimedAt, s.ClaimTTL) {
				a.Expire = append(a.Expire, w)
			}
		default:
			a.Abandon = append(a.Abandon, w)
		}
	}

	target := max(s.Target, 0)
	if excess := len(available) + a.Starting - target; excess > 0 {
		n := min(excess, len(available))
		a.Surplus = available[:n:n]
		available = available[n:]
	}
	a.Available = len(available)

	if !backingOff {
		a.Start = max(target-a.Available-a.Starting, 0)
	}
	return a
}

// olderThan reports whether t lies more than limit before now; a limit of
// zero or less never expires anything.
func olderThan(now, t time.Time, limit time.Duration) bool {
	return limit > 0 && now.Sub(t) > limit
}

// backoffUntil is the end of the back-off after s's failures, or zero when
// starts may go ahead at s.Now.
func backoffUntil(s Snapshot) time.Time {
	wait := Backoff(s.ConsecutiveFailures, s.BackoffBase, s.BackoffMax)
	if wait == 0 {
		return time.Time{}
	}
	until := s.LastFailure.Add(wait)
	if !s.Now.Before(until) {
		return time.Time{}
	}
	return until
}

// Backoff is the wait after the given number of consecutive failures:
// base after one, doubling with each further failure, never more than
// limit (no limit when limit is zero or less). No failures, or a base of
// zero, mean no wait.
func Backoff(failures int, base, limit time.Duration) time.Duration {
	if failures <= 0 || base <= 0 {
		return 0
	}
	const ceiling = time.Duration(1<<63 - 1)
	if limit <= 0 {
		limit = ceiling
	}
	d := base
	for i := 1; i < failures && d < limit; i++ {
		if d > ceiling/2 {
			return limit
		}
		d *= 2
	}
	return min(d, limit)
}
