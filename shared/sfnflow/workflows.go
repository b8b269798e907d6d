package sfnflow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sfn"
	"github.com/aws/aws-sdk-go-v2/service/sfn/types"

	"github.com/aishell/aishell/shared/events"
	"github.com/aishell/aishell/shared/logging"
	"github.com/aishell/aishell/shared/session"
	"github.com/aishell/aishell/shared/workflow"
)

// SFN is the part of the Step Functions API the relay calls.
type SFN interface {
	TaskTokens
	StartExecution(ctx context.Context, in *sfn.StartExecutionInput,
		optFns ...func(*sfn.Options)) (*sfn.StartExecutionOutput, error)
	DescribeExecution(ctx context.Context, in *sfn.DescribeExecutionInput,
		optFns ...func(*sfn.Options)) (*sfn.DescribeExecutionOutput, error)
	GetExecutionHistory(ctx context.Context, in *sfn.GetExecutionHistoryInput,
		optFns ...func(*sfn.Options)) (*sfn.GetExecutionHistoryOutput, error)
	StopExecution(ctx context.Context, in *sfn.StopExecutionInput,
		optFns ...func(*sfn.Options)) (*sfn.StopExecutionOutput, error)
}

// PollInterval is how often a restart's execution is read while it runs.
// Step Functions pushes an execution's end only to EventBridge, which
// cannot reach one relay task without a queue per relay; a restart lasts
// at most 30 s, so reading it four times a second (at most 120 small reads
// a restart) is the simpler way to hear its end within a quarter second.
const PollInterval = 250 * time.Millisecond

// Steps the relay names itself when a restart's execution could not be
// followed or was given up.
const (
	StepFollow    = "follow_restart"
	StepCancelled = "restart_cancelled"
)

// Workflows runs restarts as executions of the restart state machine. It
// implements the relay hub's Restarter.
type Workflows struct {
	sfn        SFN
	store      session.Store
	restartArn string
	log        *slog.Logger
	poll       time.Duration

	mu   sync.Mutex      // guards runs
	runs map[string]*run // the followed restart of each session
	// handoffs counts the TaskConnected calls still at work.
	handoffs sync.WaitGroup
}

// run is one followed restart. failed carries a failure of the connection
// hand-off, which ends the restart at once with its cause.
type run struct {
	failed chan error
}

// NewWorkflows returns a client of the restart state machine restartArn.
func NewWorkflows(client SFN, store session.Store, restartArn string, log *slog.Logger) *Workflows {
	if log == nil {
		log = logging.Discard()
	}
	return &Workflows{
		sfn:        client,
		store:      store,
		restartArn: restartArn,
		log:        logging.Module(log, "workflow"),
		poll:       PollInterval,
		runs:       map[string]*run{},
	}
}

// executionInput is the restart machine's input; every field is present,
// as the definition reads each.
type executionInput struct {
	SessionID string `json:"sessionId"`
	Attempt   int    `json:"attempt"`
	TraceID   string `json:"traceId"`
}

// maxNameLen is Step Functions' limit on an execution name.
const maxNameLen = 80

// ExecutionName names a restart's execution "<sessionId>-<attempt>": unique
// per restart, at most 80 characters, and only letters, digits, '-' and
// '_' (anything else becomes '_').
func ExecutionName(sessionID string, attempt int) string {
	suffix := "-" + strconv.Itoa(attempt)
	id := []rune(sessionID)
	for i, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			id[i] = '_'
		}
	}
	if n := maxNameLen - len(suffix); len(id) > n {
		id = id[:n]
	}
	return string(id) + suffix
}

// StartRestart starts a restart execution and follows it until it ends;
// the outcome arrives on the channel, always. Cancelling ctx stops the
// execution and ends the following.
func (w *Workflows) StartRestart(ctx context.Context, in workflow.RestartInput) (<-chan workflow.Outcome, error) {
	start := time.Now()
	body, err := json.Marshal(executionInput{SessionID: in.SessionID, Attempt: in.Attempt, TraceID: in.TraceID})
	if err != nil {
		return nil, fmt.Errorf("encode restart input: %w", err)
	}
	params := &sfn.StartExecutionInput{
		StateMachineArn: aws.String(w.restartArn),
		Name:            aws.String(ExecutionName(in.SessionID, in.Attempt)),
		Input:           aws.String(string(body)),
	}
	if strings.HasPrefix(in.TraceID, "1-") {
		// Joins the execution to the trace of the request that started
		// the session's task (R16).
		params.TraceHeader = aws.String("Root=" + in.TraceID)
	}
	out, err := w.sfn.StartExecution(ctx, params)
	if err != nil {
		return nil, fmt.Errorf("start restart execution %s: %w", aws.ToString(params.Name), err)
	}
	arn := aws.ToString(out.ExecutionArn)

	r := &run{failed: make(chan error, 1)}
	w.mu.Lock()
	w.runs[in.SessionID] = r
	w.mu.Unlock()

	ch := make(chan workflow.Outcome, 1)
	go func() {
		defer func() {
			w.mu.Lock()
			if w.runs[in.SessionID] == r {
				delete(w.runs, in.SessionID)
			}
			w.mu.Unlock()
		}()
		o := w.follow(ctx, arn, r)
		o.Duration = time.Since(start)
		ch <- o
	}()
	return ch, nil
}

// follow reads the execution until it ends, ctx is cancelled, or the
// connection hand-off fails.
func (w *Workflows) follow(ctx context.Context, arn string, r *run) workflow.Outcome {
	tick := time.NewTicker(w.poll)
	defer tick.Stop()
	for {
		d, err := w.sfn.DescribeExecution(ctx, &sfn.DescribeExecutionInput{ExecutionArn: aws.String(arn)})
		if err != nil && ctx.Err() == nil {
			w.stop(ctx, arn, StepFollow, err.Error())
			return workflow.Outcome{Step: StepFollow, Reason: fmt.Sprintf("describe execution %s: %v", arn, err)}
		}
		if err == nil && d.Status != types.ExecutionStatusRunning {
			return w.outcome(ctx, arn, d)
		}
		select {
		case <-ctx.Done():
			reason := "the relay gave up on the restart: " + context.Cause(ctx).Error()
			w.stop(ctx, arn, StepCancelled, reason)
			return workflow.Outcome{Step: StepCancelled, Reason: reason}
		case err := <-r.failed:
			reason := fmt.Sprintf("the task connected but its hand-off to the restart failed: %v", err)
			w.stop(ctx, arn, StepWaitConnection, reason)
			return workflow.Outcome{Step: StepWaitConnection, Reason: reason}
		case <-tick.C:
		}
	}
}

// stop ends an execution that is no longer followed, so that it neither
// runs on nor completes a restart nobody waits for.
func (w *Workflows) stop(ctx context.Context, arn, step, cause string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_, err := w.sfn.StopExecution(ctx, &sfn.StopExecutionInput{
		ExecutionArn: aws.String(arn),
		Error:        aws.String(step),
		Cause:        aws.String(truncate(cause, 32768)),
	})
	if err != nil {
		w.log.WarnContext(ctx, "stop restart execution", logging.KeyEvent, "restart_stop_failed",
			"executionArn", arn, "error", err.Error())
	}
}

// outcome turns an ended execution into the restart's outcome.
func (w *Workflows) outcome(ctx context.Context, arn string, d *sfn.DescribeExecutionOutput) workflow.Outcome {
	switch d.Status {
	case types.ExecutionStatusSucceeded:
		var out TaskOutput
		if err := json.Unmarshal([]byte(aws.ToString(d.Output)), &out); err != nil || out.TaskID == "" {
			return workflow.Outcome{Step: StepFollow,
				Reason: fmt.Sprintf("restart succeeded but its output names no task: %q", aws.ToString(d.Output))}
		}
		return workflow.Outcome{Success: true, TaskID: out.TaskID, Warm: out.Warm}
	case types.ExecutionStatusFailed:
		step := aws.ToString(d.Error)
		if step == "" {
			step = StepFollow
		}
		return workflow.Outcome{Step: step, Reason: causeReason(step, aws.ToString(d.Cause))}
	default:
		// TIMED_OUT or ABORTED: no Fail state ran, so the history says
		// which step it ended in.
		step, err := w.lastStep(ctx, arn)
		if err != nil {
			return workflow.Outcome{Step: StepFollow, Reason: fmt.Sprintf("restart execution %s; %v",
				strings.ToLower(string(d.Status)), err)}
		}
		ran := ""
		if d.StartDate != nil && d.StopDate != nil {
			ran = " after " + d.StopDate.Sub(*d.StartDate).Round(time.Second).String()
		}
		if d.Status == types.ExecutionStatusTimedOut {
			return workflow.Outcome{Step: step,
				Reason: fmt.Sprintf("restart timed out%s in step %s", ran, step)}
		}
		reason := fmt.Sprintf("restart execution %s%s in step %s", strings.ToLower(string(d.Status)), ran, step)
		if c := aws.ToString(d.Cause); c != "" {
			reason += ": " + c
		}
		return workflow.Outcome{Step: step, Reason: reason}
	}
}

// stepOfState maps the restart machine's states to the steps they run.
var stepOfState = map[string]string{
	StateStopOldTask:    StepStopOldTask,
	StateStartTask:      StepStartTask,
	StateWaitRunning:    StepWaitRunning,
	StateWaitConnection: StepWaitConnection,
}

// lastStep reads the step an execution was in when it ended: the newest
// state it entered. The newest events come first, so one page holds it;
// the largest event id is taken rather than the first event, which keeps
// it right where the history comes in another order.
func (w *Workflows) lastStep(ctx context.Context, arn string) (string, error) {
	h, err := w.sfn.GetExecutionHistory(ctx, &sfn.GetExecutionHistoryInput{
		ExecutionArn: aws.String(arn),
		ReverseOrder: true,
		MaxResults:   100,
	})
	if err != nil {
		return "", fmt.Errorf("read execution history: %w", err)
	}
	var newest int64 = -1
	step := ""
	for _, e := range h.Events {
		if e.StateEnteredEventDetails == nil || e.Id <= newest {
			continue
		}
		newest = e.Id
		name := aws.ToString(e.StateEnteredEventDetails.Name)
		step = stepOfState[name]
		if step == "" {
			step = name
		}
	}
	if step == "" {
		return "", errors.New("the execution's history shows no state entered")
	}
	return step, nil
}

// lambdaErrorBody is how a Lambda function error reaches a Catch's Cause.
type lambdaErrorBody struct {
	ErrorMessage string `json:"errorMessage"`
	ErrorType    string `json:"errorType"`
}

// causeReason reads the concrete reason from a failed step's cause: the
// steps Lambda's errorMessage, led by its errorType when that is not the
// step itself (a Lambda service error, a time-out); otherwise the cause
// as it is.
func causeReason(step, cause string) string {
	var b lambdaErrorBody
	if err := json.Unmarshal([]byte(cause), &b); err == nil && b.ErrorMessage != "" {
		own := b.ErrorType == step || step == StepWaitConnection && b.ErrorType == StepRegisterConnectionWait
		if !own && b.ErrorType != "" {
			return b.ErrorType + ": " + b.ErrorMessage
		}
		// The session rules' errors often lead with the step already.
		return strings.TrimPrefix(b.ErrorMessage, step+": ")
	}
	if cause == "" {
		return "the step failed without a cause"
	}
	return cause
}

// TaskConnected reports that the session's task connected and is ready:
// it records the task on the session and, if WaitConnection's token is
// there already, returns it with SendTaskSuccess; otherwise the step does
// when it comes. It returns at once and does its work in the background; a
// failure ends the session's followed restart with its cause.
func (w *Workflows) TaskConnected(sessionID, taskID string) {
	w.handoffs.Add(1)
	go func() {
		defer w.handoffs.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err := w.connect(ctx, sessionID, taskID)
		if err == nil {
			return
		}
		w.mu.Lock()
		r := w.runs[sessionID]
		w.mu.Unlock()
		if r != nil {
			select {
			case r.failed <- err:
				return // the restart's outcome carries it
			default:
			}
		}
		logging.Event(ctx, w.log.With(logging.KeySessionID, sessionID, logging.KeyTaskArn, taskID),
			slog.LevelError, "restart_connect_failed", "task connection not handed to the restart",
			slog.String(events.FieldReason, err.Error()))
	}()
}

// Wait waits until the hand-offs of the TaskConnected calls made so far
// have finished, for a relay's shutdown and for tests.
func (w *Workflows) Wait() { w.handoffs.Wait() }

// connect writes ConnectedTaskID and takes any token, in one conditional
// write, then returns the token.
func (w *Workflows) connect(ctx context.Context, sessionID, taskID string) error {
	var token string
	_, err := updateSession(ctx, w.store, sessionID, func(cur *session.Session) error {
		if cur.TaskID != taskID {
			return fmt.Errorf("task %s is not the session's task (%q)", taskID, cur.TaskID)
		}
		token = cur.ConnectToken
		cur.ConnectedTaskID, cur.ConnectToken = taskID, ""
		return nil
	})
	if err != nil {
		return fmt.Errorf("record connection of task %s: %w", taskID, err)
	}
	if token == "" {
		return nil
	}
	return sendConnected(ctx, w.sfn, token, taskID)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
