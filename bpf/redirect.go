//go:build linux

// Package bpf is modgate's transparent redirect: the TC programs in
// redirect.c (compiled by bpf2go into redirect_bpfel.o, committed) and
// the Go side that loads them and fills their maps.
//
// A Program holds the loaded programs and maps. Its configuration —
// captured prefixes and ports, the proxy's port, the exempt and route
// marks, lo's ifindex — lives in maps, so changing it is a map update, not
// a reload. Loading needs CAP_BPF (root); everything else here is safe for
// concurrent use once loaded.
package bpf

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
)

// Verdict is what a program did with a packet; Counters counts each.
type Verdict uint32

// The verdicts, in redirect.c's order (enum verdict).
const (
	NotTCP       Verdict = iota // not IPv4/IPv6 TCP: passed
	NoMatch                     // not a captured destination: passed
	Exempt                      // the proxy's own marked traffic: passed
	Redirected                  // capture_egress: sent into lo's ingress
	Assigned                    // capture_ingress: given to a socket
	NoSocket                    // captured, no proxy socket: dropped
	AssignFailed                // captured, bpf_sk_assign refused: dropped
	numVerdicts
)

var verdictNames = [...]string{"not-tcp", "no-match", "exempt", "redirected", "assigned", "no-socket", "assign-failed"}

func (v Verdict) String() string {
	if v < numVerdicts {
		return verdictNames[v]
	}
	return fmt.Sprintf("Verdict(%d)", uint32(v))
}

// Settings are the programs' scalar configuration.
type Settings struct {
	ProxyPort  uint16 // the proxy's listening port
	ExemptMark uint32 // packets whose mark & ExemptMask == ExemptMark pass (the proxy's own)
	ExemptMask uint32 // 0 disables the exemption
	RouteMark  uint32 // set on captured packets, for the local policy route
	LoIfindex  uint32 // where capture_egress redirects (in-pod shape)
}

// A Program is the loaded redirect programs and their maps.
type Program struct {
	objs redirectObjects
}

// Load loads the programs and maps into the kernel.
func Load() (*Program, error) {
	p := new(Program)
	if err := loadRedirectObjects(&p.objs, nil); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("load redirect programs: verifier: %+v", ve)
		}
		return nil, fmt.Errorf("load redirect programs: %w", err)
	}
	return p, nil
}

// Close releases the programs and maps (attached or pinned ones stay).
func (p *Program) Close() error { return p.objs.Close() }

// Ingress is capture_ingress; Egress is capture_egress.
func (p *Program) Ingress() *ebpf.Program { return p.objs.CaptureIngress }

// Egress is capture_egress, for the in-pod shape's pod interface.
func (p *Program) Egress() *ebpf.Program { return p.objs.CaptureEgress }

// Configure sets the scalar configuration.
func (p *Program) Configure(s Settings) error {
	v := redirectSettings{
		ProxyPort:  htons(s.ProxyPort),
		ExemptMark: s.ExemptMark,
		ExemptMask: s.ExemptMask,
		RouteMark:  s.RouteMark,
		LoIfindex:  s.LoIfindex,
	}
	if err := p.objs.Config.Put(uint32(0), &v); err != nil {
		return fmt.Errorf("configure redirect: %w", err)
	}
	return nil
}

// Capture sets the destinations to capture: TCP to any of ports at an
// address in any of prefixes. It replaces what was there.
func (p *Program) Capture(prefixes []netip.Prefix, ports []uint16) error {
	if err := clearMap(p.objs.CaptureV4); err != nil {
		return err
	}
	if err := clearMap(p.objs.CaptureV6); err != nil {
		return err
	}
	if err := clearMap(p.objs.CapturePorts); err != nil {
		return err
	}
	one := uint8(1)
	for _, pfx := range prefixes {
		pfx = pfx.Masked()
		var err error
		if pfx.Addr().Is4() {
			k := redirectLpmV4{Prefixlen: uint32(pfx.Bits()), Addr: pfx.Addr().As4()}
			err = p.objs.CaptureV4.Put(&k, &one)
		} else {
			k := redirectLpmV6{Prefixlen: uint32(pfx.Bits()), Addr: pfx.Addr().As16()}
			err = p.objs.CaptureV6.Put(&k, &one)
		}
		if err != nil {
			return fmt.Errorf("capture %s: %w", pfx, err)
		}
	}
	for _, port := range ports {
		k := htons(port)
		if err := p.objs.CapturePorts.Put(&k, &one); err != nil {
			return fmt.Errorf("capture port %d: %w", port, err)
		}
	}
	return nil
}

// Counters returns how many packets got each verdict, over all CPUs.
func (p *Program) Counters() (map[Verdict]uint64, error) {
	out := map[Verdict]uint64{}
	for v := Verdict(0); v < numVerdicts; v++ {
		var perCPU []uint64
		if err := p.objs.Counters.Lookup(uint32(v), &perCPU); err != nil {
			return nil, fmt.Errorf("read counter %s: %w", v, err)
		}
		for _, n := range perCPU {
			out[v] += n
		}
	}
	return out, nil
}

// clearMap empties a hash or LPM map.
func clearMap(m *ebpf.Map) error {
	var keys [][]byte
	var k []byte
	it := m.Iterate()
	var v []byte
	for it.Next(&k, &v) {
		keys = append(keys, append([]byte(nil), k...))
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("clear %s: %w", m, err)
	}
	for _, key := range keys {
		if err := m.Delete(key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("clear %s: %w", m, err)
		}
	}
	return nil
}

// htons converts a port to network byte order as the kernel stores it in
// a __u16 on this little-endian machine.
func htons(p uint16) uint16 { return p<<8 | p>>8 }
