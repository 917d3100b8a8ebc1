package gateway

import (
	"net"
	"syscall"
)

// cork holds back partial TCP segments on c until uncork, so a response's
// headers and the first part of its body leave in full segments together,
// as nginx's tcp_nopush does for files it sends with sendfile. It returns
// the function that uncorks, which sends what is held back.
func cork(c net.Conn) (uncork func()) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return func() {}
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return func() {}
	}
	set := func(v int) {
		rc.Control(func(fd uintptr) {
			syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_CORK, v)
		})
	}
	set(1)
	return func() { set(0) }
}
