// Package cache is modgate's artifact cache: a memory hot tier for small
// responses and a disk tier for blobs, with a lifetime per class of
// response.
//
// The hot tier is a github.com/coocood/freecache ring of fixed size
// (default 256 MiB). It holds small bodies — .info, .mod, lists, @latest,
// checksum-database lookups, tiles and tree heads, and negative entries —
// up to freecache's entry limit (1/1024 of its size). Its memory never
// grows past its size; the oldest entries make room for new ones.
//
// The disk tier holds every body too large for the hot tier, and a copy of
// every immutable one (see Class.Immutable), so a restart keeps them. It is
// content-addressed and written atomically (see the layout in disk.go), is
// bounded in bytes (default 10 GiB) with least-recently-used eviction, and
// rebuilds its index from disk at start. A crash mid-write never leaves an
// entry that could be served.
//
// Freshness: an immutable entry is fresh for as long as it is cached (its
// class TTL only bounds its stay in memory). A Query entry is fresh for its
// TTL, then stale for StaleIfError more, during which Get still returns it
// with Fresh false so that it can be served when every upstream fails. A
// Negative or SumDBLatest entry is gone when its TTL ends.
//
// A Cache is safe for concurrent use. Concurrent misses are coalesced by
// Flights, not by the Cache.
package cache

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/coocood/freecache"
)

// Defaults.
const (
	DefaultHotBytes     = 256 << 20
	DefaultDiskBytes    = 10 << 30
	DefaultStaleIfError = 24 * time.Hour
	minHotBytes         = 1 << 20 // freecache needs room for its 256 segments
)

// Config configures a Cache. Dir is required; every other zero field
// takes the default in its comment.
type Config struct {
	// Dir holds the disk tier. One process at a time may use it.
	Dir string
	// HotBytes is the hot tier's memory, 256 MiB by default, at least 1 MiB.
	HotBytes int64
	// DiskBytes bounds the disk tier, 10 GiB by default.
	DiskBytes int64
	// TTL is the lifetime per class (DefaultTTLs).
	TTL TTLs
	// StaleIfError is how long past its TTL a Query entry may still be
	// served when the upstreams fail. Default 24h.
	StaleIfError time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Logger receives operational logs. Default slog.Default().
	Logger *slog.Logger
	// Shared, if set, is a tier that replicas share: every commit goes to
	// it before the local tiers, and a local miss reads it through into
	// them (see shared.go). Default: none, one machine's cache.
	Shared Shared
}

// A Cache is the two tiers together. Create it with Open; Close it when done.
type Cache struct {
	hot      *freecache.Cache
	hotMax   int // largest value the hot tier takes
	hotBytes int64
	disk     *disk
	ttl      TTLs
	stale    time.Duration
	now      func() time.Time
	log      *slog.Logger

	shared    Shared
	downloads Flights[error] // reads through from the shared tier, by key
}

// Open checks cfg, opens (and locks) the disk tier, rebuilding its index,
// and returns the Cache.
func Open(cfg Config) (*Cache, error) {
	if cfg.Dir == "" {
		return nil, errors.New("cache: dir is required")
	}
	switch {
	case cfg.HotBytes == 0:
		cfg.HotBytes = DefaultHotBytes
	case cfg.HotBytes < minHotBytes:
		return nil, fmt.Errorf("cache: hot_bytes %d is under the minimum %d", cfg.HotBytes, minHotBytes)
	}
	switch {
	case cfg.DiskBytes == 0:
		cfg.DiskBytes = DefaultDiskBytes
	case cfg.DiskBytes < 0:
		return nil, errors.New("cache: disk_bytes: negative")
	}
	switch {
	case cfg.StaleIfError == 0:
		cfg.StaleIfError = DefaultStaleIfError
	case cfg.StaleIfError < 0:
		return nil, errors.New("cache: stale_if_error: negative")
	}
	ttl, err := cfg.TTL.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	d, err := openDisk(cfg.Dir, cfg.DiskBytes, cfg.Logger)
	if err != nil {
		return nil, err
	}
	return &Cache{
		hot:      freecache.NewCacheCustomTimer(int(cfg.HotBytes), clockTimer(cfg.Now)),
		hotMax:   int(cfg.HotBytes / 1024),
		hotBytes: cfg.HotBytes,
		disk:     d,
		ttl:      ttl,
		stale:    cfg.StaleIfError,
		now:      cfg.Now,
		log:      cfg.Logger,
		shared:   cfg.Shared,
	}, nil
}

// Close waits until every entry stored is persisted, then releases the
// disk tier's lock. The Cache must not be used after.
func (c *Cache) Close() error {
	return c.disk.close()
}

// Sync waits until every entry stored before it is persisted: it would
// survive a crash. An entry is served as soon as Commit returns; it is
// persisted moments later, off the client's path.
func (c *Cache) Sync() {
	c.disk.persister.Wait()
}

// clockTimer makes freecache expire entries by the Cache's clock.
type clockTimer func() time.Time

func (t clockTimer) Now() uint32 { return uint32(t().Unix()) }

// ErrNotCached is returned (wrapped, with fs.ErrNotExist) by Get for a key
// with no servable entry.
var ErrNotCached = fmt.Errorf("not cached: %w", fs.ErrNotExist)

// Get returns the entry for key, from the hot tier, else the disk tier,
// else the shared tier if there is one, with Fresh set. A missing or
// expired entry is ErrNotCached; a shared tier that cannot be read is an
// error wrapping ErrUnavailable, unless a local entry (stale, or there
// would be no error) can answer; any other error is a failure to read the
// disk tier. The caller closes the Entry. Only the shared tier blocks on
// ctx.
func (c *Cache) Get(ctx context.Context, key string) (*Entry, error) {
	e, err := c.getLocal(key)
	if c.shared == nil || (err == nil && e.Fresh) {
		return e, err
	}
	if err != nil && !errors.Is(err, ErrNotCached) {
		return nil, err
	}
	// Missing here, or stale: another replica may have stored it, or
	// refreshed it, since.
	se, serr := c.getShared(ctx, key)
	switch {
	case serr == nil:
		if e != nil {
			e.Close()
		}
		return se, nil
	case e != nil: // stale: it answers if the upstreams fail
		if !errors.Is(serr, ErrNotCached) {
			c.log.Warn("cache: shared tier unreadable; a stale local entry stands in", "key", key, "err", serr)
		}
		return e, nil
	}
	return nil, serr
}

// Peek reports what the disk tier holds for key, where every immutable
// entry (.info, .mod, .zip, checksum database records and tiles) lives,
// for people looking (the console) and StoreSumDB: it counts no hit or
// miss, does not touch the eviction order, and does not
// consult the shared tier. The entry may be expired.
func (c *Cache) Peek(key string) (Meta, bool) {
	return c.disk.peek(key)
}

// getLocal is Get from the local tiers only.
func (c *Cache) getLocal(key string) (*Entry, error) {
	now := c.now()
	if v, err := c.hot.Get([]byte(key)); err == nil {
		m, body, err := decodeHot(key, v)
		if err == nil {
			fresh, until, ok := c.freshness(&m, now)
			if ok {
				return &Entry{Meta: m, Fresh: fresh, FreshUntil: until, Tier: Hot, body: body}, nil
			}
		}
		c.hot.Del([]byte(key))
	}

	m, ok := c.disk.lookup(key)
	if !ok {
		return nil, ErrNotCached
	}
	fresh, until, ok := c.freshness(&m, now)
	if !ok {
		c.disk.deleteKey(key, m.SHA256, m.Stored)
		return nil, ErrNotCached
	}
	path := c.disk.blobPath(m.SHA256)
	e := &Entry{Meta: m, Fresh: fresh, FreshUntil: until, Tier: Disk, path: path}
	if !m.Blob && m.Size <= int64(c.hotMax) {
		body, err := os.ReadFile(path)
		if err != nil {
			return nil, c.diskErr(key, err)
		}
		e.body = body
		c.putHot(&m, body)
		return e, nil
	}
	f, err := openBlob(path)
	if err != nil {
		return nil, c.diskErr(key, err)
	}
	e.file = f
	return e, nil
}

// diskErr reports a blob that could not be read: a blob evicted between
// lookup and open is simply not cached any more.
func (c *Cache) diskErr(key string, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return ErrNotCached
	}
	return fmt.Errorf("cache: reading %s: %w", key, err)
}

// freshness says whether m is fresh at now and until when (zero for an
// immutable entry), and whether it may be served at all.
func (c *Cache) freshness(m *Meta, now time.Time) (fresh bool, until time.Time, ok bool) {
	if m.Class.Immutable() {
		return true, time.Time{}, true
	}
	until = m.Stored.Add(c.ttl.of(m.Class))
	switch {
	case now.Before(until):
		return true, until, true
	case m.Class == Query && now.Before(until.Add(c.stale)):
		return false, until, true
	}
	return false, until, false
}

// hotLifetime is how long the hot tier keeps an entry of class cl.
func (c *Cache) hotLifetime(cl Class) time.Duration {
	ttl := c.ttl.of(cl)
	if cl == Query {
		ttl += c.stale
	}
	return ttl
}

// putHot stores body in the hot tier for what is left of its lifetime and
// reports whether it did. If it did not, it drops any older value of the
// key from the hot tier, so that the older value cannot shadow the new one.
func (c *Cache) putHot(m *Meta, body []byte) bool {
	left := m.Stored.Add(c.hotLifetime(m.Class)).Sub(c.now())
	if m.Class.Immutable() {
		left = c.ttl.of(m.Class) // a fresh stay in memory, read back from disk
	}
	secs := int(left / time.Second)
	if secs >= 1 {
		// freecache refuses a key and value of more than its entry limit
		// less its entry header.
		err := c.hot.Set([]byte(m.Key), encodeHot(m, body), secs)
		if err == nil {
			return true
		}
		c.log.Debug("cache: hot tier refused entry", "key", m.Key, "err", err)
	}
	c.hot.Del([]byte(m.Key))
	return false
}

// Writer stores one response body. It keeps a small body in memory and
// spills a large one to a temporary file; Commit stores it, Abort drops it.
// A Writer is used by one goroutine.
type Writer struct {
	c    *Cache
	meta Meta
	h    hash.Hash
	buf  []byte
	tmp  *os.File
	err  error
	done bool
}

// NewWriter starts storing the body of key. status is 200, or 404/410 for
// class Negative.
func (c *Cache) NewWriter(key string, class Class, status int, contentType string) *Writer {
	return &Writer{
		c:    c,
		meta: Meta{Key: key, Class: class, Status: status, ContentType: contentType},
		h:    sha256.New(),
	}
}

// NewBlobWriter starts storing a blob (a zip): a 200 body that goes to the
// disk tier only, whatever its size, and is always served from its file.
func (c *Cache) NewBlobWriter(key string, class Class, contentType string) *Writer {
	w := c.NewWriter(key, class, 200, contentType)
	w.meta.Blob = true
	return w
}

// Write appends p to the body.
func (w *Writer) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if w.done {
		return 0, errors.New("cache: write after commit or abort")
	}
	if w.tmp == nil && !w.meta.Blob && len(w.buf)+len(p) <= w.c.hotMax {
		w.h.Write(p)
		w.meta.Size += int64(len(p))
		w.buf = append(w.buf, p...)
		return len(p), nil
	}
	if w.tmp == nil {
		if w.meta.Class == Negative {
			w.err = errors.New("cache: negative entry too large")
			return 0, w.err
		}
		f, err := os.CreateTemp(filepath.Join(w.c.disk.dir, "tmp"), "blob-")
		if err != nil {
			w.err = fmt.Errorf("cache: %w", err)
			return 0, w.err
		}
		w.tmp = f
		if _, err := f.Write(w.buf); err != nil {
			w.err = fmt.Errorf("cache: %w", err)
			return 0, w.err
		}
		w.buf = nil
	}
	if _, err := w.tmp.Write(p); err != nil {
		w.err = fmt.Errorf("cache: %w", err)
		return 0, w.err
	}
	w.h.Write(p)
	w.meta.Size += int64(len(p))
	return len(p), nil
}

// Body returns the body written so far, for checking before Commit: in
// memory, or the name of the temporary file holding it (never both). The
// caller must not modify either.
func (w *Writer) Body() (data []byte, file string) {
	if w.tmp != nil {
		return nil, w.tmp.Name()
	}
	return w.buf, ""
}

// Size returns the bytes written so far.
func (w *Writer) Size() int64 { return w.meta.Size }

// Commit stores the body and returns the Entry that now serves it (Fresh,
// positioned at its start; the caller closes it). With a shared tier, the
// body is committed there first (see shared.go); if that fails, nothing
// is stored, and the error wraps ErrUnavailable. Then a Negative or other
// non-immutable small body goes to the hot tier only (to the disk tier if,
// with its key and header, it is too large for the hot tier); an immutable
// one to both tiers; a large one to the disk tier. Only the shared tier
// blocks on ctx. What goes to the disk tier is served at once and made
// durable moments later, off the caller's path (see disk and Sync).
func (w *Writer) Commit(ctx context.Context) (*Entry, error) {
	if w.err != nil {
		w.Abort()
		return nil, w.err
	}
	if w.done {
		return nil, errors.New("cache: commit after commit or abort")
	}
	if w.tmp == nil && w.meta.Blob { // an empty blob: make its file
		if _, err := w.Write(nil); err != nil {
			w.Abort()
			return nil, err
		}
	}
	w.meta.Stored = w.c.now()
	copy(w.meta.SHA256[:], w.h.Sum(nil))
	m := w.meta
	if w.c.shared != nil {
		if err := w.c.putShared(ctx, m, w.buf, w.tmp); err != nil {
			w.Abort()
			return nil, err
		}
	}
	w.done = true

	if w.tmp == nil && !m.Blob {
		body := w.buf
		w.c.storeLocal(m, body)
		_, until, _ := w.c.freshness(&m, m.Stored)
		return &Entry{Meta: m, Fresh: true, FreshUntil: until, Tier: Hot, body: body}, nil
	}

	// Not synced here: the disk tier syncs it off the client's path,
	// before the entry that makes it survive a restart (disk.persist).
	tmp := w.tmp.Name()
	if err := w.tmp.Close(); err != nil {
		os.Remove(tmp)
		return nil, fmt.Errorf("cache: %w", err)
	}
	if err := w.c.disk.store(m, tmp); err != nil {
		return nil, err
	}
	// An older, smaller body of the key in the hot tier would shadow this one.
	w.c.hot.Del([]byte(m.Key))
	path := w.c.disk.blobPath(m.SHA256)
	f, err := openBlob(path)
	if err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	_, until, _ := w.c.freshness(&m, m.Stored)
	return &Entry{Meta: m, Fresh: true, FreshUntil: until, Tier: Disk, path: path, file: f}, nil
}

// Abort drops the body. It is safe to call after Commit.
func (w *Writer) Abort() {
	if w.tmp != nil && !w.done {
		name := w.tmp.Name()
		w.tmp.Close()
		os.Remove(name)
	}
	w.done = true
	w.buf = nil
}

// storeLocal stores a small body in the local tiers: a Negative or other
// non-immutable one in the hot tier only (in the disk tier if, with its
// key and header, it is too large for the hot tier), an immutable one in
// both.
func (c *Cache) storeLocal(m Meta, body []byte) {
	switch hot := c.putHot(&m, body); {
	case !hot || m.Class.Immutable():
		if err := c.storeBytes(m, body); err != nil {
			// Served from the Entry all the same; only caching is lost.
			c.log.Error("cache: disk tier write failed", "key", m.Key, "err", err)
		}
	default:
		// An older, larger body of the key on disk would come back once
		// this one leaves the hot tier.
		c.disk.deleteKey(m.Key, [32]byte{}, time.Time{})
	}
}

// storeBytes writes body to the disk tier as m's blob.
func (c *Cache) storeBytes(m Meta, body []byte) error {
	tmp, err := writeTempFile(filepath.Join(c.disk.dir, "tmp"), "blob-", body, false)
	if err != nil {
		return err
	}
	return c.disk.store(m, tmp)
}

// Purge removes every entry whose key satisfies match from both tiers and
// returns how many entries went.
func (c *Cache) Purge(match func(key string) bool) int {
	var hotKeys [][]byte
	it := c.hot.NewIterator()
	for e := it.Next(); e != nil; e = it.Next() {
		if match(string(e.Key)) {
			hotKeys = append(hotKeys, e.Key)
		}
	}
	// Count an entry held by both tiers once.
	gone := make(map[string]bool, len(hotKeys))
	for _, k := range hotKeys {
		if c.hot.Del(k) {
			gone[string(k)] = true
		}
	}
	n := len(gone)
	c.disk.delete(func(key string) bool {
		if !match(key) {
			return false
		}
		if !gone[key] {
			n++
		}
		return true
	})
	return n
}

// Stats describes both tiers.
type Stats struct {
	Hot  HotStats  `json:"hot"`
	Disk DiskStats `json:"disk"`
}

// HotStats describes the hot tier.
type HotStats struct {
	Entries   int64 `json:"entries"`
	Limit     int64 `json:"limit"`
	MaxEntry  int   `json:"max_entry"`
	Hits      int64 `json:"hits"`
	Misses    int64 `json:"misses"`
	Evictions int64 `json:"evictions"`
	Expired   int64 `json:"expired"`
}

// Stats returns the tiers' counters.
func (c *Cache) Stats() Stats {
	return Stats{
		Hot: HotStats{
			Entries:   c.hot.EntryCount(),
			Limit:     c.hotBytes,
			MaxEntry:  c.hotMax,
			Hits:      c.hot.HitCount(),
			Misses:    c.hot.MissCount(),
			Evictions: c.hot.EvacuateCount(),
			Expired:   c.hot.ExpiredCount(),
		},
		Disk: c.disk.stats(),
	}
}

// ModuleKeys returns a Purge matcher for the keys of one module path
// (escaped, as in request paths), or of one version of it if escVersion is
// not empty: its .info, .mod and .zip; without a version also its list,
// @latest and negative entries.
func ModuleKeys(escPath, escVersion string) func(key string) bool {
	prefix := "/" + escPath + "/@"
	return func(key string) bool {
		rest, ok := strings.CutPrefix(key, prefix)
		if !ok {
			return false
		}
		if escVersion == "" {
			return true
		}
		v, ok := strings.CutPrefix(rest, "v/")
		if !ok {
			return false
		}
		for _, ext := range []string{".info", ".mod", ".zip"} {
			if v == escVersion+ext {
				return true
			}
		}
		return false
	}
}

var _ io.Writer = (*Writer)(nil)
