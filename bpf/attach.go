//go:build linux

package bpf

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"github.com/vishvananda/netlink"
)

// Attaching, in the calling thread's network namespace. Everything an
// attachment consists of is pinned under PinRoot/<iface>/, so it outlives
// the process that made it and another process can inspect, update or
// remove it:
//
//	capture_v4, capture_v6, capture_ports, config, counters  the maps
//	link_ingress  TCX link of capture_ingress (NodeLevel: the veth's; InPod: lo's)
//	link_egress   TCX link of capture_egress (InPod: the pod interface's)
//	state         what Attach did (attachState), for Detach and GetStatus
//
// In the tc fallback there are no links to pin: the filters hold the
// programs, and the state records which clsact qdiscs Attach created.
// The state is pinned last, so its presence means a complete attachment.
//
// Callers that switch network namespaces must lock the OS thread
// (runtime.LockOSThread); nothing here starts a goroutine.

const (
	pinState   = "state"
	pinIngress = "link_ingress"
	pinEgress  = "link_egress"
)

// attachState is what Attach records, pinned in a one-element BPF array
// (a bpffs holds BPF objects only).
type attachState struct {
	Version      uint32
	Shape        uint8
	Mode         uint8 // modeTCX or modeTC
	Created      uint8 // the clsact qdiscs Attach created: bit i for hooks()[i]
	AcceptLocal  uint8 // lo's accept_local before Attach set it: 0 unchanged, 1 was 0
	Ifindex      uint32
	LoIfindex    uint32
	RouteMark    uint32
	RouteTable   uint32
	RulePriority uint32
	Pad          uint32
	NetnsDev     uint64
	NetnsIno     uint64
}

const stateVersion = 1

func (st attachState) netns() netnsID { return netnsID{st.NetnsDev, st.NetnsIno} }

func (st attachState) routing() routing {
	return routing{mark: st.RouteMark, table: st.RouteTable, priority: st.RulePriority, lo: int(st.LoIfindex)}
}

// hooks are where the shape's programs go.
func (st attachState) hooks(dir string) []hook {
	if Shape(st.Shape) == InPod {
		return []hook{
			{ifindex: int(st.Ifindex), ingress: false, pin: filepath.Join(dir, pinEgress)},
			{ifindex: int(st.LoIfindex), ingress: true, pin: filepath.Join(dir, pinIngress)},
		}
	}
	return []hook{{ifindex: int(st.Ifindex), ingress: true, pin: filepath.Join(dir, pinIngress)}}
}

// intact reports whether every hook is still in place.
func (st attachState) intact(dir string) bool {
	for _, h := range st.hooks(dir) {
		ok := h.tcxIntact()
		if st.Mode == modeTC {
			ok = h.tcIntact()
		}
		if !ok {
			return false
		}
	}
	return true
}

// Attach attaches the redirect to cfg.Iface in the calling thread's
// network namespace, with the policy routing it needs there (see
// routing), and pins it under cfg.PinRoot/<iface>/. It uses TCX, at the
// head of the chain, where the kernel has it (≥ 6.6), else a clsact qdisc
// and a direct-action tc filter.
//
// If the interface is attached already, Attach updates the maps (and the
// routing, if the mark, table or priority changed) in place; a stale
// attachment (interface recreated) is replaced. Changing the shape needs
// Detach first.
func Attach(cfg AttachConfig) error {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	if err := checkBPFFS(cfg.PinRoot); err != nil {
		return err
	}
	dev, err := linkByName(cfg.Iface)
	if err != nil {
		return fmt.Errorf("attach %s: %w", cfg.Iface, err)
	}
	lo, err := linkByName("lo")
	if err != nil {
		return fmt.Errorf("attach %s: %w", cfg.Iface, err)
	}
	ns, err := currentNetns()
	if err != nil {
		return fmt.Errorf("attach %s: %w", cfg.Iface, err)
	}
	want := attachState{
		Version:      stateVersion,
		Shape:        uint8(cfg.Shape),
		Ifindex:      uint32(dev.Attrs().Index),
		LoIfindex:    uint32(lo.Attrs().Index),
		RouteMark:    cfg.Settings.RouteMark,
		RouteTable:   cfg.RouteTable,
		RulePriority: cfg.RulePriority,
		NetnsDev:     ns.dev,
		NetnsIno:     ns.ino,
	}
	if cfg.Shape == InPod {
		cfg.Settings.LoIfindex = want.LoIfindex
	}
	dir := filepath.Join(cfg.PinRoot, cfg.Iface)

	old, err := loadState(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		// Leftovers of an interrupted attach or detach go first.
		if err := removePins(dir); err != nil {
			return fmt.Errorf("attach %s: %w", cfg.Iface, err)
		}
		return attachNew(cfg, dir, want)
	case err != nil:
		return fmt.Errorf("attach %s: %w", cfg.Iface, err)
	case old.netns() != ns:
		return fmt.Errorf("attach %s: %s holds an attachment made in another network namespace: give each namespace its own pin root", cfg.Iface, dir)
	case old.Shape != want.Shape:
		return fmt.Errorf("attach %s: attached as %s, not %s: detach first", cfg.Iface, Shape(old.Shape), cfg.Shape)
	case old.Ifindex != want.Ifindex || old.LoIfindex != want.LoIfindex || !old.intact(dir):
		if err := detach(cfg.PinRoot, dir, old); err != nil {
			return fmt.Errorf("attach %s: replace a stale attachment: %w", cfg.Iface, err)
		}
		return attachNew(cfg, dir, want)
	}
	if err := update(cfg, dir, old, want); err != nil {
		return fmt.Errorf("attach %s: update: %w", cfg.Iface, err)
	}
	return nil
}

// attachNew makes a new attachment, undoing what it did if a step fails.
func attachNew(cfg AttachConfig, dir string, st attachState) (err error) {
	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
			err = fmt.Errorf("attach %s: %w", cfg.Iface, err)
		}
	}()

	p, err := Load()
	if err != nil {
		return loadError(err)
	}
	defer p.Close()
	if err := p.Configure(cfg.Settings); err != nil {
		return err
	}
	if err := p.Capture(cfg.Prefixes, cfg.Ports); err != nil {
		return err
	}

	if err := os.MkdirAll(dir, 0o700); err != nil {
		return needRoot(err)
	}
	undo = append(undo, func() { os.Remove(dir) })
	for name, m := range p.maps() {
		path := filepath.Join(dir, name)
		if err := m.Pin(path); err != nil {
			return fmt.Errorf("pin %s: %w", name, needRoot(err))
		}
		undo = append(undo, func() { os.Remove(path) })
	}

	r, others := st.routing(), routings(otherStates(cfg.PinRoot, dir, st.netns()))
	if err := r.add(); err != nil {
		return err
	}
	undo = append(undo, func() { r.removeUnused(others) })
	if cfg.Shape == InPod {
		was, err := setAcceptLocal(true)
		if err != nil {
			return err
		}
		if !was {
			st.AcceptLocal = 1
			undo = append(undo, func() { setAcceptLocal(false) })
		}
	}

	st.Mode = modeTCX
	if cfg.forceTC {
		st.Mode = modeTC
	}
	for i, h := range st.hooks(dir) {
		prog := p.Egress()
		if h.ingress {
			prog = p.Ingress()
		}
		if st.Mode == modeTCX {
			err := h.attachTCX(prog)
			if err == nil {
				undo = append(undo, func() { h.detachTCX() })
				continue
			}
			if i > 0 || !errors.Is(err, ebpf.ErrNotSupported) {
				return err
			}
			st.Mode = modeTC // kernel < 6.6
		}
		created, err := h.attachTC(prog)
		if err != nil {
			return err
		}
		if created {
			st.Created |= 1 << i
		}
		undo = append(undo, func() { h.detachTC(created) })
	}
	return saveState(dir, st)
}

// update brings an intact attachment to cfg: the maps, the routing and
// lo's accept_local.
func update(cfg AttachConfig, dir string, old, want attachState) error {
	p, err := loadPinned(dir)
	if err != nil {
		return err
	}
	defer p.Close()
	// The new route first, so a changed mark always has its rule.
	if err := want.routing().add(); err != nil {
		return err
	}
	if err := p.Configure(cfg.Settings); err != nil {
		return err
	}
	if err := p.Capture(cfg.Prefixes, cfg.Ports); err != nil {
		return err
	}
	if old.routing() != want.routing() {
		others := append(routings(otherStates(cfg.PinRoot, dir, old.netns())), want.routing())
		if err := old.routing().removeUnused(others); err != nil {
			return err
		}
	}
	want.AcceptLocal = old.AcceptLocal
	if cfg.Shape == InPod {
		was, err := setAcceptLocal(true)
		if err != nil {
			return err
		}
		if !was {
			want.AcceptLocal = 1
		}
	}
	want.Mode, want.Created = old.Mode, old.Created
	return saveState(dir, want)
}

// Detach removes the redirect from iface: its hooks, the routing unless
// another attachment in this network namespace uses the same, lo's
// accept_local if Attach changed it, and the pins. Nothing attached is no
// error. It must run in the network namespace Attach ran in.
func Detach(iface, pinRoot string) error {
	if err := checkIface(iface); err != nil {
		return fmt.Errorf("detach: %w", err)
	}
	if pinRoot == "" {
		pinRoot = DefaultPinRoot
	}
	dir := filepath.Join(pinRoot, iface)
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("detach %s: %w", iface, needRoot(err))
	}
	st, err := loadState(dir)
	if errors.Is(err, fs.ErrNotExist) {
		err = removePins(dir) // leftovers of an interrupted attach
	}
	if err != nil {
		return fmt.Errorf("detach %s: %w", iface, err)
	}
	ns, err := currentNetns()
	if err != nil {
		return fmt.Errorf("detach %s: %w", iface, err)
	}
	if st.netns() != ns {
		return fmt.Errorf("detach %s: it was attached in another network namespace: run detach there (nsenter --net=...)", iface)
	}
	if err := detach(pinRoot, dir, st); err != nil {
		return fmt.Errorf("detach %s: %w", iface, err)
	}
	return nil
}

// detach undoes the attachment st describes. It keeps the pins if a step
// fails, so that detach can be retried.
func detach(pinRoot, dir string, st attachState) error {
	var errs []error
	for i, h := range st.hooks(dir) {
		if st.Mode == modeTC {
			errs = append(errs, h.detachTC(st.Created&(1<<i) != 0))
		} else {
			errs = append(errs, h.detachTCX())
		}
	}
	others := otherStates(pinRoot, dir, st.netns())
	errs = append(errs, st.routing().removeUnused(routings(others)))
	if Shape(st.Shape) == InPod && st.AcceptLocal != 0 && !slices.ContainsFunc(others, func(o attachState) bool { return Shape(o.Shape) == InPod }) {
		if _, err := setAcceptLocal(false); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return removePins(dir)
}

// GetStatus reports iface's redirect from its pins, from any process. A
// status with Mode "" means nothing is attached.
func GetStatus(iface, pinRoot string) (Status, error) {
	if err := checkIface(iface); err != nil {
		return Status{}, fmt.Errorf("status: %w", err)
	}
	if pinRoot == "" {
		pinRoot = DefaultPinRoot
	}
	dir := filepath.Join(pinRoot, iface)
	st, err := loadState(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return Status{}, nil
	}
	if err != nil {
		return Status{}, fmt.Errorf("status %s: %w", iface, err)
	}
	p, err := loadPinned(dir)
	if err != nil {
		return Status{}, fmt.Errorf("status %s: %w", iface, err)
	}
	defer p.Close()
	s := Status{Mode: modeName(st.Mode), Shape: Shape(st.Shape), RouteTable: st.RouteTable}
	if s.Settings, err = p.settings(); err != nil {
		return Status{}, fmt.Errorf("status %s: %w", iface, err)
	}
	if s.Prefixes, s.Ports, err = p.captured(); err != nil {
		return Status{}, fmt.Errorf("status %s: %w", iface, err)
	}
	if s.Counters, err = p.Counters(); err != nil {
		return Status{}, fmt.Errorf("status %s: %w", iface, err)
	}
	if st.Mode == modeTC {
		// tc filters can only be listed in their namespace.
		ns, err := currentNetns()
		if err != nil {
			return Status{}, fmt.Errorf("status %s: %w", iface, err)
		}
		if ns != st.netns() {
			return Status{}, fmt.Errorf("status %s: attached with tc in another network namespace: run status there (nsenter --net=...)", iface)
		}
	}
	s.Attached = st.intact(dir)
	s.Stale = !s.Attached
	return s, nil
}

// maps are the programs' maps by pin name.
func (p *Program) maps() map[string]*ebpf.Map {
	return map[string]*ebpf.Map{
		"capture_v4":    p.objs.CaptureV4,
		"capture_v6":    p.objs.CaptureV6,
		"capture_ports": p.objs.CapturePorts,
		"config":        p.objs.Config,
		"counters":      p.objs.Counters,
	}
}

// loadPinned opens the pinned maps of an attachment, as a Program
// without programs.
func loadPinned(dir string) (*Program, error) {
	p := new(Program)
	for name, dst := range map[string]**ebpf.Map{
		"capture_v4":    &p.objs.CaptureV4,
		"capture_v6":    &p.objs.CaptureV6,
		"capture_ports": &p.objs.CapturePorts,
		"config":        &p.objs.Config,
		"counters":      &p.objs.Counters,
	} {
		m, err := ebpf.LoadPinnedMap(filepath.Join(dir, name), nil)
		if err != nil {
			p.Close()
			return nil, fmt.Errorf("load pinned map %s: %w", name, needRoot(err))
		}
		*dst = m
	}
	return p, nil
}

// settings reads the scalar configuration back.
func (p *Program) settings() (Settings, error) {
	var v redirectSettings
	if err := p.objs.Config.Lookup(uint32(0), &v); err != nil {
		return Settings{}, fmt.Errorf("read config: %w", err)
	}
	return Settings{
		ProxyPort:  htons(v.ProxyPort),
		ExemptMark: v.ExemptMark,
		ExemptMask: v.ExemptMask,
		RouteMark:  v.RouteMark,
		LoIfindex:  v.LoIfindex,
	}, nil
}

// captured reads the captured prefixes and ports back, sorted.
func (p *Program) captured() ([]netip.Prefix, []uint16, error) {
	var prefixes []netip.Prefix
	var one uint8
	var k4 redirectLpmV4
	it := p.objs.CaptureV4.Iterate()
	for it.Next(&k4, &one) {
		prefixes = append(prefixes, netip.PrefixFrom(netip.AddrFrom4(k4.Addr), int(k4.Prefixlen)))
	}
	if err := it.Err(); err != nil {
		return nil, nil, fmt.Errorf("read capture_v4: %w", err)
	}
	var k6 redirectLpmV6
	it = p.objs.CaptureV6.Iterate()
	for it.Next(&k6, &one) {
		prefixes = append(prefixes, netip.PrefixFrom(netip.AddrFrom16(k6.Addr), int(k6.Prefixlen)))
	}
	if err := it.Err(); err != nil {
		return nil, nil, fmt.Errorf("read capture_v6: %w", err)
	}
	var ports []uint16
	var port uint16
	it = p.objs.CapturePorts.Iterate()
	for it.Next(&port, &one) {
		ports = append(ports, htons(port))
	}
	if err := it.Err(); err != nil {
		return nil, nil, fmt.Errorf("read capture_ports: %w", err)
	}
	slices.SortFunc(prefixes, func(a, b netip.Prefix) int {
		return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
	})
	slices.Sort(ports)
	return prefixes, ports, nil
}

var stateSpec = ebpf.MapSpec{
	Name:       "modgate_state",
	Type:       ebpf.Array,
	KeySize:    4,
	ValueSize:  48,
	MaxEntries: 1,
}

// loadState reads dir's state; fs.ErrNotExist if there is none.
func loadState(dir string) (attachState, error) {
	path := filepath.Join(dir, pinState)
	if _, err := os.Stat(path); err != nil {
		return attachState{}, needRoot(err)
	}
	m, err := ebpf.LoadPinnedMap(path, nil)
	if err != nil {
		return attachState{}, fmt.Errorf("load %s: %w", path, needRoot(err))
	}
	defer m.Close()
	var st attachState
	if err := m.Lookup(uint32(0), &st); err != nil {
		return attachState{}, fmt.Errorf("read %s: %w", path, err)
	}
	if st.Version != stateVersion {
		return attachState{}, fmt.Errorf("%s has version %d, want %d", path, st.Version, stateVersion)
	}
	return st, nil
}

// saveState writes st to dir's state, pinning it if it is new.
func saveState(dir string, st attachState) error {
	path := filepath.Join(dir, pinState)
	m, err := ebpf.LoadPinnedMap(path, nil)
	if errors.Is(err, fs.ErrNotExist) {
		if m, err = ebpf.NewMap(&stateSpec); err != nil {
			return fmt.Errorf("create state map: %w", needRoot(err))
		}
		defer m.Close()
		if err := m.Put(uint32(0), &st); err != nil {
			return fmt.Errorf("write state: %w", err)
		}
		if err := m.Pin(path); err != nil {
			return fmt.Errorf("pin state: %w", needRoot(err))
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("load %s: %w", path, needRoot(err))
	}
	defer m.Close()
	if err := m.Put(uint32(0), &st); err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	return nil
}

// removePins unpins everything in dir, the state last, and removes dir.
// Unpinning a link nobody else holds detaches it.
func removePins(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove pins: %w", needRoot(err))
	}
	var errs []error
	for _, e := range entries {
		if e.Name() != pinState {
			errs = append(errs, os.Remove(filepath.Join(dir, e.Name())))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("remove pins: %w", needRoot(err))
	}
	if err := os.Remove(filepath.Join(dir, pinState)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove pins: %w", needRoot(err))
	}
	if err := os.Remove(dir); err != nil {
		return fmt.Errorf("remove pins: %w", needRoot(err))
	}
	return nil
}

// otherStates are the attachments under pinRoot, other than dir's, made
// in network namespace ns. Unreadable ones are skipped.
func otherStates(pinRoot, dir string, ns netnsID) []attachState {
	entries, _ := os.ReadDir(pinRoot)
	var out []attachState
	for _, e := range entries {
		d := filepath.Join(pinRoot, e.Name())
		if !e.IsDir() || d == dir {
			continue
		}
		if st, err := loadState(d); err == nil && st.netns() == ns {
			out = append(out, st)
		}
	}
	return out
}

// routings is the routing each of states needs.
func routings(states []attachState) []routing {
	var out []routing
	for _, st := range states {
		out = append(out, st.routing())
	}
	return out
}

// linkByName finds an interface in the calling thread's namespace.
func linkByName(name string) (netlink.Link, error) {
	l, err := netlink.LinkByName(name)
	var nf netlink.LinkNotFoundError
	if errors.As(err, &nf) {
		return nil, fmt.Errorf("no interface %q in this network namespace", name)
	}
	if err != nil {
		return nil, fmt.Errorf("interface %q: %w", name, needRoot(err))
	}
	return l, nil
}

// loadError explains why Load failed: privilege, or the kernel features
// the programs need.
func loadError(err error) error {
	if errors.Is(err, ebpf.ErrNotSupported) || !errors.Is(needRoot(err), ErrNeedRoot) {
		if missing := missingFeatures(); len(missing) > 0 {
			return fmt.Errorf("kernel lacks %s: %w", strings.Join(missing, ", "), err)
		}
	}
	return needRoot(err)
}

// missingFeatures probes the kernel for what redirect.c uses.
func missingFeatures() []string {
	var missing []string
	for _, f := range []struct {
		name string
		err  error
	}{
		{"sched_cls programs", features.HaveProgramType(ebpf.SchedCLS)},
		{"LPM trie maps", features.HaveMapType(ebpf.LPMTrie)},
		{"per-CPU array maps", features.HaveMapType(ebpf.PerCPUArray)},
		{"the bpf_skc_lookup_tcp helper", features.HaveProgramHelper(ebpf.SchedCLS, asm.FnSkcLookupTcp)},
		{"the bpf_sk_assign helper", features.HaveProgramHelper(ebpf.SchedCLS, asm.FnSkAssign)},
		{"the bpf_sk_release helper", features.HaveProgramHelper(ebpf.SchedCLS, asm.FnSkRelease)},
		{"the bpf_redirect helper", features.HaveProgramHelper(ebpf.SchedCLS, asm.FnRedirect)},
		{"the bpf_skb_change_type helper", features.HaveProgramHelper(ebpf.SchedCLS, asm.FnSkbChangeType)},
	} {
		if errors.Is(f.err, ebpf.ErrNotSupported) {
			missing = append(missing, f.name)
		}
	}
	return missing
}
