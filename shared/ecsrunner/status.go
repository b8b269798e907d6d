package ecsrunner

import (
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs/types"

	"github.com/aishell/aishell/shared/session"
)

// taskState maps ECS's lastStatus and desiredStatus onto the states of the
// session rules. A task told to stop counts as stopping whatever its last
// status, so a start waiting for the old task (R4) waits for it.
func taskState(lastStatus, desiredStatus string) session.TaskState {
	switch lastStatus {
	case "STOPPED":
		return session.TaskStopped
	case "DEACTIVATING", "STOPPING", "DEPROVISIONING":
		return session.TaskStopping
	}
	if desiredStatus == "STOPPED" {
		return session.TaskStopping
	}
	if lastStatus == "RUNNING" {
		return session.TaskRunning
	}
	// PROVISIONING, PENDING, ACTIVATING, and any status ECS adds later on
	// the way up.
	return session.TaskPending
}

// taskStatus is what Describe says of an ECS task; container names the
// agent's container, whose exit tells why the task stopped.
func taskStatus(t types.Task, container string) session.TaskStatus {
	st := session.TaskStatus{
		State:      taskState(aws.ToString(t.LastStatus), aws.ToString(t.DesiredStatus)),
		StopReason: stopReason(t, container),
	}
	if t.CreatedAt != nil {
		st.CreatedAt = *t.CreatedAt
	}
	if t.StartedAt != nil {
		st.StartedAt = *t.StartedAt
	}
	if t.StoppedAt != nil {
		st.StoppedAt = *t.StoppedAt
	}
	return st
}

// stopReason joins the task's stopped reason (or stop code) with how the
// agent's container ended, once it has: "Essential container in task
// exited: agent exited 127: ...".
func stopReason(t types.Task, container string) string {
	var parts []string
	if r := aws.ToString(t.StoppedReason); r != "" {
		parts = append(parts, r)
	} else if t.StopCode != "" {
		parts = append(parts, string(t.StopCode))
	}
	for _, c := range t.Containers {
		if aws.ToString(c.Name) != container || aws.ToString(c.LastStatus) != "STOPPED" {
			continue
		}
		if c.ExitCode != nil {
			parts = append(parts, fmt.Sprintf("%s exited %d", container, *c.ExitCode))
		}
		if r := aws.ToString(c.Reason); r != "" {
			if c.ExitCode == nil {
				r = container + ": " + r
			}
			parts = append(parts, r)
		}
	}
	return strings.Join(parts, ": ")
}

// notFound is the status of a task ECS does not know (any more).
func notFound(handle string) session.TaskStatus {
	return session.TaskStatus{State: session.TaskStopped,
		StopReason: fmt.Sprintf("task %s not found", handle)}
}
