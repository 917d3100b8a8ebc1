package verify

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/mod/module"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/modgate/modgate/internal/sumanswer"
)

// An AnswerError is an answer of the checksum database that is proven
// wrong: not signed by its key, not in its log, or not the data the path
// names. Unlike the Client's security errors it says nothing about the
// database, which never saw it: it is what a captive portal, a broken
// middlebox or a corrupted upstream cache hands out.
type AnswerError struct {
	Path string // the database path asked: /lookup/…, /tile/…, /latest
	Err  error
}

func (e *AnswerError) Error() string {
	return fmt.Sprintf("checksum database answer for %s: %v", e.Path, e.Err)
}

func (e *AnswerError) Unwrap() error { return e.Err }

// Answer checks data, the answer to a client's request for path p of the
// checksum database name (/latest, /lookup/M@V or /tile/…), before it is
// cached: the go command checks what it is served, but an answer cached
// wrong would fail every client that asks for the next day.
//
// It returns true if data is proven: a /latest signed by the database's
// key; a /lookup record that names the module version asked for and is in
// the signed tree the answer carries (an inclusion proof from the
// database's tiles); a hash tile equal to the hashes of a signed tree
// this Verifier has seen. It returns false and no error for an answer it
// cannot prove either way (another database, a data tile, a tile beyond
// every tree seen, the tiles for a proof unreachable): serve it, but do
// not keep it. An *AnswerError means data is wrong.
//
// The largest tree among the answers it proves is kept, to prove the
// tiles that the go command then asks for: tiles of the tree it was
// given. None of this touches the Client's own state.
func (v *Verifier) Answer(ctx context.Context, name, p string, data []byte) (bool, error) {
	if v.ops == nil || name != v.name {
		return false, nil
	}
	var err error
	switch {
	case p == "/latest":
		var tree tlog.Tree
		if tree, err = v.openTree(data); err == nil {
			v.sawTree(tree)
			return true, nil
		}
	case strings.HasPrefix(p, "/lookup/"):
		err = v.answerLookup(ctx, strings.TrimPrefix(p, "/lookup/"), data)
	case strings.HasPrefix(p, "/tile/"):
		var ok bool
		if ok, err = v.answerTile(ctx, strings.TrimPrefix(p, "/"), data); err == nil && !ok {
			return false, nil
		}
	default:
		return false, nil
	}
	var unreachable *tileFetchError
	switch {
	case errors.As(err, &unreachable):
		return false, nil
	case err != nil:
		return false, &AnswerError{Path: p, Err: err}
	}
	return true, nil
}

// openTree checks a signed tree head against the database's key.
func (v *Verifier) openTree(msg []byte) (tlog.Tree, error) {
	return sumanswer.Tree(msg, note.VerifierList(v.noteVerifier))
}

// sawNote keeps the tree of msg, a signed tree head the Client has
// verified, if it is the largest so far.
func (v *Verifier) sawNote(msg []byte) {
	if tree, err := v.openTree(msg); err == nil {
		v.sawTree(tree)
	}
}

// sawTree keeps tree if it is the largest proven so far.
func (v *Verifier) sawTree(tree tlog.Tree) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if tree.N > v.seen.N {
		v.seen = tree
	}
}

// newestTree returns the largest tree this Verifier knows to be signed:
// the Client's latest, or one an answer carried.
func (v *Verifier) newestTree() tlog.Tree {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.seen
}

// answerLookup proves a /lookup answer for escaped, the ESCPATH@ESCVERS
// of its path.
func (v *Verifier) answerLookup(ctx context.Context, escaped string, data []byte) error {
	epath, evers, ok := strings.Cut(escaped, "@")
	if !ok {
		return errors.New("lookup path without @version")
	}
	path, err := module.UnescapePath(epath)
	if err != nil {
		return err
	}
	vers, err := module.UnescapeVersion(evers)
	if err != nil {
		return err
	}
	id, text, tree, _, err := sumanswer.Lookup(data, path, vers, note.VerifierList(v.noteVerifier))
	if err != nil {
		return err
	}
	tr := &answerTiles{ctx: ctx, v: v}
	hashes, err := tlog.TileHashReader(tree, tr).ReadHashes([]int64{tlog.StoredHashIndex(0, id)})
	if err != nil {
		return err
	}
	if hashes[0] != tlog.RecordHash(text) {
		return fmt.Errorf("record %d is not the one the tree of size %d holds", id, tree.N)
	}
	v.sawTree(tree)
	return nil
}

// answerTile proves a hash tile against the newest signed tree known. It
// returns false, with no error, for a tile it cannot prove: a data tile,
// another height, or hashes beyond that tree.
func (v *Verifier) answerTile(ctx context.Context, p string, data []byte) (bool, error) {
	t, err := tlog.ParseTilePath(p)
	if err != nil {
		return false, err
	}
	if t.L < 0 || t.H != sumanswer.TileHeight {
		return false, nil
	}
	if len(data) != t.W*tlog.HashSize {
		return false, fmt.Errorf("%d bytes, want %d for %d hashes", len(data), t.W*tlog.HashSize, t.W)
	}
	tree := v.newestTree()
	// The tile's last hash is at level L·H; the tree must hold it.
	last := t.N<<t.H + int64(t.W) - 1
	if (last+1)<<(t.L*t.H) > tree.N {
		return false, nil
	}
	tr := &answerTiles{ctx: ctx, v: v, candidate: t, data: data}
	want, err := tlog.ReadTileData(t, tlog.TileHashReader(tree, tr))
	if err != nil {
		return false, err
	}
	if !bytes.Equal(want, data) {
		return false, fmt.Errorf("not the hashes of the tree of size %d", tree.N)
	}
	return true, nil
}

// answerTiles is the tlog.TileReader that proves answers: the tile being
// proven, if any, from the answer itself; others from the Verifier's own
// cache of verified tiles, else from the database. Tiles it fetched
// are verified by the time SaveTiles has them, and cached as the Client's
// are.
type answerTiles struct {
	ctx       context.Context
	v         *Verifier
	candidate tlog.Tile // the answer's tile (zero if none)
	data      []byte    // the answer's data
	fetched   map[tlog.Tile]bool
}

// A tileFetchError is a tile that could not be read: the proof is not
// possible now, which proves nothing wrong.
type tileFetchError struct{ err error }

func (e *tileFetchError) Error() string { return e.err.Error() }
func (e *tileFetchError) Unwrap() error { return e.err }

func (r *answerTiles) Height() int { return sumanswer.TileHeight }

func (r *answerTiles) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	data := make([][]byte, len(tiles))
	for i, t := range tiles {
		d, err := r.read(t)
		if err != nil {
			return nil, err
		}
		data[i] = d
	}
	return data, nil
}

// read reads tile t, as sumdb.Client does: the tile, or a prefix of its
// full tile, from the cache, then from the database.
func (r *answerTiles) read(t tlog.Tile) ([]byte, error) {
	if r.candidate.W > 0 && t == r.candidate {
		return r.data, nil
	}
	o := r.v.ops
	full := t
	full.W = 1 << t.H
	if d, err := o.ReadCache(r.v.name + "/" + t.Path()); err == nil {
		return d, nil
	}
	if d, err := o.ReadCache(r.v.name + "/" + full.Path()); err == nil && len(d) == full.W*tlog.HashSize {
		return d[:t.W*tlog.HashSize], nil
	}
	ctx, cancel := context.WithTimeout(r.ctx, o.timeout)
	defer cancel()
	d, err := o.fetch(ctx, "/"+t.Path())
	if err != nil && t != full {
		// A partial tile the database no longer has: its full tile does.
		if fd, ferr := o.fetch(ctx, "/"+full.Path()); ferr == nil && len(fd) == full.W*tlog.HashSize {
			d, err = fd[:t.W*tlog.HashSize], nil
		}
	}
	if err != nil {
		return nil, &tileFetchError{fmt.Errorf("reading tile %s: %w", t.Path(), err)}
	}
	if r.fetched == nil {
		r.fetched = map[tlog.Tile]bool{}
	}
	r.fetched[t] = true
	return d, nil
}

// SaveTiles caches the tiles fetched, now proven.
func (r *answerTiles) SaveTiles(tiles []tlog.Tile, data [][]byte) {
	for i, t := range tiles {
		if r.fetched[t] {
			r.v.ops.WriteCache(r.v.name+"/"+t.Path(), data[i])
		}
	}
}
