package bridge

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/aishell/aishell/relay/wire"
)

// Uids of the isolation tests: above any the machine gives out.
const (
	aliceUID = 54001
	bobUID   = 54002
	probeUID = 54003
)

// TestAgentsOfTwoUsersAreIsolated runs the agents of two users side by side
// in one workspace root, as root does in a task (R9a).
func TestAgentsOfTwoUsersAreIsolated(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("isolation needs the bridge to run as root")
	}
	root := workspaceRoot(t)
	suid := setuidProbe(t)

	relayA, relayB := newFakeRelay(t), newFakeRelay(t)
	cfgA := testConfig(t, relayA)
	cfgA.WorkspaceRoot, cfgA.UID = root, aliceUID
	cfgB := testConfig(t, relayB)
	cfgB.WorkspaceRoot, cfgB.SessionID, cfgB.UserID, cfgB.UID = root, "s2", "bob", bobUID
	startBridge(t, cfgA)
	startBridge(t, cfgB)
	alice := relayA.accept("/internal/task/s1")
	bob := relayB.accept("/internal/task/s2")
	alice.frame(wire.TypeReady)
	bob.frame(wire.TypeReady)

	for name, want := range map[string]int{"alice": aliceUID, "bob": bobUID} {
		st, err := os.Lstat(filepath.Join(root, name))
		if err != nil {
			t.Fatal(err)
		}
		sys := st.Sys().(*syscall.Stat_t)
		if int(sys.Uid) != want || int(sys.Gid) != want || st.Mode().Perm() != 0o700 {
			t.Errorf("%s's folder: got %d:%d %v; want %d:%d -rwx------",
				name, sys.Uid, sys.Gid, st.Mode().Perm(), want, want)
		}
	}

	alice.input("echo s3cret > secret; echo \"uid=$(id -u) groups=$(id -G)\"; " +
		"grep NoNewPrivs /proc/self/status; echo \"suid=$(" + suid + " -u)\"; echo alice''-done\n")
	out := alice.outputContains("alice-done")
	wantLines := []string{"uid=54001 groups=54001", "NoNewPrivs:\t1"}
	if suid != "" {
		wantLines = append(wantLines, "suid=54001")
	}
	for _, want := range wantLines {
		if !strings.Contains(out, want+"\r\n") {
			t.Errorf("alice's agent said %q; want %q", out, want)
		}
	}

	bob.input("cat ../alice/secret; ls ..; echo bob''-done\n")
	out = bob.outputContains("bob-done")
	for _, want := range []string{
		"cat: ../alice/secret: Permission denied",
		"ls: cannot open directory '..': Permission denied",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("bob's agent said %q; want %q", out, want)
		}
	}
	if strings.Contains(out, "s3cret") {
		t.Errorf("bob's agent read alice's secret: %q", out)
	}
}

// setuidProbe returns a copy of id(1) that is setuid root, after checking
// that it does give root to a plain process of probeUID on this file
// system; "" if it does not (a nosuid mount), which leaves only the
// NoNewPrivs check.
func setuidProbe(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	probe := filepath.Join(dir, "id-setuid")
	src, err := os.Open("/usr/bin/id")
	if err != nil {
		t.Skipf("no id program: %v", err)
	}
	defer src.Close()
	dst, err := os.OpenFile(probe, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	dst.Close()
	if err := os.Chmod(probe, 0o755|os.ModeSetuid); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(probe, "-u")
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: probeUID, Gid: probeUID, Groups: []uint32{}},
	}
	out, err := cmd.Output()
	if err != nil || strings.TrimSpace(string(out)) != "0" {
		t.Logf("setuid programs do not work here (%q, %v); checking NoNewPrivs only", out, err)
		return ""
	}
	return probe
}
