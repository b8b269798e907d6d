package stacks

import (
	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsapplicationautoscaling"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsec2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsecrassets"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsecs"
	"github.com/aws/aws-cdk-go/awscdk/v2/awselasticloadbalancingv2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"

	"github.com/aishell/aishell/shared/awsops"
)

// LoadBalancerIdleTimeout is how long the load balancer keeps a silent
// connection: far beyond the relay's 25 s ping, so that only a dead peer
// ends a WebSocket, never the load balancer.
const LoadBalancerIdleTimeout = 3600

// RelayContainer and XRayContainer are the relay task's containers.
const (
	RelayContainer = "relay"
	XRayContainer  = "xray-daemon"
	// xrayImage is the X-Ray daemon's public image.
	xrayImage = "public.ecr.aws/xray/aws-xray-daemon:3.x"
)

// TLSSettings give the load balancer a certificate and the relay its
// public name. Without a certificate the listener is plain HTTP (ws://).
type TLSSettings struct {
	CertificateArn string
	// DomainName is the relay's public host name (a record to create
	// outside this app, pointing at the load balancer); empty means the
	// load balancer's own DNS name.
	DomainName string
}

// RelayStackProps configures a RelayStack.
type RelayStackProps struct {
	awscdk.StackProps
	Env          EnvironmentProps
	Network      *NetworkStack
	Data         *DataStack
	Cluster      *ClusterStack
	ControlPlane *ControlPlaneStack
	SourceDir    string
	TLS          TLSSettings
	// SharedAccessPoint is false in per-user mode (R9).
	SharedAccessPoint bool
}

// RelayStack is the relay: a Fargate service with the X-Ray daemon beside
// it, behind an internet-facing Application Load Balancer fit for
// long-lived WebSockets, scaled on CPU, memory (held sockets) and new
// connections.
type RelayStack struct {
	awscdk.Stack
	Service      awsecs.FargateService
	LoadBalancer awselasticloadbalancingv2.ApplicationLoadBalancer
	TargetGroup  awselasticloadbalancingv2.ApplicationTargetGroup
	// PublicURL is the client socket URL handed to browsers.
	PublicURL *string
}

// NewRelayStack makes the relay service and its load balancer.
func NewRelayStack(scope constructs.Construct, id string, props *RelayStackProps) (*RelayStack, error) {
	stack := awscdk.NewStack(scope, &id, &props.StackProps)
	s := &RelayStack{Stack: stack}
	env, net, data, cl, cp := props.Env, props.Network, props.Data, props.Cluster, props.ControlPlane

	s.LoadBalancer = awselasticloadbalancingv2.NewApplicationLoadBalancer(stack, jsii.String("RelayLoadBalancer"),
		&awselasticloadbalancingv2.ApplicationLoadBalancerProps{
			Vpc:                     net.Vpc,
			VpcSubnets:              &awsec2.SubnetSelection{SubnetType: awsec2.SubnetType_PUBLIC},
			InternetFacing:          jsii.Bool(true),
			SecurityGroup:           net.LoadBalancerSG,
			IdleTimeout:             awscdk.Duration_Seconds(jsii.Number(LoadBalancerIdleTimeout)),
			DropInvalidHeaderFields: jsii.Bool(true),
			DeletionProtection:      jsii.Bool(env.RemovalPolicy == awscdk.RemovalPolicy_RETAIN),
		})

	host := s.LoadBalancer.LoadBalancerDnsName()
	if props.TLS.DomainName != "" {
		host = jsii.String(props.TLS.DomainName)
	}
	scheme := "ws://"
	if props.TLS.CertificateArn != "" {
		scheme = "wss://"
	}
	s.PublicURL = awscdk.Fn_Join(jsii.String(""), &[]*string{jsii.String(scheme), host, jsii.String("/ws")})

	role := awsiam.NewRole(stack, jsii.String("RelayTaskRole"), &awsiam.RoleProps{
		AssumedBy:   awsiam.NewServicePrincipal(jsii.String("ecs-tasks.amazonaws.com"), nil),
		Description: jsii.String("AI Shell " + env.Name + " relay (" + awsops.Relay + ")"),
	})
	scopeOf := newScope(env, data, cl, []string{cp.RestartMachineName, cp.RefillMachineName},
		props.SharedAccessPoint)
	if err := grantListed(role, awsops.Relay, scopeOf); err != nil {
		return nil, err
	}
	// The X-Ray daemon beside the relay sends its segments with this role.
	role.AddToPrincipalPolicy(awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
		Actions: jsii.Strings("xray:PutTraceSegments", "xray:PutTelemetryRecords",
			"xray:GetSamplingRules", "xray:GetSamplingTargets", "xray:GetSamplingStatisticSummaries"),
		Resources: jsii.Strings("*"),
	}))

	td := awsecs.NewFargateTaskDefinition(stack, jsii.String("RelayTaskDefinition"), &awsecs.FargateTaskDefinitionProps{
		Family:         jsii.String(env.prefix() + "-relay"),
		Cpu:            jsii.Number(512),
		MemoryLimitMiB: jsii.Number(1024),
		TaskRole:       role,
		RuntimePlatform: &awsecs.RuntimePlatform{
			CpuArchitecture:       awsecs.CpuArchitecture_ARM64(),
			OperatingSystemFamily: awsecs.OperatingSystemFamily_LINUX(),
		},
	})
	image := awsecrassets.NewDockerImageAsset(stack, jsii.String("RelayImage"), &awsecrassets.DockerImageAssetProps{
		Directory: jsii.String(props.SourceDir),
		File:      jsii.String("infra/docker/relay.Dockerfile"),
		Platform:  awsecrassets.Platform_LINUX_ARM64(),
		Exclude:   jsii.Strings(imageExcludes...),
	})
	relayEnv := map[string]*string{
		"AISHELL_MODE":              jsii.String("aws"),
		"PORT":                      jsii.String("8080"),
		"RELAY_PUBLIC_URL":          s.PublicURL,
		"KEYS_SECRET_ID":            data.Keys.SecretArn(),
		"RESTART_STATE_MACHINE_ARN": cp.RestartMachine.StateMachineArn(),
		"IDLE_TIMEOUT":              jsii.String("10m"),
		"LOG_LEVEL":                 jsii.String("info"),
		"AWS_XRAY_DAEMON_ADDRESS":   jsii.String("127.0.0.1:2000"),
		"ENABLE_WARM_POOL":          jsii.String(boolString(env.WarmPoolSize > 0)),
	}
	for k, v := range data.Tables.Env() {
		relayEnv[k] = v
	}
	for k, v := range taskRunnerEnv(env, net, data, cl, props.SharedAccessPoint) {
		relayEnv[k] = v
	}
	td.AddContainer(jsii.String(RelayContainer), &awsecs.ContainerDefinitionOptions{
		ContainerName: jsii.String(RelayContainer),
		Image:         awsecs.ContainerImage_FromDockerImageAsset(image),
		Essential:     jsii.Bool(true),
		Environment:   &relayEnv,
		PortMappings: &[]*awsecs.PortMapping{{
			ContainerPort: jsii.Number(RelayPort), Protocol: awsecs.Protocol_TCP,
		}},
		Logging: awsecs.LogDriver_AwsLogs(&awsecs.AwsLogDriverProps{
			LogGroup:     data.Logs.Relay,
			StreamPrefix: jsii.String("relay"),
			Mode:         awsecs.AwsLogDriverMode_NON_BLOCKING,
		}),
		// The relay closes sockets with 1001 on SIGTERM; clients and tasks
		// reconnect to another relay meanwhile.
		StopTimeout: awscdk.Duration_Seconds(jsii.Number(30)),
	})
	td.AddContainer(jsii.String(XRayContainer), &awsecs.ContainerDefinitionOptions{
		ContainerName:        jsii.String(XRayContainer),
		Image:                awsecs.ContainerImage_FromRegistry(jsii.String(xrayImage), nil),
		Essential:            jsii.Bool(false),
		Cpu:                  jsii.Number(32),
		MemoryReservationMiB: jsii.Number(64),
		PortMappings: &[]*awsecs.PortMapping{{
			ContainerPort: jsii.Number(2000), Protocol: awsecs.Protocol_UDP,
		}},
		Logging: awsecs.LogDriver_AwsLogs(&awsecs.AwsLogDriverProps{
			LogGroup:     data.Logs.Relay,
			StreamPrefix: jsii.String("xray"),
		}),
	})

	s.Service = awsecs.NewFargateService(stack, jsii.String("RelayService"), &awsecs.FargateServiceProps{
		Cluster:                cl.Cluster,
		TaskDefinition:         td,
		ServiceName:            jsii.String(env.prefix() + "-relay"),
		DesiredCount:           jsii.Number(env.RelayMinTasks),
		SecurityGroups:         &[]awsec2.ISecurityGroup{net.RelaySG},
		VpcSubnets:             &awsec2.SubnetSelection{SubnetType: awsec2.SubnetType_PRIVATE_WITH_EGRESS},
		AssignPublicIp:         jsii.Bool(false),
		MinHealthyPercent:      jsii.Number(100),
		MaxHealthyPercent:      jsii.Number(200),
		HealthCheckGracePeriod: awscdk.Duration_Seconds(jsii.Number(30)),
		CircuitBreaker:         &awsecs.DeploymentCircuitBreaker{Enable: jsii.Bool(true), Rollback: jsii.Bool(true)},
		CapacityProviderStrategies: &[]*awsecs.CapacityProviderStrategy{
			{CapacityProvider: jsii.String("FARGATE"), Weight: jsii.Number(1)},
		},
	})

	s.TargetGroup = awselasticloadbalancingv2.NewApplicationTargetGroup(stack, jsii.String("RelayTargets"),
		&awselasticloadbalancingv2.ApplicationTargetGroupProps{
			Vpc:        net.Vpc,
			Port:       jsii.Number(RelayPort),
			Protocol:   awselasticloadbalancingv2.ApplicationProtocol_HTTP,
			TargetType: awselasticloadbalancingv2.TargetType_IP,
			Targets:    &[]awselasticloadbalancingv2.IApplicationLoadBalancerTarget{s.Service},
			HealthCheck: &awselasticloadbalancingv2.HealthCheck{
				Path:                    jsii.String("/healthz"),
				HealthyHttpCodes:        jsii.String("200"),
				Interval:                awscdk.Duration_Seconds(jsii.Number(10)),
				Timeout:                 awscdk.Duration_Seconds(jsii.Number(5)),
				HealthyThresholdCount:   jsii.Number(2),
				UnhealthyThresholdCount: jsii.Number(3),
			},
			// Long enough for the relay's SIGTERM close and the clients'
			// move to another relay.
			DeregistrationDelay: awscdk.Duration_Seconds(jsii.Number(60)),
		})

	if props.TLS.CertificateArn != "" {
		s.LoadBalancer.AddListener(jsii.String("HttpsListener"), &awselasticloadbalancingv2.BaseApplicationListenerProps{
			Port:     jsii.Number(443),
			Protocol: awselasticloadbalancingv2.ApplicationProtocol_HTTPS,
			Open:     jsii.Bool(false),
			Certificates: &[]awselasticloadbalancingv2.IListenerCertificate{
				awselasticloadbalancingv2.ListenerCertificate_FromArn(jsii.String(props.TLS.CertificateArn)),
			},
			SslPolicy:           awselasticloadbalancingv2.SslPolicy_RECOMMENDED_TLS,
			DefaultTargetGroups: &[]awselasticloadbalancingv2.IApplicationTargetGroup{s.TargetGroup},
		})
		s.LoadBalancer.AddListener(jsii.String("HttpListener"), &awselasticloadbalancingv2.BaseApplicationListenerProps{
			Port:     jsii.Number(80),
			Protocol: awselasticloadbalancingv2.ApplicationProtocol_HTTP,
			Open:     jsii.Bool(false),
			DefaultAction: awselasticloadbalancingv2.ListenerAction_Redirect(&awselasticloadbalancingv2.RedirectOptions{
				Protocol: jsii.String("HTTPS"), Port: jsii.String("443"), Permanent: jsii.Bool(true),
			}),
		})
	} else {
		s.LoadBalancer.AddListener(jsii.String("HttpListener"), &awselasticloadbalancingv2.BaseApplicationListenerProps{
			Port:                jsii.Number(80),
			Protocol:            awselasticloadbalancingv2.ApplicationProtocol_HTTP,
			Open:                jsii.Bool(false),
			DefaultTargetGroups: &[]awselasticloadbalancingv2.IApplicationTargetGroup{s.TargetGroup},
		})
	}

	scaling := s.Service.AutoScaleTaskCount(&awsapplicationautoscaling.EnableScalingProps{
		MinCapacity: jsii.Number(env.RelayMinTasks),
		MaxCapacity: jsii.Number(env.RelayMaxTasks),
	})
	scaling.ScaleOnCpuUtilization(jsii.String("RelayCpuScaling"), &awsecs.CpuUtilizationScalingProps{
		TargetUtilizationPercent: jsii.Number(60),
	})
	// Each held socket costs memory (about 300 KiB): memory tracks the
	// connections a relay holds.
	scaling.ScaleOnMemoryUtilization(jsii.String("RelayConnectionScaling"), &awsecs.MemoryUtilizationScalingProps{
		TargetUtilizationPercent: jsii.Number(70),
	})
	scaling.ScaleOnRequestCount(jsii.String("RelayNewConnectionScaling"), &awsecs.RequestCountScalingProps{
		RequestsPerTarget: jsii.Number(3000),
		TargetGroup:       s.TargetGroup,
	})

	awscdk.NewCfnOutput(stack, jsii.String("RelayPublicUrl"), &awscdk.CfnOutputProps{
		Value:       s.PublicURL,
		Description: jsii.String("Client WebSocket URL of the relay"),
	})
	awscdk.NewCfnOutput(stack, jsii.String("RelayLoadBalancerDns"), &awscdk.CfnOutputProps{
		Value: s.LoadBalancer.LoadBalancerDnsName(),
	})
	return s, nil
}
