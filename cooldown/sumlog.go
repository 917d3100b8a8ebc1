package cooldown

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"golang.org/x/mod/module"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/modgate/modgate/internal/sumanswer"
)

// The log's tiles, and the bounds on what is kept of them.
const (
	maxTiles   = 1024    // verified tiles kept in memory, 8 KiB each at most
	maxRecords = 1 << 16 // record numbers kept in memory
)

// ErrSecurity marks the errors of a checksum database whose log is not
// append-only: two of its signed tree heads disagree. It is sticky: the
// Checker proves nothing more from that database until it is restarted.
var ErrSecurity = errors.New("checksum database misbehaved")

// A record is a module version's record in the checksum database's log:
// its number, and the hash of its text.
type record struct {
	N    int64
	Hash tlog.Hash
}

// sumLog reads the checksum database through fetch and keeps one
// timeline of it: the newest signed tree head verified so far, which each
// later one must extend, with a tlog proof, as sumdb.Client does. Every
// record number it returns is proven to be in a tree on that timeline. It
// is safe for concurrent use.
type sumLog struct {
	fetch     func(ctx context.Context, path string) ([]byte, error)
	verifiers note.Verifiers
	name      string // the database's name, for messages
	log       *slog.Logger
	lookups   flight[module.Version, lookupResult]
	tileFetch flight[tlog.Tile, []byte]

	mu          sync.Mutex
	latest      tlog.Tree // N == 0 until a tree head is verified
	latestNote  []byte
	compromised string                    // the security message, once there is one
	tiles       map[tlog.Tile][]byte      // verified tiles
	records     map[module.Version]record // proven records
}

// A lookupResult is a proven record and the tree head that came with it.
type lookupResult struct {
	rec  record
	tree tlog.Tree
}

func newSumLog(fetch func(context.Context, string) ([]byte, error), vkey string, log *slog.Logger) (*sumLog, error) {
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return nil, fmt.Errorf("checksum database key %q: %w (want name+hash+keydata)", vkey, err)
	}
	return &sumLog{
		fetch:     fetch,
		verifiers: note.VerifierList(v),
		name:      v.Name(),
		log:       log,
		tiles:     make(map[tlog.Tile][]byte),
		records:   make(map[module.Version]record),
	}, nil
}

// lookup returns path@version's record, proven to be in the log, and the
// tree head that came with it (the zero Tree when the record was known
// already). Concurrent lookups of one version share one fetch.
func (l *sumLog) lookup(ctx context.Context, path, version string) (record, tlog.Tree, error) {
	mv := module.Version{Path: path, Version: version}
	l.mu.Lock()
	rec, ok := l.records[mv]
	l.mu.Unlock()
	if ok {
		return rec, tlog.Tree{}, nil
	}
	r, err := l.lookups.do(ctx, mv, func() (lookupResult, error) { return l.lookupRemote(ctx, mv) })
	return r.rec, r.tree, err
}

func (l *sumLog) lookupRemote(ctx context.Context, mv module.Version) (lookupResult, error) {
	if err := l.check(); err != nil {
		return lookupResult{}, err
	}
	epath, err := module.EscapePath(mv.Path)
	if err != nil {
		return lookupResult{}, err
	}
	evers, err := module.EscapeVersion(mv.Version)
	if err != nil {
		return lookupResult{}, err
	}
	data, err := l.fetch(ctx, "/lookup/"+epath+"@"+evers)
	if err != nil {
		return lookupResult{}, err
	}
	id, text, tree, msg, err := sumanswer.Lookup(data, mv.Path, mv.Version, l.verifiers)
	if err != nil {
		return lookupResult{}, err
	}
	if err := l.merge(ctx, tree, msg); err != nil {
		return lookupResult{}, err
	}
	// Prove the record in the timeline's newest tree, which holds tree.
	l.mu.Lock()
	latest := l.latest
	l.mu.Unlock()
	hashes, err := tlog.TileHashReader(latest, l.tileReader(ctx)).ReadHashes([]int64{tlog.StoredHashIndex(0, id)})
	if err != nil {
		return lookupResult{}, fmt.Errorf("proving record %d: %w", id, err)
	}
	rec := record{N: id, Hash: tlog.RecordHash(text)}
	if hashes[0] != rec.Hash {
		return lookupResult{}, fmt.Errorf("the answer's record %d is not the log's record %d", id, id)
	}
	l.mu.Lock()
	if len(l.records) >= maxRecords {
		for k := range l.records { // evict any one: records are cheap to fetch again
			delete(l.records, k)
			break
		}
	}
	l.records[mv] = rec
	l.mu.Unlock()
	return lookupResult{rec: rec, tree: tree}, nil
}

// latestTree fetches and verifies the database's latest signed tree head,
// merges it into the timeline and returns it.
func (l *sumLog) latestTree(ctx context.Context) (tlog.Tree, error) {
	if err := l.check(); err != nil {
		return tlog.Tree{}, err
	}
	msg, err := l.fetch(ctx, "/latest")
	if err != nil {
		return tlog.Tree{}, err
	}
	tree, err := sumanswer.Tree(msg, l.verifiers)
	if err != nil {
		return tlog.Tree{}, err
	}
	if err := l.merge(ctx, tree, msg); err != nil {
		return tlog.Tree{}, err
	}
	return tree, nil
}

// merge adds tree, signed in msg, to the timeline: if it is older than
// the newest tree, that tree must contain it; if newer, it must contain
// the newest tree, and becomes the newest.
func (l *sumLog) merge(ctx context.Context, tree tlog.Tree, msg []byte) error {
	for {
		l.mu.Lock()
		latest, latestNote := l.latest, l.latestNote
		l.mu.Unlock()
		if tree.N <= latest.N {
			return l.checkContains(ctx, latest, latestNote, tree, msg)
		}
		if err := l.checkContains(ctx, tree, msg, latest, latestNote); err != nil {
			return err
		}
		l.mu.Lock()
		if l.latest == latest {
			l.latest, l.latestNote = tree, msg
			l.mu.Unlock()
			return nil
		}
		l.mu.Unlock() // another merge moved the timeline: go again
	}
}

// checkContains checks that big, a tree on the timeline or being added to
// it, contains small: that small's log is a prefix of big's. A proof
// that it does not is a security error.
func (l *sumLog) checkContains(ctx context.Context, big tlog.Tree, bigNote []byte, small tlog.Tree, smallNote []byte) error {
	ok, err := l.contains(ctx, big, small)
	if err != nil || ok {
		return err
	}
	msg := fmt.Sprintf("checksum database %s signed two trees that disagree: tree of %d records %v and tree of %d records %v\nolder:\n%s\nnewer:\n%s",
		l.name, small.N, small.Hash, big.N, big.Hash, indent(smallNote), indent(bigNote))
	l.mu.Lock()
	first := l.compromised == ""
	if first {
		l.compromised = msg
	}
	l.mu.Unlock()
	if first {
		l.log.Error("SECURITY ERROR: the checksum database misbehaved; the cooldown now refuses every public module version until modgate is restarted", "sumdb", l.name, "detail", msg)
	}
	return fmt.Errorf("%w: %s", ErrSecurity, msg)
}

// contains reports whether small's log is a prefix of big's, using big's
// tiles.
func (l *sumLog) contains(ctx context.Context, big, small tlog.Tree) (bool, error) {
	if small.N == 0 || small == big {
		return true, nil
	}
	if small.N > big.N {
		return false, nil
	}
	h, err := tlog.TreeHash(small.N, tlog.TileHashReader(big, l.tileReader(ctx)))
	if err != nil {
		return false, fmt.Errorf("checking tree of %d records against tree of %d: %w", small.N, big.N, err)
	}
	return h == small.Hash, nil
}

// onTimeline reports whether t, a tree from elsewhere, is a prefix of the
// timeline's newest tree, fetching a newer one if t is bigger. (false,
// nil) is proof that t is not on the timeline.
func (l *sumLog) onTimeline(ctx context.Context, t tlog.Tree) (bool, error) {
	if err := l.check(); err != nil {
		return false, err
	}
	l.mu.Lock()
	latest := l.latest
	l.mu.Unlock()
	if t.N > latest.N {
		var err error
		if latest, err = l.latestTree(ctx); err != nil {
			return false, err
		}
		if t.N > latest.N {
			return false, fmt.Errorf("checksum database %s's latest tree holds %d records, fewer than the %d of a tree head modgate saw before", l.name, latest.N, t.N)
		}
	}
	return l.contains(ctx, latest, t)
}

// treeHash returns the hash of the timeline's tree of n records.
func (l *sumLog) treeHash(ctx context.Context, n int64) (tlog.Hash, error) {
	l.mu.Lock()
	latest := l.latest
	l.mu.Unlock()
	if n > latest.N {
		return tlog.Hash{}, fmt.Errorf("tree of %d records is beyond the latest, of %d", n, latest.N)
	}
	return tlog.TreeHash(n, tlog.TileHashReader(latest, l.tileReader(ctx)))
}

// check returns the sticky security error, if any.
func (l *sumLog) check() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.compromised != "" {
		return fmt.Errorf("%w earlier in this process; proving nothing more from it until an operator restarts modgate", ErrSecurity)
	}
	return nil
}

// tileReader returns a tlog.TileReader whose fetches ctx bounds. The
// adapter holds ctx because tlog's interface has no context parameter; it
// lives for one proof.
func (l *sumLog) tileReader(ctx context.Context) tlog.TileReader {
	return &tileReader{ctx: ctx, l: l}
}

type tileReader struct {
	ctx context.Context
	l   *sumLog
}

func (r *tileReader) Height() int { return sumanswer.TileHeight }

// ReadTiles reads tiles from memory or the database, in parallel. Tiles
// from the database are suspect until SaveTiles.
func (r *tileReader) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	data := make([][]byte, len(tiles))
	errs := make([]error, len(tiles))
	var wg sync.WaitGroup
	for i, t := range tiles {
		wg.Go(func() { data[i], errs[i] = r.l.readTile(r.ctx, t) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return data, nil
}

// SaveTiles keeps the tiles tlog has verified, in a bounded memory cache.
func (r *tileReader) SaveTiles(tiles []tlog.Tile, data [][]byte) {
	l := r.l
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, t := range tiles {
		if _, ok := l.tiles[t]; ok {
			continue
		}
		if len(l.tiles) >= maxTiles {
			for k := range l.tiles { // evict any one
				delete(l.tiles, k)
				break
			}
		}
		l.tiles[t] = bytes.Clone(data[i])
	}
}

// readTile returns t's data: from memory (t or the full tile it is a
// prefix of), else from the database (t, else the full tile, as a partial
// tile disappears once complete). Its length is checked.
func (l *sumLog) readTile(ctx context.Context, t tlog.Tile) ([]byte, error) {
	full := t
	full.W = 1 << t.H
	l.mu.Lock()
	data, ok := l.tiles[t]
	if !ok {
		if fd, fok := l.tiles[full]; fok {
			data, ok = fd[:t.W*tlog.HashSize], true
		}
	}
	l.mu.Unlock()
	if ok {
		return data, nil
	}
	return l.tileFetch.do(ctx, t, func() ([]byte, error) {
		data, err := l.fetchTile(ctx, t)
		if err != nil && t != full {
			if fd, ferr := l.fetchTile(ctx, full); ferr == nil {
				return fd[:t.W*tlog.HashSize], nil
			}
		}
		return data, err
	})
}

func (l *sumLog) fetchTile(ctx context.Context, t tlog.Tile) ([]byte, error) {
	data, err := l.fetch(ctx, "/"+t.Path())
	if err != nil {
		return nil, err
	}
	if len(data) != t.W*tlog.HashSize {
		return nil, fmt.Errorf("tile %s: %d bytes, want %d", t.Path(), len(data), t.W*tlog.HashSize)
	}
	return data, nil
}

// indent indents a note for a multi-line message.
func indent(b []byte) string {
	return "\t" + strings.ReplaceAll(strings.TrimSpace(string(b)), "\n", "\n\t")
}

// A flight makes concurrent calls for one key share one call. The zero
// flight is ready for use.
type flight[K comparable, V any] struct {
	mu    sync.Mutex
	calls map[K]*flightCall[V]
}

type flightCall[V any] struct {
	done chan struct{}
	v    V
	err  error
}

// do calls fn, or waits for the call already running for key and returns
// its results. A waiter whose ctx ends returns ctx's error.
func (f *flight[K, V]) do(ctx context.Context, key K, fn func() (V, error)) (V, error) {
	f.mu.Lock()
	if c, ok := f.calls[key]; ok {
		f.mu.Unlock()
		select {
		case <-c.done:
			return c.v, c.err
		case <-ctx.Done():
			var zero V
			return zero, ctx.Err()
		}
	}
	if f.calls == nil {
		f.calls = make(map[K]*flightCall[V])
	}
	c := &flightCall[V]{done: make(chan struct{})}
	f.calls[key] = c
	f.mu.Unlock()

	defer func() {
		f.mu.Lock()
		delete(f.calls, key)
		f.mu.Unlock()
		close(c.done)
	}()
	c.v, c.err = fn()
	return c.v, c.err
}
