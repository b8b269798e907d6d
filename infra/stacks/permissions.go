package stacks

import (
	"fmt"
	"sort"
	"strings"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsdynamodb"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/jsii-runtime-go"

	"github.com/aishell/aishell/shared/awsops"
)

// ComponentTag is the tag that names, on each role, the component of
// shared/awsops whose code the role runs (session-lambda, relay, ...).
const ComponentTag = "aishell:component"

// Scope is what one environment's control-plane permissions may reach:
// every statement names these resources, never another environment's.
type Scope struct {
	Env EnvironmentProps
	// ClusterArn and ClusterName are the ECS cluster's.
	ClusterArn  *string
	ClusterName *string
	// TaskFamily is the agent task definition's family; per-user task
	// definitions are TaskFamily-u-{hash} (ecsrunner).
	TaskFamily        string
	SharedAccessPoint bool
	// PassRoles are the agent task's role and execution role, which
	// RunTask and RegisterTaskDefinition hand to ECS.
	PassRoles []*string
	// FileSystemArn is the workspaces' file system.
	FileSystemArn *string
	// TableArns are the four tables' and their indexes' ARNs.
	TableArns []*string
	// SecretArn is the keys' secret.
	SecretArn *string
	// StateMachines are the names of the restart and refill machines.
	StateMachines []string
	// LogGroupNames are the log groups the report reads.
	LogGroupNames []string
	// ReportBucketArn and ReportTopicArn receive the daily report.
	ReportBucketArn *string
	ReportTopicArn  *string
}

// newScope is the scope of one environment's roles: its cluster, agent
// task family and roles, file system, tables, keys and state machines,
// and the two log groups the report reads (by their fixed names, so that
// no reference to DataStack is needed for them).
func newScope(env EnvironmentProps, data *DataStack, cl *ClusterStack, machines []string,
	shared bool) Scope {
	task := cl.AgentTask
	return Scope{
		Env:               env,
		ClusterArn:        cl.Cluster.ClusterArn(),
		ClusterName:       cl.Cluster.ClusterName(),
		TaskFamily:        cl.AgentTaskFamily,
		SharedAccessPoint: shared,
		PassRoles:         []*string{task.TaskRole().RoleArn(), task.ObtainExecutionRole().RoleArn()},
		FileSystemArn:     data.FileSystem.FileSystemArn(),
		TableArns:         tableArns(data.Tables),
		SecretArn:         data.Keys.SecretArn(),
		StateMachines:     machines,
		LogGroupNames:     []string{"/aishell/" + env.Name + "/relay", "/aishell/" + env.Name + "/lambdas"},
		ReportBucketArn:   data.Reports.BucketArn(),
		ReportTopicArn:    data.ReportTopic.TopicArn(),
	}
}

// grantListed gives role exactly the actions that shared/awsops/
// operations.json lists for component, each on this environment's
// resources, plus what those calls need that is not a call of their own
// (iam:PassRole and tagging on create). An action the mapping below does
// not know fails the synth, so a new AWS call cannot go out unscoped.
func grantListed(role awsiam.Role, component string, sc Scope) error {
	awscdk.Tags_Of(role).Add(jsii.String(ComponentTag), jsii.String(component), nil)
	listed, err := awsops.Listed()
	if err != nil {
		return err
	}
	actions := append([]string(nil), listed[component]...)
	sort.Strings(actions)

	stack := awscdk.Stack_Of(role)
	for _, st := range statementsFor(stack, actions, sc) {
		if st.err != nil {
			return fmt.Errorf("permissions of %s: %w", component, st.err)
		}
		role.AddToPrincipalPolicy(st.statement())
	}
	return nil
}

// grant is one statement being built: actions on resources under
// conditions.
type grant struct {
	actions    []string
	resources  []*string
	conditions map[string]any
	err        error
}

func (g grant) statement() awsiam.PolicyStatement {
	p := &awsiam.PolicyStatementProps{
		Actions:   jsii.Strings(g.actions...),
		Resources: &g.resources,
	}
	if len(g.conditions) > 0 {
		p.Conditions = &g.conditions
	}
	return awsiam.NewPolicyStatement(p)
}

// statementsFor maps actions to statements, grouping the actions that
// share resources and conditions.
func statementsFor(stack awscdk.Stack, actions []string, sc Scope) []grant {
	arn := func(service, resource, name string) *string {
		return stack.FormatArn(&awscdk.ArnComponents{
			Service:      jsii.String(service),
			Resource:     jsii.String(resource),
			ResourceName: jsii.String(name),
			ArnFormat:    awscdk.ArnFormat_SLASH_RESOURCE_NAME,
		})
	}
	colonArn := func(service, resource, name string) *string {
		return stack.FormatArn(&awscdk.ArnComponents{
			Service:      jsii.String(service),
			Resource:     jsii.String(resource),
			ResourceName: jsii.String(name),
			ArnFormat:    awscdk.ArnFormat_COLON_RESOURCE_NAME,
		})
	}
	inCluster := map[string]any{"ArnEquals": map[string]any{"ecs:cluster": sc.ClusterArn}}
	family := sc.TaskFamily
	if !sc.SharedAccessPoint {
		family += "*" // the per-user families, TaskFamily-u-{hash}
	}
	taskDefs := []*string{arn("ecs", "task-definition", family+":*")}
	tasks := []*string{arn("ecs", "task", *sc.ClusterName+"/*")}
	tables := sc.TableArns
	var machines, executions []*string
	for _, name := range sc.StateMachines {
		machines = append(machines, colonArn("states", "stateMachine", name))
		executions = append(executions, colonArn("states", "execution", name+":*"))
	}
	var logGroups []*string
	for _, name := range sc.LogGroupNames {
		logGroups = append(logGroups, colonArn("logs", "log-group", name+":*"))
	}
	accessPoints := arn("elasticfilesystem", "access-point", "*")
	passRole := grant{actions: []string{"iam:PassRole"}, resources: sc.PassRoles,
		conditions: map[string]any{"StringEquals": map[string]any{"iam:PassedToService": "ecs-tasks.amazonaws.com"}}}
	tagOnCreate := func(createAction string, resources []*string) grant {
		return grant{actions: []string{"ecs:TagResource"}, resources: resources,
			conditions: map[string]any{"StringEquals": map[string]any{"ecs:CreateAction": createAction}}}
	}

	// byKey groups actions whose statement is the same but for them.
	var order []string
	byKey := map[string]*grant{}
	add := func(key string, g grant) {
		if cur, ok := byKey[key]; ok {
			for _, a := range g.actions {
				if !contains(cur.actions, a) {
					cur.actions = append(cur.actions, a)
				}
			}
			return
		}
		order = append(order, key)
		byKey[key] = &g
	}
	for _, a := range actions {
		service, op, _ := strings.Cut(a, ":")
		if sc.SharedAccessPoint && PerUserOnly[a] {
			// Nothing is registered or created per user in shared mode (R9).
			continue
		}
		switch {
		case a == "ecs:RunTask":
			add("ecs:run", grant{actions: []string{a}, resources: taskDefs, conditions: inCluster})
			add("ecs:tag-task", tagOnCreate("RunTask", tasks))
			add("iam:pass", passRole)
		case a == "ecs:StopTask" || a == "ecs:DescribeTasks":
			add("ecs:task", grant{actions: []string{a}, resources: tasks, conditions: inCluster})
		case a == "ecs:ListTasks":
			// ListTasks names no task; ECS scopes it by the cluster.
			add("ecs:list", grant{actions: []string{a}, resources: anyResource, conditions: inCluster})
		case a == "ecs:RegisterTaskDefinition":
			add("ecs:unscoped", grant{actions: []string{a}, resources: anyResource})
			add("ecs:tag-taskdef", tagOnCreate("RegisterTaskDefinition", taskDefs))
			add("iam:pass", passRole)
		case a == "ecs:DescribeTaskDefinition" || a == "ecs:DeregisterTaskDefinition":
			// Neither takes a resource-level permission.
			add("ecs:unscoped", grant{actions: []string{a}, resources: anyResource})
		case a == "ecs:DescribeClusters":
			add("ecs:cluster", grant{actions: []string{a}, resources: []*string{sc.ClusterArn}})
		case a == "elasticfilesystem:CreateAccessPoint":
			add("efs:fs", grant{actions: []string{a}, resources: []*string{sc.FileSystemArn}})
			add("efs:tag", grant{actions: []string{"elasticfilesystem:TagResource"},
				resources: []*string{accessPoints},
				conditions: map[string]any{"StringEquals": map[string]any{
					"elasticfilesystem:CreateAction": "CreateAccessPoint"}}})
		case a == "elasticfilesystem:DescribeAccessPoints":
			add("efs:describe", grant{actions: []string{a}, resources: []*string{sc.FileSystemArn, accessPoints}})
		case a == "elasticfilesystem:DeleteAccessPoint":
			add("efs:ap", grant{actions: []string{a}, resources: []*string{accessPoints}})
		case service == "dynamodb":
			add("dynamodb", grant{actions: []string{a}, resources: tables})
		case a == "states:SendTaskSuccess" || a == "states:SendTaskFailure" || a == "states:SendTaskHeartbeat":
			// A task token names its execution; these take no resource.
			add("states:token", grant{actions: []string{a}, resources: anyResource})
		case a == "states:StartExecution" || a == "states:StartSyncExecution" ||
			a == "states:DescribeStateMachine" || a == "states:ListExecutions":
			add("states:machine", grant{actions: []string{a}, resources: machines})
		case service == "states" && strings.Contains(op, "Execution"):
			add("states:execution", grant{actions: []string{a}, resources: executions})
		case service == "secretsmanager":
			add("secrets", grant{actions: []string{a}, resources: []*string{sc.SecretArn}})
		case a == "logs:GetQueryResults" || a == "logs:StopQuery" || a == "logs:DescribeQueries" ||
			a == "logs:DescribeLogGroups":
			add("logs:unscoped", grant{actions: []string{a}, resources: anyResource})
		case service == "logs":
			add("logs:groups", grant{actions: []string{a}, resources: logGroups})
		case a == "s3:PutObject":
			add("s3:reports", grant{actions: []string{a}, resources: []*string{
				awscdk.Fn_Join(jsii.String(""), &[]*string{sc.ReportBucketArn, jsii.String("/*")}),
			}})
		case a == "sns:Publish":
			add("sns:reports", grant{actions: []string{a}, resources: []*string{sc.ReportTopicArn}})
		case service == "ssm":
			add("ssm", grant{actions: []string{a},
				resources: []*string{arn("ssm", "parameter", "aishell/"+sc.Env.Name+"/*")}})
		default:
			return []grant{{err: fmt.Errorf("no resource scope known for %s: "+
				"add it to infra/stacks/permissions.go", a)}}
		}
	}
	out := make([]grant, 0, len(order))
	for _, k := range order {
		out = append(out, *byKey[k])
	}
	return out
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// PerUserOnly are the calls that only per-user mode (USE_SHARED_AP=false)
// makes: with the shared access point the roles do not get them.
var PerUserOnly = map[string]bool{
	"ecs:RegisterTaskDefinition":             true,
	"ecs:DescribeTaskDefinition":             true,
	"ecs:DeregisterTaskDefinition":           true,
	"elasticfilesystem:CreateAccessPoint":    true,
	"elasticfilesystem:DescribeAccessPoints": true,
	"elasticfilesystem:DeleteAccessPoint":    true,
}

// tableArns are the ARNs of the tables and of the indexes that have them
// (queries of an index are authorized on the index's ARN).
func tableArns(t Tables) []*string {
	var out []*string
	for _, table := range t.All() {
		out = append(out, table.TableArn())
	}
	for _, table := range []awsdynamodb.Table{t.Sessions, t.WarmTasks} {
		out = append(out, awscdk.Fn_Join(jsii.String(""), &[]*string{table.TableArn(), jsii.String("/index/*")}))
	}
	return out
}

// anyResource is "*", for the actions that take no resource-level
// permission.
var anyResource = []*string{jsii.String("*")}
