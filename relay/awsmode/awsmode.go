// Package awsmode assembles the relay as it runs on Fargate: sessions and
// warm tasks in DynamoDB, tasks on ECS, restarts as Step Functions
// executions, keys from Secrets Manager, a heartbeat in the store so that
// the session Lambda assigns sessions to healthy relays, and the control
// API for the session Lambda. The session API itself is the Lambda behind
// API Gateway; this relay serves sockets, the page and health.
package awsmode

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	"github.com/aws/aws-sdk-go-v2/service/efs"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/sfn"

	"github.com/aishell/aishell/relay/hub"
	"github.com/aishell/aishell/relay/server"
	"github.com/aishell/aishell/shared/awsclient"
	"github.com/aishell/aishell/shared/awsops"
	"github.com/aishell/aishell/shared/dynamostore"
	"github.com/aishell/aishell/shared/ecsrunner"
	"github.com/aishell/aishell/shared/events"
	"github.com/aishell/aishell/shared/logging"
	"github.com/aishell/aishell/shared/secrets"
	"github.com/aishell/aishell/shared/session"
	"github.com/aishell/aishell/shared/sfnflow"
)

// Config is the relay's configuration in AWS.
type Config struct {
	// Addr is the listen address (0.0.0.0:8080 in the container).
	Addr string
	// RelayID names this relay in the store (the ECS task id).
	RelayID string
	// ClientURL is the public client socket URL (wss://host/ws).
	ClientURL string
	// TaskURL and ControlURL are how tasks and the control plane reach
	// this relay inside the VPC (ws://10.0.1.23:8080, http://...).
	TaskURL    string
	ControlURL string
	// SecretID names the keys' secret.
	SecretID string
	// RestartStateMachineArn is the restart state machine.
	RestartStateMachineArn string
	Tables                 dynamostore.Tables
	ECS                    ecsrunner.Config
	Hub                    hub.Config
	// Heartbeat is how often the relay renews its record (30 s).
	Heartbeat time.Duration
	Static    http.Handler
	LogOutput io.Writer
	LogLevel  slog.Level
	// AWS, when set, is used instead of the default configuration (tests
	// aim it at moto).
	AWS *aws.Config
	// Recorder notes the AWS operations called (tests).
	Recorder *awsops.Recorder
	// Runner, when set, replaces the ECS runner, and Restarter, when set,
	// replaces the Step Functions client: tests play tasks with local
	// bridge processes and run the restart's steps in process, since moto
	// runs no Lambda code.
	Runner    session.TaskRunner
	Restarter func(*session.Service) hub.Restarter
}

// ConfigFromEnv reads the relay's environment: PORT, RELAY_ID (default
// the host name), RELAY_PUBLIC_URL, RELAY_TASK_URL and RELAY_CONTROL_URL
// (default from the first private address), KEYS_SECRET_ID,
// RESTART_STATE_MACHINE_ARN, the tables' and ECS's variables, IDLE_TIMEOUT.
func ConfigFromEnv() (Config, error) {
	var errs []error
	need := func(name string) string {
		v := os.Getenv(name)
		if v == "" {
			errs = append(errs, fmt.Errorf("%s is not set", name))
		}
		return v
	}
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	if _, err := strconv.Atoi(port); err != nil {
		errs = append(errs, fmt.Errorf("PORT=%q is not a port number", port))
	}
	id := os.Getenv("RELAY_ID")
	if id == "" {
		id, _ = os.Hostname()
	}
	ip := privateAddr()
	cfg := Config{
		Addr:                   "0.0.0.0:" + port,
		RelayID:                "relay-" + id,
		ClientURL:              need("RELAY_PUBLIC_URL"),
		TaskURL:                envOr("RELAY_TASK_URL", "ws://"+net.JoinHostPort(ip, port)),
		ControlURL:             envOr("RELAY_CONTROL_URL", "http://"+net.JoinHostPort(ip, port)),
		SecretID:               need("KEYS_SECRET_ID"),
		RestartStateMachineArn: need("RESTART_STATE_MACHINE_ARN"),
		LogLevel:               logging.LevelFromEnv(),
		LogOutput:              os.Stdout,
	}
	if idle := os.Getenv("IDLE_TIMEOUT"); idle != "" {
		d, err := time.ParseDuration(idle)
		if err != nil || d <= 0 {
			errs = append(errs, fmt.Errorf("IDLE_TIMEOUT=%q is not a positive duration", idle))
		}
		cfg.Hub.IdleTimeout = d
	}
	var err error
	if cfg.Tables, err = dynamostore.TablesFromEnv(); err != nil {
		errs = append(errs, err)
	}
	if cfg.ECS, err = ecsrunner.ConfigFromEnv(); err != nil {
		errs = append(errs, err)
	}
	return cfg, errors.Join(errs...)
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// privateAddr returns the first non-loopback IPv4 address of the host.
func privateAddr() string {
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil {
			return n.IP.String()
		}
	}
	return "127.0.0.1"
}

// Relay is the running relay.
type Relay struct {
	URL   string
	Log   *slog.Logger
	Hub   *hub.Hub
	Store *dynamostore.Store

	cfg    Config
	srv    *http.Server
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
	err    error
}

// Start starts the relay and returns once it listens and has announced
// itself in the store.
func Start(ctx context.Context, cfg Config) (*Relay, error) {
	if cfg.Heartbeat == 0 {
		cfg.Heartbeat = 30 * time.Second
	}
	out := cfg.LogOutput
	if out == nil {
		out = os.Stdout
	}
	log := logging.New(out, "relay", cfg.LogLevel).With(events.FieldRelayID, cfg.RelayID)

	var awsCfg aws.Config
	if cfg.AWS != nil {
		awsCfg = cfg.AWS.Copy()
		awsclient.Prepare(&awsCfg, awsops.Relay, cfg.Recorder)
	} else {
		var err error
		if awsCfg, err = awsclient.Load(ctx, awsops.Relay, cfg.Recorder); err != nil {
			return nil, err
		}
	}

	keys, err := secrets.Load(ctx, secretsmanager.NewFromConfig(awsCfg), cfg.SecretID)
	if err != nil {
		return nil, fmt.Errorf("load keys: %w", err)
	}
	store := dynamostore.New(dynamodb.NewFromConfig(awsCfg), cfg.Tables)
	var runner session.TaskRunner = cfg.Runner
	if runner == nil {
		runner = ecsrunner.New(ecs.NewFromConfig(awsCfg), efs.NewFromConfig(awsCfg), cfg.ECS)
	}
	k := keys.Keys()
	svc := session.NewService(session.Config{
		RelayID: cfg.RelayID, ClientRelayURL: cfg.ClientURL, TaskRelayURL: cfg.TaskURL,
		PollInterval: 500 * time.Millisecond,
	}, session.Deps{Store: store, Runner: runner, Tickets: k.Tickets, TaskKeys: k.TaskKeys, Log: log})
	var restarter hub.Restarter
	if cfg.Restarter != nil {
		restarter = cfg.Restarter(svc)
	} else {
		restarter = sfnflow.NewWorkflows(sfn.NewFromConfig(awsCfg), store, cfg.RestartStateMachineArn, log)
	}

	hcfg := cfg.Hub
	hcfg.RelayID = cfg.RelayID
	h := hub.New(hcfg, svc, restarter, log, nil)
	svc.Warm, svc.Notifier = h, h

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.Addr, err)
	}
	r := &Relay{URL: "http://" + ln.Addr().String(), Log: log, Hub: h, Store: store, cfg: cfg}
	r.srv = &http.Server{
		Handler: server.New(server.Options{
			Hub: h, Tickets: k.Tickets, TaskKeys: k.TaskKeys, Static: cfg.Static, Control: true, Log: log,
			Owners: owners{store: store, self: cfg.RelayID, maxAge: 90 * time.Second},
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r.cancel = cancel

	if err := r.heartbeat(ctx); err != nil {
		ln.Close()
		cancel()
		return nil, err
	}
	r.wg.Add(3)
	go func() {
		defer r.wg.Done()
		if err := r.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server stopped", logging.KeyEvent, "server_failed", "error", err.Error())
		}
	}()
	go func() {
		defer r.wg.Done()
		keys.Run(runCtx, 5*time.Minute)
	}()
	go func() {
		defer r.wg.Done()
		t := time.NewTicker(cfg.Heartbeat)
		defer t.Stop()
		for {
			select {
			case <-runCtx.Done():
				return
			case <-t.C:
				if err := r.heartbeat(runCtx); err != nil {
					log.Error("relay heartbeat failed", logging.KeyEvent, "relay_heartbeat_failed", "error", err.Error())
				}
			}
		}
	}()
	logging.Event(ctx, log, slog.LevelInfo, events.RelayStarted, "relay started in AWS mode",
		slog.String(events.FieldRelayID, cfg.RelayID), slog.String("clientUrl", cfg.ClientURL))
	return r, nil
}

func (r *Relay) heartbeat(ctx context.Context) error {
	err := r.Store.PutRelay(ctx, session.Relay{
		ID: r.cfg.RelayID, ClientURL: r.cfg.ClientURL, TaskURL: r.cfg.TaskURL,
		ControlURL: r.cfg.ControlURL, HeartbeatAt: time.Now(),
	})
	if err != nil {
		return fmt.Errorf("announce relay %s: %w", r.cfg.RelayID, err)
	}
	return nil
}

// Close withdraws the relay from the store (no new sessions come to it),
// tells clients to reconnect (1001) and stops.
func (r *Relay) Close(ctx context.Context) error {
	r.once.Do(func() {
		var errs []error
		if err := r.Store.DeleteRelay(ctx, r.cfg.RelayID); err != nil {
			errs = append(errs, fmt.Errorf("withdraw relay: %w", err))
		}
		if err := r.Hub.Shutdown(ctx); err != nil {
			errs = append(errs, err)
		}
		if err := r.srv.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("http shutdown: %w", err))
		}
		r.cancel()
		r.wg.Wait()
		r.Log.Info("relay stopped", logging.KeyEvent, "relay_stopped")
		r.err = errors.Join(errs...)
	})
	return r.err
}

// owners finds the relay that owns a session, for the client sockets that
// the load balancer brings to another relay.
type owners struct {
	store  session.Store
	self   string
	maxAge time.Duration
}

// Owner returns the owning relay's internal base URL, "" for this relay's
// own sessions (and for unknown ones, which this relay refuses itself).
func (o owners) Owner(ctx context.Context, sessionID string) (string, error) {
	rec, err := o.store.GetSession(ctx, sessionID)
	if err != nil || rec.RelayID == o.self {
		return "", nil
	}
	relays, err := o.store.ListRelays(ctx)
	if err != nil {
		return "", fmt.Errorf("list relays: %w", err)
	}
	for _, r := range relays {
		if r.ID == rec.RelayID && time.Since(r.HeartbeatAt) <= o.maxAge {
			return r.TaskURL, nil
		}
	}
	return "", fmt.Errorf("relay %s of session %s: %w", rec.RelayID, sessionID, session.ErrNoRelay)
}
