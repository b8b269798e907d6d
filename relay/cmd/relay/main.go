// Command relay runs AI Shell on one machine (`make run`): the relay, the
// session API, the workflows and local tasks; or, with AISHELL_MODE=aws,
// the relay alone on Fargate (package awsmode). Settings of one machine come
// from the environment: PORT (8080), DATA_DIR (./.data), AGENT_COMMAND, AGENT_MODE,
// ENABLE_WARM_POOL (true), WARM_POOL_SIZE (2), IDLE_TIMEOUT (10m),
// MAX_TASKS (64),
// BRIDGE_BIN (the bridge beside this binary), LOG_LEVEL (info).
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/aishell/aishell/relay/awsmode"
	"github.com/aishell/aishell/relay/hub"
	"github.com/aishell/aishell/relay/local"
	"github.com/aishell/aishell/relay/web"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "relay:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	switch mode := os.Getenv("AISHELL_MODE"); mode {
	case "", "local":
	case "aws":
		return runAWS(ctx)
	default:
		return fmt.Errorf("AISHELL_MODE=%q is not local or aws", mode)
	}

	cfg, err := configFromEnv()
	if err != nil {
		return err
	}

	p, err := local.Start(ctx, cfg)
	if err != nil {
		return err
	}
	// The one start-up banner; everything else is JSON on stdout.
	fmt.Fprintf(os.Stderr, "AI Shell is running: open %s/ in a browser (data in %s, Ctrl-C stops)\n", p.URL, cfg.DataDir)

	<-ctx.Done()
	shutdown, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	return p.Close(shutdown)
}

// runAWS runs the relay on Fargate (AISHELL_MODE=aws): see package awsmode
// for its settings.
func runAWS(ctx context.Context) error {
	cfg, err := awsmode.ConfigFromEnv()
	if err != nil {
		return err
	}
	cfg.Static = web.Handler()
	r, err := awsmode.Start(ctx, cfg)
	if err != nil {
		return err
	}
	<-ctx.Done()
	shutdown, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return r.Close(shutdown)
}

func configFromEnv() (local.Config, error) {
	port := envOr("PORT", "8080")
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return local.Config{}, fmt.Errorf("PORT=%q is not a port number", port)
	}
	warm, err := strconv.ParseBool(envOr("ENABLE_WARM_POOL", "true"))
	if err != nil {
		return local.Config{}, fmt.Errorf("ENABLE_WARM_POOL=%q is not true or false", os.Getenv("ENABLE_WARM_POOL"))
	}
	size, err := strconv.Atoi(envOr("WARM_POOL_SIZE", "2"))
	if err != nil || size < 0 || size > 64 {
		return local.Config{}, fmt.Errorf("WARM_POOL_SIZE=%q is not a number from 0 to 64", os.Getenv("WARM_POOL_SIZE"))
	}
	idle, err := time.ParseDuration(envOr("IDLE_TIMEOUT", "10m"))
	if err != nil || idle <= 0 {
		return local.Config{}, fmt.Errorf("IDLE_TIMEOUT=%q is not a positive duration such as 10m", os.Getenv("IDLE_TIMEOUT"))
	}
	switch m := os.Getenv("AGENT_MODE"); m {
	case "", "pty", "pipes":
	default:
		return local.Config{}, fmt.Errorf("AGENT_MODE=%q is not pty or pipes", m)
	}
	var level slog.Level
	if v := os.Getenv("LOG_LEVEL"); v != "" {
		if err := level.UnmarshalText([]byte(v)); err != nil {
			return local.Config{}, fmt.Errorf("LOG_LEVEL=%q is not debug, info, warn or error", v)
		}
	}
	maxTasks, err := strconv.Atoi(envOr("MAX_TASKS", "64"))
	if err != nil || maxTasks < 1 || maxTasks > 4096 {
		return local.Config{}, fmt.Errorf("MAX_TASKS=%q is not a number from 1 to 4096", os.Getenv("MAX_TASKS"))
	}
	bridge := os.Getenv("BRIDGE_BIN")
	if bridge == "" {
		exe, err := os.Executable()
		if err != nil {
			return local.Config{}, fmt.Errorf("find own binary: %w", err)
		}
		bridge = filepath.Join(filepath.Dir(exe), "bridge")
	}
	return local.Config{
		Addr:         "127.0.0.1:" + port,
		DataDir:      envOr("DATA_DIR", ".data"),
		BridgePath:   bridge,
		AgentCommand: os.Getenv("AGENT_COMMAND"),
		AgentMode:    os.Getenv("AGENT_MODE"),
		WarmPool:     warm,
		WarmPoolSize: size,
		MaxTasks:     maxTasks,
		Hub:          hub.Config{IdleTimeout: idle},
		Static:       web.Handler(),
		LogOutput:    os.Stdout,
		LogLevel:     level,
	}, nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
