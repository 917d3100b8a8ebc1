//go:build linux

package bpf

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"testing"

	"github.com/cilium/ebpf"
)

// TC return codes.
const (
	actOK       = 0
	actShot     = 2
	actRedirect = 7
	actUnspec   = 0xffffffff // -1
)

func load(t testing.TB) *Program {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("loading eBPF programs needs root (CI runs as root)")
	}
	p, err := Load()
	if errors.Is(err, ebpf.ErrNotSupported) {
		t.Skipf("kernel lacks a feature: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// packet builds an Ethernet frame with a TCP SYN from src to dst, with
// valid checksums.
func packet(src, dst netip.AddrPort) []byte {
	tcp := make([]byte, 20)
	binary.BigEndian.PutUint16(tcp[0:], src.Port())
	binary.BigEndian.PutUint16(tcp[2:], dst.Port())
	binary.BigEndian.PutUint32(tcp[4:], 1)
	tcp[12] = 5 << 4
	tcp[13] = 0x02 // SYN
	binary.BigEndian.PutUint16(tcp[14:], 65535)

	eth := make([]byte, 14)
	copy(eth[0:6], []byte{2, 0, 0, 0, 0, 1})
	copy(eth[6:12], []byte{2, 0, 0, 0, 0, 2})
	var ip []byte
	if src.Addr().Is4() {
		binary.BigEndian.PutUint16(eth[12:], 0x0800)
		ip = make([]byte, 20)
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(20+len(tcp)))
		ip[8], ip[9] = 64, 6
		s, d := src.Addr().As4(), dst.Addr().As4()
		copy(ip[12:], s[:])
		copy(ip[16:], d[:])
		binary.BigEndian.PutUint16(ip[10:], checksum(ip, 0))
		pseudo := append(append(append([]byte{}, s[:]...), d[:]...), 0, 6, 0, byte(len(tcp)))
		binary.BigEndian.PutUint16(tcp[16:], checksum(tcp, sum(pseudo)))
	} else {
		binary.BigEndian.PutUint16(eth[12:], 0x86dd)
		ip = make([]byte, 40)
		ip[0] = 0x60
		binary.BigEndian.PutUint16(ip[4:], uint16(len(tcp)))
		ip[6], ip[7] = 6, 64
		s, d := src.Addr().As16(), dst.Addr().As16()
		copy(ip[8:], s[:])
		copy(ip[24:], d[:])
		pseudo := append(append(append([]byte{}, s[:]...), d[:]...), 0, 0, 0, byte(len(tcp)), 0, 0, 0, 6)
		binary.BigEndian.PutUint16(tcp[16:], checksum(tcp, sum(pseudo)))
	}
	return append(append(eth, ip...), tcp...)
}

func sum(b []byte) uint32 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	return s
}

func checksum(b []byte, initial uint32) uint16 {
	s := initial + sum(b)
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

// run runs prog on pkt with skb->mark set to mark, returning its verdict.
func run(t *testing.T, prog *ebpf.Program, pkt []byte, mark uint32) uint32 {
	t.Helper()
	// The start of struct __sk_buff: len, pkt_type, mark.
	ctx := make([]byte, 12)
	binary.LittleEndian.PutUint32(ctx[8:], mark)
	ret, err := prog.Run(&ebpf.RunOptions{Data: pkt, Context: ctx})
	if err != nil {
		t.Fatalf("prog.Run: %v", err)
	}
	return ret
}

const testMark, testMask = 0x539, 0xfff

func configured(t *testing.T) *Program {
	t.Helper()
	p := load(t)
	if err := p.Configure(Settings{ProxyPort: 15001, ExemptMark: testMark, ExemptMask: testMask, RouteMark: 0x4000, LoIfindex: 1}); err != nil {
		t.Fatal(err)
	}
	err := p.Capture([]netip.Prefix{netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("2001:db8:1::/48")}, []uint16{443, 80})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestEgressVerdicts(t *testing.T) {
	p := configured(t)
	client4 := netip.MustParseAddrPort("192.0.2.10:40000")
	client6 := netip.MustParseAddrPort("[2001:db8:2::10]:40000")
	tests := []struct {
		name     string
		src, dst netip.AddrPort
		mark     uint32
		want     uint32
		verdict  Verdict
	}{
		{"v4 captured", client4, netip.MustParseAddrPort("203.0.113.10:443"), 0, actRedirect, Redirected},
		{"v4 other port", client4, netip.MustParseAddrPort("203.0.113.10:8443"), 0, actUnspec, NoMatch},
		{"v4 other prefix", client4, netip.MustParseAddrPort("198.51.100.10:443"), 0, actUnspec, NoMatch},
		{"v4 exempt mark", client4, netip.MustParseAddrPort("203.0.113.10:443"), testMark | 0x10000, actUnspec, Exempt},
		{"v4 other mark", client4, netip.MustParseAddrPort("203.0.113.10:80"), 0x123, actRedirect, Redirected},
		{"v6 captured", client6, netip.MustParseAddrPort("[2001:db8:1::1]:443"), 0, actRedirect, Redirected},
		{"v6 other prefix", client6, netip.MustParseAddrPort("[2001:db8:3::1]:443"), 0, actUnspec, NoMatch},
		{"v6 exempt", client6, netip.MustParseAddrPort("[2001:db8:1::1]:443"), testMark, actUnspec, Exempt},
	}
	want := map[Verdict]uint64{}
	for _, tt := range tests {
		if got := run(t, p.Egress(), packet(tt.src, tt.dst), tt.mark); got != tt.want {
			t.Errorf("%s: capture_egress = %d, want %d", tt.name, got, tt.want)
		}
		want[tt.verdict]++
	}
	// A frame that is not TCP.
	arp := make([]byte, 60)
	binary.BigEndian.PutUint16(arp[12:], 0x0806)
	if got := run(t, p.Egress(), arp, 0); got != actUnspec {
		t.Errorf("ARP: capture_egress = %d, want unspec", got)
	}
	want[NotTCP]++

	got, err := p.Counters()
	if err != nil {
		t.Fatal(err)
	}
	for v := Verdict(0); v < numVerdicts; v++ {
		if got[v] != want[v] {
			t.Errorf("counter %s = %d, want %d", v, got[v], want[v])
		}
	}
}

func TestIngressFindsTheProxy(t *testing.T) {
	p := configured(t)
	pkt := packet(netip.MustParseAddrPort("192.0.2.10:40000"), netip.MustParseAddrPort("203.0.113.10:443"))

	// No proxy listening: captured traffic is dropped, not let through.
	if got := run(t, p.Ingress(), pkt, 0); got != actShot {
		t.Errorf("no proxy: capture_ingress = %d, want shot", got)
	}
	// With the proxy listening, the program finds its socket; under
	// BPF_PROG_TEST_RUN bpf_sk_assign itself is refused (EOPNOTSUPP), so
	// the namespace tests check the assignment.
	l, err := net.Listen("tcp", ":15001")
	if err != nil {
		t.Skipf("cannot listen on the proxy port: %v", err)
	}
	defer l.Close()
	if got := run(t, p.Ingress(), pkt, 0); got != actShot {
		t.Errorf("proxy listening, test run: capture_ingress = %d, want shot (assign refused)", got)
	}
	if got := run(t, p.Ingress(), packet(netip.MustParseAddrPort("192.0.2.10:40000"), netip.MustParseAddrPort("198.51.100.1:443")), 0); got != actUnspec {
		t.Errorf("not captured: capture_ingress = %d, want unspec", got)
	}
	c, err := p.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if c[NoSocket] != 1 || c[AssignFailed] != 1 || c[NoMatch] != 1 {
		t.Errorf("counters = %v, want one no-socket, one assign-failed (the listener was found), one no-match", c)
	}
}

func TestCaptureReplaces(t *testing.T) {
	p := configured(t)
	dst := netip.MustParseAddrPort("203.0.113.10:443")
	src := netip.MustParseAddrPort("192.0.2.10:40000")
	if err := p.Capture([]netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}, []uint16{443}); err != nil {
		t.Fatal(err)
	}
	if got := run(t, p.Egress(), packet(src, dst), 0); got != actUnspec {
		t.Errorf("after replacing the prefixes, the old one is still captured (%d)", got)
	}
	if got := run(t, p.Egress(), packet(src, netip.MustParseAddrPort("198.51.100.7:443")), 0); got != actRedirect {
		t.Errorf("the new prefix is not captured (%d)", got)
	}
}

func BenchmarkEgress(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	p, err := Load()
	if err != nil {
		b.Skip(err)
	}
	defer p.Close()
	p.Configure(Settings{ProxyPort: 15001, LoIfindex: 1})
	p.Capture([]netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}, []uint16{443})
	src := netip.MustParseAddrPort("192.0.2.10:40000")
	for _, bc := range []struct {
		name string
		dst  string
	}{{"not-ours", "198.51.100.1:443"}, {"captured", "203.0.113.10:443"}} {
		b.Run(bc.name, func(b *testing.B) {
			pkt := packet(src, netip.MustParseAddrPort(bc.dst))
			ret, d, err := p.Egress().Benchmark(pkt, b.N, nil)
			if err != nil {
				b.Fatal(err)
			}
			_ = ret
			b.ReportMetric(float64(d.Nanoseconds()), "ns/packet")
		})
	}
}
