//go:build unix

package webdriver

import (
	"os/exec"
	"syscall"
)

// setProcessGroup puts chromedriver in a process group of its own, which the
// browsers it starts join, so that Close can end them all by that one id.
func setProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}

// kill ends chromedriver and every process in its process group, whose id
// is chromedriver's own (Setpgid with no Pgid).
func kill(cmd *exec.Cmd) {
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
}
