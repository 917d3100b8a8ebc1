//go:build !linux

// Package bpf is modgate's transparent redirect, which needs Linux: on
// other systems Load reports that, so `go build ./...` works anywhere.
package bpf

import "errors"

// ErrUnsupported is Load's error where eBPF TC programs cannot run.
var ErrUnsupported = errors.New("the transparent redirect needs Linux")

// Program is the redirect programs; on this system it cannot be loaded.
type Program struct{}

// Load reports ErrUnsupported.
func Load() (*Program, error) { return nil, ErrUnsupported }

// Close does nothing.
func (p *Program) Close() error { return nil }
