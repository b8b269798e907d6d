package ecsrunner

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/aishell/aishell/shared/awsops"
	"github.com/aishell/aishell/shared/session"
)

func TestRunStartsTheFixedTaskDefinitionWithOverrides(t *testing.T) {
	f := newFixture(t)
	r := f.runner(f.config(), &wire{})
	base := map[string]string{
		EnvRelayURL: "wss://relay.example/", EnvWorkspaceRoot: "/workspaces",
		EnvAgentCommand: "claude --verbose", EnvAgentMode: "pty",
	}
	with := func(m map[string]string) map[string]string {
		out := maps.Clone(base)
		maps.Copy(out, m)
		return out
	}

	tests := []struct {
		name          string
		spec          session.TaskSpec
		wantEnv       map[string]string
		wantTags      map[string]string
		wantStartedBy string
	}{
		{
			name: "warm task",
			spec: session.TaskSpec{TaskID: "t_warm1", Warm: true, RelayURL: "wss://relay.example/",
				Credential: "cred-w"},
			wantEnv: with(map[string]string{EnvTaskID: "t_warm1", EnvCredential: "cred-w", EnvWarm: "1"}),
			wantTags: map[string]string{
				TagTask: "t_warm1", TagEnv: "stage",
			},
			wantStartedBy: StartedByWarm,
		},
		{
			name: "session task",
			spec: session.TaskSpec{TaskID: "t_cold1", SessionID: "s_abc", UserID: "alice", UID: 100001,
				RelayURL: "wss://relay.example/", Credential: "cred-c"},
			wantEnv: with(map[string]string{
				EnvTaskID: "t_cold1", EnvCredential: "cred-c", EnvWarm: "0",
				EnvSessionID: "s_abc", EnvUserID: "alice", EnvUserUID: "100001",
			}),
			wantTags: map[string]string{
				TagTask: "t_cold1", TagEnv: "stage", TagSession: "s_abc", TagUser: "alice",
			},
			wantStartedBy: "s_abc",
		},
		{
			name: "session task of a user whose id no tag may hold",
			spec: session.TaskSpec{TaskID: "t_cold2", SessionID: "s_def", UserID: "Bob#1", UID: 100002,
				RelayURL: "wss://relay.example/", Credential: "cred-d"},
			wantEnv: with(map[string]string{
				EnvTaskID: "t_cold2", EnvCredential: "cred-d", EnvWarm: "0",
				EnvSessionID: "s_def", EnvUserID: "Bob#1", EnvUserUID: "100002",
			}),
			wantTags: map[string]string{
				TagTask: "t_cold2", TagEnv: "stage", TagSession: "s_def",
				TagUser: "sha256:" + hashHex("Bob#1"),
			},
			wantStartedBy: "s_def",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			handle, err := r.Run(context.Background(), tc.spec)
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if !strings.Contains(handle, ":task/"+f.cluster+"/") {
				t.Errorf("handle: got %q; want a task ARN of cluster %s", handle, f.cluster)
			}

			task := f.task(t, handle)
			if got := aws.ToString(task.StartedBy); got != tc.wantStartedBy {
				t.Errorf("startedBy: got %q; want %q", got, tc.wantStartedBy)
			}
			if got := string(task.LaunchType); got != "FARGATE" {
				t.Errorf("launch type: got %q; want FARGATE", got)
			}
			if got := aws.ToString(task.TaskDefinitionArn); !strings.HasSuffix(got, "/"+f.family+":1") {
				t.Errorf("task definition: got %s; want the fixed one, %s:1", got, f.family)
			}
			if task.Overrides == nil || len(task.Overrides.ContainerOverrides) != 1 {
				t.Fatalf("overrides: got %+v; want one container's", task.Overrides)
			}
			o := task.Overrides.ContainerOverrides[0]
			if got := aws.ToString(o.Name); got != "agent" {
				t.Errorf("overridden container: got %q; want agent", got)
			}
			env := map[string]string{}
			for _, kv := range o.Environment {
				env[aws.ToString(kv.Name)] = aws.ToString(kv.Value)
			}
			if !maps.Equal(env, tc.wantEnv) {
				t.Errorf("environment:\ngot  %v\nwant %v", env, tc.wantEnv)
			}
			tags := map[string]string{}
			for _, tg := range task.Tags {
				tags[aws.ToString(tg.Key)] = aws.ToString(tg.Value)
			}
			if !maps.Equal(tags, tc.wantTags) {
				t.Errorf("tags:\ngot  %v\nwant %v", tags, tc.wantTags)
			}
			subnet := ""
			for _, a := range task.Attachments {
				for _, d := range a.Details {
					if aws.ToString(d.Name) == "subnetId" {
						subnet = aws.ToString(d.Value)
					}
				}
			}
			if subnet != f.subnet {
				t.Errorf("network: got subnet %q; want %q", subnet, f.subnet)
			}
		})
	}
}

func TestRunRefusesASpecWithoutTaskID(t *testing.T) {
	r := newRunner(&fakeECS{}, nil, Config{})
	_, err := r.Run(context.Background(), session.TaskSpec{SessionID: "s_1"})
	if got := session.ErrorCode(err); got != CodeInvalidSpec {
		t.Errorf("got %v (code %q); want code %s", err, got, CodeInvalidSpec)
	}
}

var errNotFaked = errors.New("not faked")

func TestDescribeFollowsTheTaskToStopped(t *testing.T) {
	f := newFixture(t)
	r := f.runner(f.config(), &wire{})
	ctx := context.Background()
	handle, err := r.Run(ctx, session.TaskSpec{TaskID: "t_1", Warm: true})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	// Two describes per step: RUNNING, then DEACTIVATING, STOPPING,
	// DEPROVISIONING and STOPPED.
	setTaskProgression(t, 2)

	var seen []session.TaskState
	for i := 0; i < 20; i++ {
		st, err := r.Describe(ctx, handle)
		if err != nil {
			t.Fatalf("Describe: %v", err)
		}
		if len(seen) == 0 || seen[len(seen)-1] != st.State {
			seen = append(seen, st.State)
		}
		if st.State == session.TaskStopped {
			break
		}
	}
	want := []session.TaskState{session.TaskRunning, session.TaskStopping, session.TaskStopped}
	if !slices.Equal(seen, want) {
		t.Errorf("states: got %v; want %v", seen, want)
	}
}

func TestStop(t *testing.T) {
	f := newFixture(t)
	w := &wire{}
	r := f.runner(f.config(), w)
	ctx := context.Background()
	handle, err := r.Run(ctx, session.TaskSpec{TaskID: "t_1", SessionID: "s_1", UserID: "alice", UID: 1001})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if st, err := r.Describe(ctx, handle); err != nil || st.State != session.TaskRunning {
		t.Fatalf("before Stop: got %+v, %v; want RUNNING", st, err)
	}

	long := "session ended by its user " + strings.Repeat("é", 200)
	if err := r.Stop(ctx, handle, long); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	st, err := r.Describe(ctx, handle)
	if err != nil {
		t.Fatalf("Describe: %v", err)
	}
	if want := truncate(long, maxStopReason); st.State != session.TaskStopped || st.StopReason != want {
		t.Errorf("after Stop: got %s %q; want STOPPED %q", st.State, st.StopReason, want)
	}
	if n := len(st.StopReason); n > maxStopReason || !utf8.ValidString(st.StopReason) {
		t.Errorf("stop reason: got %d bytes, valid UTF-8 %v; want at most %d, valid",
			n, utf8.ValidString(st.StopReason), maxStopReason)
	}

	if err := r.Stop(ctx, handle, "again"); err != nil {
		t.Errorf("Stop of a stopped task: got %v; want nil", err)
	}

	// ECS's answer for a task it does not know (moto gap: moto fails with
	// HTTP 500 instead).
	w.answerWith("StopTask", awsError(400, "InvalidParameterException",
		"The referenced task was not found."))
	unknown := "arn:aws:ecs:us-east-1:123456789012:task/" + f.cluster + "/0123456789abcdef"
	if err := r.Stop(ctx, unknown, "never ran"); err != nil {
		t.Errorf("Stop of an unknown task: got %v; want nil", err)
	}

	w.answerWith("StopTask", awsError(400, "AccessDeniedException", "not authorized to stop"))
	err = r.Stop(ctx, handle, "denied")
	got := session.ErrorCode(err)
	if got != "AccessDeniedException" || !strings.Contains(err.Error(), "stop task "+handle) {
		t.Errorf("Stop denied: got %v (code %q); want AccessDeniedException, naming the step", err, got)
	}
}

func TestDescribeOfAnUnknownTask(t *testing.T) {
	f := newFixture(t)
	w := &wire{}
	r := f.runner(f.config(), w)
	ctx := context.Background()
	unknown := "arn:aws:ecs:us-east-1:123456789012:task/" + f.cluster + "/0123456789abcdef"
	missing := `{"tasks":[],"failures":[{"arn":"` + unknown + `","reason":"MISSING"}]}`

	tests := []struct {
		name   string
		answer *answer
	}{
		// Moto's answer: neither a task nor a failure (moto gap).
		{"no task and no failure", nil},
		// AWS's answer.
		{"failure MISSING", &answer{status: 200, body: missing}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.answer != nil {
				w.answerWith("DescribeTasks", *tc.answer)
			}
			st, err := r.Describe(ctx, unknown)
			want := session.TaskStatus{State: session.TaskStopped, StopReason: "task " + unknown + " not found"}
			if err != nil || st != want {
				t.Errorf("got %+v, %v; want %+v", st, err, want)
			}
		})
	}

	w.answerWith("DescribeTasks", answer{status: 200,
		body: `{"tasks":[],"failures":[{"arn":"` + unknown + `","reason":"ACCESS_DENIED"}]}`})
	if _, err := r.Describe(ctx, unknown); session.ErrorCode(err) != "ACCESS_DENIED" {
		t.Errorf("failure other than MISSING: got %v; want an error coded ACCESS_DENIED", err)
	}
	w.answerWith("DescribeTasks", awsError(400, "AccessDeniedException",
		"not authorized to perform: ecs:DescribeTasks"))
	if _, err := r.Describe(ctx, unknown); session.ErrorCode(err) != "AccessDeniedException" {
		t.Errorf("denied: got %v; want an error coded AccessDeniedException", err)
	}
}

// RunTask answers that moto never gives, in the shape AWS gives them.
func TestRunErrorsKeepTheirCode(t *testing.T) {
	f := newFixture(t)
	w := &wire{}
	r := f.runner(f.config(), w)
	ctx := context.Background()
	failure := func(reason string) answer {
		return answer{status: 200, body: `{"tasks":[],"failures":[{"arn":"arn:aws:ecs:us-east-1:123456789012:` +
			`container-instance/c/1","reason":"` + reason + `","detail":"none fits"}]}`}
	}
	throttled := awsError(400, "ThrottlingException", "Rate exceeded")

	tests := []struct {
		name         string
		answers      []answer
		wantCode     string
		wantCapacity bool
		wantCalls    int
	}{
		{"no memory", []answer{failure("RESOURCE:MEMORY")}, "RESOURCE:MEMORY", true, 1},
		{"no agent", []answer{failure("AGENT")}, "AGENT", false, 1},
		{"no reason", []answer{failure("")}, "RunTaskFailure", false, 1},
		{"neither task nor failure", []answer{{status: 200, body: `{"tasks":[],"failures":[]}`}},
			CodeNoTask, false, 1},
		{"access denied", []answer{awsError(400, "AccessDeniedException",
			"not authorized to perform: ecs:RunTask")}, "AccessDeniedException", false, 1},
		{"bad parameter", []answer{awsError(400, "InvalidParameterException",
			"No Container Instances were found in your cluster.")}, "InvalidParameterException", false, 1},
		{"throttled to the end", []answer{throttled, throttled, throttled, throttled},
			"ThrottlingException", true, throttleAttempts},
		{"throttled twice, then started", []answer{throttled, throttled}, "", false, 3},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w.reset()
			w.answerWith("RunTask", tc.answers...)
			handle, err := r.Run(ctx, session.TaskSpec{TaskID: fmt.Sprintf("t_%d", i),
				SessionID: "s_1", UserID: "alice", UID: 1001})
			if got := session.ErrorCode(err); got != tc.wantCode {
				t.Errorf("got %q, %v (code %q); want code %q", handle, err, got, tc.wantCode)
			}
			if err != nil && !strings.Contains(err.Error(), fmt.Sprintf("run task t_%d for session s_1", i)) {
				t.Errorf("error %q does not name the step", err)
			}
			if err == nil && handle == "" {
				t.Errorf("no error and no handle")
			}
			if got := session.IsCapacity(err); got != tc.wantCapacity {
				t.Errorf("IsCapacity: got %v; want %v", got, tc.wantCapacity)
			}
			// The SDK adds no attempts of its own to a throttled call.
			if got := w.count("RunTask"); got != tc.wantCalls {
				t.Errorf("RunTask requests: got %d; want %d", got, tc.wantCalls)
			}
		})
	}
}

func TestListTasks(t *testing.T) {
	f := newFixture(t)
	r := f.runnerOf(awsops.RefillLambda, f.config(), &wire{})
	ctx := context.Background()
	run := func(spec session.TaskSpec) string {
		h, err := r.Run(ctx, spec)
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		return h
	}
	warm1 := run(session.TaskSpec{TaskID: "t_w1", Warm: true})
	warm2 := run(session.TaskSpec{TaskID: "t_w2", Warm: true})
	cold := run(session.TaskSpec{TaskID: "t_c1", SessionID: "s_1", UserID: "alice", UID: 1001})

	tests := []struct {
		startedBy string
		want      []string
	}{
		{StartedByWarm, []string{warm1, warm2}},
		{"s_1", []string{cold}},
		{"s_gone", nil},
		{"", []string{warm1, warm2, cold}},
	}
	for _, tc := range tests {
		got, err := r.ListTasks(ctx, tc.startedBy)
		if err != nil {
			t.Fatalf("ListTasks(%q): %v", tc.startedBy, err)
		}
		slices.Sort(got)
		slices.Sort(tc.want)
		if !slices.Equal(got, tc.want) {
			t.Errorf("ListTasks(%q): got %v; want %v", tc.startedBy, got, tc.want)
		}
	}
}
