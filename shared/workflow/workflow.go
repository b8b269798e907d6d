// Package workflow runs the restart of a session as a sequence of named
// steps with one overall time limit: the steps of the restart state machine
// (stop the old task, start a task, wait for RUNNING, wait for the task's
// connection). Local runs them in process; in AWS the same steps are the
// states of a Step Functions state machine.
package workflow

import (
	"time"
)

// RestartLimit bounds a whole restart (R5).
const RestartLimit = 30 * time.Second

// RestartInput names the session to restart and the attempt, which names
// the execution.
type RestartInput struct {
	SessionID string `json:"sessionId"`
	Attempt   int    `json:"attempt"`
	TraceID   string `json:"traceId,omitempty"`
}

// Outcome is how a restart ended. On failure Step names the step that
// failed and Reason the concrete cause.
type Outcome struct {
	Success  bool          `json:"success"`
	Step     string        `json:"step,omitempty"`
	Reason   string        `json:"reason,omitempty"`
	TaskID   string        `json:"taskId,omitempty"`
	Warm     bool          `json:"warm"`
	Duration time.Duration `json:"duration"`
}
