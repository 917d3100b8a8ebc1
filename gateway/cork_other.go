//go:build !linux

package gateway

import "net"

// cork does nothing where TCP_CORK is not available.
func cork(net.Conn) (uncork func()) { return func() {} }
