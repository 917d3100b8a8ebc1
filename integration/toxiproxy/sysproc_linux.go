package toxiproxy

import "syscall"

// sysProcAttr makes the kernel kill toxiproxy-server if the test process
// dies without its cleanup (a timeout's panic, a signal).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
