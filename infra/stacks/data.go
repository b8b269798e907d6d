package stacks

import (
	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsdynamodb"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsec2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsefs"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/aws-cdk-go/awscdk/v2/awskms"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslambda"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslogs"
	"github.com/aws/aws-cdk-go/awscdk/v2/awss3"
	"github.com/aws/aws-cdk-go/awscdk/v2/awssecretsmanager"
	"github.com/aws/aws-cdk-go/awscdk/v2/awssns"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"
)

// Table attribute and index names, as shared/dynamostore documents them.
const (
	attrID        = "id"
	attrUserID    = "userId"
	attrRelayID   = "relayId"
	attrCreatedAt = "createdAt"
	attrStartedAt = "startedAt"
	attrExpiresAt = "expiresAt"
	indexByUser   = "byUser"
	indexByRelay  = "byRelay"
)

// Shared access point: the workspaces' root of an environment, owned by
// uid/gid 1000 with mode 0711, so that the bridge (root in the task, with
// root access through IAM) makes one folder per user and chowns it to the
// user's own uid, while no user can list the others' folders (R9, R9a).
const (
	WorkspacesRoot    = "/workspaces"
	AccessPointOwner  = "1000"
	AccessPointPerms  = "0711"
	WorkspaceMountDir = "/workspaces"
)

// Tables are the environment's four DynamoDB tables.
type Tables struct {
	Sessions  awsdynamodb.Table
	WarmTasks awsdynamodb.Table
	Users     awsdynamodb.Table
	Relays    awsdynamodb.Table
}

// All returns the tables in a fixed order.
func (t Tables) All() []awsdynamodb.Table {
	return []awsdynamodb.Table{t.Sessions, t.WarmTasks, t.Users, t.Relays}
}

// Env returns the environment variables that name the tables
// (dynamostore.TablesFromEnv).
func (t Tables) Env() map[string]*string {
	return map[string]*string{
		"SESSIONS_TABLE":   t.Sessions.TableName(),
		"WARM_TASKS_TABLE": t.WarmTasks.TableName(),
		"USERS_TABLE":      t.Users.TableName(),
		"RELAYS_TABLE":     t.Relays.TableName(),
	}
}

// LogGroups are the environment's log groups. Relay and Lambdas are the
// two the daily report and the query definitions read
// (/aishell/{env}/relay and /aishell/{env}/lambdas).
type LogGroups struct {
	Relay   awslogs.LogGroup
	Lambdas awslogs.LogGroup
	// Tasks holds the bridges' logs of the agent tasks.
	Tasks awslogs.LogGroup
	// Restart and Refill hold the state machines' execution histories.
	Restart awslogs.LogGroup
	Refill  awslogs.LogGroup
	// API holds the HTTP API's access log.
	API awslogs.LogGroup
	// Infra holds the logs of the stacks' own helper functions.
	Infra awslogs.LogGroup
}

// DataStackProps configures a DataStack.
type DataStackProps struct {
	awscdk.StackProps
	Env     EnvironmentProps
	Network *NetworkStack
}

// DataStack is what outlives tasks and deployments: the EFS file system
// with the shared access point, the tables, the keys' secret and the log
// groups.
type DataStack struct {
	awscdk.Stack
	FileSystem  awsefs.FileSystem
	AccessPoint awsefs.AccessPoint
	Tables      Tables
	// Keys is the secret holding the ticket and task keys, in the JSON
	// form of shared/secrets; KeysInitializer fills it on creation.
	Keys awssecretsmanager.Secret
	Logs LogGroups
	// Reports receives the daily report's JSON and HTML forms, and
	// ReportTopic its markdown form (shared/report/schedule).
	Reports     awss3.Bucket
	ReportTopic awssns.Topic
}

// NewDataStack makes the data and log stores of one environment.
func NewDataStack(scope constructs.Construct, id string, props *DataStackProps) *DataStack {
	stack := awscdk.NewStack(scope, &id, &props.StackProps)
	s := &DataStack{Stack: stack}
	env := props.Env

	s.Logs = newLogGroups(stack, env)

	s.FileSystem = awsefs.NewFileSystem(stack, jsii.String("WorkspaceFileSystem"), &awsefs.FileSystemProps{
		Vpc:                    props.Network.Vpc,
		VpcSubnets:             &awsec2.SubnetSelection{SubnetType: awsec2.SubnetType_PRIVATE_WITH_EGRESS},
		SecurityGroup:          props.Network.FileSystemSG,
		Encrypted:              jsii.Bool(true),
		EnableAutomaticBackups: jsii.Bool(true),
		PerformanceMode:        awsefs.PerformanceMode_GENERAL_PURPOSE,
		ThroughputMode:         awsefs.ThroughputMode_ELASTIC,
		LifecyclePolicy:        awsefs.LifecyclePolicy_AFTER_30_DAYS,
		RemovalPolicy:          env.RemovalPolicy,
		FileSystemName:         jsii.String(env.prefix() + "-workspaces"),
		// Only IAM-authorized clients over TLS. The task role's own policy
		// grants the mount through the access point (cluster.go); the file
		// system policy below grants nothing, so a client without IAM gets
		// no access. True only keeps CDK from adding a statement that gives
		// root and write to every principal coming through a mount target.
		AllowAnonymousAccess: jsii.Bool(true),
		FileSystemPolicy: awsiam.NewPolicyDocument(&awsiam.PolicyDocumentProps{
			Statements: &[]awsiam.PolicyStatement{
				awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
					Sid:        jsii.String("DenyWithoutTLS"),
					Effect:     awsiam.Effect_DENY,
					Principals: &[]awsiam.IPrincipal{awsiam.NewAnyPrincipal()},
					Actions:    jsii.Strings("*"),
					Conditions: &map[string]any{"Bool": map[string]any{"aws:SecureTransport": "false"}},
				}),
			},
		}),
	})

	s.AccessPoint = s.FileSystem.AddAccessPoint(jsii.String("SharedAccessPoint"), &awsefs.AccessPointOptions{
		Path: jsii.String(WorkspacesRoot + "/" + env.Name),
		CreateAcl: &awsefs.Acl{
			OwnerUid:    jsii.String(AccessPointOwner),
			OwnerGid:    jsii.String(AccessPointOwner),
			Permissions: jsii.String(AccessPointPerms),
		},
		// No PosixUser: the bridge must act as root to give each user's
		// folder its own uid; the agent itself runs as that uid.
	})
	awscdk.Tags_Of(s.AccessPoint).Add(jsii.String("Name"), jsii.String(env.prefix()+"-shared"), nil)

	table := func(name, partition string, ttl bool) awsdynamodb.Table {
		p := &awsdynamodb.TableProps{
			PartitionKey: &awsdynamodb.Attribute{Name: jsii.String(partition), Type: awsdynamodb.AttributeType_STRING},
			BillingMode:  awsdynamodb.BillingMode_PAY_PER_REQUEST,
			PointInTimeRecoverySpecification: &awsdynamodb.PointInTimeRecoverySpecification{
				PointInTimeRecoveryEnabled: jsii.Bool(true),
			},
			Encryption:         awsdynamodb.TableEncryption_AWS_MANAGED,
			DeletionProtection: jsii.Bool(env.RemovalPolicy == awscdk.RemovalPolicy_RETAIN),
			RemovalPolicy:      env.RemovalPolicy,
		}
		if ttl {
			p.TimeToLiveAttribute = jsii.String(attrExpiresAt)
		}
		return awsdynamodb.NewTable(stack, jsii.String(name), p)
	}
	gsi := func(t awsdynamodb.Table, name, partition, sort string) {
		t.AddGlobalSecondaryIndex(&awsdynamodb.GlobalSecondaryIndexProps{
			IndexName:      jsii.String(name),
			PartitionKey:   &awsdynamodb.Attribute{Name: jsii.String(partition), Type: awsdynamodb.AttributeType_STRING},
			SortKey:        &awsdynamodb.Attribute{Name: jsii.String(sort), Type: awsdynamodb.AttributeType_STRING},
			ProjectionType: awsdynamodb.ProjectionType_ALL,
		})
	}
	s.Tables.Sessions = table("SessionsTable", attrID, false)
	gsi(s.Tables.Sessions, indexByUser, attrUserID, attrCreatedAt)
	s.Tables.WarmTasks = table("WarmTasksTable", attrID, true)
	gsi(s.Tables.WarmTasks, indexByRelay, attrRelayID, attrStartedAt)
	s.Tables.Users = table("UsersTable", attrUserID, false)
	s.Tables.Relays = table("RelaysTable", attrID, true)

	s.Keys = awssecretsmanager.NewSecret(stack, jsii.String("KeysSecret"), &awssecretsmanager.SecretProps{
		SecretName:  jsii.String("aishell/" + env.Name + "/keys"),
		Description: jsii.String("AI Shell " + env.Name + ": ticket and task signing keys (shared/secrets)"),
		// A placeholder until KeysInitializer writes the keys' JSON.
		GenerateSecretString: &awssecretsmanager.SecretStringGenerator{
			PasswordLength:     jsii.Number(44),
			ExcludePunctuation: jsii.Bool(true),
		},
		RemovalPolicy: awscdk.RemovalPolicy_RETAIN,
	})
	newKeysInitializer(stack, s.Keys, s.Logs.Infra)

	s.Reports = awss3.NewBucket(stack, jsii.String("ReportsBucket"), &awss3.BucketProps{
		Encryption:        awss3.BucketEncryption_S3_MANAGED,
		EnforceSSL:        jsii.Bool(true),
		BlockPublicAccess: awss3.BlockPublicAccess_BLOCK_ALL(),
		ObjectOwnership:   awss3.ObjectOwnership_BUCKET_OWNER_ENFORCED,
		LifecycleRules: &[]*awss3.LifecycleRule{{
			Expiration: awscdk.Duration_Days(jsii.Number(400)),
		}},
		RemovalPolicy: awscdk.RemovalPolicy_RETAIN,
	})
	s.ReportTopic = awssns.NewTopic(stack, jsii.String("ReportTopic"), &awssns.TopicProps{
		TopicName: jsii.String(env.prefix() + "-reports"),
		// The account's SNS key: the report Lambda publishes with its role.
		MasterKey:  awskms.Alias_FromAliasName(stack, jsii.String("SnsKey"), jsii.String("alias/aws/sns")),
		EnforceSSL: jsii.Bool(true),
	})
	return s
}

// newLogGroups makes the environment's log groups, all with its retention.
func newLogGroups(stack awscdk.Stack, env EnvironmentProps) LogGroups {
	group := func(id, name string) awslogs.LogGroup {
		return awslogs.NewLogGroup(stack, jsii.String(id), &awslogs.LogGroupProps{
			LogGroupName:  jsii.String(name),
			Retention:     env.LogRetention,
			RemovalPolicy: awscdk.RemovalPolicy_DESTROY,
		})
	}
	base := "/aishell/" + env.Name
	// State machines log to /aws/vendedlogs/: CloudWatch Logs then needs
	// no resource policy per log group for them.
	vended := "/aws/vendedlogs/states/" + env.prefix()
	return LogGroups{
		Relay:   group("RelayLogs", base+"/relay"),
		Lambdas: group("LambdaLogs", base+"/lambdas"),
		Tasks:   group("TaskLogs", base+"/tasks"),
		Restart: group("RestartLogs", vended+"-restart"),
		Refill:  group("RefillLogs", vended+"-refill"),
		API:     group("ApiAccessLogs", base+"/api"),
		Infra:   group("InfraLogs", base+"/infra"),
	}
}

// keysInitializerCode puts a fresh key in each list of the secret, in the
// JSON form of shared/secrets, unless it already holds that form (a stack
// update or a re-created resource keeps the keys). It answers
// CloudFormation itself, so it needs no helper library.
const keysInitializerCode = `
const { SecretsManagerClient, GetSecretValueCommand, PutSecretValueCommand } =
  require("@aws-sdk/client-secrets-manager");
const { randomBytes } = require("node:crypto");
const https = require("node:https");
const http = require("node:http");
const sm = new SecretsManagerClient({});
const newKey = () => randomBytes(32).toString("base64");
function holdsKeys(value) {
  try {
    const v = JSON.parse(value);
    return Array.isArray(v.ticket) && v.ticket.length > 0 && Array.isArray(v.task) && v.task.length > 0;
  } catch (e) {
    return false;
  }
}
function answer(event, status, reason) {
  const body = JSON.stringify({
    Status: status, Reason: reason,
    PhysicalResourceId: event.PhysicalResourceId || "keys-" + event.LogicalResourceId,
    StackId: event.StackId, RequestId: event.RequestId, LogicalResourceId: event.LogicalResourceId,
  });
  const url = new URL(event.ResponseURL);
  // CloudFormation's URL is https; the tests answer on a local http one.
  const transport = url.protocol === "http:" ? http : https;
  return new Promise((resolve, reject) => {
    const req = transport.request({
      hostname: url.hostname, port: url.port, path: url.pathname + url.search, method: "PUT",
      headers: { "content-type": "", "content-length": Buffer.byteLength(body) },
    }, (res) => { res.resume(); res.on("end", resolve); });
    req.on("error", reject);
    req.end(body);
  });
}
exports.handler = async (event) => {
  try {
    if (event.RequestType !== "Delete") {
      const id = event.ResourceProperties.SecretId;
      const cur = await sm.send(new GetSecretValueCommand({ SecretId: id }));
      if (!holdsKeys(cur.SecretString || "")) {
        const value = JSON.stringify({ ticket: [newKey()], task: [newKey()] });
        await sm.send(new PutSecretValueCommand({ SecretId: id, SecretString: value }));
      }
    }
    await answer(event, "SUCCESS", "keys in place");
  } catch (e) {
    console.log(JSON.stringify({ level: "error", event: "keys_initializer_failed", message: String(e) }));
    await answer(event, "FAILED", "initialize keys: " + String(e.name || e));
  }
};
`

// newKeysInitializer writes the keys' JSON into secret once, through a
// custom resource: CloudFormation's own generator makes one string, not
// the two lists of keys that shared/secrets reads.
func newKeysInitializer(stack awscdk.Stack, secret awssecretsmanager.Secret, logs awslogs.LogGroup) {
	role := awsiam.NewRole(stack, jsii.String("KeysInitializerRole"), &awsiam.RoleProps{
		AssumedBy:   awsiam.NewServicePrincipal(jsii.String("lambda.amazonaws.com"), nil),
		Description: jsii.String("Writes the first ticket and task keys into the keys secret"),
	})
	logs.GrantWrite(role)
	role.AddToPolicy(awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
		Actions:   jsii.Strings("secretsmanager:GetSecretValue", "secretsmanager:PutSecretValue"),
		Resources: jsii.Strings(*secret.SecretArn()),
	}))
	fn := awslambda.NewFunction(stack, jsii.String("KeysInitializer"), &awslambda.FunctionProps{
		Runtime:      awslambda.Runtime_NODEJS_24_X(),
		Architecture: awslambda.Architecture_ARM_64(),
		Handler:      jsii.String("index.handler"),
		Code:         awslambda.Code_FromInline(jsii.String(keysInitializerCode)),
		Role:         role,
		Timeout:      awscdk.Duration_Seconds(jsii.Number(30)),
		LogGroup:     logs,
		Description:  jsii.String("Initializes the keys secret in the JSON form of shared/secrets"),
	})
	init := awscdk.NewCustomResource(stack, jsii.String("KeysInitialization"), &awscdk.CustomResourceProps{
		ServiceToken: fn.FunctionArn(),
		ResourceType: jsii.String("Custom::AishellKeys"),
		Properties:   &map[string]any{"SecretId": secret.SecretArn()},
	})
	init.Node().AddDependency(role)
}
