//go:build !linux

package main

import (
	"errors"
	"net"
)

// listenTransparent refuses: the transparent redirect needs Linux.
func listenTransparent(string) (net.Listener, error) {
	return nil, errors.New("the transparent listener needs Linux")
}
