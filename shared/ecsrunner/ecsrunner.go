// Package ecsrunner is the task runner in AWS: session.TaskRunner on ECS.
// Each task is RunTask of the environment's fixed task definition, the
// per-task settings of the bridge's start-up contract travelling as
// container overrides (R9); the handle of a task is its ECS task ARN.
//
// RunTask calls of one Runner are spaced by a token bucket, and calls that
// ECS throttles are retried with exponential back-off before the error is
// returned. Errors keep the AWS error code, and RunTask's failures (no
// capacity, no agent) become errors coded with the failure's reason, so the
// session rules can tell "try again later" from "broken".
//
// With SharedAccessPoint off (USE_SHARED_AP=false) the Runner works the
// older way: each user gets an EFS access point and a task definition
// revision of their own, created on the user's first start, found again
// and reused on later ones.
package ecsrunner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	"github.com/aws/aws-sdk-go-v2/service/ecs/types"
	"github.com/aws/aws-sdk-go-v2/service/efs"

	"github.com/aishell/aishell/shared/logging"
	"github.com/aishell/aishell/shared/session"
)

// Error codes of the runner's own errors, carried by *session.CodedError.
// RunTask failures are coded with ECS's reason instead (RESOURCE:MEMORY,
// AGENT, ...), and AWS API errors keep their AWS code.
const (
	// CodeInvalidSpec: the task spec lacks what the runner needs.
	CodeInvalidSpec = "InvalidTaskSpec"
	// CodeNoTask: RunTask answered with neither a task nor a failure.
	CodeNoTask = "RunTaskNoTask"
	// CodeBadTaskDefinition: the fixed task definition cannot be copied
	// into a per-user one (it has no EFS volume of the file system).
	CodeBadTaskDefinition = "BadTaskDefinition"
)

// Environment variables of the bridge's start-up contract (see
// relay/bridge's ConfigFromEnv).
const (
	EnvRelayURL      = "RELAY_URL"
	EnvTaskID        = "TASK_ID"
	EnvCredential    = "TASK_CREDENTIAL"
	EnvWarm          = "WARM"
	EnvSessionID     = "SESSION_ID"
	EnvUserID        = "USER_ID"
	EnvUserUID       = "USER_UID"
	EnvWorkspaceRoot = "WORKSPACE_ROOT"
	EnvAgentCommand  = "AGENT_COMMAND"
	EnvAgentMode     = "AGENT_MODE"
)

// Tags put on every task, and on per-user access points and task
// definitions.
const (
	TagSession = "aishell:session"
	TagUser    = "aishell:user"
	TagTask    = "aishell:task"
	TagEnv     = "aishell:env"
	// TagBase names the fixed task definition revision a per-user one was
	// copied from, so a new revision of it is copied again.
	TagBase = "aishell:base"
)

// StartedByWarm is the startedBy of warm tasks; a task started for a
// session is started by the session's id.
const StartedByWarm = "warm"

// maxStopReason is the longest stop reason ECS keeps.
const maxStopReason = 255

// keptTimings is how many starts' timings StartTimings remembers.
const keptTimings = 256

// ecsAPI is the part of the ECS client the Runner calls; tests put a fake
// in its place for what moto cannot do.
type ecsAPI interface {
	RunTask(context.Context, *ecs.RunTaskInput, ...func(*ecs.Options)) (*ecs.RunTaskOutput, error)
	StopTask(context.Context, *ecs.StopTaskInput, ...func(*ecs.Options)) (*ecs.StopTaskOutput, error)
	DescribeTasks(context.Context, *ecs.DescribeTasksInput, ...func(*ecs.Options)) (
		*ecs.DescribeTasksOutput, error)
	ListTasks(context.Context, *ecs.ListTasksInput, ...func(*ecs.Options)) (
		*ecs.ListTasksOutput, error)
	DescribeTaskDefinition(context.Context, *ecs.DescribeTaskDefinitionInput, ...func(*ecs.Options)) (
		*ecs.DescribeTaskDefinitionOutput, error)
	RegisterTaskDefinition(context.Context, *ecs.RegisterTaskDefinitionInput, ...func(*ecs.Options)) (
		*ecs.RegisterTaskDefinitionOutput, error)
}

// efsAPI is the part of the EFS client the Runner calls, in per-user mode.
type efsAPI interface {
	DescribeAccessPoints(context.Context, *efs.DescribeAccessPointsInput, ...func(*efs.Options)) (
		*efs.DescribeAccessPointsOutput, error)
	CreateAccessPoint(context.Context, *efs.CreateAccessPointInput, ...func(*efs.Options)) (
		*efs.CreateAccessPointOutput, error)
}

// Runner starts, stops and describes ECS tasks. It is safe for concurrent
// use; all its Runs share one RunTask rate limit.
type Runner struct {
	cfg     Config
	ecs     ecsAPI
	efs     efsAPI
	log     *slog.Logger
	limit   *limiter
	backoff backoff

	mu sync.Mutex // guards the fields below
	// timings of recent per-user starts by handle, and their handles
	// oldest first, at most keptTimings.
	timings     map[string]StartTiming
	timingOrder []string
	// users caches the per-user task definitions (per-user mode).
	users userDefinitions
}

// StartTiming is what a start spent before RunTask, in milliseconds: on
// the user's access point and on the user's task definition. Both are 0 in
// shared mode and when the per-user ones were cached.
type StartTiming struct {
	AccessPointMs int64
	RegisterMs    int64
}

// New returns a Runner calling ECS (and, in per-user mode, EFS) through the
// given clients. efsClient may be nil when cfg.SharedAccessPoint is true.
func New(ecsClient *ecs.Client, efsClient *efs.Client, cfg Config) *Runner {
	var fs efsAPI
	if efsClient != nil {
		fs = efsClient
	}
	return newRunner(ecsClient, fs, cfg)
}

func newRunner(ecsClient ecsAPI, efsClient efsAPI, cfg Config) *Runner {
	log := cfg.Log
	if log == nil {
		log = logging.Discard()
	}
	return &Runner{
		cfg:     cfg,
		ecs:     ecsClient,
		efs:     efsClient,
		log:     logging.Module(log, "ecsrunner"),
		limit:   newLimiter(cfg.RunTaskRate),
		backoff: defaultBackoff(),
		timings: map[string]StartTiming{},
		users:   userDefinitions{byUser: map[string]*userDefinition{}},
	}
}

// ecsOpt and efsOpt are given to every call: throttling is retried by
// backoff.do, not by the SDK.
func ecsOpt(o *ecs.Options) { withoutThrottleRetry(&o.Retryer) }
func efsOpt(o *efs.Options) { withoutThrottleRetry(&o.Retryer) }

// Run starts a task for spec and returns its task ARN once ECS accepted
// it, without waiting for RUNNING.
func (r *Runner) Run(ctx context.Context, spec session.TaskSpec) (string, error) {
	step := "run task " + spec.TaskID
	if !spec.Warm {
		step += " for session " + spec.SessionID
	}
	if spec.TaskID == "" {
		return "", &session.CodedError{Code: CodeInvalidSpec, Err: errors.New(step + ": empty task id")}
	}

	taskDef := r.cfg.TaskDefinition
	var timing StartTiming
	if !r.cfg.SharedAccessPoint && !spec.Warm {
		var err error
		taskDef, timing, err = r.userTaskDefinition(ctx, spec)
		if err != nil {
			return "", fmt.Errorf("%s: %w", step, err)
		}
	}

	in := r.runTaskInput(spec, taskDef)
	var out *ecs.RunTaskOutput
	err := r.backoff.do(ctx, r.log, "RunTask", func() error {
		if err := r.limit.wait(ctx); err != nil {
			return err
		}
		var err error
		out, err = r.ecs.RunTask(ctx, in, ecsOpt)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("%s: %w", step, err)
	}

	if len(out.Tasks) == 0 {
		if len(out.Failures) == 0 {
			return "", &session.CodedError{Code: CodeNoTask,
				Err: errors.New(step + ": ECS started no task and gave no reason")}
		}
		f := out.Failures[0]
		code := aws.ToString(f.Reason)
		if code == "" {
			code = "RunTaskFailure"
		}
		msg := step + ": " + code
		if d := aws.ToString(f.Detail); d != "" {
			msg += " (" + d + ")"
		}
		return "", &session.CodedError{Code: code, Err: errors.New(msg)}
	}
	handle := aws.ToString(out.Tasks[0].TaskArn)
	if timing != (StartTiming{}) {
		r.keepTiming(handle, timing)
	}
	return handle, nil
}

// runTaskInput is the RunTask call of spec on taskDef.
func (r *Runner) runTaskInput(spec session.TaskSpec, taskDef string) *ecs.RunTaskInput {
	var env []types.KeyValuePair
	set := func(name, value string) {
		env = append(env, types.KeyValuePair{Name: aws.String(name), Value: aws.String(value)})
	}
	set(EnvRelayURL, spec.RelayURL)
	set(EnvTaskID, spec.TaskID)
	set(EnvCredential, spec.Credential)
	startedBy := StartedByWarm
	tags := []types.Tag{tag(TagTask, spec.TaskID), tag(TagEnv, r.cfg.Env)}
	if spec.Warm {
		set(EnvWarm, "1")
	} else {
		// Said outright, so a default in the task definition cannot make a
		// session's task wait for init_user.
		set(EnvWarm, "0")
		set(EnvSessionID, spec.SessionID)
		set(EnvUserID, spec.UserID)
		if spec.UID > 0 {
			set(EnvUserUID, strconv.Itoa(spec.UID))
		}
		startedBy = truncate(spec.SessionID, 36)
		tags = append(tags, tag(TagSession, spec.SessionID), tag(TagUser, spec.UserID))
	}
	if r.cfg.WorkspaceRoot != "" {
		set(EnvWorkspaceRoot, r.cfg.WorkspaceRoot)
	}
	if r.cfg.AgentCommand != "" {
		set(EnvAgentCommand, r.cfg.AgentCommand)
	}
	if r.cfg.AgentMode != "" {
		set(EnvAgentMode, r.cfg.AgentMode)
	}

	publicIP := types.AssignPublicIpDisabled
	if r.cfg.AssignPublicIP {
		publicIP = types.AssignPublicIpEnabled
	}
	in := &ecs.RunTaskInput{
		Cluster:        aws.String(r.cfg.Cluster),
		TaskDefinition: aws.String(taskDef),
		Count:          aws.Int32(1),
		// The task id makes a repeated call (after a lost answer) start
		// no second task.
		ClientToken: aws.String(spec.TaskID),
		StartedBy:   aws.String(startedBy),
		Overrides: &types.TaskOverride{ContainerOverrides: []types.ContainerOverride{{
			Name: aws.String(r.cfg.ContainerName), Environment: env,
		}}},
		NetworkConfiguration: &types.NetworkConfiguration{AwsvpcConfiguration: &types.AwsVpcConfiguration{
			Subnets: r.cfg.Subnets, SecurityGroups: r.cfg.SecurityGroups, AssignPublicIp: publicIP,
		}},
		Tags:                 tags,
		EnableECSManagedTags: true,
	}
	switch {
	case r.cfg.CapacityProvider != "":
		in.CapacityProviderStrategy = []types.CapacityProviderStrategyItem{{
			CapacityProvider: aws.String(r.cfg.CapacityProvider), Weight: 1,
		}}
	case r.cfg.LaunchType != "":
		in.LaunchType = types.LaunchType(r.cfg.LaunchType)
	}
	return in
}

// Stop asks ECS to stop a task with reason (cut to the 255 characters ECS
// keeps). Stopping a stopped task, or one ECS does not know, is no error.
func (r *Runner) Stop(ctx context.Context, handle, reason string) error {
	err := r.backoff.do(ctx, r.log, "StopTask", func() error {
		_, err := r.ecs.StopTask(ctx, &ecs.StopTaskInput{
			Cluster: aws.String(r.cfg.Cluster),
			Task:    aws.String(handle),
			Reason:  aws.String(truncate(reason, maxStopReason)),
		}, ecsOpt)
		return err
	})
	if isTaskNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("stop task %s: %w", handle, err)
	}
	return nil
}

// isTaskNotFound reports whether err is ECS saying the task is unknown
// ("The referenced task was not found.").
func isTaskNotFound(err error) bool {
	var ipe *types.InvalidParameterException
	return errors.As(err, &ipe) && strings.Contains(strings.ToLower(ipe.ErrorMessage()), "not found")
}

// Describe reports a task's state. A task ECS does not know (any more) is
// STOPPED with a reason saying so.
func (r *Runner) Describe(ctx context.Context, handle string) (session.TaskStatus, error) {
	var out *ecs.DescribeTasksOutput
	err := r.backoff.do(ctx, r.log, "DescribeTasks", func() error {
		var err error
		out, err = r.ecs.DescribeTasks(ctx, &ecs.DescribeTasksInput{
			Cluster: aws.String(r.cfg.Cluster),
			Tasks:   []string{handle},
		}, ecsOpt)
		return err
	})
	if err != nil {
		return session.TaskStatus{}, fmt.Errorf("describe task %s: %w", handle, err)
	}

	if len(out.Tasks) > 0 {
		return taskStatus(out.Tasks[0], r.cfg.ContainerName), nil
	}
	for _, f := range out.Failures {
		if reason := aws.ToString(f.Reason); reason != "MISSING" {
			return session.TaskStatus{}, &session.CodedError{Code: reason,
				Err: fmt.Errorf("describe task %s: %s %s", handle, reason, aws.ToString(f.Detail))}
		}
	}
	return notFound(handle), nil
}

// ListTasks returns the ARNs of the cluster's tasks that are meant to run
// (desired status RUNNING): those started by startedBy (a session id, or
// StartedByWarm), or with startedBy empty those of the fixed task
// definition's family. The refill reaps with it the tasks whose session is
// gone.
func (r *Runner) ListTasks(ctx context.Context, startedBy string) ([]string, error) {
	// ECS takes startedBy only as the one filter of a listing.
	in := &ecs.ListTasksInput{Cluster: aws.String(r.cfg.Cluster)}
	what := "started by " + startedBy
	if startedBy != "" {
		in.StartedBy = aws.String(startedBy)
	} else {
		in.Family = aws.String(family(r.cfg.TaskDefinition))
		what = "of family " + *in.Family
	}

	var arns []string
	pages := ecs.NewListTasksPaginator(r.ecs, in)
	for pages.HasMorePages() {
		var page *ecs.ListTasksOutput
		err := r.backoff.do(ctx, r.log, "ListTasks", func() error {
			var err error
			page, err = pages.NextPage(ctx, ecsOpt)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("list tasks %s: %w", what, err)
		}
		arns = append(arns, page.TaskArns...)
	}
	return arns, nil
}

// StartTimings returns what the start of the task handle spent on the
// user's access point and task definition before RunTask, in
// milliseconds, for the task_ready breakdown (R13); zeros for a task
// started in shared mode, from cached per-user resources, or too long ago.
// The session rules read it through an optional interface, as a runner
// on one machine has no such figures.
func (r *Runner) StartTimings(handle string) (accessPointMs, registerMs int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := r.timings[handle]
	return t.AccessPointMs, t.RegisterMs
}

func (r *Runner) keepTiming(handle string, t StartTiming) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.timings[handle] = t
	r.timingOrder = append(r.timingOrder, handle)
	for len(r.timingOrder) > keptTimings {
		delete(r.timings, r.timingOrder[0])
		r.timingOrder = r.timingOrder[1:]
	}
}

// family returns the family of a task definition given as a family, a
// family:revision or an ARN.
func family(taskDef string) string {
	if i := strings.LastIndex(taskDef, "task-definition/"); i >= 0 {
		taskDef = taskDef[i+len("task-definition/"):]
	}
	f, _, _ := strings.Cut(taskDef, ":")
	return f
}

// truncate cuts s to at most n bytes without splitting a character.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// tag is an ECS tag whose value ECS accepts: values with characters tags
// may not hold, or longer than 256, are replaced by their hash.
func tag(key, value string) types.Tag {
	return types.Tag{Key: aws.String(key), Value: aws.String(tagValue(value))}
}

// tagValue returns value if a tag may hold it, else "sha256:" and the hex
// SHA-256 of it, which may.
func tagValue(value string) string {
	ok := len(value) <= 256
	for _, c := range value {
		if !ok {
			break
		}
		ok = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			strings.ContainsRune(" +-=._:/@", c)
	}
	if ok {
		return value
	}
	return "sha256:" + hashHex(value)
}

// since is the milliseconds from t0 to now.
func since(t0 time.Time) int64 { return time.Since(t0).Milliseconds() }

var _ session.TaskRunner = (*Runner)(nil)
