package gateway

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
)

// origDstKey is the context key under which TransparentConnContext stores
// a redirected connection's original destination.
type origDstKey struct{}

// TransparentConnContext is ConnContext for the transparent listener: a
// connection the eBPF redirect handed to the proxy keeps its original
// destination as its local address, and the audit event records it.
func TransparentConnContext(ctx context.Context, c net.Conn) context.Context {
	ctx = ConnContext(ctx, c)
	if ap, err := netip.ParseAddrPort(c.LocalAddr().String()); err == nil {
		ctx = context.WithValue(ctx, origDstKey{}, ap)
	}
	return ctx
}

// errTLSRefused ends a connection that started a TLS handshake.
var errTLSRefused = errors.New("TLS on a captured connection is not served (yet)")

// RefuseTLS wraps a transparent listener: a connection whose first byte
// opens a TLS handshake is handed to refuse (to be audited) and closed,
// since captured TLS is not served yet; others are served as plain HTTP.
func RefuseTLS(l net.Listener, refuse func(c net.Conn)) net.Listener {
	return &tlsRefuser{Listener: l, refuse: refuse}
}

type tlsRefuser struct {
	net.Listener
	refuse func(net.Conn)
}

func (l *tlsRefuser) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &sniffConn{Conn: c, refuse: l.refuse}, nil
}

// sniffConn looks at the first byte read from a connection.
type sniffConn struct {
	net.Conn
	refuse func(net.Conn)
	once   sync.Once
	tls    bool
}

func (c *sniffConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.once.Do(func() {
			if p[0] == 0x16 { // TLS record type: handshake
				c.tls = true
				c.refuse(c.Conn)
				c.Conn.Close()
			}
		})
	}
	if c.tls {
		return 0, errTLSRefused
	}
	return n, err
}
