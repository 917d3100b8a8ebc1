// Package files reads and writes the small files modgate keeps (state,
// tokens, cached answers) with the limits and the atomicity every caller
// needs: a read never takes more than its bound, a replacement is seen
// whole or not at all, also after a crash.
package files

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// ReadMax reads the file name, which must hold at most max bytes: a
// longer one is an error, never a silent truncation.
func ReadMax(name string, max int64) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("%s: larger than %d bytes", name, max)
	}
	return data, nil
}

// WriteAtomic replaces the file at path with data, mode 0600: it writes a
// synced temporary file beside it, renames it over path, and syncs the
// directory. Readers see the old file or the new one, whole.
func WriteAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-") // mode 0600
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
