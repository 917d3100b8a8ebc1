package cache

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// Meta describes one cached response.
type Meta struct {
	Key         string    // the canonical request path (goproxy.Request.Path)
	Class       Class     // decides freshness and durability
	Status      int       // 200, or the upstream's 404 or 410 for a Negative entry
	ContentType string    // the response's Content-Type
	Size        int64     // body bytes
	SHA256      [32]byte  // of the body
	Stored      time.Time // when the body was fetched
	// Blob marks a body that lives on disk only, whatever its size, and is
	// served from the file (zips: the kernel sends them with sendfile).
	Blob bool
}

// ETag returns the entry's strong entity tag: its body's SHA-256, quoted.
func (m *Meta) ETag() string {
	return `"` + hex.EncodeToString(m.SHA256[:]) + `"`
}

// Tier names where an entry was found.
type Tier string

// The tiers.
const (
	Hot  Tier = "hot"
	Disk Tier = "disk"
)

// An Entry is a cached response ready to be served. Its body is either in
// memory (shared, read-only) or an open file owned by the Entry: the caller
// must Close it. An Entry is not safe for concurrent reads; Reopen gives
// another reader of the same body.
type Entry struct {
	Meta
	// Fresh is false for an entry past its TTL that may still be served
	// when every upstream fails (stale-if-error).
	Fresh bool
	// FreshUntil is when a fresh entry goes stale; zero for an immutable one.
	FreshUntil time.Time
	Tier       Tier

	body []byte // hot, or a small disk entry read whole
	r    *bytes.Reader
	path string   // disk blob
	file *os.File // open blob, for large disk entries
}

// NewMemoryEntry returns an entry for body that is stored nowhere, for a
// response that must be served although it could not be cached. Its size
// and SHA-256 (its ETag) are body's.
func NewMemoryEntry(m Meta, body []byte) *Entry {
	m.Size, m.SHA256 = int64(len(body)), sha256.Sum256(body)
	return &Entry{Meta: m, Fresh: true, Tier: Hot, body: body}
}

// errClosed is what reading a closed disk entry gives.
var errClosed = errors.New("cache: read of a closed entry")

// Reader returns the body, positioned at its start.
func (e *Entry) Reader() io.ReadSeeker {
	if e.file != nil {
		return e.file
	}
	if e.path != "" && e.body == nil {
		return closedReader{}
	}
	if e.r == nil {
		e.r = bytes.NewReader(e.body)
	}
	return e.r
}

// Bytes returns the body if it is in memory, else nil. The caller must not
// modify it.
func (e *Entry) Bytes() []byte {
	if e.file != nil {
		return nil
	}
	return e.body
}

// Close releases the entry's file, if any.
func (e *Entry) Close() error {
	if e.file == nil {
		return nil
	}
	err := e.file.Close()
	e.file = nil
	return err
}

type closedReader struct{}

func (closedReader) Read([]byte) (int, error)       { return 0, errClosed }
func (closedReader) Seek(int64, int) (int64, error) { return 0, errClosed }

// Reopen returns a new Entry reading the same body from the start, whether
// or not e is closed. For a disk entry it opens the blob again; it fails
// with an fs.ErrNotExist error if the blob was evicted meanwhile.
func (e *Entry) Reopen() (*Entry, error) {
	c := &Entry{Meta: e.Meta, Fresh: e.Fresh, FreshUntil: e.FreshUntil, Tier: e.Tier, body: e.body, path: e.path}
	if e.body == nil && e.path != "" {
		f, err := openBlob(e.path)
		if err != nil {
			return nil, fmt.Errorf("reopen cache entry %s: %w", e.Key, err)
		}
		c.file = f
	}
	return c, nil
}

// The hot tier stores an entry as one value: a fixed header, the content
// type, then the body.
//
//	[0]      format (1)
//	[1]      class
//	[2:4]    status, big-endian
//	[4:12]   stored, Unix nanoseconds, big-endian
//	[12:44]  SHA-256 of the body
//	[44]     length n of the content type
//	[45:45+n] content type
//	[45+n:]  body
const (
	hotFormat    = 1
	hotHeaderLen = 45
)

func encodeHot(m *Meta, body []byte) []byte {
	ct := m.ContentType
	if len(ct) > 255 {
		ct = ct[:255]
	}
	v := make([]byte, hotHeaderLen+len(ct)+len(body))
	v[0] = hotFormat
	v[1] = byte(m.Class)
	binary.BigEndian.PutUint16(v[2:4], uint16(m.Status))
	binary.BigEndian.PutUint64(v[4:12], uint64(m.Stored.UnixNano()))
	copy(v[12:44], m.SHA256[:])
	v[44] = byte(len(ct))
	copy(v[hotHeaderLen:], ct)
	copy(v[hotHeaderLen+len(ct):], body)
	return v
}

var errBadHotValue = errors.New("malformed hot-tier value")

// decodeHot decodes v, which it keeps: v must not be reused.
func decodeHot(key string, v []byte) (Meta, []byte, error) {
	if len(v) < hotHeaderLen || v[0] != hotFormat {
		return Meta{}, nil, errBadHotValue
	}
	n := int(v[44])
	if len(v) < hotHeaderLen+n {
		return Meta{}, nil, errBadHotValue
	}
	m := Meta{
		Key:         key,
		Class:       Class(v[1]),
		Status:      int(binary.BigEndian.Uint16(v[2:4])),
		Stored:      time.Unix(0, int64(binary.BigEndian.Uint64(v[4:12]))),
		ContentType: string(v[hotHeaderLen : hotHeaderLen+n]),
	}
	copy(m.SHA256[:], v[12:44])
	body := v[hotHeaderLen+n:]
	m.Size = int64(len(body))
	return m, body, nil
}
