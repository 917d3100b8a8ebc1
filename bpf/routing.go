//go:build linux

package bpf

import (
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// routing is the policy routing captured packets need (EBPF.md): the
// original destination must be routed local, so capture_ingress marks
// captured packets and, for IPv4 and IPv6,
//
//	ip rule add fwmark MARK/MARK lookup TABLE pref PRIORITY
//	ip route replace local 0.0.0.0/0 dev lo table TABLE
//
// Everything happens in the calling thread's network namespace.
type routing struct {
	mark, table, priority uint32
	lo                    int // lo's ifindex
}

func (r routing) rule(family int) *netlink.Rule {
	rule := netlink.NewRule()
	rule.Family = family
	rule.Mark = r.mark
	mask := r.mark
	rule.Mask = &mask
	rule.Table = int(r.table)
	rule.Priority = int(r.priority)
	return rule
}

func (r routing) route(family int) *netlink.Route {
	dst := &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
	if family == unix.AF_INET6 {
		dst = &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
	}
	return &netlink.Route{
		Family:    family,
		LinkIndex: r.lo,
		Dst:       dst,
		Table:     int(r.table),
		Type:      unix.RTN_LOCAL,
		Scope:     unix.RT_SCOPE_HOST,
	}
}

var families = []int{unix.AF_INET, unix.AF_INET6}

func familyName(f int) string {
	if f == unix.AF_INET6 {
		return "ipv6"
	}
	return "ipv4"
}

// add installs the rules and routes; ones already there are kept. IPv6
// is skipped where the kernel has it disabled.
func (r routing) add() error {
	for _, f := range families {
		err := netlink.RuleAdd(r.rule(f))
		if f == unix.AF_INET6 && errors.Is(err, unix.EAFNOSUPPORT) {
			continue
		}
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("add %s rule fwmark %#x lookup %d: %w", familyName(f), r.mark, r.table, needRoot(err))
		}
		if err := netlink.RouteReplace(r.route(f)); err != nil {
			return fmt.Errorf("add %s local route in table %d: %w", familyName(f), r.table, needRoot(err))
		}
	}
	return nil
}

// removeUnused deletes the rules and routes, except those one of others
// needs too; missing ones are no error.
func (r routing) removeUnused(others []routing) error {
	keepRule := slices.Contains(others, r)
	keepRoute := slices.ContainsFunc(others, func(o routing) bool { return o.table == r.table })
	var errs []error
	for _, f := range families {
		if !keepRule {
			if err := netlink.RuleDel(r.rule(f)); err != nil && !gone(err) {
				errs = append(errs, fmt.Errorf("delete %s rule fwmark %#x lookup %d: %w", familyName(f), r.mark, r.table, needRoot(err)))
			}
		}
		if !keepRoute {
			if err := netlink.RouteDel(r.route(f)); err != nil && !gone(err) {
				errs = append(errs, fmt.Errorf("delete %s local route in table %d: %w", familyName(f), r.table, needRoot(err)))
			}
		}
	}
	return errors.Join(errs...)
}

// gone reports whether err means the thing to delete is not there.
func gone(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH) ||
		errors.Is(err, unix.ENODEV) || errors.Is(err, unix.EAFNOSUPPORT)
}

// acceptLocalPath is lo's accept_local sysctl: the in-pod shape sends
// packets from the pod's own address into lo, which drops them as
// martians unless it is 1. /proc/sys/net is the calling thread's netns.
const acceptLocalPath = "/proc/sys/net/ipv4/conf/lo/accept_local"

// setAcceptLocal sets lo's accept_local to v and returns what it was.
func setAcceptLocal(v bool) (was bool, err error) {
	b, err := os.ReadFile(acceptLocalPath)
	if err != nil {
		return false, fmt.Errorf("read lo's accept_local: %w", needRoot(err))
	}
	was = strings.TrimSpace(string(b)) == "1"
	if was == v {
		return was, nil
	}
	s := "0"
	if v {
		s = "1"
	}
	if err := os.WriteFile(acceptLocalPath, []byte(s), 0); err != nil {
		return was, fmt.Errorf("set lo's accept_local: %w", needRoot(err))
	}
	return was, nil
}
