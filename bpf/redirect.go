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
// address in any of prefixes. It replaces what was there, adding the new
// entries before deleting the stale ones, so that a destination captured
// before and after the change is never let through in between.
func (p *Program) Capture(prefixes []netip.Prefix, ports []uint16) error {
	var v4 []redirectLpmV4
	var v6 []redirectLpmV6
	for _, pfx := range prefixes {
		pfx = pfx.Masked()
		if pfx.Addr().Is4() {
			v4 = append(v4, redirectLpmV4{Prefixlen: uint32(pfx.Bits()), Addr: pfx.Addr().As4()})
		} else {
			v6 = append(v6, redirectLpmV6{Prefixlen: uint32(pfx.Bits()), Addr: pfx.Addr().As16()})
		}
	}
	keys := make([]uint16, len(ports))
	for i, port := range ports {
		keys[i] = htons(port)
	}
	if err := replaceKeys(p.objs.CapturePorts, keys); err != nil {
		return err
	}
	if err := replaceKeys(p.objs.CaptureV4, v4); err != nil {
		return err
	}
	return replaceKeys(p.objs.CaptureV6, v6)
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

// replaceKeys makes keys (with value 1) the only entries of the hash or
// LPM map m: it adds them, then deletes the others.
func replaceKeys[K comparable](m *ebpf.Map, keys []K) error {
	one := uint8(1)
	keep := make(map[K]bool, len(keys))
	for _, k := range keys {
		keep[k] = true
		if err := m.Put(&k, &one); err != nil {
			return fmt.Errorf("update %s: %w", m, err)
		}
	}
	var stale []K
	var k K
	var v uint8
	it := m.Iterate()
	for it.Next(&k, &v) {
		if !keep[k] {
			stale = append(stale, k)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("update %s: %w", m, err)
	}
	for _, k := range stale {
		if err := m.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("update %s: %w", m, err)
		}
	}
	return nil
}

// htons converts a port to network byte order as the kernel stores it in
// a __u16 on this little-endian machine.
func htons(p uint16) uint16 { return p<<8 | p>>8 }
