//go:build unix

package vcs

import (
	"os/exec"
	"syscall"
)

// setGroup makes cmd the leader of a new process group, and makes
// cancelling its context kill the whole group.
func setGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return killGroup(cmd.Process.Pid) }
}

// killGroup kills every process of the process group pgid. A group that
// is gone already is no error.
func killGroup(pgid int) error {
	if err := syscall.Kill(-pgid, syscall.SIGKILL); err != nil && err != syscall.ESRCH {
		return err
	}
	return nil
}
