//go:build !race

package stacks_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/assertions"
	"github.com/aws/jsii-runtime-go"

	"github.com/aishell/aishell/infra/stacks"
	"github.com/aishell/aishell/queries"
	"github.com/aishell/aishell/shared/sfnflow"
)

// Both environments as deployed.
var environments = []struct{ variant, env string }{
	{variantStage, "stage"},
	{variantProd, "prod"},
}

func TestSharedAccessPointRootedAtEnvironmentWorkspaces(t *testing.T) {
	for _, e := range environments {
		t.Run(e.env, func(t *testing.T) {
			data := synth(t, e.variant).template(t, "data")
			must(t, "one access point", func() {
				data.ResourceCountIs(jsii.String("AWS::EFS::AccessPoint"), jsii.Number(1))
			})
			must(t, "root /workspaces/{env}, owner 1000, mode 0711, no fixed POSIX user", func() {
				data.HasResourceProperties(jsii.String("AWS::EFS::AccessPoint"), obj{
					"RootDirectory": obj{
						"Path": "/workspaces/" + e.env,
						"CreationInfo": obj{
							"OwnerUid": "1000", "OwnerGid": "1000", "Permissions": "0711",
						},
					},
					"PosixUser": assertions.Match_Absent(),
				})
			})
			must(t, "file system policy denies plain NFS and grants nothing to everyone", func() {
				data.HasResourceProperties(jsii.String("AWS::EFS::FileSystem"), obj{
					"FileSystemPolicy": obj{"Statement": list(obj{
						"Effect":    "Deny",
						"Principal": obj{"AWS": "*"},
						"Action":    "*",
						"Condition": obj{"Bool": obj{"aws:SecureTransport": "false"}},
						"Sid":       "DenyWithoutTLS",
					})},
				})
			})
			must(t, "file system encrypted with automatic backups", func() {
				data.HasResourceProperties(jsii.String("AWS::EFS::FileSystem"), obj{
					"Encrypted":    true,
					"BackupPolicy": obj{"Status": "ENABLED"},
				})
			})
		})
	}
}

func TestAgentTaskDefinitionMountsAccessPointWithIAMAndTLS(t *testing.T) {
	for _, e := range environments {
		t.Run(e.env, func(t *testing.T) {
			cluster := synth(t, e.variant).template(t, "cluster")
			must(t, "one task definition", func() {
				cluster.ResourceCountIs(jsii.String("AWS::ECS::TaskDefinition"), jsii.Number(1))
			})
			must(t, "agent task definition", func() {
				cluster.HasResourceProperties(jsii.String("AWS::ECS::TaskDefinition"), obj{
					"Family":                  "aishell-" + e.env + "-agent",
					"NetworkMode":             "awsvpc",
					"RequiresCompatibilities": list("EC2"),
					"Volumes": list(obj{
						"Name": "workspaces",
						"EFSVolumeConfiguration": obj{
							"TransitEncryption":   "ENABLED",
							"AuthorizationConfig": obj{"IAM": "ENABLED", "AccessPointId": assertions.Match_AnyValue()},
						},
					}),
					"ContainerDefinitions": list(obj{
						"Name":            stacks.AgentContainer,
						"LinuxParameters": obj{"InitProcessEnabled": true},
						"HealthCheck":     obj{"Command": assertions.Match_ArrayWith(list("CMD-SHELL"))},
						"LogConfiguration": obj{
							"LogDriver": "awslogs",
						},
						"MountPoints": list(obj{"ContainerPath": "/workspaces", "SourceVolume": "workspaces"}),
					}),
				})
			})
		})
	}
}

func TestLaunchTemplateUsesCurrentECSAMIAndPrePullsAgentImage(t *testing.T) {
	for _, e := range environments {
		t.Run(e.env, func(t *testing.T) {
			s := synth(t, e.variant)
			cluster := s.template(t, "cluster")
			raw := s.raw["aishell-"+e.env+"-cluster"]

			// The AMI is a deploy-time SSM parameter, never an AMI id.
			var param string
			for id, p := range raw["Parameters"].(map[string]interface{}) {
				pm := p.(map[string]interface{})
				if pm["Default"] == "/aws/service/ecs/optimized-ami/amazon-linux-2023/arm64/recommended/image_id" {
					param = id
					if pm["Type"] != "AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>" {
						t.Errorf("AMI parameter type: got %v; want an SSM image id parameter", pm["Type"])
					}
				}
			}
			if param == "" {
				t.Fatalf("no SSM parameter of the ECS-optimized AMI in %v", raw["Parameters"])
			}
			must(t, "launch template reads the AMI from SSM, requires IMDSv2, encrypts its volume", func() {
				cluster.HasResourceProperties(jsii.String("AWS::EC2::LaunchTemplate"), obj{
					"LaunchTemplateData": obj{
						"ImageId":         obj{"Ref": param},
						"MetadataOptions": obj{"HttpTokens": "required"},
						"BlockDeviceMappings": list(obj{"Ebs": obj{
							"Encrypted": true,
						}}),
					},
				})
			})

			lts := s.resources("AWS::EC2::LaunchTemplate")
			if len(lts) != 1 {
				t.Fatalf("launch templates: got %d; want 1", len(lts))
			}
			for _, lt := range lts {
				userData, _ := json.Marshal(props(lt)["LaunchTemplateData"].(map[string]interface{})["UserData"])
				for _, want := range []string{"docker pull", "AGENT_IMAGE=", "container-assets",
					"ECS_CLUSTER=", "ECS_AWSVPC_BLOCK_IMDS=true"} {
					if !strings.Contains(string(userData), want) {
						t.Errorf("user data lacks %q: %s", want, userData)
					}
				}
			}

			must(t, "instances roll when the template changes", func() {
				cluster.HasResource(jsii.String("AWS::AutoScaling::AutoScalingGroup"), obj{
					"UpdatePolicy": obj{"AutoScalingRollingUpdate": obj{"MaxBatchSize": 1}},
				})
			})
			must(t, "the group's capacity provider feeds the cluster", func() {
				cluster.HasResourceProperties(jsii.String("AWS::ECS::CapacityProvider"), obj{
					"AutoScalingGroupProvider": obj{"ManagedScaling": obj{"Status": "ENABLED"}},
				})
			})
		})
	}
}

func TestRestartMachineEndsWithin30sAndCatchesEveryStep(t *testing.T) {
	for _, e := range environments {
		t.Run(e.env, func(t *testing.T) {
			s := synth(t, e.variant)
			machines := map[string]map[string]interface{}{}
			for _, r := range s.resources("AWS::StepFunctions::StateMachine") {
				machines[props(r)["StateMachineName"].(string)] = props(r)
			}
			for name, sub := range map[string]string{
				"aishell-" + e.env + "-restart": sfnflow.RestartFunctionVar,
				"aishell-" + e.env + "-refill":  sfnflow.RefillFunctionVar,
			} {
				p, ok := machines[name]
				if !ok {
					t.Fatalf("no state machine %s among %v", name, machines)
				}
				// The deployed text is the very text the moto runs of
				// shared/sfnflow execute.
				want := sfnflow.RestartDefinition()
				if strings.HasSuffix(name, "-refill") {
					want = sfnflow.RefillDefinition()
				}
				if got, _ := p["DefinitionString"].(string); got != want {
					t.Errorf("%s: deployed definition differs from sfnflow's", name)
				}
				var def struct {
					TimeoutSeconds int
					States         map[string]struct {
						Type     string
						Resource string
						Catch    []struct{ ErrorEquals []string }
					}
				}
				if err := json.Unmarshal([]byte(p["DefinitionString"].(string)), &def); err != nil {
					t.Fatalf("%s definition: %v", name, err)
				}
				if strings.HasSuffix(name, "-restart") && def.TimeoutSeconds != 30 {
					t.Errorf("%s TimeoutSeconds: got %d; want 30", name, def.TimeoutSeconds)
				}
				tasks := 0
				for st, state := range def.States {
					if state.Type != "Task" && state.Type != "Map" {
						continue
					}
					tasks++
					caught := false
					for _, c := range state.Catch {
						caught = caught || (len(c.ErrorEquals) == 1 && c.ErrorEquals[0] == "States.ALL")
					}
					if !caught {
						t.Errorf("%s state %s: no Catch of States.ALL", name, st)
					}
				}
				if tasks == 0 {
					t.Errorf("%s: no Task states", name)
				}
				if _, ok := p["DefinitionSubstitutions"].(map[string]interface{})[sub]; !ok {
					t.Errorf("%s: no substitution of ${%s}", name, sub)
				}
				logging, _ := json.Marshal(p["LoggingConfiguration"])
				if !strings.Contains(string(logging), `"Level":"ALL"`) ||
					!strings.Contains(string(logging), `"IncludeExecutionData":true`) {
					t.Errorf("%s logging: got %s; want level ALL with execution data", name, logging)
				}
				tracing, _ := json.Marshal(p["TracingConfiguration"])
				if string(tracing) != `{"Enabled":true}` {
					t.Errorf("%s tracing: got %s; want enabled", name, tracing)
				}
			}
		})
	}
}

func TestSchedulesRunRefillEveryMinuteAndReportDaily(t *testing.T) {
	cp := synth(t, variantStage).template(t, "control-plane")
	must(t, "refill every minute", func() {
		cp.HasResourceProperties(jsii.String("AWS::Events::Rule"), obj{
			"ScheduleExpression": "rate(1 minute)",
			"Targets":            list(obj{"Arn": obj{"Ref": assertions.Match_StringLikeRegexp(jsii.String("RefillStateMachine"))}}),
		})
	})
	must(t, "report daily", func() {
		cp.HasResourceProperties(jsii.String("AWS::Events::Rule"), obj{
			"ScheduleExpression": assertions.Match_StringLikeRegexp(jsii.String(`^cron\(15 0 \* \* \? \*\)$`)),
		})
	})
}

func TestLambdasAreGoOnArmWithTracingAndSharedLogGroup(t *testing.T) {
	for _, e := range environments {
		t.Run(e.env, func(t *testing.T) {
			s := synth(t, e.variant)
			cp := s.template(t, "control-plane")
			for _, name := range []string{"session", "restart", "refill", "report"} {
				must(t, name, func() {
					cp.HasResourceProperties(jsii.String("AWS::Lambda::Function"), obj{
						"FunctionName":  "aishell-" + e.env + "-" + name,
						"Runtime":       "provided.al2023",
						"Architectures": list("arm64"),
						"Handler":       "bootstrap",
						"TracingConfig": obj{"Mode": "Active"},
						"LoggingConfig": obj{"LogGroup": assertions.Match_AnyValue()},
					})
				})
			}
		})
	}
}

func TestReportLambdaGetsItsBucketTopicAndLogGroups(t *testing.T) {
	s := synth(t, variantStage)
	found := false
	for _, fn := range s.resources("AWS::Lambda::Function") {
		if props(fn)["FunctionName"] != "aishell-stage-report" {
			continue
		}
		found = true
		vars := props(fn)["Environment"].(map[string]interface{})["Variables"].(map[string]interface{})
		for _, v := range []string{"ENV_NAME", "REPORT_BUCKET", "REPORT_TOPIC_ARN"} {
			if vars[v] == nil {
				t.Errorf("report Lambda: no %s", v)
			}
		}
		if vars["REPORT_LOG_GROUPS"] != "/aishell/stage/relay,/aishell/stage/lambdas" {
			t.Errorf("REPORT_LOG_GROUPS: got %v; want the relay's and the Lambdas' groups", vars["REPORT_LOG_GROUPS"])
		}
	}
	if !found {
		t.Fatal("no report Lambda")
	}
	data := s.template(t, "data")
	must(t, "reports bucket private and TLS-only", func() {
		data.HasResourceProperties(jsii.String("AWS::S3::Bucket"), obj{
			"PublicAccessBlockConfiguration": obj{"BlockPublicAcls": true, "RestrictPublicBuckets": true},
			"BucketEncryption":               assertions.Match_AnyValue(),
		})
	})
	must(t, "report topic", func() {
		data.HasResourceProperties(jsii.String("AWS::SNS::Topic"), obj{"TopicName": "aishell-stage-reports"})
	})
}

func TestTaskRunnerEnvironmentMatchesEcsrunner(t *testing.T) {
	s := synth(t, variantStage)
	for id, fn := range s.resources("AWS::Lambda::Function") {
		name, _ := props(fn)["FunctionName"].(string)
		if name != "aishell-stage-session" && name != "aishell-stage-restart" && name != "aishell-stage-refill" {
			continue
		}
		vars := props(fn)["Environment"].(map[string]interface{})["Variables"].(map[string]interface{})
		for _, v := range []string{"ECS_CLUSTER", "TASK_DEFINITION", "TASK_CONTAINER", "TASK_SUBNETS",
			"TASK_SECURITY_GROUPS", "CAPACITY_PROVIDER", "ENV_NAME", "WORKSPACE_ROOT", "USE_SHARED_AP",
			"SESSIONS_TABLE", "WARM_TASKS_TABLE", "USERS_TABLE", "RELAYS_TABLE", "KEYS_SECRET_ID"} {
			if _, ok := vars[v]; !ok {
				t.Errorf("%s (%s): no %s", name, id, v)
			}
		}
		if vars["TASK_DEFINITION"] != "aishell-stage-agent" || vars["TASK_CONTAINER"] != stacks.AgentContainer {
			t.Errorf("%s: task definition %v, container %v", name, vars["TASK_DEFINITION"], vars["TASK_CONTAINER"])
		}
	}
}

func TestSessionAPIRoutesSitBehindJWTAuthorizer(t *testing.T) {
	for _, e := range environments {
		t.Run(e.env, func(t *testing.T) {
			cp := synth(t, e.variant).template(t, "control-plane")
			for _, key := range []string{"POST /sessions", "GET /sessions/{id}", "DELETE /sessions/{id}"} {
				must(t, key, func() {
					cp.HasResourceProperties(jsii.String("AWS::ApiGatewayV2::Route"), obj{
						"RouteKey":          key,
						"AuthorizationType": "JWT",
						"AuthorizerId":      assertions.Match_AnyValue(),
					})
				})
			}
			must(t, "JWT authorizer", func() {
				cp.HasResourceProperties(jsii.String("AWS::ApiGatewayV2::Authorizer"), obj{
					"AuthorizerType": "JWT",
					"JwtConfiguration": obj{
						"Issuer":   assertions.Match_AnyValue(),
						"Audience": assertions.Match_AnyValue(),
					},
				})
			})
			must(t, "access log", func() {
				cp.HasResourceProperties(jsii.String("AWS::ApiGatewayV2::Stage"), obj{
					"AccessLogSettings": obj{"DestinationArn": assertions.Match_AnyValue()},
				})
			})
		})
	}
	// Without the context values, issuer and audience are deploy-time
	// parameters; with them, literal.
	must(t, "stage issuer parameter", func() {
		synth(t, variantStage).template(t, "control-plane").HasParameter(jsii.String("JwtIssuer"), obj{"Type": "String"})
	})
	must(t, "prod issuer from context", func() {
		synth(t, variantProd).template(t, "control-plane").HasResourceProperties(
			jsii.String("AWS::ApiGatewayV2::Authorizer"), obj{
				"JwtConfiguration": obj{"Issuer": "https://auth.example.com/", "Audience": list("aishell-web")},
			})
	})
}

func TestRelayLoadBalancerKeepsWebSocketsOpen(t *testing.T) {
	for _, e := range environments {
		t.Run(e.env, func(t *testing.T) {
			relay := synth(t, e.variant).template(t, "relay")
			must(t, "idle time-out an hour", func() {
				relay.HasResourceProperties(jsii.String("AWS::ElasticLoadBalancingV2::LoadBalancer"), obj{
					"Scheme": "internet-facing",
					"LoadBalancerAttributes": assertions.Match_ArrayWith(list(obj{
						"Key": "idle_timeout.timeout_seconds", "Value": "3600",
					})),
				})
			})
			must(t, "health check on /healthz", func() {
				relay.HasResourceProperties(jsii.String("AWS::ElasticLoadBalancingV2::TargetGroup"), obj{
					"HealthCheckPath": "/healthz",
					"Port":            stacks.RelayPort,
					"TargetType":      "ip",
				})
			})
			must(t, "relay on Fargate with the X-Ray daemon beside it", func() {
				relay.HasResourceProperties(jsii.String("AWS::ECS::TaskDefinition"), obj{
					"RequiresCompatibilities": list("FARGATE"),
					"RuntimePlatform":         obj{"CpuArchitecture": "ARM64"},
					"ContainerDefinitions": assertions.Match_ArrayWith(list(
						like(obj{"Name": stacks.RelayContainer, "PortMappings": list(obj{"ContainerPort": stacks.RelayPort, "Protocol": "tcp"})}),
						like(obj{"Name": stacks.XRayContainer, "Essential": false}),
					)),
				})
			})
			must(t, "scaling on CPU", func() {
				relay.HasResourceProperties(jsii.String("AWS::ApplicationAutoScaling::ScalingPolicy"), obj{
					"TargetTrackingScalingPolicyConfiguration": obj{
						"PredefinedMetricSpecification": obj{"PredefinedMetricType": "ECSServiceAverageCPUUtilization"},
					},
				})
			})
			must(t, "scaling on new connections per relay", func() {
				relay.HasResourceProperties(jsii.String("AWS::ApplicationAutoScaling::ScalingPolicy"), obj{
					"TargetTrackingScalingPolicyConfiguration": obj{
						"PredefinedMetricSpecification": obj{"PredefinedMetricType": "ALBRequestCountPerTarget"},
					},
				})
			})
		})
	}

	// TLS when a certificate is given: HTTPS on 443, HTTP redirected.
	prod := synth(t, variantProd).template(t, "relay")
	must(t, "HTTPS listener", func() {
		prod.HasResourceProperties(jsii.String("AWS::ElasticLoadBalancingV2::Listener"), obj{
			"Port": 443, "Protocol": "HTTPS", "Certificates": assertions.Match_AnyValue(),
		})
	})
	must(t, "HTTP redirected", func() {
		prod.HasResourceProperties(jsii.String("AWS::ElasticLoadBalancingV2::Listener"), obj{
			"Port": 80, "DefaultActions": list(obj{"Type": "redirect", "RedirectConfig": obj{
				"Protocol": "HTTPS", "Port": "443", "StatusCode": "HTTP_301",
			}}),
		})
	})
	must(t, "wss URL for the clients", func() {
		prod.HasResourceProperties(jsii.String("AWS::ECS::TaskDefinition"), obj{
			"ContainerDefinitions": assertions.Match_ArrayWith(list(like(obj{
				"Name": stacks.RelayContainer,
				"Environment": assertions.Match_ArrayWith(list(
					obj{"Name": "AISHELL_MODE", "Value": "aws"},
					obj{"Name": "RELAY_PUBLIC_URL", "Value": "wss://relay.example.com/ws"},
				)),
			}))),
		})
	})
}

func TestLogGroupsKeepEventsForTheEnvironmentsRetention(t *testing.T) {
	for _, e := range []struct {
		variant, env string
		days         float64
	}{{variantStage, "stage", 30}, {variantProd, "prod", 90}} {
		t.Run(e.env, func(t *testing.T) {
			s := synth(t, e.variant)
			names := map[string]bool{}
			for id, r := range s.resources("AWS::Logs::LogGroup") {
				p := props(r)
				if p["RetentionInDays"] != e.days {
					t.Errorf("%s: retention %v; want %v days", id, p["RetentionInDays"], e.days)
				}
				if n, ok := p["LogGroupName"].(string); ok {
					names[n] = true
				}
			}
			for _, want := range []string{"/aishell/" + e.env + "/relay", "/aishell/" + e.env + "/lambdas",
				"/aishell/" + e.env + "/tasks"} {
				if !names[want] {
					t.Errorf("no log group %s among %v", want, names)
				}
			}
		})
	}
}

func TestEveryReportQueryIsSavedOnRelayAndLambdaLogs(t *testing.T) {
	all := queries.All()
	if len(all) != 6 {
		t.Fatalf("queries.All(): got %d queries; want the six of R15", len(all))
	}
	for _, e := range environments {
		t.Run(e.env, func(t *testing.T) {
			mon := synth(t, e.variant).template(t, "monitoring")
			must(t, "count", func() {
				mon.ResourceCountIs(jsii.String("AWS::Logs::QueryDefinition"), jsii.Number(float64(len(all))))
			})
			for name, text := range all {
				must(t, name, func() {
					mon.HasResourceProperties(jsii.String("AWS::Logs::QueryDefinition"), obj{
						"Name":          "aishell/" + e.env + "/" + name,
						"QueryString":   text,
						"LogGroupNames": list(assertions.Match_AnyValue(), assertions.Match_AnyValue()),
					})
				})
			}
		})
	}
}

func TestTablesMatchTheStoreWithPITRAndTTL(t *testing.T) {
	for _, e := range environments {
		t.Run(e.env, func(t *testing.T) {
			data := synth(t, e.variant).template(t, "data")
			must(t, "four tables", func() {
				data.ResourceCountIs(jsii.String("AWS::DynamoDB::Table"), jsii.Number(4))
			})
			must(t, "all on demand with point-in-time recovery", func() {
				data.AllResourcesProperties(jsii.String("AWS::DynamoDB::Table"), obj{
					"BillingMode":                      "PAY_PER_REQUEST",
					"PointInTimeRecoverySpecification": obj{"PointInTimeRecoveryEnabled": true},
				})
			})
			key := func(name string) interface{} {
				return list(obj{"AttributeName": name, "KeyType": "HASH"})
			}
			ttl := obj{"AttributeName": "expiresAt", "Enabled": true}
			must(t, "sessions: id, byUser (userId, createdAt)", func() {
				data.HasResourceProperties(jsii.String("AWS::DynamoDB::Table"), obj{
					"KeySchema": key("id"),
					"GlobalSecondaryIndexes": list(obj{
						"IndexName":  "byUser",
						"KeySchema":  list(obj{"AttributeName": "userId", "KeyType": "HASH"}, obj{"AttributeName": "createdAt", "KeyType": "RANGE"}),
						"Projection": obj{"ProjectionType": "ALL"},
					}),
					"TimeToLiveSpecification": assertions.Match_Absent(),
				})
			})
			must(t, "warm tasks: id, byRelay (relayId, startedAt), TTL expiresAt", func() {
				data.HasResourceProperties(jsii.String("AWS::DynamoDB::Table"), obj{
					"KeySchema": key("id"),
					"GlobalSecondaryIndexes": list(obj{
						"IndexName":  "byRelay",
						"KeySchema":  list(obj{"AttributeName": "relayId", "KeyType": "HASH"}, obj{"AttributeName": "startedAt", "KeyType": "RANGE"}),
						"Projection": obj{"ProjectionType": "ALL"},
					}),
					"TimeToLiveSpecification": ttl,
				})
			})
			must(t, "users: userId", func() {
				data.HasResourceProperties(jsii.String("AWS::DynamoDB::Table"), obj{
					"KeySchema": key("userId"), "TimeToLiveSpecification": assertions.Match_Absent(),
				})
			})
			must(t, "relays: id, TTL expiresAt", func() {
				data.HasResourceProperties(jsii.String("AWS::DynamoDB::Table"), obj{
					"KeySchema": key("id"), "GlobalSecondaryIndexes": assertions.Match_Absent(),
					"TimeToLiveSpecification": ttl,
				})
			})
		})
	}
}

func TestKeysSecretIsFilledWithBothKeyLists(t *testing.T) {
	data := synth(t, variantStage).template(t, "data")
	must(t, "secret", func() {
		data.HasResourceProperties(jsii.String("AWS::SecretsManager::Secret"), obj{"Name": "aishell/stage/keys"})
	})
	must(t, "initializer writes {ticket: [...], task: [...]}", func() {
		data.HasResourceProperties(jsii.String("AWS::Lambda::Function"), obj{
			"Code": obj{"ZipFile": assertions.Match_StringLikeRegexp(
				jsii.String(`ticket: \[newKey\(\)\], task: \[newKey\(\)\]`))},
		})
	})
	must(t, "custom resource on the secret", func() {
		data.HasResourceProperties(jsii.String("Custom::AishellKeys"), obj{"SecretId": obj{"Ref": assertions.Match_AnyValue()}})
	})
}

func TestAlarmsAndDashboard(t *testing.T) {
	for _, e := range environments {
		t.Run(e.env, func(t *testing.T) {
			mon := synth(t, e.variant).template(t, "monitoring")
			must(t, "P99 start above 10 s", func() {
				mon.HasResourceProperties(jsii.String("AWS::CloudWatch::Alarm"), obj{
					"MetricName": stacks.MetricStartupLatency, "ExtendedStatistic": "p99",
					"Threshold": stacks.StartupAlarmMs, "ComparisonOperator": "GreaterThanThreshold",
				})
			})
			for _, m := range []string{stacks.MetricAccessDenied, stacks.MetricRestartFailures} {
				must(t, m, func() {
					mon.HasResourceProperties(jsii.String("AWS::CloudWatch::Alarm"), obj{
						"MetricName": m, "Statistic": "Sum", "Threshold": 1,
						"ComparisonOperator": "GreaterThanOrEqualToThreshold",
						"AlarmActions":       assertions.Match_AnyValue(),
					})
				})
			}
			must(t, "pool empty", func() {
				mon.HasResourceProperties(jsii.String("AWS::CloudWatch::Alarm"), obj{
					"MetricName": stacks.MetricWarmAvailable, "Threshold": 0,
					"ComparisonOperator": "LessThanOrEqualToThreshold",
				})
			})
			must(t, "restart executions", func() {
				mon.HasResourceProperties(jsii.String("AWS::CloudWatch::Alarm"), obj{
					"Metrics": assertions.Match_ArrayWith(list(like(obj{"Expression": "failed + timedout + aborted"}))),
				})
			})
			must(t, "access-denied filter on the logs", func() {
				mon.HasResourceProperties(jsii.String("AWS::Logs::MetricFilter"), obj{
					"FilterPattern": assertions.Match_StringLikeRegexp(jsii.String("AccessDenied")),
					"MetricTransformations": list(obj{
						"MetricName": stacks.MetricAccessDenied, "MetricNamespace": "AIShell/" + e.env,
						"MetricValue": "1",
					}),
				})
			})
			must(t, "one dashboard", func() {
				mon.ResourceCountIs(jsii.String("AWS::CloudWatch::Dashboard"), jsii.Number(1))
			})
		})
	}
	// The dashboard's body names each panel R10 asks for.
	for _, r := range synth(t, variantStage).resources("AWS::CloudWatch::Dashboard") {
		body, _ := json.Marshal(props(r)["DashboardBody"])
		for _, title := range []string{"Start-up latency", "Restarts and their outcome", "Errors by class",
			"Warm pool", "Connected sessions"} {
			if !strings.Contains(string(body), title) {
				t.Errorf("dashboard lacks panel %q", title)
			}
		}
	}
}

func TestImportedVPCAndPerUserMode(t *testing.T) {
	s := synth(t, variantPerUser)
	if n := len(s.resources("AWS::EC2::VPC")); n != 0 {
		t.Errorf("VPCs made with vpcId in context: got %d; want 0", n)
	}
	sgs, _ := json.Marshal(s.resources("AWS::EC2::SecurityGroup"))
	if !strings.Contains(string(sgs), "vpc-0123456789abcdef0") {
		t.Errorf("security groups not in the imported VPC")
	}
	for _, r := range s.resources("AWS::Lambda::Function") {
		vars, ok := props(r)["Environment"].(map[string]interface{})
		if !ok || props(r)["FunctionName"] != "aishell-stage-session" {
			continue
		}
		v := vars["Variables"].(map[string]interface{})
		if v["USE_SHARED_AP"] != "false" || v["EFS_FILE_SYSTEM_ID"] == nil {
			t.Errorf("per-user session Lambda: USE_SHARED_AP=%v EFS_FILE_SYSTEM_ID=%v", v["USE_SHARED_AP"],
				v["EFS_FILE_SYSTEM_ID"])
		}
		subnets, _ := json.Marshal(v["TASK_SUBNETS"])
		if !strings.Contains(string(subnets), "subnet-00000000000000001") {
			t.Errorf("TASK_SUBNETS %s: want the imported private subnets", subnets)
		}
	}
}

func TestNoUnsuppressedNagFinding(t *testing.T) {
	for _, variant := range []string{variantStage, variantProd, variantPerUser} {
		t.Run(variant, func(t *testing.T) {
			s := synth(t, variant)
			files, _ := filepath.Glob(filepath.Join(s.outdir, "*.metadata.json"))
			if len(files) != len(s.env.Stacks()) {
				t.Fatalf("metadata files: got %d; want %d", len(files), len(s.env.Stacks()))
			}
			for _, f := range files {
				b, err := os.ReadFile(f)
				if err != nil {
					t.Fatal(err)
				}
				var meta map[string][]struct {
					Type string
					Data interface{}
				}
				if err := json.Unmarshal(b, &meta); err != nil {
					t.Fatalf("%s: %v", f, err)
				}
				for path, entries := range meta {
					for _, e := range entries {
						text := fmt.Sprint(e.Data)
						nagWarning := e.Type == "aws:cdk:warning" && strings.Contains(text, "AwsSolutions-")
						if e.Type == "aws:cdk:error" || nagWarning {
							t.Errorf("%s: %s: %s", path, e.Type, text)
						}
					}
				}
			}
		})
	}
}

func TestMissingLambdaCodeFailsTheSynthWithItsName(t *testing.T) {
	app := awscdk.NewApp(&awscdk.AppProps{Outdir: jsii.String(t.TempDir())})
	o := stacks.Options{Env: stacks.Stage, SharedAccessPoint: true, SourceDir: repoRoot(),
		LambdaCodeDir: t.TempDir()}
	_, err := stacks.Build(app, o)
	var missing *stacks.MissingCodeError
	if !errors.As(err, &missing) || !strings.Contains(err.Error(), "make lambdas") ||
		!strings.Contains(err.Error(), "session/bootstrap") {
		t.Errorf("Build without Lambda code: got %v; want a MissingCodeError naming session/bootstrap", err)
	}
}

// like matches an object that has at least the given keys, inside the
// matchers (ArrayWith) that otherwise compare elements exactly.
func like(o obj) assertions.Matcher { return assertions.Match_ObjectLike(&o) }

func TestReportLambdaLeftOutUntilItsCodeExists(t *testing.T) {
	code := t.TempDir()
	for _, name := range []string{stacks.SessionFunction, stacks.RestartFunction, stacks.RefillFunction} {
		if err := os.MkdirAll(filepath.Join(code, name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(code, name, "bootstrap"), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if stacks.HasReportCode(code) {
		t.Fatal("HasReportCode: got true without report/bootstrap")
	}
	if err := stacks.CheckLambdaCode(code); err != nil {
		t.Errorf("CheckLambdaCode without the report: %v; want nil", err)
	}
}
