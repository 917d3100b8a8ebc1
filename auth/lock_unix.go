//go:build unix

package auth

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// lock takes an exclusive lock that serialises updates of the tokens file
// at path, waiting for it if needed, and returns the function that
// releases it. The lock is flock(2) on the file path+".lock" (created
// empty, mode 0600, and left in place): the tokens file itself is replaced
// by each update, so it cannot carry the lock. The kernel releases the
// lock if the process dies.
func lock(path string) (unlock func(), err error) {
	f, err := os.OpenFile(path+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", f.Name(), err)
	}
	return func() { f.Close() }, nil // closing releases the lock
}
