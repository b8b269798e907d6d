// Command bridge is the entry point of an agent task: it connects the task
// to the relay and runs the user's agent (see package bridge). Its settings
// come from the environment; it exits with status 0 when the agent ended or
// was stopped, and 1 when the bridge failed.
package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/aishell/aishell/relay/bridge"
	"github.com/aishell/aishell/shared/logging"
)

func main() {
	logger := logging.New(os.Stdout, "bridge", logging.LevelFromEnv())

	cfg, err := bridge.ConfigFromEnv(os.Getenv)
	if err != nil {
		logging.Event(context.Background(), logger, slog.LevelError, "bridge_config_invalid",
			err.Error(), slog.String("reason", err.Error()))
		os.Exit(1)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	err = bridge.Run(ctx, cfg, logger)
	stop()
	if err != nil {
		os.Exit(1)
	}
}
