package main

import (
	"context"
	"fmt"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// listenTransparent opens the transparent listener: a socket with
// IP_TRANSPARENT (and IPV6_TRANSPARENT), which the eBPF redirect's
// bpf_sk_assign hands connections to whatever their destination; with
// policy routing, an IPv4 listener needs it (EBPF.md).
func listenTransparent(addr string) (net.Listener, error) {
	lc := net.ListenConfig{Control: func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			if network != "tcp4" {
				if e := unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_TRANSPARENT, 1); e != nil {
					serr = fmt.Errorf("IPV6_TRANSPARENT: %w", e)
					return
				}
			}
			if network != "tcp6" {
				if e := unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_TRANSPARENT, 1); e != nil {
					serr = fmt.Errorf("IP_TRANSPARENT: %w", e)
				}
			}
		})
		if err != nil {
			return err
		}
		return serr
	}}
	l, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("transparent listener (needs CAP_NET_ADMIN): %w", err)
	}
	return l, nil
}
