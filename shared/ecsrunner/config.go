package ecsrunner

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
)

// DefaultRunTaskRate is how many RunTask calls per second a Runner makes at
// most unless told otherwise: well inside ECS's RunTask rate limit, which
// every Lambda of an account shares.
const DefaultRunTaskRate = 10

// Config is how a Runner starts tasks: where, with which task definition,
// and what every task is told besides its own settings.
type Config struct {
	// Cluster is the ECS cluster's name or ARN (ECS_CLUSTER).
	Cluster string
	// TaskDefinition is the family or ARN of the environment's one fixed
	// task definition (TASK_DEFINITION); a family means its latest revision.
	TaskDefinition string
	// ContainerName is the container running the bridge and the agent,
	// whose environment the overrides set (TASK_CONTAINER).
	ContainerName string

	// Subnets and SecurityGroups are the awsvpc network of every task
	// (TASK_SUBNETS, TASK_SECURITY_GROUPS, comma separated).
	Subnets        []string
	SecurityGroups []string
	// AssignPublicIP gives each task a public address
	// (TASK_ASSIGN_PUBLIC_IP), for subnets without a NAT gateway.
	AssignPublicIP bool
	// CapacityProvider names the EC2 Auto Scaling capacity provider to run
	// on (CAPACITY_PROVIDER). Empty means LaunchType.
	CapacityProvider string
	// LaunchType is EC2 or FARGATE (LAUNCH_TYPE), used when there is no
	// capacity provider. Both empty means the cluster's default strategy.
	LaunchType string

	// Env names the environment, stage or prod (ENV_NAME): it tags every
	// task and roots the per-user access points.
	Env string
	// WorkspaceRoot is where the container mounts the access point, e.g.
	// /workspaces (WORKSPACE_ROOT); the bridge finds users' folders there.
	// Empty leaves the task definition's own WORKSPACE_ROOT.
	WorkspaceRoot string
	// AgentCommand and AgentMode are handed to every bridge when set
	// (AGENT_COMMAND, AGENT_MODE).
	AgentCommand string
	AgentMode    string

	// SharedAccessPoint runs every task on the fixed task definition and
	// its shared access point (USE_SHARED_AP). ConfigFromEnv makes it true
	// unless told otherwise; a Config written out must set it, as false
	// means the older per-user mode: each user gets an access point and a
	// task definition revision of their own, created on the user's first
	// start and reused (R9). Warm tasks, whose user is not known yet, run
	// on the fixed task definition in both modes.
	SharedAccessPoint bool
	// FileSystemID is the EFS file system of the per-user access points
	// (EFS_FILE_SYSTEM_ID); required when SharedAccessPoint is false.
	FileSystemID string
	// TaskRoleArn and ExecutionRoleArn go into per-user task definitions
	// (TASK_ROLE_ARN, EXECUTION_ROLE_ARN); empty means the fixed task
	// definition's.
	TaskRoleArn      string
	ExecutionRoleArn string

	// RunTaskRate is the most RunTask calls per second this Runner makes
	// (RUN_TASK_RATE, DefaultRunTaskRate when 0 or less).
	RunTaskRate float64

	// Log receives the runner's events; nil discards them.
	Log *slog.Logger
}

// ConfigFromEnv reads a Config from the environment. Its error names every
// variable that is missing or malformed.
func ConfigFromEnv() (Config, error) {
	return configFromEnv(os.Getenv)
}

func configFromEnv(getenv func(string) string) (Config, error) {
	var errs []string
	get := func(name string) string { return strings.TrimSpace(getenv(name)) }
	required := func(name string) string {
		v := get(name)
		if v == "" {
			errs = append(errs, name+" is required")
		}
		return v
	}
	list := func(name string) []string {
		var out []string
		for _, v := range strings.Split(required(name), ",") {
			if v = strings.TrimSpace(v); v != "" {
				out = append(out, v)
			}
		}
		return out
	}
	boolean := func(name string, def bool) bool {
		v := get(name)
		if v == "" {
			return def
		}
		b, err := strconv.ParseBool(v)
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: want true or false, got %q", name, v))
		}
		return b
	}

	cfg := Config{
		Cluster:          required("ECS_CLUSTER"),
		TaskDefinition:   required("TASK_DEFINITION"),
		ContainerName:    required("TASK_CONTAINER"),
		Subnets:          list("TASK_SUBNETS"),
		SecurityGroups:   list("TASK_SECURITY_GROUPS"),
		AssignPublicIP:   boolean("TASK_ASSIGN_PUBLIC_IP", false),
		CapacityProvider: get("CAPACITY_PROVIDER"),
		LaunchType:       get("LAUNCH_TYPE"),
		Env:              required("ENV_NAME"),
		WorkspaceRoot:    get("WORKSPACE_ROOT"),
		AgentCommand:     get("AGENT_COMMAND"),
		AgentMode:        get("AGENT_MODE"),

		SharedAccessPoint: boolean("USE_SHARED_AP", true),
		FileSystemID:      get("EFS_FILE_SYSTEM_ID"),
		TaskRoleArn:       get("TASK_ROLE_ARN"),
		ExecutionRoleArn:  get("EXECUTION_ROLE_ARN"),
	}

	switch {
	case cfg.CapacityProvider != "" && cfg.LaunchType != "":
		errs = append(errs, "CAPACITY_PROVIDER and LAUNCH_TYPE exclude each other; set one")
	case cfg.LaunchType != "" && cfg.LaunchType != "EC2" && cfg.LaunchType != "FARGATE":
		errs = append(errs, fmt.Sprintf("LAUNCH_TYPE: want EC2 or FARGATE, got %q", cfg.LaunchType))
	}
	if !cfg.SharedAccessPoint && cfg.FileSystemID == "" {
		errs = append(errs, "EFS_FILE_SYSTEM_ID is required when USE_SHARED_AP is false")
	}
	if v := get("RUN_TASK_RATE"); v != "" {
		rate, err := strconv.ParseFloat(v, 64)
		if err != nil || rate <= 0 {
			errs = append(errs, fmt.Sprintf("RUN_TASK_RATE: want calls per second above 0, got %q", v))
		}
		cfg.RunTaskRate = rate
	}

	if len(errs) > 0 {
		return Config{}, errors.New("ECS task runner configuration: " + strings.Join(errs, "; "))
	}
	return cfg, nil
}
