package controlplane_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/aishell/aishell/shared/awsops"
	"github.com/aishell/aishell/shared/awstest"
	"github.com/aishell/aishell/shared/controlplane"
	"github.com/aishell/aishell/shared/dynamostore"
	"github.com/aishell/aishell/shared/logging"
	"github.com/aishell/aishell/shared/secrets"
	"github.com/aishell/aishell/shared/session"
	"github.com/aishell/aishell/shared/sfnflow"
)

var recorder = awsops.NewRecorder()

// TestMain checks that the AWS operations each steps Lambda called are
// listed for its role (R11).
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

// lambdaEnv is the environment the steps Lambdas are deployed with, but for
// the endpoint and the credentials.
var lambdaEnv = map[string]string{
	"SESSIONS_TABLE": "sessions", "WARM_TASKS_TABLE": "warm-tasks", "USERS_TABLE": "users", "RELAYS_TABLE": "relays",
	"KEYS_SECRET_ID": "aishell-keys",
	"ECS_CLUSTER":    "aishell", "TASK_DEFINITION": "aishell-agent", "TASK_CONTAINER": "agent",
	"TASK_SUBNETS": "subnet-1", "TASK_SECURITY_GROUPS": "sg-1", "LAUNCH_TYPE": "FARGATE",
	"ENV_NAME": "test", "WORKSPACE_ROOT": "/workspaces",
}

var tables = dynamostore.Tables{Sessions: "sessions", WarmTasks: "warm-tasks", Users: "users", Relays: "relays"}

func TestStepsWiringNamesWhatTheEnvironmentLacks(t *testing.T) {
	for k := range lambdaEnv {
		t.Setenv(k, "")
	}
	_, err := controlplane.StepsFromEnv(context.Background(), awsops.RestartLambda, logging.Discard(), nil)
	for _, name := range []string{"KEYS_SECRET_ID", "SESSIONS_TABLE", "ECS_CLUSTER"} {
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("got error %v; want it to name %s", err, name)
		}
	}
}

// TestStepsWiringOnMoto wires each steps Lambda from the environment
// against moto and runs one of its steps through the Lambda entry point,
// recording its AWS calls under its own role.
func TestStepsWiringOnMoto(t *testing.T) {
	tests := []struct {
		component string
		// run drives one step and checks its answer.
		run func(t *testing.T, ctx context.Context, moto *awstest.Moto, steps *sfnflow.Steps)
	}{
		{awsops.RestartLambda, func(t *testing.T, ctx context.Context, moto *awstest.Moto, steps *sfnflow.Steps) {
			// stop_old_task of a session without a task: the store is
			// reached through the wiring, and nothing is to stop.
			store := dynamostore.New(dynamodb.NewFromConfig(moto.Config()), tables)
			sess, err := store.CreateSession(ctx, session.Session{ID: "s_wired", UserID: "u1",
				State: session.StateRestarting, CreatedAt: time.Now(), UpdatedAt: time.Now()})
			if err != nil {
				t.Fatal(err)
			}
			out, err := steps.Handle(ctx, sfnflow.StepInput{Step: sfnflow.StepStopOldTask, SessionID: sess.ID})
			if err != nil {
				t.Fatalf("stop_old_task: %v", err)
			}
			if done, ok := out.(sfnflow.StepDone); !ok || done.Step != sfnflow.StepStopOldTask {
				t.Errorf("got %+v; want stop_old_task done", out)
			}
		}},
		{awsops.RefillLambda, func(t *testing.T, ctx context.Context, _ *awstest.Moto, steps *sfnflow.Steps) {
			// plan on an empty store: the store is reached through the wiring.
			out, err := steps.Handle(ctx, sfnflow.StepInput{Step: sfnflow.StepPlan})
			if err != nil {
				t.Fatalf("plan: %v", err)
			}
			if p, ok := out.(sfnflow.Plan); !ok || len(p.Starts) != 0 || len(p.Retires) != 0 {
				t.Errorf("got %+v; want an empty plan", out)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.component, func(t *testing.T) {
			moto := startMoto(t)
			ctx := context.Background()
			steps, err := controlplane.StepsFromEnv(ctx, tt.component, logging.Discard(), recorder)
			if err != nil {
				t.Fatal(err)
			}
			tt.run(t, ctx, moto, steps)
		})
	}
}

// startMoto starts a moto with the tables and the keys' secret, and points
// the environment at it.
func startMoto(t *testing.T) *awstest.Moto {
	t.Helper()
	moto, err := awstest.Start()
	if errors.Is(err, awstest.ErrNoMoto) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { moto.Close() })
	ctx := context.Background()
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
	return moto
}
