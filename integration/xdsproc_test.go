package integration

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// An xdsProc is a running `modgate xds`: the control plane alone.
type xdsProc struct {
	Addr string // ADS listener, host:port
	cmd  *exec.Cmd

	mu  sync.Mutex
	log bytes.Buffer // stderr so far
}

// startXDS runs `modgate xds` with the YAML config on a free loopback
// port and waits until it is ready. It is stopped with SIGTERM at the end
// of the test, and must exit cleanly.
func startXDS(t testing.TB, config string) *xdsProc {
	t.Helper()
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "modgate.yaml")
	if err := os.WriteFile(cfgPath, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	x := &xdsProc{}
	x.cmd = exec.Command(modgateBin, "xds", "--config", cfgPath, "--listen", "127.0.0.1:0", "--audit", filepath.Join(dir, "audit.jsonl"), "--log-level", "debug")
	x.cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "GOENV=off", "GOFLAGS=", "GOTOOLCHAIN=local"}
	stderr, err := x.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := x.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			line := sc.Text()
			x.mu.Lock()
			x.log.WriteString(line + "\n")
			if m := listenRE.FindStringSubmatch(line); m != nil && m[1] == "xds" {
				x.Addr = m[2]
			}
			if strings.Contains(line, "msg=ready") {
				close(ready)
			}
			x.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		x.cmd.Process.Signal(syscall.SIGTERM)
		exited := make(chan error, 1)
		go func() { <-done; exited <- x.cmd.Wait() }()
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("modgate xds exited with %v after SIGTERM; log:\n%s", err, x.logText())
			}
		case <-time.After(15 * time.Second):
			x.cmd.Process.Kill()
			<-exited
			t.Errorf("modgate xds did not stop within 15s of SIGTERM")
		}
	})
	select {
	case <-ready:
	case <-done:
		t.Fatalf("modgate xds exited before it was ready; log:\n%s", x.logText())
	case <-time.After(30 * time.Second):
		t.Fatalf("modgate xds not ready after 30s; log:\n%s", x.logText())
	}
	return x
}

func (x *xdsProc) logText() string {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.log.String()
}
