package stacks

import (
	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsec2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslogs"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"
)

// RelayPort is the port the relay's container listens on, for the load
// balancer, the tasks and the Lambdas alike.
const RelayPort = 8080

// ImportedVpc names an existing VPC and its subnets, from context values,
// so that it is imported without a lookup (synth stays offline).
type ImportedVpc struct {
	ID                string
	AvailabilityZones []string
	// PrivateSubnetIDs must have a route to the internet (NAT): tasks pull
	// images and Lambdas call AWS APIs from them. PublicSubnetIDs hold the
	// load balancer. Both list one subnet per availability zone, in the
	// order of AvailabilityZones.
	PrivateSubnetIDs []string
	PublicSubnetIDs  []string
}

// NetworkStackProps configures a NetworkStack.
type NetworkStackProps struct {
	awscdk.StackProps
	Env EnvironmentProps
	// Import, when set, uses an existing VPC instead of making one.
	Import *ImportedVpc
}

// NetworkStack is the environment's network: a VPC over two availability
// zones (public subnets for the load balancer, private subnets with egress
// for everything else) and the security groups between the parts.
type NetworkStack struct {
	awscdk.Stack
	Vpc awsec2.IVpc
	// LoadBalancerSG admits clients; RelaySG admits the load balancer,
	// the agent tasks and the Lambdas on RelayPort; AgentTaskSG and
	// LambdaSG admit nothing; FileSystemSG admits NFS from the agent
	// tasks.
	LoadBalancerSG awsec2.SecurityGroup
	RelaySG        awsec2.SecurityGroup
	AgentTaskSG    awsec2.SecurityGroup
	AgentHostSG    awsec2.SecurityGroup
	LambdaSG       awsec2.SecurityGroup
	FileSystemSG   awsec2.SecurityGroup
}

// NewNetworkStack makes the network of one environment.
func NewNetworkStack(scope constructs.Construct, id string, props *NetworkStackProps) *NetworkStack {
	stack := awscdk.NewStack(scope, &id, &props.StackProps)
	s := &NetworkStack{Stack: stack}

	if imp := props.Import; imp != nil {
		// Imported by its attributes, not looked up: no AWS call at synth.
		s.Vpc = awsec2.Vpc_FromVpcAttributes(stack, jsii.String("Vpc"), &awsec2.VpcAttributes{
			VpcId:             jsii.String(imp.ID),
			AvailabilityZones: jsii.Strings(imp.AvailabilityZones...),
			PrivateSubnetIds:  jsii.Strings(imp.PrivateSubnetIDs...),
			PublicSubnetIds:   jsii.Strings(imp.PublicSubnetIDs...),
		})
	} else {
		vpc := awsec2.NewVpc(stack, jsii.String("Vpc"), &awsec2.VpcProps{
			MaxAzs:      jsii.Number(2),
			NatGateways: jsii.Number(props.Env.NatGateways),
			SubnetConfiguration: &[]*awsec2.SubnetConfiguration{
				{Name: jsii.String("public"), SubnetType: awsec2.SubnetType_PUBLIC, CidrMask: jsii.Number(24)},
				{Name: jsii.String("private"), SubnetType: awsec2.SubnetType_PRIVATE_WITH_EGRESS,
					CidrMask: jsii.Number(20)},
			},
		})
		flowLogs := awslogs.NewLogGroup(stack, jsii.String("VpcFlowLogs"), &awslogs.LogGroupProps{
			LogGroupName:  jsii.String("/aishell/" + props.Env.Name + "/vpc-flow"),
			Retention:     props.Env.LogRetention,
			RemovalPolicy: awscdk.RemovalPolicy_DESTROY,
		})
		vpc.AddFlowLog(jsii.String("FlowLog"), &awsec2.FlowLogOptions{
			Destination: awsec2.FlowLogDestination_ToCloudWatchLogs(flowLogs, nil),
			TrafficType: awsec2.FlowLogTrafficType_REJECT,
		})
		s.Vpc = vpc
	}

	sg := func(name, description string) awsec2.SecurityGroup {
		return awsec2.NewSecurityGroup(stack, jsii.String(name), &awsec2.SecurityGroupProps{
			Vpc:              s.Vpc,
			Description:      jsii.String(description),
			AllowAllOutbound: jsii.Bool(true),
		})
	}
	s.LoadBalancerSG = sg("LoadBalancerSG", "AI Shell "+props.Env.Name+" relay load balancer: clients")
	s.RelaySG = sg("RelaySG", "AI Shell "+props.Env.Name+" relay tasks")
	s.AgentTaskSG = sg("AgentTaskSG", "AI Shell "+props.Env.Name+" agent tasks (awsvpc)")
	s.AgentHostSG = sg("AgentHostSG", "AI Shell "+props.Env.Name+" agent container instances")
	s.LambdaSG = sg("LambdaSG", "AI Shell "+props.Env.Name+" control plane Lambdas")
	s.FileSystemSG = sg("FileSystemSG", "AI Shell "+props.Env.Name+" EFS mount targets")

	relayPort := awsec2.Port_Tcp(jsii.Number(RelayPort))
	s.LoadBalancerSG.AddIngressRule(awsec2.Peer_AnyIpv4(), awsec2.Port_Tcp(jsii.Number(443)),
		jsii.String("clients over TLS"), nil)
	s.LoadBalancerSG.AddIngressRule(awsec2.Peer_AnyIpv4(), awsec2.Port_Tcp(jsii.Number(80)),
		jsii.String("clients over HTTP (redirected to TLS when a certificate is set)"), nil)
	s.RelaySG.AddIngressRule(s.LoadBalancerSG, relayPort, jsii.String("load balancer to relay"), nil)
	s.RelaySG.AddIngressRule(s.AgentTaskSG, relayPort, jsii.String("agent tasks to relay"), nil)
	s.RelaySG.AddIngressRule(s.LambdaSG, relayPort, jsii.String("Lambdas to relay control API"), nil)
	s.RelaySG.AddIngressRule(s.RelaySG, relayPort,
		jsii.String("relay to relay: a client forwarded to its session's relay"), nil)
	s.FileSystemSG.AddIngressRule(s.AgentTaskSG, awsec2.Port_Tcp(jsii.Number(2049)),
		jsii.String("NFS from agent tasks"), nil)
	return s
}
