// Package inventory answers "who fetched it?": for every module version
// modgate has served, which identities fetched it, when first and last,
// how often, and as which kinds (info, mod, zip, sumdb-lookup…).
//
// An Inventory is an index of the audit log, maintained incrementally:
// the server calls Add with each request event it records, and Rebuild or
// ReadAudit build the same index from audit files. The audit log stays
// the record; the inventory can always be rebuilt from it, and the
// answers of an inventory fed event by event equal those of one rebuilt
// from the files those events were written to.
//
// # What counts
//
// An event counts as a fetch when its event.action is "request", it names
// a module and a version (modgate.module, modgate.version), and its
// http.response.status_code is 2xx. Its identity is, in this order (the
// order of the processor's miss budgets, gate's identity):
//
//  1. user.name, the authenticated user;
//  2. the first URI SAN of the verified client certificate
//     (tls.client.x509.san.uri[0], the SPIFFE ID in a mesh);
//  3. the certificate's subject (tls.client.subject);
//  4. the client's address (source.ip); "" if there is none.
//
// Identities are cut to 256 bytes, as the budgets cut them. Events whose
// module path is longer than 1024 bytes or version longer than 256 bytes
// are not counted (Stats.Ignored).
//
// # Store
//
// The index lives in memory: module → version → identity → {first, last,
// count, kinds}, with version and identity strings interned. On disk
// (Options.Dir) it is a snapshot and a journal of the same records, each
// length-prefixed and CRC-32C-checked. A record holds a key's full
// current value, not a delta, and records merge idempotently (first is
// the minimum, last and count the maximum, kinds the union), so replaying
// a record twice, or a journal over a snapshot that already holds it,
// gives the same index.
//
// Add only updates memory and marks the key dirty. Flush (every
// Options.FlushInterval on a goroutine the Inventory owns, and on Close)
// appends the dirty keys' records to the journal in one write and fsyncs
// it: a crash loses at most the last interval, which Rebuild recovers
// from the audit log. A torn journal tail (a crash mid-write) is cut off
// when the store is opened, and logged. When the journal outgrows both
// Options.CompactBytes and the snapshot, the index is written to a new
// snapshot (temporary file, fsync, rename, fsync of the directory) of the
// next generation, and a new, empty journal of that generation replaces
// the old one the same way; a journal of another generation than the
// snapshot's is stale and discarded when the store is opened. Disk use is
// thus bounded by about twice the snapshot plus CompactBytes.
//
// This needs no dependency beyond the standard library: the access
// pattern (append small records, read all at start, answer from memory)
// is what an embedded key-value store would also do, with more code to
// trust and a second on-disk format to keep; a query never reads the
// disk.
//
// # Bounds
//
// The index holds at most Options.MaxKeys (module, version, identity)
// keys. Once full, events for keys it already holds still count, and
// events for new keys are refused and counted (Stats.Refused, logged
// once): the first fetches of a version are the ones an investigation
// needs, so they are not evicted for newer ones. Memory is about 90
// bytes per key, distinct strings apart (BenchmarkWho logs it); a
// snapshot record is about 25 bytes plus the key's three strings.
//
// Only one process may open a Dir at a time; nothing enforces it.
//
// An Inventory is safe for concurrent use.
package inventory

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/mod/semver"

	"github.com/modgate/modgate/audit"
	"github.com/modgate/modgate/goproxy"
)

// Defaults of Options.
const (
	DefaultMaxKeys       = 2_000_000
	DefaultFlushInterval = time.Second
	DefaultCompactBytes  = 64 << 20
)

// Limits on the strings of a key.
const (
	maxIdentity = 256
	maxModule   = 1024
	maxVersion  = 256
)

// Options configures Open. The zero value works: an inventory in memory
// only.
type Options struct {
	// Dir is the directory of the store, created (mode 0750) if missing.
	// Default "": nothing is stored, the inventory lives in memory only.
	Dir string
	// MaxKeys bounds the (module, version, identity) keys held; events
	// for new keys beyond it are refused and counted. Default
	// DefaultMaxKeys (2 million, about 200 MB).
	MaxKeys int
	// FlushInterval is how often dirty keys are written to the journal
	// and fsynced. Default DefaultFlushInterval (1s); negative: only on
	// Flush and Close.
	FlushInterval time.Duration
	// CompactBytes is the journal size past which (and past the
	// snapshot's size) the store is compacted into a new snapshot.
	// Default DefaultCompactBytes (64 MiB).
	CompactBytes int64
	// Logger logs what the store recovered from and refused. Default
	// slog.Default().
	Logger *slog.Logger
	// ReadOnly opens Dir to query it, as another process (the server)
	// keeps it: nothing in Dir is created or changed, a torn journal tail
	// is skipped, not cut off, and Add, Flush and Close touch memory only.
	// A missing Dir is an error wrapping fs.ErrNotExist. Default false.
	ReadOnly bool
	// Now returns the current time. Default time.Now. (The times recorded
	// are the events' own; Now only times flushes in Stats.)
	Now func() time.Time
}

// An Inventory is the index of who fetched which module versions. Create
// one with Open; Close it.
type Inventory struct {
	maxKeys int
	log     *slog.Logger
	now     func() time.Time
	store   *store // nil for an inventory in memory only

	stop chan struct{} // closed by Close to stop the flusher
	done chan struct{} // closed when the flusher returns

	// flushMu serializes Flush and compaction, so that the journal is
	// written by one at a time and records reach it in order.
	flushMu sync.Mutex

	mu      sync.RWMutex
	modules map[string]*moduleEntry
	// paths is every module path, lower-cased and followed by '\n', in the
	// order first seen; pathEnds[i] is the end of the i-th, pathMods[i]
	// its path as written and pathEntries[i] its entry. Search scans this one block of memory, not the
	// map's scattered keys.
	paths       []byte
	pathEnds    []int
	pathMods    []string
	pathEntries []*moduleEntry
	strs        map[string]string // interned versions and identities
	dirty       []key             // keys changed since the last flush
	keys        int
	stats       Stats
	warnFull    bool // the refusal has been logged
	closed      bool
}

// moduleEntry is one module's versions.
type moduleEntry struct {
	count    int64                      // fetches of all its versions
	keys     int                        // (version, identity) keys
	versions map[string]map[string]stat // version → identity → stat (values: fewer objects for the GC)
}

// stat is what is known of one key.
type stat struct {
	first, last int64 // UnixNano of the first and last fetch
	count       int64
	kinds       kindSet
	dirty       bool // in Inventory.dirty
}

// key names a stat.
type key struct{ module, version, identity string }

// Stats are an Inventory's counters, for metrics.
type Stats struct {
	Keys     int    // (module, version, identity) keys held
	Modules  int    // modules held
	Events   uint64 // fetches counted
	Ignored  uint64 // events that are not fetches (see the package documentation)
	Refused  uint64 // fetches of new keys refused: MaxKeys reached
	Flushes  uint64 // journal writes
	Failures uint64 // failed flushes and compactions
	// Compactions counts snapshots written.
	Compactions  uint64
	JournalBytes int64     // size of the journal
	LastFlush    time.Time // when the last flush succeeded
}

// Open opens the inventory stored in opts.Dir, or a new one, and replays
// it into memory. A torn journal tail is cut off and logged (with
// Options.ReadOnly, skipped); a damaged snapshot is an error (rebuild the
// inventory from the audit log).
func Open(opts Options) (*Inventory, error) {
	switch {
	case opts.MaxKeys < 0:
		return nil, fmt.Errorf("open inventory: Options.MaxKeys is negative (%d)", opts.MaxKeys)
	case opts.CompactBytes < 0:
		return nil, fmt.Errorf("open inventory: Options.CompactBytes is negative (%d)", opts.CompactBytes)
	}
	inv := &Inventory{
		maxKeys: opts.MaxKeys,
		log:     opts.Logger,
		now:     opts.Now,
		modules: make(map[string]*moduleEntry),
		strs:    make(map[string]string),
	}
	if inv.maxKeys == 0 {
		inv.maxKeys = DefaultMaxKeys
	}
	if inv.log == nil {
		inv.log = slog.Default()
	}
	if inv.now == nil {
		inv.now = time.Now
	}
	if opts.Dir == "" {
		return inv, nil
	}
	if opts.ReadOnly {
		return openReadOnly(opts)
	}
	compact := opts.CompactBytes
	if compact == 0 {
		compact = DefaultCompactBytes
	}
	s, err := openStore(opts.Dir, compact, inv.log, inv.merge)
	if err != nil {
		return nil, fmt.Errorf("open inventory: %w", err)
	}
	inv.store = s
	inv.startFlusher(opts.FlushInterval)
	return inv, nil
}

// openReadOnly replays the store in opts.Dir into an inventory in memory.
// A journal of another generation than the snapshot's is what a
// compaction by the owner of Dir leaves for a moment: it tries again.
func openReadOnly(opts Options) (*Inventory, error) {
	if _, err := os.Stat(opts.Dir); err != nil {
		return nil, fmt.Errorf("open inventory: %w", err)
	}
	for try := 0; ; try++ {
		mem := opts
		mem.Dir, mem.ReadOnly = "", false
		inv, err := Open(mem)
		if err != nil {
			return nil, err
		}
		err = readStore(opts.Dir, inv.log, inv.merge)
		if errors.Is(err, errStale) && try < 3 {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("open inventory: %w", err)
		}
		return inv, nil
	}
}

// startFlusher starts the goroutine that flushes every interval (see
// Options.FlushInterval), stopped by Close.
func (inv *Inventory) startFlusher(interval time.Duration) {
	if interval == 0 {
		interval = DefaultFlushInterval
	}
	if interval > 0 {
		inv.stop, inv.done = make(chan struct{}), make(chan struct{})
		go inv.flushEvery(interval)
	}
}

// flushEvery flushes every interval until Close.
func (inv *Inventory) flushEvery(interval time.Duration) {
	defer close(inv.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-inv.stop:
			return
		case <-t.C:
			if err := inv.Flush(); err != nil {
				inv.log.Error("inventory flush failed; will retry", "err", err)
			}
		}
	}
}

// kindBits maps goproxy kind names to their bit in a kindSet.
var kindBits = func() map[string]kindSet {
	m := make(map[string]kindSet)
	for k := goproxy.KindList; k <= goproxy.KindSumDBTile; k++ {
		m[k.String()] = 1 << k
	}
	return m
}()

// kindOther is the bit of a kind goproxy does not name.
const kindOther kindSet = 1 << 31

// A kindSet is a set of goproxy kinds: bit k for goproxy.Kind k.
type kindSet uint32

// names returns the kinds in s, in goproxy's order, "other" last. The
// slice is shared: callers must not modify it.
func (s kindSet) names() []string {
	return kindNames[s.index()]
}

// index maps s to its entry in kindNames.
func (s kindSet) index() int {
	i := int(s>>1) & (1<<goproxy.KindSumDBTile - 1)
	if s&kindOther != 0 {
		i |= 1 << goproxy.KindSumDBTile
	}
	return i
}

// kindNames holds the names of every kindSet, by index: one shared slice
// each, so that answers allocate none.
var kindNames = func() [][]string {
	t := make([][]string, 1<<(goproxy.KindSumDBTile+1))
	for i := range t {
		s := kindSet(i&(1<<goproxy.KindSumDBTile-1)) << 1
		if i&(1<<goproxy.KindSumDBTile) != 0 {
			s |= kindOther
		}
		var names []string
		for k := goproxy.KindList; k <= goproxy.KindSumDBTile; k++ {
			if s&(1<<k) != 0 {
				names = append(names, k.String())
			}
		}
		if s&kindOther != 0 {
			names = append(names, "other")
		}
		t[i] = slices.Clip(names)
	}
	return t
}()

func kindOf(name string) kindSet {
	if b, ok := kindBits[name]; ok {
		return b
	}
	return kindOther
}

// Identity is the identity an event's fetch is counted for: user.name,
// else the first URI SAN of the client certificate, else its subject,
// else source.ip; cut to 256 bytes.
func Identity(e *audit.Event) string {
	var id string
	switch {
	case e.User != nil && e.User.Name != "":
		id = e.User.Name
	case e.TLS != nil && e.TLS.Client.X509 != nil && len(e.TLS.Client.X509.SAN.URI) > 0:
		id = e.TLS.Client.X509.SAN.URI[0]
	case e.TLS != nil && e.TLS.Client.Subject != "":
		id = e.TLS.Client.Subject
	case e.Source != nil:
		id = e.Source.IP
	}
	if len(id) > maxIdentity {
		id = id[:maxIdentity]
	}
	return id
}

// served reports whether e is a fetch the inventory counts.
func served(e *audit.Event) bool {
	return e.Event.Action == audit.ActionRequest &&
		e.Modgate.Module != "" && len(e.Modgate.Module) <= maxModule &&
		e.Modgate.Version != "" && len(e.Modgate.Version) <= maxVersion &&
		e.HTTP != nil && e.HTTP.Response.StatusCode >= 200 && e.HTTP.Response.StatusCode <= 299 &&
		!e.Timestamp.IsZero() && e.Timestamp.Year() >= 1678 && e.Timestamp.Year() < 2262 // UnixNano's range
}

// Add counts e if it is a fetch (see the package documentation). It does
// not keep e, and does no I/O.
func (inv *Inventory) Add(e *audit.Event) { inv.add(e) }

// What add did with an event.
const (
	added = iota
	ignored
	refused
)

func (inv *Inventory) add(e *audit.Event) int {
	if !served(e) {
		inv.mu.Lock()
		inv.stats.Ignored++
		inv.mu.Unlock()
		return ignored
	}
	id := Identity(e)
	at := e.Timestamp.UnixNano()
	inv.mu.Lock()
	defer inv.mu.Unlock()
	if !inv.merge(key{e.Modgate.Module, e.Modgate.Version, id}, stat{first: at, last: at, count: 1, kinds: kindOf(e.Modgate.Kind)}, true) {
		return refused
	}
	inv.stats.Events++
	return added
}

// merge merges v into the stat of k: first the earlier, last the later,
// kinds the union; count the sum if add, else the larger (a stored record
// holds a key's whole count). It reports false if k is new and the index
// is full. inv.mu is held (or the store is being opened).
func (inv *Inventory) merge(k key, v stat, add bool) bool {
	m := inv.modules[k.module]
	var ids map[string]stat
	var st stat
	found := false
	if m != nil {
		ids = m.versions[k.version]
		st, found = ids[k.identity]
	}
	if !found {
		if inv.keys >= inv.maxKeys {
			inv.stats.Refused++
			if !inv.warnFull {
				inv.warnFull = true
				inv.log.Warn("inventory full: fetches of new module versions and identities are not recorded", "max_keys", inv.maxKeys, "module", k.module, "version", k.version)
			}
			return false
		}
		if m == nil {
			m = &moduleEntry{versions: make(map[string]map[string]stat)}
			inv.modules[k.module] = m
			inv.paths = append(append(inv.paths, strings.ReplaceAll(strings.ToLower(k.module), "\n", " ")...), '\n')
			inv.pathEnds = append(inv.pathEnds, len(inv.paths)-1)
			inv.pathMods = append(inv.pathMods, k.module)
			inv.pathEntries = append(inv.pathEntries, m)
		}
		if ids == nil {
			ids = make(map[string]stat, 1)
			m.versions[inv.intern(k.version)] = ids
		}
		k.identity = inv.intern(k.identity)
		st = stat{first: v.first, last: v.last}
		m.keys++
		inv.keys++
	}
	st.first = min(st.first, v.first)
	st.last = max(st.last, v.last)
	st.kinds |= v.kinds
	old := st.count
	if add {
		st.count += v.count
	} else {
		st.count = max(st.count, v.count)
	}
	m.count += st.count - old
	if inv.store != nil && !st.dirty {
		st.dirty = true
		inv.dirty = append(inv.dirty, key{k.module, inv.intern(k.version), inv.intern(k.identity)})
	}
	ids[k.identity] = st
	return true
}

// intern returns the one copy of s the index keeps. inv.mu is held.
func (inv *Inventory) intern(s string) string {
	if t, ok := inv.strs[s]; ok {
		return t
	}
	inv.strs[s] = s
	return s
}

// Flush writes what changed since the last flush to the journal and
// fsyncs it, compacting the store if the journal has grown past its
// bound. It does nothing for an inventory in memory only.
func (inv *Inventory) Flush() error {
	inv.flushMu.Lock()
	defer inv.flushMu.Unlock()
	return inv.flushLocked()
}

// flushLocked is Flush; inv.flushMu is held (inv.store changes only with
// it held).
func (inv *Inventory) flushLocked() error {
	if inv.store == nil {
		return nil
	}
	inv.mu.Lock()
	dirty := inv.dirty
	inv.dirty = nil
	buf := make([]byte, 0, 64*len(dirty))
	for _, k := range dirty {
		ids := inv.modules[k.module].versions[k.version]
		st := ids[k.identity]
		st.dirty = false
		ids[k.identity] = st
		buf = appendRecord(buf, k, st)
	}
	inv.mu.Unlock()

	// A journal that may end in a torn write takes no more records: the
	// compaction below replaces it, with every key.
	var err error
	if !inv.store.broken {
		err = inv.store.append(buf)
	}
	inv.mu.Lock()
	defer inv.mu.Unlock()
	if err != nil {
		inv.stats.Failures++
		inv.redirty(dirty)
		return fmt.Errorf("flush inventory: %w", err)
	}
	if len(buf) > 0 && !inv.store.broken {
		inv.stats.Flushes++
		inv.stats.LastFlush = inv.now()
	}
	inv.stats.JournalBytes = inv.store.journalSize
	if !inv.store.needCompact() {
		return nil
	}
	inv.mu.Unlock()
	err = inv.store.compact(inv.snapshotTo)
	inv.mu.Lock()
	if err != nil {
		inv.stats.Failures++
		return fmt.Errorf("compact inventory: %w", err)
	}
	inv.stats.Compactions++
	inv.stats.JournalBytes = inv.store.journalSize
	return nil
}

// redirty marks keys dirty again after a failed flush. inv.mu is held.
func (inv *Inventory) redirty(keys []key) {
	for _, k := range keys {
		ids := inv.modules[k.module].versions[k.version]
		if st := ids[k.identity]; !st.dirty {
			st.dirty = true
			ids[k.identity] = st
			inv.dirty = append(inv.dirty, k)
		}
	}
}

// snapshotTo writes every key's record to w, module by module, holding
// inv.mu only for one module at a time: keys that change meanwhile are
// dirty, and their records reach the journal that follows the snapshot.
func (inv *Inventory) snapshotTo(w func([]byte) error) (int, error) {
	inv.mu.RLock()
	mods := make([]string, 0, len(inv.modules))
	for mod := range inv.modules {
		mods = append(mods, mod)
	}
	inv.mu.RUnlock()
	n := 0
	var buf []byte
	for _, mod := range mods {
		inv.mu.RLock()
		buf = buf[:0]
		for ver, ids := range inv.modules[mod].versions {
			for id, st := range ids {
				buf = appendRecord(buf, key{mod, ver, id}, st)
				n++
			}
		}
		inv.mu.RUnlock()
		if err := w(buf); err != nil {
			return n, err
		}
	}
	return n, nil
}

// Stats returns the Inventory's counters.
func (inv *Inventory) Stats() Stats {
	inv.mu.RLock()
	defer inv.mu.RUnlock()
	s := inv.stats
	s.Keys, s.Modules = inv.keys, len(inv.modules)
	return s
}

// Close flushes the inventory and stops its flusher. The inventory
// still answers queries after Close; Add keeps counting in memory only.
func (inv *Inventory) Close() error {
	inv.mu.Lock()
	closed := inv.closed
	inv.closed = true
	inv.mu.Unlock()
	if closed {
		return nil
	}
	if inv.stop != nil {
		close(inv.stop)
		<-inv.done
	}
	inv.flushMu.Lock()
	defer inv.flushMu.Unlock()
	if inv.store == nil {
		return nil
	}
	err := inv.flushLocked()
	inv.mu.Lock()
	s := inv.store
	inv.store = nil
	inv.dirty = nil
	inv.mu.Unlock()
	return errors.Join(err, s.close())
}

// versionCompare orders versions by semver, invalid ones after valid ones
// and by string.
func versionCompare(a, b string) int {
	va, vb := semver.IsValid(a), semver.IsValid(b)
	switch {
	case va && vb:
		if c := semver.Compare(a, b); c != 0 {
			return c
		}
	case va:
		return -1
	case vb:
		return 1
	}
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
