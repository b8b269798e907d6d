// Package session holds the rules of an AI Shell session: create, resume,
// get and end it; start its task warm or cold; the steps of a restart. It is
// written against small ports (Store, TaskRunner, WarmDispatcher, Clock) and
// imports no AWS SDK; adapters for one machine and for AWS implement them.
package session

import (
	"context"
	"errors"
	"time"
)

// State is where a session stands; the values are those of protocol.md.
type State string

// Session states.
const (
	StateStarting   State = "starting"
	StateReady      State = "ready"
	StateRestarting State = "restarting"
	StateStopped    State = "stopped"
)

// Session is the stored record of one user's session.
type Session struct {
	ID     string `json:"id"`
	UserID string `json:"userId"`
	State  State  `json:"state"`
	// RelayID names the relay that owns the session.
	RelayID string `json:"relayId"`

	// TaskID is our id of the current task; TaskHandle is the runner's (an
	// ECS task ARN in AWS). Both are empty when the session has no task.
	TaskID     string `json:"taskId,omitempty"`
	TaskHandle string `json:"taskHandle,omitempty"`
	Warm       bool   `json:"warm"`
	// Start records how the current task was started, for task_ready.
	Start StartRecord `json:"start"`

	// Restarts counts restarts, to name each restart execution.
	Restarts int `json:"restarts"`
	// TraceID is the trace of the request that last started a task.
	TraceID string `json:"traceId,omitempty"`

	// ConnectToken is the task token of a restart's wait_connection step
	// (Step Functions), and ConnectedTaskID the task the relay saw connect
	// and become ready during a restart. Whichever of the relay and the
	// step writes second completes the step, so neither order loses it.
	ConnectToken    string `json:"connectToken,omitempty"`
	ConnectedTaskID string `json:"connectedTaskId,omitempty"`

	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`
	// Version increases on every write; writes are conditional on it.
	Version int64 `json:"version"`
}

// StartRecord is how a session's current task was started: the figures of
// the task_ready breakdown that the starter knows (R13).
type StartRecord struct {
	At                time.Time `json:"at"`
	Restart           bool      `json:"restart"`
	AccessPointMs     int64     `json:"accessPointMs"`
	RegisterTaskDefMs int64     `json:"registerTaskDefMs"`
	RunTaskMs         int64     `json:"runTaskMs"`
	WarmClaimMs       int64     `json:"warmClaimMs"`
}

// WarmState is where a warm task stands.
type WarmState string

// Warm task states.
const (
	// WarmStarting: started, its bridge not yet connected.
	WarmStarting WarmState = "starting"
	// WarmAvailable: connected and waiting for init_user.
	WarmAvailable WarmState = "available"
	// WarmClaimed: claimed by a session; the record is removed once the
	// session's task is ready, or expired by the refill if it never is.
	WarmClaimed WarmState = "claimed"
)

// WarmTask is the stored record of one warm task.
type WarmTask struct {
	ID        string    `json:"id"`
	Handle    string    `json:"handle"`
	RelayID   string    `json:"relayId"`
	State     WarmState `json:"state"`
	StartedAt time.Time `json:"startedAt"`
	ReadyAt   time.Time `json:"readyAt,omitzero"`
	ClaimedAt time.Time `json:"claimedAt,omitzero"`
	SessionID string    `json:"sessionId,omitempty"`
	Version   int64     `json:"version"`
}

// Store errors.
var (
	ErrNotFound   = errors.New("not found")
	ErrExists     = errors.New("already exists")
	ErrConflict   = errors.New("changed by someone else")
	ErrNoWarmTask = errors.New("no warm task available")
)

// Relay is a relay's record in the store: how to reach it, and when it was
// last alive. Sessions are assigned to healthy relays.
type Relay struct {
	ID string `json:"id"`
	// ClientURL is the client socket URL (wss://.../ws) handed to clients.
	ClientURL string `json:"clientUrl"`
	// TaskURL is the base URL tasks connect to.
	TaskURL string `json:"taskUrl"`
	// ControlURL is the base URL of the relay's internal control API.
	ControlURL  string    `json:"controlUrl"`
	HeartbeatAt time.Time `json:"heartbeatAt"`
}

// Store keeps sessions, warm tasks and users' POSIX ids. Writes of a record
// are conditional on its Version, so that two writers never both win; in
// DynamoDB that is a conditional write, on one machine a mutex.
type Store interface {
	// CreateSession stores a new session with Version 1; ErrExists if the
	// id is taken.
	CreateSession(ctx context.Context, s Session) (Session, error)
	// GetSession returns ErrNotFound for an unknown id.
	GetSession(ctx context.Context, id string) (Session, error)
	// UpdateSession writes s if the stored Version equals s.Version, and
	// returns it with the Version increased; ErrConflict otherwise.
	UpdateSession(ctx context.Context, s Session) (Session, error)
	// DeleteSession removes a session if its Version is still version.
	DeleteSession(ctx context.Context, id string, version int64) error
	// ListSessions returns every session (for the operator and for reaping).
	ListSessions(ctx context.Context) ([]Session, error)
	// SessionOfUser returns the user's newest session, ErrNotFound if none.
	SessionOfUser(ctx context.Context, userID string) (Session, error)

	// UserUID returns the POSIX uid of a user, allocating the next free one
	// on first use; the same user always gets the same uid (R9a).
	UserUID(ctx context.Context, userID string) (int, error)

	// PutWarmTask stores a new warm task with Version 1.
	PutWarmTask(ctx context.Context, w WarmTask) (WarmTask, error)
	// UpdateWarmTask writes w if the stored Version equals w.Version.
	UpdateWarmTask(ctx context.Context, w WarmTask) (WarmTask, error)
	// ClaimWarmTask atomically turns the oldest available warm task of a
	// relay into a claim for sessionID; ErrNoWarmTask if there is none.
	// Two claimers never get the same task.
	ClaimWarmTask(ctx context.Context, relayID, sessionID string, now time.Time) (WarmTask, error)
	// DeleteWarmTask removes a warm task record; no error if it is gone.
	DeleteWarmTask(ctx context.Context, id string) error
	// ListWarmTasks returns the warm tasks of a relay.
	ListWarmTasks(ctx context.Context, relayID string) ([]WarmTask, error)

	// PutRelay creates or replaces a relay's record (its heartbeat).
	PutRelay(ctx context.Context, r Relay) error
	// ListRelays returns every relay record.
	ListRelays(ctx context.Context) ([]Relay, error)
	// DeleteRelay removes a relay's record; no error if it is gone.
	DeleteRelay(ctx context.Context, id string) error
}

// TaskState is a task's state as the runner reports it.
type TaskState string

// Task states; the ECS adapter maps ECS's lastStatus and desiredStatus onto
// these.
const (
	TaskPending  TaskState = "PENDING"
	TaskRunning  TaskState = "RUNNING"
	TaskStopping TaskState = "STOPPING"
	TaskStopped  TaskState = "STOPPED"
)

// TaskStatus is what Describe says of a task.
type TaskStatus struct {
	State TaskState
	// StopReason is the concrete cause once stopping or stopped (the ECS
	// stop reason, or the bridge's exit status and last words).
	StopReason string
	CreatedAt  time.Time
	StartedAt  time.Time
	StoppedAt  time.Time
}

// TaskSpec is what a task is started with. Per-session settings travel as
// run-time overrides; nothing is registered per user (R9).
type TaskSpec struct {
	TaskID string
	// SessionID and UserID are empty for a warm task.
	SessionID string
	UserID    string
	// UID is the POSIX uid the user's agent runs under (0: not set).
	UID  int
	Warm bool
	// RelayURL is the relay's base URL as the task reaches it.
	RelayURL string
	// Credential authenticates the task to the relay.
	Credential string
}

// TaskRunner starts, stops and describes tasks: ECS RunTask with the fixed
// task definition in AWS, a local bridge process on one machine.
type TaskRunner interface {
	// Run starts a task and returns the runner's handle for it. It returns
	// once the start was accepted, without waiting for RUNNING. Errors
	// carry the runner's error code (see ErrorCode).
	Run(ctx context.Context, spec TaskSpec) (handle string, err error)
	// Stop asks a task to stop; stopping a stopped task is no error.
	Stop(ctx context.Context, handle, reason string) error
	// Describe reports a task's state; an unknown handle is STOPPED with a
	// reason saying so.
	Describe(ctx context.Context, handle string) (TaskStatus, error)
}

// StopWaiter is what a runner that hears of a task's end at once (a local
// process) offers beside TaskRunner: waiters use it to fail a start as
// soon as its task dies, instead of at their time-out. ECS has no such
// push; there the time-outs stand.
type StopWaiter interface {
	// Wait blocks until the task is STOPPED and returns its status, or
	// returns ctx's error.
	Wait(ctx context.Context, handle string) (TaskStatus, error)
}

// InitUser is what a claimed warm task is told.
type InitUser struct {
	TaskID    string
	SessionID string
	UserID    string
	UID       int
	// TraceID is the trace of the session's start, for the relay's logs.
	TraceID string
}

// WarmDispatcher hands a claimed warm task its user: the relay that holds
// the warm task's socket sends it init_user.
type WarmDispatcher interface {
	InitUser(ctx context.Context, u InitUser) error
}

// Clock is the time source; tests use a fake or testing/synctest.
type Clock interface {
	Now() time.Time
}

// SystemClock is the wall clock.
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }

// coder is satisfied by AWS API errors (smithy.APIError) and by the
// adapters' own coded errors.
type coder interface{ ErrorCode() string }

// ErrorCode returns the error code carried by err (the AWS error code, such
// as AccessDeniedException), or "" if none.
func ErrorCode(err error) string {
	var c coder
	if errors.As(err, &c) {
		return c.ErrorCode()
	}
	return ""
}

// CodedError is an error with a code, for adapters that are not AWS.
type CodedError struct {
	Code string
	Err  error
}

func (e *CodedError) Error() string     { return e.Code + ": " + e.Err.Error() }
func (e *CodedError) Unwrap() error     { return e.Err }
func (e *CodedError) ErrorCode() string { return e.Code }
