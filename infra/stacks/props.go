// Package stacks is the AWS CDK app of AI Shell: the stacks of one
// environment (stage or prod) and the settings that differ between them.
//
// One environment is six stacks, each in its own file, deployed in this
// order (each uses what the ones before it made):
//
//	NetworkStack       network.go       VPC (or an imported one), security groups
//	DataStack          data.go          EFS and the shared access point, tables, keys, log groups
//	ClusterStack       cluster.go       ECS cluster, agent instances, the agent task definition
//	ControlPlaneStack  controlplane.go  Lambdas, HTTP API, state machines, schedules
//	RelayStack         relay.go         the relay on Fargate behind a load balancer
//	MonitoringStack    monitoring.go    metric filters, query definitions, dashboard, alarms
//
// Build (app.go) assembles them from an EnvironmentProps and the context
// values of `cdk synth -c ...`.
package stacks

import (
	"fmt"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslogs"
)

// EnvironmentProps is what differs between environments: sizes, counts
// and how long things are kept. The two values are Stage and Prod.
type EnvironmentProps struct {
	// Name is the environment's name: stage or prod. It names every
	// stack, log group and state machine, and roots the shared access
	// point at /workspaces/{Name}.
	Name string

	// NatGateways is how many NAT gateways a new VPC gets (one per AZ in
	// prod, so that one AZ's failure leaves the other's egress).
	NatGateways int

	// AgentInstanceType is the EC2 instance type (arm64, Graviton) of the
	// agent tasks' capacity; AgentMinInstances and AgentMaxInstances
	// bound its Auto Scaling group.
	AgentInstanceType string
	AgentMinInstances int
	AgentMaxInstances int

	// RelayMinTasks and RelayMaxTasks bound the relay service's
	// auto-scaling. The load balancer sends a client to any relay; one that
	// does not own the session forwards the socket to the one that does.
	RelayMinTasks int
	RelayMaxTasks int

	// WarmPoolSize is how many warm tasks each relay keeps (R8); 0
	// switches the pool off.
	WarmPoolSize int

	// LogRetention is how long every log group keeps its events.
	LogRetention awslogs.RetentionDays

	// RemovalPolicy applies to what holds users' data (EFS, tables): prod
	// keeps it when the stack goes; stage may drop it.
	RemovalPolicy awscdk.RemovalPolicy
}

// Stage is the staging environment: small and cheap, data disposable.
var Stage = EnvironmentProps{
	Name:              "stage",
	NatGateways:       1,
	AgentInstanceType: "m7g.large",
	AgentMinInstances: 1,
	AgentMaxInstances: 4,
	RelayMinTasks:     1,
	RelayMaxTasks:     2,
	WarmPoolSize:      1,
	LogRetention:      awslogs.RetentionDays_ONE_MONTH,
	RemovalPolicy:     awscdk.RemovalPolicy_DESTROY,
}

// Prod is the production environment: two NAT gateways, more capacity,
// logs kept for three months and data kept when a stack is deleted.
var Prod = EnvironmentProps{
	Name:              "prod",
	NatGateways:       2,
	AgentInstanceType: "m7g.xlarge",
	AgentMinInstances: 2,
	AgentMaxInstances: 20,
	RelayMinTasks:     2,
	RelayMaxTasks:     10,
	WarmPoolSize:      4,
	LogRetention:      awslogs.RetentionDays_THREE_MONTHS,
	RemovalPolicy:     awscdk.RemovalPolicy_RETAIN,
}

// Environments lists the environments by name.
var Environments = map[string]EnvironmentProps{
	Stage.Name: Stage,
	Prod.Name:  Prod,
}

// EnvironmentNamed returns the props of the named environment.
func EnvironmentNamed(name string) (EnvironmentProps, error) {
	p, ok := Environments[name]
	if !ok {
		return EnvironmentProps{}, fmt.Errorf(
			"unknown environment %q: pass -c env=stage or -c env=prod", name)
	}
	return p, nil
}

// prefix is the name prefix of the environment's named resources.
func (p EnvironmentProps) prefix() string { return "aishell-" + p.Name }
