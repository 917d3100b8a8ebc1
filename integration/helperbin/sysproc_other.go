//go:build !linux

package helperbin

import "syscall"

// SysProcAttr returns nil: only Linux kills a child when its parent dies.
func SysProcAttr() *syscall.SysProcAttr { return nil }
