package vulndb

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modgate/modgate/internal/files"
)

const (
	// retryAfterError is the longest Run waits after a failed refresh.
	retryAfterError = 5 * time.Minute
	// maxClockSkew is how far in the future index/db.json's modified
	// time may be: a later one would make every honest update after it
	// look like a rollback.
	maxClockSkew = time.Hour
	// stateFile names the held snapshot under Options.Dir.
	stateFile = "state.json"
	// maxStateBytes bounds stateFile.
	maxStateBytes = 4 << 10
)

// Options configures a Store.
type Options struct {
	Config
	// Dir holds the last good copy of the database, which survives
	// restarts: a directory snap-* in the database's own layout, named by
	// the file state.json. Both are replaced atomically (a new directory
	// written and synced, then a renamed state file). Default "": memory
	// only, and Handler serves nothing.
	Dir string
	// Get reads a URL of the source; see Source.Get. Default: HTTP with
	// http.DefaultClient, or file reads, with limits.
	Get func(ctx context.Context, url string) ([]byte, error)
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Logger receives operational logs. Default slog.Default().
	Logger *slog.Logger
}

// A Store holds the live database: the last snapshot that loaded whole
// and checked, replaced atomically by Refresh. It is safe for concurrent
// use.
type Store struct {
	cfg    Config // with defaults
	src    Source
	remote bool // an http(s) source, whose answers vouch for freshness
	dir    string
	now    func() time.Time
	log    *slog.Logger

	cur     atomic.Pointer[held]
	checked atomic.Int64 // UnixNano of the last check of a remote source that vouched for cur; 0 if none

	// mu serializes Refresh and guards the fields below.
	mu   sync.Mutex
	old  string // the snapshot before cur's, kept for the mirror's readers
	full bool   // the next update reads every entry, reusing none
}

// held is the live DB and the name of its snapshot directory under Dir
// ("" without a Dir).
type held struct {
	db   *DB
	snap string
}

// state is the content of stateFile.
type state struct {
	URL      string    `json:"url"`
	Snapshot string    `json:"snapshot"`
	Modified time.Time `json:"modified"`
	Fetched  time.Time `json:"fetched"`
	Checked  time.Time `json:"checked,omitzero"`
}

// Open returns a Store for the database at opts.URL, holding the last good
// copy in opts.Dir if there is one that is whole, checked, and from the
// same URL. Open reads no network: Run (or Refresh) brings the data up to
// date. A Store without data is stale.
func Open(ctx context.Context, opts Options) (*Store, error) {
	if err := opts.Config.Check(); err != nil {
		return nil, err
	}
	if opts.URL == "" {
		return nil, errors.New("vulndb.url: missing: the server supplies the public database's URL when the config has none")
	}
	base, err := parseSourceURL(opts.URL)
	if err != nil {
		return nil, fmt.Errorf("vulndb.url: %w", err)
	}
	s := &Store{
		cfg:    opts.Config.withDefaults(),
		src:    Source{URL: base, Get: opts.Get},
		remote: !strings.HasPrefix(base, "file:"),
		dir:    opts.Dir,
		now:    opts.Now,
		log:    opts.Logger,
	}
	if s.src.Get == nil {
		s.src.Get = defaultGet(http.DefaultClient)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.dir == "" {
		return s, nil
	}
	if err := os.MkdirAll(s.dir, 0o750); err != nil {
		return nil, fmt.Errorf("open vulndb: %w", err)
	}
	if err := s.loadHeld(ctx); err != nil {
		// No copy is no data: stale, until Refresh. Not fatal.
		if !errors.Is(err, fs.ErrNotExist) {
			s.log.Error("vulndb: the copy held on disk is unusable; waiting for a refresh", "dir", s.dir, "err", err)
		}
	}
	s.clean()
	return s, nil
}

// loadHeld loads the snapshot that stateFile names.
func (s *Store) loadHeld(ctx context.Context) error {
	data, err := files.ReadMax(filepath.Join(s.dir, stateFile), maxStateBytes)
	if err != nil {
		return err
	}
	var st state
	if err := strictUnmarshal(data, &st); err != nil {
		return fmt.Errorf("%s: %w", stateFile, err)
	}
	if st.URL != s.src.URL {
		return fmt.Errorf("the copy held is of %s, not %s", st.URL, s.src.URL)
	}
	if !strings.HasPrefix(st.Snapshot, "snap-") || filepath.Base(st.Snapshot) != st.Snapshot {
		return fmt.Errorf("%s: bad snapshot name %q", stateFile, st.Snapshot)
	}
	u := url.URL{Scheme: "file", Path: filepath.ToSlash(filepath.Join(s.dir, st.Snapshot))}
	if !filepath.IsAbs(s.dir) {
		abs, err := filepath.Abs(filepath.Join(s.dir, st.Snapshot))
		if err != nil {
			return err
		}
		u.Path = filepath.ToSlash(abs)
	}
	l, err := load(ctx, Source{URL: u.String(), Get: defaultGet(nil)}, nil, st.Fetched)
	if err != nil {
		return err
	}
	if !l.db.modified.Equal(st.Modified) {
		return fmt.Errorf("%s: snapshot %s is modified %v, want %v", stateFile, st.Snapshot, l.db.modified, st.Modified)
	}
	s.cur.Store(&held{db: l.db, snap: st.Snapshot})
	if s.remote && !st.Checked.IsZero() {
		s.checked.Store(st.Checked.UnixNano())
	}
	s.log.Info("vulndb: loaded the copy held on disk", "entries", l.db.Len(), "modified", l.db.modified, "checked", st.Checked)
	return nil
}

// clean removes the directories under Dir that are not the held snapshot:
// those of interrupted writes and of old snapshots.
func (s *Store) clean() {
	keep := ""
	if h := s.cur.Load(); h != nil {
		keep = h.snap
	}
	des, err := os.ReadDir(s.dir)
	if err != nil {
		s.log.Warn("vulndb: cleaning the state directory", "err", err)
		return
	}
	for _, de := range des {
		n := de.Name()
		if n == keep || !de.IsDir() || !(strings.HasPrefix(n, "snap-") || strings.HasPrefix(n, "tmp-")) {
			continue
		}
		if err := os.RemoveAll(filepath.Join(s.dir, n)); err != nil {
			s.log.Warn("vulndb: cleaning the state directory", "err", err)
		}
	}
}

// Current returns the live DB, nil before any data is loaded.
func (s *Store) Current() *DB {
	if h := s.cur.Load(); h != nil {
		return h.db
	}
	return nil
}

// Age is how old the data held is: the time since the later of the
// database's own modified time and, for an http(s) source, the last
// refresh at which the source confirmed the data is current (its
// index/db.json unchanged, or a new snapshot loaded). A file:// source
// confirms nothing (a directory reads the same however old it is), so its
// age is that of its modified time. Without data, Age is the largest
// Duration. It is for a metric and /readyz.
func (s *Store) Age() time.Duration { return s.ageAt(s.now()) }

func (s *Store) ageAt(now time.Time) time.Duration {
	h := s.cur.Load()
	if h == nil {
		return time.Duration(math.MaxInt64)
	}
	t := h.db.modified
	if c := s.checked.Load(); c != 0 {
		if ct := time.Unix(0, c); ct.After(t) {
			t = ct
		}
	}
	return max(now.Sub(t), 0)
}

// Stale reports whether Age is beyond MaxStaleness.
func (s *Store) Stale() bool { return s.ageAt(s.now()) > s.cfg.MaxStaleness }

// Refresh brings the data up to date: it reads index/db.json and, only if
// its modified time changed, index/modules.json and the entries that are
// new or changed since the data held. The new snapshot replaces the old
// one only once all of it is read and checked and, with a Dir, written
// there: a malformed or partial update is refused whole and the old data
// kept, in memory and on disk. So is an index/db.json older than the data
// held (a rollback). Concurrent calls run one at a time.
func (s *Store) Refresh(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	f, err := newFetcher(s.src)
	if err != nil {
		return fmt.Errorf("refresh vulndb: %w", err)
	}
	dbJSON, err := f.fetch(ctx, "index/db.json", maxIndexBytes)
	if err != nil {
		return fmt.Errorf("refresh vulndb: %w", err)
	}
	modified, err := parseDBIndex(dbJSON)
	if err != nil {
		return fmt.Errorf("refresh vulndb: %w", err)
	}
	if modified.After(now.Add(maxClockSkew)) {
		return fmt.Errorf("refresh vulndb: index/db.json modified %v, in the future", modified)
	}
	h := s.cur.Load()
	if h != nil {
		switch c := modified.Compare(h.db.modified); {
		case c < 0:
			return fmt.Errorf("refresh vulndb: index/db.json modified %v, before the data held (%v): %w", modified, h.db.modified, errRollback)
		case c == 0:
			s.vouch(h, now)
			return nil
		}
	}
	var prev *DB
	if h != nil && !s.full {
		prev = h.db
	}
	l, err := loadEntries(ctx, f, prev, modified, dbJSON, now)
	if err != nil {
		return fmt.Errorf("refresh vulndb: %w", err)
	}
	next := &held{db: l.db}
	if s.dir != "" {
		if next.snap, err = s.writeSnapshot(h, l); err != nil {
			s.full = true
			return fmt.Errorf("refresh vulndb: %w", err)
		}
		st := state{URL: s.src.URL, Snapshot: next.snap, Modified: l.db.modified, Fetched: l.db.fetched}
		if s.remote {
			st.Checked = now
		}
		if err := s.writeState(st); err != nil {
			os.RemoveAll(filepath.Join(s.dir, next.snap))
			s.full = true
			return fmt.Errorf("refresh vulndb: %w", err)
		}
	}
	s.cur.Store(next)
	if s.remote {
		s.checked.Store(now.UnixNano())
	}
	s.full = false
	if s.old != "" {
		if err := os.RemoveAll(filepath.Join(s.dir, s.old)); err != nil {
			s.log.Warn("vulndb: removing an old snapshot", "err", err)
		}
	}
	if h != nil {
		s.old = h.snap
	}
	s.log.Info("vulndb: updated", "entries", l.db.Len(), "fetched", len(l.fresh), "modified", l.db.modified)
	return nil
}

// vouch records that the source confirmed, at now, that h is current.
func (s *Store) vouch(h *held, now time.Time) {
	if !s.remote {
		return
	}
	s.checked.Store(now.UnixNano())
	if s.dir == "" {
		return
	}
	st := state{URL: s.src.URL, Snapshot: h.snap, Modified: h.db.modified, Fetched: h.db.fetched, Checked: now}
	if err := s.writeState(st); err != nil {
		// The check holds in memory; after a restart the age counts from
		// the last check recorded.
		s.log.Warn("vulndb: recording the check", "err", err)
	}
}

// Run refreshes the data every Refresh (sooner after an error) until ctx
// is done, starting at once.
func (s *Store) Run(ctx context.Context) {
	for {
		wait := s.cfg.Refresh
		if err := s.Refresh(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			s.log.Error("vulndb: refresh failed; keeping the data held", "err", err, "age", s.Age().Round(time.Second))
			wait = min(wait, retryAfterError)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// writeSnapshot writes l as a new snapshot directory under Dir and returns
// its name. Entries reused from h are hard-linked (or copied) from h's
// snapshot; the others are written. Everything is synced before the
// directory is renamed into place.
func (s *Store) writeSnapshot(h *held, l *loaded) (name string, err error) {
	tmp, err := os.MkdirTemp(s.dir, "tmp-")
	if err != nil {
		return "", fmt.Errorf("write snapshot: %w", err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	for _, d := range []string{"index", "ID"} {
		if err := os.Mkdir(filepath.Join(tmp, d), 0o750); err != nil {
			return "", fmt.Errorf("write snapshot: %w", err)
		}
	}
	for id := range l.db.entries {
		rel := filepath.Join("ID", id+".json")
		if data, ok := l.fresh[id]; ok {
			err = writeSynced(filepath.Join(tmp, rel), data)
		} else if h == nil || h.snap == "" {
			err = fmt.Errorf("%s: reused, but no snapshot holds it", id)
		} else {
			err = linkOrCopy(filepath.Join(s.dir, h.snap, rel), filepath.Join(tmp, rel))
		}
		if err != nil {
			return "", fmt.Errorf("write snapshot: %w", err)
		}
	}
	if err := writeSynced(filepath.Join(tmp, "index", "db.json"), l.dbJSON); err != nil {
		return "", fmt.Errorf("write snapshot: %w", err)
	}
	if err := writeSynced(filepath.Join(tmp, "index", "modules.json"), l.modJSON); err != nil {
		return "", fmt.Errorf("write snapshot: %w", err)
	}
	for _, d := range []string{filepath.Join(tmp, "index"), filepath.Join(tmp, "ID"), tmp} {
		if err := syncDir(d); err != nil {
			return "", fmt.Errorf("write snapshot: %w", err)
		}
	}
	name = "snap-" + strings.TrimPrefix(filepath.Base(tmp), "tmp-")
	if err := os.Rename(tmp, filepath.Join(s.dir, name)); err != nil {
		return "", fmt.Errorf("write snapshot: %w", err)
	}
	if err := syncDir(s.dir); err != nil {
		os.RemoveAll(filepath.Join(s.dir, name))
		return "", fmt.Errorf("write snapshot: %w", err)
	}
	return name, nil
}

// writeState replaces stateFile atomically.
func (s *Store) writeState(st state) error {
	data, err := json.Marshal(st)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(s.dir, "state-*.tmp")
	if err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), filepath.Join(s.dir, stateFile))
	}
	if err == nil {
		err = syncDir(s.dir)
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("write state: %w", err)
	}
	return nil
}

// writeSynced creates the file name holding data, synced.
func writeSynced(name string, data []byte) error {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
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
	return err
}

// linkOrCopy hard-links old as name, or copies it if links fail.
func linkOrCopy(old, name string) error {
	if os.Link(old, name) == nil {
		return nil
	}
	data, err := files.ReadMax(old, maxEntryBytes)
	if err != nil {
		return err
	}
	return writeSynced(name, data)
}

// syncDir syncs the directory dir, making the names in it durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
