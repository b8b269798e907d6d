package sfnflow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/aws/aws-lambda-go/lambda/messages"
	"github.com/aws/aws-lambda-go/lambdacontext"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sfn"

	"github.com/aishell/aishell/shared/events"
	"github.com/aishell/aishell/shared/logging"
	"github.com/aishell/aishell/shared/session"
	"github.com/aishell/aishell/shared/tracing"
	"github.com/aishell/aishell/shared/warmpool"
	"github.com/aishell/aishell/shared/workflow"
)

// StepInput is the payload of one Lambda step of either machine. Step says
// which; the other fields are those the step reads.
type StepInput struct {
	Step string `json:"step"`

	// Restart steps: the session, the restart's attempt and its trace.
	SessionID string `json:"sessionId,omitempty"`
	Attempt   int    `json:"attempt,omitempty"`
	TraceID   string `json:"traceId,omitempty"`
	// TaskID and Handle name the task start_task started (wait_running,
	// register_connection_wait); Token is WaitConnection's task token.
	TaskID string `json:"taskId,omitempty"`
	Handle string `json:"handle,omitempty"`
	Token  string `json:"token,omitempty"`

	// start_warm_task: the relay whose pool gets the task, and its base
	// URL as tasks reach it.
	RelayID  string `json:"relayId,omitempty"`
	RelayURL string `json:"relayUrl,omitempty"`
	// retire_warm_task: what to retire and why.
	Retire *Retirement `json:"retire,omitempty"`
}

// Kinds of retirement, after the planner's lists.
const (
	RetireRecycle = "recycle"
	RetireSurplus = "surplus"
	RetireAbandon = "abandon"
	RetireExpire  = "expire"
)

// Retirement is one warm task the plan takes out of a pool: the record as
// the plan read it (its Version makes the retirement conditional), the kind
// and the reason given to the task platform.
type Retirement struct {
	Kind     string           `json:"kind"`
	Reason   string           `json:"reason"`
	WarmTask session.WarmTask `json:"warmTask"`
}

// TaskOutput is start_task's answer, and the restart machine's output.
type TaskOutput struct {
	TaskID string `json:"taskId"`
	Handle string `json:"handle"`
	Warm   bool   `json:"warm"`
}

// StepDone is the answer of the steps that only report what they did.
type StepDone struct {
	Step string `json:"step"`
	// TaskID and Handle name the task acted on, when there was one.
	TaskID string `json:"taskId,omitempty"`
	Handle string `json:"handle,omitempty"`
	// Note says what happened when the step had nothing to do.
	Note string `json:"note,omitempty"`
}

// connectedOutput is what SendTaskSuccess hands the WaitConnection state.
type connectedOutput struct {
	TaskID string `json:"taskId"`
}

// StepError is a failed step: its name, the AWS (or runner) error code
// when there is one, and the cause.
type StepError struct {
	Step string
	Code string
	Err  error
}

func (e *StepError) Error() string { return e.Step + ": " + e.Message() }
func (e *StepError) Unwrap() error { return e.Err }

// ErrorCode returns the code of the underlying error, if any.
func (e *StepError) ErrorCode() string { return e.Code }

// Message is the cause, led by the error code when the cause does not
// already say it.
func (e *StepError) Message() string {
	msg := e.Err.Error()
	if e.Code != "" && !strings.Contains(msg, e.Code) {
		msg = e.Code + ": " + msg
	}
	return msg
}

// LambdaError is the error as the Lambda runtime reports it: errorType is
// the step, errorMessage the cause.
func (e *StepError) LambdaError() messages.InvokeResponse_Error {
	return messages.InvokeResponse_Error{Type: e.Step, Message: e.Message()}
}

func stepError(step string, err error) *StepError {
	var se *StepError
	if errors.As(err, &se) && se.Step == step {
		return se
	}
	return &StepError{Step: step, Code: session.ErrorCode(err), Err: err}
}

// TaskTokens completes Step Functions callback tasks (SendTaskSuccess).
type TaskTokens interface {
	SendTaskSuccess(ctx context.Context, in *sfn.SendTaskSuccessInput,
		optFns ...func(*sfn.Options)) (*sfn.SendTaskSuccessOutput, error)
}

// TaskLister lists the task platform's running tasks (handles) started by
// startedBy, or all of the product's when startedBy is empty; the ECS
// runner's ListTasks.
type TaskLister interface {
	ListTasks(ctx context.Context, startedBy string) ([]string, error)
}

// StepsConfig is what the steps Lambdas are told by their environment.
type StepsConfig struct {
	// Session configures the session rules. Its RelayMaxAge also tells the
	// refill which relays are alive: a relay whose heartbeat is older is
	// planned with a target of zero.
	Session session.Config
	// Pool configures each relay's pool; RelayID and RelayURL are taken
	// from the relays' records. Its zero durations take warmpool's
	// defaults.
	Pool warmpool.Config
	// ReapGrace: a task younger than this is never reaped, so a start
	// between RunTask and the record of its handle is left alone (2 min).
	ReapGrace time.Duration
}

func (c *StepsConfig) defaults() {
	c.Pool = warmpool.NewRefiller(c.Pool, warmpool.Deps{}).Config()
	if c.ReapGrace == 0 {
		c.ReapGrace = 2 * time.Minute
	}
}

// StepsDeps are the ports the steps work through: the session rules'
// (Store, Runner, Warm, Notifier, Tickets, TaskKeys, Clock, Log), the task
// tokens of the restart machine, and the platform's task list for reaping.
type StepsDeps struct {
	session.Deps
	Tokens TaskTokens
	Tasks  TaskLister
}

// Steps carries out the Lambda steps of both state machines.
type Steps struct {
	cfg  StepsConfig
	deps StepsDeps
	svc  *session.Service
}

// NewSteps returns the steps with cfg's defaults filled in.
func NewSteps(cfg StepsConfig, deps StepsDeps) *Steps {
	cfg.defaults()
	if deps.Clock == nil {
		deps.Clock = session.SystemClock{}
	}
	if deps.Log == nil {
		deps.Log = logging.Discard()
	}
	deps.Log = logging.Module(deps.Log, "workflow")
	svc := session.NewService(cfg.Session, deps.Deps)
	cfg.Session = svc.Config()
	return &Steps{cfg: cfg, deps: deps, svc: svc}
}

// Config returns the configuration with defaults filled in.
func (s *Steps) Config() StepsConfig { return s.cfg }

// Handle is the Lambda entry point. A failed step answers a Lambda error
// whose errorType is the step and whose errorMessage is the cause, with the
// AWS error code when there is one.
func (s *Steps) Handle(ctx context.Context, in StepInput) (any, error) {
	out, err := s.Run(ctx, in)
	var se *StepError
	if errors.As(err, &se) {
		return nil, se.LambdaError()
	}
	return out, err
}

// Run carries out one step and logs its end: Handle without the Lambda
// error encoding. Its errors are *StepError.
func (s *Steps) Run(ctx context.Context, in StepInput) (any, error) {
	start := time.Now()
	log := s.logger(ctx, in)

	var out any
	var err error
	switch in.Step {
	case StepStopOldTask:
		out, err = s.stopOldTask(ctx, log, in)
	case StepStartTask:
		out, err = s.startTask(ctx, in)
	case StepWaitRunning:
		out, err = s.waitRunning(ctx, in)
	case StepRegisterConnectionWait:
		out, err = s.registerConnectionWait(ctx, in)
	case StepPlan:
		out, err = s.plan(ctx, log)
	case StepStartWarmTask:
		out, err = s.startWarmTask(ctx, log, in)
	case StepRetireWarmTask:
		out, err = s.retireWarmTask(ctx, log, in)
	case StepReapOrphans:
		out, err = s.reapOrphans(ctx, log)
	default:
		err = fmt.Errorf("unknown step %q", in.Step)
	}

	step := in.Step
	if step == "" {
		step = "unknown_step"
	}
	if err != nil {
		se := stepError(step, err)
		logging.Event(ctx, log, slog.LevelError, "workflow_step_failed", "workflow step failed",
			slog.String(events.FieldStep, step), slog.String(events.FieldReason, se.Message()),
			slog.String(events.FieldErrorCode, se.Code), logging.Duration(time.Since(start)))
		return nil, se
	}
	logging.Event(ctx, log, slog.LevelInfo, "workflow_step", "workflow step done",
		slog.String(events.FieldStep, step), logging.Duration(time.Since(start)))
	return out, nil
}

// logger carries the invocation's ids: the Lambda request id and the trace
// (the invocation's own, else the restart's).
func (s *Steps) logger(ctx context.Context, in StepInput) *slog.Logger {
	l := s.deps.Log
	trace := tracing.TraceID(ctx)
	if trace == "" {
		trace = in.TraceID
	}
	if trace != "" {
		l = l.With(logging.KeyTraceID, trace)
	}
	if lc, ok := lambdacontext.FromContext(ctx); ok && lc.AwsRequestID != "" {
		l = l.With(logging.KeyRequestID, lc.AwsRequestID)
	}
	if in.SessionID != "" {
		l = l.With(logging.KeySessionID, in.SessionID, "attempt", in.Attempt)
	}
	if in.Handle != "" {
		l = l.With(logging.KeyTaskArn, in.Handle)
	}
	return l
}

func (s *Steps) request(ctx context.Context, in StepInput) session.Request {
	r := session.Request{TraceID: in.TraceID}
	if lc, ok := lambdacontext.FromContext(ctx); ok {
		r.RequestID = lc.AwsRequestID
	}
	return r
}

// stopOldTask forgets the connection hand-off of any earlier restart and
// stops the session's task, waiting until it has stopped (R4).
func (s *Steps) stopOldTask(ctx context.Context, log *slog.Logger, in StepInput) (any, error) {
	// Cleared before the new task exists, so that a token or connection
	// left by an earlier restart is never taken for this one's.
	sess, err := updateSession(ctx, s.deps.Store, in.SessionID, func(cur *session.Session) error {
		if cur.ConnectToken == "" && cur.ConnectedTaskID == "" {
			return errUnchanged
		}
		cur.ConnectToken, cur.ConnectedTaskID = "", ""
		return nil
	})
	if err != nil {
		return nil, err
	}
	if sess.TaskHandle == "" {
		return StepDone{Step: StepStopOldTask, Note: "the session had no task"}, nil
	}
	if err := s.svc.StopAndWait(ctx, sess.TaskHandle, "restart"); err != nil {
		return nil, err
	}
	log.InfoContext(ctx, "old task stopped", logging.KeyEvent, "restart_old_task_stopped",
		logging.KeyTaskArn, sess.TaskHandle)
	return StepDone{Step: StepStopOldTask, TaskID: sess.TaskID, Handle: sess.TaskHandle}, nil
}

// startTask gives the session a new task, warm or cold.
func (s *Steps) startTask(ctx context.Context, in StepInput) (any, error) {
	sess, err := s.deps.Store.GetSession(ctx, in.SessionID)
	if err != nil {
		return nil, fmt.Errorf("read session %s: %w", in.SessionID, err)
	}
	sess, err = s.svc.StartTask(ctx, s.request(ctx, in), sess, true)
	if err != nil {
		return nil, err
	}
	return TaskOutput{TaskID: sess.TaskID, Handle: sess.TaskHandle, Warm: sess.Warm}, nil
}

// lambdaMargin is kept of a Lambda's time so that a wait that runs out
// still answers with its own reason rather than the Lambda's time-out.
const lambdaMargin = time.Second

// waitRunning waits until the new task runs, within the restart's limit
// and the Lambda's own deadline.
func (s *Steps) waitRunning(ctx context.Context, in StepInput) (any, error) {
	if in.Handle == "" {
		return nil, fmt.Errorf("no task handle to wait for (task %q)", in.TaskID)
	}
	limit := workflow.RestartLimit
	if dl, ok := ctx.Deadline(); ok {
		limit = min(limit, time.Until(dl)-lambdaMargin)
	}
	if _, err := s.svc.WaitRunning(ctx, in.Handle, limit); err != nil {
		return nil, err
	}
	return StepDone{Step: StepWaitRunning, TaskID: in.TaskID, Handle: in.Handle}, nil
}

// registerConnectionWait stores the WaitConnection token on the session
// for the relay to return once the task has connected. If the relay saw
// the task connect already (ConnectedTaskID), the step returns the token
// itself. Both sides write conditionally, so whichever writes second sees
// the other's field: the token is returned exactly once either way.
func (s *Steps) registerConnectionWait(ctx context.Context, in StepInput) (any, error) {
	if in.Token == "" || in.TaskID == "" {
		return nil, fmt.Errorf("register connection wait: task %q and a token are required", in.TaskID)
	}
	connected := false
	_, err := updateSession(ctx, s.deps.Store, in.SessionID, func(cur *session.Session) error {
		if cur.TaskID != in.TaskID {
			return fmt.Errorf("task %s is no longer the session's task (now %q)", in.TaskID, cur.TaskID)
		}
		connected = cur.ConnectedTaskID == in.TaskID
		if connected {
			return errUnchanged
		}
		cur.ConnectToken = in.Token
		return nil
	})
	if err != nil {
		return nil, err
	}
	if !connected {
		return StepDone{Step: StepRegisterConnectionWait, TaskID: in.TaskID, Note: "waiting for the relay"}, nil
	}
	if err := sendConnected(ctx, s.deps.Tokens, in.Token, in.TaskID); err != nil {
		return nil, err
	}
	return StepDone{Step: StepRegisterConnectionWait, TaskID: in.TaskID, Note: "the task had connected already"}, nil
}

// sendConnected completes WaitConnection with the connected task's id.
func sendConnected(ctx context.Context, tokens TaskTokens, token, taskID string) error {
	if tokens == nil {
		return errors.New("send task success: no Step Functions client configured")
	}
	out, _ := json.Marshal(connectedOutput{TaskID: taskID})
	_, err := tokens.SendTaskSuccess(ctx, &sfn.SendTaskSuccessInput{
		TaskToken: aws.String(token),
		Output:    aws.String(string(out)),
	})
	if err != nil {
		return fmt.Errorf("send task success for task %s: %w", taskID, err)
	}
	return nil
}

// errUnchanged tells updateSession that nothing needs writing.
var errUnchanged = errors.New("unchanged")

// maxWriteAttempts bounds the retries of a conditional write that other
// writers keep winning.
const maxWriteAttempts = 10

// updateSession reads a session, changes it and writes it conditionally on
// its version, reading again when another writer got there first.
func updateSession(ctx context.Context, store session.Store, id string,
	change func(*session.Session) error) (session.Session, error) {
	for attempt := 1; ; attempt++ {
		cur, err := store.GetSession(ctx, id)
		if err != nil {
			return cur, fmt.Errorf("read session %s: %w", id, err)
		}
		if err := change(&cur); errors.Is(err, errUnchanged) {
			return cur, nil
		} else if err != nil {
			return cur, err
		}
		next, err := store.UpdateSession(ctx, cur)
		if errors.Is(err, session.ErrConflict) && attempt < maxWriteAttempts {
			continue
		}
		if err != nil {
			return cur, fmt.Errorf("write session %s: %w", id, err)
		}
		return next, nil
	}
}
