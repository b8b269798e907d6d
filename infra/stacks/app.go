package stacks

import (
	"fmt"
	"strings"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/jsii-runtime-go"
	"github.com/cdklabs/cdk-nag-go/cdknag/v2"
)

// Options are the settings of one synth: the environment and what the
// context (`cdk synth -c key=value`) adds to it.
type Options struct {
	Env EnvironmentProps
	// Vpc, when set, imports an existing VPC instead of making one.
	Vpc *ImportedVpc
	TLS TLSSettings
	JWT JWTSettings
	// SharedAccessPoint is true unless the context says
	// useSharedAccessPoint=false (R9's per-user mode).
	SharedAccessPoint bool
	// AllowedOrigins are the browser origins of the session API's CORS.
	AllowedOrigins []string
	// SourceDir is the repository root (image build context);
	// LambdaCodeDir holds {name}/bootstrap of each Lambda.
	SourceDir     string
	LambdaCodeDir string
}

// Context keys read by OptionsFromContext.
const (
	CtxEnv            = "env"
	CtxVpcID          = "vpcId"
	CtxVpcAZs         = "vpcAzs"
	CtxVpcPrivate     = "vpcPrivateSubnetIds"
	CtxVpcPublic      = "vpcPublicSubnetIds"
	CtxCertificateArn = "certificateArn"
	CtxRelayDomain    = "relayDomain"
	CtxJwtIssuer      = "jwtIssuer"
	CtxJwtAudience    = "jwtAudience"
	CtxSharedAP       = "useSharedAccessPoint"
	CtxAllowedOrigins = "allowedOrigins"
	CtxLambdaCodeDir  = "lambdaCodeDir"
	CtxSourceDir      = "sourceDir"
)

// DefaultLambdaCode is where `make lambdas` puts the Lambdas' binaries.
const DefaultLambdaCode = "bin/lambdas"

// OptionsFromContext reads Options from the app's context values. Lists
// are comma separated. Paths default to the current directory's bin/lambdas
// and the current directory (the repository root, where cdk.json is).
func OptionsFromContext(app awscdk.App) (Options, error) {
	get := func(key string) string {
		v := app.Node().TryGetContext(jsii.String(key))
		if v == nil {
			return ""
		}
		return strings.TrimSpace(fmt.Sprint(v))
	}
	list := func(key string) []string {
		var out []string
		for _, v := range strings.Split(get(key), ",") {
			if v = strings.TrimSpace(v); v != "" {
				out = append(out, v)
			}
		}
		return out
	}

	env, err := EnvironmentNamed(get(CtxEnv))
	if err != nil {
		return Options{}, err
	}
	o := Options{
		Env:               env,
		TLS:               TLSSettings{CertificateArn: get(CtxCertificateArn), DomainName: get(CtxRelayDomain)},
		JWT:               JWTSettings{Issuer: get(CtxJwtIssuer), Audiences: list(CtxJwtAudience)},
		SharedAccessPoint: get(CtxSharedAP) != "false",
		AllowedOrigins:    list(CtxAllowedOrigins),
		SourceDir:         ".",
		LambdaCodeDir:     DefaultLambdaCode,
	}
	if v := get(CtxSourceDir); v != "" {
		o.SourceDir = v
	}
	if v := get(CtxLambdaCodeDir); v != "" {
		o.LambdaCodeDir = v
	}
	if id := get(CtxVpcID); id != "" {
		o.Vpc = &ImportedVpc{
			ID:                id,
			AvailabilityZones: list(CtxVpcAZs),
			PrivateSubnetIDs:  list(CtxVpcPrivate),
			PublicSubnetIDs:   list(CtxVpcPublic),
		}
		n := len(o.Vpc.AvailabilityZones)
		if n < 2 || len(o.Vpc.PrivateSubnetIDs) != n || len(o.Vpc.PublicSubnetIDs) != n {
			return Options{}, fmt.Errorf("vpcId needs %s (two or more), and as many %s and %s, one per zone",
				CtxVpcAZs, CtxVpcPrivate, CtxVpcPublic)
		}
	}
	if o.TLS.DomainName != "" && o.TLS.CertificateArn == "" {
		return Options{}, fmt.Errorf("%s needs %s: the relay's public name is served over TLS",
			CtxRelayDomain, CtxCertificateArn)
	}
	return o, nil
}

// Environment is the stacks of one environment.
type Environment struct {
	Network      *NetworkStack
	Data         *DataStack
	Cluster      *ClusterStack
	ControlPlane *ControlPlaneStack
	Relay        *RelayStack
	Monitoring   *MonitoringStack
}

// Stacks returns the stacks in deployment order.
func (e *Environment) Stacks() []awscdk.Stack {
	return []awscdk.Stack{e.Network.Stack, e.Data.Stack, e.Cluster.Stack, e.ControlPlane.Stack,
		e.Relay.Stack, e.Monitoring.Stack}
}

// Build adds the stacks of one environment to app, with the AwsSolutions
// checks of cdk-nag on all of them: a finding becomes an error annotation
// of the synth unless suppressed with its reason (nag.go).
func Build(app awscdk.App, o Options) (*Environment, error) {
	env := o.Env
	// Environment-agnostic: no account or region, so no lookup at synth.
	props := func(name, description string) awscdk.StackProps {
		return awscdk.StackProps{
			StackName:   jsii.String(env.prefix() + "-" + name),
			Description: jsii.String("AI Shell " + env.Name + ": " + description),
		}
	}
	id := func(name string) string { return "Aishell-" + env.Name + "-" + name }

	e := &Environment{}
	e.Network = NewNetworkStack(app, id("Network"), &NetworkStackProps{
		StackProps: props("network", "VPC and security groups"), Env: env, Import: o.Vpc,
	})
	e.Data = NewDataStack(app, id("Data"), &DataStackProps{
		StackProps: props("data", "EFS with the shared access point, tables, keys, log groups"),
		Env:        env, Network: e.Network,
	})
	e.Cluster = NewClusterStack(app, id("Cluster"), &ClusterStackProps{
		StackProps: props("cluster", "ECS cluster, agent capacity and task definition"),
		Env:        env, Network: e.Network, Data: e.Data, SourceDir: o.SourceDir,
		SharedAccessPoint: o.SharedAccessPoint,
	})
	var err error
	e.ControlPlane, err = NewControlPlaneStack(app, id("ControlPlane"), &ControlPlaneStackProps{
		StackProps: props("control-plane", "Lambdas, session API, state machines, schedules"),
		Env:        env, Network: e.Network, Data: e.Data, Cluster: e.Cluster,
		LambdaCodeDir: o.LambdaCodeDir, JWT: o.JWT, SharedAccessPoint: o.SharedAccessPoint,
		AllowedOrigins: o.AllowedOrigins,
	})
	if err != nil {
		return nil, err
	}
	e.Relay, err = NewRelayStack(app, id("Relay"), &RelayStackProps{
		StackProps: props("relay", "relay service and its load balancer"),
		Env:        env, Network: e.Network, Data: e.Data, Cluster: e.Cluster, ControlPlane: e.ControlPlane,
		SourceDir: o.SourceDir, TLS: o.TLS, SharedAccessPoint: o.SharedAccessPoint,
	})
	if err != nil {
		return nil, err
	}
	e.Monitoring = NewMonitoringStack(app, id("Monitoring"), &MonitoringStackProps{
		StackProps: props("monitoring", "metrics, query definitions, dashboard, alarms"),
		Env:        env, Data: e.Data, ControlPlane: e.ControlPlane, Relay: e.Relay,
	})
	// The dashboard and alarms name the state machine by its fixed name.
	e.Monitoring.AddStackDependency(e.ControlPlane.Stack, jsii.String("alarms on the restart machine"))

	for _, st := range e.Stacks() {
		awscdk.Tags_Of(st).Add(jsii.String("project"), jsii.String("aishell"), tagNotOnListeners)
		awscdk.Tags_Of(st).Add(jsii.String("environment"), jsii.String(env.Name), tagNotOnListeners)
	}
	suppressFindings(e)
	awscdk.Aspects_Of(app).Add(cdknag.NewAwsSolutionsChecks(&cdknag.NagPackProps{Verbose: jsii.Bool(true)}), nil)
	return e, nil
}

// tagNotOnListeners keeps stack tags off the resource types whose
// CloudFormation schema takes no tags (cfn-lint E3002).
var tagNotOnListeners = &awscdk.TagProps{
	ExcludeResourceTypes: jsii.Strings("AWS::ElasticLoadBalancingV2::Listener",
		"AWS::CloudWatch::Dashboard", "AWS::ApplicationAutoScaling::ScalableTarget"),
}
