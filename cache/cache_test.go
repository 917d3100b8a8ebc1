package cache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

// testHotBytes makes the hot tier's entry limit 1 KiB.
const (
	testHotBytes = 1 << 20
	hotLimit     = testHotBytes / 1024
)

// fakeClock is an injectable clock for Config.Now.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Unix(1_700_000_000, 0)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// openCache opens a Cache with a 1 MiB hot tier (1 KiB entry limit) and a
// discarded log, in a new temporary directory unless cfg.Dir is set. It is
// closed at the end of the test.
func openCache(t testing.TB, cfg Config) *Cache {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	if cfg.HotBytes == 0 {
		cfg.HotBytes = testHotBytes
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	c, err := Open(cfg)
	if err != nil {
		t.Fatalf("Open(%+v): %v", cfg, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// testBody returns n pseudo-random bytes determined by seed.
func testBody(seed string, n int) []byte {
	b := make([]byte, n)
	rand.NewChaCha8(sha256.Sum256([]byte(seed))).Read(b)
	return b
}

func statusOf(class Class) int {
	if class == Negative {
		return 404
	}
	return 200
}

// store writes body under key in chunks and commits it, returning the
// Commit's error.
func store(c *Cache, key string, class Class, body []byte) (*Entry, error) {
	w := c.NewWriter(key, class, statusOf(class), "application/test")
	for rest := body; len(rest) > 0; {
		n := min(len(rest), 300)
		if _, err := w.Write(rest[:n]); err != nil {
			w.Abort()
			return nil, err
		}
		rest = rest[n:]
	}
	return w.Commit(context.Background())
}

// put stores body under key and checks that the Entry Commit returns
// serves it.
func put(t testing.TB, c *Cache, key string, class Class, body []byte) Meta {
	t.Helper()
	e, err := store(c, key, class, body)
	if err != nil {
		t.Fatalf("storing %q (%d bytes, %v): %v", key, len(body), class, err)
	}
	defer e.Close()
	got, err := io.ReadAll(e.Reader())
	if err != nil {
		t.Fatalf("reading committed %q: %v", key, err)
	}
	if !bytes.Equal(got, body) {
		t.Fatalf("committed %q reads %d bytes, want its %d", key, len(got), len(body))
	}
	if !e.Fresh || e.Size != int64(len(body)) || e.Class != class || e.Key != key {
		t.Fatalf("Commit(%q) = %+v, want fresh %v entry of %d bytes", key, e.Meta, class, len(body))
	}
	return e.Meta
}

// get returns the (closed) entry for key and its body. It is safe to
// call from any goroutine.
func get(t testing.TB, c *Cache, key string) (*Entry, []byte, error) {
	t.Helper()
	e, err := c.Get(context.Background(), key)
	if err != nil {
		return nil, nil, err
	}
	defer e.Close()
	b, err := io.ReadAll(e.Reader())
	if err != nil {
		return nil, nil, fmt.Errorf("reading the entry: %w", err)
	}
	return e, b, nil
}

// mustGet is get that fails the test when key is not cached or its body
// is not want.
func mustGet(t testing.TB, c *Cache, key string, want []byte) *Entry {
	t.Helper()
	e, got, err := get(t, c, key)
	if err != nil {
		t.Fatalf("Get(%q) = %v, want an entry", key, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Get(%q) body: %d bytes (sha256 %x), want %d bytes (sha256 %x)", key, len(got), sha256.Sum256(got), len(want), sha256.Sum256(want))
	}
	return e
}

// wantAbsent fails the test unless key is not cached.
func wantAbsent(t testing.TB, c *Cache, key string) {
	t.Helper()
	e, err := c.Get(context.Background(), key)
	if err == nil {
		e.Close()
		t.Fatalf("Get(%q) = entry (%v, tier %s, fresh %v), want ErrNotCached", key, e.Class, e.Tier, e.Fresh)
	}
	if !errors.Is(err, ErrNotCached) || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Get(%q) = %v, want ErrNotCached wrapping fs.ErrNotExist", key, err)
	}
}

// dirFiles returns the regular files under dir/sub, relative to dir.
func dirFiles(t testing.TB, dir, sub string) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(filepath.Join(dir, sub), func(p string, de fs.DirEntry, err error) error {
		if err != nil || de.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		files = append(files, rel)
		return nil
	})
	if err != nil {
		t.Fatalf("walking %s: %v", sub, err)
	}
	return files
}

func exists(t testing.TB, p string) bool {
	t.Helper()
	_, err := os.Stat(p)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("stat %s: %v", p, err)
	}
	return err == nil
}

func TestTTLClasses(t *testing.T) {
	const stale = 15 * time.Second
	custom := TTLs{
		Release:     10 * time.Second,
		Prerelease:  20 * time.Second,
		Pseudo:      30 * time.Second,
		Query:       5 * time.Second,
		Negative:    7 * time.Second,
		SumDB:       40 * time.Second,
		SumDBLatest: 9 * time.Second,
	}
	type ttlCase struct {
		name  string
		class Class
		cfg   TTLs
		ttl   time.Duration // effective
		size  int
	}
	var tests []ttlCase
	for c := Release; c <= SumDBLatest; c++ {
		for _, size := range []int{100, 4 * hotLimit} {
			if c == Negative && size > hotLimit {
				continue // refused by the Writer; see TestWriter
			}
			tier := "small"
			if size > hotLimit {
				tier = "large"
			}
			tests = append(tests,
				ttlCase{c.String() + "/default/" + tier, c, TTLs{}, DefaultTTLs.of(c), size},
				ttlCase{c.String() + "/custom/" + tier, c, custom, custom.of(c), size},
			)
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newFakeClock()
			c := openCache(t, Config{TTL: tt.cfg, StaleIfError: stale, Now: clock.Now})
			const key = "/example.com/a/@v/v1.0.0.zip"
			body := testBody(tt.name, tt.size)
			m := put(t, c, key, tt.class, body)
			if !m.Stored.Equal(clock.Now()) {
				t.Errorf("Stored = %v, want the clock's %v", m.Stored, clock.Now())
			}
			var wantUntil time.Time
			if !tt.class.Immutable() {
				wantUntil = m.Stored.Add(tt.ttl)
			}
			large := tt.size > hotLimit

			check := func(when string, wantFresh bool, wantTier Tier) {
				t.Helper()
				e := mustGet(t, c, key, body)
				if e.Fresh != wantFresh || !e.FreshUntil.Equal(wantUntil) {
					t.Errorf("%s: Get(%q) fresh %v until %v, want %v until %v", when, key, e.Fresh, e.FreshUntil, wantFresh, wantUntil)
				}
				if wantTier != "" && e.Tier != wantTier {
					t.Errorf("%s: Get(%q) tier %s, want %s", when, key, e.Tier, wantTier)
				}
				if e.Class != tt.class || e.Status != statusOf(tt.class) || e.ContentType != "application/test" || !e.Stored.Equal(m.Stored) || e.ETag() != m.ETag() {
					t.Errorf("%s: Get(%q) meta %+v, want %+v", when, key, e.Meta, m)
				}
			}
			tier := Hot
			if large {
				tier = Disk
			}

			check("at once", true, tier)
			clock.Advance(tt.ttl - time.Second)
			check("just before TTL", true, tier)
			clock.Advance(2 * time.Second)
			switch {
			case tt.class.Immutable():
				// The hot tier let it go; the disk tier still has it.
				check("just after TTL", true, Disk)
				check("again after TTL", true, tier)
				clock.Advance(3 * 365 * 24 * time.Hour)
				check("years later", true, "")
			case tt.class == Query:
				check("just after TTL", false, tier)
				clock.Advance(stale - 2*time.Second)
				check("end of stale window", false, tier)
				clock.Advance(2 * time.Second)
				wantAbsent(t, c, key)
			default:
				wantAbsent(t, c, key)
			}
			if !tt.class.Immutable() {
				if s := c.Stats().Disk; s.Entries != 0 || s.Blobs != 0 || s.Bytes != 0 {
					t.Errorf("after expiry, disk stats %+v, want empty", s)
				}
				if files := dirFiles(t, c.disk.dir, "blobs"); len(files) != 0 {
					t.Errorf("after expiry, blobs %v remain", files)
				}
			}
		})
	}
}

func TestStaleIfError(t *testing.T) {
	for _, size := range []int{200, 3 * hotLimit} {
		t.Run(map[bool]string{false: "hot", true: "disk"}[size > hotLimit], func(t *testing.T) {
			clock := newFakeClock()
			c := openCache(t, Config{Now: clock.Now})
			const key = "/example.com/a/@v/list"
			body := testBody(key, size)
			m := put(t, c, key, Query, body)
			clock.Advance(DefaultTTLs.Query + time.Hour)
			e := mustGet(t, c, key, body)
			if e.Fresh {
				t.Errorf("Get(%q) past TTL: Fresh = true, want false", key)
			}
			if e.ETag() != m.ETag() || e.Size != m.Size {
				t.Errorf("Get(%q) past TTL: ETag %s size %d, want %s size %d", key, e.ETag(), e.Size, m.ETag(), m.Size)
			}
			if want := m.Stored.Add(DefaultTTLs.Query); !e.FreshUntil.Equal(want) {
				t.Errorf("Get(%q) past TTL: FreshUntil = %v, want %v", key, e.FreshUntil, want)
			}
		})
	}
}

// TestHotLimitBoundary stores bodies around the hot tier's entry limit:
// each must be served whatever its class.
func TestHotLimitBoundary(t *testing.T) {
	for _, class := range []Class{Query, Negative, SumDBLatest, Release} {
		for _, size := range []int{1, hotLimit - 200, hotLimit - 60, hotLimit - 1, hotLimit, hotLimit + 1} {
			if class == Negative && size > hotLimit {
				continue
			}
			t.Run(class.String()+"/"+strconv.Itoa(size), func(t *testing.T) {
				c := openCache(t, Config{})
				key := "/example.com/some/longer/module/path/@v/" + class.String()
				body := testBody(key, size)
				put(t, c, key, class, body)
				mustGet(t, c, key, body)
			})
		}
	}
}

// TestReplace checks that the newest body stored under a key is the one
// served, whichever tiers the old and new bodies went to.
func TestReplace(t *testing.T) {
	tests := []struct {
		name               string
		oldClass, newClass Class
		oldSize, newSize   int
		advance            time.Duration // between the two
	}{
		{"query small to small", Query, Query, 100, 200, 2 * time.Minute},
		{"query small to large", Query, Query, 100, 3 * hotLimit, 2 * time.Minute},
		{"query large to small", Query, Query, 3 * hotLimit, 100, 2 * time.Minute},
		{"query large to large", Query, Query, 3 * hotLimit, 4 * hotLimit, 2 * time.Minute},
		{"negative to large release", Negative, Release, 20, 3 * hotLimit, time.Second},
		{"negative to small release", Negative, Release, 20, 300, time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newFakeClock()
			c := openCache(t, Config{Now: clock.Now})
			const key = "/example.com/a/@v/v1.0.0.info"
			put(t, c, key, tt.oldClass, testBody("old", tt.oldSize))
			clock.Advance(tt.advance)
			body := testBody("new", tt.newSize)
			put(t, c, key, tt.newClass, body)
			e := mustGet(t, c, key, body)
			if !e.Fresh || e.Class != tt.newClass || e.Status != 200 {
				t.Errorf("Get(%q) = %v fresh %v status %d, want fresh %v 200", key, e.Class, e.Fresh, e.Status, tt.newClass)
			}
		})
	}
}

func TestDiskEntry(t *testing.T) {
	c := openCache(t, Config{})
	const key = "/example.com/a/@v/v1.0.0.zip"
	body := testBody(key, hotLimit+1)
	m := put(t, c, key, Release, body)
	sum := sha256.Sum256(body)
	if want := `"` + hex.EncodeToString(sum[:]) + `"`; m.ETag() != want {
		t.Errorf("ETag() = %s, want %s", m.ETag(), want)
	}
	if !exists(t, c.disk.blobPath(sum)) {
		t.Errorf("blob %s missing", c.disk.blobPath(sum))
	}

	e, err := c.Get(context.Background(), key)
	if err != nil {
		t.Fatalf("Get(%q) = %v", key, err)
	}
	defer e.Close()
	if e.Tier != Disk {
		t.Errorf("Get(%q).Tier = %s, want %s", key, e.Tier, Disk)
	}
	if e.Bytes() != nil {
		t.Errorf("Get(%q).Bytes() = %d bytes, want nil for a file", key, len(e.Bytes()))
	}
	if e.ETag() != m.ETag() {
		t.Errorf("Get(%q).ETag() = %s, want %s", key, e.ETag(), m.ETag())
	}
	r := e.Reader()
	head := make([]byte, 100)
	if _, err := io.ReadFull(r, head); err != nil {
		t.Fatalf("reading head: %v", err)
	}

	// Reopen reads from the start, independently of e.
	e2, err := e.Reopen()
	if err != nil {
		t.Fatalf("Reopen: %v", err)
	}
	all, err := io.ReadAll(e2.Reader())
	e2.Close()
	if err != nil || !bytes.Equal(all, body) {
		t.Errorf("Reopen().Reader() read %d bytes, %v; want the %d-byte body", len(all), err, len(body))
	}
	rest, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(append(head, rest...), body) {
		t.Errorf("reading e after Reopen: %d+%d bytes, %v; want the body", len(head), len(rest), err)
	}
	if _, err := r.Seek(0, io.SeekStart); err != nil {
		t.Errorf("Seek(0): %v", err)
	}

	if err := e.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if n, err := r.Read(head); err == nil || err == io.EOF {
		t.Errorf("Read of the reader of a closed entry = %d, %v; want an error", n, err)
	}
	if n, err := e.Reader().Read(head); err == nil || err == io.EOF {
		t.Errorf("Reader().Read of a closed entry = %d, %v; want an error", n, err)
	}
	if _, err := e.Reader().Seek(0, io.SeekStart); err == nil {
		t.Errorf("Reader().Seek of a closed entry succeeded; want an error")
	}
	// Reopen works on a closed entry too.
	e3, err := e.Reopen()
	if err != nil {
		t.Fatalf("Reopen of a closed entry: %v", err)
	}
	defer e3.Close()
	if all, err := io.ReadAll(e3.Reader()); err != nil || !bytes.Equal(all, body) {
		t.Errorf("Reopen of a closed entry read %d bytes, %v; want the body", len(all), err)
	}
}

func TestHotEntry(t *testing.T) {
	c := openCache(t, Config{})
	const key = "/example.com/a/@v/v1.0.0.info"
	body := []byte(`{"Version":"v1.0.0"}`)
	put(t, c, key, Release, body)
	e, err := c.Get(context.Background(), key)
	if err != nil {
		t.Fatalf("Get(%q) = %v", key, err)
	}
	if e.Tier != Hot || !bytes.Equal(e.Bytes(), body) {
		t.Errorf("Get(%q) = tier %s, bytes %q; want hot, %q", key, e.Tier, e.Bytes(), body)
	}
	e2, err := e.Reopen()
	if err != nil {
		t.Fatalf("Reopen: %v", err)
	}
	e.Close()
	for _, x := range []*Entry{e, e2} {
		if got, err := io.ReadAll(x.Reader()); err != nil || !bytes.Equal(got, body) {
			t.Errorf("reading hot entry: %q, %v; want %q", got, err, body)
		}
	}

	m := NewMemoryEntry(Meta{Key: "/x", Class: Query, Size: 99}, body)
	if m.Size != int64(len(body)) || !m.Fresh || m.Tier != Hot || m.SHA256 != sha256.Sum256(body) {
		t.Errorf("NewMemoryEntry = %+v, want fresh hot entry of %d bytes, with their SHA-256", m, len(body))
	}
	if got, _ := io.ReadAll(m.Reader()); !bytes.Equal(got, body) {
		t.Errorf("NewMemoryEntry reads %q, want %q", got, body)
	}
}

func TestWriter(t *testing.T) {
	t.Run("abort removes temp file", func(t *testing.T) {
		c := openCache(t, Config{})
		w := c.NewWriter("/k", Release, 200, "application/zip")
		if _, err := w.Write(testBody("k", 3*hotLimit)); err != nil {
			t.Fatalf("Write: %v", err)
		}
		if files := dirFiles(t, c.disk.dir, "tmp"); len(files) != 1 {
			t.Fatalf("tmp holds %v while writing a large body, want one file", files)
		}
		w.Abort()
		if files := dirFiles(t, c.disk.dir, "tmp"); len(files) != 0 {
			t.Errorf("tmp holds %v after Abort, want nothing", files)
		}
		if _, err := w.Write([]byte("x")); err == nil {
			t.Errorf("Write after Abort succeeded")
		}
		if _, err := w.Commit(context.Background()); err == nil {
			t.Errorf("Commit after Abort succeeded")
		}
		wantAbsent(t, c, "/k")
	})
	t.Run("write after commit", func(t *testing.T) {
		for _, size := range []int{10, 3 * hotLimit} {
			c := openCache(t, Config{})
			w := c.NewWriter("/k", Release, 200, "text/plain")
			w.Write(testBody("k", size))
			e, err := w.Commit(context.Background())
			if err != nil {
				t.Fatalf("Commit: %v", err)
			}
			e.Close()
			if n, err := w.Write([]byte("more")); err == nil {
				t.Errorf("Write after Commit (%d bytes) = %d, nil; want an error", size, n)
			}
			if _, err := w.Commit(context.Background()); err == nil {
				t.Errorf("second Commit (%d bytes) succeeded", size)
			}
			w.Abort() // safe after Commit
			mustGet(t, c, "/k", testBody("k", size))
			if files := dirFiles(t, c.disk.dir, "tmp"); len(files) != 0 {
				t.Errorf("tmp holds %v after Commit, want nothing", files)
			}
		}
	})
	t.Run("negative too large", func(t *testing.T) {
		c := openCache(t, Config{})
		w := c.NewWriter("/k", Negative, 404, "text/plain")
		if _, err := w.Write(make([]byte, hotLimit)); err != nil {
			t.Fatalf("Write of %d bytes: %v", hotLimit, err)
		}
		if _, err := w.Write([]byte("x")); err == nil {
			t.Errorf("Write past the hot limit of a Negative body succeeded")
		}
		if _, err := w.Write([]byte("x")); err == nil {
			t.Errorf("Write after an error succeeded")
		}
		if _, err := w.Commit(context.Background()); err == nil {
			t.Errorf("Commit after a Write error succeeded")
		}
		wantAbsent(t, c, "/k")
		if files := dirFiles(t, c.disk.dir, "tmp"); len(files) != 0 {
			t.Errorf("tmp holds %v, want nothing", files)
		}
	})
	t.Run("size", func(t *testing.T) {
		c := openCache(t, Config{})
		w := c.NewWriter("/k", Release, 200, "text/plain")
		defer w.Abort()
		want := int64(0)
		for _, n := range []int{0, 1, 500, hotLimit, 7} {
			w.Write(make([]byte, n))
			want += int64(n)
			if w.Size() != want {
				t.Errorf("Size() after writing %d more = %d, want %d", n, w.Size(), want)
			}
		}
	})
	// The disk tier's bound counts the entry file too: a body of exactly
	// DiskBytes does not fit either.
	for _, size := range []int{64<<10 + 1, 64 << 10} {
		t.Run("larger than disk/"+strconv.Itoa(size), func(t *testing.T) {
			c := openCache(t, Config{DiskBytes: 64 << 10})
			before := c.Stats().Disk
			if e, err := store(c, "/big", Release, testBody("big", size)); err == nil {
				e.Close()
				t.Fatalf("Commit of %d bytes into a %d-byte disk tier succeeded; stats %+v", size, 64<<10, c.Stats().Disk)
			}
			wantAbsent(t, c, "/big")
			if after := c.Stats().Disk; after != before {
				t.Errorf("disk stats %+v after a refused Commit, want %+v", after, before)
			}
			for _, sub := range []string{"tmp", "blobs", "entries"} {
				if files := dirFiles(t, c.disk.dir, sub); len(files) != 0 {
					t.Errorf("%s holds %v after a refused Commit, want nothing", sub, files)
				}
			}
		})
	}
}

func TestModuleKeys(t *testing.T) {
	tests := []struct {
		path, version, key string
		want               bool
	}{
		{"example.com/a", "v1.0.0", "/example.com/a/@v/v1.0.0.info", true},
		{"example.com/a", "v1.0.0", "/example.com/a/@v/v1.0.0.mod", true},
		{"example.com/a", "v1.0.0", "/example.com/a/@v/v1.0.0.zip", true},
		{"example.com/a", "v1.0.0", "/example.com/a/@v/v1.0.0-rc.1.zip", false},
		{"example.com/a", "v1.0.0", "/example.com/a/@v/v1.0.01.zip", false},
		{"example.com/a", "v1.0.0", "/example.com/a/@v/list", false},
		{"example.com/a", "v1.0.0", "/example.com/a/@latest", false},
		{"example.com/a", "v1.0.0", "/example.com/ab/@v/v1.0.0.zip", false},
		{"example.com/a", "v1.0.0", "/example.com/a/b/@v/v1.0.0.zip", false},
		{"example.com/a", "v1.0.0", "/sumdb/sum.x.test/lookup/example.com/a@v1.0.0", false},
		{"example.com/a", "", "/example.com/a/@v/v1.0.0.info", true},
		{"example.com/a", "", "/example.com/a/@v/list", true},
		{"example.com/a", "", "/example.com/a/@latest", true},
		{"example.com/a", "", "/example.com/ab/@v/list", false},
		{"example.com/a", "", "/example.com/a/b/@v/list", false},
		{"example.com/a", "", "/sumdb/sum.x.test/lookup/example.com/a@v1.0.0", false},
		{"github.com/!azure/x", "v1.0.0-!r!c", "/github.com/!azure/x/@v/v1.0.0-!r!c.mod", true},
	}
	for _, tt := range tests {
		if got := ModuleKeys(tt.path, tt.version)(tt.key); got != tt.want {
			t.Errorf("ModuleKeys(%q, %q)(%q) = %v, want %v", tt.path, tt.version, tt.key, got, tt.want)
		}
	}
}

func TestPurge(t *testing.T) {
	c := openCache(t, Config{})
	type item struct {
		key   string
		class Class
		size  int
	}
	items := []item{
		{"/example.com/a/@v/v1.0.0.info", Release, 60},
		{"/example.com/a/@v/v1.0.0.mod", Release, 80},
		{"/example.com/a/@v/v1.0.0.zip", Release, 4 * hotLimit},
		{"/example.com/a/@v/v1.1.0.info", Release, 60},
		{"/example.com/a/@v/v1.1.0.mod", Release, 80},
		{"/example.com/a/@v/v1.1.0.zip", Release, 4 * hotLimit},
		{"/example.com/a/@v/v1.2.0.info", Negative, 20},
		{"/example.com/a/@v/list", Query, 30},
		{"/example.com/a/@latest", Query, 40},
		{"/example.com/ab/@v/list", Query, 30},
		{"/example.com/ab/@v/v1.0.0.zip", Release, 2 * hotLimit},
		{"/sumdb/sum.x.test/lookup/example.com/a@v1.0.0", SumDB, 200},
	}
	bodies := map[string][]byte{}
	for _, it := range items {
		bodies[it.key] = testBody(it.key, it.size)
		put(t, c, it.key, it.class, bodies[it.key])
	}
	check := func(gone map[string]bool) {
		t.Helper()
		for _, it := range items {
			if gone[it.key] {
				wantAbsent(t, c, it.key)
				if exists(t, c.disk.entryPath(it.key)) {
					t.Errorf("entry file of purged %q remains", it.key)
				}
				if exists(t, c.disk.blobPath(sha256.Sum256(bodies[it.key]))) {
					t.Errorf("blob of purged %q remains", it.key)
				}
			} else {
				mustGet(t, c, it.key, bodies[it.key])
			}
		}
	}

	gone := map[string]bool{
		"/example.com/a/@v/v1.0.0.info": true,
		"/example.com/a/@v/v1.0.0.mod":  true,
		"/example.com/a/@v/v1.0.0.zip":  true,
	}
	if n := c.Purge(ModuleKeys("example.com/a", "v1.0.0")); n != 3 {
		t.Errorf("Purge(example.com/a@v1.0.0) = %d, want 3", n)
	}
	check(gone)

	if n := c.Purge(ModuleKeys("example.com/a", "")); n != 6 {
		t.Errorf("Purge(example.com/a) = %d, want 6", n)
	}
	for _, it := range items {
		if ModuleKeys("example.com/a", "")(it.key) {
			gone[it.key] = true
		}
	}
	check(gone)
	if n := c.Purge(ModuleKeys("example.com/a", "")); n != 0 {
		t.Errorf("second Purge(example.com/a) = %d, want 0", n)
	}
	if s := c.Stats().Disk; s.Entries != 2 || s.Blobs != 2 {
		t.Errorf("disk stats after purges %+v, want 2 entries, 2 blobs", s)
	}
}

func TestBlobWriter(t *testing.T) {
	dir := t.TempDir()
	c := openCache(t, Config{Dir: dir})
	tests := []struct {
		name string
		key  string
		body []byte
	}{
		{"small zip", "/example.com/a/@v/v1.0.0.zip", testBody("small", 100)},
		{"empty zip", "/example.com/a/@v/v1.0.1.zip", nil},
		{"large zip", "/example.com/a/@v/v1.0.2.zip", testBody("large", 3*hotLimit)},
	}
	for _, tt := range tests {
		w := c.NewBlobWriter(tt.key, Release, "application/zip")
		if _, err := w.Write(tt.body); err != nil {
			t.Fatalf("%s: Write: %v", tt.name, err)
		}
		e, err := w.Commit(context.Background())
		if err != nil {
			t.Fatalf("%s: Commit: %v", tt.name, err)
		}
		if e.Tier != Disk || !e.Blob || e.Bytes() != nil {
			t.Errorf("%s: Commit = tier %s, blob %v, in memory %v; want a file-backed disk entry", tt.name, e.Tier, e.Blob, e.Bytes() != nil)
		}
		e.Close()
		// Never read into the hot tier, however small.
		for range 2 {
			got := mustGet(t, c, tt.key, tt.body)
			if got.Tier != Disk {
				t.Errorf("%s: Get tier = %s, want disk", tt.name, got.Tier)
			}
		}
	}
	c.Close()
	c2 := openCache(t, Config{Dir: dir})
	for _, tt := range tests {
		if e := mustGet(t, c2, tt.key, tt.body); !e.Blob {
			t.Errorf("%s: after restart Blob = false", tt.name)
		}
	}
}

func TestSmallBodyReplacesLargerDiskCopy(t *testing.T) {
	c := openCache(t, Config{})
	const key = "/example.com/a/@v/list"
	big := testBody("big list", 3*hotLimit)
	small := []byte("v1.0.0\n")
	put(t, c, key, Query, big)
	put(t, c, key, Query, small)
	if st := c.Stats(); st.Disk.Entries != 0 {
		t.Errorf("disk tier keeps %d entries after the key moved to the hot tier, want 0", st.Disk.Entries)
	}
	mustGet(t, c, key, small)
}

// TestPeek: Peek sees what the disk tier holds and counts nothing.
func TestPeek(t *testing.T) {
	c := openCache(t, Config{})
	const key = "/example.com/a/@v/v1.0.0.zip"
	if _, ok := c.Peek(key); ok {
		t.Fatalf("Peek(%q) before a store = found", key)
	}
	body := testBody(key, hotLimit+1)
	m := put(t, c, key, Release, body)
	before := c.Stats()
	got, ok := c.Peek(key)
	if !ok || got.SHA256 != m.SHA256 || got.Size != int64(len(body)) {
		t.Errorf("Peek(%q) = %+v, %v; want %+v", key, got, ok, m)
	}
	if after := c.Stats(); after != before {
		t.Errorf("Peek changed the stats: %+v, then %+v", before, after)
	}
}
