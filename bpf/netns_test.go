//go:build linux

package bpf

// The namespace tests attach the redirect for real, in two throwaway
// network namespaces joined by a veth pair:
//
//	node: <veth>  192.0.2.1/24  2001:db8:2::1/64
//	pod:  eth0    192.0.2.2/24  2001:db8:2::2/64
//	      routes to 203.0.113.0/24 and 2001:db8:1::/48 via the node
//
// The node has no route beyond the veth and forwarding is off in both,
// so a connection the redirect misses dies at the node and nothing
// leaves the machine. Only documentation prefixes are used. Pins go to a
// private bpffs mounted for the test (unless /sys/fs/bpf is one).
//
// Namespaces are entered with setns on a locked OS thread (see in), never
// `ip netns exec`, which remounts /sys and would hide the pins. The
// tests need root and iproute2's ip; without them they skip.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/modgate/modgate/internal/leakcheck"
	"github.com/modgate/modgate/internal/netns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

const (
	proxyPort  = 15001
	exemptMark = 0x539
	routeMark  = 0x4000
	routeTable = 100
	// noCapture is how long a connection that must not be captured is
	// given: a captured one is accepted in well under a millisecond.
	noCapture = 250 * time.Millisecond
)

var (
	capturedV4 = netip.MustParseAddrPort("203.0.113.10:443")
	capturedV6 = netip.MustParseAddrPort("[2001:db8:1::10]:443")
	captureSet = []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("2001:db8:1::/48")}
)

// testName prefixes the names of everything the tests create.
var testName = fmt.Sprintf("mgt%d", os.Getpid())

// helperEnv makes the test binary, run by a test under nsenter, attach or
// detach and exit: the "other process" of the restart test.
const helperEnv = "MODGATE_NETNS_TEST_HELPER"

func TestMain(m *testing.M) {
	if op := os.Getenv(helperEnv); op != "" {
		os.Exit(helper(op))
	}
	_, err := os.Stat("/run/netns")
	hadRunNetns := err == nil
	code := leakcheck.Run(m)
	if leaks := leftovers(hadRunNetns); len(leaks) > 0 {
		fmt.Fprintf(os.Stderr, "FAIL: the namespace tests left behind:\n\t%s\n", strings.Join(leaks, "\n\t"))
		code = 1
	}
	os.Exit(code)
}

// helper attaches or detaches as the environment says, in the process's
// network namespace.
func helper(op string) int {
	iface, pinRoot := os.Getenv("IFACE"), os.Getenv("PIN_ROOT")
	var err error
	switch op {
	case "attach":
		err = Attach(AttachConfig{
			Iface:    iface,
			Prefixes: captureSet,
			Ports:    []uint16{443},
			Settings: Settings{ProxyPort: proxyPort, ExemptMark: exemptMark, ExemptMask: 0xfff, RouteMark: routeMark},
			PinRoot:  pinRoot,
		})
	case "detach":
		err = Detach(iface, pinRoot)
	default:
		err = fmt.Errorf("unknown helper operation %q", op)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// leftovers lists what the tests created and did not remove: namespaces,
// links in this namespace, mounts. It removes /run/netns if ip created it
// for the tests and it is empty.
func leftovers(hadRunNetns bool) []string {
	if _, err := exec.LookPath("ip"); err != nil {
		return nil
	}
	var out []string
	ns, _ := exec.Command("ip", "netns", "list").Output()
	links, _ := exec.Command("ip", "-o", "link", "show").Output()
	for _, l := range strings.Split(string(ns)+string(links), "\n") {
		if strings.Contains(l, testName) {
			out = append(out, l)
		}
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(mounts), "\n") {
		if strings.Contains(l, testName) {
			out = append(out, "mount: "+l)
		}
	}
	if !hadRunNetns && len(strings.TrimSpace(string(ns))) == 0 {
		unix.Unmount("/run/netns", unix.MNT_DETACH)
		os.Remove("/run/netns")
	}
	return out
}

// in runs f in network namespace ns: netns.Do.
func in(ns string, f func() error) error { return netns.Do(ns, f) }

func requireNetns(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("namespace tests need root (CAP_NET_ADMIN, CAP_BPF, CAP_SYS_ADMIN); CI runs them as root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("namespace tests need iproute2's ip")
	}
}

// ip runs ip with args, failing the test if it fails.
func ip(t testing.TB, args ...string) {
	t.Helper()
	if err := runIP(args...); err != nil {
		t.Fatal(err)
	}
}

func runIP(args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// A topo is the two namespaces, the veth pair and the pin root.
type topo struct {
	node, pod string // namespace names
	veth      string // the node's end; the pod's is eth0
	pinRoot   string
}

var topoSeq atomic.Int32

func newTopo(t *testing.T) *topo {
	t.Helper()
	requireNetns(t)
	n := topoSeq.Add(1)
	tp := &topo{
		node:    fmt.Sprintf("%s-%d-node", testName, n),
		pod:     fmt.Sprintf("%s-%d-pod", testName, n),
		veth:    fmt.Sprintf("%sv%d", testName, n),
		pinRoot: filepath.Join(bpffs(t), "modgate"),
	}
	for _, ns := range []string{tp.node, tp.pod} {
		ip(t, "netns", "add", ns)
		t.Cleanup(func() {
			if err := runIP("netns", "del", ns); err != nil {
				t.Error(err)
			}
		})
	}
	tp.addVeth(t)
	for _, ns := range []string{tp.node, tp.pod} {
		err := in(ns, func() error {
			for _, p := range []string{"/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"} {
				if err := os.WriteFile(p, []byte("0"), 0); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatalf("forwarding off in %s: %v", ns, err)
		}
	}
	return tp
}

// addVeth adds the veth pair, its addresses and the pod's routes.
func (tp *topo) addVeth(t *testing.T) {
	t.Helper()
	ip(t, "-n", tp.node, "link", "add", tp.veth, "type", "veth", "peer", "name", "eth0", "netns", tp.pod)
	for _, c := range [][]string{
		{"-n", tp.node, "addr", "add", "192.0.2.1/24", "dev", tp.veth},
		{"-n", tp.node, "addr", "add", "2001:db8:2::1/64", "dev", tp.veth, "nodad"},
		{"-n", tp.node, "link", "set", tp.veth, "up"},
		{"-n", tp.node, "link", "set", "lo", "up"},
		{"-n", tp.pod, "addr", "add", "192.0.2.2/24", "dev", "eth0"},
		{"-n", tp.pod, "addr", "add", "2001:db8:2::2/64", "dev", "eth0", "nodad"},
		{"-n", tp.pod, "link", "set", "eth0", "up"},
		{"-n", tp.pod, "link", "set", "lo", "up"},
		{"-n", tp.pod, "route", "add", "203.0.113.0/24", "via", "192.0.2.1"},
		{"-n", tp.pod, "route", "add", "2001:db8:1::/48", "via", "2001:db8:2::1"},
	} {
		ip(t, c...)
	}
}

// bpffs returns a bpffs directory for the test's pins: a private mount,
// unless /sys/fs/bpf is a bpffs. Its cleanup fails the test if pins are
// left.
func bpffs(t *testing.T) string {
	t.Helper()
	var st unix.Statfs_t
	if unix.Statfs("/sys/fs/bpf", &st) == nil && st.Type == unix.BPF_FS_MAGIC {
		dir := filepath.Join("/sys/fs/bpf", testName+"-"+strconv.Itoa(int(topoSeq.Load())))
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			checkNoPins(t, dir)
			os.RemoveAll(dir)
		})
		return dir
	}
	dir, err := os.MkdirTemp("", testName+"-bpffs-")
	if err != nil {
		t.Fatal(err)
	}
	if err := MountBPFFS(dir); err != nil {
		os.Remove(dir)
		t.Fatal(err)
	}
	t.Cleanup(func() {
		checkNoPins(t, dir)
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount bpffs: %v", err)
		}
		os.Remove(dir)
	})
	return dir
}

func checkNoPins(t *testing.T, dir string) {
	t.Helper()
	var left []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		// bpffs's own maps.debug and progs.debug sit at its root.
		if err == nil && !d.IsDir() && filepath.Dir(p) != dir {
			left = append(left, p)
		}
		return nil
	})
	if len(left) > 0 {
		t.Errorf("pins left: %v", left)
	}
}

// A proxy is a transparent listener on the proxy port in one namespace.
type proxy struct {
	l     net.Listener
	conns chan net.Conn
}

// transparent sets IP_TRANSPARENT and IPV6_TRANSPARENT, which the
// redirect's policy routing needs for the listener's replies.
func transparent(network, address string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_TRANSPARENT, 1)
		if serr == nil {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_TRANSPARENT, 1)
		}
	})
	return errors.Join(err, serr)
}

func startProxy(t *testing.T, ns string) *proxy {
	t.Helper()
	var l net.Listener
	err := in(ns, func() (err error) {
		lc := net.ListenConfig{Control: transparent}
		l, err = lc.Listen(context.Background(), "tcp", fmt.Sprintf(":%d", proxyPort)) // dual-stack
		return err
	})
	if err != nil {
		t.Fatalf("proxy listener in %s: %v", ns, err)
	}
	p := &proxy{l: l, conns: make(chan net.Conn, 16)}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			select {
			case p.conns <- c:
			case <-stop:
				c.Close()
				return
			}
		}
	}()
	t.Cleanup(func() {
		close(stop)
		l.Close()
		<-done
		for {
			select {
			case c := <-p.conns:
				c.Close()
			default:
				return
			}
		}
	})
	return p
}

// accepted waits for the proxy's next connection.
func (p *proxy) accepted(t *testing.T) net.Conn {
	t.Helper()
	select {
	case c := <-p.conns:
		t.Cleanup(func() { c.Close() })
		return c
	case <-time.After(2 * time.Second):
		t.Fatal("the proxy accepted no connection")
		return nil
	}
}

// none checks that the proxy has accepted nothing.
func (p *proxy) none(t *testing.T, what string) {
	t.Helper()
	select {
	case c := <-p.conns:
		t.Errorf("%s: the proxy accepted a connection from %v to %v", what, c.RemoteAddr(), c.LocalAddr())
		c.Close()
	case <-time.After(20 * time.Millisecond):
	}
}

// dial connects from namespace ns to dst within timeout, with socket mark
// mark if it is not 0. Only the socket is made in ns (a socket stays in
// the namespace it was made in); the connect waits outside it.
func dial(ns string, dst netip.AddrPort, mark uint32, timeout time.Duration) (net.Conn, error) {
	family, sa := unix.AF_INET6, unix.Sockaddr(&unix.SockaddrInet6{Port: int(dst.Port()), Addr: dst.Addr().As16()})
	if dst.Addr().Is4() {
		family, sa = unix.AF_INET, &unix.SockaddrInet4{Port: int(dst.Port()), Addr: dst.Addr().As4()}
	}
	var fd int
	err := in(ns, func() (err error) {
		fd, err = unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil || mark == 0 {
			return err
		}
		if err = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, int(mark)); err != nil {
			unix.Close(fd)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "dial "+dst.String()) // non-blocking: pollable
	defer f.Close()
	if err := unix.Connect(fd, sa); err != nil && err != unix.EINPROGRESS {
		return nil, err
	}
	f.SetWriteDeadline(time.Now().Add(timeout))
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cerr error
	err = rc.Write(func(fd uintptr) bool {
		n, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR)
		switch {
		case err != nil:
			cerr = err
		case n != 0:
			cerr = syscall.Errno(n)
		default:
			if _, err := unix.Getpeername(int(fd)); err != nil {
				return false // still connecting
			}
		}
		return true
	})
	if err = errors.Join(err, cerr); err != nil {
		return nil, fmt.Errorf("dial %v: %w", dst, err)
	}
	return net.FileConn(f)
}

func addrPort(a net.Addr) netip.AddrPort {
	ap := a.(*net.TCPAddr).AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// checkCaptured dials dst from the pod and checks the proxy gets the
// connection with dst as its local address, and that data flows both ways.
func checkCaptured(t *testing.T, tp *topo, p *proxy, dst netip.AddrPort) {
	t.Helper()
	c, err := dial(tp.pod, dst, 0, 2*time.Second)
	if err != nil {
		t.Fatalf("dial %v (captured): %v", dst, err)
	}
	defer c.Close()
	s := p.accepted(t)
	if got := addrPort(s.LocalAddr()); got != dst {
		t.Errorf("accepted conn's LocalAddr() = %v, want the original destination %v", got, dst)
	}
	if got, want := addrPort(s.RemoteAddr()), addrPort(c.LocalAddr()); got != want {
		t.Errorf("accepted conn's RemoteAddr() = %v, want the client's %v", got, want)
	}
	deadline := time.Now().Add(2 * time.Second)
	c.SetDeadline(deadline)
	s.SetDeadline(deadline)
	if _, err := io.WriteString(c, "ping"); err != nil {
		t.Fatalf("client write: %v", err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(s, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("proxy read = %q, %v; want ping", buf, err)
	}
	if _, err := io.WriteString(s, "pong"); err != nil {
		t.Fatalf("proxy write: %v", err)
	}
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "pong" {
		t.Fatalf("client read = %q, %v; want pong", buf, err)
	}
}

// checkNotCaptured dials dst from the pod and checks that the proxy does
// not get the connection; with nowhere else to go it fails.
func checkNotCaptured(t *testing.T, tp *topo, p *proxy, dst netip.AddrPort, mark uint32, what string) {
	t.Helper()
	c, err := dial(tp.pod, dst, mark, noCapture)
	if err == nil {
		c.Close()
		t.Errorf("%s: dial %v succeeded, want it to fail (nothing routes there)", what, dst)
	} else {
		t.Logf("%s: %v", what, err)
	}
	p.none(t, what)
}

// attach attaches in namespace ns, skipping if the kernel lacks a
// feature, and detaches in the test's cleanup.
func attach(t *testing.T, ns string, cfg AttachConfig) {
	t.Helper()
	err := in(ns, func() error { return Attach(cfg) })
	if errors.Is(err, ebpf.ErrNotSupported) {
		t.Skipf("kernel lacks a feature: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := in(ns, func() error { return Detach(cfg.Iface, cfg.PinRoot) }); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
}

// shapeSetup is where a shape attaches and where its proxy listens.
func shapeSetup(tp *topo, shape Shape) (ns, iface string) {
	if shape == InPod {
		return tp.pod, "eth0"
	}
	return tp.node, tp.veth
}

func TestRedirectInNamespaces(t *testing.T) {
	tp := newTopo(t)
	for _, shape := range []Shape{InPod, NodeLevel} {
		for _, mode := range []string{"tcx", "tc"} {
			t.Run(fmt.Sprintf("%s/%s", shape, mode), func(t *testing.T) {
				ns, iface := shapeSetup(tp, shape)
				p := startProxy(t, ns)
				cfg := AttachConfig{
					Iface:    iface,
					Shape:    shape,
					Prefixes: captureSet,
					Ports:    []uint16{443},
					Settings: Settings{ProxyPort: proxyPort, ExemptMark: exemptMark, ExemptMask: 0xfff, RouteMark: routeMark},
					PinRoot:  tp.pinRoot,
					forceTC:  mode == "tc",
				}
				attach(t, ns, cfg)

				var st Status
				if err := in(ns, func() (err error) { st, err = GetStatus(iface, tp.pinRoot); return err }); err != nil {
					t.Fatal(err)
				}
				if !st.Attached || st.Stale || st.Mode != mode || st.Shape != shape {
					t.Errorf("GetStatus = attached %v, stale %v, mode %q, shape %v; want attached, %q, %v", st.Attached, st.Stale, st.Mode, st.Shape, mode, shape)
				}
				if !slices.Equal(st.Prefixes, captureSet) || !slices.Equal(st.Ports, []uint16{443}) || st.Settings.ProxyPort != proxyPort || st.Settings.RouteMark != routeMark || st.RouteTable != routeTable {
					t.Errorf("GetStatus = %+v, want the attached configuration", st)
				}

				for _, dst := range []netip.AddrPort{capturedV4, capturedV6} {
					name := "v4"
					if dst.Addr().Is6() {
						name = "v6"
					}
					t.Run(name, func(t *testing.T) {
						checkCaptured(t, tp, p, dst)
						checkCaptured(t, tp, p, dst) // again: a second connection, new source port
						checkNotCaptured(t, tp, p, netip.AddrPortFrom(dst.Addr(), 8443), 0, "other port")
						if shape == InPod {
							checkNotCaptured(t, tp, p, dst, exemptMark, "exempt mark")
						} else {
							// A mark does not cross from the pod's namespace
							// to the node's (the veth scrubs it): at the
							// host-side veth, the pod's marked traffic is
							// captured like any other. The node-level
							// proxy's own upstream traffic never passes
							// there.
							checkCaptured(t, tp, p, dst)
						}
					})
				}

				var c map[Verdict]uint64
				if err := in(ns, func() (err error) { st, err = GetStatus(iface, tp.pinRoot); return err }); err != nil {
					t.Fatal(err)
				}
				c = st.Counters
				if c[Assigned] == 0 || c[NoMatch] == 0 || c[NoSocket] != 0 || c[AssignFailed] != 0 {
					t.Errorf("counters = %v, want assigned and no-match, no drops", c)
				}
				if shape == InPod && (c[Redirected] == 0 || c[Exempt] == 0) {
					t.Errorf("counters = %v, want redirected and exempt", c)
				}
				t.Logf("counters: %v", c)

				if err := in(ns, func() error { return Detach(iface, tp.pinRoot) }); err != nil {
					t.Fatal(err)
				}
				checkClean(t, tp, ns, iface, shape)
				for _, dst := range []netip.AddrPort{capturedV4, capturedV6} {
					checkNotCaptured(t, tp, p, dst, 0, "after detach")
				}
				// Detaching again is no error.
				if err := in(ns, func() error { return Detach(iface, tp.pinRoot) }); err != nil {
					t.Errorf("second Detach: %v", err)
				}
			})
		}
	}
}

// checkClean checks that nothing of an attachment is left in ns: no
// programs on the devices, no clsact qdisc, no rules or routes for the
// table, lo's accept_local back to 0, no pins.
func checkClean(t *testing.T, tp *topo, ns, iface string, shape Shape) {
	t.Helper()
	var problems []string
	err := in(ns, func() error {
		for _, name := range []string{iface, "lo"} {
			l, err := netlink.LinkByName(name)
			if err != nil {
				return err
			}
			for _, at := range []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress} {
				r, err := link.QueryPrograms(link.QueryOptions{Target: l.Attrs().Index, Attach: at})
				if err != nil {
					return err
				}
				if len(r.Programs) > 0 {
					problems = append(problems, fmt.Sprintf("%s: %d TCX programs (%v)", name, len(r.Programs), at))
				}
			}
			qs, err := netlink.QdiscList(l)
			if err != nil {
				return err
			}
			for _, q := range qs {
				if q.Type() == "clsact" {
					problems = append(problems, name+": clsact qdisc left")
				}
			}
		}
		for _, f := range families {
			rules, err := netlink.RuleListFiltered(f, &netlink.Rule{Table: routeTable}, netlink.RT_FILTER_TABLE)
			if err != nil {
				return err
			}
			for _, r := range rules {
				problems = append(problems, "rule left: "+r.String())
			}
			routes, err := netlink.RouteListFiltered(f, &netlink.Route{Table: routeTable}, netlink.RT_FILTER_TABLE)
			if err != nil {
				return err
			}
			for _, r := range routes {
				problems = append(problems, "route left: "+r.String())
			}
		}
		b, err := os.ReadFile(acceptLocalPath)
		if err != nil {
			return err
		}
		if strings.TrimSpace(string(b)) != "0" {
			problems = append(problems, "lo's accept_local left at "+strings.TrimSpace(string(b)))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("check clean: %v", err)
	}
	if _, err := os.Stat(filepath.Join(tp.pinRoot, iface)); !errors.Is(err, os.ErrNotExist) {
		problems = append(problems, "pin directory left")
	}
	for _, p := range problems {
		t.Errorf("after Detach (%s): %s", shape, p)
	}
}

// TestRedirectSurvivesRestart attaches from one process, which exits;
// capture goes on, and this process reads the status from the pins,
// attaches again (an update), and a third process detaches.
func TestRedirectSurvivesRestart(t *testing.T) {
	tp := newTopo(t)
	if _, err := exec.LookPath("nsenter"); err != nil {
		t.Skip("needs nsenter (util-linux)")
	}
	p := startProxy(t, tp.pod)
	run := func(op string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, "nsenter", "--net=/run/netns/"+tp.pod, os.Args[0])
		cmd.Env = append(os.Environ(), helperEnv+"="+op, "IFACE=eth0", "PIN_ROOT="+tp.pinRoot)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s in another process: %v: %s", op, err, out)
		}
	}
	run("attach")
	t.Cleanup(func() { in(tp.pod, func() error { return Detach("eth0", tp.pinRoot) }) })

	// The attaching process is gone; its pinned links and maps are not.
	checkCaptured(t, tp, p, capturedV4)
	var st Status
	if err := in(tp.pod, func() (err error) { st, err = GetStatus("eth0", tp.pinRoot); return err }); err != nil {
		t.Fatal(err)
	}
	if !st.Attached || st.Counters[Assigned] == 0 {
		t.Fatalf("GetStatus after the attaching process exited = %+v, want attached with assigned packets", st)
	}

	// Attach again with port 80 added: the same attachment, updated.
	cfg := AttachConfig{
		Iface:    "eth0",
		Prefixes: captureSet,
		Ports:    []uint16{80, 443},
		Settings: Settings{ProxyPort: proxyPort, ExemptMark: exemptMark, ExemptMask: 0xfff, RouteMark: routeMark},
		PinRoot:  tp.pinRoot,
	}
	if err := in(tp.pod, func() error { return Attach(cfg) }); err != nil {
		t.Fatal(err)
	}
	var st2 Status
	if err := in(tp.pod, func() (err error) { st2, err = GetStatus("eth0", tp.pinRoot); return err }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(st2.Ports, []uint16{80, 443}) || st2.Counters[Assigned] < st.Counters[Assigned] {
		t.Errorf("after attaching again: ports %v, assigned %d; want [80 443] and the counters kept (≥ %d)", st2.Ports, st2.Counters[Assigned], st.Counters[Assigned])
	}
	checkCaptured(t, tp, p, capturedV6)
	checkCaptured(t, tp, p, netip.AddrPortFrom(capturedV4.Addr(), 80))

	// A new route mark moves the policy rule (checkClean below finds none
	// left for either mark).
	cfg.Settings.RouteMark = 0x8000
	if err := in(tp.pod, func() error { return Attach(cfg) }); err != nil {
		t.Fatal(err)
	}
	checkCaptured(t, tp, p, capturedV4)

	run("detach")
	checkClean(t, tp, tp.pod, "eth0", InPod)
	checkNotCaptured(t, tp, p, capturedV4, 0, "after detach by another process")
}

// TestRedirectReplacesStale recreates the interface under an attachment:
// the status says stale, and attaching again replaces it.
func TestRedirectReplacesStale(t *testing.T) {
	tp := newTopo(t)
	p := startProxy(t, tp.node)
	for _, mode := range []string{"tcx", "tc"} {
		t.Run(mode, func(t *testing.T) {
			cfg := AttachConfig{
				Iface:    tp.veth,
				Shape:    NodeLevel,
				Prefixes: captureSet,
				Ports:    []uint16{443},
				PinRoot:  tp.pinRoot,
				forceTC:  mode == "tc",
			}
			attach(t, tp.node, cfg)
			checkCaptured(t, tp, p, capturedV4)
			ip(t, "-n", tp.node, "link", "del", tp.veth)
			tp.addVeth(t)

			var st Status
			if err := in(tp.node, func() (err error) { st, err = GetStatus(tp.veth, tp.pinRoot); return err }); err != nil {
				t.Fatal(err)
			}
			if st.Attached || !st.Stale || st.Mode != mode {
				t.Errorf("GetStatus after the veth was recreated = attached %v, stale %v, mode %q; want stale %s", st.Attached, st.Stale, st.Mode, mode)
			}
			if err := in(tp.node, func() error { return Attach(cfg) }); err != nil {
				t.Fatal(err)
			}
			if err := in(tp.node, func() (err error) { st, err = GetStatus(tp.veth, tp.pinRoot); return err }); err != nil {
				t.Fatal(err)
			}
			if !st.Attached || st.Stale {
				t.Errorf("GetStatus after attaching again = attached %v, stale %v; want attached", st.Attached, st.Stale)
			}
			checkCaptured(t, tp, p, capturedV6)
			if err := in(tp.node, func() error { return Detach(tp.veth, tp.pinRoot) }); err != nil {
				t.Fatal(err)
			}
			checkClean(t, tp, tp.node, tp.veth, NodeLevel)
		})
	}
}

// TestConnectionSetupOverhead times connection setup through the
// redirect against connecting to the proxy's own address, for the
// record (it asserts nothing about speed).
func TestConnectionSetupOverhead(t *testing.T) {
	tp := newTopo(t)
	const n = 200
	for _, shape := range []Shape{InPod, NodeLevel} {
		t.Run(shape.String(), func(t *testing.T) {
			ns, iface := shapeSetup(tp, shape)
			p := startProxy(t, ns)
			attach(t, ns, AttachConfig{
				Iface:    iface,
				Shape:    shape,
				Prefixes: captureSet,
				Ports:    []uint16{443},
				Settings: Settings{ProxyPort: proxyPort, ExemptMark: exemptMark, ExemptMask: 0xfff, RouteMark: routeMark},
				PinRoot:  tp.pinRoot,
			})
			own4, own6 := netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("2001:db8:2::2")
			if shape == NodeLevel {
				own4, own6 = netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8:2::1")
			}
			for _, c := range []struct{ captured, direct netip.AddrPort }{
				{capturedV4, netip.AddrPortFrom(own4, proxyPort)},
				{capturedV6, netip.AddrPortFrom(own6, proxyPort)},
			} {
				captured := timeDials(t, tp, p, c.captured, n)
				direct := timeDials(t, tp, p, c.direct, n)
				t.Logf("%s: %d connections: captured %v (%v each), direct to %v %v (%v each)",
					c.captured, n, captured, captured/n, c.direct, direct, direct/n)
			}
		})
	}
}

// timeDials times n connections to dst, each until the proxy accepts it.
func timeDials(t *testing.T, tp *topo, p *proxy, dst netip.AddrPort, n int) time.Duration {
	t.Helper()
	start := time.Now()
	for range n {
		c, err := dial(tp.pod, dst, 0, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		select {
		case s := <-p.conns:
			s.Close()
		case <-time.After(2 * time.Second):
			t.Fatalf("dial %v: the proxy accepted nothing", dst)
		}
		c.Close()
	}
	return time.Since(start)
}

// TestNetnsIdentity checks that currentNetns follows the thread.
func TestNetnsIdentity(t *testing.T) {
	tp := newTopo(t)
	here, err := currentNetns()
	if err != nil {
		t.Fatal(err)
	}
	var there netnsID
	if err := in(tp.pod, func() (err error) { there, err = currentNetns(); return err }); err != nil {
		t.Fatal(err)
	}
	if here == there {
		t.Errorf("currentNetns() = %v in the pod namespace too", here)
	}
}
