package awse2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/aishell/aishell/relay/internal/buildtest"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/aishell/aishell/relay/awsmode"
	"github.com/aishell/aishell/relay/hub"
	"github.com/aishell/aishell/shared/awsclient"
	"github.com/aishell/aishell/shared/awsops"
	"github.com/aishell/aishell/shared/awstest"
	"github.com/aishell/aishell/shared/dynamostore"
	"github.com/aishell/aishell/shared/ecsrunner"
	"github.com/aishell/aishell/shared/logging"
	"github.com/aishell/aishell/shared/relayclient"
	"github.com/aishell/aishell/shared/secrets"
	"github.com/aishell/aishell/shared/session"
	"github.com/aishell/aishell/shared/sessionapi"
	"github.com/aishell/aishell/shared/warmpool"
	"github.com/aishell/aishell/shared/workflow"
)

// base is the AWS configuration aimed at moto that every client copies.
// Its one HTTP client sends DynamoDB requests one at a time (awstest's
// work-around of moto's unlocked conditional writes), which holds only
// among clients sharing it; so all components share it, as all of them
// share one DynamoDB in AWS.
var base aws.Config

// componentConfig returns a configuration whose calls are recorded under
// component.
func componentConfig(component string) aws.Config {
	cfg := base.Copy()
	awsclient.Prepare(&cfg, component, ops)
	return cfg
}

// options adjust the product for one test.
type options struct {
	// warm turns warm claims on in the control plane (ENABLE_WARM_POOL).
	warm bool
	// agent is AGENT_COMMAND, /bin/sh unless set.
	agent string
	// idle is the relays' idle time-out (10 min unless set).
	idle time.Duration
}

// product is one test's AI Shell in AWS mode: tables of its own, the ECS
// runner's settings, the bridges playing its tasks, the control plane, the
// restart steps, and its relays.
type product struct {
	t      *testing.T
	o      options
	tables dynamostore.Tables
	ecs    ecsrunner.Config
	logs   *logLines
	fleet  *taskFleet
	// api is the session Lambda's handler over control, its session rules.
	api     *sessionapi.Handler
	control *session.Service
	// restarts are the restart Lambda's session rules, on which the
	// relays run the restart steps in process.
	restarts *session.Service
	// inspect reads and writes the tables for the test itself; its calls
	// are not the product's and go unrecorded.
	inspect *dynamostore.Store
}

var products atomic.Int64

// newProduct builds a product on tables of its own; its relays are
// started with startRelay. Every process it starts ends with the test.
func newProduct(t *testing.T, o options) *product {
	t.Helper()
	if moto == nil {
		t.Skip(awstest.ErrNoMoto)
	}
	if o.agent == "" {
		o.agent = "/bin/sh"
	}
	ctx := context.Background()
	prefix := fmt.Sprintf("e2e%d-", products.Add(1))
	p := &product{t: t, o: o, logs: &logLines{}, tables: dynamostore.Tables{
		Sessions: prefix + "sessions", WarmTasks: prefix + "warm-tasks",
		Users: prefix + "users", Relays: prefix + "relays",
	}}
	if err := dynamostore.CreateTables(ctx, dynamodb.NewFromConfig(base), p.tables); err != nil {
		t.Fatalf("create tables: %v", err)
	}
	p.inspect = dynamostore.New(dynamodb.NewFromConfig(base), p.tables)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the product's last log lines:\n%s", p.logs.tail(60))
		}
	})

	p.ecs = ecsrunner.Config{
		Cluster:           cluster.name,
		TaskDefinition:    cluster.taskDefinition,
		ContainerName:     cluster.container,
		Subnets:           []string{cluster.subnet},
		SecurityGroups:    []string{cluster.group},
		LaunchType:        "FARGATE",
		Env:               "e2e",
		WorkspaceRoot:     buildtest.OpenTempDir(t),
		AgentCommand:      o.agent,
		SharedAccessPoint: true,
	}
	p.fleet = newFleet(t, p.ecs, p.logs)

	p.control = p.sessionRules(awsops.SessionLambda)
	p.api = &sessionapi.Handler{Svc: p.control, Log: p.control.Log}
	p.restarts = p.sessionRules(awsops.RestartLambda)
	return p
}

// sessionRules wires the session rules of a control plane Lambda as its
// main.go does: keys from the secret, DynamoDB, the ECS runner (here over
// the fleet), and the relays' control API for warm claims and notices;
// each new session goes to a healthy relay from the store.
func (p *product) sessionRules(component string) *session.Service {
	p.t.Helper()
	cfg := componentConfig(component)
	log := logging.New(p.logs, component, slog.LevelInfo)
	src, err := secrets.Load(context.Background(), secretsmanager.NewFromConfig(cfg), secretID)
	if err != nil {
		p.t.Fatalf("%s: %v", component, err)
	}
	keys := src.Keys()
	store := dynamostore.New(dynamodb.NewFromConfig(cfg), p.tables)
	relays := relayclient.New(store, keys.TaskKeys, nil, log)
	return session.NewService(session.Config{AssignRelays: true, WarmPool: p.o.warm}, session.Deps{
		Store: store, Runner: p.fleet.runner(cfg), Warm: relays, Notifier: relays,
		Tickets: keys.Tickets, TaskKeys: keys.TaskKeys, Log: log,
	})
}

// relayUnderTest is a relay in AWS mode and the addresses it announced.
type relayUnderTest struct {
	*awsmode.Relay
	id        string
	clientURL string
	taskURL   string
}

// startRelay starts a relay in AWS mode on loopback, renewing its heartbeat
// every heartbeat (30 s if 0), and closes it when the test ends.
func (p *product) startRelay(name string, heartbeat time.Duration) *relayUnderTest {
	p.t.Helper()
	id := "relay-" + name
	restartLog := logging.New(p.logs, awsops.RestartLambda, slog.LevelInfo)
	for attempt := 1; ; attempt++ {
		addr := reservePort(p.t)
		r := &relayUnderTest{id: id, clientURL: "ws://" + addr + "/ws", taskURL: "ws://" + addr}
		awsCfg := base.Copy()
		started, err := awsmode.Start(context.Background(), awsmode.Config{
			Addr:       addr,
			RelayID:    id,
			ClientURL:  r.clientURL,
			TaskURL:    r.taskURL,
			ControlURL: "http://" + addr,
			SecretID:   secretID,
			Tables:     p.tables,
			ECS:        p.ecs,
			Hub:        hub.Config{IdleTimeout: p.o.idle},
			Heartbeat:  heartbeat,
			LogOutput:  p.logs,
			AWS:        &awsCfg,
			Recorder:   ops,
			Runner:     p.fleet.runner(componentConfig(awsops.Relay)),
			// moto runs no Lambda code, so the restart state machine cannot
			// run here: its steps run in process (workflow.Local), in the
			// same order and time limit, on the restart Lambda's session
			// rules over the same DynamoDB and ECS adapters. The state
			// machine's definition runs on moto's engine in shared/sfnflow.
			Restarter: func(*session.Service) hub.Restarter {
				return workflow.NewLocal(p.restarts, 0, restartLog)
			},
		})
		if errors.Is(err, syscall.EADDRINUSE) && attempt < 3 {
			continue // the reserved port was taken meanwhile
		}
		if err != nil {
			p.t.Fatalf("start relay %s: %v", id, err)
		}
		r.Relay = started
		p.t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if err := started.Close(ctx); err != nil {
				p.t.Errorf("close relay %s: %v", id, err)
			}
		})
		return r
	}
}

// refill runs one round of the refill Lambda's warm pool step for a relay,
// on its own DynamoDB and ECS clients, to target warm tasks.
func (p *product) refill(r *relayUnderTest, target int) warmpool.Actions {
	p.t.Helper()
	cfg := componentConfig(awsops.RefillLambda)
	src, err := secrets.Load(context.Background(), secretsmanager.NewFromConfig(cfg), secretID)
	if err != nil {
		p.t.Fatal(err)
	}
	refiller := warmpool.NewRefiller(
		warmpool.Config{RelayID: r.id, RelayURL: r.taskURL, Target: target},
		warmpool.Deps{
			Store:    dynamostore.New(dynamodb.NewFromConfig(cfg), p.tables),
			Runner:   p.fleet.runner(cfg),
			TaskKeys: src.Keys().TaskKeys,
			Log:      logging.New(p.logs, awsops.RefillLambda, slog.LevelInfo),
		})
	acts, err := refiller.RunOnce(context.Background())
	if err != nil {
		p.t.Fatalf("refill the warm pool of %s: %v", r.id, err)
	}
	return acts
}

// session reads a session's record.
func (p *product) session(id string) session.Session {
	p.t.Helper()
	s, err := p.inspect.GetSession(context.Background(), id)
	if err != nil {
		p.t.Fatalf("read session %s: %v", id, err)
	}
	return s
}

// reservePort returns a loopback address whose port was free a moment ago:
// a relay's URLs go into its heartbeat record as it starts, so its address
// must be known before.
func reservePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// eventually checks cond until it holds, at most limit. It is for state
// read from outside the product (tables, moto), which sends no event.
func eventually(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(limit)
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("%s: not within %s", what, limit)
		}
	}
}

// logLines collects the JSON log lines of a product's components and
// bridges.
type logLines struct {
	mu  sync.Mutex // guards buf
	buf bytes.Buffer
}

func (l *logLines) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(b)
}

func (l *logLines) text() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// matching returns the lines in which every key of want has its value.
func (l *logLines) matching(want map[string]any) []map[string]any {
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(l.text()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var line map[string]any
		if json.Unmarshal(sc.Bytes(), &line) != nil {
			continue
		}
		ok := true
		for k, v := range want {
			ok = ok && line[k] == v
		}
		if ok {
			out = append(out, line)
		}
	}
	return out
}

// waitMatching waits until some line matches want, and returns the
// matching lines.
func (l *logLines) waitMatching(t *testing.T, want map[string]any) []map[string]any {
	t.Helper()
	var got []map[string]any
	eventually(t, frameWait, fmt.Sprintf("a log line with %v", want), func() bool {
		got = l.matching(want)
		return len(got) > 0
	})
	return got
}

// tail returns the last n lines.
func (l *logLines) tail(n int) string {
	lines := strings.Split(strings.TrimRight(l.text(), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
