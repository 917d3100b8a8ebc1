//go:build !linux

package toxiproxy

import "syscall"

// sysProcAttr returns nil: only Linux kills a child when its parent dies.
func sysProcAttr() *syscall.SysProcAttr { return nil }
