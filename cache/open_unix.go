//go:build unix

package cache

import (
	"os"
	"syscall"
)

// openBlob opens a blob for reading. Unlike os.Open it does not try to
// register the regular file with the network poller (on Linux that costs
// five failing or undone system calls per open, on every cache hit).
func openBlob(path string) (*os.File, error) {
	for {
		fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "open", Path: path, Err: err}
		}
		return os.NewFile(uintptr(fd), path), nil
	}
}
