// Package ledger is modgate's record of the hashes of private modules,
// which no public checksum database may be asked about: trust on first
// use, as the go command's own go.sum does.
//
// The ledger is one append-only text file. Each line records one hash, in
// go.sum's words, followed by a chain value:
//
//	corp.example/m v1.2.3 h1:… 5f0c…
//	corp.example/m v1.2.3/go.mod h1:… 9ab1…
//
// The chain value is the hex SHA-256 of the previous line's chain value, a
// newline, and this line's first three fields; the first line's previous
// value is empty. Editing, deleting or reordering a line therefore breaks
// the chain at that line, which Read reports.
//
// A line is appended and synced to disk before Check returns, so a crash
// loses no acknowledged hash. The file always ends at a line boundary a
// reader can recover to:
//
//   - A crash mid-append leaves a torn final line (no newline), which Open
//     drops, cutting the file back to its last complete line before the
//     next append.
//   - A failed append (a short write, a write error or a failed sync) is
//     undone before Check returns its error: the file is truncated to its
//     length before the append and synced, so it ends at its last
//     acknowledged line, the next Check appends there, and a retry
//     records the hash once.
//   - If undoing the append fails too, the Ledger is broken until
//     reopened: every later Check returns an error and nothing more is
//     appended. The file then holds at most one line past the last
//     acknowledged one: a torn line, which Open drops, or a complete,
//     valid line that was never acknowledged (as after a crash between
//     write and sync), which Open keeps. Either way Open accepts the file.
//
// # One ledger for several replicas
//
// Replicas that share a cache share the ledger too (Share): each module
// version's hash is then also one object in a shared store, created only
// if absent, and that object is the authority. The first replica to
// record a hash wins; every other replica compares against its record, so
// two replicas can never record different hashes for one private version.
// Each replica's file stays its own tamper-evident, hash-chained view of
// what it checked: it only ever records a hash after the shared record
// agreed with it.
//
// A Ledger is safe for concurrent use.
package ledger

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"sync"

	"golang.org/x/mod/module"
)

// maxLine bounds a ledger line: a module path, a version, a hash, a chain.
const maxLine = 4 << 10

// An Entry is one recorded hash.
type Entry struct {
	Line    int    // 1-based line number in the file
	Module  string // module path
	Version string // version, with a /go.mod suffix for a go.mod hash
	Hash    string // "h1:…"
}

// A MismatchError is a hash that differs from the one recorded.
type MismatchError struct {
	Module, Version string
	Recorded, Got   string
}

func (e *MismatchError) Error() string {
	return fmt.Sprintf("%s %s: hash %s differs from the private ledger's %s, recorded on first fetch", e.Module, e.Version, e.Got, e.Recorded)
}

// A ChainError is a ledger file whose chain breaks: a line was edited,
// removed or moved, or is not a ledger line at all.
type ChainError struct {
	Line   int
	Reason string
}

func (e *ChainError) Error() string {
	return fmt.Sprintf("ledger line %d: %s", e.Line, e.Reason)
}

// Records is the store that replicas share one ledger through (package
// s3store): Get reads an object whole, at most max bytes, with an error
// wrapping fs.ErrNotExist if it is absent; Put with ifAbsent creates an
// object only if absent, with an error wrapping fs.ErrExist if not. Any
// other error means the store is unavailable.
type Records interface {
	Get(ctx context.Context, name string, max int64) ([]byte, error)
	Put(ctx context.Context, name string, data []byte, ifAbsent bool) error
}

// ErrUnavailable is wrapped by Check's error when the shared records
// cannot be read or written: the hash is neither accepted nor refused.
var ErrUnavailable = errors.New("shared ledger unavailable")

// A Ledger records hashes in a file.
type Ledger struct {
	path   string
	log    *slog.Logger
	shared Records // nil: this file is the ledger

	mu     sync.Mutex
	f      file
	size   int64             // length of the file up to its last acknowledged line
	sums   map[string]string // "module version" → hash
	last   string            // chain value of the last line
	broken error             // why an append could not be undone; nil if it could
}

// file is the part of *os.File a Ledger writes through, so that the
// package's tests can make it fail.
type file interface {
	WriteAt(b []byte, off int64) (int, error)
	Sync() error
	Truncate(size int64) error
	Close() error
}

// Open opens (creating it if needed) the ledger file at path, checking its
// whole chain. A torn final line is cut off with a warning; any other
// break is a *ChainError, and the ledger is not opened.
func Open(path string, log *slog.Logger) (*Ledger, error) {
	if log == nil {
		log = slog.Default()
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	data, err := io.ReadAll(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("ledger: %w", err)
	}
	if i := bytes.LastIndexByte(data, '\n'); i+1 < len(data) {
		log.Warn("ledger: dropping a torn final line (a crash mid-append)", "file", path, "bytes", len(data)-(i+1))
		if err := cut(f, int64(i+1)); err != nil {
			f.Close()
			return nil, fmt.Errorf("ledger: dropping a torn final line: %w", err)
		}
		data = data[:i+1]
	}
	entries, last, err := read(bytes.NewReader(data))
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("ledger %s: %w", path, err)
	}
	l := &Ledger{path: path, log: log, f: f, size: int64(len(data)), sums: make(map[string]string, len(entries)), last: last}
	for _, e := range entries {
		l.sums[e.Module+" "+e.Version] = e.Hash
	}
	return l, nil
}

// Close closes the ledger file.
func (l *Ledger) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Close()
}

// Share makes r the ledger's authority, shared with other replicas (see
// the package comment). Call it before the first Check.
func (l *Ledger) Share(r Records) { l.shared = r }

// Check compares hash with the one recorded for path at version (which
// ends in /go.mod for a go.mod hash). With none recorded, it records hash
// and reports first. A different recorded hash is a *MismatchError.
//
// With shared records, a hash this file has not recorded is checked
// against them first: created there if absent (first), else compared with
// the record there. Only ctx bounds that.
//
// If recording fails, Check undoes the partial append and returns an
// error; the hash is not recorded and a later Check may record it. If the
// append cannot be undone, this and every later Check return an error
// until the ledger is reopened.
func (l *Ledger) Check(ctx context.Context, path, version, hash string) (first bool, err error) {
	if err := checkFields(path, version, hash); err != nil {
		return false, fmt.Errorf("ledger: %w", err)
	}
	key := path + " " + version
	if l.shared != nil {
		// Not under l.mu: a round trip to the store must not hold up
		// checks of other versions.
		if done, err := l.compare(key, path, version, hash); done || err != nil {
			return false, err
		}
		if first, err = l.checkShared(ctx, path, version, hash); err != nil {
			return false, err
		}
	} else {
		first = true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if done, err := l.compareLocked(key, path, version, hash); done || err != nil {
		return false, err
	}
	chain := next(l.last, key+" "+hash)
	line := []byte(key + " " + hash + " " + chain + "\n")
	if err := l.appendLine(line); err != nil {
		return false, fmt.Errorf("ledger: recording %s: %w", key, err)
	}
	l.sums[key] = hash
	l.last = chain
	return first, nil
}

// Recorded returns the hash recorded for path at version (ending in
// /go.mod for a go.mod hash): this file's record, or else, with shared
// records, the store's. ok is false if neither has one; an error wrapping
// ErrUnavailable means the store could not be asked.
func (l *Ledger) Recorded(ctx context.Context, path, version string) (hash string, ok bool, err error) {
	l.mu.Lock()
	hash, ok = l.sums[path+" "+version]
	l.mu.Unlock()
	if ok || l.shared == nil {
		return hash, ok, nil
	}
	name, err := recordName(path, version)
	if err != nil {
		return "", false, fmt.Errorf("ledger: %w", err)
	}
	data, err := l.shared.Get(ctx, name, maxLine)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "", false, nil
	case err != nil:
		return "", false, fmt.Errorf("%w: reading the record of %s %s: %v", ErrUnavailable, path, version, err)
	}
	f := strings.Fields(string(data))
	if len(f) != 3 || f[0] != path || f[1] != version || checkFields(f[0], f[1], f[2]) != nil {
		return "", false, fmt.Errorf("ledger: the shared record of %s %s is malformed", path, version)
	}
	return f[2], true, nil
}

// compare checks hash against this file's record of key: done if there is
// one and it matches, a *MismatchError if it differs.
func (l *Ledger) compare(key, path, version, hash string) (done bool, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.compareLocked(key, path, version, hash)
}

func (l *Ledger) compareLocked(key, path, version, hash string) (done bool, err error) {
	if l.broken != nil {
		return false, fmt.Errorf("ledger %s is broken until reopened: an earlier append could not be undone: %w", l.path, l.broken)
	}
	rec, ok := l.sums[key]
	switch {
	case !ok:
		return false, nil
	case rec != hash:
		return false, &MismatchError{Module: path, Version: version, Recorded: rec, Got: hash}
	}
	return true, nil
}

// checkShared records hash in the shared records if none is there (first),
// or compares it with the one there.
func (l *Ledger) checkShared(ctx context.Context, path, version, hash string) (first bool, err error) {
	name, err := recordName(path, version)
	if err != nil {
		return false, fmt.Errorf("ledger: %w", err)
	}
	line := path + " " + version + " " + hash + "\n"
	err = l.shared.Put(ctx, name, []byte(line), true)
	if err == nil {
		return true, nil
	}
	if !errors.Is(err, fs.ErrExist) {
		return false, fmt.Errorf("%w: recording %s %s: %v", ErrUnavailable, path, version, err)
	}
	data, err := l.shared.Get(ctx, name, maxLine)
	if err != nil {
		return false, fmt.Errorf("%w: reading the record of %s %s: %v", ErrUnavailable, path, version, err)
	}
	f := strings.Fields(string(data))
	if len(f) != 3 || f[0] != path || f[1] != version || checkFields(f[0], f[1], f[2]) != nil {
		// Not something a replica writes: refuse rather than trust it.
		return false, fmt.Errorf("ledger: the shared record of %s %s is malformed: %q", path, version, data)
	}
	if f[2] != hash {
		return false, &MismatchError{Module: path, Version: version, Recorded: f[2], Got: hash}
	}
	return false, nil
}

// recordName is the shared records' object for path at version, laid
// out as a module proxy lays out its files (a name that is a file never
// is a directory too, which file-backed stores need):
// ledger/ESCAPEDPATH/@v/ESCAPEDVERSION.zip for a zip's hash, .mod for a
// go.mod's. Escaping keeps names distinct on case-insensitive stores.
func recordName(path, version string) (string, error) {
	v, mod := strings.CutSuffix(version, "/go.mod")
	ep, err := module.EscapePath(path)
	if err != nil {
		return "", err
	}
	ev, err := module.EscapeVersion(v)
	if err != nil {
		return "", err
	}
	if mod {
		return "ledger/" + ep + "/@v/" + ev + ".mod", nil
	}
	return "ledger/" + ep + "/@v/" + ev + ".zip", nil
}

// appendLine writes line after the last acknowledged line and syncs it.
// If either fails, it cuts the file back to where it was; if that fails
// too, it marks the ledger broken. l.mu must be held.
func (l *Ledger) appendLine(line []byte) error {
	err := l.write(line)
	if err == nil {
		l.size += int64(len(line))
		return nil
	}
	if cerr := cut(l.f, l.size); cerr != nil {
		l.broken = fmt.Errorf("%w; cutting the file back to its last line: %w", err, cerr)
		return l.broken
	}
	return fmt.Errorf("%w (the file is cut back to its last line)", err)
}

// write writes line at the end of the acknowledged file and syncs it.
func (l *Ledger) write(line []byte) error {
	n, err := l.f.WriteAt(line, l.size)
	if err == nil && n < len(line) {
		err = io.ErrShortWrite
	}
	if err != nil {
		return fmt.Errorf("writing: %w", err)
	}
	if err := l.f.Sync(); err != nil {
		return fmt.Errorf("syncing: %w", err)
	}
	return nil
}

// cut truncates f to size and syncs it.
func cut(f file, size int64) error {
	if err := f.Truncate(size); err != nil {
		return fmt.Errorf("truncate: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	return nil
}

// Read reads and checks a ledger: every line well-formed, the chain
// unbroken, no module version recorded twice. The error, if any, is a
// *ChainError naming the first bad line; the entries before it are
// returned with it.
func Read(r io.Reader) ([]Entry, error) {
	entries, _, err := read(r)
	return entries, err
}

func read(r io.Reader) ([]Entry, string, error) {
	var entries []Entry
	seen := map[string]int{}
	last := ""
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, maxLine), maxLine)
	n := 0
	for sc.Scan() {
		n++
		f := strings.Fields(sc.Text())
		if len(f) != 4 {
			return entries, last, &ChainError{Line: n, Reason: "not a ledger line: want module, version, hash, chain"}
		}
		if err := checkFields(f[0], f[1], f[2]); err != nil {
			return entries, last, &ChainError{Line: n, Reason: err.Error()}
		}
		key := f[0] + " " + f[1]
		if want := next(last, key+" "+f[2]); f[3] != want {
			return entries, last, &ChainError{Line: n, Reason: "chain broken: the line, or one before it, was edited, removed or moved"}
		}
		if prev, dup := seen[key]; dup {
			return entries, last, &ChainError{Line: n, Reason: fmt.Sprintf("%s recorded again (first on line %d)", key, prev)}
		}
		seen[key] = n
		last = f[3]
		entries = append(entries, Entry{Line: n, Module: f[0], Version: f[1], Hash: f[2]})
	}
	if err := sc.Err(); err != nil {
		return entries, last, &ChainError{Line: n + 1, Reason: err.Error()}
	}
	return entries, last, nil
}

// next is the chain value after prev for a line's fields.
func next(prev, fields string) string {
	sum := sha256.Sum256([]byte(prev + "\n" + fields))
	return hex.EncodeToString(sum[:])
}

// checkFields checks a module path, a version (with an optional /go.mod)
// and an "h1:" hash.
func checkFields(path, version, hash string) error {
	v := strings.TrimSuffix(version, "/go.mod")
	if err := module.Check(path, v); err != nil {
		return err
	}
	if module.CanonicalVersion(v) != v {
		return fmt.Errorf("version %q is not canonical", v)
	}
	h, ok := strings.CutPrefix(hash, "h1:")
	if !ok || len(h) != 44 || strings.ContainsAny(h, " \t\n") {
		return errors.New("hash is not an h1: hash")
	}
	return nil
}
