// Command restart is the restart state machine's steps Lambda (R5): it
// carries out StopOldTask, StartTask, WaitRunning and WaitConnection's
// register_connection_wait with the session rules on DynamoDB and ECS.
// `make lambdas` builds it as bootstrap for provided.al2023.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	"github.com/aws/aws-sdk-go-v2/service/efs"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/sfn"

	"github.com/aishell/aishell/shared/awsclient"
	"github.com/aishell/aishell/shared/awsops"
	"github.com/aishell/aishell/shared/dynamostore"
	"github.com/aishell/aishell/shared/ecsrunner"
	"github.com/aishell/aishell/shared/events"
	"github.com/aishell/aishell/shared/logging"
	"github.com/aishell/aishell/shared/relayclient"
	"github.com/aishell/aishell/shared/secrets"
	"github.com/aishell/aishell/shared/session"
	"github.com/aishell/aishell/shared/sfnflow"
)

func main() {
	ctx := context.Background()
	log := logging.New(os.Stdout, "restart-lambda", logging.LevelFromEnv())
	steps, err := newSteps(ctx, log, nil)
	if err != nil {
		logging.Event(ctx, log, slog.LevelError, "lambda_init_failed", "restart Lambda cannot start",
			slog.String(events.FieldReason, err.Error()))
		os.Exit(1)
	}
	lambda.Start(steps.Handle)
}

// newSteps wires the steps to their AWS adapters from the environment
// (sfnflow.StepsConfigFromEnv, the tables', ECS's, and KEYS_SECRET_ID).
// rec, when set (tests), records the AWS operations called.
func newSteps(ctx context.Context, log *slog.Logger, rec *awsops.Recorder) (*sfnflow.Steps, error) {
	cfg, err := sfnflow.StepsConfigFromEnv()
	tables, terr := dynamostore.TablesFromEnv()
	ecsCfg, eerr := ecsrunner.ConfigFromEnv()
	secretID := os.Getenv("KEYS_SECRET_ID")
	if secretID == "" {
		err = errors.Join(err, errors.New("KEYS_SECRET_ID is not set"))
	}
	if err := errors.Join(err, terr, eerr); err != nil {
		return nil, fmt.Errorf("read environment: %w", err)
	}
	awsCfg, err := awsclient.Load(ctx, awsops.RestartLambda, rec)
	if err != nil {
		return nil, err
	}
	src, err := secrets.Load(ctx, secretsmanager.NewFromConfig(awsCfg), secretID)
	if err != nil {
		return nil, err
	}
	src.Log = log
	go src.Run(ctx, 0)

	keys := src.Keys()
	store := dynamostore.New(dynamodb.NewFromConfig(awsCfg), tables)
	ecsCfg.Log = log
	runner := ecsrunner.New(ecs.NewFromConfig(awsCfg), efs.NewFromConfig(awsCfg), ecsCfg)
	relays := relayclient.New(store, keys.TaskKeys, nil, log)
	return sfnflow.NewSteps(cfg, sfnflow.StepsDeps{
		Deps: session.Deps{
			Store: store, Runner: runner, Warm: relays, Notifier: relays,
			Tickets: keys.Tickets, TaskKeys: keys.TaskKeys, Log: log,
		},
		Tokens: sfn.NewFromConfig(awsCfg),
		Tasks:  runner,
	}), nil
}
