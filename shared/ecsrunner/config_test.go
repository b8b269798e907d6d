package ecsrunner

import (
	"maps"
	"reflect"
	"strings"
	"testing"
)

func TestConfigFromEnv(t *testing.T) {
	minimal := map[string]string{
		"ECS_CLUSTER": "aishell-stage", "TASK_DEFINITION": "aishell-stage-agent",
		"TASK_CONTAINER": "agent", "TASK_SUBNETS": "subnet-a, subnet-b,",
		"TASK_SECURITY_GROUPS": "sg-1", "ENV_NAME": "stage", "WORKSPACE_ROOT": "/workspaces",
	}
	with := func(kv ...string) map[string]string {
		m := maps.Clone(minimal)
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	base := Config{
		Cluster: "aishell-stage", TaskDefinition: "aishell-stage-agent", ContainerName: "agent",
		Subnets: []string{"subnet-a", "subnet-b"}, SecurityGroups: []string{"sg-1"},
		Env: "stage", WorkspaceRoot: "/workspaces", SharedAccessPoint: true,
	}

	tests := []struct {
		name    string
		env     map[string]string
		want    func(c *Config)
		wantErr []string
	}{
		{name: "minimal", env: minimal, want: func(*Config) {}},
		{name: "no workspace root: the task definition's", env: with("WORKSPACE_ROOT", ""),
			want: func(c *Config) { c.WorkspaceRoot = "" }},
		{
			name: "everything",
			env: with("TASK_ASSIGN_PUBLIC_IP", "true", "CAPACITY_PROVIDER", "aishell-ec2",
				"AGENT_COMMAND", "claude", "AGENT_MODE", "pipes", "USE_SHARED_AP", "false",
				"EFS_FILE_SYSTEM_ID", "fs-1", "TASK_ROLE_ARN", "arn:task", "EXECUTION_ROLE_ARN", "arn:exec",
				"RUN_TASK_RATE", "2.5"),
			want: func(c *Config) {
				c.AssignPublicIP, c.CapacityProvider = true, "aishell-ec2"
				c.AgentCommand, c.AgentMode = "claude", "pipes"
				c.SharedAccessPoint, c.FileSystemID = false, "fs-1"
				c.TaskRoleArn, c.ExecutionRoleArn, c.RunTaskRate = "arn:task", "arn:exec", 2.5
			},
		},
		{name: "launch type", env: with("LAUNCH_TYPE", "FARGATE"),
			want: func(c *Config) { c.LaunchType = "FARGATE" }},
		{
			name: "nothing set",
			env:  map[string]string{},
			wantErr: []string{"ECS_CLUSTER is required", "TASK_DEFINITION is required",
				"TASK_CONTAINER is required", "TASK_SUBNETS is required",
				"TASK_SECURITY_GROUPS is required", "ENV_NAME is required"},
		},
		{
			name: "malformed",
			env: with("TASK_ASSIGN_PUBLIC_IP", "maybe", "USE_SHARED_AP", "no way",
				"LAUNCH_TYPE", "EXTERNAL", "RUN_TASK_RATE", "-1"),
			wantErr: []string{`TASK_ASSIGN_PUBLIC_IP: want true or false, got "maybe"`,
				`USE_SHARED_AP: want true or false`, `LAUNCH_TYPE: want EC2 or FARGATE, got "EXTERNAL"`,
				`RUN_TASK_RATE: want calls per second above 0, got "-1"`},
		},
		{name: "both capacity provider and launch type",
			env:     with("CAPACITY_PROVIDER", "cp", "LAUNCH_TYPE", "EC2"),
			wantErr: []string{"CAPACITY_PROVIDER and LAUNCH_TYPE exclude each other"}},
		{name: "per-user mode without a file system", env: with("USE_SHARED_AP", "false"),
			wantErr: []string{"EFS_FILE_SYSTEM_ID is required when USE_SHARED_AP is false"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := configFromEnv(func(k string) string { return tc.env[k] })
			if tc.wantErr != nil {
				if err == nil {
					t.Fatalf("got %+v; want an error", got)
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q; want it to say %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("got %v; want no error", err)
			}
			want := base
			tc.want(&want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got  %+v\nwant %+v", got, want)
			}
		})
	}
}
