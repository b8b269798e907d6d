// Package local assembles the whole product on one machine (R17): the
// relay, the session API served through the Lambda's own handler, the
// restart and refill workflows in process, tasks as local bridge
// processes, an embedded store and a key file under the data folder.
// `make run` and the end-to-end tests and benchmarks start it through here.
package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/aishell/aishell/relay/hub"
	"github.com/aishell/aishell/relay/ops"
	"github.com/aishell/aishell/relay/server"
	"github.com/aishell/aishell/shared/events"
	"github.com/aishell/aishell/shared/keys"
	"github.com/aishell/aishell/shared/localstore"
	"github.com/aishell/aishell/shared/localtask"
	"github.com/aishell/aishell/shared/logging"
	"github.com/aishell/aishell/shared/session"
	"github.com/aishell/aishell/shared/sessionapi"
	"github.com/aishell/aishell/shared/ticket"
	"github.com/aishell/aishell/shared/warmpool"
	"github.com/aishell/aishell/shared/workflow"
)

// Env is the environment name of one machine.
const Env = "local"

// Config is what `make run` reads from its environment, and what tests set.
type Config struct {
	// Addr is the listen address (127.0.0.1:8080).
	Addr string
	// DataDir holds all state: store, keys, logs, workspaces (./.data).
	DataDir string
	// BridgePath is the bridge binary tasks run.
	BridgePath string
	// AgentCommand and AgentMode are handed to every bridge.
	AgentCommand string
	AgentMode    string
	// WarmPool and WarmPoolSize configure the pool (ENABLE_WARM_POOL).
	WarmPool     bool
	WarmPoolSize int
	// RefillInterval is the refill schedule (10 s).
	RefillInterval time.Duration
	// MaxTasks bounds the task processes (capacity).
	MaxTasks int
	// Hub holds the relay's limits and time-outs.
	Hub hub.Config
	// Session holds the session rules' settings; the relay URLs are set
	// from Addr.
	Session session.Config
	// Static serves the web page; may be nil.
	Static http.Handler
	// Control turns on the relay's control API, for a control plane in
	// another process (tests of the AWS path).
	Control bool
	// LogOutput receives the relay's log lines besides the log files
	// (stdout for `make run`); nil means the files only.
	LogOutput io.Writer
	// LogLevel is the minimum level logged.
	LogLevel slog.Level
}

// Product is the running product.
type Product struct {
	// URL is the base URL, http://ADDR.
	URL string
	// Log is the relay's logger.
	Log     *slog.Logger
	Svc     *session.Service
	Hub     *hub.Hub
	Store   *localstore.Store
	Runner  *localtask.Runner
	Refill  *warmpool.Refiller
	Keys    keys.Keys
	LogsDir string

	srv      *http.Server
	ln       net.Listener
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	logFiles []*logging.DailyFile
	once     sync.Once
	closeErr error
}

// Start starts the product and returns once it listens.
func Start(ctx context.Context, cfg Config) (*Product, error) {
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:8080"
	}
	if cfg.DataDir == "" {
		cfg.DataDir = ".data"
	}
	if cfg.RefillInterval == 0 {
		cfg.RefillInterval = 10 * time.Second
	}
	if cfg.MaxTasks == 0 {
		cfg.MaxTasks = 64
	}
	dataDir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("data folder: %w", err)
	}
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return nil, fmt.Errorf("create data folder: %w", err)
	}
	if _, err := os.Stat(cfg.BridgePath); err != nil {
		return nil, fmt.Errorf("bridge binary: %w (build it with `make build`)", err)
	}

	p := &Product{LogsDir: filepath.Join(dataDir, "logs")}
	relayLog, err := logging.NewDailyFile(p.LogsDir, "relay")
	if err != nil {
		return nil, err
	}
	taskLog, err := logging.NewDailyFile(p.LogsDir, "task")
	if err != nil {
		return nil, err
	}
	p.logFiles = []*logging.DailyFile{relayLog, taskLog}
	var out io.Writer = relayLog
	if cfg.LogOutput != nil {
		out = io.MultiWriter(cfg.LogOutput, relayLog)
	}
	// slog's handler writes each line with one Write under its own lock.
	log := logging.New(out, "relay", cfg.LogLevel)
	p.Log = log

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		p.closeLogs()
		return nil, fmt.Errorf("listen on %s: %w", cfg.Addr, err)
	}
	p.ln = ln
	addr := ln.Addr().String()
	p.URL = "http://" + addr

	if p.Keys, err = keys.LoadOrCreate(filepath.Join(dataDir, "keys.json")); err != nil {
		return nil, p.fail(err)
	}
	if p.Store, err = localstore.Open(filepath.Join(dataDir, "state.json")); err != nil {
		return nil, p.fail(err)
	}
	p.Runner, err = localtask.New(localtask.Config{
		BridgePath:    cfg.BridgePath,
		WorkspaceRoot: filepath.Join(dataDir, "workspaces", Env),
		AgentCommand:  cfg.AgentCommand,
		AgentMode:     cfg.AgentMode,
		MaxTasks:      cfg.MaxTasks,
		LogSink:       taskLog,
		Log:           log,
	})
	if err != nil {
		return nil, p.fail(err)
	}

	relayID := "relay-" + Env
	if err := forgetDeadTasks(ctx, p.Store, relayID, log); err != nil {
		return nil, p.fail(err)
	}
	scfg := cfg.Session
	scfg.RelayID = relayID
	scfg.ClientRelayURL = "ws://" + addr + "/ws"
	scfg.TaskRelayURL = "ws://" + addr
	scfg.WarmPool = cfg.WarmPool
	if scfg.PollInterval == 0 {
		scfg.PollInterval = 10 * time.Millisecond
	}
	tickets := ticket.NewKeyring(p.Keys.Ticket)
	taskKeys := ticket.NewKeyring(p.Keys.Task)
	p.Svc = session.NewService(scfg, session.Deps{
		Store:    p.Store,
		Runner:   p.Runner,
		Tickets:  tickets,
		TaskKeys: taskKeys,
		Log:      log,
	})

	p.Refill = warmpool.NewRefiller(warmpool.Config{
		RelayID:  relayID,
		RelayURL: scfg.TaskRelayURL,
		Target:   cfg.WarmPoolSize,
	}, warmpool.Deps{Store: p.Store, Runner: p.Runner, TaskKeys: taskKeys, Log: log})

	hcfg := cfg.Hub
	hcfg.RelayID = relayID
	p.Hub = hub.New(hcfg, p.Svc, workflow.NewLocal(p.Svc, 0, log), log, p.Refill.Kick)
	p.Svc.Warm = p.Hub
	p.Svc.Notifier = p.Hub
	if cfg.WarmPool {
		p.Svc.OnWarmClaim = p.Refill.Kick
	}

	// The operator page (/ops): loopback only, like everything here.
	opsPage := ops.New(ops.Options{
		Hub: p.Hub, Store: p.Store, RelayID: relayID, WarmTarget: warmTarget(cfg),
		LogsDir: p.LogsDir, Env: Env, Log: log,
	})
	p.srv = &http.Server{
		Handler: server.New(server.Options{
			Hub:       p.Hub,
			Tickets:   tickets,
			TaskKeys:  taskKeys,
			API:       &sessionapi.Handler{Svc: p.Svc, RelayURL: scfg.ClientRelayURL, Log: log},
			DevJWTKey: p.Keys.DevJWT,
			Static:    cfg.Static,
			Ops:       opsPage,
			Control:   cfg.Control,
			// Answer only to loopback names (no DNS rebinding), and let no
			// user's agent sign in as anyone.
			AllowedHosts: []string{"127.0.0.1", "localhost"},
			DenyPeerUID:  denyAgents(),
			Log:          log,
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	p.cancel = cancel
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		if err := p.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server stopped", logging.KeyEvent, "server_failed", "error", err.Error())
		}
	}()
	if cfg.WarmPool && cfg.WarmPoolSize > 0 {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.Refill.Loop(runCtx, cfg.RefillInterval)
		}()
	}
	logging.Event(ctx, log, slog.LevelInfo, events.RelayStarted, "relay started on "+p.URL,
		slog.String(events.FieldRelayID, relayID), slog.Bool("warmPool", cfg.WarmPool),
		slog.Int("warmPoolSize", cfg.WarmPoolSize), slog.String("dataDir", dataDir))
	return p, nil
}

// warmTarget is the warm pool's size, 0 when it is off.
func warmTarget(cfg Config) int {
	if !cfg.WarmPool {
		return 0
	}
	return cfg.WarmPoolSize
}

func (p *Product) fail(err error) error {
	if p.ln != nil {
		p.ln.Close()
	}
	if p.Store != nil {
		p.Store.Close()
	}
	p.closeLogs()
	return err
}

func (p *Product) closeLogs() {
	for _, f := range p.logFiles {
		f.Close()
	}
}

// forgetDeadTasks brings the store in line with a machine where no task of
// an earlier run survives (they are child processes): warm task records
// are dropped, and sessions that had a task are marked stopped, so that
// their users' return restarts them (R5) instead of waiting for a task
// that will never connect.
func forgetDeadTasks(ctx context.Context, st *localstore.Store, relayID string, log *slog.Logger) error {
	warm, err := st.ListWarmTasks(ctx, relayID)
	if err != nil {
		return err
	}
	for _, w := range warm {
		if err := st.DeleteWarmTask(ctx, w.ID); err != nil {
			return err
		}
	}
	sessions, err := st.ListSessions(ctx)
	if err != nil {
		return err
	}
	stopped := 0
	for _, s := range sessions {
		if s.State == session.StateStopped {
			continue
		}
		s.State = session.StateStopped
		if _, err := st.UpdateSession(ctx, s); err != nil {
			return err
		}
		stopped++
	}
	if len(warm) > 0 || stopped > 0 {
		log.Info("tasks of the previous run are gone", logging.KeyEvent, "previous_tasks_forgotten",
			"warmTasks", len(warm), "sessionsStopped", stopped)
	}
	return nil
}

// denyAgents returns the uid rule of sign-in: when the product runs as
// root, agents run under uids from localstore.FirstUID up and may not
// sign in; otherwise agents share the product's uid and there is no
// isolation to keep (the README says so).
func denyAgents() func(int) bool {
	if os.Geteuid() != 0 {
		return nil
	}
	return func(uid int) bool { return uid >= localstore.FirstUID }
}

// Close shuts the product down: clients are told to reconnect (1001), the
// HTTP server stops, the refill stops, every task process is stopped, the
// store and logs are closed. Nothing is left running.
func (p *Product) Close(ctx context.Context) error {
	p.once.Do(func() {
		var errs []error
		if err := p.Hub.Shutdown(ctx); err != nil {
			errs = append(errs, err)
		}
		if err := p.srv.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("http shutdown: %w", err))
		}
		p.cancel()
		p.wg.Wait()
		if err := p.Runner.StopAll(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stop tasks: %w", err))
		}
		if err := p.Store.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close store: %w", err))
		}
		p.Log.Info("relay stopped", logging.KeyEvent, "relay_stopped")
		p.closeLogs()
		p.closeErr = errors.Join(errs...)
	})
	return p.closeErr
}
