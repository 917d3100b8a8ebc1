package helperbin

import "syscall"

// SysProcAttr makes the kernel kill a helper started with it if the test
// process dies without its cleanup (a timeout's panic, a signal).
func SysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
