// Package e2e runs the product end to end on one machine: the real relay
// and session API over real sockets, real bridge processes running real
// shells, real time-outs (shortened through the configuration).
package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"github.com/aishell/aishell/relay/internal/buildtest"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/aishell/aishell/relay/hub"
	"github.com/aishell/aishell/relay/local"
	"github.com/aishell/aishell/relay/web"
)

// bridgeBin is the bridge binary built once for the package.
var bridgeBin string

func TestMain(m *testing.M) {
	dir, err := buildtest.Build("bridge")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bridgeBin = filepath.Join(dir, "bridge")
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// options adjust a product for one test.
type options struct {
	warm     int
	agent    string
	idle     time.Duration
	hold     time.Duration
	dataDir  string
	maxFrame int
	control  bool
	// page serves the web page at the product's root.
	page bool
}

// startProduct starts the product on a free loopback port with its own
// data folder, and stops it (and every task process) when the test ends.
func startProduct(t *testing.T, o options) *local.Product {
	t.Helper()
	var static http.Handler
	if o.page {
		static = web.Handler()
	}
	return buildtest.Product(t, local.Config{
		DataDir:      o.dataDir,
		BridgePath:   bridgeBin,
		AgentCommand: o.agent,
		WarmPool:     o.warm > 0,
		WarmPoolSize: o.warm,
		Control:      o.control,
		Static:       static,
		Hub: hub.Config{
			IdleTimeout: o.idle,
			HoldTimeout: o.hold,
			MaxFrame:    o.maxFrame,
		},
	})
}

// logLines reads every JSON log line the product wrote so far.
func logLines(t *testing.T, p *local.Product) []map[string]any {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(p.LogsDir, "*.jsonl"))
	var out []map[string]any
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			t.Fatalf("open log: %v", err)
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var m map[string]any
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				t.Errorf("log line in %s is not JSON: %q", filepath.Base(name), sc.Text())
				continue
			}
			out = append(out, m)
		}
		f.Close()
	}
	return out
}

// findLog returns the log lines where every key has the given value.
func findLog(lines []map[string]any, match map[string]any) []map[string]any {
	var out []map[string]any
next:
	for _, l := range lines {
		for k, v := range match {
			if l[k] != v {
				continue next
			}
		}
		out = append(out, l)
	}
	return out
}

// eventually waits for cond, checking it whenever the product may have
// moved on; limit bounds the wait.
func eventually(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, limit)
		}
		// Conditions here are read from outside the product (files, process
		// tables), which has no event to wait on.
		time.Sleep(20 * time.Millisecond)
	}
}
