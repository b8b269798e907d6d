// Package events names the log events of R13 and R13a. The daily report, the
// query templates and the alarms read these names, so emitters and readers
// take them from here and change together or not at all.
package events

// Event names (the "event" field).
const (
	SessionCreated     = "session_created"
	TaskLifecycle      = "task_lifecycle"
	TaskStartFailed    = "task_start_failed"
	TaskConnectTimeout = "task_connect_timeout"
	TaskRestartFailed  = "task_restart_failed"
	TaskRejected       = "task_rejected"
	TicketRejected     = "ticket_rejected"
	UserMessage        = "user_message"
	RelayStarted       = "relay_started"
	WarmPool           = "warm_pool"
)

// Phases of the task_lifecycle event (the "phase" field).
const (
	PhaseSessionCreate    = "session_create"
	PhaseTaskStart        = "task_start"
	PhaseTaskPending      = "task_pending"
	PhaseTaskConnect      = "task_connect"
	PhaseTaskReady        = "task_ready"
	PhaseTaskRestart      = "task_restart"
	PhaseWSDisconnect     = "ws_disconnect"
	PhaseMessageRoundtrip = "message_roundtrip"
)

// Reasons of task_rejected and ticket_rejected.
const (
	ReasonUnknownSession = "unknown_session"
	ReasonBadCredential  = "bad_credential"
	ReasonExpired        = "expired"
	ReasonInvalid        = "invalid"
)

// Extra field names used by these events.
const (
	FieldPhase           = "phase"
	FieldBreakdown       = "breakdown"
	FieldRestart         = "restart"
	FieldSuccess         = "success"
	FieldProcessingState = "processingState"
	FieldReason          = "reason"
	FieldErrorCode       = "errorCode"
	FieldWaitedMs        = "waited_ms"
	FieldStep            = "step"
	FieldResumed         = "resumed"
	FieldWarm            = "warm"
	FieldRelayID         = "relayId"
	FieldAvailable       = "available"
	FieldStarting        = "starting"
	FieldTarget          = "target"
)

// Keys of the task_ready breakdown object.
const (
	BreakdownAccessPoint      = "access_point_ms"
	BreakdownRegisterTaskDef  = "register_taskdef_ms"
	BreakdownRunTask          = "run_task_ms"
	BreakdownPendingToRunning = "pending_to_running_ms"
	BreakdownWaitConnection   = "wait_connection_ms"
	BreakdownWarmClaim        = "warm_claim_ms"
)

// Processing states of ws_disconnect.
const (
	Processing = "processing"
	Idle       = "idle"
)
