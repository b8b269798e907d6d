// Package buildtest builds the product's commands for tests that run them
// as real processes (the bridge as tasks, the relay as a process), and
// makes folders that agents running under other uids can traverse.
package buildtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
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
