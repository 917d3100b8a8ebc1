//go:build !linux

package upstream

import (
	"errors"
	"syscall"
)

// markControl refuses: socket marks are a Linux feature.
func markControl(uint32) func(network, address string, c syscall.RawConn) error {
	return func(string, string, syscall.RawConn) error {
		return errors.New("upstream: socket marks (SO_MARK) need Linux")
	}
}
