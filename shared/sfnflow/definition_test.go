package sfnflow_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aishell/aishell/shared/sfnflow"
)

// asl is the part of a definition the shape tests read.
type asl struct {
	StartAt        string
	TimeoutSeconds int
	States         map[string]aslState
}

type aslState struct {
	Type       string
	Resource   string
	Parameters map[string]any
	Next       string
	End        bool
	Error      string
	CausePath  string
	Catch      []struct {
		ErrorEquals []string
		Next        string
	}
	Retry         []struct{ ErrorEquals []string }
	ItemProcessor *asl
	Choices       []struct{ Next string }
	Default       string
}

func parse(t *testing.T, def string) asl {
	t.Helper()
	var m asl
	if err := json.Unmarshal([]byte(def), &m); err != nil {
		t.Fatalf("definition is not JSON: %v\n%s", err, def)
	}
	return m
}

// path follows Next from StartAt to the end.
func (m asl) path() []string {
	var out []string
	for name := m.StartAt; name != "" && len(out) < 20; name = m.States[name].Next {
		out = append(out, name)
	}
	return out
}

func TestRestartDefinition(t *testing.T) {
	m := parse(t, sfnflow.RestartDefinition())

	if m.TimeoutSeconds != 30 {
		t.Errorf("got TimeoutSeconds %d; want 30", m.TimeoutSeconds)
	}
	want := []string{"StopOldTask", "StartTask", "WaitRunning", "WaitConnection", "Ready"}
	if got := m.path(); !slices.Equal(got, want) {
		t.Errorf("got states %v; want %v", got, want)
	}
	if r := m.States["Ready"]; r.Type != "Pass" || !r.End {
		t.Errorf("got Ready of type %s, end %v; want a Pass that ends", r.Type, r.End)
	}
	steps := map[string]string{
		"StopOldTask": "stop_old_task", "StartTask": "start_task",
		"WaitRunning": "wait_running", "WaitConnection": "wait_connection",
	}
	checkTasks(t, m, steps, "${RestartStepsFunctionArn}")

	wc := m.States["WaitConnection"]
	if wc.Resource != "arn:aws:states:::lambda:invoke.waitForTaskToken" {
		t.Errorf("got WaitConnection resource %s; want the waitForTaskToken integration", wc.Resource)
	}
	payload, _ := wc.Parameters["Payload"].(map[string]any)
	if payload["token.$"] != "$$.Task.Token" || payload["step"] != "register_connection_wait" {
		t.Errorf("got WaitConnection payload %v; want the task token for register_connection_wait", payload)
	}

	short := parse(t, sfnflow.RestartDefinition(sfnflow.WithTimeout(3*time.Second)))
	if short.TimeoutSeconds != 3 {
		t.Errorf("got TimeoutSeconds %d with WithTimeout(3s); want 3", short.TimeoutSeconds)
	}
}

func TestRefillDefinition(t *testing.T) {
	m := parse(t, sfnflow.RefillDefinition())

	want := []string{"Plan", "StartWarmTasks", "RetireWarmTasks", "ReapOrphans", "CheckFailures"}
	if got := m.path(); !slices.Equal(got, want) {
		t.Errorf("got states %v; want %v", got, want)
	}
	if m.TimeoutSeconds <= 0 {
		t.Errorf("got TimeoutSeconds %d; want a limit", m.TimeoutSeconds)
	}
	checkTasks(t, m, map[string]string{
		"Plan": "plan", "StartWarmTasks": "start_warm_task",
		"RetireWarmTasks": "retire_warm_task", "ReapOrphans": "reap_orphans",
	}, "${RefillStepsFunctionArn}")

	// A failed start or retire goes on to the clean-up; CheckFailures then
	// ends the run failed.
	for state, next := range map[string]string{
		"StartWarmTasks": "RetireWarmTasks", "RetireWarmTasks": "ReapOrphans", "ReapOrphans": "CheckFailures",
	} {
		if got := m.States[state].Catch[0].Next; got != next {
			t.Errorf("got %s's Catch going to %s; want %s", state, got, next)
		}
	}
	check := m.States["CheckFailures"]
	var ends []string
	for _, c := range check.Choices {
		ends = append(ends, m.States[c.Next].Error)
	}
	if want := []string{"start_warm_task", "retire_warm_task", "reap_orphans"}; !slices.Equal(ends, want) || check.Default != "Done" {
		t.Errorf("got CheckFailures ending in %v, default %s; want %v, default Done", ends, check.Default, want)
	}
}

// checkTasks checks that every Task and Map state calls the steps Lambda,
// retries only Lambda service errors, and catches every error into a path
// that ends in a Fail state naming the step.
func checkTasks(t *testing.T, m asl, steps map[string]string, fn string) {
	t.Helper()
	for name, st := range m.States {
		if st.Type != "Task" && st.Type != "Map" {
			continue
		}
		step, ok := steps[name]
		if !ok {
			t.Errorf("state %s is not expected", name)
			continue
		}
		if len(st.Catch) != 1 || !slices.Equal(st.Catch[0].ErrorEquals, []string{"States.ALL"}) {
			t.Errorf("got %s's Catch %+v; want one of States.ALL", name, st.Catch)
			continue
		}
		if fail := failOf(m, st.Catch[0].Next, step); fail == "" {
			t.Errorf("%s's Catch leads to no Fail state with Error %s", name, step)
		}

		tasks := []aslState{st}
		if st.Type == "Map" {
			tasks = tasks[:0]
			for _, inner := range st.ItemProcessor.States {
				tasks = append(tasks, inner)
			}
		}
		for _, task := range tasks {
			if task.Parameters["FunctionName"] != fn {
				t.Errorf("got %s's FunctionName %v; want %s", name, task.Parameters["FunctionName"], fn)
			}
			for _, r := range task.Retry {
				for _, e := range r.ErrorEquals {
					if !strings.HasPrefix(e, "Lambda.") {
						t.Errorf("%s retries %s; want retries of Lambda service errors only", name, e)
					}
				}
			}
		}
	}
}

// failOf follows a failure path from state (through Choice states) to a
// Fail state whose Error is step, and returns its name.
func failOf(m asl, state, step string) string {
	for seen := 0; seen < 10; seen++ {
		st := m.States[state]
		switch st.Type {
		case "Fail":
			if st.Error == step && st.CausePath != "" {
				return state
			}
			return ""
		case "Choice":
			for _, c := range st.Choices {
				if f := m.States[c.Next]; f.Type == "Fail" && f.Error == step {
					return c.Next
				}
			}
			return ""
		}
		state = st.Next
	}
	return ""
}

// TestDefinitionsValidate runs the asl-validator npm package (a dev
// dependency of the repository, installed by `make web`) on both machines.
func TestDefinitionsValidate(t *testing.T) {
	bin := filepath.Join(repoRoot(t), "node_modules", ".bin", "asl-validator")
	if _, err := os.Stat(bin); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("asl-validator is not installed (%v); run npm ci", err)
		}
		t.Skipf("asl-validator is not installed (%v); run npm ci", err)
	}
	dir := t.TempDir()
	for name, def := range map[string]string{
		"restart.json": sfnflow.RestartDefinition(),
		"refill.json":  sfnflow.RefillDefinition(),
	} {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(def), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(bin, "--json-path", path).CombinedOutput()
		if err != nil {
			t.Errorf("asl-validator rejects %s: %v\n%s", name, err, out)
		}
	}
}

func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's folder")
		}
		dir = parent
	}
}

func TestExecutionName(t *testing.T) {
	long := strings.Repeat("a", 100)
	cases := []struct {
		session string
		attempt int
		want    string
	}{
		{"s_abc123", 3, "s_abc123-3"},
		{"s a/b:c", 1, "s_a_b_c-1"},
		{long, 12, strings.Repeat("a", 77) + "-12"},
	}
	for _, c := range cases {
		if got := sfnflow.ExecutionName(c.session, c.attempt); got != c.want {
			t.Errorf("ExecutionName(%q, %d) = %q; want %q", c.session, c.attempt, got, c.want)
		}
		if n := len(sfnflow.ExecutionName(c.session, c.attempt)); n > 80 {
			t.Errorf("ExecutionName(%q) is %d characters; want at most 80", c.session, n)
		}
	}
}
