// Package localstore is the embedded session store of one machine (make
// run): sessions, warm tasks and users' POSIX ids held in memory behind one
// mutex and written to a single JSON file on every change, so that the state
// survives a restart. It implements session.Store with the same conditional
// semantics as the DynamoDB adapter.
package localstore

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/aishell/aishell/shared/session"
)

// FirstUID is the POSIX uid given to the first user; later users get the
// following ones, and a uid is never handed out twice (R9a).
const FirstUID = 100000

// formatVersion is written into the file so that a later layout can tell an
// old file from a corrupt one.
const formatVersion = 1

// Store is a session.Store kept in memory and persisted to one JSON file.
// It is safe for concurrent use. Only one Store (in any process) may have a
// file open at a time; Open takes an exclusive lock on it.
type Store struct {
	path string
	lock *os.File // holds the flock on path+".lock" until Close

	mu     sync.Mutex // guards st, relays and closed, and serializes file writes
	st     state
	relays map[string]session.Relay
	closed bool
}

// state is the whole content of the store, as written to the file.
type state struct {
	Format   int                         `json:"format"`
	Sessions map[string]storedSession    `json:"sessions"`
	Warm     map[string]session.WarmTask `json:"warmTasks"`
	UIDs     map[string]int              `json:"uids"`
	NextUID  int                         `json:"nextUid"`
	// Seq orders session creations, to find a user's newest session when
	// two share a CreatedAt.
	Seq int64 `json:"seq"`
}

type storedSession struct {
	Session session.Session `json:"session"`
	Seq     int64           `json:"seq"`
}

// ErrClosed is returned by every method of a closed Store.
var ErrClosed = errors.New("store closed")

// Open loads the store kept in the file at path, creating the file (and its
// folder) when it does not exist yet. A file that cannot be read or parsed
// is an error naming it; it is never silently replaced by an empty store.
func Open(path string) (*Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open store %s: create folder: %w", path, err)
	}
	lock, err := lockFile(path + ".lock")
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	s := &Store{path: path, lock: lock}

	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		s.st = emptyState()
		// Write the empty state now, so an unwritable folder fails at start
		// rather than at the first session.
		if err := s.persist(); err != nil {
			lock.Close()
			return nil, fmt.Errorf("open store %s: %w", path, err)
		}
	case err != nil:
		lock.Close()
		return nil, fmt.Errorf("open store %s: read: %w", path, err)
	default:
		st, err := decodeState(data)
		if err != nil {
			lock.Close()
			return nil, fmt.Errorf("open store %s: %w", path, err)
		}
		s.st = st
	}
	return s, nil
}

// lockFile takes an exclusive, non-blocking flock on name, so that two relays
// sharing one data folder fail at start instead of overwriting each other.
func lockFile(name string) (*os.File, error) {
	f, err := os.OpenFile(name, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("in use by another process (lock %s held)", name)
		}
		return nil, fmt.Errorf("lock %s: %w", name, err)
	}
	return f, nil
}

func emptyState() state {
	return state{
		Format:   formatVersion,
		Sessions: map[string]storedSession{},
		Warm:     map[string]session.WarmTask{},
		UIDs:     map[string]int{},
		NextUID:  FirstUID,
	}
}

func decodeState(data []byte) (state, error) {
	var st state
	if err := json.Unmarshal(data, &st); err != nil {
		return state{}, fmt.Errorf("parse: %w", err)
	}
	if st.Format != formatVersion {
		return state{}, fmt.Errorf("parse: format %d; want %d", st.Format, formatVersion)
	}
	if st.Sessions == nil {
		st.Sessions = map[string]storedSession{}
	}
	if st.Warm == nil {
		st.Warm = map[string]session.WarmTask{}
	}
	if st.UIDs == nil {
		st.UIDs = map[string]int{}
	}
	// A uid must never be handed out twice, whatever nextUid says.
	st.NextUID = max(st.NextUID, FirstUID)
	for _, uid := range st.UIDs {
		st.NextUID = max(st.NextUID, uid+1)
	}
	for id, ss := range st.Sessions {
		if ss.Session.ID != id {
			return state{}, fmt.Errorf("parse: session stored under %q has id %q", id, ss.Session.ID)
		}
		st.Seq = max(st.Seq, ss.Seq)
	}
	for id, w := range st.Warm {
		if w.ID != id {
			return state{}, fmt.Errorf("parse: warm task stored under %q has id %q", id, w.ID)
		}
	}
	return st, nil
}

// Path returns the file the store is kept in.
func (s *Store) Path() string { return s.path }

// Close releases the store's file lock; later calls fail with ErrClosed.
// Every change was already written, so Close loses nothing.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if err := s.lock.Close(); err != nil {
		return fmt.Errorf("close store %s: release lock: %w", s.path, err)
	}
	return nil
}

// begin locks the store for one call. The caller must call s.mu.Unlock.
func (s *Store) begin(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	return nil
}

// commit writes the state to the file; if that fails it calls undo to put
// the memory back as it was, so memory never runs ahead of the file. It must
// be called with s.mu held.
func (s *Store) commit(undo func()) error {
	if err := s.persist(); err != nil {
		undo()
		return err
	}
	return nil
}

// persist writes the whole state atomically: a temporary file in the same
// folder, synced, then renamed over the old one, then the folder synced.
// It must be called with s.mu held (or before the store is shared).
func (s *Store) persist() error {
	data, err := json.MarshalIndent(s.st, "", " ")
	if err != nil {
		return fmt.Errorf("persist state: encode: %w", err)
	}
	dir := filepath.Dir(s.path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(s.path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("persist state: create temporary file: %w", err)
	}
	tmpName := tmp.Name()
	fail := func(step string, err error) error {
		tmp.Close()
		os.Remove(tmpName)
		return fmt.Errorf("persist state: %s: %w", step, err)
	}
	if _, err := tmp.Write(data); err != nil {
		return fail("write", err)
	}
	if err := tmp.Sync(); err != nil {
		return fail("sync", err)
	}
	if err := tmp.Close(); err != nil {
		return fail("close", err)
	}
	if err := os.Rename(tmpName, s.path); err != nil {
		os.Remove(tmpName)
		return fmt.Errorf("persist state: rename: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("persist state: open folder: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("persist state: sync folder: %w", err)
	}
	return nil
}

// CreateSession stores a new session with Version 1; ErrExists if the id is
// taken.
func (s *Store) CreateSession(ctx context.Context, sess session.Session) (session.Session, error) {
	if sess.ID == "" {
		return session.Session{}, errors.New("create session: empty id")
	}
	if err := s.begin(ctx); err != nil {
		return session.Session{}, fmt.Errorf("create session %s: %w", sess.ID, err)
	}
	defer s.mu.Unlock()

	if _, ok := s.st.Sessions[sess.ID]; ok {
		return session.Session{}, fmt.Errorf("create session %s: %w", sess.ID, session.ErrExists)
	}
	sess.Version = 1
	s.st.Seq++
	s.st.Sessions[sess.ID] = storedSession{Session: sess, Seq: s.st.Seq}
	err := s.commit(func() {
		delete(s.st.Sessions, sess.ID)
		s.st.Seq--
	})
	if err != nil {
		return session.Session{}, fmt.Errorf("create session %s: %w", sess.ID, err)
	}
	return sess, nil
}

// GetSession returns the session with the given id; ErrNotFound if none.
func (s *Store) GetSession(ctx context.Context, id string) (session.Session, error) {
	if err := s.begin(ctx); err != nil {
		return session.Session{}, fmt.Errorf("get session %s: %w", id, err)
	}
	defer s.mu.Unlock()

	ss, ok := s.st.Sessions[id]
	if !ok {
		return session.Session{}, fmt.Errorf("get session %s: %w", id, session.ErrNotFound)
	}
	return ss.Session, nil
}

// UpdateSession writes sess if the stored Version equals sess.Version and
// returns it with the Version increased; ErrConflict if another write came
// first, ErrNotFound if the session is gone.
func (s *Store) UpdateSession(ctx context.Context, sess session.Session) (session.Session, error) {
	if err := s.begin(ctx); err != nil {
		return session.Session{}, fmt.Errorf("update session %s: %w", sess.ID, err)
	}
	defer s.mu.Unlock()

	old, ok := s.st.Sessions[sess.ID]
	if !ok {
		return session.Session{}, fmt.Errorf("update session %s: %w", sess.ID, session.ErrNotFound)
	}
	if old.Session.Version != sess.Version {
		return session.Session{}, fmt.Errorf("update session %s: version %d, stored %d: %w",
			sess.ID, sess.Version, old.Session.Version, session.ErrConflict)
	}
	sess.Version++
	s.st.Sessions[sess.ID] = storedSession{Session: sess, Seq: old.Seq}
	if err := s.commit(func() { s.st.Sessions[sess.ID] = old }); err != nil {
		return session.Session{}, fmt.Errorf("update session %s: %w", sess.ID, err)
	}
	return sess, nil
}

// DeleteSession removes a session if its stored Version is still version;
// ErrConflict if it changed, ErrNotFound if it is gone.
func (s *Store) DeleteSession(ctx context.Context, id string, version int64) error {
	if err := s.begin(ctx); err != nil {
		return fmt.Errorf("delete session %s: %w", id, err)
	}
	defer s.mu.Unlock()

	old, ok := s.st.Sessions[id]
	if !ok {
		return fmt.Errorf("delete session %s: %w", id, session.ErrNotFound)
	}
	if old.Session.Version != version {
		return fmt.Errorf("delete session %s: version %d, stored %d: %w",
			id, version, old.Session.Version, session.ErrConflict)
	}
	delete(s.st.Sessions, id)
	if err := s.commit(func() { s.st.Sessions[id] = old }); err != nil {
		return fmt.Errorf("delete session %s: %w", id, err)
	}
	return nil
}

// ListSessions returns every session, oldest first.
func (s *Store) ListSessions(ctx context.Context) ([]session.Session, error) {
	if err := s.begin(ctx); err != nil {
		return nil, fmt.Errorf("list sessions: %w", err)
	}
	defer s.mu.Unlock()

	stored := make([]storedSession, 0, len(s.st.Sessions))
	for _, ss := range s.st.Sessions {
		stored = append(stored, ss)
	}
	slices.SortFunc(stored, compareCreation)
	out := make([]session.Session, len(stored))
	for i, ss := range stored {
		out[i] = ss.Session
	}
	return out, nil
}

// compareCreation orders sessions by CreatedAt, then by creation order.
func compareCreation(a, b storedSession) int {
	if c := a.Session.CreatedAt.Compare(b.Session.CreatedAt); c != 0 {
		return c
	}
	return cmp.Compare(a.Seq, b.Seq)
}

// SessionOfUser returns the user's newest session (latest CreatedAt, then
// the one created last); ErrNotFound if the user has none.
func (s *Store) SessionOfUser(ctx context.Context, userID string) (session.Session, error) {
	if userID == "" {
		return session.Session{}, fmt.Errorf("find session of user %q: %w", userID, session.ErrNotFound)
	}
	if err := s.begin(ctx); err != nil {
		return session.Session{}, fmt.Errorf("find session of user %s: %w", userID, err)
	}
	defer s.mu.Unlock()

	var newest storedSession
	found := false
	for _, ss := range s.st.Sessions {
		if ss.Session.UserID != userID {
			continue
		}
		if !found || compareCreation(ss, newest) > 0 {
			newest, found = ss, true
		}
	}
	if !found {
		return session.Session{}, fmt.Errorf("find session of user %s: %w",
			userID, session.ErrNotFound)
	}
	return newest.Session, nil
}

// UserUID returns the POSIX uid of a user, allocating the next one (from
// FirstUID upwards) on first use. A uid is never reused.
func (s *Store) UserUID(ctx context.Context, userID string) (int, error) {
	if userID == "" {
		return 0, errors.New("allocate uid: empty user id")
	}
	if err := s.begin(ctx); err != nil {
		return 0, fmt.Errorf("allocate uid of %s: %w", userID, err)
	}
	defer s.mu.Unlock()

	if uid, ok := s.st.UIDs[userID]; ok {
		return uid, nil
	}
	uid := s.st.NextUID
	s.st.UIDs[userID] = uid
	s.st.NextUID++
	err := s.commit(func() {
		delete(s.st.UIDs, userID)
		s.st.NextUID--
	})
	if err != nil {
		return 0, fmt.Errorf("allocate uid of %s: %w", userID, err)
	}
	return uid, nil
}

// PutWarmTask stores a new warm task with Version 1; ErrExists if the id is
// taken.
func (s *Store) PutWarmTask(ctx context.Context, w session.WarmTask) (session.WarmTask, error) {
	if w.ID == "" {
		return session.WarmTask{}, errors.New("put warm task: empty id")
	}
	if err := s.begin(ctx); err != nil {
		return session.WarmTask{}, fmt.Errorf("put warm task %s: %w", w.ID, err)
	}
	defer s.mu.Unlock()

	if _, ok := s.st.Warm[w.ID]; ok {
		return session.WarmTask{}, fmt.Errorf("put warm task %s: %w", w.ID, session.ErrExists)
	}
	w.Version = 1
	s.st.Warm[w.ID] = w
	if err := s.commit(func() { delete(s.st.Warm, w.ID) }); err != nil {
		return session.WarmTask{}, fmt.Errorf("put warm task %s: %w", w.ID, err)
	}
	return w, nil
}

// UpdateWarmTask writes w if the stored Version equals w.Version and returns
// it with the Version increased; ErrConflict if another write came first,
// ErrNotFound if the record is gone.
func (s *Store) UpdateWarmTask(ctx context.Context, w session.WarmTask) (session.WarmTask, error) {
	if err := s.begin(ctx); err != nil {
		return session.WarmTask{}, fmt.Errorf("update warm task %s: %w", w.ID, err)
	}
	defer s.mu.Unlock()

	old, ok := s.st.Warm[w.ID]
	if !ok {
		return session.WarmTask{}, fmt.Errorf("update warm task %s: %w", w.ID, session.ErrNotFound)
	}
	if old.Version != w.Version {
		return session.WarmTask{}, fmt.Errorf("update warm task %s: version %d, stored %d: %w",
			w.ID, w.Version, old.Version, session.ErrConflict)
	}
	w.Version++
	s.st.Warm[w.ID] = w
	if err := s.commit(func() { s.st.Warm[w.ID] = old }); err != nil {
		return session.WarmTask{}, fmt.Errorf("update warm task %s: %w", w.ID, err)
	}
	return w, nil
}

// ClaimWarmTask turns the oldest available warm task of relayID (earliest
// StartedAt) into a claim for sessionID at now; ErrNoWarmTask if the relay
// has none. The store's mutex makes the claim atomic: two claimers never get
// the same task.
func (s *Store) ClaimWarmTask(
	ctx context.Context, relayID, sessionID string, now time.Time,
) (session.WarmTask, error) {
	if err := s.begin(ctx); err != nil {
		return session.WarmTask{}, fmt.Errorf("claim warm task: %w", err)
	}
	defer s.mu.Unlock()

	var oldest session.WarmTask
	found := false
	for _, w := range s.st.Warm {
		if w.RelayID != relayID || w.State != session.WarmAvailable {
			continue
		}
		if !found || compareAge(w, oldest) < 0 {
			oldest, found = w, true
		}
	}
	if !found {
		return session.WarmTask{}, fmt.Errorf("claim warm task of relay %s: %w",
			relayID, session.ErrNoWarmTask)
	}
	old := oldest
	oldest.State = session.WarmClaimed
	oldest.SessionID = sessionID
	oldest.ClaimedAt = now
	oldest.Version++
	s.st.Warm[oldest.ID] = oldest
	if err := s.commit(func() { s.st.Warm[old.ID] = old }); err != nil {
		return session.WarmTask{}, fmt.Errorf("claim warm task %s: %w", old.ID, err)
	}
	return oldest, nil
}

// compareAge orders warm tasks by StartedAt, then by id.
func compareAge(a, b session.WarmTask) int {
	if c := a.StartedAt.Compare(b.StartedAt); c != 0 {
		return c
	}
	return cmp.Compare(a.ID, b.ID)
}

// DeleteWarmTask removes a warm task record; no error if it is gone.
func (s *Store) DeleteWarmTask(ctx context.Context, id string) error {
	if err := s.begin(ctx); err != nil {
		return fmt.Errorf("delete warm task %s: %w", id, err)
	}
	defer s.mu.Unlock()

	old, ok := s.st.Warm[id]
	if !ok {
		return nil
	}
	delete(s.st.Warm, id)
	if err := s.commit(func() { s.st.Warm[id] = old }); err != nil {
		return fmt.Errorf("delete warm task %s: %w", id, err)
	}
	return nil
}

// ListWarmTasks returns the warm tasks of relayID, oldest first.
func (s *Store) ListWarmTasks(ctx context.Context, relayID string) ([]session.WarmTask, error) {
	if err := s.begin(ctx); err != nil {
		return nil, fmt.Errorf("list warm tasks of relay %s: %w", relayID, err)
	}
	defer s.mu.Unlock()

	out := []session.WarmTask{}
	for _, w := range s.st.Warm {
		if w.RelayID == relayID {
			out = append(out, w)
		}
	}
	slices.SortFunc(out, compareAge)
	return out, nil
}

var _ session.Store = (*Store)(nil)

// PutRelay records a relay. Relay records live in memory only: on one
// machine the one relay is this process, and a heartbeat is no reason to
// rewrite the state file.
func (s *Store) PutRelay(ctx context.Context, r session.Relay) error {
	if r.ID == "" {
		return errors.New("put relay: empty id")
	}
	if err := s.begin(ctx); err != nil {
		return fmt.Errorf("put relay %s: %w", r.ID, err)
	}
	defer s.mu.Unlock()
	if s.relays == nil {
		s.relays = map[string]session.Relay{}
	}
	s.relays[r.ID] = r
	return nil
}

// ListRelays returns the relay records, by id.
func (s *Store) ListRelays(ctx context.Context) ([]session.Relay, error) {
	if err := s.begin(ctx); err != nil {
		return nil, fmt.Errorf("list relays: %w", err)
	}
	defer s.mu.Unlock()
	out := make([]session.Relay, 0, len(s.relays))
	for _, r := range s.relays {
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b session.Relay) int { return cmp.Compare(a.ID, b.ID) })
	return out, nil
}

// DeleteRelay forgets a relay record.
func (s *Store) DeleteRelay(ctx context.Context, id string) error {
	if err := s.begin(ctx); err != nil {
		return fmt.Errorf("delete relay %s: %w", id, err)
	}
	defer s.mu.Unlock()
	delete(s.relays, id)
	return nil
}
