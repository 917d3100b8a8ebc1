package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/modgate/modgate/bpf"
)

const redirectUsage = `Usage:

	modgate redirect attach --iface I --capture CIDR:PORT,... [--to-port N] [--shape in-pod|node]
	        [--exempt-mark MARK/MASK] [--route-mark M] [--route-table T] [--pin-root DIR] [--mount-bpffs]
	modgate redirect detach --iface I [--pin-root DIR]
	modgate redirect status --iface I [--pin-root DIR]

attach hands TCP connections to the captured destinations to the proxy
listening on --to-port at the wildcard address (modgate serve
--transparent 0.0.0.0:PORT), which sees each connection's original
destination as its local address. Without such a listener captured
connections are dropped, and attach warns. It works in the network
namespace modgate runs in; enter a pod's with
'nsenter --net=/run/netns/NAME', not 'ip netns exec', which hides
/sys/fs/bpf. Shapes:

	in-pod  in the pod's namespace: --iface is the pod's interface, the
	        proxy listens in the pod, and its own upstream connections
	        carry the exempt mark (SO_MARK) so they are not captured.
	node    in the node's namespace: --iface is the pod's host-side veth,
	        the proxy listens on the node; runs ahead of the CNI's program.

--capture is a comma-separated list of CIDR:PORT, [CIDR]:PORT for IPv6;
a bare CIDR means ports 80 and 443, an address without /LEN one host.
Every listed port is captured at every listed prefix.

Captured packets get --route-mark, which a policy rule (fwmark
MARK/MARK lookup --route-table) routes to a local route; attach adds the
rule and route (and, in-pod, sets lo's accept_local), detach removes them.

The maps and TCX links are pinned under --pin-root/IFACE, so
capture survives modgate's exit and status and detach work from any
process; attaching again updates the capture in place. Give each pod's
namespace its own --pin-root: interface names repeat across pods.

Needs root (CAP_NET_ADMIN and CAP_BPF).

Flags:
`

// redirectRun is a parsed `modgate redirect` command line.
type redirectRun struct {
	op         string // attach, detach or status
	cfg        bpf.AttachConfig
	mountBPFFS bool
}

// redirectCmd runs `modgate redirect`.
func redirectCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	r, err := parseRedirect(args, stderr)
	if err != nil {
		return err
	}
	switch r.op {
	case "attach":
		err := bpf.Attach(r.cfg)
		var nb *bpf.NoBPFFSError
		if errors.As(err, &nb) {
			if !r.mountBPFFS {
				return fmt.Errorf("redirect attach: %w (or pass --mount-bpffs)", err)
			}
			if err := bpf.MountBPFFS(nb.Dir); err != nil {
				return fmt.Errorf("redirect attach: %w", err)
			}
			fmt.Fprintf(stderr, "mounted a bpffs at %s\n", nb.Dir)
			err = bpf.Attach(r.cfg)
		}
		if err != nil {
			return fmt.Errorf("redirect: %w", err)
		}
		if w := proxyListenerWarning(r.cfg); w != "" {
			fmt.Fprintf(stderr, "modgate redirect attach: warning: %s\n", w)
		}
	case "detach":
		if err := bpf.Detach(r.cfg.Iface, r.cfg.PinRoot); err != nil {
			return fmt.Errorf("redirect: %w", err)
		}
		fmt.Fprintf(stdout, "%s: detached\n", r.cfg.Iface)
		return nil
	}
	st, err := bpf.GetStatus(r.cfg.Iface, r.cfg.PinRoot)
	if err != nil {
		return fmt.Errorf("redirect: %w", err)
	}
	printStatus(stdout, r.cfg.Iface, filepath.Join(r.cfg.PinRoot, r.cfg.Iface), st)
	return nil
}

// parseRedirect parses the command line into a redirectRun.
func parseRedirect(args []string, stderr io.Writer) (redirectRun, error) {
	fs := newFlagSet("redirect", redirectUsage, stderr)
	iface := fs.String("iface", "", "the `interface` to attach to (required)")
	capture := fs.String("capture", "", "destinations to capture: comma-separated `CIDR:PORT`, [CIDR]:PORT or CIDR (ports 80 and 443)")
	toPort := fs.Uint("to-port", bpf.DefaultProxyPort, "the proxy's listening `port`")
	shape := fs.String("shape", "in-pod", "`in-pod` or node")
	exempt := fs.String("exempt-mark", "0x539/0xfff", "`MARK/MASK` of the proxy's own connections, not captured; none to exempt nothing")
	routeMark := fs.String("route-mark", "0x4000", "`mark` set on captured packets for the local policy route")
	routeTable := fs.Uint("route-table", bpf.DefaultRouteTable, "routing `table` of the local route")
	pinRoot := fs.String("pin-root", bpf.DefaultPinRoot, "bpffs `directory` to pin under")
	mount := fs.Bool("mount-bpffs", false, "mount a bpffs at the pin root's parent if none is")

	op, err := parseSub(fs, args, "attach", "detach", "status")
	if err != nil {
		if op != "" && !errors.Is(err, flag.ErrHelp) {
			return redirectRun{}, usageError{fmt.Sprintf("redirect %s: %v", op, err)}
		}
		return redirectRun{}, err
	}
	r := redirectRun{op: op}
	bad := func(format string, a ...any) (redirectRun, error) {
		return redirectRun{}, usageError{fmt.Sprintf("redirect "+r.op+": "+format, a...)}
	}
	if fs.NArg() > 0 {
		return bad("unexpected argument %q", fs.Arg(0))
	}
	if *iface == "" {
		return bad("--iface is required")
	}
	if r.op != "attach" {
		var attachOnly []string
		fs.Visit(func(f *flag.Flag) {
			if f.Name != "iface" && f.Name != "pin-root" {
				attachOnly = append(attachOnly, "--"+f.Name)
			}
		})
		if len(attachOnly) > 0 {
			return bad("%s: for attach only", strings.Join(attachOnly, ", "))
		}
	}
	r.cfg.Iface, r.cfg.PinRoot = *iface, filepath.Clean(*pinRoot)
	r.mountBPFFS = *mount
	if r.op != "attach" {
		return r, nil
	}

	if *capture == "" {
		return bad("--capture is required")
	}
	if r.cfg.Prefixes, r.cfg.Ports, err = parseCapture(*capture); err != nil {
		return bad("--capture: %v", err)
	}
	if *toPort == 0 || *toPort > 65535 {
		return bad("--to-port %d: want 1 to 65535", *toPort)
	}
	r.cfg.Settings.ProxyPort = uint16(*toPort)
	switch *shape {
	case "in-pod":
		r.cfg.Shape = bpf.InPod
	case "node":
		r.cfg.Shape = bpf.NodeLevel
	default:
		return bad("--shape %q: want in-pod or node", *shape)
	}
	if r.cfg.Settings.ExemptMark, r.cfg.Settings.ExemptMask, err = parseMarkMask(*exempt); err != nil {
		return bad("--exempt-mark: %v", err)
	}
	if r.cfg.Settings.RouteMark, err = parseMark(*routeMark); err != nil || r.cfg.Settings.RouteMark == 0 {
		return bad("--route-mark %q: want a non-zero 32-bit mark", *routeMark)
	}
	switch {
	case *routeTable == 0 || *routeTable > 1<<32-1:
		return bad("--route-table %d: want 1 to %d", *routeTable, uint32(1<<32-1))
	case *routeTable >= 253 && *routeTable <= 255:
		return bad("--route-table %d: a table the system uses (default, main, local)", *routeTable)
	}
	r.cfg.RouteTable = uint32(*routeTable)
	return r, nil
}

// parseCapture parses --capture into sorted, distinct prefixes and ports.
func parseCapture(s string) ([]netip.Prefix, []uint16, error) {
	var prefixes []netip.Prefix
	var ports []uint16
	for entry := range strings.SplitSeq(s, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			return nil, nil, errors.New("empty entry")
		}
		cidr, port, hasPort := entry, "", false
		if rest, ok := strings.CutPrefix(entry, "["); ok {
			c, after, ok := strings.Cut(rest, "]")
			if !ok {
				return nil, nil, fmt.Errorf("%q: missing ]", entry)
			}
			cidr = c
			if after != "" {
				if port, hasPort = strings.CutPrefix(after, ":"); !hasPort {
					return nil, nil, fmt.Errorf("%q: want [CIDR]:PORT", entry)
				}
			}
		} else if strings.Count(entry, ":") == 1 {
			cidr, port, hasPort = strings.Cut(entry, ":")
		}
		p, err := parsePrefix(cidr)
		if err != nil {
			if _, bits, _ := strings.Cut(entry, "/"); cidr == entry && strings.Contains(bits, ":") {
				return nil, nil, fmt.Errorf("%q: write IPv6 as [CIDR]:PORT", entry)
			}
			return nil, nil, fmt.Errorf("%q: %v", entry, err)
		}
		prefixes = append(prefixes, p)
		if !hasPort {
			ports = append(ports, 80, 443)
			continue
		}
		n, err := strconv.ParseUint(port, 10, 16)
		if err != nil || n == 0 {
			return nil, nil, fmt.Errorf("%q: port %q: want 1 to 65535", entry, port)
		}
		ports = append(ports, uint16(n))
	}
	slices.SortFunc(prefixes, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	slices.Sort(ports)
	return slices.Compact(prefixes), slices.Compact(ports), nil
}

// parsePrefix parses a CIDR, or an address as a one-host prefix. Host
// bits must be zero, so a typo does not capture a wider range than meant.
func parsePrefix(s string) (netip.Prefix, error) {
	var p netip.Prefix
	if strings.Contains(s, "/") {
		var err error
		if p, err = netip.ParsePrefix(s); err != nil {
			return netip.Prefix{}, err
		}
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		if a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("%s: zones are not allowed", s)
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	switch {
	case p.Addr().Is4In6():
		return netip.Prefix{}, fmt.Errorf("%s: write IPv4-mapped addresses as IPv4", s)
	case p.Masked() != p:
		return netip.Prefix{}, fmt.Errorf("%s has host bits set (%s?)", s, p.Masked())
	}
	return p, nil
}

// parseMarkMask parses MARK/MASK (MARK alone: mask 0xffffffff; none: no
// exemption).
func parseMarkMask(s string) (mark, mask uint32, err error) {
	if s == "none" {
		return 0, 0, nil
	}
	ms, masks, hasMask := strings.Cut(s, "/")
	if mark, err = parseMark(ms); err != nil {
		return 0, 0, err
	}
	mask = 0xffffffff
	if hasMask {
		if mask, err = parseMark(masks); err != nil {
			return 0, 0, err
		}
	}
	if mask == 0 {
		return 0, 0, fmt.Errorf("%q: mask 0 matches every packet (use none)", s)
	}
	if mark&^mask != 0 {
		return 0, 0, fmt.Errorf("%q: the mark has bits outside the mask", s)
	}
	return mark, mask, nil
}

// parseMark parses a 32-bit mark, in decimal or 0x hex.
func parseMark(s string) (uint32, error) {
	n, err := strconv.ParseUint(s, 0, 32)
	if err != nil {
		return 0, fmt.Errorf("%q: want a 32-bit number such as 0x539", s)
	}
	return uint32(n), nil
}

// printStatus writes st readably.
func printStatus(w io.Writer, iface, dir string, st bpf.Status) {
	switch {
	case st.Mode == "":
		fmt.Fprintf(w, "%s: not attached (nothing pinned in %s)\n", iface, dir)
		return
	case st.Stale:
		fmt.Fprintf(w, "%s: STALE: pinned in %s, but its hooks are gone (interface deleted or recreated): attach again or detach\n", iface, dir)
	default:
		fmt.Fprintf(w, "%s: attached (%s, %s), pinned in %s\n", iface, st.Mode, st.Shape, dir)
	}
	ports := make([]string, len(st.Ports))
	for i, p := range st.Ports {
		ports[i] = strconv.Itoa(int(p))
	}
	prefixes := make([]string, len(st.Prefixes))
	for i, p := range st.Prefixes {
		prefixes[i] = p.String()
	}
	if len(ports) == 0 || len(prefixes) == 0 {
		fmt.Fprintf(w, "  capture:     nothing\n")
	} else {
		fmt.Fprintf(w, "  capture:     TCP to port %s at %s\n", strings.Join(ports, ", "), strings.Join(prefixes, ", "))
	}
	fmt.Fprintf(w, "  proxy port:  %d\n", st.Settings.ProxyPort)
	exempt := "none"
	if st.Settings.ExemptMask != 0 {
		exempt = fmt.Sprintf("%#x/%#x", st.Settings.ExemptMark, st.Settings.ExemptMask)
	}
	fmt.Fprintf(w, "  exempt mark: %s\n", exempt)
	fmt.Fprintf(w, "  route:       mark %#x, table %d\n", st.Settings.RouteMark, st.RouteTable)
	var counters []string
	for _, v := range bpf.Verdicts() {
		counters = append(counters, fmt.Sprintf("%s %d", v, st.Counters[v]))
	}
	fmt.Fprintf(w, "  packets:     %s\n", strings.Join(counters, ", "))
}
