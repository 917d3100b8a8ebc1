package inventory

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
)

// The files of a store, in its directory.
const (
	snapshotName = "snapshot"
	journalName  = "journal"
)

// Each file starts with an 8-byte magic and the 8-byte generation
// (big-endian) it belongs to.
const (
	snapshotMagic = "MGINVSN1"
	journalMagic  = "MGINVJN1"
	headerSize    = 16
)

// Record types: the first byte of a record's payload.
const (
	recKey = 1 // a key and its stat
	recEnd = 2 // the end of a snapshot, with its count of keys
)

// maxPayload bounds a record's payload; a longer length is damage.
const maxPayload = maxModule + maxVersion + maxIdentity + 64

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// appendRecord appends the record of k and st: a 4-byte little-endian
// payload length, the payload's CRC-32C, and the payload (type, the three
// strings with their lengths, first, last, count and kinds as varints).
func appendRecord(b []byte, k key, st stat) []byte {
	start := len(b)
	b = append(b, 0, 0, 0, 0, 0, 0, 0, 0, recKey)
	for _, s := range []string{k.module, k.version, k.identity} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	b = binary.AppendVarint(b, st.first)
	b = binary.AppendVarint(b, st.last)
	b = binary.AppendUvarint(b, uint64(st.count))
	b = binary.AppendUvarint(b, uint64(st.kinds))
	return sealRecord(b, start)
}

// appendEnd appends a snapshot's end record.
func appendEnd(b []byte, keys int) []byte {
	start := len(b)
	b = append(b, 0, 0, 0, 0, 0, 0, 0, 0, recEnd)
	b = binary.AppendUvarint(b, uint64(keys))
	return sealRecord(b, start)
}

// sealRecord fills in the length and CRC of the record at b[start:].
func sealRecord(b []byte, start int) []byte {
	p := b[start+8:]
	binary.LittleEndian.PutUint32(b[start:], uint32(len(p)))
	binary.LittleEndian.PutUint32(b[start+4:], crc32.Checksum(p, castagnoli))
	return b
}

// errTorn is a record cut short or failing its CRC.
var errTorn = errors.New("torn or damaged record")

// readRecord reads one record's payload from r. It returns io.EOF at a
// clean end, errTorn (wrapped) for a partial or damaged record.
func readRecord(r *bufio.Reader, buf []byte) ([]byte, error) {
	var h [8]byte
	n, err := io.ReadFull(r, h[:])
	switch {
	case n == 0 && errors.Is(err, io.EOF):
		return nil, io.EOF
	case err != nil:
		return nil, fmt.Errorf("%w: header: %v", errTorn, err)
	}
	size := binary.LittleEndian.Uint32(h[:])
	if size == 0 || size > maxPayload {
		return nil, fmt.Errorf("%w: length %d", errTorn, size)
	}
	if cap(buf) < int(size) {
		buf = make([]byte, size)
	}
	buf = buf[:size]
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, fmt.Errorf("%w: payload: %v", errTorn, err)
	}
	if crc32.Checksum(buf, castagnoli) != binary.LittleEndian.Uint32(h[4:]) {
		return nil, fmt.Errorf("%w: checksum mismatch", errTorn)
	}
	return buf, nil
}

// parseKey parses a recKey payload.
func parseKey(p []byte) (key, stat, error) {
	bad := func(what string) (key, stat, error) {
		return key{}, stat{}, fmt.Errorf("%w: bad %s", errTorn, what)
	}
	if len(p) == 0 || p[0] != recKey {
		return bad("type")
	}
	p = p[1:]
	var strs [3]string
	for i := range strs {
		n, w := binary.Uvarint(p)
		if w <= 0 || n > uint64(len(p)-w) {
			return bad("string")
		}
		strs[i] = string(p[w : w+int(n)])
		p = p[w+int(n):]
	}
	var st stat
	var w int
	if st.first, w = binary.Varint(p); w <= 0 {
		return bad("first")
	}
	p = p[w:]
	if st.last, w = binary.Varint(p); w <= 0 {
		return bad("last")
	}
	p = p[w:]
	c, w := binary.Uvarint(p)
	if w <= 0 || c > 1<<62 {
		return bad("count")
	}
	st.count, p = int64(c), p[w:]
	kinds, w := binary.Uvarint(p)
	if w <= 0 || kinds > 1<<32-1 || w != len(p) {
		return bad("kinds")
	}
	st.kinds = kindSet(kinds)
	return key{strs[0], strs[1], strs[2]}, st, nil
}

// A store is an inventory's files: the snapshot and the journal of its
// generation. Its methods are called with Inventory.flushMu held (or
// before the Inventory is shared).
type store struct {
	dir          string
	compactBytes int64
	log          *slog.Logger
	gen          uint64
	journal      *os.File // open for appending
	journalSize  int64
	snapshotSize int64
	// broken marks a journal that may end in a torn write (a failed
	// append that could not be undone): compact before appending again.
	broken bool
}

// mergeFunc merges a stored record into the index.
type mergeFunc func(k key, st stat, add bool) bool

// openStore opens the store in dir, creating it if needed, and replays
// it through merge.
func openStore(dir string, compactBytes int64, log *slog.Logger, merge mergeFunc) (*store, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, err
	}
	s := &store{dir: dir, compactBytes: compactBytes, log: log}
	if err := s.readSnapshot(merge); err != nil {
		return nil, err
	}
	if err := s.openJournal(merge); err != nil {
		return nil, err
	}
	return s, nil
}

// errStale is a journal of another generation than the snapshot's.
var errStale = errors.New("journal of another generation than the snapshot's")

// readStore replays the store in dir through merge, changing nothing: a
// torn journal tail is skipped.
func readStore(dir string, log *slog.Logger, merge mergeFunc) error {
	s := &store{dir: dir, log: log}
	if err := s.readSnapshot(merge); err != nil {
		return err
	}
	name := filepath.Join(dir, journalName)
	f, err := os.Open(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 1<<20)
	gen, err := readHeader(r, journalMagic)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if gen != s.gen {
		return fmt.Errorf("%s: %w", name, errStale)
	}
	_, err = replayJournal(r, merge)
	if err != nil {
		log.Warn("inventory journal: torn tail skipped", "file", name, "reason", err.Error())
	}
	return nil
}

// replayJournal replays records from r through merge up to the end or the
// first torn or damaged record (the error). It returns the bytes of the
// records replayed.
func replayJournal(r *bufio.Reader, merge mergeFunc) (int64, error) {
	var off int64
	var buf []byte
	for {
		p, err := readRecord(r, buf)
		if errors.Is(err, io.EOF) {
			return off, nil
		}
		var k key
		var st stat
		if err == nil {
			k, st, err = parseKey(p)
		}
		if err != nil {
			return off, err
		}
		buf = p
		merge(k, st, false)
		off += int64(8 + len(p))
	}
}

// createStore returns an empty store in dir, of a generation after any
// there: its first compaction replaces whatever files were there.
func createStore(dir string, compactBytes int64, log *slog.Logger) (*store, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, err
	}
	s := &store{dir: dir, compactBytes: compactBytes, log: log}
	for _, f := range []struct{ name, magic string }{{snapshotName, snapshotMagic}, {journalName, journalMagic}} {
		if r, err := os.Open(filepath.Join(dir, f.name)); err == nil {
			gen, _ := readHeader(r, f.magic) // a damaged file is replaced anyway
			r.Close()
			s.gen = max(s.gen, gen)
		}
	}
	return s, nil
}

// readSnapshot replays the snapshot, if there is one. Snapshots are
// written whole and renamed into place, so any damage is an error.
func (s *store) readSnapshot(merge mergeFunc) error {
	name := filepath.Join(s.dir, snapshotName)
	f, err := os.Open(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 1<<20)
	gen, err := readHeader(r, snapshotMagic)
	if err != nil {
		return fmt.Errorf("%s: %w (rebuild the inventory from the audit log)", name, err)
	}
	var buf []byte
	n := 0
	for {
		p, err := readRecord(r, buf)
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("%s: no end record after %d keys: cut short (rebuild the inventory from the audit log)", name, n)
		}
		if err != nil {
			return fmt.Errorf("%s: after %d keys: %w (rebuild the inventory from the audit log)", name, n, err)
		}
		buf = p
		if p[0] == recEnd {
			want, w := binary.Uvarint(p[1:])
			if w <= 0 || want != uint64(n) {
				return fmt.Errorf("%s: end record says %d keys, read %d (rebuild the inventory from the audit log)", name, want, n)
			}
			break
		}
		k, st, err := parseKey(p)
		if err != nil {
			return fmt.Errorf("%s: after %d keys: %w (rebuild the inventory from the audit log)", name, n, err)
		}
		merge(k, st, false)
		n++
	}
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	s.gen, s.snapshotSize = gen, fi.Size()
	return nil
}

// readHeader reads a file's header and returns its generation.
func readHeader(r io.Reader, magic string) (uint64, error) {
	var h [headerSize]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, fmt.Errorf("header: %w", err)
	}
	if string(h[:8]) != magic {
		return 0, fmt.Errorf("header: not an inventory file (magic %q, want %q)", h[:8], magic)
	}
	return binary.BigEndian.Uint64(h[8:]), nil
}

func header(magic string, gen uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte(magic), gen)
}

// openJournal replays the journal of the snapshot's generation, cutting
// off a torn tail, and opens it for appending. A missing journal, or one
// of another generation (left by a compaction that stopped between its
// renames: the snapshot holds all of it), is replaced by an empty one.
func (s *store) openJournal(merge mergeFunc) error {
	name := filepath.Join(s.dir, journalName)
	f, err := os.OpenFile(name, os.O_RDWR|os.O_APPEND, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return s.newJournal(s.gen)
	}
	if err != nil {
		return err
	}
	r := bufio.NewReaderSize(f, 1<<20)
	gen, err := readHeader(r, journalMagic)
	if err != nil || gen != s.gen {
		f.Close()
		if err == nil {
			err = fmt.Errorf("generation %d, snapshot's %d", gen, s.gen)
		}
		s.log.Warn("inventory journal discarded", "file", name, "reason", err.Error())
		return s.newJournal(s.gen)
	}
	n, err := replayJournal(r, merge)
	off := headerSize + n
	if err != nil {
		fi, serr := f.Stat()
		if serr != nil {
			f.Close()
			return serr
		}
		s.log.Warn("inventory journal: torn tail cut off (a crash mid-write); its fetches are in the audit log", "file", name, "offset", off, "bytes", fi.Size()-off, "reason", err.Error())
		if err := f.Truncate(off); err != nil {
			f.Close()
			return fmt.Errorf("cut torn tail of %s: %w", name, err)
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return fmt.Errorf("cut torn tail of %s: %w", name, err)
		}
	}
	s.journal, s.journalSize = f, off
	return nil
}

// newJournal replaces the journal with an empty one of generation gen,
// atomically, and opens it for appending.
func (s *store) newJournal(gen uint64) error {
	name := filepath.Join(s.dir, journalName)
	if err := writeFileSync(name, func(w io.Writer) error {
		_, err := w.Write(header(journalMagic, gen))
		return err
	}); err != nil {
		return err
	}
	f, err := os.OpenFile(name, os.O_RDWR|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	if s.journal != nil {
		s.journal.Close()
	}
	s.journal, s.journalSize, s.broken = f, headerSize, false
	return nil
}

// append appends records to the journal and fsyncs it. A failed write is
// cut off again; if that fails too, the store is broken until compacted.
func (s *store) append(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	n, err := s.journal.Write(b)
	if err == nil {
		err = s.journal.Sync()
	}
	if err != nil {
		if n > 0 {
			if terr := s.journal.Truncate(s.journalSize); terr != nil {
				s.broken = true
			}
		}
		return fmt.Errorf("append to journal: %w", err)
	}
	s.journalSize += int64(n)
	return nil
}

// needCompact reports whether the journal should be compacted.
func (s *store) needCompact() bool {
	return s.broken || (s.journalSize > s.compactBytes && s.journalSize > s.snapshotSize)
}

// compact writes the snapshot of the next generation, from records that
// snapshot writes in batches, and then an empty journal of that
// generation.
func (s *store) compact(snapshot func(write func([]byte) error) (int, error)) error {
	gen := s.gen + 1
	name := filepath.Join(s.dir, snapshotName)
	if err := writeFileSync(name, func(w io.Writer) error {
		if _, err := w.Write(header(snapshotMagic, gen)); err != nil {
			return err
		}
		n, err := snapshot(func(b []byte) error {
			_, err := w.Write(b)
			return err
		})
		if err != nil {
			return err
		}
		_, err = w.Write(appendEnd(nil, n))
		return err
	}); err != nil {
		return err
	}
	// The snapshot is in place: from here on the old journal is stale.
	s.gen = gen
	if fi, err := os.Stat(name); err == nil {
		s.snapshotSize = fi.Size()
	}
	if err := s.newJournal(gen); err != nil {
		s.broken = true
		return err
	}
	return nil
}

func (s *store) close() error {
	if s.journal == nil {
		return nil
	}
	err := s.journal.Close()
	s.journal = nil
	return err
}

// writeFileSync writes name crash-safely: write to name.tmp, fsync,
// rename over name, fsync the directory.
func writeFileSync(name string, write func(io.Writer) error) (err error) {
	tmp := name + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	w := bufio.NewWriterSize(f, 1<<20)
	if err := write(w); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, name); err != nil {
		return err
	}
	return syncDir(filepath.Dir(name))
}

// syncDir fsyncs a directory, so that a rename in it is durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
