package sfnflow_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sfn"
	"github.com/aws/aws-sdk-go-v2/service/sfn/types"

	"github.com/aishell/aishell/shared/awsclient"
	"github.com/aishell/aishell/shared/awsops"
	"github.com/aishell/aishell/shared/awstest"
	"github.com/aishell/aishell/shared/localstore"
	"github.com/aishell/aishell/shared/logging"
	"github.com/aishell/aishell/shared/session"
	"github.com/aishell/aishell/shared/sfnflow"
	"github.com/aishell/aishell/shared/ticket"
	"github.com/aishell/aishell/shared/workflow"
)

// These tests run both definitions on moto's Step Functions engine, the
// steps Lambda answered from moto's queue of static Lambda responses, and
// the relay's Workflows client against it.
//
// moto gaps met here, worked around in this file only:
//   - A second StartExecution in one region crashes moto 5.2.1, so every
//     execution gets a region of its own (nextRegion).
//   - moto's engine calls Lambda at localhost:MOTO_PORT, which is 0 when
//     moto_server listens on a port of the system's choosing (as
//     awstest.Start does); startMoto gives it a fixed free port instead.
//   - The Docker-less Lambda never answers with a function error, except
//     when its answer is over the 6 MB payload limit; functionError is
//     such an answer, a genuine Unhandled error on the path a product
//     error takes.
//   - StopExecution does not end an execution that waits for a task token:
//     it stays RUNNING until its time-out. Where the relay stops one, the
//     test checks the StopExecution call (stopSpy) instead of the status.
//   - The static Lambda cannot hand the test WaitConnection's task token;
//     tokenOf reads it from the execution's history (no event says when
//     it is there, so it polls).

var (
	moto     *awstest.Moto
	recorder = awsops.NewRecorder()
)

func TestMain(m *testing.M) {
	var stop func()
	var err error
	moto, stop, err = startMoto()
	if err != nil && !errors.Is(err, awstest.ErrNoMoto) {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if moto != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err = moto.ExecuteStateMachines(ctx)
		cancel()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			stop()
			os.Exit(1)
		}
	}

	code := m.Run()

	if stop != nil {
		stop()
	}
	if code == 0 {
		if err := recorder.Check(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

var running = regexp.MustCompile(`Running on (http://127\.0\.0\.1:\d+)`)

// startMoto runs moto_server on a free loopback port that it also knows as
// MOTO_PORT (see the gaps above).
func startMoto() (*awstest.Moto, func(), error) {
	if _, err := exec.LookPath("moto_server"); err != nil {
		return nil, nil, awstest.ErrNoMoto
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, fmt.Errorf("find a free port: %w", err)
	}
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()

	cmd := exec.Command("moto_server", "-H", "127.0.0.1", "-p", port)
	cmd.Env = append(os.Environ(), "MOTO_PORT="+port)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, err
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("start moto: %w", err)
	}
	stop := func() { cmd.Process.Kill(); cmd.Wait() }
	found := make(chan string, 1)
	go func() {
		s := bufio.NewScanner(out)
		for s.Scan() {
			if m := running.FindStringSubmatch(s.Text()); m != nil {
				found <- m[1]
			}
		}
	}()
	select {
	case url := <-found:
		return &awstest.Moto{URL: url}, stop, nil
	case <-time.After(30 * time.Second):
		stop()
		return nil, nil, errors.New("moto_server did not start within 30 s")
	}
}

func needMoto(t *testing.T) {
	t.Helper()
	if moto == nil {
		t.Skip(awstest.ErrNoMoto)
	}
}

// regions moto's Step Functions serves; each execution takes one.
var regions = struct {
	sync.Mutex
	left []string
}{left: []string{
	"us-east-2", "us-west-1", "us-west-2", "ca-central-1", "eu-west-1", "eu-west-2", "eu-west-3",
	"eu-central-1", "eu-north-1", "eu-south-1", "ap-south-1", "ap-northeast-1", "ap-northeast-2",
	"ap-northeast-3", "ap-southeast-1", "ap-southeast-2", "sa-east-1", "me-south-1", "af-south-1",
	"ap-east-1", "us-east-1",
}}

func nextRegion(t *testing.T) string {
	t.Helper()
	regions.Lock()
	defer regions.Unlock()
	if len(regions.left) == 0 {
		t.Fatal("no region left for another execution; add one to the list")
	}
	r := regions.left[0]
	regions.left = regions.left[1:]
	return r
}

// client returns a Step Functions client of region; component records its
// calls ("" records nothing: the test's own set-up).
func client(region, component string) *sfn.Client {
	cfg := moto.Config()
	cfg.Region = region
	if component != "" {
		awsclient.Prepare(&cfg, component, recorder)
	}
	return sfn.NewFromConfig(cfg)
}

// answer queues the steps Lambda's answers in region, in call order.
func answer(t *testing.T, region string, results ...string) {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"region": region, "results": results})
	resp, err := http.Post(moto.URL+"/moto-api/static/lambda-simple/response", "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("queue Lambda answers: %s", resp.Status)
	}
}

// functionError is an answer the Docker-less Lambda turns into a function
// error (Unhandled, Function.ResponseSizeTooLarge): see the gaps above.
var functionError = strings.Repeat("x", 6_000_001)

const account = "123456789012"

// createMachine creates a state machine from def with the steps Lambda's
// ARN substituted, as CDK does.
func createMachine(t *testing.T, region, name, def string) string {
	t.Helper()
	fn := "arn:aws:lambda:" + region + ":" + account + ":function:" + name + "-steps"
	def = strings.NewReplacer("${"+sfnflow.RestartFunctionVar+"}", fn, "${"+sfnflow.RefillFunctionVar+"}", fn).Replace(def)
	out, err := client(region, "").CreateStateMachine(context.Background(), &sfn.CreateStateMachineInput{
		Name:       aws.String(name),
		Definition: aws.String(def),
		RoleArn:    aws.String("arn:aws:iam::" + account + ":role/" + name + "-machine"),
	})
	if err != nil {
		t.Fatalf("create state machine %s: %v", name, err)
	}
	return aws.ToString(out.StateMachineArn)
}

func executionArn(machineArn, name string) string {
	return strings.Replace(machineArn, ":stateMachine:", ":execution:", 1) + ":" + name
}

// history polls an execution's history until match finds what it wants in
// it, or the execution ends (see the gaps above).
func history(t *testing.T, c *sfn.Client, arn string, match func(types.HistoryEvent) (string, bool)) string {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(20 * time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for time.Now().Before(deadline) {
		h, err := c.GetExecutionHistory(ctx, &sfn.GetExecutionHistoryInput{ExecutionArn: aws.String(arn)})
		if err == nil {
			for _, e := range h.Events {
				if v, ok := match(e); ok {
					return v
				}
			}
		}
		<-tick.C
	}
	t.Fatalf("execution %s: not found in its history within 20 s", arn)
	return ""
}

// tokenOf reads WaitConnection's task token from the payload it sent the
// steps Lambda.
func tokenOf(t *testing.T, c *sfn.Client, arn string) string {
	return history(t, c, arn, func(e types.HistoryEvent) (string, bool) {
		d := e.TaskScheduledEventDetails
		if d == nil || !strings.HasSuffix(aws.ToString(d.Resource), "waitForTaskToken") {
			return "", false
		}
		var p struct{ Payload sfnflow.StepInput }
		if err := json.Unmarshal([]byte(aws.ToString(d.Parameters)), &p); err != nil || p.Payload.Token == "" {
			return "", false
		}
		return p.Payload.Token, true
	})
}

// waitEnd polls an execution until it is no longer running.
func waitEnd(t *testing.T, c *sfn.Client, arn string) *sfn.DescribeExecutionOutput {
	t.Helper()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		d, err := c.DescribeExecution(context.Background(), &sfn.DescribeExecutionInput{ExecutionArn: aws.String(arn)})
		if err != nil {
			t.Fatal(err)
		}
		if d.Status != types.ExecutionStatusRunning {
			return d
		}
		<-tick.C
	}
	t.Fatalf("execution %s still running after 60 s", arn)
	return nil
}

// stopSpy records the relay's StopExecution calls (see the gaps above).
type stopSpy struct {
	sfnflow.SFN
	mu    sync.Mutex // guards stops
	stops []*sfn.StopExecutionInput
}

func (s *stopSpy) StopExecution(ctx context.Context, in *sfn.StopExecutionInput,
	opts ...func(*sfn.Options)) (*sfn.StopExecutionOutput, error) {
	s.mu.Lock()
	s.stops = append(s.stops, in)
	s.mu.Unlock()
	return s.SFN.StopExecution(ctx, in, opts...)
}

// stopped returns the Error of the one StopExecution call for arn, or "".
func (s *stopSpy) stopped(arn string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, in := range s.stops {
		if aws.ToString(in.ExecutionArn) == arn {
			return aws.ToString(in.Error)
		}
	}
	return ""
}

// restartRig is one restart on its own region: a session on the embedded
// store, the relay's Workflows and the Lambda's Steps, both on moto.
type restartRig struct {
	region, machine string
	sess            session.Session
	flows           *sfnflow.Workflows
	spy             *stopSpy
	steps           *sfnflow.Steps
}

const newTaskID = "t_new"

func newRestartRig(t *testing.T, opts ...sfnflow.Option) *restartRig {
	t.Helper()
	region := nextRegion(t)
	store, err := localstore.Open(filepath.Join(t.TempDir(), "store.json"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	ctx := context.Background()
	// The session as start_task leaves it: its record names the new task.
	sess, err := store.CreateSession(ctx, session.Session{ID: session.NewID("s_"), UserID: "u1",
		State: session.StateRestarting, RelayID: relayID, TaskID: newTaskID, TaskHandle: "arn:new",
		Restarts: 1, CreatedAt: time.Now(), UpdatedAt: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	keys := ticket.NewKeyring(ticket.NewKey())
	r := &restartRig{
		region:  region,
		machine: createMachine(t, region, "restart", sfnflow.RestartDefinition(opts...)),
		sess:    sess,
	}
	r.spy = &stopSpy{SFN: client(region, awsops.Relay)}
	r.flows = sfnflow.NewWorkflows(r.spy, store, r.machine, logging.Discard())
	r.steps = sfnflow.NewSteps(sfnflow.StepsConfig{
		Session: session.Config{RelayID: relayID, ClientRelayURL: "ws://c", TaskRelayURL: relayURL},
	}, sfnflow.StepsDeps{
		Deps:   session.Deps{Store: store, Runner: newFakeRunner(), Tickets: keys, TaskKeys: keys},
		Tokens: client(region, awsops.RestartLambda),
	})
	return r
}

func (r *restartRig) execution() string {
	return executionArn(r.machine, sfnflow.ExecutionName(r.sess.ID, r.sess.Restarts))
}

func (r *restartRig) start(t *testing.T, ctx context.Context) <-chan workflow.Outcome {
	t.Helper()
	out, err := r.flows.StartRestart(ctx, workflow.RestartInput{SessionID: r.sess.ID, Attempt: r.sess.Restarts,
		TraceID: "1-5f84c7a6-0123456789abcdef01234567"})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// registerStep plays the steps Lambda's WaitConnection invocation: the real
// register_connection_wait step with the token the machine sent.
func (r *restartRig) registerStep(t *testing.T) {
	t.Helper()
	token := tokenOf(t, client(r.region, ""), r.execution())
	_, err := r.steps.Run(context.Background(), sfnflow.StepInput{Step: sfnflow.StepRegisterConnectionWait,
		SessionID: r.sess.ID, Attempt: r.sess.Restarts, TaskID: newTaskID, Token: token})
	if err != nil {
		t.Fatalf("register_connection_wait: %v", err)
	}
}

func started() string {
	b, _ := json.Marshal(sfnflow.TaskOutput{TaskID: newTaskID, Handle: "arn:new"})
	return string(b)
}

func TestRestartMachine(t *testing.T) {
	needMoto(t)
	ok := "{}"
	cases := []struct {
		name    string
		answers []string
		// act plays the relay and the Lambda's callback while it runs.
		act func(t *testing.T, r *restartRig)
		// opts change the definition (a shorter limit).
		opts       []sfnflow.Option
		wantStatus types.ExecutionStatus
		// wantStopped: the relay stops the execution (see the gaps above).
		wantStopped bool
		wantStep    string
		wantReason  string
	}{
		{
			name:    "succeeds when the relay returns the token the step stored",
			answers: []string{ok, started(), ok, ok},
			act: func(t *testing.T, r *restartRig) {
				r.registerStep(t)
				r.flows.TaskConnected(r.sess.ID, newTaskID)
			},
			wantStatus: types.ExecutionStatusSucceeded,
		},
		{
			name:    "succeeds when the task connected before the step, which returns the token itself",
			answers: []string{ok, started(), ok, ok},
			act: func(t *testing.T, r *restartRig) {
				r.flows.TaskConnected(r.sess.ID, newTaskID)
				r.flows.Wait()
				r.registerStep(t)
			},
			wantStatus: types.ExecutionStatusSucceeded,
		},
		{
			name:       "StopOldTask fails",
			answers:    []string{functionError},
			wantStatus: types.ExecutionStatusFailed,
			wantStep:   "stop_old_task",
			wantReason: "Response payload size exceeded",
		},
		{
			name:       "StartTask fails",
			answers:    []string{ok, functionError},
			wantStatus: types.ExecutionStatusFailed,
			wantStep:   "start_task",
			wantReason: "Response payload size exceeded",
		},
		{
			name:       "WaitRunning fails",
			answers:    []string{ok, started(), functionError},
			wantStatus: types.ExecutionStatusFailed,
			wantStep:   "wait_running",
			wantReason: "Response payload size exceeded",
		},
		{
			name:       "WaitConnection fails",
			answers:    []string{ok, started(), ok, functionError},
			wantStatus: types.ExecutionStatusFailed,
			wantStep:   "wait_connection",
			wantReason: "Response payload size exceeded",
		},
		{
			name:       "a task that never connects times out in WaitConnection",
			answers:    []string{ok, started(), ok, ok},
			opts:       []sfnflow.Option{sfnflow.WithTimeout(2 * time.Second)},
			wantStatus: types.ExecutionStatusTimedOut,
			wantStep:   "wait_connection",
			wantReason: "timed out",
		},
		{
			name:    "a hand-off the relay cannot record ends the restart with its cause",
			answers: []string{ok, started(), ok, ok},
			act: func(t *testing.T, r *restartRig) {
				tokenOf(t, client(r.region, ""), r.execution())
				r.flows.TaskConnected(r.sess.ID, "t_someone_else")
			},
			wantStopped: true,
			wantStep:    "wait_connection",
			wantReason:  "not the session's task",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			r := newRestartRig(t, c.opts...)
			answer(t, r.region, c.answers...)
			outcome := r.start(t, context.Background())
			if c.act != nil {
				c.act(t, r)
			}
			o := <-outcome

			if c.wantStatus == types.ExecutionStatusSucceeded {
				if !o.Success || o.TaskID != newTaskID {
					t.Errorf("got outcome %+v; want success with task %s", o, newTaskID)
				}
			} else if o.Success || o.Step != c.wantStep || !strings.Contains(o.Reason, c.wantReason) {
				t.Errorf("got outcome %+v; want step %s and a reason with %q", o, c.wantStep, c.wantReason)
			}
			if c.wantStopped {
				if got := r.spy.stopped(r.execution()); got != c.wantStep {
					t.Errorf("got StopExecution with error %q; want one naming %s", got, c.wantStep)
				}
				return
			}
			d := waitEnd(t, client(r.region, ""), r.execution())
			if d.Status != c.wantStatus {
				t.Errorf("got execution %s (%s: %s); want %s", d.Status, aws.ToString(d.Error),
					aws.ToString(d.Cause), c.wantStatus)
			}
			if c.wantStatus == types.ExecutionStatusFailed && aws.ToString(d.Error) != c.wantStep {
				t.Errorf("got execution error %q; want the step %s", aws.ToString(d.Error), c.wantStep)
			}
		})
	}
}

// TestRestartMachineRealLimit runs the deployed definition, 30 s limit and
// all, on a task that never connects.
func TestRestartMachineRealLimit(t *testing.T) {
	needMoto(t)
	if testing.Short() {
		t.Skip("takes the full 30 s restart limit")
	}
	t.Parallel()
	r := newRestartRig(t)
	answer(t, r.region, "{}", started(), "{}", "{}")
	o := <-r.start(t, context.Background())
	if o.Success || o.Step != sfnflow.StepWaitConnection || !strings.Contains(o.Reason, "timed out") {
		t.Errorf("got outcome %+v; want a time-out in wait_connection", o)
	}
	if o.Duration < workflow.RestartLimit || o.Duration > workflow.RestartLimit+5*time.Second {
		t.Errorf("got the outcome after %s; want it within 5 s after the %s limit", o.Duration, workflow.RestartLimit)
	}
	if d := waitEnd(t, client(r.region, ""), r.execution()); d.Status != types.ExecutionStatusTimedOut {
		t.Errorf("got execution %s; want TIMED_OUT", d.Status)
	}
}

// TestWorkflowsCancel checks that a relay giving up on a restart stops its
// execution.
func TestWorkflowsCancel(t *testing.T) {
	needMoto(t)
	t.Parallel()
	r := newRestartRig(t, sfnflow.WithTimeout(5*time.Second))
	answer(t, r.region, "{}", started(), "{}", "{}")
	ctx, cancel := context.WithCancel(context.Background())
	outcome := r.start(t, ctx)
	tokenOf(t, client(r.region, ""), r.execution())
	cancel()
	o := <-outcome
	if o.Success || o.Step != sfnflow.StepCancelled {
		t.Errorf("got outcome %+v; want %s", o, sfnflow.StepCancelled)
	}
	if got := r.spy.stopped(r.execution()); got != sfnflow.StepCancelled {
		t.Errorf("got StopExecution with error %q; want %s", got, sfnflow.StepCancelled)
	}
}

func TestRefillMachine(t *testing.T) {
	needMoto(t)
	plan := func(starts, retires int) string {
		p := sfnflow.Plan{Starts: []sfnflow.StepInput{}, Retires: []sfnflow.StepInput{}}
		for range starts {
			p.Starts = append(p.Starts, sfnflow.StepInput{Step: sfnflow.StepStartWarmTask, RelayID: relayID, RelayURL: relayURL})
		}
		for range retires {
			p.Retires = append(p.Retires, sfnflow.StepInput{Step: sfnflow.StepRetireWarmTask, Retire: &sfnflow.Retirement{
				Kind: sfnflow.RetireRecycle, WarmTask: session.WarmTask{ID: "w1", Handle: "arn:w1"}}})
		}
		b, _ := json.Marshal(p)
		return string(b)
	}
	reaped := `{"checked":3,"stopped":[]}`
	cases := []struct {
		name       string
		answers    []string
		wantStatus types.ExecutionStatus
		wantError  string
		// wantReap: ReapOrphans ran.
		wantReap bool
	}{
		{"starts, retires and reaps", []string{plan(2, 1), "{}", "{}", "{}", reaped},
			types.ExecutionStatusSucceeded, "", true},
		{"an empty plan still reaps", []string{plan(0, 0), reaped},
			types.ExecutionStatusSucceeded, "", true},
		{"a failed start still retires and reaps, then fails naming it", []string{plan(1, 1), functionError, "{}", reaped},
			types.ExecutionStatusFailed, "start_warm_task", true},
		{"a failed reap fails naming it", []string{plan(0, 1), "{}", functionError},
			types.ExecutionStatusFailed, "reap_orphans", true},
		{"a failed plan ends the run", []string{functionError},
			types.ExecutionStatusFailed, "plan", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			region := nextRegion(t)
			machine := createMachine(t, region, "refill", sfnflow.RefillDefinition())
			answer(t, region, c.answers...)
			sc := client(region, "")
			out, err := sc.StartExecution(context.Background(), &sfn.StartExecutionInput{
				StateMachineArn: aws.String(machine), Name: aws.String("scheduled-1"), Input: aws.String("{}")})
			if err != nil {
				t.Fatal(err)
			}
			d := waitEnd(t, sc, aws.ToString(out.ExecutionArn))
			if d.Status != c.wantStatus || aws.ToString(d.Error) != c.wantError {
				t.Errorf("got %s %q (%s); want %s %q", d.Status, aws.ToString(d.Error), aws.ToString(d.Cause),
					c.wantStatus, c.wantError)
			}
			h, err := sc.GetExecutionHistory(context.Background(), &sfn.GetExecutionHistoryInput{ExecutionArn: out.ExecutionArn})
			if err != nil {
				t.Fatal(err)
			}
			reaps := false
			for _, e := range h.Events {
				if e.StateEnteredEventDetails != nil && aws.ToString(e.StateEnteredEventDetails.Name) == sfnflow.StateReapOrphans {
					reaps = true
				}
			}
			if reaps != c.wantReap {
				t.Errorf("got ReapOrphans entered %v; want %v", reaps, c.wantReap)
			}
		})
	}
}
