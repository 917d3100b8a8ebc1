package bpf

// The redirect's configuration and status types. They build on every
// system, so the command line that fills them does too; the code that
// uses them is Linux-only (attach.go, redirect.go).

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
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

// Verdicts lists the verdicts in order, for printing counters.
func Verdicts() []Verdict {
	vs := make([]Verdict, numVerdicts)
	for i := range vs {
		vs[i] = Verdict(i)
	}
	return vs
}

// Settings are the programs' scalar configuration.
type Settings struct {
	ProxyPort  uint16 // the proxy's listening port
	ExemptMark uint32 // packets whose mark & ExemptMask == ExemptMark pass (the proxy's own)
	ExemptMask uint32 // 0 disables the exemption
	RouteMark  uint32 // set on captured packets, for the local policy route
	LoIfindex  uint32 // where capture_egress redirects (in-pod shape)
}

// Shape is where the redirect sits relative to the pod.
type Shape uint8

// The shapes (see ../shared/EBPF.md).
const (
	// InPod attaches in the pod's network namespace: capture_egress on
	// the pod's interface, capture_ingress on lo's ingress. The proxy
	// listens in the pod.
	InPod Shape = iota + 1
	// NodeLevel attaches in the node's network namespace: capture_ingress
	// on the ingress of the pod's host-side veth. The proxy listens on
	// the node.
	NodeLevel
)

func (s Shape) String() string {
	switch s {
	case InPod:
		return "in-pod"
	case NodeLevel:
		return "node"
	}
	return fmt.Sprintf("Shape(%d)", uint8(s))
}

// Defaults of AttachConfig.
const (
	DefaultPinRoot      = "/sys/fs/bpf/modgate"
	DefaultProxyPort    = 15001
	DefaultRouteMark    = 0x4000
	DefaultRouteTable   = 100
	DefaultRulePriority = 1000
)

// Map sizes in redirect.c.
const (
	maxPrefixes = 1024 // per IP version
	maxPorts    = 64
)

// AttachConfig says where to attach the redirect and what it captures.
// Its zero value is valid except for Iface.
type AttachConfig struct {
	// Iface is the interface to attach to, in the calling thread's
	// network namespace. InPod: the pod's interface (its egress gets
	// capture_egress; lo's ingress gets capture_ingress). NodeLevel: the
	// pod's host-side veth (its ingress gets capture_ingress). Required.
	Iface string
	// Shape is InPod (the default) or NodeLevel.
	Shape Shape
	// Prefixes and Ports are the destinations captured: TCP to any of the
	// ports at an address in any of the prefixes (their cross product).
	// Up to 1024 prefixes per IP version and 64 ports; none captures
	// nothing.
	Prefixes []netip.Prefix
	Ports    []uint16
	// Settings are the programs' marks and proxy port. ProxyPort defaults
	// to 15001 and RouteMark to 0x4000; ExemptMask 0 exempts nothing.
	// LoIfindex is filled in for InPod and ignored otherwise.
	Settings Settings
	// RouteTable is the routing table for the local route captured
	// packets take (`ip rule fwmark RouteMark/RouteMark lookup
	// RouteTable`); default 100. RulePriority is that rule's priority;
	// default 1000.
	RouteTable   uint32
	RulePriority uint32
	// PinRoot is the bpffs directory under which the maps, links and
	// state are pinned, in PinRoot/<Iface>/; default /sys/fs/bpf/modgate.
	// Interface names repeat across pods (eth0): for InPod, give each
	// pod's network namespace its own PinRoot.
	PinRoot string

	// forceTC skips TCX and uses the tc fallback (tests).
	forceTC bool
}

// withDefaults checks c and fills in its defaults.
func (c AttachConfig) withDefaults() (AttachConfig, error) {
	if err := checkIface(c.Iface); err != nil {
		return c, fmt.Errorf("attach config: Iface: %w", err)
	}
	switch c.Shape {
	case 0:
		c.Shape = InPod
	case InPod, NodeLevel:
	default:
		return c, fmt.Errorf("attach config: Shape %d is neither InPod nor NodeLevel", c.Shape)
	}
	var n4, n6 int
	for _, p := range c.Prefixes {
		switch {
		case !p.IsValid():
			return c, fmt.Errorf("attach config: Prefixes: invalid prefix %v", p)
		case p.Addr().Is4() || p.Addr().Is4In6():
			n4++
		default:
			n6++
		}
	}
	if n4 > maxPrefixes || n6 > maxPrefixes {
		return c, fmt.Errorf("attach config: Prefixes: %d IPv4 and %d IPv6 prefixes, at most %d each", n4, n6, maxPrefixes)
	}
	if len(c.Ports) > maxPorts {
		return c, fmt.Errorf("attach config: Ports: %d ports, at most %d", len(c.Ports), maxPorts)
	}
	for _, p := range c.Ports {
		if p == 0 {
			return c, errors.New("attach config: Ports: port 0")
		}
	}
	if c.Settings.ProxyPort == 0 {
		c.Settings.ProxyPort = DefaultProxyPort
	}
	if c.Settings.RouteMark == 0 {
		c.Settings.RouteMark = DefaultRouteMark
	}
	if c.Settings.ExemptMark&^c.Settings.ExemptMask != 0 {
		return c, fmt.Errorf("attach config: Settings.ExemptMark %#x has bits outside ExemptMask %#x", c.Settings.ExemptMark, c.Settings.ExemptMask)
	}
	if c.Settings.ExemptMask != 0 && c.Settings.ExemptMark&c.Settings.RouteMark == c.Settings.RouteMark {
		// The rule `fwmark RouteMark/RouteMark` would route the proxy's
		// own connections locally.
		return c, fmt.Errorf("attach config: Settings.RouteMark %#x is within the exempt mark %#x", c.Settings.RouteMark, c.Settings.ExemptMark)
	}
	if c.Shape != InPod {
		c.Settings.LoIfindex = 0
	}
	switch c.RouteTable {
	case 0:
		c.RouteTable = DefaultRouteTable
	case 253, 254, 255: // default, main, local
		return c, fmt.Errorf("attach config: RouteTable %d is a table the system uses", c.RouteTable)
	}
	if c.RulePriority == 0 {
		c.RulePriority = DefaultRulePriority
	}
	if c.PinRoot == "" {
		c.PinRoot = DefaultPinRoot
	}
	c.PinRoot = filepath.Clean(c.PinRoot)
	return c, nil
}

// checkIface checks that name can be an interface name, and so a
// directory under the pin root.
func checkIface(name string) error {
	switch {
	case name == "":
		return errors.New("empty interface name")
	case len(name) > 15:
		return fmt.Errorf("interface name %q is longer than 15 bytes", name)
	case name == "." || name == ".." || strings.ContainsAny(name, "/ \t\n:\x00"):
		return fmt.Errorf("invalid interface name %q", name)
	}
	return nil
}

// Status is what GetStatus reports about an interface's redirect.
type Status struct {
	// Attached is whether the redirect is attached and its hooks are in
	// place. Stale is whether its pins exist but its hooks are gone (the
	// interface was deleted or recreated): Attach repairs it, Detach
	// cleans up.
	Attached, Stale bool
	Mode            string // "tcx" or "tc"; empty if nothing is pinned
	Shape           Shape
	Prefixes        []netip.Prefix
	Ports           []uint16
	Settings        Settings
	RouteTable      uint32
	Counters        map[Verdict]uint64
}

// ErrNeedRoot is the error when the kernel refuses an operation for lack
// of privilege.
var ErrNeedRoot = errors.New("modgate redirect needs root (CAP_NET_ADMIN and CAP_BPF)")

// NoBPFFSError is the error when the pin root is not on a mounted bpffs.
// MountBPFFS(Dir) mounts one.
type NoBPFFSError struct {
	Dir string // where bpffs should be mounted: the pin root's parent
}

func (e *NoBPFFSError) Error() string {
	return fmt.Sprintf("bpffs is not mounted at %s: mount -t bpf bpf %s", e.Dir, e.Dir)
}
