package localtask

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"testing"
	"time"

	"github.com/aishell/aishell/shared/session"
)

// The test binary doubles as the processes the tests need, chosen by
// LOCALTASK_HELPER:
//
//   - bridge: a fake bridge whose behaviour the FAKE_* variables set;
//   - holder: opens the FIFO named by FAKE_FIFO for writing, says "alive",
//     and stays until killed, so a reader of the FIFO sees EOF when it dies;
//   - relay: a relay stand-in that runs one holder as its bridge through a
//     Runner, says "started" and stays until killed.
const helperVar = "LOCALTASK_HELPER"

func TestMain(m *testing.M) {
	switch os.Getenv(helperVar) {
	case "":
		os.Exit(m.Run())
	case "bridge":
		fakeBridge()
	case "holder":
		holder()
	case "relay":
		fakeRelay()
	}
	os.Exit(99)
}

// fakeBridge acts out, in order: FAKE_PRINT_ENV (print the contract
// variables as a JSON line), FAKE_STDOUT and FAKE_STDERR (JSON arrays of
// chunks to write), FAKE_SPAWN (start a holder in its process group),
// FAKE_WAIT ("term": wait for SIGTERM; "ignore": ignore it and stay), and
// FAKE_END ("panic", "selfkill", or exit with status FAKE_EXIT).
func fakeBridge() {
	if os.Getenv("FAKE_PRINT_ENV") == "1" {
		env := map[string]string{}
		for _, name := range contractVars {
			if v, ok := os.LookupEnv(name); ok {
				env[name] = v
			}
		}
		line, _ := json.Marshal(map[string]any{"message": "env", "env": env})
		os.Stdout.Write(append(line, '\n'))
	}
	for _, stream := range []struct {
		name string
		f    *os.File
	}{{"FAKE_STDOUT", os.Stdout}, {"FAKE_STDERR", os.Stderr}} {
		var chunks []string
		json.Unmarshal([]byte(os.Getenv(stream.name)), &chunks)
		for _, c := range chunks {
			stream.f.WriteString(c)
		}
	}
	if os.Getenv("FAKE_SPAWN") == "1" {
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), helperVar+"=holder")
		if err := cmd.Start(); err != nil {
			fmt.Fprintf(os.Stdout, "{\"message\":\"spawn: %v\"}\n", err)
			os.Exit(1)
		}
		os.Stdout.WriteString(`{"message":"spawned"}` + "\n")
	}
	switch os.Getenv("FAKE_WAIT") {
	case "term":
		term := make(chan os.Signal, 1)
		signal.Notify(term, syscall.SIGTERM)
		os.Stdout.WriteString(`{"message":"ready"}` + "\n")
		<-term
		os.Stdout.WriteString(`{"message":"told to stop"}` + "\n")
	case "ignore":
		signal.Ignore(syscall.SIGTERM)
		os.Stdout.WriteString(`{"message":"ready"}` + "\n")
		stay()
	}
	switch os.Getenv("FAKE_END") {
	case "panic":
		panic("boom")
	case "selfkill":
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		stay()
	}
	var status int
	fmt.Sscan(os.Getenv("FAKE_EXIT"), &status)
	os.Exit(status)
}

func holder() {
	f, err := os.OpenFile(os.Getenv("FAKE_FIFO"), os.O_WRONLY, 0)
	if err != nil {
		os.Exit(3)
	}
	fmt.Fprintf(f, "alive %d\n", os.Getpid())
	stay()
}

func fakeRelay() {
	r, err := New(Config{
		BridgePath: os.Args[0],
		Env:        []string{helperVar + "=holder", "FAKE_FIFO=" + os.Getenv("FAKE_FIFO")},
	})
	if err != nil {
		os.Exit(4)
	}
	if _, err := r.Run(context.Background(), session.TaskSpec{TaskID: "t_1", Warm: true}); err != nil {
		os.Exit(5)
	}
	os.Stdout.WriteString("started\n")
	stay()
}

// stay keeps a helper process alive until it is killed.
func stay() {
	for {
		time.Sleep(time.Hour)
	}
}
