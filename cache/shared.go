package cache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Shared is a tier that several replicas share: an object store with
// conditional writes (package s3store). Names are the Cache's own: see
// the layout below. Every method bounds what it reads.
//
// Errors: an absent object is an error wrapping fs.ErrNotExist, a write
// refused because the object exists (ifAbsent) one wrapping fs.ErrExist.
// Any other error means the store is unavailable; the Cache then answers
// with an error wrapping ErrUnavailable, never with "not cached", so that
// a miss during an outage is not mistaken for an answer.
type Shared interface {
	// Get reads object name whole; more than max bytes is an error.
	Get(ctx context.Context, name string, max int64) ([]byte, error)
	// Put writes data as name; with ifAbsent only if name does not exist.
	Put(ctx context.Context, name string, data []byte, ifAbsent bool) error
	// Upload writes size bytes of r as name unless name exists, which is
	// success: it is for content-addressed objects. A failed upload leaves
	// nothing visible.
	Upload(ctx context.Context, name string, r io.ReaderAt, size int64) error
	// Download writes object name, which must be size bytes, to w.
	Download(ctx context.Context, name string, size int64, w io.Writer) error
}

// The shared tier's layout, under the store's own prefix:
//
//	blobs/SHA256   bodies too large to inline, named by their SHA-256
//	entries/KEY    one object per key: its entry file (JSON), a newline,
//	               and the body itself if it is inlined
//
// A blob is uploaded before the entry that names it, and the entry is the
// commit point: a replica that dies mid-fill leaves at most an
// unreferenced blob or an unfinished multipart upload, which `modgate
// store gc` removes, never an entry that names a missing or partial body.
// An immutable class's entry is created only if absent (If-None-Match),
// so the first replica to commit a version wins and every later commit of
// it is a no-op; entries that change (lists, @latest, negative entries,
// tree heads) are overwritten, each with a fresh answer, and judged by
// their TTL like every entry.
const (
	// SharedBlobsPrefix and SharedEntriesPrefix begin the names of blobs
	// and entries, for tools that walk the store (modgate store gc).
	SharedBlobsPrefix   = "blobs/"
	SharedEntriesPrefix = "entries/"
	// sharedInlineMax is the largest body inlined in its entry object.
	sharedInlineMax = 256 << 10
	// SharedEntryMax bounds an entry object: a header and an inline body.
	SharedEntryMax = sharedInlineMax + 16<<10
)

// ErrUnavailable is wrapped by the errors of a Cache whose shared tier
// could not be read or written: the answer is unknown, not "not cached".
var ErrUnavailable = errors.New("shared cache tier unavailable")

// Shared is the tier an entry was read through from.
const SharedTier Tier = "shared"

// sharedEntryName is key's entry: keys begin with "/".
func sharedEntryName(key string) string { return SharedEntriesPrefix + strings.TrimPrefix(key, "/") }

func sharedBlobName(sum [32]byte) string { return SharedBlobsPrefix + fmt.Sprintf("%x", sum) }

func unavailable(op, key string, err error) error {
	return fmt.Errorf("%w: %s %s: %v", ErrUnavailable, op, key, err)
}

// putShared commits m to the shared tier: its blob first, from body or f,
// then its entry. An immutable entry that another replica committed first
// is success: the store keeps the first.
func (c *Cache) putShared(ctx context.Context, m Meta, body []byte, f *os.File) error {
	header, err := marshalEntry(m)
	if err != nil {
		return fmt.Errorf("cache: %w", err)
	}
	obj := append(header, '\n')
	if f == nil && !m.Blob && len(body) <= sharedInlineMax {
		obj = append(obj, body...)
	} else {
		var r io.ReaderAt = f
		if f == nil {
			r = bytes.NewReader(body)
		}
		if err := c.shared.Upload(ctx, sharedBlobName(m.SHA256), r, m.Size); err != nil {
			return unavailable("uploading the body of", m.Key, err)
		}
	}
	immutable := m.Class.Immutable()
	err = c.shared.Put(ctx, sharedEntryName(m.Key), obj, immutable)
	switch {
	case err == nil:
		return nil
	case immutable && errors.Is(err, fs.ErrExist):
		c.log.Debug("cache: another replica committed the entry first", "key", m.Key)
		return nil
	}
	return unavailable("committing", m.Key, err)
}

// getShared reads key through from the shared tier into the local tiers.
// Concurrent reads of one key share one download.
func (c *Cache) getShared(ctx context.Context, key string) (*Entry, error) {
	data, err := c.shared.Get(ctx, sharedEntryName(key), SharedEntryMax)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNotCached
	}
	if err != nil {
		return nil, unavailable("reading", key, err)
	}
	m, body, err := parseSharedEntry(key, data)
	if err != nil {
		// Never served; the next commit of a mutable key replaces it.
		c.log.Error("cache: ignoring a corrupt shared entry", "key", key, "err", err)
		return nil, ErrNotCached
	}
	fresh, until, ok := c.freshness(&m, c.now())
	if !ok {
		return nil, ErrNotCached
	}
	if body != nil || (!m.Blob && m.Size == 0) {
		if body == nil {
			body = []byte{}
		}
		c.storeLocal(m, body)
		return &Entry{Meta: m, Fresh: fresh, FreshUntil: until, Tier: SharedTier, body: body}, nil
	}

	f, leader := c.downloads.Start(key)
	if leader {
		// The download outlives the request that started it: others wait
		// for it. The store bounds each of its round trips.
		err := c.download(context.WithoutCancel(ctx), m)
		f.Land(err)
	}
	if err, werr := f.Wait(ctx); werr != nil {
		return nil, werr
	} else if err != nil {
		return nil, err
	}
	e, err := c.getLocal(key)
	if err != nil {
		return nil, err
	}
	e.Tier = SharedTier
	return e, nil
}

// parseSharedEntry checks an entry object: its header names key, and an
// inline body has the size and SHA-256 the header gives.
func parseSharedEntry(key string, data []byte) (Meta, []byte, error) {
	header, body, _ := bytes.Cut(data, []byte{'\n'})
	m, err := unmarshalEntry(header)
	if err != nil {
		return Meta{}, nil, err
	}
	if m.Key != key {
		return Meta{}, nil, fmt.Errorf("entry names key %q", m.Key)
	}
	if len(body) == 0 {
		return m, nil, nil
	}
	if int64(len(body)) != m.Size || sha256.Sum256(body) != m.SHA256 {
		return Meta{}, nil, errors.New("inline body does not match its size and SHA-256")
	}
	return m, body, nil
}

// download copies m's blob from the shared tier to the local disk tier,
// checking its SHA-256 on the way: nothing the store returns is served
// unless it is the body the entry names.
func (c *Cache) download(ctx context.Context, m Meta) error {
	tmp, err := os.CreateTemp(filepath.Join(c.disk.dir, "tmp"), "shared-")
	if err != nil {
		return fmt.Errorf("cache: %w", err)
	}
	h := sha256.New()
	w := &localWriter{w: io.MultiWriter(tmp, h)}
	err = c.shared.Download(ctx, sharedBlobName(m.SHA256), m.Size, w)
	if cerr := tmp.Close(); err == nil {
		err, w.err = cerr, cerr
	}
	switch {
	case w.err != nil:
		err = fmt.Errorf("cache: reading %s through: %w", m.Key, w.err)
	case errors.Is(err, fs.ErrNotExist):
		c.log.Error("cache: a shared entry names a missing blob", "key", m.Key)
		err = ErrNotCached
	case err != nil:
		err = unavailable("downloading", m.Key, err)
	case !bytes.Equal(h.Sum(nil), m.SHA256[:]):
		c.log.Error("cache: a shared blob does not match its SHA-256; not served", "key", m.Key)
		err = ErrNotCached
	}
	if err != nil {
		os.Remove(tmp.Name())
		return err
	}
	c.hot.Del([]byte(m.Key))
	return c.disk.store(m, tmp.Name())
}

// localWriter remembers its own failure, to tell a local disk's error
// from the store's.
type localWriter struct {
	w   io.Writer
	err error
}

func (l *localWriter) Write(p []byte) (int, error) {
	n, err := l.w.Write(p)
	if err != nil {
		l.err = err
	}
	return n, err
}

// SharedEntryInfo describes an entry object of the shared tier: the
// blob it names ("" if its body is inline) and its metadata.
func SharedEntryInfo(data []byte) (m Meta, blob string, err error) {
	header, body, _ := bytes.Cut(data, []byte{'\n'})
	if m, err = unmarshalEntry(header); err != nil {
		return Meta{}, "", err
	}
	if len(body) == 0 && (m.Blob || m.Size > 0) {
		blob = sharedBlobName(m.SHA256)
	}
	return m, blob, nil
}
