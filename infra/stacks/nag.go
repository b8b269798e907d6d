package stacks

import (
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"
	"github.com/cdklabs/cdk-nag-go/cdknag/v2"
)

// A nag finding accepted by design: the rule, the reason, and for the
// granular rules (IAM4, IAM5) the exact findings it covers.
type accepted struct {
	rule, reason string
	// appliesTo are literal findings ("Resource::*") or, with the prefix
	// "regex:", patterns over them.
	appliesTo []string
}

// suppress records accepted findings on construct and its children.
func suppress(c constructs.IConstruct, findings ...accepted) {
	list := make([]*cdknag.NagPackSuppression, 0, len(findings))
	for _, f := range findings {
		s := &cdknag.NagPackSuppression{Id: jsii.String(f.rule), Reason: jsii.String(f.reason)}
		if len(f.appliesTo) > 0 {
			to := make([]any, 0, len(f.appliesTo))
			for _, a := range f.appliesTo {
				if len(a) > 6 && a[:6] == "regex:" {
					to = append(to, &cdknag.RegexAppliesTo{Regex: jsii.String(a[6:])})
				} else {
					to = append(to, a)
				}
			}
			s.AppliesTo = &to
		}
		list = append(list, s)
	}
	cdknag.NagSuppressions_AddResourceSuppressions(c, &list, jsii.Bool(true))
}

// Reasons shared by several roles.
var (
	xrayWrite = accepted{"AwsSolutions-IAM5",
		"X-Ray's PutTraceSegments and PutTelemetryRecords (and the sampling reads) take no resource; " +
			"active tracing (R16) needs them",
		[]string{"Resource::*"}}
	tableIndexes = accepted{"AwsSolutions-IAM5",
		"Queries of the byUser and byRelay indexes are authorized on the index ARNs (table/index/*) " +
			"of this environment's own tables",
		[]string{`regex:/^Resource::<(Sessions|WarmTasks)Table[0-9A-F]{8}\.Arn>\/index\/\*$/`}}
	agentTasks = accepted{"AwsSolutions-IAM5",
		"Tasks get their ARNs at RunTask: StopTask and DescribeTasks are on task/{cluster}/* and " +
			"conditioned on ecs:cluster being this environment's cluster; ListTasks names no task and is " +
			"scoped by the same condition; RunTask is on every revision of the agent family " +
			"(family:*), per-user families included in per-user mode",
		[]string{
			`regex:/^Resource::arn:<AWS::Partition>:ecs:<AWS::Region>:<AWS::AccountId>:task\/<Cluster[0-9A-F]{8}>\/\*$/`,
			`regex:/^Resource::arn:<AWS::Partition>:ecs:<AWS::Region>:<AWS::AccountId>:task-definition\/aishell-[a-z]+-agent\*?:\*$/`,
			"Resource::*",
		}}
	perUserMode = accepted{"AwsSolutions-IAM5",
		"Per-user mode (R9) makes one access point per user at run time: CreateAccessPoint is on the " +
			"file system, and the access points it tags and lists are not known at deploy time; " +
			"RegisterTaskDefinition and DescribeTaskDefinition take no resource",
		[]string{
			`regex:/^Resource::arn:<AWS::Partition>:elasticfilesystem:<AWS::Region>:<AWS::AccountId>:access-point\/\*$/`,
			"Resource::*",
		}}
	lambdaNetwork = accepted{"AwsSolutions-IAM5",
		"The Lambda service creates and deletes the function's VPC network interfaces with its role; " +
			"these EC2 actions are not resource-scoped in AWSLambdaVPCAccessExecutionRole either",
		[]string{"Resource::*"}}
	taskTokens = accepted{"AwsSolutions-IAM5",
		"SendTaskSuccess takes no resource: the task token names the execution",
		[]string{"Resource::*"}}
	executions = accepted{"AwsSolutions-IAM5",
		"Executions get their names at StartExecution: execution:{machine}:* of this environment's " +
			"restart and refill machines",
		[]string{`regex:/^Resource::arn:<AWS::Partition>:states:<AWS::Region>:<AWS::AccountId>:execution:aishell-[a-z]+-(restart|refill):\*$/`}}
	ecrLogin = accepted{"AwsSolutions-IAM5",
		"ecr:GetAuthorizationToken takes no resource; image pulls themselves are scoped to the asset repository",
		[]string{"Resource::*"}}
	containerEnv = accepted{"AwsSolutions-ECS2",
		"The environment holds names and ARNs only (tables, cluster, secret ARN), never a secret value; " +
			"the keys are read from Secrets Manager at run time", nil}
)

// suppressFindings records, with its reason, each cdk-nag finding that is
// accepted by design. Every other finding fails `cdk synth`.
func suppressFindings(e *Environment) {
	net, data, cl, cp, relay := e.Network, e.Data, e.Cluster, e.ControlPlane, e.Relay

	suppress(net.LoadBalancerSG, accepted{"AwsSolutions-EC23",
		"The relay's load balancer is the public entry for browsers: 443 (and 80, redirected to 443 " +
			"when a certificate is set) from anywhere", nil})

	suppress(data.Reports, accepted{"AwsSolutions-S1",
		"Only the report Lambda writes here, with its own role; a second bucket for the access " +
			"log of a report bucket adds nothing CloudTrail's data events cannot give", nil})
	suppress(data.Keys, accepted{"AwsSolutions-SMG4",
		"Rotation is shared/secrets.Rotate (keeps the older keys so live tickets stay valid); no " +
			"rotation Lambda runs it yet", nil})
	suppress(data.Stack.Node().FindChild(jsii.String("KeysInitializer")), accepted{"AwsSolutions-L1",
		"nodejs24.x is the newest Node.js runtime that CloudFormation's resource schema (cfn-lint " +
			"1.51) accepts; nag's list already names a later one", nil})
	suppress(data.Stack.Node().FindChild(jsii.String("KeysInitializerRole")), accepted{"AwsSolutions-IAM5",
		"Writes to its own log group's streams (log-group:name:*)",
		[]string{`regex:/^Resource::<InfraLogs[0-9A-F]{8}\.Arn>:\*$/`, "regex:/^Resource::.*:\\*$/"}})

	suppress(cl.LaunchTemplate.Role(),
		accepted{"AwsSolutions-IAM4",
			"The ECS agent's documented instance policy and SSM's for operator access without SSH; " +
				"both are AWS-maintained and change with the agent",
			[]string{
				"Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonEC2ContainerServiceforEC2Role",
				"Policy::arn:<AWS::Partition>:iam::aws:policy/AmazonSSMManagedInstanceCore",
			}},
		accepted{"AwsSolutions-IAM5",
			"The ECS agent's own calls (Poll, Submit*, DiscoverPollEndpoint, StartTelemetrySession) and " +
				"ecr:GetAuthorizationToken take no resource; CDK adds them with the capacity provider",
			[]string{"Resource::*", "Action::ecs:Submit*"}})
	suppress(cl.Stack.Node().FindChild(jsii.String("AgentInstances")), accepted{"AwsSolutions-AS3",
		"The ECS capacity provider drives this group; its scaling shows in ECS events and the " +
			"cluster's Container Insights, and no one acts on per-instance notifications", nil})
	suppress(cl.AgentTask, containerEnv, ecrLogin)

	for _, fn := range []constructs.IConstruct{cp.Session.Role(), cp.Restart.Role(), cp.Refill.Role()} {
		suppress(fn, xrayWrite, tableIndexes, agentTasks, perUserMode, lambdaNetwork, taskTokens,
			logStreams)
	}
	if cp.Report != nil {
		suppress(cp.Report.Role(), xrayWrite, logStreams, accepted{"AwsSolutions-IAM5",
			"The report's objects get their keys (dates) at run time: PutObject on the reports bucket's objects",
			[]string{`regex:/^Resource::<ReportsBucket[0-9A-F]{8}\.Arn>\/\*$/`, `regex:/^Resource::.*ReportsBucket.*\/\*$/`}})
	}
	for _, sm := range []constructs.IConstruct{cp.RestartMachine.Role(), cp.RefillMachine.Role()} {
		suppress(sm,
			accepted{"AwsSolutions-IAM5",
				"Step Functions' log delivery (CreateLogDelivery and the rest) and X-Ray take no resource; " +
					"CDK grants them for logging level ALL and tracing",
				[]string{"Resource::*"}},
			accepted{"AwsSolutions-IAM5",
				"Invoking the steps Lambda includes its versions (function ARN:*)",
				[]string{`regex:/^Resource::<(Restart|Refill)Function[0-9A-F]{8}\.Arn>:\*$/`}})
	}

	suppress(relay.Service.TaskDefinition(), containerEnv, ecrLogin)
	suppress(relay.Service.TaskDefinition().TaskRole(), xrayWrite, tableIndexes, agentTasks, perUserMode,
		taskTokens, executions)
	suppress(relay.LoadBalancer, accepted{"AwsSolutions-ELB2",
		"Access logs need the region's ELB account in the bucket policy, which an " +
			"environment-agnostic synth cannot name; connections show in the relay's logs " +
			"(task_lifecycle, ws_disconnect) and the load balancer's metrics", nil})
}

// logStreams covers a role's use of the streams of this environment's log
// groups (log-group:name:*): its own writes, and the report's reads.
var logStreams = accepted{"AwsSolutions-IAM5",
	"Log events live in the streams of a log group (log-group:name:*); the groups are this environment's",
	[]string{`regex:/^Resource::.*LambdaLogs[0-9A-F]{8}.*:\*$/`, `regex:/^Resource::arn:.*log-group:.*:\*$/`}}
