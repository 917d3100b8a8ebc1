package integration

import (
	"net"
	"net/http"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/modgate/modgate/audit"
)

// TestTransparentListener runs modgate serve --transparent (IP_TRANSPARENT
// needs root) and checks what it does with connections without the eBPF
// redirect in front: plain HTTP is served with the destination it arrived
// at audited as the original destination, and a TLS handshake is refused
// and audited. The namespace tests in bpf/ check the real redirect.
func TestTransparentListener(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the transparent listener needs root (CAP_NET_ADMIN); CI runs as root")
	}
	public, private := upstreams(t)
	g := startModgate(t, gatewayConfig(public, private), "--transparent", "127.0.0.1:0")
	if g.Transparent == "" {
		t.Fatalf("no transparent listener in the log:\n%s", g.logText())
	}
	resp, err := http.Get("http://" + g.Transparent + "/example.com/a/@v/list")
	if err != nil {
		t.Fatal(err)
	}
	body := readAll(t, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || body == "" {
		t.Errorf("GET through the transparent listener = %s %q", resp.Status, body)
	}

	c, err := net.Dial("tcp", g.Transparent)
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte{0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0x00})
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Error("a TLS handshake on the transparent listener got an answer, want the connection closed")
	}
	c.Close()

	evs := g.waitEvents(t, 2)
	if !slices.ContainsFunc(evs, func(e audit.Event) bool {
		return e.Modgate.Kind == "list" && e.Modgate.OriginalDestination == g.Transparent
	}) {
		t.Errorf("no request audited with original_destination %s: %+v", g.Transparent, evs)
	}
	if !slices.ContainsFunc(evs, func(e audit.Event) bool {
		return e.Event.Action == "transparent-tls-refused" && e.Modgate.OriginalDestination == g.Transparent
	}) {
		t.Errorf("the refused TLS connection was not audited: %+v", evs)
	}
}
