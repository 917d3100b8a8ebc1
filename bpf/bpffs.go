//go:build linux

package bpf

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// checkBPFFS reports a *NoBPFFSError unless pinRoot is, or can be made,
// a directory on a bpffs: its closest existing ancestor must be on one.
func checkBPFFS(pinRoot string) error {
	for dir := pinRoot; ; dir = filepath.Dir(dir) {
		var st unix.Statfs_t
		err := unix.Statfs(dir, &st)
		if errors.Is(err, unix.ENOENT) && dir != filepath.Dir(dir) {
			continue
		}
		if err != nil {
			return fmt.Errorf("check bpffs at %s: %w", dir, needRoot(err))
		}
		if st.Type != unix.BPF_FS_MAGIC {
			return &NoBPFFSError{Dir: filepath.Dir(pinRoot)}
		}
		return nil
	}
}

// MountBPFFS mounts a bpffs at dir (creating dir if it is missing), for
// a NoBPFFSError's Dir. It does nothing if dir already is one.
func MountBPFFS(dir string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err == nil && st.Type == unix.BPF_FS_MAGIC {
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("mount bpffs: %w", needRoot(err))
	}
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		return fmt.Errorf("mount bpffs at %s: %w", dir, needRoot(err))
	}
	return nil
}

// needRoot marks a permission error as ErrNeedRoot.
func needRoot(err error) error {
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) || errors.Is(err, fs.ErrPermission) {
		return fmt.Errorf("%w: %w", ErrNeedRoot, err)
	}
	return err
}

// netnsID identifies a network namespace: its nsfs device and inode.
type netnsID struct{ dev, ino uint64 }

// currentNetns is the calling thread's network namespace.
func currentNetns() (netnsID, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		return netnsID{}, fmt.Errorf("identify network namespace: %w", err)
	}
	return netnsID{dev: st.Dev, ino: st.Ino}, nil
}
