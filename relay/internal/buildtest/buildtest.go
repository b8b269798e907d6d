// Package buildtest builds the product's commands for tests that run them
// as real processes (the bridge as tasks, the relay as a process), starts
// the product on one machine for a test, and makes folders that agents
// running under other uids can traverse.
package buildtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/aishell/aishell/relay/local"
)

// Build compiles the named commands of relay/cmd (for example "bridge")
// into a new temporary folder and returns it; the caller removes it. Use it
// from TestMain, once per test binary.
func Build(cmds ...string) (string, error) {
	dir, err := os.MkdirTemp("", "aishell-bin-")
	if err != nil {
		return "", err
	}
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..", "..")
	for _, cmd := range cmds {
		build := exec.Command("go", "build", "-o", filepath.Join(dir, cmd), "./relay/cmd/"+cmd)
		build.Dir = root
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			os.RemoveAll(dir)
			return "", fmt.Errorf("build %s: %w", cmd, err)
		}
	}
	return dir, nil
}

// OpenTempDir returns a temporary folder that agents running under their
// own uids can traverse (t.TempDir makes 0700 folders).
func OpenTempDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	for d := dir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatalf("open up %s: %v", d, err)
		}
	}
	return dir
}

// Product starts the whole product on one machine for a test, on a free
// loopback port, and stops it (and every task process) when the test ends.
// Empty fields of cfg get a test's defaults: a traversable data folder,
// /bin/sh as the agent, a refill every second. cfg.BridgePath is required.
func Product(t testing.TB, cfg local.Config) *local.Product {
	t.Helper()
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.DataDir == "" {
		cfg.DataDir = OpenTempDir(t)
	}
	if cfg.AgentCommand == "" {
		cfg.AgentCommand = "/bin/sh"
	}
	if cfg.RefillInterval == 0 {
		cfg.RefillInterval = time.Second
	}
	p, err := local.Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("start product: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := p.Close(ctx); err != nil {
			t.Errorf("close product: %v", err)
		}
	})
	return p
}
