package awse2e

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	ecstypes "github.com/aws/aws-sdk-go-v2/service/ecs/types"

	"github.com/aishell/aishell/shared/ecsrunner"
	"github.com/aishell/aishell/shared/localtask"
	"github.com/aishell/aishell/shared/session"
)

// taskFleet plays ECS tasks with local bridge processes. A task that ECS
// (moto) accepted is started as a bridge process with the environment its
// container override carries, read back from moto, so the bridge gets
// exactly what the ECS runner told ECS. Each component of the product has
// its own fleetRunner over the one fleet: its ECS calls are its own, and
// recorded under its name, while all of them see the same tasks.
type taskFleet struct {
	cfg   ecsrunner.Config
	local *localtask.Runner
	// ecs reads what moto recorded of a task; its calls are the test's.
	ecs *ecs.Client

	mu    sync.Mutex        // guards byARN
	byARN map[string]string // task ARN to task id, the local runner's handle
}

// newFleet returns a fleet playing the tasks of cfg, and stops every one of
// its bridges when the test ends.
func newFleet(t *testing.T, cfg ecsrunner.Config, logs io.Writer) *taskFleet {
	t.Helper()
	local, err := localtask.New(localtask.Config{
		BridgePath:    bridgeBin,
		WorkspaceRoot: cfg.WorkspaceRoot,
		AgentCommand:  cfg.AgentCommand,
		AgentMode:     cfg.AgentMode,
		// The ECS runner says WARM=0 outright for a session's task; the
		// local runner says only WARM=1, which comes later and wins.
		Env:       []string{ecsrunner.EnvWarm + "=0"},
		StopGrace: 3 * time.Second,
		LogSink:   logs,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if err := local.StopAll(ctx); err != nil {
			t.Errorf("stop every bridge: %v", err)
		}
	})
	return &taskFleet{cfg: cfg, local: local, ecs: ecs.NewFromConfig(base),
		byARN: map[string]string{}}
}

// runner returns the task runner of a component whose AWS calls go
// through awsCfg.
func (f *taskFleet) runner(awsCfg aws.Config) *fleetRunner {
	return &fleetRunner{fleet: f, ecs: ecsrunner.New(ecs.NewFromConfig(awsCfg), nil, f.cfg)}
}

func (f *taskFleet) taskID(arn string) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	id, ok := f.byARN[arn]
	return id, ok
}

// task returns a task as moto describes it.
func (f *taskFleet) task(ctx context.Context, arn string) (ecstypes.Task, error) {
	out, err := f.ecs.DescribeTasks(ctx, &ecs.DescribeTasksInput{
		Cluster: aws.String(f.cfg.Cluster), Tasks: []string{arn},
	})
	if err != nil {
		return ecstypes.Task{}, fmt.Errorf("describe task %s: %w", arn, err)
	}
	if len(out.Tasks) != 1 {
		return ecstypes.Task{}, fmt.Errorf("describe task %s: %d tasks; want 1", arn, len(out.Tasks))
	}
	return out.Tasks[0], nil
}

// contractVars are the variables of the bridge's start-up contract that
// the local runner can hand a bridge.
var contractVars = []string{
	ecsrunner.EnvRelayURL, ecsrunner.EnvTaskID, ecsrunner.EnvCredential, ecsrunner.EnvWarm,
	ecsrunner.EnvSessionID, ecsrunner.EnvUserID, ecsrunner.EnvUserUID,
	ecsrunner.EnvWorkspaceRoot, ecsrunner.EnvAgentCommand, ecsrunner.EnvAgentMode,
}

// playedSpec turns the environment of a task's container override back
// into the spec the local runner starts a bridge from, and refuses an
// environment the bridge would not get whole.
func (f *taskFleet) playedSpec(env map[string]string) (session.TaskSpec, error) {
	for name := range env {
		if !slices.Contains(contractVars, name) {
			return session.TaskSpec{}, fmt.Errorf(
				"the override sets %s, which a local bridge would not get", name)
		}
	}
	// These are the local runner's own settings; they must be what ECS was told.
	for name, local := range map[string]string{
		ecsrunner.EnvWorkspaceRoot: f.cfg.WorkspaceRoot,
		ecsrunner.EnvAgentCommand:  f.cfg.AgentCommand,
		ecsrunner.EnvAgentMode:     f.cfg.AgentMode,
	} {
		if env[name] != local {
			return session.TaskSpec{}, fmt.Errorf("the override sets %s=%q; the local bridge gets %q",
				name, env[name], local)
		}
	}
	spec := session.TaskSpec{
		TaskID:     env[ecsrunner.EnvTaskID],
		SessionID:  env[ecsrunner.EnvSessionID],
		UserID:     env[ecsrunner.EnvUserID],
		RelayURL:   env[ecsrunner.EnvRelayURL],
		Credential: env[ecsrunner.EnvCredential],
	}
	switch env[ecsrunner.EnvWarm] {
	case "1":
		spec.Warm = true
	case "0":
	default:
		return session.TaskSpec{}, fmt.Errorf("the override sets WARM=%q; want 1 or 0",
			env[ecsrunner.EnvWarm])
	}
	if v := env[ecsrunner.EnvUserUID]; v != "" {
		uid, err := strconv.Atoi(v)
		if err != nil {
			return session.TaskSpec{}, fmt.Errorf("the override sets USER_UID=%q: %w", v, err)
		}
		spec.UID = uid
	}
	return spec, nil
}

// wait waits until the bridge playing a task has exited, at most limit.
func (f *taskFleet) wait(t *testing.T, arn string, limit time.Duration) session.TaskStatus {
	t.Helper()
	id, ok := f.taskID(arn)
	if !ok {
		t.Fatalf("task %s was never played by a bridge", arn)
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	st, err := f.local.Wait(ctx, id)
	if err != nil {
		t.Fatalf("bridge of task %s still running: %v", arn, err)
	}
	return st
}

// fleetRunner is one component's session.TaskRunner: the real ECS runner,
// whose calls go to moto, with the fleet's bridges as the tasks' containers.
// Like the ECS runner it offers no session.StopWaiter: ECS tells nobody of
// a task's end, so the product's time-outs and polls stand.
type fleetRunner struct {
	fleet *taskFleet
	ecs   *ecsrunner.Runner
}

// Run starts the task through ECS, then its bridge with the environment of
// the task's container override.
func (r *fleetRunner) Run(ctx context.Context, spec session.TaskSpec) (string, error) {
	arn, err := r.ecs.Run(ctx, spec)
	if err != nil {
		return "", err
	}
	task, err := r.fleet.task(ctx, arn)
	if err != nil {
		return "", fmt.Errorf("play task %s: %w", arn, err)
	}
	env := map[string]string{}
	if task.Overrides != nil {
		for _, o := range task.Overrides.ContainerOverrides {
			if aws.ToString(o.Name) != r.fleet.cfg.ContainerName {
				continue
			}
			for _, kv := range o.Environment {
				env[aws.ToString(kv.Name)] = aws.ToString(kv.Value)
			}
		}
	}
	played, err := r.fleet.playedSpec(env)
	if err != nil {
		return "", fmt.Errorf("play task %s: %w", arn, err)
	}

	// Known before the bridge runs, so that a describe however early
	// finds the bridge.
	r.fleet.mu.Lock()
	r.fleet.byARN[arn] = played.TaskID
	r.fleet.mu.Unlock()
	if _, err := r.fleet.local.Run(ctx, played); err != nil {
		return "", fmt.Errorf("play task %s: %w", arn, err)
	}
	return arn, nil
}

// Stop stops the task through ECS and, once ECS took the stop, its bridge
// (SIGTERM, SIGKILL after the grace period, as ECS does).
func (r *fleetRunner) Stop(ctx context.Context, handle, reason string) error {
	if err := r.ecs.Stop(ctx, handle, reason); err != nil {
		return err
	}
	if id, ok := r.fleet.taskID(handle); ok {
		return r.fleet.local.Stop(ctx, id, reason)
	}
	return nil
}

// Describe asks ECS, and mends moto's answer with what the bridge process
// says.
func (r *fleetRunner) Describe(ctx context.Context, handle string) (session.TaskStatus, error) {
	st, err := r.ecs.Describe(ctx, handle)
	if err != nil {
		return st, err
	}
	id, ok := r.fleet.taskID(handle)
	if !ok {
		return st, nil
	}
	local, err := r.fleet.local.Describe(ctx, id)
	if err != nil {
		return st, fmt.Errorf("describe the bridge of task %s: %w", handle, err)
	}

	// moto gap: its tasks carry no createdAt, startedAt or stoppedAt; the
	// bridge process's times stand in.
	st.CreatedAt, st.StartedAt = local.CreatedAt, local.StartedAt
	switch {
	case local.State == session.TaskStopped:
		// moto gap: under manual transitions (awstest.ManualECSTasks) a
		// task whose container exited stays RUNNING; ECS would stop it and
		// say why.
		if st.StopReason == "" {
			st.StopReason = "Essential container in task exited: " + local.StopReason
		}
		st.State, st.StoppedAt = session.TaskStopped, local.StoppedAt
	case st.State == session.TaskStopped:
		// moto gap: StopTask makes a task STOPPED at once; ECS reports it
		// on its way down until its container has exited.
		st.State = session.TaskStopping
	}
	return st, nil
}

var _ session.TaskRunner = (*fleetRunner)(nil)
