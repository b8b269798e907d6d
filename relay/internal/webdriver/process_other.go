//go:build !unix

package webdriver

import "os/exec"

// setProcessGroup does nothing where there are no process groups.
func setProcessGroup(cmd *exec.Cmd) {}

// kill ends chromedriver.
func kill(cmd *exec.Cmd) {
	_ = cmd.Process.Kill()
}
