// Package wire defines the frames of the relay's two sockets: the client
// socket of protocol.md, and the internal task socket between the relay and
// the bridge. Every frame is a text frame holding one JSON object with a
// "type".
package wire

// Client socket, from the client.
const (
	TypeInput  = "input"
	TypeResize = "resize"
	TypePing   = "ping"
)

// Client socket, from the relay.
const (
	TypeStatus       = "status"
	TypeSessionReady = "session_ready"
	TypeOutput       = "output"
	TypeError        = "error"
	TypePong         = "pong"
)

// Task socket. Input, resize and output share the client names.
const (
	// TypeInitUser (relay to bridge) hands a warm task its user and session.
	TypeInitUser = "init_user"
	// TypeReady (bridge to relay) says the agent runs and takes input.
	TypeReady = "ready"
	// TypeProcessing (bridge to relay) says whether the agent is busy.
	TypeProcessing = "processing"
	// TypeShutdown goes both ways: from the relay it asks the bridge to stop
	// the agent and exit; from the bridge it says the agent ended or could
	// not start, with the reason, just before the bridge exits.
	TypeShutdown = "shutdown"
)

// Session states of the status frame.
const (
	StateStarting   = "starting"
	StateRestarting = "restarting"
	StateReady      = "ready"
	StateStopped    = "stopped"
)

// Error codes of protocol.md.
const (
	CodeUnauthorized      = "UNAUTHORIZED"
	CodeTicketExpired     = "TICKET_EXPIRED"
	CodeSessionNotFound   = "SESSION_NOT_FOUND"
	CodeTaskStartFailed   = "TASK_START_FAILED"
	CodeTaskRestartFailed = "TASK_RESTART_FAILED"
	CodeQueueFull         = "QUEUE_FULL"
	CodeMessageTooLarge   = "MESSAGE_TOO_LARGE"
	CodeBadMessage        = "BAD_MESSAGE"
	CodeSessionEnded      = "SESSION_ENDED"
	CodeRelayShuttingDown = "RELAY_SHUTTING_DOWN"
)

// Inbound is any frame read from either socket: the union of the fields of
// every inbound type. Unknown fields are ignored.
type Inbound struct {
	Type string `json:"type"`
	Data string `json:"data,omitempty"`
	ID   string `json:"id,omitempty"`
	Cols int    `json:"cols,omitempty"`
	Rows int    `json:"rows,omitempty"`

	// Task socket only.
	Busy     bool   `json:"busy,omitempty"`
	Reason   string `json:"reason,omitempty"`
	ExitCode int    `json:"exitCode,omitempty"`
}

// Status is the status frame.
type Status struct {
	Type  string `json:"type"`
	State string `json:"state"`
}

// SessionReady is the session_ready frame.
type SessionReady struct {
	Type      string `json:"type"`
	SessionID string `json:"sessionId"`
	Warm      bool   `json:"warm"`
	Resumed   bool   `json:"resumed"`
	StartupMs int64  `json:"startup_ms"`
}

// Output is the output frame (both sockets).
type Output struct {
	Type string `json:"type"`
	Data string `json:"data"`
}

// Error is the error frame.
type Error struct {
	Type  string    `json:"type"`
	Error ErrorBody `json:"error"`
	// ID names the input frame that was refused, when it had one (an
	// addition to protocol.md).
	ID string `json:"id,omitempty"`
}

// ErrorBody is the code and concrete cause of an error.
type ErrorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Simple is a frame with a type alone (ping, pong).
type Simple struct {
	Type string `json:"type"`
}

// Input is the input frame (client to relay, relay to bridge).
type Input struct {
	Type string `json:"type"`
	Data string `json:"data"`
	ID   string `json:"id,omitempty"`
}

// Resize is the resize frame.
type Resize struct {
	Type string `json:"type"`
	Cols int    `json:"cols"`
	Rows int    `json:"rows"`
}

// InitUser is the init_user frame (relay to a warm bridge).
type InitUser struct {
	Type      string `json:"type"`
	SessionID string `json:"sessionId"`
	UserID    string `json:"userId"`
	// UID is the POSIX user id the agent runs under (R9a).
	UID int `json:"uid"`
}

// Processing is the processing frame (bridge to relay).
type Processing struct {
	Type string `json:"type"`
	Busy bool   `json:"busy"`
}

// Shutdown is the shutdown frame.
type Shutdown struct {
	Type     string `json:"type"`
	Reason   string `json:"reason"`
	ExitCode int    `json:"exitCode,omitempty"`
}

// Ready is the ready frame (bridge to relay).
type Ready struct {
	Type string `json:"type"`
	// PID is the agent's process id, for logs.
	PID int `json:"pid,omitempty"`
}
