//go:build linux

package bpf

// TestGoCommandThroughRedirect is the end-to-end test of the in-pod
// redirect: the real go command, its GOPROXY a made-up address in the
// captured prefix, lands at the real modgate (`modgate serve
// --transparent`) in the pod, which fetches from a hermetic upstream
// (testproxy) outside the pod:
//
//	pod:  go mod download ──GOPROXY=http://203.0.113.10──▶ eth0 egress ─▶ lo ingress ─▶ modgate [::]:15001
//	      modgate ──SO_MARK 0x539──▶ http://203.0.113.20 ─▶ eth0 (exempt) ─▶ node
//	node: 203.0.113.10, 2001:db8:1::10   local addresses, nothing listens (refused)
//	      203.0.113.20:80                forwarder to testproxy on the node's 127.0.0.1
//	      192.0.2.1:80                   forwarder too: a destination outside the captured prefix
//
// The upstream's address is in the captured prefix and on the captured
// port on purpose: only modgate's mark keeps its own connections from
// being handed back to itself. The made-up proxy addresses are the
// node's, with no listener, so a connection the redirect does not take
// is refused at once instead of timing out.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/modgate/modgate/audit"
	"github.com/modgate/modgate/integration/testproxy"
)

var (
	fakeProxyV4  = netip.MustParseAddrPort("203.0.113.10:80")
	fakeProxyV6  = netip.MustParseAddrPort("[2001:db8:1::10]:80")
	upstreamAddr = netip.MustParseAddrPort("203.0.113.20:80") // captured prefix and port
	otherAddr    = netip.MustParseAddrPort("192.0.2.1:80")    // captured port, other prefix
	podAddr      = netip.MustParseAddr("192.0.2.2")
	zipPath      = "/example.com/b/@v/v1.0.0.zip"
	lookupPath   = "/sumdb/" + testproxy.DefaultSumDB + "/lookup/example.com/b@v1.0.0"
)

func TestGoCommandThroughRedirect(t *testing.T) {
	tp := newTopo(t)
	if _, err := exec.LookPath("nsenter"); err != nil {
		t.Skip("needs nsenter (util-linux)")
	}
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Skip("needs the go command")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	bin := filepath.Join(t.TempDir(), "modgate")
	build := exec.CommandContext(ctx, goCmd, "build", "-o", bin, "github.com/modgate/modgate/cmd/modgate")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build modgate: %v\n%s", err, out)
	}

	// The node owns the made-up addresses and the upstream's.
	ip(t, "-n", tp.node, "addr", "add", "203.0.113.10/32", "dev", "lo")
	ip(t, "-n", tp.node, "addr", "add", "203.0.113.20/32", "dev", "lo")
	ip(t, "-n", tp.node, "addr", "add", "2001:db8:1::10/128", "dev", "lo", "nodad")

	var up *testproxy.Server
	if err := in(tp.node, func() error { up = testproxy.Start(t, testproxy.Fixtures(t)); return nil }); err != nil {
		t.Fatal(err)
	}
	upTCP := netip.MustParseAddrPort(strings.TrimPrefix(up.URL, "http://"))
	upFwd := startForwarder(t, tp.node, upstreamAddr, upTCP)
	otherFwd := startForwarder(t, tp.node, otherAddr, upTCP)

	// Attach first, so that every upstream connection modgate makes,
	// health probes included, passes the hook.
	cfg := AttachConfig{
		Iface:    "eth0",
		Shape:    InPod,
		Prefixes: captureSet,
		Ports:    []uint16{80},
		Settings: Settings{ProxyPort: proxyPort, ExemptMark: exemptMark, ExemptMask: 0xfff, RouteMark: routeMark},
		PinRoot:  tp.pinRoot,
	}
	attach(t, tp.pod, cfg)

	mg := startModgateIn(ctx, t, tp.pod, bin, fmt.Sprintf(`
upstreams:
  - name: upstream
    url: http://%s
sumdb: [%s]
sumdb_key: %s
budget: {off: true}
upstream_mark: 0x%x
`, upstreamAddr.Addr(), up.SumDB, up.VerifierKey, exemptMark))

	// The go command, through the redirect, v4 then v6 (fresh module
	// caches; the v6 run is served from modgate's cache).
	for _, dst := range []netip.AddrPort{fakeProxyV4, fakeProxyV6} {
		env := testproxy.GoEnv(t, "http://"+hostOf(dst), up.VerifierKey)
		start := time.Now()
		stdout, stderr, err := runGoIn(ctx, t, tp.pod, goCmd, env, "mod", "download", "-json", "example.com/b@v1.0.0")
		took := time.Since(start)
		if err != nil {
			t.Fatalf("go mod download with GOPROXY=http://%s: %v\nstdout: %s\nstderr: %s\nmodgate log:\n%s", hostOf(dst), err, stdout, stderr, mg.logText())
		}
		t.Logf("go mod download -json example.com/b@v1.0.0 through the redirect to %v took %v", dst, took)
		var res struct{ Path, Version, Zip, Sum, Error string }
		if err := json.Unmarshal([]byte(stdout), &res); err != nil || res.Error != "" || res.Sum == "" {
			t.Errorf("go mod download -json = %q (%v), want a download without error", stdout, err)
		} else if _, err := os.Stat(res.Zip); err != nil {
			t.Errorf("downloaded zip: %v", err)
		}
		evs := mg.waitEvent(t, func(e audit.Event) bool {
			return e.Modgate.Kind == "zip" && e.Modgate.OriginalDestination == dst.String()
		})
		if !slices.ContainsFunc(evs, func(e audit.Event) bool {
			return e.Modgate.Kind == "zip" && e.Modgate.Module == "example.com/b" && e.Modgate.OriginalDestination == dst.String()
		}) {
			t.Errorf("no zip of example.com/b audited with original_destination %v; events:\n%s", dst, dumpEvents(evs))
		}
		if !slices.ContainsFunc(evs, func(e audit.Event) bool {
			return strings.HasPrefix(e.Modgate.Kind, "sumdb") && e.Modgate.OriginalDestination == dst.String()
		}) {
			t.Errorf("no checksum database request audited with original_destination %v; events:\n%s", dst, dumpEvents(evs))
		}
	}

	// Every request modgate served came through the redirect to a
	// made-up address; none came from modgate itself (its upstream).
	evs := mg.events(t)
	for _, e := range evs {
		if e.URL != nil && e.Modgate.OriginalDestination != fakeProxyV4.String() && e.Modgate.OriginalDestination != fakeProxyV6.String() {
			t.Errorf("request audited with original_destination %q, want %v or %v: %+v", e.Modgate.OriginalDestination, fakeProxyV4, fakeProxyV6, e)
		}
	}
	// modgate's own (marked) connections reached the upstream, from the
	// pod, at an address the redirect would otherwise have taken.
	if up.Count(zipPath) == 0 || up.Count(lookupPath) == 0 {
		t.Errorf("upstream got %s %d times and %s %d times, want both; requests: %q", zipPath, up.Count(zipPath), lookupPath, up.Count(lookupPath), up.Requests())
	}
	if peers := upFwd.peers(); len(peers) == 0 || slices.ContainsFunc(peers, func(a netip.Addr) bool { return a != podAddr }) {
		t.Errorf("upstream connections came from %v, want some, all from the pod's %v", peers, podAddr)
	}

	// Traffic the redirect does not capture goes where it was going.
	before := len(mg.events(t))
	otherBefore := len(otherFwd.peers())
	if body, err := httpGetFrom(tp.pod, otherAddr, 0, "/example.com/b/@v/list"); err != nil || !strings.Contains(body, "v1.0.0") {
		t.Errorf("GET http://%v from the pod (other prefix) = %q, %v; want the upstream's list", otherAddr, body, err)
	}
	if body, err := httpGetFrom(tp.pod, upstreamAddr, exemptMark, "/example.com/b/@v/list"); err != nil || !strings.Contains(body, "v1.0.0") {
		t.Errorf("GET http://%v from the pod with the exempt mark = %q, %v; want the upstream's list", upstreamAddr, body, err)
	}
	for _, dst := range []netip.AddrPort{netip.AddrPortFrom(fakeProxyV4.Addr(), 8080), netip.AddrPortFrom(fakeProxyV6.Addr(), 8080)} {
		// The node refuses: the connection reached it, not modgate.
		if c, err := dial(tp.pod, dst, 0, 2*time.Second); err == nil {
			c.Close()
			t.Errorf("dial %v (port not captured) succeeded, want it refused by the node", dst)
		} else if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("dial %v (port not captured): %v, want it refused by the node", dst, err)
		}
	}
	if n := len(otherFwd.peers()); n != otherBefore+1 {
		t.Errorf("the node's %v got %d connections, want 1", otherAddr, n-otherBefore)
	}
	time.Sleep(100 * time.Millisecond) // an event is written when its response is done
	if evs := mg.events(t); len(evs) != before {
		t.Errorf("modgate audited %d events for traffic the redirect does not capture:\n%s", len(evs)-before, dumpEvents(evs[before:]))
	}

	var st Status
	if err := in(tp.pod, func() (err error) { st, err = GetStatus("eth0", tp.pinRoot); return err }); err != nil {
		t.Fatal(err)
	}
	c := st.Counters
	t.Logf("counters: %v", c)
	if c[Redirected] == 0 || c[Assigned] == 0 || c[Exempt] == 0 || c[NoMatch] == 0 || c[NoSocket] != 0 || c[AssignFailed] != 0 {
		t.Errorf("counters = %v, want redirected, assigned, exempt and no-match, no drops", c)
	}

	// Detached, nothing is captured: the made-up address is refused.
	if err := in(tp.pod, func() error { return Detach("eth0", tp.pinRoot) }); err != nil {
		t.Fatal(err)
	}
	checkClean(t, tp, tp.pod, "eth0", InPod)
	before = len(mg.events(t))
	for _, dst := range []netip.AddrPort{fakeProxyV4, fakeProxyV6} {
		env := testproxy.GoEnv(t, "http://"+hostOf(dst), up.VerifierKey)
		stdout, stderr, err := runGoIn(ctx, t, tp.pod, goCmd, env, "mod", "download", "-json", "example.com/b@v1.0.0")
		if err == nil || !strings.Contains(stdout+stderr, "connection refused") {
			t.Errorf("after detach, go mod download with GOPROXY=http://%s: %v; want connection refused\nstdout: %s\nstderr: %s", hostOf(dst), err, stdout, stderr)
		}
	}
	time.Sleep(100 * time.Millisecond)
	if evs := mg.events(t); len(evs) != before {
		t.Errorf("after detach modgate audited %d new events:\n%s", len(evs)-before, dumpEvents(evs[before:]))
	}

	mg.stop(t)
}

// hostOf is dst's address as a URL host (port 80 implied).
func hostOf(dst netip.AddrPort) string {
	if dst.Addr().Is6() {
		return "[" + dst.Addr().String() + "]"
	}
	return dst.Addr().String()
}

// runGoIn runs the go command in namespace ns, with env, for at most 30s.
func runGoIn(ctx context.Context, t *testing.T, ns, goCmd string, env []string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var outBuf, errBuf bytes.Buffer
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--net=/run/netns/" + ns, goCmd}, args...)...)
	cmd.Dir, cmd.Env = t.TempDir(), env
	cmd.Stdout, cmd.Stderr = &outBuf, &errBuf
	cmd.WaitDelay = 5 * time.Second
	err = cmd.Run()
	if err != nil && ctx.Err() != nil {
		err = fmt.Errorf("%w (%w)", err, ctx.Err())
	}
	return outBuf.String(), errBuf.String(), err
}

// httpGetFrom sends GET path to dst from namespace ns, with socket mark
// mark if not 0, and returns the whole response.
func httpGetFrom(ns string, dst netip.AddrPort, mark uint32, path string) (string, error) {
	c, err := dial(ns, dst, mark, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", path, dst); err != nil {
		return "", err
	}
	b, err := io.ReadAll(c)
	return string(b), err
}

// A forwarder relays TCP connections it accepts on an address in one
// namespace to an address in the same namespace, and records where they
// came from.
type forwarder struct {
	l  net.Listener
	wg sync.WaitGroup

	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]bool
	from   []netip.Addr
}

func startForwarder(t *testing.T, ns string, addr, to netip.AddrPort) *forwarder {
	t.Helper()
	var l net.Listener
	if err := in(ns, func() (err error) { l, err = net.Listen("tcp", addr.String()); return err }); err != nil {
		t.Fatalf("forwarder on %v in %s: %v", addr, ns, err)
	}
	f := &forwarder{l: l, conns: make(map[net.Conn]bool)}
	f.wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			if !f.track(c) {
				return
			}
			f.mu.Lock()
			f.from = append(f.from, addrPort(c.RemoteAddr()).Addr())
			f.mu.Unlock()
			f.wg.Go(func() { f.relay(ns, c, to) })
		}
	})
	t.Cleanup(func() {
		f.mu.Lock()
		f.closed = true
		l.Close()
		for c := range f.conns {
			c.Close()
		}
		f.mu.Unlock()
		f.wg.Wait()
	})
	return f
}

// track records c for the cleanup, or closes it if the cleanup has begun.
func (f *forwarder) track(c net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		c.Close()
		return false
	}
	f.conns[c] = true
	return true
}

func (f *forwarder) untrack(c net.Conn) {
	f.mu.Lock()
	delete(f.conns, c)
	f.mu.Unlock()
	c.Close()
}

func (f *forwarder) relay(ns string, c net.Conn, to netip.AddrPort) {
	defer f.untrack(c)
	u, err := dial(ns, to, 0, 2*time.Second)
	if err != nil || !f.track(u) {
		return
	}
	defer f.untrack(u)
	done := make(chan struct{}, 2)
	go func() { io.Copy(u, c); done <- struct{}{} }()
	go func() { io.Copy(c, u); done <- struct{}{} }()
	<-done // either way ends: close both, which ends the other
	c.Close()
	u.Close()
	<-done
}

func (f *forwarder) peers() []netip.Addr {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.from)
}

// A modgateProc is `modgate serve` running in a namespace.
type modgateProc struct {
	cmd      *exec.Cmd
	audit    string
	done     chan struct{} // closed when its stderr is read to the end
	stopOnce sync.Once

	mu  sync.Mutex
	log strings.Builder
}

// startModgateIn runs `modgate serve` in namespace ns with config, the
// transparent listener on [::]:proxyPort and every other listener off,
// and waits until it is ready. The cleanup stops it.
func startModgateIn(ctx context.Context, t *testing.T, ns, bin, config string) *modgateProc {
	t.Helper()
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "modgate.yaml")
	if err := os.WriteFile(cfgPath, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	m := &modgateProc{audit: filepath.Join(dir, "audit.jsonl"), done: make(chan struct{})}
	// nsenter enters the namespace and execs modgate: its PID is modgate's.
	m.cmd = exec.Command("nsenter", "--net=/run/netns/"+ns, bin, "serve",
		"--config", cfgPath,
		"--transparent", fmt.Sprintf("[::]:%d", proxyPort),
		"--listen", "off", "--admin", "off", "--extproc-listen", "off", "--blob-listen", "off", "--xds-listen", "off",
		"--cache-dir", filepath.Join(dir, "cache"), "--audit", m.audit, "--log-level", "debug")
	m.cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "GOENV=off", "GOFLAGS=", "GOTOOLCHAIN=local"}
	stderr, err := m.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready, listening := make(chan struct{}), make(chan string, 1)
	go func() {
		defer close(m.done)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			m.mu.Lock()
			m.log.WriteString(line + "\n")
			m.mu.Unlock()
			if addr, ok := strings.CutPrefix(fieldAfter(line, "msg=listening listener=transparent "), "addr="); ok {
				select {
				case listening <- addr:
				default:
				}
			}
			if strings.Contains(line, "msg=ready") {
				close(ready)
			}
		}
	}()
	t.Cleanup(func() { m.stop(t) })
	select {
	case <-ready:
	case <-m.done:
		t.Fatalf("modgate exited before it was ready; log:\n%s", m.logText())
	case <-ctx.Done():
		t.Fatalf("modgate not ready: %v; log:\n%s", ctx.Err(), m.logText())
	}
	select {
	case addr := <-listening:
		if want := fmt.Sprintf("[::]:%d", proxyPort); addr != want {
			t.Errorf("transparent listener on %s, want %s", addr, want)
		}
	default:
		t.Errorf("no transparent listener in the log:\n%s", m.logText())
	}
	return m
}

// fieldAfter returns the space-separated field after prefix in line, or "".
func fieldAfter(line, prefix string) string {
	_, rest, ok := strings.Cut(line, prefix)
	if !ok {
		return ""
	}
	f, _, _ := strings.Cut(rest, " ")
	return f
}

// stop sends SIGTERM to modgate and waits for it to exit cleanly, killing
// it after 15s. Only the first call does anything.
func (m *modgateProc) stop(t *testing.T) {
	m.stopOnce.Do(func() {
		if err := m.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Errorf("SIGTERM modgate (pid %d): %v", m.cmd.Process.Pid, err)
		}
		exited := make(chan error, 1)
		go func() { <-m.done; exited <- m.cmd.Wait() }()
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("modgate exited with %v after SIGTERM; log:\n%s", err, m.logText())
			}
		case <-time.After(15 * time.Second):
			m.cmd.Process.Kill()
			<-exited
			t.Errorf("modgate did not stop within 15s of SIGTERM; log:\n%s", m.logText())
		}
	})
}

func (m *modgateProc) logText() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.log.String()
}

// events reads the audit file's complete lines.
func (m *modgateProc) events(t *testing.T) []audit.Event {
	t.Helper()
	b, err := os.ReadFile(m.audit)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var evs []audit.Event
	for len(b) > 0 {
		line, rest, ok := bytes.Cut(b, []byte("\n"))
		if !ok {
			break // being written
		}
		b = rest
		var e audit.Event
		if err := json.Unmarshal(line, &e); err != nil {
			t.Fatalf("audit line %q: %v", line, err)
		}
		evs = append(evs, e)
	}
	return evs
}

// waitEvent waits up to 5s for an event that match accepts, and returns
// the events then.
func (m *modgateProc) waitEvent(t *testing.T, match func(audit.Event) bool) []audit.Event {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		evs := m.events(t)
		if slices.ContainsFunc(evs, match) || time.Now().After(deadline) {
			return evs
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func dumpEvents(evs []audit.Event) string {
	var b strings.Builder
	for _, e := range evs {
		j, _ := json.Marshal(e)
		b.Write(j)
		b.WriteByte('\n')
	}
	return b.String()
}
