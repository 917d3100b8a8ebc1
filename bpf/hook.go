//go:build linux

package bpf

import (
	"errors"
	"fmt"
	"os"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// A hook is one program on one side of one device: TCX where the kernel
// has it (≥ 6.6), else a tc filter on a clsact qdisc.
type hook struct {
	ifindex int
	ingress bool   // else egress
	pin     string // the TCX link's pin
}

// How a hook is attached, as recorded in the state.
const (
	modeTCX = 1
	modeTC  = 2
)

func modeName(m uint8) string {
	switch m {
	case modeTCX:
		return "tcx"
	case modeTC:
		return "tc"
	}
	return ""
}

// The tc fallback's filter: preference 1 runs before filters added with
// the default preferences; the handle is "MG".
const (
	tcPriority = 1
	tcHandle   = 0x4d47
)

// attachTCX attaches prog at the head of h's TCX chain, so it runs before
// the CNI's program, and pins the link.
func (h hook) attachTCX(prog *ebpf.Program) error {
	at := ebpf.AttachTCXEgress
	if h.ingress {
		at = ebpf.AttachTCXIngress
	}
	l, err := link.AttachTCX(link.TCXOptions{
		Interface: h.ifindex,
		Program:   prog,
		Attach:    at,
		Anchor:    link.Head(),
	})
	if err != nil {
		return fmt.Errorf("attach tcx %s: %w", h, needRoot(err))
	}
	defer l.Close()
	if err := l.Pin(h.pin); err != nil {
		return fmt.Errorf("pin tcx link: %w", needRoot(err))
	}
	return nil
}

// detachTCX detaches and unpins h's TCX link; a missing pin is no error.
func (h hook) detachTCX() error {
	l, err := link.LoadPinnedLink(h.pin, nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("load tcx link %s: %w", h.pin, needRoot(err))
	}
	defer l.Close()
	// Detach even if another process still holds the link; a link whose
	// device is gone is detached already.
	if err := l.Detach(); err != nil && !errors.Is(err, ebpf.ErrNotSupported) && !gone(err) && !errors.Is(err, unix.ENOLINK) {
		return fmt.Errorf("detach tcx %s: %w", h, err)
	}
	if err := l.Unpin(); err != nil {
		return fmt.Errorf("unpin tcx link: %w", err)
	}
	return nil
}

// tcxIntact reports whether h's pinned TCX link is still attached to h's
// device.
func (h hook) tcxIntact() bool {
	l, err := link.LoadPinnedLink(h.pin, nil)
	if err != nil {
		return false
	}
	defer l.Close()
	info, err := l.Info()
	if err != nil {
		return false
	}
	tcx := info.TCX()
	return tcx != nil && int(tcx.Ifindex) == h.ifindex
}

func (h hook) parent() uint32 {
	if h.ingress {
		return netlink.HANDLE_MIN_INGRESS
	}
	return netlink.HANDLE_MIN_EGRESS
}

func (h hook) filter(prog *ebpf.Program) *netlink.BpfFilter {
	f := &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: h.ifindex,
			Parent:    h.parent(),
			Handle:    tcHandle,
			Priority:  tcPriority,
			Protocol:  unix.ETH_P_ALL,
		},
		Name:         "modgate",
		DirectAction: true,
	}
	if prog != nil {
		f.Fd = prog.FD()
	}
	return f
}

func clsact(ifindex int) *netlink.GenericQdisc {
	return &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{
			LinkIndex: ifindex,
			Handle:    netlink.MakeHandle(0xffff, 0),
			Parent:    netlink.HANDLE_CLSACT,
		},
		QdiscType: "clsact",
	}
}

// attachTC adds a direct-action tc filter running prog, and the clsact
// qdisc it needs if the device has none; it reports whether it created
// the qdisc.
func (h hook) attachTC(prog *ebpf.Program) (createdQdisc bool, err error) {
	err = netlink.QdiscAdd(clsact(h.ifindex))
	switch {
	case err == nil:
		createdQdisc = true
	case errors.Is(err, unix.EEXIST):
	case errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EOPNOTSUPP):
		return false, fmt.Errorf("attach tc %s: kernel lacks the clsact qdisc (CONFIG_NET_SCH_INGRESS): %w", h, err)
	default:
		return false, fmt.Errorf("attach tc %s: add clsact qdisc: %w", h, needRoot(err))
	}
	if err := netlink.FilterAdd(h.filter(prog)); err != nil {
		if createdQdisc {
			netlink.QdiscDel(clsact(h.ifindex))
		}
		return false, fmt.Errorf("attach tc %s: add bpf filter: %w", h, needRoot(err))
	}
	return createdQdisc, nil
}

// detachTC deletes h's filter, and the clsact qdisc if Attach created
// it; missing ones are no error.
func (h hook) detachTC(deleteQdisc bool) error {
	err := netlink.FilterDel(h.filter(nil))
	if err != nil && !gone(err) {
		return fmt.Errorf("detach tc %s: delete filter: %w", h, needRoot(err))
	}
	if deleteQdisc {
		err := netlink.QdiscDel(clsact(h.ifindex))
		if err != nil && !gone(err) && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("detach tc %s: delete clsact qdisc: %w", h, needRoot(err))
		}
	}
	return nil
}

// tcIntact reports whether h's tc filter is on h's device.
func (h hook) tcIntact() bool {
	l, err := netlink.LinkByIndex(h.ifindex)
	if err != nil {
		return false
	}
	filters, err := netlink.FilterList(l, h.parent())
	if err != nil {
		return false
	}
	for _, f := range filters {
		a := f.Attrs()
		if _, ok := f.(*netlink.BpfFilter); ok && a.Handle == tcHandle && a.Priority == tcPriority {
			return true
		}
	}
	return false
}

func (h hook) String() string {
	side := "egress"
	if h.ingress {
		side = "ingress"
	}
	return fmt.Sprintf("ifindex %d %s", h.ifindex, side)
}
