package stacks

import (
	"strings"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsautoscaling"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsec2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsecrassets"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsecs"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"
)

// AgentContainer is the name of the agent task's one container (the
// bridge, which runs the agent): TASK_CONTAINER of ecsrunner.
const AgentContainer = "agent"

// ClusterStackProps configures a ClusterStack.
type ClusterStackProps struct {
	awscdk.StackProps
	Env     EnvironmentProps
	Network *NetworkStack
	Data    *DataStack
	// SourceDir is the repository's root: the build context of the images.
	SourceDir string
	// SharedAccessPoint is false in the older per-user mode (R9), whose
	// tasks mount access points that the control plane makes per user.
	SharedAccessPoint bool
}

// ClusterStack is where tasks run: the ECS cluster, its EC2 capacity for
// agent tasks (a launch template on the current ECS-optimized AMI whose
// user data pre-pulls the agent image), and the environment's one fixed
// agent task definition.
type ClusterStack struct {
	awscdk.Stack
	Cluster          awsecs.Cluster
	CapacityProvider awsecs.AsgCapacityProvider
	AgentImage       awsecrassets.DockerImageAsset
	AgentTask        awsecs.Ec2TaskDefinition
	// AgentTaskFamily is the task definition's family; per-user task
	// definitions are named after it (ecsrunner).
	AgentTaskFamily string
	// LaunchTemplate is the agent instances' template.
	LaunchTemplate awsec2.LaunchTemplate
}

// NewClusterStack makes the cluster, capacity and task definition.
func NewClusterStack(scope constructs.Construct, id string, props *ClusterStackProps) *ClusterStack {
	stack := awscdk.NewStack(scope, &id, &props.StackProps)
	s := &ClusterStack{Stack: stack, AgentTaskFamily: props.Env.prefix() + "-agent"}
	env, net, data := props.Env, props.Network, props.Data

	s.Cluster = awsecs.NewCluster(stack, jsii.String("Cluster"), &awsecs.ClusterProps{
		Vpc:                 net.Vpc,
		ClusterName:         jsii.String(env.prefix()),
		ContainerInsightsV2: awsecs.ContainerInsights_ENABLED,
	})

	s.AgentImage = awsecrassets.NewDockerImageAsset(stack, jsii.String("AgentImage"), &awsecrassets.DockerImageAssetProps{
		Directory: jsii.String(props.SourceDir),
		File:      jsii.String("infra/docker/task.Dockerfile"),
		Platform:  awsecrassets.Platform_LINUX_ARM64(),
		Exclude:   jsii.Strings(imageExcludes...),
	})

	s.LaunchTemplate = s.newAgentLaunchTemplate(env, net)
	group := awsautoscaling.NewAutoScalingGroup(stack, jsii.String("AgentInstances"), &awsautoscaling.AutoScalingGroupProps{
		Vpc:            net.Vpc,
		VpcSubnets:     &awsec2.SubnetSelection{SubnetType: awsec2.SubnetType_PRIVATE_WITH_EGRESS},
		LaunchTemplate: s.LaunchTemplate,
		MinCapacity:    jsii.Number(env.AgentMinInstances),
		MaxCapacity:    jsii.Number(env.AgentMaxInstances),
		// A changed launch template (a new AMI, a new agent image to
		// pre-pull) replaces the instances in batches, keeping capacity.
		UpdatePolicy: awsautoscaling.UpdatePolicy_RollingUpdate(&awsautoscaling.RollingUpdateOptions{
			MaxBatchSize:          jsii.Number(1),
			MinInstancesInService: jsii.Number(env.AgentMinInstances),
			PauseTime:             awscdk.Duration_Minutes(jsii.Number(5)),
		}),
		// ECS's managed scaling decides the desired count.
		NewInstancesProtectedFromScaleIn: jsii.Bool(false),
	})
	s.CapacityProvider = awsecs.NewAsgCapacityProvider(stack, jsii.String("AgentCapacity"), &awsecs.AsgCapacityProviderProps{
		AutoScalingGroup:                   group,
		CapacityProviderName:               jsii.String(env.prefix() + "-agents"),
		EnableManagedScaling:               jsii.Bool(true),
		EnableManagedDraining:              jsii.Bool(true),
		EnableManagedTerminationProtection: jsii.Bool(false),
		TargetCapacityPercent:              jsii.Number(90),
	})
	s.Cluster.AddAsgCapacityProvider(s.CapacityProvider, nil)
	// The relay runs on Fargate in the same cluster.
	s.Cluster.EnableFargateCapacityProviders()
	s.Cluster.AddDefaultCapacityProviderStrategy(&[]*awsecs.CapacityProviderStrategy{
		{CapacityProvider: s.CapacityProvider.CapacityProviderName(), Weight: jsii.Number(1)},
	})

	s.AgentTask = s.newAgentTaskDefinition(env, data, props.SharedAccessPoint)
	return s
}

// imageExcludes keep the image assets' build context to the sources.
var imageExcludes = []string{
	".git", "node_modules", "**/node_modules", "cdk.out", "bin", ".data", "*.test", "docs",
}

// newAgentLaunchTemplate is the agent instances' launch template: the
// ECS-optimized Amazon Linux 2023 AMI for arm64, read at deploy time from
// its public SSM parameter, and user data that joins the cluster (added by
// the capacity provider) and pulls the agent image before the first task
// needs it.
func (s *ClusterStack) newAgentLaunchTemplate(env EnvironmentProps,
	net *NetworkStack) awsec2.LaunchTemplate {
	role := awsiam.NewRole(s.Stack, jsii.String("AgentInstanceRole"), &awsiam.RoleProps{
		AssumedBy:   awsiam.NewServicePrincipal(jsii.String("ec2.amazonaws.com"), nil),
		Description: jsii.String("AI Shell " + env.Name + " agent container instances"),
		ManagedPolicies: &[]awsiam.IManagedPolicy{
			awsiam.ManagedPolicy_FromAwsManagedPolicyName(
				jsii.String("service-role/AmazonEC2ContainerServiceforEC2Role")),
			awsiam.ManagedPolicy_FromAwsManagedPolicyName(jsii.String("AmazonSSMManagedInstanceCore")),
		},
	})
	s.AgentImage.Repository().GrantPull(role)

	userData := awsec2.UserData_ForLinux(nil)
	userData.AddCommands(prePullCommands(*s.AgentImage.ImageUri())...)

	return awsec2.NewLaunchTemplate(s.Stack, jsii.String("AgentLaunchTemplate"), &awsec2.LaunchTemplateProps{
		MachineImage:  awsecs.EcsOptimizedImage_AmazonLinux2023(awsecs.AmiHardwareType_ARM, nil),
		InstanceType:  awsec2.NewInstanceType(jsii.String(env.AgentInstanceType)),
		Role:          role,
		SecurityGroup: net.AgentHostSG,
		UserData:      userData,
		RequireImdsv2: jsii.Bool(true),
		// Tasks in awsvpc mode reach the instance's metadata through the
		// ECS agent, not IMDS: one hop is enough and keeps tasks off it.
		HttpPutResponseHopLimit: jsii.Number(1),
		DetailedMonitoring:      jsii.Bool(true),
		BlockDevices: &[]*awsec2.BlockDevice{{
			DeviceName: jsii.String("/dev/xvda"),
			Volume: awsec2.BlockDeviceVolume_Ebs(jsii.Number(40), &awsec2.EbsDeviceOptions{
				Encrypted:  jsii.Bool(true),
				VolumeType: awsec2.EbsDeviceVolumeType_GP3,
			}),
		}},
	})
}

// prePullCommands are the user data lines that pull image (an ECR image
// URI) into the instance's Docker before the ECS agent places tasks, and
// keep ECS from pulling it again at each task start.
func prePullCommands(image string) []*string {
	lines := []string{
		"echo ECS_IMAGE_PULL_BEHAVIOR=prefer-cached >> /etc/ecs/ecs.config",
		// Agent tasks run users' code: keep them off the instance's role.
		"echo ECS_AWSVPC_BLOCK_IMDS=true >> /etc/ecs/ecs.config",
		"command -v aws >/dev/null || dnf install -y -q awscli-2",
		"AGENT_IMAGE=" + image,
		"REGISTRY=${AGENT_IMAGE%%/*}",
		"REGION=$(echo \"$REGISTRY\" | cut -d. -f4)",
		"for attempt in 1 2 3 4 5; do " +
			"aws ecr get-login-password --region \"$REGION\" | " +
			"docker login --username AWS --password-stdin \"$REGISTRY\" && " +
			"docker pull \"$AGENT_IMAGE\" && break; sleep $((attempt * 5)); done",
	}
	out := make([]*string, len(lines))
	for i, l := range lines {
		out[i] = jsii.String(l)
	}
	return out
}

// newAgentTaskDefinition is the one fixed task definition of agent tasks
// (R9): the bridge's container, the workspaces mounted through the shared
// access point with IAM authorization and TLS, an init process that reaps
// the agent's orphaned children, logs with retention and a health check.
// Per-session settings come in RunTask overrides.
func (s *ClusterStack) newAgentTaskDefinition(env EnvironmentProps, data *DataStack,
	shared bool) awsecs.Ec2TaskDefinition {
	taskRole := awsiam.NewRole(s.Stack, jsii.String("AgentTaskRole"), &awsiam.RoleProps{
		AssumedBy:   awsiam.NewServicePrincipal(jsii.String("ecs-tasks.amazonaws.com"), nil),
		Description: jsii.String("AI Shell " + env.Name + " agent tasks: mount the workspaces"),
	})
	// Root access lets the bridge chown each user's folder to the user's
	// uid (R9a); the agent runs as that uid without the means to change it.
	mount := awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
		Actions: jsii.Strings("elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite",
			"elasticfilesystem:ClientRootAccess"),
		Resources: jsii.Strings(*data.FileSystem.FileSystemArn()),
	})
	if shared {
		mount.AddCondition(jsii.String("StringEquals"), map[string]any{
			"elasticfilesystem:AccessPointArn": data.AccessPoint.AccessPointArn(),
		})
	} else {
		mount.AddCondition(jsii.String("StringLike"), map[string]any{
			"elasticfilesystem:AccessPointArn": awscdk.Fn_Join(jsii.String(""), &[]*string{
				jsii.String("arn:"), awscdk.Aws_PARTITION(), jsii.String(":elasticfilesystem:"),
				awscdk.Aws_REGION(), jsii.String(":"), awscdk.Aws_ACCOUNT_ID(), jsii.String(":access-point/*"),
			}),
		})
	}
	taskRole.AddToPolicy(mount)

	td := awsecs.NewEc2TaskDefinition(s.Stack, jsii.String("AgentTaskDefinition"), &awsecs.Ec2TaskDefinitionProps{
		Family:      jsii.String(s.AgentTaskFamily),
		NetworkMode: awsecs.NetworkMode_AWS_VPC,
		TaskRole:    taskRole,
		Volumes: &[]*awsecs.Volume{{
			Name: jsii.String("workspaces"),
			EfsVolumeConfiguration: &awsecs.EfsVolumeConfiguration{
				FileSystemId:      data.FileSystem.FileSystemId(),
				TransitEncryption: jsii.String("ENABLED"),
				AuthorizationConfig: &awsecs.AuthorizationConfig{
					AccessPointId: data.AccessPoint.AccessPointId(),
					Iam:           jsii.String("ENABLED"),
				},
			},
		}},
	})
	container := td.AddContainer(jsii.String(AgentContainer), &awsecs.ContainerDefinitionOptions{
		ContainerName:        jsii.String(AgentContainer),
		Image:                awsecs.ContainerImage_FromDockerImageAsset(s.AgentImage),
		MemoryReservationMiB: jsii.Number(256),
		MemoryLimitMiB:       jsii.Number(2048),
		Cpu:                  jsii.Number(256),
		Essential:            jsii.Bool(true),
		Environment: &map[string]*string{
			"WORKSPACE_ROOT": jsii.String(WorkspaceMountDir),
			"ENV_NAME":       jsii.String(env.Name),
		},
		Logging: awsecs.LogDriver_AwsLogs(&awsecs.AwsLogDriverProps{
			LogGroup:     data.Logs.Tasks,
			StreamPrefix: jsii.String("task"),
			Mode:         awsecs.AwsLogDriverMode_NON_BLOCKING,
		}),
		LinuxParameters: awsecs.NewLinuxParameters(s.Stack, jsii.String("AgentLinuxParameters"),
			&awsecs.LinuxParametersProps{InitProcessEnabled: jsii.Bool(true)}),
		HealthCheck: &awsecs.HealthCheck{
			Command:     jsii.Strings("CMD-SHELL", "pgrep -x bridge >/dev/null && test -d "+WorkspaceMountDir),
			Interval:    awscdk.Duration_Seconds(jsii.Number(30)),
			Timeout:     awscdk.Duration_Seconds(jsii.Number(5)),
			Retries:     jsii.Number(3),
			StartPeriod: awscdk.Duration_Seconds(jsii.Number(10)),
		},
		StopTimeout: awscdk.Duration_Seconds(jsii.Number(10)),
	})
	container.AddMountPoints(&awsecs.MountPoint{
		ContainerPath: jsii.String(WorkspaceMountDir),
		SourceVolume:  jsii.String("workspaces"),
		ReadOnly:      jsii.Bool(false),
	})
	return td
}

// subnetIDs joins subnet ids for ecsrunner's TASK_SUBNETS.
func subnetIDs(subnets *[]awsec2.ISubnet) *string {
	ids := make([]*string, 0, len(*subnets))
	for _, sn := range *subnets {
		ids = append(ids, sn.SubnetId())
	}
	return awscdk.Fn_Join(jsii.String(","), &ids)
}

// taskRunnerEnv is the environment of every component that starts agent
// tasks through ecsrunner (ecsrunner.ConfigFromEnv).
func taskRunnerEnv(env EnvironmentProps, net *NetworkStack, data *DataStack, cl *ClusterStack,
	shared bool) map[string]*string {
	private := net.Vpc.SelectSubnets(&awsec2.SubnetSelection{SubnetType: awsec2.SubnetType_PRIVATE_WITH_EGRESS})
	e := map[string]*string{
		"ECS_CLUSTER":           cl.Cluster.ClusterName(),
		"TASK_DEFINITION":       jsii.String(cl.AgentTaskFamily),
		"TASK_CONTAINER":        jsii.String(AgentContainer),
		"TASK_SUBNETS":          subnetIDs(private.Subnets),
		"TASK_SECURITY_GROUPS":  net.AgentTaskSG.SecurityGroupId(),
		"TASK_ASSIGN_PUBLIC_IP": jsii.String("false"),
		"CAPACITY_PROVIDER":     cl.CapacityProvider.CapacityProviderName(),
		"ENV_NAME":              jsii.String(env.Name),
		"WORKSPACE_ROOT":        jsii.String(WorkspaceMountDir),
		"USE_SHARED_AP":         jsii.String(strings.ToLower(boolString(shared))),
		"TASK_ROLE_ARN":         cl.AgentTask.TaskRole().RoleArn(),
		"EXECUTION_ROLE_ARN":    cl.AgentTask.ObtainExecutionRole().RoleArn(),
	}
	if !shared {
		e["EFS_FILE_SYSTEM_ID"] = data.FileSystem.FileSystemId()
	}
	return e
}

func boolString(b bool) string {
	if b {
		return "true"
	}
	return "false"
}
