package sfnflow_test

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/aws/aws-lambda-go/lambda/messages"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sfn"

	"github.com/aishell/aishell/shared/localstore"
	"github.com/aishell/aishell/shared/logging"
	"github.com/aishell/aishell/shared/session"
	"github.com/aishell/aishell/shared/sfnflow"
	"github.com/aishell/aishell/shared/ticket"
	"github.com/aishell/aishell/shared/warmpool"
)

// These tests run the steps on the embedded store with a fake task
// platform and a fake Step Functions, inside synctest bubbles so that the
// waits of the session rules pass in fake time.

const (
	relayID  = "relay-1"
	relayURL = "ws://127.0.0.1:1/task"
)

type fakeTask struct {
	state   session.TaskState
	created time.Time
}

// fakeRunner plays the task platform: tasks run at once and stop at once.
type fakeRunner struct {
	mu      sync.Mutex // guards the fields below
	tasks   map[string]*fakeTask
	specs   []session.TaskSpec
	stops   []string
	runErr  error
	stopErr error
	// diesWith makes new tasks stop on their own.
	diesWith string
	// listed is what ListTasks answers.
	listed []string
}

func newFakeRunner() *fakeRunner { return &fakeRunner{tasks: map[string]*fakeTask{}} }

func (r *fakeRunner) Run(ctx context.Context, spec session.TaskSpec) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.specs = append(r.specs, spec)
	if r.runErr != nil {
		return "", r.runErr
	}
	h := "arn:aws:ecs:us-east-1:123456789012:task/c/" + spec.TaskID
	t := &fakeTask{state: session.TaskRunning, created: time.Now()}
	if r.diesWith != "" {
		t.state = session.TaskStopped
	}
	r.tasks[h] = t
	return h, nil
}

func (r *fakeRunner) Stop(ctx context.Context, handle, reason string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopErr != nil {
		return r.stopErr
	}
	r.stops = append(r.stops, handle)
	if t, ok := r.tasks[handle]; ok {
		t.state = session.TaskStopped
	}
	return nil
}

func (r *fakeRunner) Describe(ctx context.Context, handle string) (session.TaskStatus, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t, ok := r.tasks[handle]
	if !ok {
		return session.TaskStatus{State: session.TaskStopped, StopReason: "unknown task"}, nil
	}
	st := session.TaskStatus{State: t.state, CreatedAt: t.created}
	if t.state == session.TaskStopped {
		st.StopReason = r.diesWith
	}
	return st, nil
}

func (r *fakeRunner) ListTasks(ctx context.Context, startedBy string) ([]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.listed), nil
}

// add puts a running task of the given age on the platform.
func (r *fakeRunner) add(handle string, age time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tasks[handle] = &fakeTask{state: session.TaskRunning, created: time.Now().Add(-age)}
	r.listed = append(r.listed, handle)
}

func (r *fakeRunner) stopped() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.stops)
}

// fakeTokens records SendTaskSuccess calls.
type fakeTokens struct {
	mu   sync.Mutex // guards sent
	sent []*sfn.SendTaskSuccessInput
	err  error
}

func (f *fakeTokens) SendTaskSuccess(ctx context.Context, in *sfn.SendTaskSuccessInput,
	_ ...func(*sfn.Options)) (*sfn.SendTaskSuccessOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	f.sent = append(f.sent, in)
	return &sfn.SendTaskSuccessOutput{}, nil
}

// coded is an AWS-like error with a code.
type coded struct{ code, msg string }

func (e coded) Error() string     { return "api error " + e.code + ": " + e.msg }
func (e coded) ErrorCode() string { return e.code }

type fixture struct {
	store  *localstore.Store
	runner *fakeRunner
	tokens *fakeTokens
	steps  *sfnflow.Steps
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	store, err := localstore.Open(filepath.Join(t.TempDir(), "store.json"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	f := &fixture{store: store, runner: newFakeRunner(), tokens: &fakeTokens{}}
	keys := ticket.NewKeyring(ticket.NewKey())
	f.steps = sfnflow.NewSteps(sfnflow.StepsConfig{
		Session: session.Config{RelayID: relayID, ClientRelayURL: "ws://client", TaskRelayURL: relayURL,
			WarmPool: true, PollInterval: 100 * time.Millisecond},
		Pool: warmpool.Config{Target: 2},
	}, sfnflow.StepsDeps{
		Deps: session.Deps{Store: store, Runner: f.runner, Tickets: keys, TaskKeys: keys,
			Log: logging.Discard()},
		Tokens: f.tokens,
		Tasks:  f.runner,
	})
	return f
}

// session stores a restarting session, its task t named if handle is set.
func (f *fixture) session(t *testing.T, taskID, handle string) session.Session {
	t.Helper()
	ctx := context.Background()
	s, err := f.store.CreateSession(ctx, session.Session{ID: session.NewID("s_"), UserID: "u1",
		State: session.StateRestarting, RelayID: relayID, CreatedAt: time.Now(), UpdatedAt: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if taskID != "" {
		s.TaskID, s.TaskHandle = taskID, handle
		if s, err = f.store.UpdateSession(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func (f *fixture) get(t *testing.T, id string) session.Session {
	t.Helper()
	s, err := f.store.GetSession(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// wantStepError checks that err is a step error of step whose message
// contains every part.
func wantStepError(t *testing.T, err error, step string, parts ...string) {
	t.Helper()
	var se *sfnflow.StepError
	if !errors.As(err, &se) {
		t.Fatalf("got error %v; want a *StepError of %s", err, step)
	}
	if se.Step != step {
		t.Errorf("got step %q; want %q (error %v)", se.Step, step, err)
	}
	for _, p := range parts {
		if !strings.Contains(se.Message(), p) {
			t.Errorf("got message %q; want it to contain %q", se.Message(), p)
		}
	}
}

func TestRestartSteps(t *testing.T) {
	cases := []struct {
		name string
		run  func(t *testing.T, f *fixture)
	}{
		{"stop_old_task stops the session's task and forgets an earlier hand-off", func(t *testing.T, f *fixture) {
			f.runner.add("arn:old", time.Minute)
			s := f.session(t, "t_old", "arn:old")
			s.ConnectToken, s.ConnectedTaskID = "stale-token", "t_old"
			if _, err := f.store.UpdateSession(context.Background(), s); err != nil {
				t.Fatal(err)
			}
			out, err := f.steps.Run(context.Background(), sfnflow.StepInput{Step: sfnflow.StepStopOldTask, SessionID: s.ID})
			if err != nil {
				t.Fatal(err)
			}
			if got := out.(sfnflow.StepDone).Handle; got != "arn:old" {
				t.Errorf("got stopped handle %q; want arn:old", got)
			}
			if got := f.runner.stopped(); !slices.Equal(got, []string{"arn:old"}) {
				t.Errorf("got stops %v; want [arn:old]", got)
			}
			if got := f.get(t, s.ID); got.ConnectToken != "" || got.ConnectedTaskID != "" {
				t.Errorf("got token %q, connected %q; want both cleared", got.ConnectToken, got.ConnectedTaskID)
			}
		}},
		{"stop_old_task with no task does nothing", func(t *testing.T, f *fixture) {
			s := f.session(t, "", "")
			if _, err := f.steps.Run(context.Background(), sfnflow.StepInput{Step: sfnflow.StepStopOldTask, SessionID: s.ID}); err != nil {
				t.Fatal(err)
			}
			if got := f.runner.stopped(); len(got) != 0 {
				t.Errorf("got stops %v; want none", got)
			}
		}},
		{"stop_old_task fails with the platform's code", func(t *testing.T, f *fixture) {
			f.runner.add("arn:old", time.Minute)
			f.runner.stopErr = coded{"AccessDeniedException", "not allowed to ecs:StopTask"}
			s := f.session(t, "t_old", "arn:old")
			_, err := f.steps.Run(context.Background(), sfnflow.StepInput{Step: sfnflow.StepStopOldTask, SessionID: s.ID})
			wantStepError(t, err, sfnflow.StepStopOldTask, "AccessDeniedException", "ecs:StopTask")
		}},
		{"start_task starts a cold task and names it on the session", func(t *testing.T, f *fixture) {
			s := f.session(t, "", "")
			out, err := f.steps.Run(context.Background(), sfnflow.StepInput{Step: sfnflow.StepStartTask, SessionID: s.ID, TraceID: "1-abc-def"})
			if err != nil {
				t.Fatal(err)
			}
			got := out.(sfnflow.TaskOutput)
			rec := f.get(t, s.ID)
			if got.TaskID == "" || got.TaskID != rec.TaskID || got.Handle != rec.TaskHandle || got.Warm {
				t.Errorf("got output %+v, session task %s %s; want the session's cold task", got, rec.TaskID, rec.TaskHandle)
			}
			if !rec.Start.Restart {
				t.Errorf("got start record %+v; want a restart", rec.Start)
			}
		}},
		{"start_task fails with RunTask's code", func(t *testing.T, f *fixture) {
			f.runner.runErr = coded{"AccessDeniedException", "not allowed to ecs:RunTask"}
			s := f.session(t, "", "")
			_, err := f.steps.Run(context.Background(), sfnflow.StepInput{Step: sfnflow.StepStartTask, SessionID: s.ID})
			wantStepError(t, err, sfnflow.StepStartTask, "AccessDeniedException", "run task")
		}},
		{"wait_running returns once the task runs", func(t *testing.T, f *fixture) {
			f.runner.add("arn:new", 0)
			_, err := f.steps.Run(context.Background(), sfnflow.StepInput{Step: sfnflow.StepWaitRunning, SessionID: "s", TaskID: "t", Handle: "arn:new"})
			if err != nil {
				t.Fatal(err)
			}
		}},
		{"wait_running fails with the stop reason of a task that died", func(t *testing.T, f *fixture) {
			f.runner.diesWith = "CannotPullContainerError: image not found"
			h, _ := f.runner.Run(context.Background(), session.TaskSpec{TaskID: "t_dead"})
			_, err := f.steps.Run(context.Background(), sfnflow.StepInput{Step: sfnflow.StepWaitRunning, SessionID: "s", TaskID: "t_dead", Handle: h})
			wantStepError(t, err, sfnflow.StepWaitRunning, "CannotPullContainerError")
		}},
		{"register_connection_wait stores the token for the relay", func(t *testing.T, f *fixture) {
			s := f.session(t, "t_new", "arn:new")
			out, err := f.steps.Run(context.Background(), sfnflow.StepInput{Step: sfnflow.StepRegisterConnectionWait,
				SessionID: s.ID, TaskID: "t_new", Token: "tok-1"})
			if err != nil {
				t.Fatal(err)
			}
			if got := f.get(t, s.ID).ConnectToken; got != "tok-1" {
				t.Errorf("got stored token %q; want tok-1", got)
			}
			if len(f.tokens.sent) != 0 {
				t.Errorf("got %d SendTaskSuccess calls; want none before the task connects (%+v)", len(f.tokens.sent), out)
			}
		}},
		{"register_connection_wait returns the token itself when the task connected first", func(t *testing.T, f *fixture) {
			s := f.session(t, "t_new", "arn:new")
			s.ConnectedTaskID = "t_new"
			if _, err := f.store.UpdateSession(context.Background(), s); err != nil {
				t.Fatal(err)
			}
			if _, err := f.steps.Run(context.Background(), sfnflow.StepInput{Step: sfnflow.StepRegisterConnectionWait,
				SessionID: s.ID, TaskID: "t_new", Token: "tok-2"}); err != nil {
				t.Fatal(err)
			}
			if len(f.tokens.sent) != 1 || aws.ToString(f.tokens.sent[0].TaskToken) != "tok-2" {
				t.Fatalf("got SendTaskSuccess calls %+v; want one with tok-2", f.tokens.sent)
			}
			var out struct{ TaskID string }
			json.Unmarshal([]byte(aws.ToString(f.tokens.sent[0].Output)), &out)
			if out.TaskID != "t_new" {
				t.Errorf("got output task %q; want t_new", out.TaskID)
			}
		}},
		{"register_connection_wait fails when the session moved on", func(t *testing.T, f *fixture) {
			s := f.session(t, "t_other", "arn:other")
			_, err := f.steps.Run(context.Background(), sfnflow.StepInput{Step: sfnflow.StepRegisterConnectionWait,
				SessionID: s.ID, TaskID: "t_new", Token: "tok-3"})
			wantStepError(t, err, sfnflow.StepRegisterConnectionWait, "no longer the session's task")
		}},
		{"register_connection_wait fails when the token cannot be returned", func(t *testing.T, f *fixture) {
			f.tokens.err = coded{"TaskTimedOut", "task timed out"}
			s := f.session(t, "t_new", "arn:new")
			s.ConnectedTaskID = "t_new"
			if _, err := f.store.UpdateSession(context.Background(), s); err != nil {
				t.Fatal(err)
			}
			_, err := f.steps.Run(context.Background(), sfnflow.StepInput{Step: sfnflow.StepRegisterConnectionWait,
				SessionID: s.ID, TaskID: "t_new", Token: "tok-4"})
			wantStepError(t, err, sfnflow.StepRegisterConnectionWait, "TaskTimedOut")
		}},
		{"a step of an unknown session fails naming it", func(t *testing.T, f *fixture) {
			_, err := f.steps.Run(context.Background(), sfnflow.StepInput{Step: sfnflow.StepStartTask, SessionID: "s_gone"})
			wantStepError(t, err, sfnflow.StepStartTask, "s_gone", "not found")
		}},
		{"an unknown step fails", func(t *testing.T, f *fixture) {
			_, err := f.steps.Run(context.Background(), sfnflow.StepInput{Step: "dance"})
			wantStepError(t, err, "dance", "unknown step")
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) { c.run(t, newFixture(t)) })
		})
	}
}

// TestHandleEncodesStepErrors checks the Lambda error of a failed step:
// errorType is the step, errorMessage the cause with its code.
func TestHandleEncodesStepErrors(t *testing.T) {
	f := newFixture(t)
	f.runner.runErr = coded{"ClientException", "no container instances"}
	s := f.session(t, "", "")
	_, err := f.steps.Handle(context.Background(), sfnflow.StepInput{Step: sfnflow.StepStartTask, SessionID: s.ID})
	var le messages.InvokeResponse_Error
	if !errors.As(err, &le) {
		t.Fatalf("got error %T %v; want messages.InvokeResponse_Error", err, err)
	}
	if le.Type != sfnflow.StepStartTask || !strings.Contains(le.Message, "ClientException") ||
		!strings.Contains(le.Message, "no container instances") {
		t.Errorf("got errorType %q, errorMessage %q; want start_task and the cause with its code", le.Type, le.Message)
	}
}

func TestRefillSteps(t *testing.T) {
	now := time.Now()
	cases := []struct {
		name string
		run  func(t *testing.T, f *fixture)
	}{
		{"plan starts the deficit of a healthy relay and trims a stale relay's pool", func(t *testing.T, f *fixture) {
			ctx := context.Background()
			f.store.PutRelay(ctx, session.Relay{ID: relayID, TaskURL: relayURL, HeartbeatAt: time.Now()})
			f.store.PutRelay(ctx, session.Relay{ID: "relay-gone", TaskURL: "ws://gone", HeartbeatAt: time.Now().Add(-time.Hour)})
			f.store.PutWarmTask(ctx, session.WarmTask{ID: "w1", Handle: "arn:w1", RelayID: relayID,
				State: session.WarmAvailable, StartedAt: time.Now()})
			f.store.PutWarmTask(ctx, session.WarmTask{ID: "w2", Handle: "arn:w2", RelayID: relayID,
				State: session.WarmAvailable, StartedAt: time.Now().Add(-time.Hour)})
			f.store.PutWarmTask(ctx, session.WarmTask{ID: "g1", Handle: "arn:g1", RelayID: "relay-gone",
				State: session.WarmAvailable, StartedAt: time.Now()})
			out, err := f.steps.Run(ctx, sfnflow.StepInput{Step: sfnflow.StepPlan})
			if err != nil {
				t.Fatal(err)
			}
			p := out.(sfnflow.Plan)
			var starts []string
			for _, s := range p.Starts {
				starts = append(starts, s.RelayID+" "+s.RelayURL)
			}
			if want := []string{relayID + " " + relayURL}; !slices.Equal(starts, want) {
				t.Errorf("got starts %v; want %v (w2 is recycled, w1 kept)", starts, want)
			}
			var retires []string
			for _, r := range p.Retires {
				retires = append(retires, r.Retire.Kind+" "+r.Retire.WarmTask.ID)
			}
			slices.Sort(retires)
			if want := []string{"recycle w2", "surplus g1"}; !slices.Equal(retires, want) {
				t.Errorf("got retires %v; want %v", retires, want)
			}
		}},
		{"plan of no relays is empty lists, never null", func(t *testing.T, f *fixture) {
			out, err := f.steps.Run(context.Background(), sfnflow.StepInput{Step: sfnflow.StepPlan})
			if err != nil {
				t.Fatal(err)
			}
			b, _ := json.Marshal(out)
			if !strings.Contains(string(b), `"starts":[]`) || !strings.Contains(string(b), `"retires":[]`) {
				t.Errorf("got plan %s; want empty lists", b)
			}
		}},
		{"start_warm_task runs a warm task and records its handle", func(t *testing.T, f *fixture) {
			out, err := f.steps.Run(context.Background(), sfnflow.StepInput{Step: sfnflow.StepStartWarmTask,
				RelayID: relayID, RelayURL: relayURL})
			if err != nil {
				t.Fatal(err)
			}
			done := out.(sfnflow.StepDone)
			tasks, _ := f.store.ListWarmTasks(context.Background(), relayID)
			if len(tasks) != 1 || tasks[0].ID != done.TaskID || tasks[0].Handle != done.Handle ||
				tasks[0].State != session.WarmStarting {
				t.Errorf("got warm tasks %+v; want one starting record with handle %s", tasks, done.Handle)
			}
			if spec := f.runner.specs[0]; !spec.Warm || spec.RelayURL != relayURL || spec.Credential == "" {
				t.Errorf("got task spec %+v; want a warm task of %s with a credential", spec, relayURL)
			}
		}},
		{"start_warm_task that RunTask refuses removes its record", func(t *testing.T, f *fixture) {
			f.runner.runErr = coded{"ThrottlingException", "rate exceeded"}
			_, err := f.steps.Run(context.Background(), sfnflow.StepInput{Step: sfnflow.StepStartWarmTask,
				RelayID: relayID, RelayURL: relayURL})
			wantStepError(t, err, sfnflow.StepStartWarmTask, "ThrottlingException")
			if tasks, _ := f.store.ListWarmTasks(context.Background(), relayID); len(tasks) != 0 {
				t.Errorf("got warm tasks %+v; want none", tasks)
			}
		}},
		{"retire_warm_task stops and removes a recycled task", func(t *testing.T, f *fixture) {
			w, _ := f.store.PutWarmTask(context.Background(), session.WarmTask{ID: "w1", Handle: "arn:w1",
				RelayID: relayID, State: session.WarmAvailable, StartedAt: now})
			_, err := f.steps.Run(context.Background(), sfnflow.StepInput{Step: sfnflow.StepRetireWarmTask,
				Retire: &sfnflow.Retirement{Kind: sfnflow.RetireRecycle, Reason: "old", WarmTask: w}})
			if err != nil {
				t.Fatal(err)
			}
			if got := f.runner.stopped(); !slices.Equal(got, []string{"arn:w1"}) {
				t.Errorf("got stops %v; want [arn:w1]", got)
			}
			if tasks, _ := f.store.ListWarmTasks(context.Background(), relayID); len(tasks) != 0 {
				t.Errorf("got warm tasks %+v; want none", tasks)
			}
		}},
		{"retire_warm_task leaves a task claimed since the plan alone", func(t *testing.T, f *fixture) {
			ctx := context.Background()
			w, _ := f.store.PutWarmTask(ctx, session.WarmTask{ID: "w1", Handle: "arn:w1",
				RelayID: relayID, State: session.WarmAvailable, StartedAt: now})
			if _, err := f.store.ClaimWarmTask(ctx, relayID, "s_user", now); err != nil {
				t.Fatal(err)
			}
			if _, err := f.steps.Run(ctx, sfnflow.StepInput{Step: sfnflow.StepRetireWarmTask,
				Retire: &sfnflow.Retirement{Kind: sfnflow.RetireSurplus, Reason: "surplus", WarmTask: w}}); err != nil {
				t.Fatal(err)
			}
			if got := f.runner.stopped(); len(got) != 0 {
				t.Errorf("got stops %v; want none: a session claimed the task", got)
			}
		}},
		{"retire_warm_task of an expired claim its session owns only drops the record", func(t *testing.T, f *fixture) {
			ctx := context.Background()
			s := f.session(t, "w1", "arn:w1")
			w, _ := f.store.PutWarmTask(ctx, session.WarmTask{ID: "w1", Handle: "arn:w1", RelayID: relayID,
				State: session.WarmClaimed, StartedAt: now, ClaimedAt: now, SessionID: s.ID})
			if _, err := f.steps.Run(ctx, sfnflow.StepInput{Step: sfnflow.StepRetireWarmTask,
				Retire: &sfnflow.Retirement{Kind: sfnflow.RetireExpire, Reason: "expired", WarmTask: w}}); err != nil {
				t.Fatal(err)
			}
			if got := f.runner.stopped(); len(got) != 0 {
				t.Errorf("got stops %v; want none: the session owns the task", got)
			}
			if tasks, _ := f.store.ListWarmTasks(ctx, relayID); len(tasks) != 0 {
				t.Errorf("got warm tasks %+v; want none", tasks)
			}
		}},
		{"retire_warm_task whose stop fails reports the code", func(t *testing.T, f *fixture) {
			w, _ := f.store.PutWarmTask(context.Background(), session.WarmTask{ID: "w1", Handle: "arn:w1",
				RelayID: relayID, State: session.WarmAvailable, StartedAt: now})
			f.runner.stopErr = coded{"AccessDeniedException", "no ecs:StopTask"}
			_, err := f.steps.Run(context.Background(), sfnflow.StepInput{Step: sfnflow.StepRetireWarmTask,
				Retire: &sfnflow.Retirement{Kind: sfnflow.RetireRecycle, Reason: "old", WarmTask: w}})
			wantStepError(t, err, sfnflow.StepRetireWarmTask, "AccessDeniedException")
		}},
		{"reap_orphans stops old tasks nothing owns and keeps the rest", func(t *testing.T, f *fixture) {
			ctx := context.Background()
			f.store.PutRelay(ctx, session.Relay{ID: relayID, TaskURL: relayURL, HeartbeatAt: time.Now()})
			f.runner.add("arn:session", time.Hour)
			f.runner.add("arn:warm", time.Hour)
			f.runner.add("arn:orphan", time.Hour)
			f.runner.add("arn:young", time.Second)
			f.session(t, "t_s", "arn:session")
			f.store.PutWarmTask(ctx, session.WarmTask{ID: "w1", Handle: "arn:warm", RelayID: relayID,
				State: session.WarmAvailable, StartedAt: now})
			out, err := f.steps.Run(ctx, sfnflow.StepInput{Step: sfnflow.StepReapOrphans})
			if err != nil {
				t.Fatal(err)
			}
			r := out.(sfnflow.ReapOutput)
			if r.Checked != 4 || !slices.Equal(r.Stopped, []string{"arn:orphan"}) {
				t.Errorf("got %+v; want 4 checked and only arn:orphan stopped", r)
			}
			if got := f.runner.stopped(); !slices.Equal(got, []string{"arn:orphan"}) {
				t.Errorf("got stops %v; want [arn:orphan]", got)
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) { c.run(t, newFixture(t)) })
		})
	}
}

func TestStepsConfigFromEnv(t *testing.T) {
	cases := []struct {
		name    string
		env     map[string]string
		check   func(t *testing.T, c sfnflow.StepsConfig)
		wantErr string
	}{
		{"defaults assign relays from the store", nil, func(t *testing.T, c sfnflow.StepsConfig) {
			if !c.Session.AssignRelays || !c.Session.WarmPool || c.Pool.Target != 2 {
				t.Errorf("got %+v; want assigned relays, warm pool on, target 2", c)
			}
		}, ""},
		{"one fixed relay", map[string]string{"RELAY_ID": "r", "RELAY_CLIENT_URL": "wss://c", "RELAY_TASK_URL": "ws://t",
			"ENABLE_WARM_POOL": "false", "WARM_POOL_SIZE": "5", "WARM_MAX_AGE": "10m"}, func(t *testing.T, c sfnflow.StepsConfig) {
			if c.Session.AssignRelays || c.Session.WarmPool || c.Pool.Target != 5 || c.Pool.MaxAge != 10*time.Minute {
				t.Errorf("got %+v; want relay r, pool off, target 5, max age 10m", c)
			}
		}, ""},
		{"a fixed relay needs its URLs", map[string]string{"RELAY_ID": "r"}, nil, "RELAY_CLIENT_URL"},
		{"bad values are all named", map[string]string{"WARM_POOL_SIZE": "many", "REAP_GRACE": "-1s"}, nil,
			"WARM_POOL_SIZE"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, k := range []string{"RELAY_ID", "RELAY_CLIENT_URL", "RELAY_TASK_URL", "ENABLE_WARM_POOL",
				"WARM_POOL_SIZE", "WARM_MAX_AGE", "WARM_CLAIM_TTL", "WARM_START_TIMEOUT", "REAP_GRACE", "RELAY_MAX_AGE"} {
				t.Setenv(k, c.env[k])
			}
			cfg, err := sfnflow.StepsConfigFromEnv()
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("got error %v; want one naming %s", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			c.check(t, cfg)
		})
	}
}
