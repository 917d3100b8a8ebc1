package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"time"
)

// Defaults of FileOptions.
const (
	DefaultMaxBytes = 100 << 20
	DefaultKeep     = 10
)

// FileOptions configures OpenFile. The zero value works.
type FileOptions struct {
	// MaxBytes is the size past which the file is rotated: a write that
	// would take it over MaxBytes goes to a new file (a line is never
	// split; a line larger than MaxBytes gets a file of its own). Default
	// DefaultMaxBytes (100 MiB).
	MaxBytes int64
	// Keep is how many rotated files are kept: PATH.1 (the newest) …
	// PATH.Keep (the oldest); rotation deletes the one after. Default
	// DefaultKeep (10).
	Keep int
	// WriterOptions bound the Writer's queue.
	WriterOptions
}

// OpenFile returns a Writer appending to the file at path (created with
// mode 0640), rotating it by size, and continuing the chain of the lines
// already there — across restarts and rotation: it reads the last line of
// path or, if path is empty or missing (a crash between rotating and
// creating the new file), of path.1.
//
// A torn final line (the previous writer stopped mid-line: no newline) is
// ended with a newline and followed by an ActionRecovered event whose
// Chain.Torn is the torn line's hash and whose Chain.Prev is the hash of
// the line before it, so the chain continues past the crash and Verify
// reports the torn line as torn, not as tampering. If the last line is
// not a chained audit event (a log from before modgate chained its audit
// log, or a damaged one), OpenFile does not extend it: it rotates path
// aside and starts a new chain with an ActionChainStarted event saying
// why.
//
// The Writer owns the file: Close closes it. Only one Writer may append to
// a file; a second one would break the chain. Lines are written with
// write(2), not synced (a file is synced when rotated and closed), so a
// process crash loses no written line; a machine crash may.
func OpenFile(path string, opts FileOptions) (*Writer, error) {
	switch {
	case opts.MaxBytes < 0:
		return nil, fmt.Errorf("audit: FileOptions.MaxBytes is negative (%d)", opts.MaxBytes)
	case opts.Keep < 0:
		return nil, fmt.Errorf("audit: FileOptions.Keep is negative (%d)", opts.Keep)
	}
	if err := opts.WriterOptions.check(); err != nil {
		return nil, err
	}
	s := &fileSink{path: path, maxBytes: opts.MaxBytes, keep: opts.Keep}
	if s.maxBytes == 0 {
		s.maxBytes = DefaultMaxBytes
	}
	if s.keep == 0 {
		s.keep = DefaultKeep
	}
	start, note, err := s.open()
	if err != nil {
		return nil, fmt.Errorf("open audit file: %w", err)
	}
	w, err := newWriter(s, opts.WriterOptions, start)
	if err != nil {
		s.Close()
		return nil, err
	}
	w.closer = s
	if note != nil {
		if err := w.Record(note); err != nil {
			w.Close()
			return nil, err
		}
	}
	return w, nil
}

// A fileSink is an io.Writer of whole lines to a file, rotated by size.
// After open, only the Writer's goroutine uses it.
type fileSink struct {
	path     string
	maxBytes int64
	keep     int
	f        *os.File
	size     int64
}

// name is the path of rotated file i, or of the current file for i == 0.
func (s *fileSink) name(i int) string {
	if i == 0 {
		return s.path
	}
	return s.path + "." + strconv.Itoa(i)
}

// open opens the current file and works out where the chain continues:
// the chain start, and an event to write first, if any.
func (s *fileSink) open() (chainStart, *Event, error) {
	f, err := os.OpenFile(s.path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return chainStart{}, nil, err
	}
	s.f = f
	t, err := readTail(f)
	if err != nil {
		f.Close()
		return chainStart{}, nil, err
	}
	s.size = t.size
	if t.torn != nil {
		if _, ok := parseChain(t.torn); ok {
			// Only the newline was lost: the line is whole.
			t.last, t.torn = t.torn, nil
		}
		if _, err := f.Write([]byte{'\n'}); err != nil {
			f.Close()
			return chainStart{}, nil, fmt.Errorf("ending a torn line: %w", err)
		}
		s.size++
	}
	var torn string
	if t.torn != nil {
		sum := sha256.Sum256(t.torn)
		torn = hex.EncodeToString(sum[:])
	}

	if t.ok && t.last == nil {
		// Nothing whole in this file: continue from the newest rotated one.
		p1, err := readTailFile(s.name(1))
		switch {
		case err != nil:
			f.Close()
			return chainStart{}, nil, err
		case p1.size == 0:
			if torn == "" {
				return chainStart{}, nil, nil // a new log
			}
			return chainStart{torn: torn}, recovered(s.path, len(t.torn), "no line before it: a new chain starts"), nil
		}
		if c, ok := parseChain(p1.last); ok && p1.ok && p1.torn == nil {
			start := chainStart{seq: c.Seq, prev: lineHash(p1.last), torn: torn}
			if torn == "" {
				return start, nil, nil
			}
			return start, recovered(s.path, len(t.torn), fmt.Sprintf("the chain continues from the last line of %s", s.name(1))), nil
		}
		reason := fmt.Sprintf("the last line of %s is not a chained audit event (written before modgate chained its audit log, or damaged): a new chain starts", s.name(1))
		if torn != "" {
			reason += fmt.Sprintf("; %s began with a torn line of %d bytes (a crash mid-write), ended with a newline", s.path, len(t.torn))
		}
		return chainStart{torn: torn}, chainStarted(reason), nil
	}

	if t.ok {
		if c, ok := parseChain(t.last); ok {
			start := chainStart{seq: c.Seq, prev: lineHash(t.last), torn: torn}
			if torn == "" {
				return start, nil, nil
			}
			return start, recovered(s.path, len(t.torn), "the chain continues from the line before it"), nil
		}
	}
	// The file ends with something that is not a chained line: set it aside.
	if err := s.rotate(); err != nil {
		s.f.Close()
		return chainStart{}, nil, fmt.Errorf("setting aside %s, whose last line is not a chained audit event: %w", s.path, err)
	}
	reason := fmt.Sprintf("%s ended with a line that is not a chained audit event (written before modgate chained its audit log, or damaged): moved it to %s; a new chain starts", s.path, s.name(1))
	if torn != "" {
		reason += fmt.Sprintf("; its torn last line (%d bytes, a crash mid-write) was ended with a newline", len(t.torn))
	}
	return chainStart{}, chainStarted(reason), nil
}

func recovered(path string, n int, how string) *Event {
	return &Event{
		Timestamp: time.Now().UTC(),
		Event: EventFields{
			Action:  ActionRecovered,
			Outcome: OutcomeFailure,
			Reason:  fmt.Sprintf("%s ended with a torn line of %d bytes (the previous writer stopped mid-line): ended it with a newline; %s", path, n, how),
		},
	}
}

func chainStarted(reason string) *Event {
	return &Event{
		Timestamp: time.Now().UTC(),
		Event:     EventFields{Action: ActionChainStarted, Outcome: OutcomeFailure, Reason: reason},
	}
}

// Write writes p, whole lines, rotating the file first if p would take it
// over maxBytes. A line is never split across files. If rotation fails,
// the lines go to the current file and the error is returned after. If a
// write fails (the disk is full), the part of it that was written is cut
// off again, so the file still ends with a whole line, and the count
// returned is of whole lines.
func (s *fileSink) Write(p []byte) (int, error) {
	var written int
	var rotErr error
	for len(p) > 0 {
		n := len(p)
		if room := s.maxBytes - s.size; int64(n) > room && rotErr == nil {
			n = 0
			if room > 0 {
				n = bytes.LastIndexByte(p[:room], '\n') + 1 // the lines that fit
			}
			if n == 0 {
				if s.size > 0 {
					if rotErr = s.rotate(); rotErr == nil {
						continue
					}
					n = len(p)
				} else if n = bytes.IndexByte(p, '\n') + 1; n == 0 {
					n = len(p) // a line larger than maxBytes: a file of its own
				}
			}
		}
		m, err := s.f.Write(p[:n])
		s.size += int64(m)
		written += m
		if err != nil {
			if m > 0 && s.f.Truncate(s.size-int64(m)) == nil {
				s.size -= int64(m)
				written -= m
			}
			return written, err
		}
		p = p[n:]
	}
	return written, rotErr
}

// rotate moves path to path.1, path.1 to path.2 and so on, deleting the
// file past keep, and starts a new file at path. If the new file cannot be
// created, writing continues in the old one (now path.1, or still path).
func (s *fileSink) rotate() error {
	if err := s.f.Sync(); err != nil {
		return fmt.Errorf("rotate audit file: %w", err)
	}
	for i := s.keep + 1; ; i++ { // files kept under a larger Keep before
		if err := os.Remove(s.name(i)); err != nil {
			break
		}
	}
	for i := s.keep; i >= 1; i-- {
		if err := os.Rename(s.name(i-1), s.name(i)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("rotate audit file: %w", err)
		}
	}
	f, err := os.OpenFile(s.path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return fmt.Errorf("rotate audit file: %w", err)
	}
	old := s.f
	s.f, s.size = f, 0
	if err := old.Close(); err != nil {
		return fmt.Errorf("rotate audit file: closing %s: %w", s.name(1), err)
	}
	return nil
}

// Close syncs and closes the file.
func (s *fileSink) Close() error {
	if s.f == nil {
		return nil
	}
	err := s.f.Sync()
	if cerr := s.f.Close(); err == nil {
		err = cerr
	}
	s.f = nil
	return err
}

// tail is the end of a file.
type tail struct {
	size int64
	last []byte // the last whole line, without its newline; nil if none
	torn []byte // the bytes after the last newline; nil if the file ends with one
	ok   bool   // false if the lines are longer than a line may be: last and torn are unknown
}

// tailWindow is how far back readTail reads: enough for a torn line, the
// line before it, and the newline before that.
const tailWindow = 2*maxLine + 3

// readTail reads the end of f.
func readTail(f *os.File) (tail, error) {
	st, err := f.Stat()
	if err != nil {
		return tail{}, err
	}
	t := tail{size: st.Size()}
	n := min(t.size, tailWindow)
	b := make([]byte, n)
	if _, err := f.ReadAt(b, t.size-n); err != nil && !errors.Is(err, io.EOF) {
		return tail{}, err
	}
	t.last, t.torn, t.ok = splitTail(b, n < t.size)
	return t, nil
}

// readTailFile reads the end of the file at path; a missing file is an
// empty one.
func readTailFile(path string) (tail, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return tail{ok: true}, nil
	}
	if err != nil {
		return tail{}, err
	}
	defer f.Close()
	return readTail(f)
}

// splitTail splits the end of a file into its last whole line and the
// torn bytes after it. partial says b does not start at the start of the
// file, so a line must be seen to start after a newline in b.
func splitTail(b []byte, partial bool) (last, torn []byte, ok bool) {
	end := len(b)
	if end > 0 && b[end-1] != '\n' {
		i := bytes.LastIndexByte(b, '\n')
		if i < 0 && partial || len(b)-(i+1) > maxLine {
			return nil, nil, false
		}
		torn, end = b[i+1:], i+1
	}
	if end == 0 {
		return nil, torn, true
	}
	i := bytes.LastIndexByte(b[:end-1], '\n')
	if i < 0 && partial || end-1-(i+1) > maxLine {
		return nil, nil, false
	}
	return b[i+1 : end-1], torn, true
}

// parseChain returns the chain of a line, if it is a JSON object with a
// well-formed one.
func parseChain(line []byte) (*Chain, bool) {
	c, err := parseLine(line)
	return c, err == nil
}

// isHash reports whether s is a lower-case hex SHA-256.
func isHash(s string) bool {
	if len(s) != 2*sha256.Size {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// lineHash is the chain hash of a line, without its newline.
func lineHash(line []byte) string {
	sum := sha256.Sum256(line)
	return hex.EncodeToString(sum[:])
}
