// Package storetest is the contract every session.Store keeps, written once
// as a test suite: each implementation's tests call Run with a constructor
// of fresh, empty stores, and keep to themselves only what is particular to
// that implementation (its files, its tables, its errors).
package storetest

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/aishell/aishell/shared/session"
)

// t0 is the time the fixtures are set around; it is in UTC so that records
// read back from any store equal the fixtures.
var t0 = time.Date(2026, 2, 8, 12, 0, 0, 0, time.UTC)

// Option states where a store differs from the others within the room the
// contract leaves, or where it falls short of the contract. Each option
// names one such difference.
type Option func(*contract)

// TieBreak is the rule by which a store orders sessions that have the same
// CreatedAt: which of them ListSessions puts later and SessionOfUser
// returns as the newest.
type TieBreak int

// Rules for sessions created at the same instant.
const (
	// NewerByCreation: the session created later is the newer (a store that
	// keeps the order of creations, such as the embedded one).
	NewerByCreation TieBreak = iota + 1
	// NewerByID: the session with the higher id is the newer (a store that
	// keeps no order of creations, such as DynamoDB).
	NewerByID
)

// SameInstantOrder states the store's rule for sessions created at the same
// instant. Without it the suite checks only that ListSessions and
// SessionOfUser agree on such sessions.
func SameInstantOrder(rule TieBreak) Option {
	return func(c *contract) { c.tieBreak = rule }
}

// TimesInUTC states that the store hands back every time in UTC, whatever
// zone it was written in. Without it the suite checks only that a time
// comes back as the same instant.
func TimesInUTC() Option {
	return func(c *contract) { c.utc = true }
}

// FirstUID states the uid the store gives its first user. Without it the
// suite takes the first uid it is given as the start of the count.
func FirstUID(uid int) Option {
	return func(c *contract) { c.firstUID = uid }
}

// KnownGap skips the subtest at path (below Run's test, with its names as
// the suite writes them, for example "refuses an empty id/put relay")
// because the store falls short of the contract there; reason says how.
// A gap that names no subtest of a part that ran fails the run, so that a
// renamed subtest cannot leave a gap behind unnoticed.
func KnownGap(path, reason string) Option {
	return func(c *contract) { c.gaps[testName(path)] = gap{path, reason} }
}

// gap is a subtest the store is known to fail, as KnownGap was given it.
type gap struct{ path, reason string }

// contract is one run of the suite against one implementation.
type contract struct {
	newStore func(t *testing.T) session.Store
	tieBreak TieBreak
	utc      bool
	// firstUID is 0 when FirstUID was not given.
	firstUID int

	// root is the name of Run's test. gaps maps subtest paths below it (as
	// t.Name writes them) to known gaps; declared holds the paths of the
	// subtests the suite declared, and ran those whose body ran (including
	// "", Run's own). Subtests run one at a time, so none needs a lock.
	root     string
	gaps     map[string]gap
	declared map[string]bool
	ran      map[string]bool
}

// Run runs the contract of session.Store as subtests of t. newStore
// returns a new, empty store for one subtest; it closes or removes the
// store through t.Cleanup if it needs to.
func Run(t *testing.T, newStore func(t *testing.T) session.Store, opts ...Option) {
	c := &contract{
		newStore: newStore,
		root:     t.Name(),
		gaps:     map[string]gap{},
		declared: map[string]bool{},
		ran:      map[string]bool{"": true},
	}
	for _, o := range opts {
		o(c)
	}

	parts := []struct {
		name string
		test func(t *testing.T)
	}{
		{"session writes", c.sessionWrites},
		{"list and newest session", c.listAndNewestSession},
		{"sessions created at the same instant", c.sameInstant},
		{"user uid", c.userUID},
		{"concurrent user uid", c.concurrentUserUID},
		{"warm task writes", c.warmTaskWrites},
		{"claim takes oldest available of relay", c.claimOldest},
		{"concurrent claims", c.concurrentClaims},
		{"records round trip", c.recordsRoundTrip},
		{"relays", c.relays},
		{"refuses an empty id", c.emptyIDs},
		{"canceled context", c.canceledContext},
	}
	for _, p := range parts {
		c.run(t, p.name, p.test)
	}

	// A gap whose parent ran but which the parent never declared names no
	// subtest. (Below a parent that -run left out nothing is declared.)
	for path, g := range c.gaps {
		parent := ""
		if i := strings.LastIndex(path, "/"); i >= 0 {
			parent = path[:i]
		}
		if c.ran[parent] && !c.declared[path] {
			t.Errorf("KnownGap(%q): got no subtest of that path; want one", g.path)
		}
	}
}

// run runs f as the subtest name of t, or skips it if it is a known gap.
func (c *contract) run(t *testing.T, name string, f func(t *testing.T)) {
	t.Helper()
	path := testName(name)
	if parent := c.path(t); parent != "" {
		path = parent + "/" + path
	}
	c.declared[path] = true
	t.Run(name, func(t *testing.T) {
		c.ran[path] = true
		if g, ok := c.gaps[path]; ok {
			t.Skip("known gap: " + g.reason)
		}
		f(t)
	})
}

// path returns the path of t below Run's test, "" for Run's test itself.
func (c *contract) path(t *testing.T) string {
	return strings.TrimPrefix(strings.TrimPrefix(t.Name(), c.root), "/")
}

// testName writes a subtest path as t.Name does.
func testName(path string) string { return strings.ReplaceAll(path, " ", "_") }

func mustCreate(
	t *testing.T, s session.Store, id, user string, created time.Time,
) session.Session {
	t.Helper()
	sess, err := s.CreateSession(t.Context(), session.Session{
		ID: id, UserID: user, State: session.StateStarting, CreatedAt: created,
	})
	if err != nil {
		t.Fatalf("CreateSession(%s): %v", id, err)
	}
	return sess
}

func mustPut(t *testing.T, s session.Store, w session.WarmTask) session.WarmTask {
	t.Helper()
	got, err := s.PutWarmTask(t.Context(), w)
	if err != nil {
		t.Fatalf("PutWarmTask(%s): %v", w.ID, err)
	}
	return got
}

// idsOf returns the ids of records, in their order.
func idsOf[R any](records []R, id func(R) string) []string {
	ids := make([]string, len(records))
	for i, r := range records {
		ids[i] = id(r)
	}
	return ids
}

func sessionID(s session.Session) string { return s.ID }
func warmID(w session.WarmTask) string   { return w.ID }
func relayID(r session.Relay) string     { return r.ID }

// allSet fails the test when a field of v (a struct, looked into
// recursively) has its zero value: a field added to a record later then
// cannot go unstored without the round trip noticing.
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
