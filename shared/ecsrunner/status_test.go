package ecsrunner

import (
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs/types"

	"github.com/aishell/aishell/shared/session"
)

func TestTaskState(t *testing.T) {
	tests := []struct {
		last, desired string
		want          session.TaskState
	}{
		{"PROVISIONING", "RUNNING", session.TaskPending},
		{"PENDING", "RUNNING", session.TaskPending},
		{"ACTIVATING", "RUNNING", session.TaskPending},
		{"RUNNING", "RUNNING", session.TaskRunning},
		{"RUNNING", "STOPPED", session.TaskStopping},
		{"PENDING", "STOPPED", session.TaskStopping},
		{"DEACTIVATING", "STOPPED", session.TaskStopping},
		{"STOPPING", "STOPPED", session.TaskStopping},
		{"DEPROVISIONING", "STOPPED", session.TaskStopping},
		// moto moves tasks down without changing desiredStatus.
		{"DEACTIVATING", "RUNNING", session.TaskStopping},
		{"STOPPED", "STOPPED", session.TaskStopped},
		{"STOPPED", "RUNNING", session.TaskStopped},
		{"SOMETHING_NEW", "RUNNING", session.TaskPending},
	}
	for _, tc := range tests {
		if got := taskState(tc.last, tc.desired); got != tc.want {
			t.Errorf("taskState(%s, %s): got %s; want %s", tc.last, tc.desired, got, tc.want)
		}
	}
}

func TestTaskStatus(t *testing.T) {
	created := time.Date(2026, 2, 8, 12, 0, 0, 0, time.UTC)
	started, stopped := created.Add(3*time.Second), created.Add(time.Minute)
	agent := func(status string, exit *int32, reason string) types.Container {
		c := types.Container{Name: aws.String("agent"), LastStatus: aws.String(status), ExitCode: exit}
		if reason != "" {
			c.Reason = aws.String(reason)
		}
		return c
	}
	sidecar := types.Container{Name: aws.String("xray"), LastStatus: aws.String("STOPPED"),
		ExitCode: aws.Int32(1)}

	tests := []struct {
		name string
		task types.Task
		want session.TaskStatus
	}{
		{
			name: "running",
			task: types.Task{LastStatus: aws.String("RUNNING"), DesiredStatus: aws.String("RUNNING"),
				CreatedAt: &created, StartedAt: &started,
				Containers: []types.Container{agent("RUNNING", nil, "")}},
			want: session.TaskStatus{State: session.TaskRunning, CreatedAt: created, StartedAt: started},
		},
		{
			name: "agent exited",
			task: types.Task{LastStatus: aws.String("STOPPED"), DesiredStatus: aws.String("STOPPED"),
				StoppedReason: aws.String("Essential container in task exited"),
				CreatedAt:     &created, StartedAt: &started, StoppedAt: &stopped,
				Containers: []types.Container{sidecar, agent("STOPPED", aws.Int32(127),
					"exec: claude: not found")}},
			want: session.TaskStatus{State: session.TaskStopped,
				StopReason: "Essential container in task exited: agent exited 127: exec: claude: not found",
				CreatedAt:  created, StartedAt: started, StoppedAt: stopped},
		},
		{
			name: "stopped by the runner, agent ended by the signal",
			task: types.Task{LastStatus: aws.String("STOPPED"), DesiredStatus: aws.String("STOPPED"),
				StoppedReason: aws.String("idle for 10m"), StopCode: types.TaskStopCodeUserInitiated,
				Containers: []types.Container{agent("STOPPED", aws.Int32(143), "")}},
			want: session.TaskStatus{State: session.TaskStopped, StopReason: "idle for 10m: agent exited 143"},
		},
		{
			name: "image not pulled: no exit code, a reason",
			task: types.Task{LastStatus: aws.String("STOPPED"), DesiredStatus: aws.String("STOPPED"),
				StopCode: types.TaskStopCodeTaskFailedToStart,
				Containers: []types.Container{agent("STOPPED", nil,
					"CannotPullContainerError: pull access denied")}},
			want: session.TaskStatus{State: session.TaskStopped,
				StopReason: "TaskFailedToStart: agent: CannotPullContainerError: pull access denied"},
		},
		{
			name: "stopping, agent still up: its exit code not yet known",
			task: types.Task{LastStatus: aws.String("RUNNING"), DesiredStatus: aws.String("STOPPED"),
				StoppedReason: aws.String("replaced by a new task"),
				Containers:    []types.Container{agent("RUNNING", aws.Int32(0), "")}},
			want: session.TaskStatus{State: session.TaskStopping, StopReason: "replaced by a new task"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := taskStatus(tc.task, "agent"); got != tc.want {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}
