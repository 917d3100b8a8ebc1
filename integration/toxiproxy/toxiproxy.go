// Package toxiproxy runs Shopify's Toxiproxy for tests: a real TCP proxy
// that injects faults (latency, bandwidth limits, resets, timeouts, slow
// closes) between two endpoints on 127.0.0.1, driven over its HTTP JSON
// API with net/http. Toxiproxy's own client package is not imported:
// modgate's go.mod does not depend on it.
//
// The binary is $MODGATE_TOXIPROXY, or else
// ${XDG_CACHE_HOME:-$HOME/.cache}/modgate-test/bin/toxiproxy-server, which
// `make test` builds with build.sh (a pinned version). Without it, [Start]
// skips the test, or fails it when $CI is set: CI builds it, so a missing
// binary there is a broken build, not a machine without it.
//
// The server listens on 127.0.0.1 only, its API and every proxy on ports
// below Linux's ephemeral range, so that a proxy disabled and enabled
// again (an outage and its end) finds its port still free. Its working
// directory and HOME are a temporary directory of the test, its
// environment holds nothing else, and it is killed at the test's cleanup
// (and by the kernel if the test process dies first, on Linux).
package toxiproxy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/modgate/modgate/integration/helperbin"
)

// A Server is a running toxiproxy-server; see [Start].
type Server struct {
	API string // base URL of the HTTP API, "http://127.0.0.1:PORT"

	client  *http.Client
	logFile string
	cmd     *exec.Cmd
	done    chan struct{} // closed when cmd has exited

	mu    sync.Mutex
	ports map[int]bool // ports handed out, never handed out twice
}

// Start starts a server and returns it when its API answers. It skips t
// if the binary is missing (fails it under $CI), and kills the server at
// t's cleanup.
func Start(t testing.TB) *Server {
	t.Helper()
	bin := Binary()
	if fi, err := os.Stat(bin); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
		msg := fmt.Sprintf("toxiproxy: no toxiproxy-server binary at %s (set MODGATE_TOXIPROXY, or run `make deps`, which builds it with integration/toxiproxy/build.sh)", bin)
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	dir := t.TempDir()
	s := &Server{
		client:  &http.Client{Timeout: 10 * time.Second},
		logFile: filepath.Join(dir, "toxiproxy.log"),
		done:    make(chan struct{}),
		ports:   map[int]bool{},
	}
	port, err := s.freePort()
	if err != nil {
		t.Fatalf("toxiproxy: %v", err)
	}
	s.API = "http://127.0.0.1:" + strconv.Itoa(port)
	log, err := os.Create(s.logFile)
	if err != nil {
		t.Fatalf("toxiproxy: %v", err)
	}
	defer log.Close()
	// A fixed seed: which connections a toxic with a toxicity below 1
	// spares is the same from run to run.
	s.cmd = exec.Command(bin, "-host", "127.0.0.1", "-port", strconv.Itoa(port), "-seed", "1")
	s.cmd.Dir = dir
	s.cmd.Env = []string{"HOME=" + dir, "TMPDIR=" + dir, "LOG_LEVEL=info"}
	s.cmd.Stdout, s.cmd.Stderr = log, log
	s.cmd.SysProcAttr = helperbin.SysProcAttr()
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("toxiproxy: start %s: %v", bin, err)
	}
	go func() {
		s.cmd.Wait()
		close(s.done)
	}()
	t.Cleanup(func() { s.stop(t) })

	begin := time.Now()
	const attempts, every = 200, 50 * time.Millisecond
	for i := 0; ; i++ {
		err = s.call(t.Context(), http.MethodGet, "/version", nil, nil)
		if err == nil {
			break
		}
		if i == attempts {
			t.Fatalf("toxiproxy: API not answering after %v: %v%s", attempts*every, err, helperbin.LogTail(s.logFile, "toxiproxy"))
		}
		select {
		case <-s.done:
			t.Fatalf("toxiproxy: the server exited while starting%s", helperbin.LogTail(s.logFile, "toxiproxy"))
		case <-time.After(every):
		}
	}
	t.Logf("toxiproxy: API on %s, ready in %v", s.API, time.Since(begin).Round(time.Millisecond))
	return s
}

// Binary returns the path of the server binary Start runs:
// $MODGATE_TOXIPROXY, or toxiproxy-server where make test builds it.
func Binary() string { return helperbin.Path("MODGATE_TOXIPROXY", "toxiproxy-server") }

// stop kills the server and waits for it to exit.
func (s *Server) stop(t testing.TB) {
	s.cmd.Process.Kill()
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		t.Errorf("toxiproxy: the server (pid %d) does not exit", s.cmd.Process.Pid)
	}
	if t.Failed() {
		t.Logf("toxiproxy: the server's log:%s", helperbin.LogTail(s.logFile, "toxiproxy"))
	}
}

// A Proxy is one TCP proxy of a Server: connections to Listen are passed
// to Upstream through the toxics added.
type Proxy struct {
	Name     string // unique within its Server
	Listen   string // host:port, on 127.0.0.1
	Upstream string // host:port

	s *Server
}

// Proxy creates an enabled proxy named name from a free port on 127.0.0.1
// to upstream (host:port).
func (s *Server) Proxy(t testing.TB, name, upstream string) *Proxy {
	t.Helper()
	port, err := s.freePort()
	if err != nil {
		t.Fatalf("toxiproxy: %v", err)
	}
	p := &Proxy{Name: name, Listen: "127.0.0.1:" + strconv.Itoa(port), Upstream: upstream, s: s}
	in := map[string]any{"name": name, "listen": p.Listen, "upstream": upstream, "enabled": true}
	var out struct{ Listen string }
	if err := s.call(t.Context(), http.MethodPost, "/proxies", in, &out); err != nil {
		t.Fatalf("toxiproxy: create proxy %s: %v", name, err)
	}
	if out.Listen != p.Listen {
		t.Fatalf("toxiproxy: proxy %s listens on %q, want %q", name, out.Listen, p.Listen)
	}
	return p
}

// A Toxic is a fault of a proxy; see toxiproxy's README for the types
// and their attributes (all times in milliseconds, rates in KB/s).
type Toxic struct {
	// Name is unique within the proxy. Default: Type_Stream, as
	// toxiproxy names it.
	Name string
	// Type is latency, bandwidth, slow_close, timeout, reset_peer,
	// slicer or limit_data.
	Type string
	// Stream is the direction it acts on: "downstream" (from the
	// upstream to the client, the default) or "upstream".
	Stream string
	// Spare is the share of new connections the toxic leaves alone, in
	// [0, 1]; toxiproxy's toxicity is 1 - Spare. Default 0: every
	// connection. A reset_peer with Spare 1 never fires, but still makes
	// every close of a connection opened while it is there a reset (toxiproxy sets
	// SO_LINGER to 0 on both sides of such a connection).
	Spare float64
	// Attributes are the type's, e.g. {"latency": 300, "jitter": 50}.
	Attributes map[string]any
}

// AddToxic adds x to the proxy; it acts on connections already open too.
func (p *Proxy) AddToxic(t testing.TB, x Toxic) {
	t.Helper()
	if x.Stream == "" {
		x.Stream = "downstream"
	}
	if x.Name == "" {
		x.Name = x.Type + "_" + x.Stream
	}
	in := map[string]any{"name": x.Name, "type": x.Type, "stream": x.Stream, "toxicity": 1 - x.Spare, "attributes": x.Attributes}
	if err := p.s.call(t.Context(), http.MethodPost, "/proxies/"+p.Name+"/toxics", in, nil); err != nil {
		t.Fatalf("toxiproxy: add toxic %s to %s: %v", x.Name, p.Name, err)
	}
}

// RemoveToxic removes the toxic named name.
func (p *Proxy) RemoveToxic(t testing.TB, name string) {
	t.Helper()
	if err := p.s.call(t.Context(), http.MethodDelete, "/proxies/"+p.Name+"/toxics/"+name, nil, nil); err != nil {
		t.Fatalf("toxiproxy: remove toxic %s from %s: %v", name, p.Name, err)
	}
}

// Disable closes the proxy's listener and every connection through it:
// connections to Listen are refused until Enable.
func (p *Proxy) Disable(t testing.TB) {
	t.Helper()
	p.update(t, map[string]any{"enabled": false})
}

// Enable listens again, on the same address.
func (p *Proxy) Enable(t testing.TB) {
	t.Helper()
	p.update(t, map[string]any{"enabled": true})
}

// SetUpstream points the proxy at another upstream (host:port). The
// proxy restarts on the same address: connections open are closed.
func (p *Proxy) SetUpstream(t testing.TB, upstream string) {
	t.Helper()
	p.update(t, map[string]any{"upstream": upstream})
	p.Upstream = upstream
}

func (p *Proxy) update(t testing.TB, in map[string]any) {
	t.Helper()
	if err := p.s.call(t.Context(), http.MethodPost, "/proxies/"+p.Name, in, nil); err != nil {
		t.Fatalf("toxiproxy: update proxy %s with %v: %v", p.Name, in, err)
	}
}

// maxAnswer bounds what is read of an answer of the API.
const maxAnswer = 1 << 20

// call sends a request to the API with in as its JSON body (if not nil)
// and decodes a 2xx answer's JSON body into out (if not nil).
func (s *Server) call(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		data, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, s.API+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer+1))
	if err != nil {
		return fmt.Errorf("%s %s: reading the answer: %w", method, path, err)
	}
	if len(data) > maxAnswer {
		return fmt.Errorf("%s %s: answer over %d bytes", method, path, maxAnswer)
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(data))
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("%s %s: %w", method, path, err)
		}
	}
	return nil
}

// freePort returns a port free on 127.0.0.1 that s has not handed out yet.
func (s *Server) freePort() (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return helperbin.FreePort(s.ports)
}
