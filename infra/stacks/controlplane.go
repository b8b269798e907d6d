package stacks

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsapigatewayv2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsapigatewayv2authorizers"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsapigatewayv2integrations"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsec2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsevents"
	"github.com/aws/aws-cdk-go/awscdk/v2/awseventstargets"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslambda"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslogs"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsstepfunctions"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"

	"github.com/aishell/aishell/shared/awsops"
	"github.com/aishell/aishell/shared/sfnflow"
)

// The Lambdas, by the folder `make lambdas` builds each into
// (bin/lambdas/{name}/bootstrap).
const (
	SessionFunction = "session"
	RestartFunction = "restart"
	RefillFunction  = "refill"
	ReportFunction  = "report"
)

// MissingCodeError says a Lambda's binary has not been built.
type MissingCodeError struct{ Path string }

func (e *MissingCodeError) Error() string {
	return fmt.Sprintf("Lambda code %s is missing: run `make lambdas` before synth", e.Path)
}

// CheckLambdaCode returns a *MissingCodeError for the first Lambda whose
// bootstrap binary is not under dir. The report's is optional (see
// HasReportCode).
func CheckLambdaCode(dir string) error {
	for _, name := range []string{SessionFunction, RestartFunction, RefillFunction} {
		if !hasCode(dir, name) {
			return &MissingCodeError{Path: filepath.Join(dir, name, "bootstrap")}
		}
	}
	return nil
}

// HasReportCode reports whether the report Lambda's binary is under dir
// (`make lambdas` builds it): without it the stack leaves the report Lambda and its schedule
// out and says so in a synth warning.
func HasReportCode(dir string) bool { return hasCode(dir, ReportFunction) }

func hasCode(dir, name string) bool {
	st, err := os.Stat(filepath.Join(dir, name, "bootstrap"))
	return err == nil && !st.IsDir()
}

// JWTSettings names the identity provider whose tokens the HTTP API takes.
// Empty fields become stack parameters, given at deploy time.
type JWTSettings struct {
	Issuer    string
	Audiences []string
}

// ControlPlaneStackProps configures a ControlPlaneStack.
type ControlPlaneStackProps struct {
	awscdk.StackProps
	Env     EnvironmentProps
	Network *NetworkStack
	Data    *DataStack
	Cluster *ClusterStack
	// LambdaCodeDir holds {name}/bootstrap for each Lambda.
	LambdaCodeDir     string
	JWT               JWTSettings
	SharedAccessPoint bool
	// AllowedOrigins are the origins the browser may call the API from.
	AllowedOrigins []string
}

// ControlPlaneStack is the serverless control plane: the session,
// restart, refill and report Lambdas, the HTTP API in front of the session
// Lambda, the restart and refill state machines and their schedules.
type ControlPlaneStack struct {
	awscdk.Stack
	// Report is nil when its code is missing (HasReportCode).
	Session, Restart, Refill, Report awslambda.Function
	API                              awsapigatewayv2.HttpApi
	RestartMachine, RefillMachine    awsstepfunctions.StateMachine
	// RestartMachineName and RefillMachineName are fixed, so that other
	// stacks name the machines' ARNs without a reference cycle.
	RestartMachineName, RefillMachineName string
}

// NewControlPlaneStack makes the control plane. It fails when a Lambda's
// binary is missing or a listed AWS call has no known scope.
func NewControlPlaneStack(scope constructs.Construct, id string,
	props *ControlPlaneStackProps) (*ControlPlaneStack, error) {
	if err := CheckLambdaCode(props.LambdaCodeDir); err != nil {
		return nil, err
	}
	stack := awscdk.NewStack(scope, &id, &props.StackProps)
	env, data, cl := props.Env, props.Data, props.Cluster
	s := &ControlPlaneStack{
		Stack:              stack,
		RestartMachineName: env.prefix() + "-restart",
		RefillMachineName:  env.prefix() + "-refill",
	}
	runner := taskRunnerEnv(env, props.Network, data, cl, props.SharedAccessPoint)
	common := map[string]*string{
		"ENV_NAME":         jsii.String(env.Name),
		"KEYS_SECRET_ID":   data.Keys.SecretArn(),
		"LOG_LEVEL":        jsii.String("info"),
		"ENABLE_WARM_POOL": jsii.String(strconv.FormatBool(env.WarmPoolSize > 0)),
		"WARM_POOL_SIZE":   jsii.String(strconv.Itoa(env.WarmPoolSize)),
	}
	withEnv := func(parts ...map[string]*string) map[string]*string {
		out := map[string]*string{}
		for _, p := range parts {
			for k, v := range p {
				out[k] = v
			}
		}
		return out
	}
	scopeOf := newScope(env, data, cl, []string{s.RestartMachineName, s.RefillMachineName},
		props.SharedAccessPoint)

	fns := []struct {
		dst       *awslambda.Function
		id, name  string
		component string
		env       map[string]*string
		timeout   float64
		memory    float64
		inVpc     bool
	}{
		{&s.Session, "SessionFunction", SessionFunction, awsops.SessionLambda,
			withEnv(common, data.Tables.Env(), runner), 29, 512, true},
		{&s.Restart, "RestartFunction", RestartFunction, awsops.RestartLambda,
			withEnv(common, data.Tables.Env(), runner), 30, 512, true},
		{&s.Refill, "RefillFunction", RefillFunction, awsops.RefillLambda,
			withEnv(common, data.Tables.Env(), runner), 120, 512, true},
		{&s.Report, "ReportFunction", ReportFunction, awsops.ReportLambda,
			withEnv(map[string]*string{
				"ENV_NAME":          jsii.String(env.Name),
				"LOG_LEVEL":         jsii.String("info"),
				"REPORT_LOG_GROUPS": jsii.String(strings.Join(scopeOf.LogGroupNames, ",")),
				"REPORT_BUCKET":     data.Reports.BucketName(),
				"REPORT_TOPIC_ARN":  data.ReportTopic.TopicArn(),
			}), 300, 1024, false},
	}
	withReport := HasReportCode(props.LambdaCodeDir)
	if !withReport {
		fns = fns[:len(fns)-1]
		awscdk.Annotations_Of(stack).AddWarningV2(jsii.String("aishell:no-report-lambda"), jsii.String(
			"report Lambda left out: "+filepath.Join(props.LambdaCodeDir, ReportFunction, "bootstrap")+
				" is missing (make lambdas did not build it)"), nil)
	}
	for _, f := range fns {
		role := awsiam.NewRole(stack, jsii.String(f.id+"Role"), &awsiam.RoleProps{
			AssumedBy:   awsiam.NewServicePrincipal(jsii.String("lambda.amazonaws.com"), nil),
			Description: jsii.String("AI Shell " + env.Name + " " + f.name + " Lambda (" + f.component + ")"),
		})
		data.Logs.Lambdas.GrantWrite(role)
		if err := grantListed(role, f.component, scopeOf); err != nil {
			return nil, err
		}
		fp := &awslambda.FunctionProps{
			FunctionName: jsii.String(env.prefix() + "-" + f.name),
			Description:  jsii.String("AI Shell " + env.Name + ": " + f.name),
			Runtime:      awslambda.Runtime_PROVIDED_AL2023(),
			Architecture: awslambda.Architecture_ARM_64(),
			Handler:      jsii.String("bootstrap"),
			Code:         awslambda.Code_FromAsset(jsii.String(filepath.Join(props.LambdaCodeDir, f.name)), nil),
			Role:         role,
			Environment:  &f.env,
			Timeout:      awscdk.Duration_Seconds(jsii.Number(f.timeout)),
			MemorySize:   jsii.Number(f.memory),
			Tracing:      awslambda.Tracing_ACTIVE,
			LogGroup:     data.Logs.Lambdas,
		}
		if f.inVpc {
			// The Lambda service makes the function's network interfaces
			// with its role; EC2 scopes none of these to a resource.
			role.AddToPrincipalPolicy(awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
				Actions: jsii.Strings("ec2:CreateNetworkInterface", "ec2:DescribeNetworkInterfaces",
					"ec2:DescribeSubnets", "ec2:DeleteNetworkInterface", "ec2:AssignPrivateIpAddresses",
					"ec2:UnassignPrivateIpAddresses"),
				Resources: jsii.Strings("*"),
			}))
			// In the VPC to reach the relays' control API (RelaySG admits
			// LambdaSG on RelayPort); AWS APIs through the NAT.
			fp.Vpc = props.Network.Vpc
			fp.VpcSubnets = &awsec2.SubnetSelection{SubnetType: awsec2.SubnetType_PRIVATE_WITH_EGRESS}
			fp.SecurityGroups = &[]awsec2.ISecurityGroup{props.Network.LambdaSG}
		}
		*f.dst = awslambda.NewFunction(stack, jsii.String(f.id), fp)
	}

	s.RestartMachine = s.newMachine(env, "RestartStateMachine", s.RestartMachineName,
		sfnflow.RestartDefinition(), sfnflow.RestartFunctionVar, s.Restart, data.Logs.Restart)
	s.RefillMachine = s.newMachine(env, "RefillStateMachine", s.RefillMachineName,
		sfnflow.RefillDefinition(), sfnflow.RefillFunctionVar, s.Refill, data.Logs.Refill)

	awsevents.NewRule(stack, jsii.String("RefillSchedule"), &awsevents.RuleProps{
		Description: jsii.String("Keep the warm pool at its target (R8)"),
		Schedule:    awsevents.Schedule_Rate(awscdk.Duration_Minutes(jsii.Number(1))),
		Targets: &[]awsevents.IRuleTarget{awseventstargets.NewSfnStateMachine(s.RefillMachine,
			&awseventstargets.SfnStateMachineProps{})},
	})
	if withReport {
		awsevents.NewRule(stack, jsii.String("DailyReportSchedule"), &awsevents.RuleProps{
			Description: jsii.String("The daily report of the day before (R14)"),
			Schedule: awsevents.Schedule_Cron(&awsevents.CronOptions{
				Minute: jsii.String("15"), Hour: jsii.String("0"),
			}),
			Targets: &[]awsevents.IRuleTarget{awseventstargets.NewLambdaFunction(s.Report,
				&awseventstargets.LambdaFunctionProps{})},
		})
	}

	s.API = s.newSessionAPI(env, data, props.JWT, props.AllowedOrigins)
	awscdk.NewCfnOutput(stack, jsii.String("SessionApiUrl"), &awscdk.CfnOutputProps{
		Value:       s.API.ApiEndpoint(),
		Description: jsii.String("Base URL of the session API (POST /sessions)"),
	})
	awscdk.NewCfnOutput(stack, jsii.String("RestartStateMachineArn"), &awscdk.CfnOutputProps{
		Value: s.RestartMachine.StateMachineArn(),
	})
	return s, nil
}

// newMachine makes a state machine from an ASL definition whose ${varName}
// is fn's ARN, logging every event with its data and tracing with X-Ray.
func (s *ControlPlaneStack) newMachine(env EnvironmentProps, id, name, definition, varName string,
	fn awslambda.Function, group awslogs.LogGroup) awsstepfunctions.StateMachine {
	sm := awsstepfunctions.NewStateMachine(s.Stack, jsii.String(id), &awsstepfunctions.StateMachineProps{
		StateMachineName:        jsii.String(name),
		StateMachineType:        awsstepfunctions.StateMachineType_STANDARD,
		DefinitionBody:          awsstepfunctions.DefinitionBody_FromString(jsii.String(definition)),
		DefinitionSubstitutions: &map[string]*string{varName: fn.FunctionArn()},
		TracingEnabled:          jsii.Bool(true),
		Logs: &awsstepfunctions.LogOptions{
			Destination:          group,
			Level:                awsstepfunctions.LogLevel_ALL,
			IncludeExecutionData: jsii.Bool(true),
		},
	})
	// The definition is a string, so CDK cannot see which function it
	// calls: grant the invocation here.
	fn.GrantInvoke(sm)
	return sm
}

// newSessionAPI is the HTTP API of protocol.md in front of the session
// Lambda, every route behind the JWT authorizer, with an access log.
func (s *ControlPlaneStack) newSessionAPI(env EnvironmentProps, data *DataStack, jwt JWTSettings,
	origins []string) awsapigatewayv2.HttpApi {
	issuer := jsii.String(jwt.Issuer)
	if jwt.Issuer == "" {
		issuer = awscdk.NewCfnParameter(s.Stack, jsii.String("JwtIssuer"), &awscdk.CfnParameterProps{
			Type:           jsii.String("String"),
			Description:    jsii.String("Issuer URL of the identity provider whose JWTs the session API accepts"),
			AllowedPattern: jsii.String("https://.+"),
		}).ValueAsString()
	}
	audiences := jsii.Strings(jwt.Audiences...)
	if len(jwt.Audiences) == 0 {
		audiences = awscdk.NewCfnParameter(s.Stack, jsii.String("JwtAudience"), &awscdk.CfnParameterProps{
			Type:        jsii.String("CommaDelimitedList"),
			Description: jsii.String("Audiences (client ids) the session API accepts in JWTs"),
		}).ValueAsList()
	}
	authorizer := awsapigatewayv2authorizers.NewHttpJwtAuthorizer(jsii.String("SessionJwtAuthorizer"), issuer,
		&awsapigatewayv2authorizers.HttpJwtAuthorizerProps{
			AuthorizerName: jsii.String(env.prefix() + "-jwt"),
			JwtAudience:    audiences,
		})
	if len(origins) == 0 {
		origins = []string{"*"}
	}
	api := awsapigatewayv2.NewHttpApi(s.Stack, jsii.String("SessionApi"), &awsapigatewayv2.HttpApiProps{
		ApiName:     jsii.String(env.prefix() + "-sessions"),
		Description: jsii.String("AI Shell " + env.Name + " session API (R1)"),
		CorsPreflight: &awsapigatewayv2.CorsPreflightOptions{
			AllowOrigins: jsii.Strings(origins...),
			AllowHeaders: jsii.Strings("authorization", "content-type"),
			AllowMethods: &[]awsapigatewayv2.CorsHttpMethod{
				awsapigatewayv2.CorsHttpMethod_GET, awsapigatewayv2.CorsHttpMethod_POST,
				awsapigatewayv2.CorsHttpMethod_DELETE,
			},
			MaxAge: awscdk.Duration_Hours(jsii.Number(1)),
		},
	})
	integration := awsapigatewayv2integrations.NewHttpLambdaIntegration(jsii.String("SessionIntegration"),
		s.Session, nil)
	route := func(path string, method awsapigatewayv2.HttpMethod) {
		api.AddRoutes(&awsapigatewayv2.AddRoutesOptions{
			Path:        jsii.String(path),
			Methods:     &[]awsapigatewayv2.HttpMethod{method},
			Integration: integration,
			Authorizer:  authorizer,
		})
	}
	route("/sessions", awsapigatewayv2.HttpMethod_POST)
	route("/sessions/{id}", awsapigatewayv2.HttpMethod_GET)
	route("/sessions/{id}", awsapigatewayv2.HttpMethod_DELETE)

	stage := api.DefaultStage().Node().DefaultChild().(awsapigatewayv2.CfnStage)
	stage.SetAccessLogSettings(&awsapigatewayv2.CfnStage_AccessLogSettingsProperty{
		DestinationArn: data.Logs.API.LogGroupArn(),
		Format: jsii.String(`{"requestId":"$context.requestId","ip":"$context.identity.sourceIp",` +
			`"requestTime":"$context.requestTime","routeKey":"$context.routeKey",` +
			`"status":"$context.status","latency_ms":"$context.responseLatency",` +
			`"integrationError":"$context.integrationErrorMessage",` +
			`"authorizerError":"$context.authorizer.error","sub":"$context.authorizer.claims.sub"}`),
	})
	stage.SetDefaultRouteSettings(&awsapigatewayv2.CfnStage_RouteSettingsProperty{
		ThrottlingBurstLimit: jsii.Number(100),
		ThrottlingRateLimit:  jsii.Number(50),
	})
	return api
}
