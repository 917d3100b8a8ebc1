//go:build linux

package integration

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modgate/modgate/audit"
	"github.com/modgate/modgate/internal/netns"
)

// TestTransparentListener runs modgate serve --transparent (IP_TRANSPARENT
// needs root) and checks what it does with connections without the eBPF
// redirect in front: plain HTTP is served with the destination it arrived
// at audited as the original destination, and a TLS handshake is refused
// and audited. The namespace tests in bpf/ check the real redirect.
//
// The transparent listener must be on the wildcard address, so modgate
// and its upstreams run in a network namespace of their own, with only
// loopback: nothing outside the test can reach the listener.
func TestTransparentListener(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the transparent listener needs root (CAP_NET_ADMIN), and the test a network namespace; CI runs as root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2's ip for a network namespace")
	}
	ns := netnsFor(t)
	var g *gatewayProc
	err := inNetns(ns, func() error {
		// The listeners are made, and modgate forked, on this thread:
		// both belong to the namespace.
		public, private := upstreams(t)
		g = startModgate(t, gatewayConfig(public, private), "--transparent", "0.0.0.0:0")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if g.Transparent == "" {
		t.Fatalf("no transparent listener in the log:\n%s", g.logText())
	}
	listening, err := netip.ParseAddrPort(g.Transparent)
	if err != nil || !listening.Addr().IsUnspecified() {
		t.Fatalf("transparent listener on %q (%v), want the wildcard address", g.Transparent, err)
	}
	client := &http.Client{Transport: &http.Transport{DialContext: dialIn(ns), DisableKeepAlives: true}}

	var dsts []string
	for _, a := range []string{"127.0.0.1", "::1"} {
		dst := netip.AddrPortFrom(netip.MustParseAddr(a), listening.Port()).String()
		dsts = append(dsts, dst)
		resp, err := client.Get("http://" + dst + "/example.com/a/@v/list")
		if err != nil {
			t.Fatal(err)
		}
		body := readAll(t, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || body == "" {
			t.Errorf("GET through the transparent listener at %s = %s %q", dst, resp.Status, body)
		}
	}

	c, err := dialIn(ns)(t.Context(), "tcp", dsts[0])
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte{0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0x00})
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Error("a TLS handshake on the transparent listener got an answer, want the connection closed")
	}
	c.Close()

	evs := g.waitEvents(t, 3)
	for _, dst := range dsts {
		if !slices.ContainsFunc(evs, func(e audit.Event) bool {
			return e.Modgate.Kind == "list" && e.Modgate.OriginalDestination == dst
		}) {
			t.Errorf("no request audited with original_destination %s: %+v", dst, evs)
		}
	}
	if !slices.ContainsFunc(evs, func(e audit.Event) bool {
		return e.Event.Action == "transparent-tls-refused" && e.Modgate.OriginalDestination == dsts[0]
	}) {
		t.Errorf("the refused TLS connection was not audited: %+v", evs)
	}
}

// netnsFor makes a network namespace with only loopback, up, for the
// test, and removes it in the cleanup (after everything the test started
// there has stopped: cleanups run last first).
func netnsFor(t *testing.T) string {
	t.Helper()
	ns := fmt.Sprintf("mgint%d", os.Getpid())
	ipCmd(t, "netns", "add", ns)
	t.Cleanup(func() { ipCmd(t, "netns", "del", ns) })
	ipCmd(t, "-n", ns, "link", "set", "lo", "up")
	return ns
}

func ipCmd(t *testing.T, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// dialIn returns a dial function whose sockets are made in network
// namespace ns (a socket stays in the namespace it was made in).
func dialIn(ns string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (c net.Conn, err error) {
		err = inNetns(ns, func() (err error) {
			c, err = new(net.Dialer).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
}

// inNetns runs f in network namespace ns: netns.Do.
func inNetns(ns string, f func() error) error { return netns.Do(ns, f) }
