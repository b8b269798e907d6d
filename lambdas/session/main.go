// Command session is the session API Lambda (R1): the handler of package
// sessionapi behind API Gateway, on DynamoDB, ECS, the keys' secret and the
// relays' control API. `make lambdas` builds it as bootstrap for
// provided.al2023.
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

	"github.com/aishell/aishell/shared/awsclient"
	"github.com/aishell/aishell/shared/awsops"
	"github.com/aishell/aishell/shared/dynamostore"
	"github.com/aishell/aishell/shared/ecsrunner"
	"github.com/aishell/aishell/shared/events"
	"github.com/aishell/aishell/shared/logging"
	"github.com/aishell/aishell/shared/relayclient"
	"github.com/aishell/aishell/shared/secrets"
	"github.com/aishell/aishell/shared/session"
	"github.com/aishell/aishell/shared/sessionapi"
	"github.com/aishell/aishell/shared/sfnflow"
)

func main() {
	ctx := context.Background()
	log := logging.New(os.Stdout, "session-lambda", logging.LevelFromEnv())
	h, err := handler(ctx, log)
	if err != nil {
		logging.Event(ctx, log, slog.LevelError, "lambda_init_failed", "session Lambda cannot start",
			slog.String(events.FieldReason, err.Error()))
		os.Exit(1)
	}
	lambda.Start(h.Handle)
}

// handler wires the session rules to their AWS adapters from the
// environment (sfnflow.SessionConfigFromEnv, the tables', ECS's, and
// KEYS_SECRET_ID).
func handler(ctx context.Context, log *slog.Logger) (*sessionapi.Handler, error) {
	cfg, err := sfnflow.SessionConfigFromEnv()
	tables, terr := dynamostore.TablesFromEnv()
	ecsCfg, eerr := ecsrunner.ConfigFromEnv()
	secretID := os.Getenv("KEYS_SECRET_ID")
	if secretID == "" {
		err = errors.Join(err, errors.New("KEYS_SECRET_ID is not set"))
	}
	if err := errors.Join(err, terr, eerr); err != nil {
		return nil, fmt.Errorf("read environment: %w", err)
	}
	awsCfg, err := awsclient.Load(ctx, awsops.SessionLambda, nil)
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
	svc := session.NewService(cfg, session.Deps{
		Store: store, Runner: runner, Warm: relays, Notifier: relays,
		Tickets: keys.Tickets, TaskKeys: keys.TaskKeys, Log: log,
	})
	return &sessionapi.Handler{Svc: svc, RelayURL: cfg.ClientRelayURL, Log: log}, nil
}
