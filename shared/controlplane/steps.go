package controlplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/service/sfn"

	"github.com/aishell/aishell/shared/awsops"
	"github.com/aishell/aishell/shared/events"
	"github.com/aishell/aishell/shared/logging"
	"github.com/aishell/aishell/shared/sfnflow"
)

// StepsFromEnv wires the state machines' steps to their AWS adapters from
// the environment (sfnflow.StepsConfigFromEnv and FromEnv), for the
// component whose role runs them (restart-lambda, refill-lambda). rec, when
// set (tests), records the AWS operations called. Its error names every
// wrong variable at once, the session rules' too.
func StepsFromEnv(ctx context.Context, component string, log *slog.Logger, rec *awsops.Recorder) (*sfnflow.Steps, error) {
	cfg, cerr := sfnflow.StepsConfigFromEnv()
	w, err := FromEnv(ctx, component, log, rec)
	if cerr != nil {
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

// ServeSteps is the main of a steps Lambda: it wires the steps and serves
// invocations, or logs why it cannot start and exits 1.
func ServeSteps(component string) {
	ctx := context.Background()
	log := logging.New(os.Stdout, component, logging.LevelFromEnv())
	steps, err := StepsFromEnv(ctx, component, log, nil)
	if err != nil {
		logging.Event(ctx, log, slog.LevelError, "lambda_init_failed", component+" cannot start",
			slog.String(events.FieldReason, err.Error()))
		os.Exit(1)
	}
	lambda.Start(steps.Handle)
}
