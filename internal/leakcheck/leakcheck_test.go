package leakcheck

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func TestMain(m *testing.M) { Main(m) }

// park blocks until stop is closed: the leaked goroutine, named so that its
// stack can be recognised.
func park(stop <-chan struct{}, done chan<- struct{}) {
	<-stop
	close(done)
}

func TestFindLeaks(t *testing.T) {
	file := filepath.Join(t.TempDir(), "leaked")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		// leak leaks something, or not, and returns what releases it.
		leak          func(t *testing.T) (release func())
		fdOnly        bool   // the case is about descriptors: Linux only
		wantGoroutine string // in the stacks of the leaked goroutines; "" for none
		wantFD        string // prefix of the leaked descriptor's target; "" for none
	}{
		{
			name: "nothing",
			leak: func(t *testing.T) func() { return func() {} },
		},
		{
			name: "goroutine",
			leak: func(t *testing.T) func() {
				stop, done := make(chan struct{}), make(chan struct{})
				go park(stop, done)
				return func() { close(stop); <-done }
			},
			wantGoroutine: "leakcheck.park",
		},
		{
			name: "finished goroutine",
			leak: func(t *testing.T) func() {
				stop, done := make(chan struct{}), make(chan struct{})
				go park(stop, done)
				close(stop)
				<-done
				return func() {}
			},
		},
		{
			name: "open file",
			leak: func(t *testing.T) func() {
				f, err := os.Open(file)
				if err != nil {
					t.Fatal(err)
				}
				return func() { f.Close() }
			},
			fdOnly: true,
			wantFD: file,
		},
		{
			name: "closed file",
			leak: func(t *testing.T) func() {
				f, err := os.Open(file)
				if err != nil {
					t.Fatal(err)
				}
				f.Close()
				return func() {}
			},
			fdOnly: true,
		},
		{
			name: "open listener",
			leak: func(t *testing.T) func() {
				l, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				return func() { l.Close() }
			},
			fdOnly: true,
			wantFD: "socket:[",
		},
		{
			name: "closed listener",
			leak: func(t *testing.T) func() {
				l, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				l.Close()
				return func() {}
			},
			fdOnly: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.fdOnly && runtime.GOOS != "linux" {
				t.Skip("descriptors are listed on Linux only")
			}
			before, err := take()
			if err != nil {
				t.Fatal(err)
			}
			release := tt.leak(t)
			l, err := findLeaks(before, 0)
			release()
			if err != nil {
				t.Fatalf("findLeaks: %v", err)
			}

			switch {
			case tt.wantGoroutine == "" && l.goroutines != nil:
				t.Errorf("findLeaks: goroutines %v, want none", l.goroutines)
			case tt.wantGoroutine != "" && (l.goroutines == nil || !strings.Contains(l.goroutines.Error(), tt.wantGoroutine)):
				t.Errorf("findLeaks: goroutines %v, want one in %s", l.goroutines, tt.wantGoroutine)
			}
			switch {
			case tt.wantFD == "" && len(l.fds) > 0:
				t.Errorf("findLeaks: descriptors %v, want none", l.fds)
			case tt.wantFD != "" && (len(l.fds) != 1 || !strings.HasPrefix(l.fds[0].target, tt.wantFD)):
				t.Errorf("findLeaks: descriptors %v, want one to %s…", l.fds, tt.wantFD)
			}
			if !strings.Contains(l.String(), tt.wantGoroutine) || !strings.Contains(l.String(), tt.wantFD) {
				t.Errorf("leaks.String() = %q, want it to name %q and %q", l, tt.wantGoroutine, tt.wantFD)
			}

			// Released, nothing is left.
			if l, err := findLeaks(before, Settle); err != nil || !l.empty() {
				t.Errorf("findLeaks after release = %v, %v; want nothing", l, err)
			}
		})
	}
}

// helperEnv makes the test binary, run again by TestMainExit, run
// TestHelper as the case it names.
const helperEnv = "LEAKCHECK_TEST_HELPER"

// held is the file TestHelper leaks.
var held *os.File

// TestHelper is the tests of a package checked by Main, in a process of its
// own: clean, or leaking a goroutine and a file.
func TestHelper(t *testing.T) {
	switch os.Getenv(helperEnv) {
	case "":
		t.Skip("run by TestMainExit only")
	case "clean":
		// The process's first network use: the poller's descriptors
		// would appear now had Run not started it before its snapshot.
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		l.Close()
	case "leak":
		settle = 0 // the leak will not go away
		var err error
		if held, err = os.Open(os.Args[0]); err != nil {
			t.Fatal(err)
		}
		go park(make(chan struct{}), make(chan struct{}))
	}
}

func TestMainExit(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("descriptors are listed on Linux only")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		helper   string
		wantCode int
		want     []string // in the output
	}{
		{"clean", 0, []string{"PASS"}},
		{"leak", 1, []string{"leakcheck: the tests leaked", "leakcheck.park", "fd ", self}},
	}
	for _, tt := range tests {
		t.Run(tt.helper, func(t *testing.T) {
			cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestHelper$", "-test.count=1")
			cmd.Env = append(os.Environ(), helperEnv+"="+tt.helper,
				// Under -race, not the second the race runtime waits at exit.
				"GORACE="+os.Getenv("GORACE")+" atexit_sleep_ms=0")
			out, err := cmd.CombinedOutput()
			code := 0
			if exit := (*exec.ExitError)(nil); errors.As(err, &exit) {
				code = exit.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tt.wantCode {
				t.Errorf("%s: exit code %d, want %d; output:\n%s", tt.helper, code, tt.wantCode, out)
			}
			for _, w := range tt.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("%s: output lacks %q:\n%s", tt.helper, w, out)
				}
			}
			if tt.wantCode == 0 && strings.Contains(string(out), "leakcheck:") {
				t.Errorf("%s: output:\n%s\nwant no word from leakcheck", tt.helper, out)
			}
		})
	}
}
