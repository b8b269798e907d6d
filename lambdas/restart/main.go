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
	"github.com/aws/aws-sdk-go-v2/service/sfn"

	"github.com/aishell/aishell/shared/awsops"
	"github.com/aishell/aishell/shared/controlplane"
	"github.com/aishell/aishell/shared/events"
	"github.com/aishell/aishell/shared/logging"
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
// (sfnflow.StepsConfigFromEnv and controlplane.FromEnv). rec, when set
// (tests), records the AWS operations called.
func newSteps(ctx context.Context, log *slog.Logger, rec *awsops.Recorder) (*sfnflow.Steps, error) {
	cfg, cerr := sfnflow.StepsConfigFromEnv()
	w, err := controlplane.FromEnv(ctx, awsops.RestartLambda, log, rec)
	if cerr != nil {
		// Name every wrong variable at once, the session rules' too.
		return nil, errors.Join(fmt.Errorf("read environment: %w", cerr), err)
	}
	if err != nil {
		return nil, err
	}
	return sfnflow.NewSteps(cfg, sfnflow.StepsDeps{
		Deps:   w.Deps,
		Tokens: sfn.NewFromConfig(w.AWS),
		Tasks:  w.Runner,
	}), nil
}
