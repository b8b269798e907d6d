package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/aishell/aishell/shared/awsops"
	"github.com/aishell/aishell/shared/awstest"
	"github.com/aishell/aishell/shared/dynamostore"
	"github.com/aishell/aishell/shared/logging"
	"github.com/aishell/aishell/shared/secrets"
	"github.com/aishell/aishell/shared/sfnflow"
)

var recorder = awsops.NewRecorder()

// TestMain checks that the AWS operations the Lambda called are listed for
// its role (R11).
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if err := recorder.Check(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

// lambdaEnv is the environment the Lambda is deployed with, but for the
// endpoint and the credentials.
var lambdaEnv = map[string]string{
	"SESSIONS_TABLE": "sessions", "WARM_TASKS_TABLE": "warm-tasks", "USERS_TABLE": "users", "RELAYS_TABLE": "relays",
	"KEYS_SECRET_ID": "aishell-keys",
	"ECS_CLUSTER":    "aishell", "TASK_DEFINITION": "aishell-agent", "TASK_CONTAINER": "agent",
	"TASK_SUBNETS": "subnet-1", "TASK_SECURITY_GROUPS": "sg-1", "LAUNCH_TYPE": "FARGATE",
	"ENV_NAME": "test", "WORKSPACE_ROOT": "/workspaces",
}

func TestWiringNamesWhatTheEnvironmentLacks(t *testing.T) {
	for k := range lambdaEnv {
		t.Setenv(k, "")
	}
	_, err := newSteps(context.Background(), logging.Discard(), nil)
	for _, name := range []string{"KEYS_SECRET_ID", "SESSIONS_TABLE", "ECS_CLUSTER"} {
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("got error %v; want it to name %s", err, name)
		}
	}
}

// TestWiringOnMoto wires the steps from the environment against moto and
// runs one step through the Lambda entry point.
func TestWiringOnMoto(t *testing.T) {
	moto, err := awstest.Start()
	if errors.Is(err, awstest.ErrNoMoto) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { moto.Close() })
	ctx := context.Background()
	tables := dynamostore.Tables{Sessions: "sessions", WarmTasks: "warm-tasks", Users: "users", Relays: "relays"}
	if err := dynamostore.CreateTables(ctx, dynamodb.NewFromConfig(moto.Config()), tables); err != nil {
		t.Fatal(err)
	}
	value, err := secrets.NewSecretValue()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := secretsmanager.NewFromConfig(moto.Config()).CreateSecret(ctx, &secretsmanager.CreateSecretInput{
		Name: aws.String("aishell-keys"), SecretString: aws.String(value)}); err != nil {
		t.Fatal(err)
	}
	for k, v := range lambdaEnv {
		t.Setenv(k, v)
	}
	t.Setenv("AWS_ENDPOINT_URL", moto.URL)
	t.Setenv("AWS_REGION", awstest.Region)
	t.Setenv("AWS_ACCESS_KEY_ID", "testing")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "testing")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")

	steps, err := newSteps(ctx, logging.Discard(), recorder)
	if err != nil {
		t.Fatal(err)
	}
	// plan on an empty store: the store is reached through the wiring.
	out, err := steps.Handle(ctx, sfnflow.StepInput{Step: sfnflow.StepPlan})
	if err != nil {
		t.Fatalf("plan: %v", err)
	}
	if p, ok := out.(sfnflow.Plan); !ok || len(p.Starts) != 0 || len(p.Retires) != 0 {
		t.Errorf("got %+v; want an empty plan", out)
	}
}
