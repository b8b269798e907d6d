package stacks

import (
	"sort"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awscloudwatch"
	"github.com/aws/aws-cdk-go/awscdk/v2/awscloudwatchactions"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/aws-cdk-go/awscdk/v2/awskms"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslogs"
	"github.com/aws/aws-cdk-go/awscdk/v2/awssns"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"

	"github.com/aishell/aishell/queries"
)

// StartupAlarmMs is the start-up latency whose P99 raises an alarm (R14's
// threshold).
const StartupAlarmMs = 10000

// Metric names of the metric filters, in namespace AIShell/{env}. Each
// counts or measures one R13a event of the relay's and Lambdas' logs.
const (
	MetricStartupLatency   = "StartupLatency"
	MetricSessionsCreated  = "SessionsCreated"
	MetricTasksConnected   = "TasksConnected"
	MetricRestarts         = "Restarts"
	MetricRestartSucceeded = "RestartsSucceeded"
	MetricRestartFailures  = "RestartFailures"
	MetricTaskStartFailed  = "TaskStartFailures"
	MetricAccessDenied     = "AccessDeniedErrors"
	MetricConnectTimeouts  = "TaskConnectTimeouts"
	MetricNoBridgeRace     = "NoBridgeRejections"
	MetricExpiredTickets   = "ExpiredTickets"
	MetricWarmAvailable    = "WarmPoolAvailable"
	MetricWarmStarting     = "WarmPoolStarting"
	MetricUserMessages     = "UserMessages"
)

// metricFilter is one metric taken from the logs: a JSON filter pattern
// and the value each matching event adds ("1" counts events).
type metricFilter struct {
	id, metric, pattern, value string
	unit                       awscloudwatch.Unit
}

// metricFilters are the environment's log metrics (R13a's event names).
var metricFilters = []metricFilter{
	{"StartupLatencyFilter", MetricStartupLatency,
		`{ $.event = "task_lifecycle" && $.phase = "task_ready" }`, "$.duration_ms", awscloudwatch.Unit_MILLISECONDS},
	{"SessionsCreatedFilter", MetricSessionsCreated,
		`{ $.event = "session_created" && $.resumed IS FALSE }`, "1", awscloudwatch.Unit_COUNT},
	{"TasksConnectedFilter", MetricTasksConnected,
		`{ $.event = "task_lifecycle" && $.phase = "task_connect" }`, "1", awscloudwatch.Unit_COUNT},
	{"RestartsFilter", MetricRestarts,
		`{ $.event = "task_lifecycle" && $.phase = "task_restart" }`, "1", awscloudwatch.Unit_COUNT},
	{"RestartSucceededFilter", MetricRestartSucceeded,
		`{ $.event = "task_lifecycle" && $.phase = "task_restart" && $.success IS TRUE }`, "1", awscloudwatch.Unit_COUNT},
	{"RestartFailuresFilter", MetricRestartFailures,
		`{ $.event = "task_restart_failed" }`, "1", awscloudwatch.Unit_COUNT},
	{"TaskStartFailedFilter", MetricTaskStartFailed,
		`{ $.event = "task_start_failed" }`, "1", awscloudwatch.Unit_COUNT},
	{"AccessDeniedFilter", MetricAccessDenied,
		`{ $.errorCode = "AccessDenied*" || $.reason = "*AccessDenied*" }`, "1", awscloudwatch.Unit_COUNT},
	{"ConnectTimeoutsFilter", MetricConnectTimeouts,
		`{ $.event = "task_connect_timeout" }`, "1", awscloudwatch.Unit_COUNT},
	{"NoBridgeRaceFilter", MetricNoBridgeRace,
		`{ $.event = "task_rejected" && $.reason = "unknown_session" }`, "1", awscloudwatch.Unit_COUNT},
	{"ExpiredTicketsFilter", MetricExpiredTickets,
		`{ $.event = "ticket_rejected" && $.reason = "expired" }`, "1", awscloudwatch.Unit_COUNT},
	{"WarmAvailableFilter", MetricWarmAvailable,
		`{ $.event = "warm_pool" }`, "$.available", awscloudwatch.Unit_COUNT},
	{"WarmStartingFilter", MetricWarmStarting,
		`{ $.event = "warm_pool" }`, "$.starting", awscloudwatch.Unit_COUNT},
	{"UserMessagesFilter", MetricUserMessages,
		`{ $.event = "user_message" }`, "1", awscloudwatch.Unit_COUNT},
}

// MonitoringStackProps configures a MonitoringStack.
type MonitoringStackProps struct {
	awscdk.StackProps
	Env          EnvironmentProps
	Data         *DataStack
	ControlPlane *ControlPlaneStack
	Relay        *RelayStack
}

// MonitoringStack is what operators look at: metrics from the logs, the
// R15 query definitions, one dashboard and the alarms, which notify the
// AlarmTopic.
type MonitoringStack struct {
	awscdk.Stack
	Namespace  string
	AlarmTopic awssns.Topic
	Dashboard  awscloudwatch.Dashboard
}

// NewMonitoringStack makes the metric filters, query definitions,
// dashboard and alarms of one environment.
func NewMonitoringStack(scope constructs.Construct, id string,
	props *MonitoringStackProps) *MonitoringStack {
	stack := awscdk.NewStack(scope, &id, &props.StackProps)
	env, logs := props.Env, props.Data.Logs
	s := &MonitoringStack{Stack: stack, Namespace: "AIShell/" + env.Name}

	// The relay and the Lambdas both emit the events; a metric sums both.
	for _, group := range []struct {
		id  string
		log awslogs.LogGroup
	}{{"Relay", logs.Relay}, {"Lambdas", logs.Lambdas}} {
		for _, f := range metricFilters {
			awslogs.NewMetricFilter(stack, jsii.String(group.id+f.id), &awslogs.MetricFilterProps{
				LogGroup:        group.log,
				FilterPattern:   awslogs.FilterPattern_Literal(jsii.String(f.pattern)),
				MetricNamespace: jsii.String(s.Namespace),
				MetricName:      jsii.String(f.metric),
				MetricValue:     jsii.String(f.value),
				Unit:            f.unit,
			})
		}
	}

	// R15: the report's queries, saved for the console, on the two log
	// groups the report reads.
	all := queries.All()
	names := make([]string, 0, len(all))
	for name := range all {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		awslogs.NewCfnQueryDefinition(stack, jsii.String("Query-"+name), &awslogs.CfnQueryDefinitionProps{
			Name:          jsii.String("aishell/" + env.Name + "/" + name),
			QueryString:   jsii.String(all[name]),
			LogGroupNames: &[]any{logs.Relay.LogGroupName(), logs.Lambdas.LogGroupName()},
		})
	}

	key := awskms.NewKey(stack, jsii.String("AlarmTopicKey"), &awskms.KeyProps{
		Description:       jsii.String("AI Shell " + env.Name + " alarm topic"),
		EnableKeyRotation: jsii.Bool(true),
	})
	key.GrantEncryptDecrypt(awsiam.NewServicePrincipal(jsii.String("cloudwatch.amazonaws.com"), nil))
	s.AlarmTopic = awssns.NewTopic(stack, jsii.String("AlarmTopic"), &awssns.TopicProps{
		TopicName:  jsii.String(env.prefix() + "-alarms"),
		MasterKey:  key,
		EnforceSSL: jsii.Bool(true),
	})
	notify := awscloudwatchactions.NewSnsAction(s.AlarmTopic)

	// metric is a log metric; an alarm's has no label, which keeps the
	// alarm on the metric itself rather than on a one-metric expression.
	metric := func(name, statistic, label string, period float64) awscloudwatch.Metric {
		p := &awscloudwatch.MetricProps{
			Namespace:  jsii.String(s.Namespace),
			MetricName: jsii.String(name),
			Statistic:  jsii.String(statistic),
			Period:     awscdk.Duration_Minutes(jsii.Number(period)),
		}
		if label != "" {
			p.Label = jsii.String(label)
		}
		return awscloudwatch.NewMetric(p)
	}
	machineMetric := func(machine, name, label string) awscloudwatch.Metric {
		return awscloudwatch.NewMetric(&awscloudwatch.MetricProps{
			Namespace:  jsii.String("AWS/States"),
			MetricName: jsii.String(name),
			DimensionsMap: &map[string]*string{
				"StateMachineArn": machineArn(stack, machine),
			},
			Statistic: jsii.String("Sum"),
			Label:     jsii.String(label),
			Period:    awscdk.Duration_Minutes(jsii.Number(5)),
		})
	}
	restartMachine := props.ControlPlane.RestartMachineName

	alarm := func(id, description string, m awscloudwatch.IMetric, threshold float64,
		op awscloudwatch.ComparisonOperator, periods, toAlarm float64) awscloudwatch.Alarm {
		a := awscloudwatch.NewAlarm(stack, jsii.String(id), &awscloudwatch.AlarmProps{
			AlarmName:          jsii.String(env.prefix() + "-" + id),
			AlarmDescription:   jsii.String(description),
			Metric:             m,
			Threshold:          jsii.Number(threshold),
			ComparisonOperator: op,
			EvaluationPeriods:  jsii.Number(periods),
			DatapointsToAlarm:  jsii.Number(toAlarm),
			TreatMissingData:   awscloudwatch.TreatMissingData_NOT_BREACHING,
		})
		a.AddAlarmAction(notify)
		return a
	}
	alarm("StartupP99Alarm", "P99 of task start-up (RunTask to ready) above 10 s",
		metric(MetricStartupLatency, "p99", "", 5), StartupAlarmMs,
		awscloudwatch.ComparisonOperator_GREATER_THAN_THRESHOLD, 3, 2)
	alarm("AccessDeniedAlarm", "An AWS call was denied: a role lacks a permission its code needs (R11)",
		metric(MetricAccessDenied, "Sum", "", 5), 1,
		awscloudwatch.ComparisonOperator_GREATER_THAN_OR_EQUAL_TO_THRESHOLD, 1, 1)
	alarm("RestartFailureAlarm", "A restart failed or timed out (R5): task_restart_failed in the logs",
		metric(MetricRestartFailures, "Sum", "", 5), 1,
		awscloudwatch.ComparisonOperator_GREATER_THAN_OR_EQUAL_TO_THRESHOLD, 1, 1)
	machineFailures := awscloudwatch.NewMathExpression(&awscloudwatch.MathExpressionProps{
		Expression: jsii.String("failed + timedout + aborted"),
		UsingMetrics: &map[string]awscloudwatch.IMetric{
			"failed":   machineMetric(restartMachine, "ExecutionsFailed", "failed"),
			"timedout": machineMetric(restartMachine, "ExecutionsTimedOut", "timed out"),
			"aborted":  machineMetric(restartMachine, "ExecutionsAborted", "aborted"),
		},
		Label:  jsii.String("restart executions not succeeded"),
		Period: awscdk.Duration_Minutes(jsii.Number(5)),
	})
	alarm("RestartExecutionFailureAlarm", "A restart state machine execution failed, timed out or was aborted",
		machineFailures, 1, awscloudwatch.ComparisonOperator_GREATER_THAN_OR_EQUAL_TO_THRESHOLD, 1, 1)
	if env.WarmPoolSize > 0 {
		alarm("WarmPoolEmptyAlarm", "No warm task available for 10 minutes: starts are cold (R8)",
			metric(MetricWarmAvailable, "Maximum", "", 5), 0,
			awscloudwatch.ComparisonOperator_LESS_THAN_OR_EQUAL_TO_THRESHOLD, 2, 2)
	}

	s.Dashboard = s.newDashboard(env, props, metric, machineMetric)
	return s
}

// machineArn is the ARN of a state machine of this account and region by
// its fixed name.
func machineArn(stack awscdk.Stack, name string) *string {
	return stack.FormatArn(&awscdk.ArnComponents{
		Service: jsii.String("states"), Resource: jsii.String("stateMachine"),
		ResourceName: jsii.String(name), ArnFormat: awscdk.ArnFormat_COLON_RESOURCE_NAME,
	})
}

// newDashboard lays out start-up latency, restarts, errors by class, the
// warm pool and connections, with the errors query underneath.
func (s *MonitoringStack) newDashboard(env EnvironmentProps, props *MonitoringStackProps,
	metric func(name, statistic, label string, period float64) awscloudwatch.Metric,
	machineMetric func(machine, name, label string) awscloudwatch.Metric) awscloudwatch.Dashboard {
	d := awscloudwatch.NewDashboard(s.Stack, jsii.String("Dashboard"), &awscloudwatch.DashboardProps{
		DashboardName: jsii.String(env.prefix()),
	})
	graph := func(title string, left []awscloudwatch.IMetric, right []awscloudwatch.IMetric,
		notes []*awscloudwatch.HorizontalAnnotation) awscloudwatch.GraphWidget {
		p := &awscloudwatch.GraphWidgetProps{
			Title:  jsii.String(title),
			Left:   &left,
			Width:  jsii.Number(12),
			Height: jsii.Number(6),
		}
		if len(right) > 0 {
			p.Right = &right
		}
		if len(notes) > 0 {
			p.LeftAnnotations = &notes
		}
		return awscloudwatch.NewGraphWidget(p)
	}
	restartMachine := props.ControlPlane.RestartMachineName
	connections := props.Relay.LoadBalancer.Metrics().ActiveConnectionCount(&awscloudwatch.MetricOptions{
		Statistic: jsii.String("Sum"), Label: jsii.String("open sockets (load balancer)"),
		Period: awscdk.Duration_Minutes(jsii.Number(1)),
	})

	d.AddWidgets(
		graph("Start-up latency (RunTask to ready, ms)", []awscloudwatch.IMetric{
			metric(MetricStartupLatency, "p50", "P50", 5),
			metric(MetricStartupLatency, "p90", "P90", 5),
			metric(MetricStartupLatency, "p99", "P99", 5),
		}, nil, []*awscloudwatch.HorizontalAnnotation{{
			Value: jsii.Number(StartupAlarmMs), Label: jsii.String("P99 alarm"),
		}}),
		graph("Restarts and their outcome", []awscloudwatch.IMetric{
			metric(MetricRestarts, "Sum", "restarts", 5),
			metric(MetricRestartSucceeded, "Sum", "succeeded", 5),
			metric(MetricRestartFailures, "Sum", "failed", 5),
		}, []awscloudwatch.IMetric{
			machineMetric(restartMachine, "ExecutionsSucceeded", "executions succeeded"),
			machineMetric(restartMachine, "ExecutionsFailed", "executions failed"),
			machineMetric(restartMachine, "ExecutionsTimedOut", "executions timed out"),
		}, nil),
	)
	d.AddWidgets(
		graph("Errors by class", []awscloudwatch.IMetric{
			metric(MetricAccessDenied, "Sum", "access denied", 5),
			metric(MetricConnectTimeouts, "Sum", "task connect time-out", 5),
			metric(MetricNoBridgeRace, "Sum", "no-bridge race", 5),
			metric(MetricExpiredTickets, "Sum", "expired ticket", 5),
			metric(MetricTaskStartFailed, "Sum", "task start failed", 5),
		}, nil, nil),
		graph("Warm pool", []awscloudwatch.IMetric{
			metric(MetricWarmAvailable, "Minimum", "available (min)", 1),
			metric(MetricWarmStarting, "Maximum", "starting (max)", 1),
		}, nil, []*awscloudwatch.HorizontalAnnotation{{
			Value: jsii.Number(env.WarmPoolSize), Label: jsii.String("target per relay"),
		}}),
	)
	d.AddWidgets(
		graph("Connected sessions", []awscloudwatch.IMetric{connections}, []awscloudwatch.IMetric{
			metric(MetricSessionsCreated, "Sum", "sessions created", 5),
			metric(MetricTasksConnected, "Sum", "tasks connected", 5),
			metric(MetricUserMessages, "Sum", "user messages", 5),
		}, nil),
		awscloudwatch.NewLogQueryWidget(&awscloudwatch.LogQueryWidgetProps{
			Title:         jsii.String("Errors summary (query errors-summary)"),
			LogGroupNames: &[]*string{props.Data.Logs.Relay.LogGroupName(), props.Data.Logs.Lambdas.LogGroupName()},
			QueryString:   jsii.String(queries.All()["errors-summary"]),
			View:          awscloudwatch.LogQueryVisualizationType_TABLE,
			Width:         jsii.Number(12),
			Height:        jsii.Number(6),
		}),
	)
	return d
}
