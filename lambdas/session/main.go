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

	"github.com/aishell/aishell/shared/awsops"
	"github.com/aishell/aishell/shared/controlplane"
	"github.com/aishell/aishell/shared/events"
	"github.com/aishell/aishell/shared/logging"
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
// environment (sfnflow.SessionConfigFromEnv and controlplane.FromEnv).
func handler(ctx context.Context, log *slog.Logger) (*sessionapi.Handler, error) {
	cfg, cerr := sfnflow.SessionConfigFromEnv()
	w, err := controlplane.FromEnv(ctx, awsops.SessionLambda, log, nil)
	if cerr != nil {
		// Name every wrong variable at once, the session rules' too.
		return nil, errors.Join(fmt.Errorf("read environment: %w", cerr), err)
	}
	if err != nil {
		return nil, err
	}
	svc := session.NewService(cfg, w.Deps)
	return &sessionapi.Handler{Svc: svc, RelayURL: cfg.ClientRelayURL, Log: log}, nil
}
