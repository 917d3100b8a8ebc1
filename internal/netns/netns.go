//go:build linux

// Package netns runs code inside a named network namespace, for the tests
// that build namespaces of their own (the eBPF redirect, the transparent
// listener).
package netns

import (
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// Do runs f with the calling goroutine locked to an OS thread in network
// namespace name (a name in /run/netns, as `ip netns add` makes). f must
// start no goroutine that needs the namespace: goroutines run on other
// threads. Sockets f opens stay in the namespace after Do returns. If the
// thread cannot be switched back it stays locked, and the runtime
// discards it when the goroutine ends.
func Do(name string, f func() error) error {
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	target, err := os.Open("/run/netns/" + name)
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("setns %s: %w", name, err)
	}
	ferr := f()
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("setns back from %s: %w (thread left locked)", name, err)
	}
	runtime.UnlockOSThread()
	return ferr
}
