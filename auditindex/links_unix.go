//go:build unix

package auditindex

import (
	"os"
	"syscall"
)

// unlinked reports whether the file f is open on was deleted: it has no
// name left.
func unlinked(f *os.File) bool {
	if f == nil {
		return false
	}
	fi, err := f.Stat()
	if err != nil {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && st.Nlink == 0
}
