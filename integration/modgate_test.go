// Package integration holds modgate's end-to-end tests: the real modgate
// binary, real go commands, and hermetic upstreams on 127.0.0.1.
package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/modgate/modgate/audit"
)

// modgateBin is the modgate binary built once for all tests.
var modgateBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "modgate-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	modgateBin = filepath.Join(dir, "modgate")
	build := exec.Command("go", "build", "-o", modgateBin, "github.com/modgate/modgate/cmd/modgate")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building modgate:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	finishChaos()
	os.RemoveAll(dir)
	os.Exit(code)
}

// A gatewayProc is a running `modgate serve`.
type gatewayProc struct {
	URL     string // GOPROXY listener, e.g. http://127.0.0.1:PORT
	Admin   string // admin listener base URL
	ExtProc string // ext_proc gRPC listener, host:port
	Blob    string // blob listener base URL
	XDS     string // xDS listener, host:port
	// Transparent is the transparent listener, host:port, if it was asked for.
	Transparent string
	// VCS is the VCS origin's own listener (mesh mode), if it was asked for.
	VCS string
	// AdminTokenFile holds the admin listener's token (POST /cache/purge,
	// /debug/pprof/), as the server logged it.
	AdminTokenFile string
	audit          string // audit file
	cmd            *exec.Cmd

	stop     func(t testing.TB) // SIGTERM, and wait for a clean exit; once
	stopOnce sync.Once

	mu  sync.Mutex
	log bytes.Buffer // stderr so far
}

var (
	listenRE     = regexp.MustCompile(`msg=listening listener=(\w+) addr=(\S+) scheme=(\w+)`)
	adminTokenRE = regexp.MustCompile(`msg="admin token" file=(\S+)`)
)

// startModgate runs `modgate serve` with the YAML config and extra flags,
// on free loopback ports, and waits until it listens. The process is
// stopped with SIGTERM at the end of the test, and must exit cleanly.
func startModgate(t testing.TB, config string, flags ...string) *gatewayProc {
	t.Helper()
	return startModgateEnv(t, config, nil, flags...)
}

// startModgateEnv is startModgate with env added to the process's
// environment (credentials of a store, say).
func startModgateEnv(t testing.TB, config string, env []string, flags ...string) *gatewayProc {
	t.Helper()
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "modgate.yaml")
	if err := os.WriteFile(cfgPath, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	g := &gatewayProc{audit: filepath.Join(dir, "audit.jsonl")}
	args := append([]string{"serve", "--config", cfgPath, "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--extproc-listen", "127.0.0.1:0", "--blob-listen", "127.0.0.1:0", "--xds-listen", "127.0.0.1:0", "--audit", g.audit, "--cache-dir", filepath.Join(dir, "cache"), "--log-level", "debug"}, flags...)
	g.cmd = exec.Command(modgateBin, args...)
	g.cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "GOENV=off", "GOFLAGS=", "GOTOOLCHAIN=local"}, env...)
	stderr, err := g.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}

	ready := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			g.mu.Lock()
			g.log.WriteString(line + "\n")
			if m := listenRE.FindStringSubmatch(line); m != nil {
				url := m[3] + "://" + m[2]
				switch m[1] {
				case "goproxy":
					g.URL = url
				case "admin":
					g.Admin = url
				case "extproc":
					g.ExtProc = m[2]
				case "blob":
					g.Blob = url
				case "xds":
					g.XDS = m[2]
				case "transparent":
					g.Transparent = m[2]
				case "vcs":
					g.VCS = url
				}
			}
			if m := adminTokenRE.FindStringSubmatch(line); m != nil {
				g.AdminTokenFile = m[1]
			}
			if strings.Contains(line, "msg=ready") {
				close(ready)
			}
			g.mu.Unlock()
		}
	}()
	g.stop = func(t testing.TB) {
		g.stopOnce.Do(func() {
			g.cmd.Process.Signal(syscall.SIGTERM)
			exited := make(chan error, 1)
			go func() { <-done; exited <- g.cmd.Wait() }()
			select {
			case err := <-exited:
				if err != nil {
					t.Errorf("modgate exited with %v after SIGTERM; log:\n%s", err, g.logText())
				}
			case <-time.After(15 * time.Second):
				g.cmd.Process.Kill()
				<-exited
				t.Errorf("modgate did not stop within 15s of SIGTERM")
			}
		})
	}
	t.Cleanup(func() { g.stop(t) })
	select {
	case <-ready:
	case <-done:
		t.Fatalf("modgate exited before listening; log:\n%s", g.logText())
	case <-time.After(30 * time.Second):
		t.Fatalf("modgate not listening after 30s; log:\n%s", g.logText())
	}
	return g
}

func (g *gatewayProc) logText() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.log.String()
}

// events reads the audit file.
func (g *gatewayProc) events(t *testing.T) []audit.Event {
	t.Helper()
	f, err := os.Open(g.audit)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var evs []audit.Event
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var ev audit.Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("audit line %q: %v", sc.Text(), err)
		}
		evs = append(evs, ev)
	}
	return evs
}

// waitEvents waits until the audit file holds at least n events: the event
// of a request is written when the response is done, which may be just
// after the client has read it.
func (g *gatewayProc) waitEvents(t *testing.T, n int) []audit.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	for {
		evs := g.events(t)
		if len(evs) >= n || ctx.Err() != nil {
			return evs
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func readAll(t *testing.T, r io.Reader) string {
	t.Helper()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// kill ends g with SIGKILL, as a crash would, and waits for it to exit.
func (g *gatewayProc) kill(t testing.TB) {
	t.Helper()
	g.stopOnce.Do(func() {
		g.cmd.Process.Kill()
		g.cmd.Wait()
	})
}

// stopModgate stops g now rather than at the end of the test.
func stopModgate(t *testing.T, g *gatewayProc) {
	t.Helper()
	g.stop(t)
}

func writeFileString(name, text string) error {
	return os.WriteFile(name, []byte(text), 0o644)
}

// adminToken returns the admin listener's bearer token.
func (g *gatewayProc) adminToken(t testing.TB) string {
	t.Helper()
	data, err := os.ReadFile(g.AdminTokenFile)
	if err != nil {
		t.Fatalf("admin token: %v", err)
	}
	return strings.TrimSpace(string(data))
}
