// Package sfnflow runs the restart and refill workflows on AWS Step
// Functions. It holds the Amazon States Language of both state machines
// (deployed as they are by the CDK app), Steps, the Lambda side that carries
// out each Lambda step through the session rules, and Workflows, the relay
// side that starts and follows restart executions and completes their
// wait for the task's connection.
//
// The restart machine runs the steps of workflow.Local, in the same order
// and under the same 30 s limit: StopOldTask, StartTask, WaitRunning,
// WaitConnection, Ready. The refill machine plans each relay's warm pool
// with warmpool.Plan, starts and retires warm tasks, and reaps tasks that
// nothing owns.
package sfnflow

import (
	"encoding/json"
	"time"

	"github.com/aishell/aishell/shared/session"
	"github.com/aishell/aishell/shared/workflow"
)

// Definition substitutions: the CDK app replaces ${name} in the definitions
// with the steps Lambdas' ARNs (definitionSubstitutions).
const (
	RestartFunctionVar = "RestartStepsFunctionArn"
	RefillFunctionVar  = "RefillStepsFunctionArn"
)

// States of the restart machine, as operators see them in the console.
const (
	StateStopOldTask    = "StopOldTask"
	StateStartTask      = "StartTask"
	StateWaitRunning    = "WaitRunning"
	StateWaitConnection = "WaitConnection"
	StateReady          = "Ready"
)

// States of the refill machine.
const (
	StatePlan            = "Plan"
	StateStartWarmTasks  = "StartWarmTasks"
	StateStartWarmTask   = "StartWarmTask"
	StateRetireWarmTasks = "RetireWarmTasks"
	StateRetireWarmTask  = "RetireWarmTask"
	StateReapOrphans     = "ReapOrphans"
	StateCheckFailures   = "CheckFailures"
	StateDone            = "Done"
)

// Steps are what a Lambda invocation is asked to do (StepInput.Step). A
// step's failure is a Lambda error whose errorType is the step's name, and
// the failed execution's Error names the step too.
const (
	StepStopOldTask            = session.StepStopOldTask
	StepStartTask              = session.StepStartTask
	StepWaitRunning            = session.StepWaitRunning
	StepRegisterConnectionWait = "register_connection_wait"
	// StepWaitConnection names the failure of the WaitConnection state:
	// its Lambda step, or the wait for the token after it.
	StepWaitConnection = session.StepWaitConnection

	StepPlan           = "plan"
	StepStartWarmTask  = "start_warm_task"
	StepRetireWarmTask = "retire_warm_task"
	StepReapOrphans    = "reap_orphans"
)

// RefillLimit bounds a whole refill run.
const RefillLimit = 5 * time.Minute

// mapConcurrency bounds the warm tasks started or retired at once, well
// inside ECS's RunTask rate.
const mapConcurrency = 5

// Option changes a definition; tests use it to shorten the time limit.
type Option func(*options)

type options struct {
	timeout time.Duration
}

// WithTimeout sets the machine's TimeoutSeconds (whole seconds, at least
// one) instead of its default.
func WithTimeout(d time.Duration) Option {
	return func(o *options) { o.timeout = d }
}

func seconds(d time.Duration) int { return max(int(d/time.Second), 1) }

// RestartDefinition returns the restart state machine in the Amazon States
// Language. Its input is {"sessionId", "attempt", "traceId"}, all three
// present (Workflows sends them); its output on success is {"taskId",
// "handle", "warm"}. A failure ends in a Fail state whose Error is the
// failed step (stop_old_task, start_task, wait_running, wait_connection)
// and whose Cause is the step's error as Step Functions caught it.
func RestartDefinition(opts ...Option) string {
	o := options{timeout: workflow.RestartLimit}
	for _, opt := range opts {
		opt(&o)
	}
	fn := "${" + RestartFunctionVar + "}"
	ids := func(step string) map[string]any {
		return map[string]any{
			"step":        step,
			"sessionId.$": "$.sessionId",
			"attempt.$":   "$.attempt",
			"traceId.$":   "$.traceId",
		}
	}
	withTask := func(p map[string]any) map[string]any {
		p["taskId.$"] = "$.task.taskId"
		p["handle.$"] = "$.task.handle"
		return p
	}
	register := withTask(ids(StepRegisterConnectionWait))
	register["token.$"] = "$$.Task.Token"

	m := machine{
		Comment: "Restart a session's task: stop the old task, start a task (warm or cold), " +
			"wait for RUNNING, wait for the task's connection to the relay.",
		StartAt:        StateStopOldTask,
		TimeoutSeconds: seconds(o.timeout),
		States: map[string]state{
			StateStopOldTask: lambdaTask(fn, ids(StepStopOldTask), StateStartTask,
				"Stop the session's old task, if any, and wait until it has stopped (R4)."),
			StateStartTask: withResult(lambdaTask(fn, ids(StepStartTask), StateWaitRunning,
				"Claim a warm task or run a cold one; the session's record names it."),
				map[string]any{
					"taskId.$": "$.Payload.taskId",
					"handle.$": "$.Payload.handle",
					"warm.$":   "$.Payload.warm",
				}, "$.task"),
			StateWaitRunning: lambdaTask(fn, withTask(ids(StepWaitRunning)), StateWaitConnection,
				"Wait until the new task is RUNNING; a task that stops instead fails the step."),
			StateWaitConnection: callbackTask(fn, register, StateReady,
				"Store this state's task token on the session; the relay returns it with "+
					"SendTaskSuccess once the task has connected (or the step does, if it has already)."),
			// A Pass that ends, rather than a Succeed with OutputPath, which
			// the language allows but cfn-lint's schema refuses.
			StateReady: {Type: "Pass", OutputPath: "$.task", End: true},
		},
	}
	catchInto(&m, map[string]string{
		StateStopOldTask:    StepStopOldTask,
		StateStartTask:      StepStartTask,
		StateWaitRunning:    StepWaitRunning,
		StateWaitConnection: StepWaitConnection,
	})
	return m.json()
}

// RefillDefinition returns the refill state machine in the Amazon States
// Language. Its input is ignored. Plan decides, per relay, the warm tasks to
// start and those to retire; two Maps carry them out; ReapOrphans stops the
// tasks that no session or warm task owns. A failed start or retire does
// not skip the steps after it, so a refill always cleans up, but the
// execution then ends failed, its Error naming the first failed step.
func RefillDefinition(opts ...Option) string {
	o := options{timeout: RefillLimit}
	for _, opt := range opts {
		opt(&o)
	}
	fn := "${" + RefillFunctionVar + "}"
	each := func(item, comment string) *processor {
		t := lambdaTask(fn, nil, "", comment)
		t.Parameters = map[string]any{"FunctionName": fn, "Payload.$": "$"}
		// The item's output is the step's answer.
		t.Next, t.End, t.ResultPath, t.OutputPath = "", true, nil, "$.Payload"
		return &processor{
			ProcessorConfig: map[string]string{"Mode": "INLINE"},
			StartAt:         item,
			States:          map[string]state{item: t},
		}
	}
	mapOver := func(items, item, result, next, comment string) state {
		return state{
			Type:           "Map",
			Comment:        comment,
			ItemsPath:      items,
			MaxConcurrency: mapConcurrency,
			ItemProcessor:  each(item, comment),
			ResultPath:     result,
			Next:           next,
		}
	}

	m := machine{
		Comment: "Keep each relay's warm pool at its target (R8): plan, start the deficit, " +
			"retire what must go, and stop tasks that nothing owns.",
		StartAt:        StatePlan,
		TimeoutSeconds: seconds(o.timeout),
		States: map[string]state{
			StatePlan: withResult(lambdaTask(fn, map[string]any{"step": StepPlan}, StateStartWarmTasks,
				"Plan every relay's pool from the store (warmpool.Plan)."),
				map[string]any{"starts.$": "$.Payload.starts", "retires.$": "$.Payload.retires"},
				"$.plan"),
			StateStartWarmTasks: mapOver("$.plan.starts", StateStartWarmTask, "$.started",
				StateRetireWarmTasks, "Start one warm task for a relay."),
			StateRetireWarmTasks: mapOver("$.plan.retires", StateRetireWarmTask, "$.retired",
				StateReapOrphans, "Recycle, expire, abandon or trim one warm task."),
			StateReapOrphans: withResult(lambdaTask(fn, map[string]any{"step": StepReapOrphans},
				StateCheckFailures, "Stop running tasks that no session or warm task owns."),
				map[string]any{"stopped.$": "$.Payload.stopped"}, "$.reaped"),
			StateCheckFailures: {
				Type:    "Choice",
				Comment: "End failed, naming the first step that failed, if any did.",
				Choices: []choice{
					{Variable: failurePath(StateStartWarmTasks), IsPresent: true, Next: failState(StateStartWarmTasks)},
					{Variable: failurePath(StateRetireWarmTasks), IsPresent: true, Next: failState(StateRetireWarmTasks)},
					{Variable: failurePath(StateReapOrphans), IsPresent: true, Next: failState(StateReapOrphans)},
				},
				Default: StateDone,
			},
			StateDone: {Type: "Succeed"},
		},
	}
	// Plan's failure ends the run at once: there is nothing to carry out.
	catchInto(&m, map[string]string{StatePlan: StepPlan})
	// The others record their failure and go on, so that the clean-up
	// steps still run; CheckFailures ends the run failed afterwards.
	for from, next := range map[string]string{
		StateStartWarmTasks:  StateRetireWarmTasks,
		StateRetireWarmTasks: StateReapOrphans,
		StateReapOrphans:     StateCheckFailures,
	} {
		st := m.States[from]
		st.Catch = []catcher{{ErrorEquals: []string{"States.ALL"}, ResultPath: failurePath(from), Next: next}}
		m.States[from] = st
	}
	for st, step := range map[string]string{
		StateStartWarmTasks:  StepStartWarmTask,
		StateRetireWarmTasks: StepRetireWarmTask,
		StateReapOrphans:     StepReapOrphans,
	} {
		m.States[failState(st)] = state{Type: "Fail", Error: step, CausePath: failurePath(st) + ".Cause"}
	}
	return m.json()
}

// catchInto gives each named state a Catch of every error into a Fail state
// of its own, whose Error is the step and whose Cause is the caught cause.
func catchInto(m *machine, steps map[string]string) {
	for name, step := range steps {
		st := m.States[name]
		st.Catch = []catcher{{ErrorEquals: []string{"States.ALL"}, ResultPath: "$.failure", Next: failState(name)}}
		m.States[name] = st
		m.States[failState(name)] = state{Type: "Fail", Error: step, CausePath: "$.failure.Cause"}
	}
}

func failState(name string) string { return name + "Failed" }

// failurePath is where the refill keeps a step's caught error: a field of
// the top level, which a ResultPath can always add.
func failurePath(name string) string { return "$.failed" + name }

// lambdaRetry retries only what says the Lambda service did not run the
// function or could not answer; never the product's own errors, which a
// second try would repeat or make worse (a second RunTask).
var lambdaRetry = []retrier{{
	ErrorEquals:     []string{"Lambda.ServiceException", "Lambda.TooManyRequestsException"},
	IntervalSeconds: 1,
	MaxAttempts:     2,
	BackoffRate:     2,
}}

// lambdaTask invokes the steps Lambda with payload and keeps the state's
// input as its output.
func lambdaTask(fn string, payload map[string]any, next, comment string) state {
	return state{
		Type:       "Task",
		Comment:    comment,
		Resource:   "arn:aws:states:::lambda:invoke",
		Parameters: map[string]any{"FunctionName": fn, "Payload": payload},
		ResultPath: json.RawMessage("null"),
		Retry:      lambdaRetry,
		Next:       next,
	}
}

// callbackTask invokes the steps Lambda with payload and then waits for
// the task token that the payload carries to come back.
func callbackTask(fn string, payload map[string]any, next, comment string) state {
	st := lambdaTask(fn, payload, next, comment)
	st.Resource = "arn:aws:states:::lambda:invoke.waitForTaskToken"
	st.ResultPath = "$.connection"
	return st
}

func withResult(st state, selector map[string]any, path string) state {
	st.ResultSelector, st.ResultPath = selector, path
	return st
}

// machine and state are the parts of the States Language the two
// definitions use; field order is the order operators read them in.
type machine struct {
	Comment        string           `json:"Comment"`
	StartAt        string           `json:"StartAt"`
	TimeoutSeconds int              `json:"TimeoutSeconds"`
	States         map[string]state `json:"States"`
}

type state struct {
	Type           string         `json:"Type"`
	Comment        string         `json:"Comment,omitempty"`
	Resource       string         `json:"Resource,omitempty"`
	Parameters     map[string]any `json:"Parameters,omitempty"`
	ItemsPath      string         `json:"ItemsPath,omitempty"`
	MaxConcurrency int            `json:"MaxConcurrency,omitempty"`
	ItemProcessor  *processor     `json:"ItemProcessor,omitempty"`
	ResultSelector map[string]any `json:"ResultSelector,omitempty"`
	// ResultPath is a path string, or JSON null to discard the result.
	ResultPath any       `json:"ResultPath,omitempty"`
	OutputPath string    `json:"OutputPath,omitempty"`
	Retry      []retrier `json:"Retry,omitempty"`
	Catch      []catcher `json:"Catch,omitempty"`
	Choices    []choice  `json:"Choices,omitempty"`
	Default    string    `json:"Default,omitempty"`
	Error      string    `json:"Error,omitempty"`
	CausePath  string    `json:"CausePath,omitempty"`
	Next       string    `json:"Next,omitempty"`
	End        bool      `json:"End,omitempty"`
}

type processor struct {
	ProcessorConfig map[string]string `json:"ProcessorConfig"`
	StartAt         string            `json:"StartAt"`
	States          map[string]state  `json:"States"`
}

type retrier struct {
	ErrorEquals     []string `json:"ErrorEquals"`
	IntervalSeconds int      `json:"IntervalSeconds"`
	MaxAttempts     int      `json:"MaxAttempts"`
	BackoffRate     float64  `json:"BackoffRate"`
}

type catcher struct {
	ErrorEquals []string `json:"ErrorEquals"`
	ResultPath  string   `json:"ResultPath"`
	Next        string   `json:"Next"`
}

type choice struct {
	Variable  string `json:"Variable"`
	IsPresent bool   `json:"IsPresent"`
	Next      string `json:"Next"`
}

func (m machine) json() string {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		// Only plain values go in; a failure here is a bug in this file.
		panic("sfnflow: encode definition: " + err.Error())
	}
	return string(b)
}
