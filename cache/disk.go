package cache

import (
	"container/list"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/modgate/modgate/internal/writeback"
)

// The disk tier's layout under its directory:
//
//	lock                  flock'd by the one process using the directory
//	blobs/HH/SHA256       bodies, named by the SHA-256 of their content
//	entries/HH/KEYSHA256  one JSON file per key, naming its blob
//	tmp/                  files being written; emptied at start
//
// A body is written to tmp and renamed into blobs (unless a blob of the
// same content is there already), and the key is indexed in memory: from
// then on it is served, from the page cache. Its entry file, which makes
// it survive a restart, comes after, off the client's path (persist): the
// blob is synced, then its directory, then the entry is written to tmp,
// synced, renamed into entries, and that directory synced. So a crash
// leaves at worst an unreferenced blob (removed at start), never an entry
// whose blob is missing or partial; what it loses is at most the entries
// stored in the last moments, which are fetched again.
type disk struct {
	dir   string
	limit int64
	log   *slog.Logger
	lock  *os.File

	// persister writes the entry files of stores, behind them (persist).
	persister *writeback.Queue[pending]
	// testHookPersist, if set, runs before each store is persisted.
	testHookPersist func()

	// writeMu serializes everything that adds or removes files, so a blob
	// being stored cannot be deleted by a concurrent eviction of another
	// entry with the same content.
	writeMu sync.Mutex

	mu        sync.Mutex
	entries   map[string]*diskEntry // by key
	lru       *list.List            // of *diskEntry, most recently used first
	blobs     map[[32]byte]int      // references per blob
	used      int64                 // bytes of blobs and entry files
	evictions int64
}

type diskEntry struct {
	meta      Meta
	entrySize int64 // bytes of the entry file
	elem      *list.Element
}

// entryFile is the JSON form of an entry.
type entryFile struct {
	Key         string    `json:"key"`
	Class       string    `json:"class"`
	Status      int       `json:"status"`
	ContentType string    `json:"content_type"`
	Size        int64     `json:"size"`
	SHA256      string    `json:"sha256"`
	Stored      time.Time `json:"stored"`
	Blob        bool      `json:"blob,omitempty"`
}

// marshalEntry returns m's entry file.
func marshalEntry(m Meta) ([]byte, error) {
	return json.Marshal(entryFile{
		Key:         m.Key,
		Class:       m.Class.String(),
		Status:      m.Status,
		ContentType: m.ContentType,
		Size:        m.Size,
		SHA256:      hex.EncodeToString(m.SHA256[:]),
		Stored:      m.Stored.UTC(),
		Blob:        m.Blob,
	})
}

// unmarshalEntry parses and checks an entry file.
func unmarshalEntry(data []byte) (Meta, error) {
	var ef entryFile
	if err := json.Unmarshal(data, &ef); err != nil {
		return Meta{}, err
	}
	class, ok := parseClass(ef.Class)
	if !ok {
		return Meta{}, fmt.Errorf("unknown class %q", ef.Class)
	}
	sum, ok := parseSum(ef.SHA256)
	if !ok {
		return Meta{}, fmt.Errorf("bad sha256 %q", ef.SHA256)
	}
	if ef.Key == "" || ef.Size < 0 {
		return Meta{}, errors.New("no key, or a negative size")
	}
	return Meta{Key: ef.Key, Class: class, Status: ef.Status, ContentType: ef.ContentType, Size: ef.Size, SHA256: sum, Stored: ef.Stored, Blob: ef.Blob}, nil
}

func openDisk(dir string, limit int64, log *slog.Logger) (*disk, error) {
	for _, sub := range []string{"blobs", "entries", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o750); err != nil {
			return nil, fmt.Errorf("cache dir: %w", err)
		}
	}
	lock, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("cache dir: %w", err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("cache dir %s is in use by another process: %w", dir, err)
	}
	d := &disk{
		dir:     dir,
		limit:   limit,
		log:     log,
		lock:    lock,
		entries: make(map[string]*diskEntry),
		lru:     list.New(),
		blobs:   make(map[[32]byte]int),
	}
	if err := d.rebuild(); err != nil {
		d.lock.Close()
		return nil, err
	}
	d.persister = writeback.New(maxPending, func(p pending) {
		if d.testHookPersist != nil {
			d.testHookPersist()
		}
		d.persist(p)
	})
	return d, nil
}

// close writes the entry files still pending, then releases the lock.
func (d *disk) close() error {
	d.persister.Close()
	return d.lock.Close() // releases the flock
}

func (d *disk) blobPath(sum [32]byte) string {
	h := hex.EncodeToString(sum[:])
	return filepath.Join(d.dir, "blobs", h[:2], h)
}

func (d *disk) entryPath(key string) string {
	sum := sha256.Sum256([]byte(key))
	h := hex.EncodeToString(sum[:])
	return filepath.Join(d.dir, "entries", h[:2], h)
}

// rebuild loads the index from the entries on disk, dropping any entry
// that is unreadable or whose blob is missing or of the wrong size, and
// any blob no entry names, and empties tmp.
func (d *disk) rebuild() error {
	tmp := filepath.Join(d.dir, "tmp")
	if err := os.RemoveAll(tmp); err != nil {
		return fmt.Errorf("cache: clearing %s: %w", tmp, err)
	}
	if err := os.Mkdir(tmp, 0o750); err != nil {
		return fmt.Errorf("cache: %w", err)
	}

	type loaded struct {
		meta Meta
		size int64
		mod  time.Time
	}
	var all []loaded
	entriesDir := filepath.Join(d.dir, "entries")
	err := filepath.WalkDir(entriesDir, func(p string, de fs.DirEntry, err error) error {
		if err != nil || de.IsDir() {
			return err
		}
		meta, size, mod, err := d.readEntry(p)
		if err != nil {
			d.log.Warn("cache: dropping unreadable entry", "file", p, "err", err)
			return removeFile(p)
		}
		all = append(all, loaded{meta, size, mod})
		return nil
	})
	if err != nil {
		return fmt.Errorf("cache: reading entries: %w", err)
	}

	// Oldest first, so the most recently written ends up most recently used.
	slices.SortFunc(all, func(a, b loaded) int { return a.mod.Compare(b.mod) })
	for _, l := range all {
		d.insert(l.meta, l.size) // keys are unique on disk: nothing is replaced
	}

	blobsDir := filepath.Join(d.dir, "blobs")
	err = filepath.WalkDir(blobsDir, func(p string, de fs.DirEntry, err error) error {
		if err != nil || de.IsDir() {
			return err
		}
		sum, ok := parseSum(de.Name())
		if !ok || d.blobs[sum] == 0 {
			return removeFile(p)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("cache: reading blobs: %w", err)
	}
	d.log.Info("cache: disk tier loaded", "dir", d.dir, "entries", len(d.entries), "bytes", d.used, "limit", d.limit)
	d.writeMu.Lock()
	defer d.writeMu.Unlock()
	d.remove(d.evictLocked(nil))
	return nil
}

// readEntry reads and checks one entry file.
func (d *disk) readEntry(p string) (Meta, int64, time.Time, error) {
	data, err := os.ReadFile(p)
	if err != nil {
		return Meta{}, 0, time.Time{}, err
	}
	m, err := unmarshalEntry(data)
	if err != nil {
		return Meta{}, 0, time.Time{}, err
	}
	if d.entryPath(m.Key) != p {
		return Meta{}, 0, time.Time{}, errors.New("key does not match file name")
	}
	sum := m.SHA256
	fi, err := os.Stat(d.blobPath(sum))
	if err != nil {
		return Meta{}, 0, time.Time{}, fmt.Errorf("blob: %w", err)
	}
	if fi.Size() != m.Size {
		return Meta{}, 0, time.Time{}, fmt.Errorf("blob has %d bytes, entry says %d", fi.Size(), m.Size)
	}
	info, err := os.Stat(p)
	if err != nil {
		return Meta{}, 0, time.Time{}, err
	}
	return m, int64(len(data)), info.ModTime(), nil
}

// insert adds or replaces the index entry for m; d.mu must be held (or d
// not yet shared). If it replaces an entry whose blob is no longer
// referenced, it returns that blob as a victim.
func (d *disk) insert(m Meta, entrySize int64) (*diskEntry, []victim) {
	var vs []victim
	// Count the new reference first, so replacing an entry by one with the
	// same body never frees the blob.
	if d.blobs[m.SHA256] == 0 {
		d.used += m.Size
	}
	d.blobs[m.SHA256]++
	if old := d.entries[m.Key]; old != nil {
		if d.unlink(old) {
			// Only the blob goes: the entry file was overwritten in place.
			vs = append(vs, victim{sum: old.meta.SHA256, blobFree: true})
		}
	}
	e := &diskEntry{meta: m, entrySize: entrySize}
	e.elem = d.lru.PushFront(e)
	d.entries[m.Key] = e
	d.used += entrySize
	return e, vs
}

// unlink removes e from the index; it reports whether e's blob lost its
// last reference. d.mu must be held.
func (d *disk) unlink(e *diskEntry) (blobFree bool) {
	d.lru.Remove(e.elem)
	delete(d.entries, e.meta.Key)
	d.used -= e.entrySize
	d.blobs[e.meta.SHA256]--
	if d.blobs[e.meta.SHA256] == 0 {
		delete(d.blobs, e.meta.SHA256)
		d.used -= e.meta.Size
		return true
	}
	return false
}

// victim is an entry unlinked from the index whose files are to go.
type victim struct {
	key      string
	sum      [32]byte
	blobFree bool
}

// evictLocked unlinks least-recently-used entries, sparing keep, until
// the tier is within its limit. d.mu must be held; the caller removes the
// victims' files after unlocking.
func (d *disk) evictLocked(keep *diskEntry) []victim {
	var vs []victim
	for d.used > d.limit {
		back := d.lru.Back()
		if back == nil {
			break
		}
		e := back.Value.(*diskEntry)
		if e == keep {
			if back = back.Prev(); back == nil {
				break
			}
			e = back.Value.(*diskEntry)
		}
		vs = append(vs, victim{key: e.meta.Key, sum: e.meta.SHA256, blobFree: d.unlink(e)})
		d.evictions++
	}
	return vs
}

// remove deletes the files of unlinked entries; d.writeMu must be held.
func (d *disk) remove(vs []victim) {
	for _, v := range vs {
		if v.key == "" {
			// A replaced entry's blob: its key's entry file is, or will
			// be, the new entry's (persist).
		} else if err := removeFile(d.entryPath(v.key)); err != nil {
			d.log.Error("cache: removing entry", "key", v.key, "err", err)
		}
		if v.blobFree {
			if err := removeFile(d.blobPath(v.sum)); err != nil {
				d.log.Error("cache: removing blob", "key", v.key, "err", err)
			}
		}
	}
}

// lookup returns the meta of key and marks it used.
func (d *disk) lookup(key string) (Meta, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	e := d.entries[key]
	if e == nil {
		return Meta{}, false
	}
	d.lru.MoveToFront(e.elem)
	return e.meta, true
}

// peek is lookup without touching the LRU order.
func (d *disk) peek(key string) (Meta, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	e := d.entries[key]
	if e == nil {
		return Meta{}, false
	}
	return e.meta, true
}

// store makes the blob at tmpPath (written and closed, not necessarily
// synced) the body of m and indexes it, so that it is served from now on.
// It takes ownership of tmpPath. The entry file that makes it survive a
// restart is written later, in order, by the persister goroutine (or by
// this call if the persister is maxPending behind): see persist.
func (d *disk) store(m Meta, tmpPath string) error {
	data, err := marshalEntry(m)
	if err != nil {
		os.Remove(tmpPath)
		return fmt.Errorf("cache: %w", err)
	}
	// The bound counts the entry file as well as the blob.
	if m.Size+int64(len(data)) > d.limit {
		os.Remove(tmpPath)
		return fmt.Errorf("cache: %s has %d bytes, more than the disk tier's %d", m.Key, m.Size, d.limit)
	}
	d.writeMu.Lock()
	if err := d.placeBlob(m.SHA256, tmpPath); err != nil {
		d.writeMu.Unlock()
		return err
	}
	d.mu.Lock()
	e, victims := d.insert(m, int64(len(data)))
	victims = append(victims, d.evictLocked(e)...)
	d.mu.Unlock()
	d.remove(victims)
	d.writeMu.Unlock()

	d.persister.Add(pending{meta: m, entry: data})
	return nil
}

// placeBlob renames tmpPath to the blob of sum, or removes it if that blob
// is there already: same name, same content, and an existing blob may be
// the synced body of an entry on disk, which a rename would replace with
// an unsynced copy. d.writeMu must be held.
func (d *disk) placeBlob(sum [32]byte, tmpPath string) error {
	d.mu.Lock()
	have := d.blobs[sum] > 0
	d.mu.Unlock()
	if have {
		os.Remove(tmpPath)
		return nil
	}
	blob := d.blobPath(sum)
	if err := os.MkdirAll(filepath.Dir(blob), 0o750); err != nil {
		os.Remove(tmpPath)
		return fmt.Errorf("cache: %w", err)
	}
	if err := os.Rename(tmpPath, blob); err != nil {
		os.Remove(tmpPath)
		return fmt.Errorf("cache: %w", err)
	}
	return nil
}

// maxPending bounds the stores whose entry files are yet to be written.
const maxPending = 1024

// A pending store: the meta indexed, and its entry file's content.
type pending struct {
	meta  Meta
	entry []byte
}

// persist makes the store p survive a restart, if its key is still
// indexed as p stored it: it syncs the blob and its directory, then
// writes the entry file atomically. If the blob cannot be synced, the
// entry is dropped: its bytes may not be what a reader would get back.
func (d *disk) persist(p pending) {
	m := p.meta
	blob := d.blobPath(m.SHA256)
	err := syncFile(blob)
	if err == nil {
		err = syncDir(filepath.Dir(blob))
	}
	var tmp string
	if err == nil {
		tmp, err = writeTemp(filepath.Join(d.dir, "tmp"), "entry-", p.entry)
	}
	entry := d.entryPath(m.Key)
	if err == nil {
		err = os.MkdirAll(filepath.Dir(entry), 0o750)
	}

	d.writeMu.Lock()
	d.mu.Lock()
	cur := d.entries[m.Key]
	current := cur != nil && cur.meta.SHA256 == m.SHA256 && cur.meta.Stored.Equal(m.Stored)
	d.mu.Unlock()
	switch {
	case !current:
		// Replaced, evicted or purged meanwhile: nothing to persist (and
		// its blob may be gone, which is why an error does not matter).
		err = nil
	case err == nil:
		err = os.Rename(tmp, entry)
		if err == nil {
			tmp = ""
		}
	}
	d.writeMu.Unlock()
	if tmp != "" {
		os.Remove(tmp)
	}
	if current && err == nil {
		err = syncDir(filepath.Dir(entry))
	}
	if err != nil {
		d.log.Error("cache: entry not persisted; dropping it", "key", m.Key, "err", err)
		d.deleteKey(m.Key, m.SHA256, m.Stored)
	}
}

// delete drops the entries whose keys satisfy match; it returns how many.
func (d *disk) delete(match func(key string) bool) int {
	d.writeMu.Lock()
	defer d.writeMu.Unlock()
	d.mu.Lock()
	var vs []victim
	for key, e := range d.entries {
		if match(key) {
			vs = append(vs, victim{key: key, sum: e.meta.SHA256, blobFree: d.unlink(e)})
		}
	}
	d.mu.Unlock()
	d.remove(vs)
	return len(vs)
}

// deleteKey drops key's entry if it is the one that stored sum at stored
// (the zero sum matches any), so a concurrent store of a newer body for
// the key is never undone. It reports whether it dropped one.
func (d *disk) deleteKey(key string, sum [32]byte, stored time.Time) bool {
	d.writeMu.Lock()
	defer d.writeMu.Unlock()
	d.mu.Lock()
	e := d.entries[key]
	if e == nil || (sum != [32]byte{} && (e.meta.SHA256 != sum || !e.meta.Stored.Equal(stored))) {
		d.mu.Unlock()
		return false
	}
	vs := []victim{{key: key, sum: e.meta.SHA256, blobFree: d.unlink(e)}}
	d.mu.Unlock()
	d.remove(vs)
	return true
}

// DiskStats describes the disk tier.
type DiskStats struct {
	Entries   int   `json:"entries"`
	Blobs     int   `json:"blobs"`
	Bytes     int64 `json:"bytes"`
	Limit     int64 `json:"limit"`
	Evictions int64 `json:"evictions"`
}

func (d *disk) stats() DiskStats {
	d.mu.Lock()
	defer d.mu.Unlock()
	return DiskStats{Entries: len(d.entries), Blobs: len(d.blobs), Bytes: d.used, Limit: d.limit, Evictions: d.evictions}
}

// writeTemp writes data to a new file in tmpDir, syncs and closes it, and
// returns its name. On error no file is left.
func writeTemp(tmpDir, prefix string, data []byte) (string, error) {
	return writeTempFile(tmpDir, prefix, data, true)
}

// writeTempFile is writeTemp, syncing the file only if sync is true.
func writeTempFile(tmpDir, prefix string, data []byte, sync bool) (string, error) {
	f, err := os.CreateTemp(tmpDir, prefix)
	if err != nil {
		return "", fmt.Errorf("cache: %w", err)
	}
	_, err = f.Write(data)
	if err == nil && sync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", fmt.Errorf("cache: %w", err)
	}
	return f.Name(), nil
}

// syncFile syncs the file at p to stable storage.
func syncFile(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return fmt.Errorf("cache: %w", err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("cache: sync %s: %w", p, err)
	}
	return nil
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("cache: %w", err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("cache: sync %s: %w", dir, err)
	}
	return nil
}

// removeFile removes p; a file already gone is not an error.
func removeFile(p string) error {
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

func parseSum(s string) ([32]byte, bool) {
	var sum [32]byte
	if len(s) != 64 || strings.ToLower(s) != s {
		return sum, false
	}
	if _, err := hex.Decode(sum[:], []byte(s)); err != nil {
		return sum, false
	}
	return sum, true
}

func parseClass(s string) (Class, bool) {
	for c := Release; c <= SumDBLatest; c++ {
		if c.String() == s {
			return c, true
		}
	}
	return 0, false
}
