package ecsrunner

import (
	"context"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	"github.com/aws/aws-sdk-go-v2/service/ecs/types"
	"github.com/aws/aws-sdk-go-v2/service/efs"
)

// fakeECS answers in memory, for what needs fake time (the rate limit, the
// back-off and the start timings run under testing/synctest, which real
// sockets would keep from advancing). Calls it has no answer for fail.
type fakeECS struct {
	// runTask answers the n-th RunTask (from 1); nil starts a task.
	runTask func(n int, in *ecs.RunTaskInput) (*ecs.RunTaskOutput, error)
	// describeTaskDefinition and registerTaskDefinition answer those
	// calls when set.
	describeTaskDefinition func(*ecs.DescribeTaskDefinitionInput) (*ecs.DescribeTaskDefinitionOutput, error)
	registerTaskDefinition func(*ecs.RegisterTaskDefinitionInput) (*ecs.RegisterTaskDefinitionOutput, error)

	mu    sync.Mutex // guards calls
	calls []time.Time
}

func (f *fakeECS) RunTask(ctx context.Context, in *ecs.RunTaskInput, _ ...func(*ecs.Options)) (
	*ecs.RunTaskOutput, error) {
	f.mu.Lock()
	f.calls = append(f.calls, time.Now())
	n := len(f.calls)
	f.mu.Unlock()
	if f.runTask != nil {
		return f.runTask(n, in)
	}
	return started(aws.ToString(in.ClientToken)), nil
}

// runs returns the times RunTask was called.
func (f *fakeECS) runs() []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Time(nil), f.calls...)
}

// started is RunTask's answer for one started task.
func started(id string) *ecs.RunTaskOutput {
	return &ecs.RunTaskOutput{Tasks: []types.Task{{
		TaskArn: aws.String("arn:aws:ecs:us-east-1:123456789012:task/c/" + id),
	}}}
}

func (f *fakeECS) StopTask(context.Context, *ecs.StopTaskInput, ...func(*ecs.Options)) (
	*ecs.StopTaskOutput, error) {
	return nil, errNotFaked
}

func (f *fakeECS) DescribeTasks(context.Context, *ecs.DescribeTasksInput, ...func(*ecs.Options)) (
	*ecs.DescribeTasksOutput, error) {
	return nil, errNotFaked
}

func (f *fakeECS) ListTasks(context.Context, *ecs.ListTasksInput, ...func(*ecs.Options)) (
	*ecs.ListTasksOutput, error) {
	return nil, errNotFaked
}

func (f *fakeECS) DescribeTaskDefinition(_ context.Context, in *ecs.DescribeTaskDefinitionInput,
	_ ...func(*ecs.Options)) (*ecs.DescribeTaskDefinitionOutput, error) {
	if f.describeTaskDefinition == nil {
		return nil, errNotFaked
	}
	return f.describeTaskDefinition(in)
}

func (f *fakeECS) RegisterTaskDefinition(_ context.Context, in *ecs.RegisterTaskDefinitionInput,
	_ ...func(*ecs.Options)) (*ecs.RegisterTaskDefinitionOutput, error) {
	if f.registerTaskDefinition == nil {
		return nil, errNotFaked
	}
	return f.registerTaskDefinition(in)
}

// fakeEFS answers the access point calls in memory.
type fakeEFS struct {
	describe func(*efs.DescribeAccessPointsInput) (*efs.DescribeAccessPointsOutput, error)
	create   func(*efs.CreateAccessPointInput) (*efs.CreateAccessPointOutput, error)
}

func (f *fakeEFS) DescribeAccessPoints(_ context.Context, in *efs.DescribeAccessPointsInput,
	_ ...func(*efs.Options)) (*efs.DescribeAccessPointsOutput, error) {
	return f.describe(in)
}

func (f *fakeEFS) CreateAccessPoint(_ context.Context, in *efs.CreateAccessPointInput,
	_ ...func(*efs.Options)) (*efs.CreateAccessPointOutput, error) {
	return f.create(in)
}
