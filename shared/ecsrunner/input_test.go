package ecsrunner

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	"github.com/aws/aws-sdk-go-v2/service/ecs/types"
	"github.com/aws/aws-sdk-go-v2/service/efs"
	efstypes "github.com/aws/aws-sdk-go-v2/service/efs/types"

	"github.com/aishell/aishell/shared/session"
)

func TestRunTaskInputPlacement(t *testing.T) {
	tests := []struct {
		name         string
		cfg          Config
		wantStrategy []types.CapacityProviderStrategyItem
		wantLaunch   types.LaunchType
		wantPublicIP types.AssignPublicIp
	}{
		{name: "capacity provider", cfg: Config{CapacityProvider: "aishell-ec2"},
			wantStrategy: []types.CapacityProviderStrategyItem{{
				CapacityProvider: aws.String("aishell-ec2"), Weight: 1}},
			wantPublicIP: types.AssignPublicIpDisabled},
		{name: "launch type", cfg: Config{LaunchType: "FARGATE", AssignPublicIP: true},
			wantLaunch: types.LaunchTypeFargate, wantPublicIP: types.AssignPublicIpEnabled},
		{name: "the cluster's default strategy", cfg: Config{},
			wantPublicIP: types.AssignPublicIpDisabled},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRunner(&fakeECS{}, nil, tc.cfg)
			in := r.runTaskInput(session.TaskSpec{TaskID: "t_1", Warm: true}, "agent:3")
			if !reflect.DeepEqual(in.CapacityProviderStrategy, tc.wantStrategy) {
				t.Errorf("strategy: got %+v; want %+v", in.CapacityProviderStrategy, tc.wantStrategy)
			}
			if in.LaunchType != tc.wantLaunch {
				t.Errorf("launch type: got %q; want %q", in.LaunchType, tc.wantLaunch)
			}
			if got := in.NetworkConfiguration.AwsvpcConfiguration.AssignPublicIp; got != tc.wantPublicIP {
				t.Errorf("public IP: got %q; want %q", got, tc.wantPublicIP)
			}
			if got := aws.ToString(in.ClientToken); got != "t_1" {
				t.Errorf("client token: got %q; want the task id", got)
			}
			if got := aws.ToString(in.TaskDefinition); got != "agent:3" {
				t.Errorf("task definition: got %q; want agent:3", got)
			}
		})
	}

	long := session.TaskSpec{TaskID: "t_2", SessionID: strings.Repeat("s", 40), UserID: "u"}
	in := newRunner(&fakeECS{}, nil, Config{}).runTaskInput(long, "agent")
	if got := aws.ToString(in.StartedBy); got != strings.Repeat("s", 36) {
		t.Errorf("startedBy of a long session id: got %q; want its first 36 characters", got)
	}
}

func TestUserDefinitionInput(t *testing.T) {
	base := types.TaskDefinition{
		TaskDefinitionArn: aws.String("arn:aws:ecs:us-east-1:1:task-definition/agent:7"),
		Family:            aws.String("agent"),
		TaskRoleArn:       aws.String("arn:task"), ExecutionRoleArn: aws.String("arn:exec"),
		NetworkMode: types.NetworkModeAwsvpc, Cpu: aws.String("1024"), Memory: aws.String("2048"),
		RequiresCompatibilities: []types.Compatibility{types.CompatibilityEc2},
		ContainerDefinitions: []types.ContainerDefinition{
			{Name: aws.String("agent"), MountPoints: []types.MountPoint{
				{SourceVolume: aws.String("workspaces"), ContainerPath: aws.String("/workspaces")},
				{SourceVolume: aws.String("tmp"), ContainerPath: aws.String("/tmp")},
			}},
			{Name: aws.String("xray")},
		},
		Volumes: []types.Volume{
			{Name: aws.String("workspaces"), EfsVolumeConfiguration: &types.EFSVolumeConfiguration{
				FileSystemId: aws.String("fs-1"), RootDirectory: aws.String("/"),
				TransitEncryption: types.EFSTransitEncryptionEnabled,
				AuthorizationConfig: &types.EFSAuthorizationConfig{AccessPointId: aws.String("fsap-shared"),
					Iam: types.EFSAuthorizationConfigIAMEnabled},
			}},
			{Name: aws.String("tmp")},
		},
	}
	baseTags := []types.Tag{
		{Key: aws.String("team"), Value: aws.String("shell")},
		{Key: aws.String("aws:cloudformation:stack-name"), Value: aws.String("stage")},
		{Key: aws.String(TagEnv), Value: aws.String("old")},
	}
	opts := userDefinitionOptions{family: "agent-u-1", accessPoint: "fsap-alice", fileSystem: "fs-1",
		folder: "alice", taskRole: "arn:user-task",
		tags: []types.Tag{tag(TagUser, "alice"), tag(TagEnv, "stage")}}

	in, err := userDefinitionInput(base, baseTags, opts)
	if err != nil {
		t.Fatalf("got %v", err)
	}
	wantVolume := types.EFSVolumeConfiguration{
		FileSystemId: aws.String("fs-1"), TransitEncryption: types.EFSTransitEncryptionEnabled,
		AuthorizationConfig: &types.EFSAuthorizationConfig{AccessPointId: aws.String("fsap-alice"),
			Iam: types.EFSAuthorizationConfigIAMEnabled},
	}
	if got := *in.Volumes[0].EfsVolumeConfiguration; !reflect.DeepEqual(got, wantVolume) {
		t.Errorf("volume: got %+v; want %+v", got, wantVolume)
	}
	if in.Volumes[1].EfsVolumeConfiguration != nil {
		t.Errorf("other volume: got %+v; want it as it was", in.Volumes[1])
	}
	checks := []struct{ what, got, want string }{
		{"family", aws.ToString(in.Family), "agent-u-1"},
		{"mount of the EFS volume", aws.ToString(in.ContainerDefinitions[0].MountPoints[0].ContainerPath),
			"/workspaces/alice"},
		{"other mount", aws.ToString(in.ContainerDefinitions[0].MountPoints[1].ContainerPath), "/tmp"},
		{"task role", aws.ToString(in.TaskRoleArn), "arn:user-task"},
		{"execution role", aws.ToString(in.ExecutionRoleArn), "arn:exec"},
		{"cpu", aws.ToString(in.Cpu), "1024"},
		{"network mode", string(in.NetworkMode), "awsvpc"},
		{"base's mount after the copy", aws.ToString(base.ContainerDefinitions[0].MountPoints[0].ContainerPath),
			"/workspaces"},
		{"base's access point after the copy",
			aws.ToString(base.Volumes[0].EfsVolumeConfiguration.AuthorizationConfig.AccessPointId), "fsap-shared"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %q; want %q", c.what, c.got, c.want)
		}
	}
	wantTags := map[string]string{TagUser: "alice", TagEnv: "stage", "team": "shell"}
	if got := ecsTags(in.Tags); !reflect.DeepEqual(got, wantTags) {
		t.Errorf("tags: got %v; want %v", got, wantTags)
	}

	opts.fileSystem = "fs-other"
	_, err = userDefinitionInput(base, baseTags, opts)
	if got := session.ErrorCode(err); got != CodeBadTaskDefinition {
		t.Errorf("no volume of the file system: got %v; want code %s", err, CodeBadTaskDefinition)
	}
}

// The time spent on the user's access point and task definition is what
// StartTimings reports for the task.
func TestStartTimings(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		took := func(d time.Duration) { time.Sleep(d) }
		base := &types.TaskDefinition{
			TaskDefinitionArn: aws.String("arn:aws:ecs:us-east-1:1:task-definition/agent:1"),
			Family:            aws.String("agent"),
			Volumes: []types.Volume{{Name: aws.String("ws"), EfsVolumeConfiguration: &types.EFSVolumeConfiguration{
				FileSystemId: aws.String("fs-1")}}},
		}
		fake := &fakeECS{
			describeTaskDefinition: func(in *ecs.DescribeTaskDefinitionInput) (*ecs.DescribeTaskDefinitionOutput, error) {
				took(10 * time.Millisecond)
				if aws.ToString(in.TaskDefinition) == "agent" {
					return &ecs.DescribeTaskDefinitionOutput{TaskDefinition: base}, nil
				}
				return nil, &types.ClientException{Message: aws.String("Unable to describe task definition.")}
			},
			registerTaskDefinition: func(in *ecs.RegisterTaskDefinitionInput) (*ecs.RegisterTaskDefinitionOutput, error) {
				took(40 * time.Millisecond)
				return &ecs.RegisterTaskDefinitionOutput{TaskDefinition: &types.TaskDefinition{
					TaskDefinitionArn: aws.String("arn:aws:ecs:us-east-1:1:task-definition/" +
						aws.ToString(in.Family) + ":1")}}, nil
			},
		}
		fs := &fakeEFS{
			describe: func(*efs.DescribeAccessPointsInput) (*efs.DescribeAccessPointsOutput, error) {
				took(20 * time.Millisecond)
				return &efs.DescribeAccessPointsOutput{}, nil
			},
			create: func(*efs.CreateAccessPointInput) (*efs.CreateAccessPointOutput, error) {
				took(30 * time.Millisecond)
				return &efs.CreateAccessPointOutput{AccessPointId: aws.String("fsap-alice")}, nil
			},
		}
		r := newRunner(fake, fs, Config{TaskDefinition: "agent", FileSystemID: "fs-1", Env: "stage"})
		alice := session.TaskSpec{TaskID: "t_1", SessionID: "s_1", UserID: "alice", UID: 100001}

		first, err := r.Run(context.Background(), alice)
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		if ap, reg := r.StartTimings(first); ap != 50 || reg != 60 {
			t.Errorf("first start: got access point %d ms, register %d ms; want 50, 60", ap, reg)
		}
		alice.TaskID = "t_2"
		second, err := r.Run(context.Background(), alice)
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		if ap, reg := r.StartTimings(second); ap != 0 || reg != 0 {
			t.Errorf("second start: got %d, %d; want 0, 0", ap, reg)
		}
	})
}

// Two runners racing to create a user's access point share one: the loser
// is told it exists.
func TestAccessPointAlreadyExists(t *testing.T) {
	fs := &fakeEFS{
		describe: func(*efs.DescribeAccessPointsInput) (*efs.DescribeAccessPointsOutput, error) {
			return &efs.DescribeAccessPointsOutput{AccessPoints: []efstypes.AccessPointDescription{{
				AccessPointId:  aws.String("fsap-deleting"),
				RootDirectory:  &efstypes.RootDirectory{Path: aws.String("/workspaces/stage/alice")},
				LifeCycleState: efstypes.LifeCycleStateDeleting,
			}}}, nil
		},
		create: func(in *efs.CreateAccessPointInput) (*efs.CreateAccessPointOutput, error) {
			if n := len(aws.ToString(in.ClientToken)); n > 64 {
				t.Errorf("client token: %d characters; want at most 64", n)
			}
			return nil, &efstypes.AccessPointAlreadyExists{Message: aws.String("exists"),
				AccessPointId: aws.String("fsap-theirs")}
		},
	}
	r := newRunner(&fakeECS{}, fs, Config{FileSystemID: "fs-1", Env: "stage"})
	got, err := r.userAccessPoint(context.Background(), "alice", 100001)
	if err != nil || got != "fsap-theirs" {
		t.Errorf("got %q, %v; want fsap-theirs", got, err)
	}
}

func TestHelpers(t *testing.T) {
	families := []struct{ in, want string }{
		{"agent", "agent"},
		{"agent:12", "agent"},
		{"arn:aws:ecs:us-east-1:123456789012:task-definition/aishell-stage-agent:3", "aishell-stage-agent"},
	}
	for _, tc := range families {
		if got := family(tc.in); got != tc.want {
			t.Errorf("family(%q): got %q; want %q", tc.in, got, tc.want)
		}
	}

	truncations := []struct {
		in   string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"exactly", 7, "exactly"},
		{"longer than that", 6, "longer"},
		{"ééé", 3, "é"},
		{"ééé", 4, "éé"},
	}
	for _, tc := range truncations {
		if got := truncate(tc.in, tc.n); got != tc.want {
			t.Errorf("truncate(%q, %d): got %q; want %q", tc.in, tc.n, got, tc.want)
		}
	}

	values := []struct{ in, want string }{
		{"alice@example.com", "alice@example.com"},
		{"Auth0|1234", "sha256:" + hashHex("Auth0|1234")},
		{strings.Repeat("a", 257), "sha256:" + hashHex(strings.Repeat("a", 257))},
		{"", ""},
	}
	for _, tc := range values {
		if got := tagValue(tc.in); got != tc.want {
			t.Errorf("tagValue(%q): got %q; want %q", tc.in, got, tc.want)
		}
	}
}

func TestStopTreatsOnlyNotFoundAsDone(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{&types.InvalidParameterException{Message: aws.String("The referenced task was not found.")}, true},
		{&types.InvalidParameterException{Message: aws.String("Invalid identifier: bad ARN")}, false},
		{&types.ClusterNotFoundException{Message: aws.String("Cluster not found.")}, false},
		{errors.New("not found"), false},
		{nil, false},
	}
	for _, tc := range tests {
		if got := isTaskNotFound(tc.err); got != tc.want {
			t.Errorf("isTaskNotFound(%v): got %v; want %v", tc.err, got, tc.want)
		}
	}
}
