package integration

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// killOnRotation kills g with SIGKILL as soon as its audit log at path
// starts rotating (the first rename among its files, which inotify
// reports), and reports whether it did; after within, it kills g anyway.
func killOnRotation(t *testing.T, g *gatewayProc, path string, within time.Duration) bool {
	t.Helper()
	fd, err := syscall.InotifyInit1(syscall.IN_CLOEXEC | syscall.IN_NONBLOCK)
	if err != nil {
		t.Fatalf("inotify: %v", err)
	}
	f := os.NewFile(uintptr(fd), "inotify") // non-blocking: read deadlines work
	defer f.Close()
	if _, err := syscall.InotifyAddWatch(fd, filepath.Dir(path), syscall.IN_MOVED_FROM); err != nil {
		t.Fatalf("inotify: %v", err)
	}
	f.SetReadDeadline(time.Now().Add(within))
	buf := make([]byte, 64<<10)
	for {
		n, err := f.Read(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			g.kill(t)
			return false
		}
		if err != nil {
			t.Fatalf("inotify: %v", err)
		}
		for off := 0; off+syscall.SizeofInotifyEvent <= n; {
			ev := (*syscall.InotifyEvent)(unsafe.Pointer(&buf[off]))
			name := strings.TrimRight(string(buf[off+syscall.SizeofInotifyEvent:off+syscall.SizeofInotifyEvent+int(ev.Len)]), "\x00")
			if strings.HasPrefix(name, filepath.Base(path)) {
				g.kill(t)
				return true
			}
			off += syscall.SizeofInotifyEvent + int(ev.Len)
		}
	}
}
