// Package controlplane wires the control plane's Lambdas to their AWS
// adapters from the environment: the DynamoDB store (the tables'
// variables), the ECS runner (ECS's variables), the keys' secret
// (KEYS_SECRET_ID) and the relays' control API. Each Lambda's main.go adds
// only what is its own.
package controlplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	"github.com/aws/aws-sdk-go-v2/service/efs"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/aishell/aishell/shared/awsclient"
	"github.com/aishell/aishell/shared/awsops"
	"github.com/aishell/aishell/shared/dynamostore"
	"github.com/aishell/aishell/shared/ecsrunner"
	"github.com/aishell/aishell/shared/relayclient"
	"github.com/aishell/aishell/shared/secrets"
	"github.com/aishell/aishell/shared/session"
)

// Wiring is what a control-plane Lambda works with.
type Wiring struct {
	// AWS is the configuration its clients are built from (instrumented
	// for traces, and recording operations in tests).
	AWS aws.Config
	// Deps are the session rules' ports on AWS.
	Deps session.Deps
	// Runner is the ECS runner behind Deps.Runner (the refill lists tasks).
	Runner *ecsrunner.Runner
}

// FromEnv wires component's adapters. rec, when set (tests), records the
// AWS operations called. Its error names every missing variable.
func FromEnv(ctx context.Context, component string, log *slog.Logger, rec *awsops.Recorder) (Wiring, error) {
	tables, terr := dynamostore.TablesFromEnv()
	ecsCfg, eerr := ecsrunner.ConfigFromEnv()
	secretID := os.Getenv("KEYS_SECRET_ID")
	var serr error
	if secretID == "" {
		serr = errors.New("KEYS_SECRET_ID is not set")
	}
	if err := errors.Join(terr, eerr, serr); err != nil {
		return Wiring{}, fmt.Errorf("read environment: %w", err)
	}

	awsCfg, err := awsclient.Load(ctx, component, rec)
	if err != nil {
		return Wiring{}, err
	}
	src, err := secrets.Load(ctx, secretsmanager.NewFromConfig(awsCfg), secretID)
	if err != nil {
		return Wiring{}, err
	}
	src.Log = log
	// A warm Lambda keeps the keys fresh between invocations (rotation).
	go src.Run(ctx, 0)

	keys := src.Keys()
	store := dynamostore.New(dynamodb.NewFromConfig(awsCfg), tables)
	ecsCfg.Log = log
	runner := ecsrunner.New(ecs.NewFromConfig(awsCfg), efs.NewFromConfig(awsCfg), ecsCfg)
	relays := relayclient.New(store, keys.TaskKeys, nil, log)
	return Wiring{
		AWS: awsCfg,
		Deps: session.Deps{
			Store: store, Runner: runner, Warm: relays, Notifier: relays,
			Tickets: keys.Tickets, TaskKeys: keys.TaskKeys, Log: log,
		},
		Runner: runner,
	}, nil
}
