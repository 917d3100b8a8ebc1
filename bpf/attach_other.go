//go:build !linux

package bpf

// Attach reports ErrUnsupported.
func Attach(cfg AttachConfig) error { return ErrUnsupported }

// Detach reports ErrUnsupported.
func Detach(iface, pinRoot string) error { return ErrUnsupported }

// GetStatus reports ErrUnsupported.
func GetStatus(iface, pinRoot string) (Status, error) { return Status{}, ErrUnsupported }

// MountBPFFS reports ErrUnsupported.
func MountBPFFS(dir string) error { return ErrUnsupported }
