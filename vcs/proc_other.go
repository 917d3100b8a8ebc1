//go:build !unix

package vcs

import "os/exec"

// setGroup makes cancelling cmd's context kill it. Without process
// groups, what it started may outlive it.
func setGroup(cmd *exec.Cmd) {}

// killGroup does nothing without process groups.
func killGroup(pgid int) error { return nil }
