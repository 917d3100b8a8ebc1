package cooldown

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// A journal is a file of text lines, appended one at a time and synced
// before append returns, or rewritten whole through a synced temporary
// file and a rename. It always ends at a line boundary a reader can
// recover to: a crash mid-append leaves a torn last line (no newline),
// which openJournal drops, cutting the file back to its last complete
// line; a failed append is undone by truncating the file to its length
// before it. A journal is not safe for concurrent use.
type journal struct {
	path string
	max  int64 // the largest file openJournal reads

	f    *os.File // open for writing, at the end
	size int64    // the file's length: where the next line goes
	// broken is set when a failed append could not be undone: nothing
	// more is appended until the journal is reopened.
	broken error
}

// openJournal opens, creating it if need be, the journal at path and
// returns its complete lines, without their newlines. A file longer than
// max bytes is an error.
func openJournal(path string, max int64) (*journal, [][]byte, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, nil, err
	}
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err == nil && int64(len(data)) > max {
		err = fmt.Errorf("%s: longer than %d bytes", path, max)
	}
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	end := bytes.LastIndexByte(data, '\n') + 1
	if end < len(data) {
		// A torn last line: cut it off before anything is appended.
		if err := f.Truncate(int64(end)); err != nil {
			f.Close()
			return nil, nil, fmt.Errorf("%s: dropping a torn last line: %w", path, err)
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return nil, nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	if _, err := f.Seek(int64(end), io.SeekStart); err != nil {
		f.Close()
		return nil, nil, err
	}
	var lines [][]byte
	for line := range bytes.Lines(data[:end]) {
		lines = append(lines, bytes.TrimSuffix(line, []byte("\n")))
	}
	return &journal{path: path, max: max, f: f, size: int64(end)}, lines, nil
}

// append writes line and a newline at the end of the file and syncs it.
// On error the file is cut back to its length before.
func (j *journal) append(line []byte) error {
	if j.broken != nil {
		return j.broken
	}
	if j.size+int64(len(line))+1 > j.max {
		return fmt.Errorf("%s: full (%d bytes)", j.path, j.max)
	}
	buf := append(bytes.Clone(line), '\n')
	_, err := j.f.Write(buf)
	if err == nil {
		err = j.f.Sync()
	}
	if err == nil {
		j.size += int64(len(buf))
		return nil
	}
	err = fmt.Errorf("%s: appending: %w", j.path, err)
	if uerr := j.undo(); uerr != nil {
		j.broken = fmt.Errorf("%s: an append failed and could not be undone (%v); reopen to recover: %w", j.path, uerr, err)
		return j.broken
	}
	return err
}

// undo cuts the file back to j.size after a failed append.
func (j *journal) undo() error {
	if err := j.f.Truncate(j.size); err != nil {
		return err
	}
	if _, err := j.f.Seek(j.size, io.SeekStart); err != nil {
		return err
	}
	return j.f.Sync()
}

// rewrite replaces the file's content with lines, atomically.
func (j *journal) rewrite(lines [][]byte) error {
	var buf bytes.Buffer
	for _, l := range lines {
		buf.Write(l)
		buf.WriteByte('\n')
	}
	dir := filepath.Dir(j.path)
	tmp := fmt.Sprintf("%s.tmp-%d", j.path, time.Now().UnixNano())
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		return err
	}
	_, err = f.Write(buf.Bytes())
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, j.path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("%s: rewriting: %w", j.path, err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	// The old descriptor points at the replaced file: reopen.
	nf, err := os.OpenFile(j.path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		j.broken = fmt.Errorf("%s: reopening after a rewrite: %w", j.path, err)
		return j.broken
	}
	j.f.Close()
	j.f, j.size, j.broken = nf, int64(buf.Len()), nil
	return nil
}

// close closes the file.
func (j *journal) close() error {
	if j == nil || j.f == nil {
		return nil
	}
	err := j.f.Close()
	j.f = nil
	if errors.Is(err, fs.ErrClosed) {
		return nil
	}
	return err
}
