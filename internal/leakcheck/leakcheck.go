// Package leakcheck fails a package's tests when they leave a goroutine
// running or a file descriptor open: every long-lived component's tests
// end, after its shutdown, with this check.
//
// A package opts in with one TestMain:
//
//	func TestMain(m *testing.M) { leakcheck.Main(m) }
//
// or, when its TestMain has more to do after the tests, calls Run and
// exits with what it returns.
//
// The contract:
//
//   - Before the tests, Run notes the goroutines already running (those
//     started by package initialisation are not the tests') and, on Linux,
//     the open file descriptors, read from /proc/self/fd with their
//     targets. Elsewhere, or when /proc is not mounted, only goroutines are
//     checked.
//   - After the tests, if they passed, any goroutine started since that is
//     still running is a leak, except those goleak ignores by default (the
//     testing package's own, os/signal's, runtime/trace's, and one in a
//     system call from cgo). So is any descriptor open now that was not
//     open before with the same target.
//   - Shutdown may finish asynchronously: the check repeats until nothing
//     leaks or for at most Settle. A clean package waits for nothing.
//   - A descriptor is seen only while it is open: one whose *os.File or
//     connection became unreachable during the tests may have been closed
//     by its finalizer at a collection, and goes unnoticed. What is still
//     held (by a goroutine, a global, a component left running) is seen;
//     collection is off while the check runs.
//   - On a leak, Run prints the goroutines' stacks and the descriptors'
//     targets to standard error and returns 1; Main exits with it.
//
// Two kinds of descriptor are not the tests' and never count:
//
//   - The runtime's network poller (an "anon_inode:[eventpoll]" and its
//     wakeup "anon_inode:[eventfd]") is created on the first use of a
//     pollable descriptor and kept for the life of the process. Run
//     creates it before the first snapshot, by opening and closing a pipe,
//     so it is in that snapshot rather than tolerated by name.
//   - The files of -test.cpuprofile and -test.trace, which the testing
//     package opens and deliberately never closes.
//
// When the tests fail, only their code is returned: a leak is then most
// likely their consequence, and the failure already fails the package.
package leakcheck

import (
	"fmt"
	"os"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// Settle is how long the check waits, at most, for goroutines and
// descriptors still being shut down when the tests return.
const Settle = 2 * time.Second

// settle is Settle, but for this package's own tests of a leak.
var settle = Settle

// Main runs the tests of m, checks that they leaked nothing, and exits:
// with 1 on a leak, else with the tests' code.
func Main(m *testing.M) {
	os.Exit(Run(m))
}

// Run runs the tests of m and checks that they leaked nothing. It returns
// the tests' code, or 1 if they passed but leaked; the leak is described on
// standard error.
func Run(m *testing.M) int {
	before, err := take()
	if err != nil {
		fmt.Fprintf(os.Stderr, "leakcheck: file descriptors not checked: %v\n", err)
	}
	code := m.Run()
	if code != 0 {
		return code
	}
	// The check's own allocations must not start a collection whose
	// finalizers would close what the last test left open.
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	l, err := findLeaks(before, settle)
	if err != nil {
		fmt.Fprintf(os.Stderr, "leakcheck: %v\n", err)
		return 1
	}
	if !l.empty() {
		fmt.Fprintf(os.Stderr, "leakcheck: the tests leaked:\n%s", l)
		return 1
	}
	return 0
}

// snapshot is what was running and open before the tests.
type snapshot struct {
	goroutines goleak.Option  // ignores the goroutines running then
	fds        map[int]string // descriptor → target; nil when not known
}

// take records the goroutines running and the descriptors open now, after
// starting the runtime's network poller. The error is only about
// descriptors: the snapshot is usable with fds nil.
func take() (snapshot, error) {
	s := snapshot{goroutines: goleak.IgnoreCurrent()}
	if err := startPoller(); err != nil {
		return s, err
	}
	fds, err := openFDs()
	if err != nil {
		return s, err
	}
	s.fds = fds
	return s, nil
}

// startPoller makes the runtime create its network poller's descriptors
// now, so that they are in the snapshot: a pipe is pollable, and the first
// pollable descriptor starts the poller.
func startPoller() error {
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("start the network poller: %w", err)
	}
	r.Close()
	w.Close()
	return nil
}

// leaks is what the tests left behind.
type leaks struct {
	goroutines error // goleak's list of the goroutines still running; nil if none
	fds        []fd  // descriptors open that were not before, by number
}

func (l leaks) empty() bool { return l.goroutines == nil && len(l.fds) == 0 }

// String describes the leaks for a person: goleak's stacks, then one line
// per descriptor. It ends with a newline.
func (l leaks) String() string {
	var b strings.Builder
	if l.goroutines != nil {
		fmt.Fprintf(&b, "%v\n", l.goroutines)
	}
	if len(l.fds) > 0 {
		b.WriteString("open file descriptors:\n")
		for _, f := range l.fds {
			fmt.Fprintf(&b, "\tfd %d: %s\n", f.num, f.target)
		}
	}
	return b.String()
}

// findLeaks compares what runs and is open now with before, waiting up to
// wait for what is still shutting down. goleak.Find itself retries for
// about half a second before it reports a goroutine, so wait bounds the
// total only roughly; with nothing leaked it returns at once.
func findLeaks(before snapshot, wait time.Duration) (leaks, error) {
	deadline := time.Now().Add(wait)
	for pause := time.Millisecond; ; pause = min(2*pause, 100*time.Millisecond) {
		var l leaks
		l.goroutines = goleak.Find(before.goroutines)
		if before.fds != nil {
			var err error
			if l.fds, err = newFDs(before.fds); err != nil {
				return leaks{}, err
			}
		}
		if l.empty() || time.Now().After(deadline) {
			return l, nil
		}
		time.Sleep(pause)
	}
}
