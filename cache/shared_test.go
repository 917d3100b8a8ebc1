package cache_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/modgate/modgate/cache"
	"github.com/modgate/modgate/integration/s3server"
	"github.com/modgate/modgate/s3store"
)

// replicas opens n caches, each with its own local tiers, on one real S3
// server's bucket.
func replicas(t *testing.T, n int) ([]*cache.Cache, *s3store.Store, *s3server.Server) {
	t.Helper()
	srv := s3server.Start(t, "shared")
	srv.Setenv(t)
	store, err := s3store.Open(t.Context(), s3store.Config{Bucket: "shared", Prefix: "c/", Endpoint: srv.Endpoint, Region: srv.Region, PartSize: 5 << 20})
	if err != nil {
		t.Fatal(err)
	}
	var cs []*cache.Cache
	for range n {
		c, err := cache.Open(cache.Config{Dir: t.TempDir(), HotBytes: 4 << 20, Shared: store, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		cs = append(cs, c)
	}
	return cs, store, srv
}

func commit(t *testing.T, c *cache.Cache, key string, class cache.Class, body []byte, blob bool) error {
	t.Helper()
	w := c.NewWriter(key, class, http.StatusOK, "application/octet-stream")
	if blob {
		w = c.NewBlobWriter(key, class, "application/zip")
	}
	if _, err := w.Write(body); err != nil {
		t.Fatal(err)
	}
	e, err := w.Commit(t.Context())
	if err == nil {
		e.Close()
	}
	return err
}

func read(t *testing.T, c *cache.Cache, key string) ([]byte, cache.Tier, error) {
	t.Helper()
	e, err := c.Get(t.Context(), key)
	if err != nil {
		return nil, "", err
	}
	defer e.Close()
	b, err := io.ReadAll(e.Reader())
	if err != nil {
		t.Fatal(err)
	}
	return b, e.Tier, nil
}

// TestSharedTier: what one replica commits, every replica serves, read
// through once into its own tiers.
func TestSharedTier(t *testing.T) {
	cs, _, _ := replicas(t, 2)
	a, b := cs[0], cs[1]
	big := bytes.Repeat([]byte("zipdata!"), 3<<20/8) // over a part: multipart
	tests := []struct {
		key   string
		class cache.Class
		body  []byte
		blob  bool
	}{
		{"/example.com/m/@v/v1.0.0.mod", cache.Release, []byte("module example.com/m\n"), false},
		{"/example.com/m/@v/v1.0.0.zip", cache.Release, big, true},
		{"/example.com/m/@v/v1.0.1.zip", cache.Release, []byte{}, true},
		{"/example.com/m/@v/list", cache.Query, []byte("v1.0.0\n"), false},
		{"/example.com/big/@v/v1.0.0.mod", cache.Release, bytes.Repeat([]byte("x"), 300<<10), false}, // not inlined
	}
	for _, tt := range tests {
		if err := commit(t, a, tt.key, tt.class, tt.body, tt.blob); err != nil {
			t.Fatalf("commit %s: %v", tt.key, err)
		}
		got, tier, err := read(t, b, tt.key)
		if err != nil || !bytes.Equal(got, tt.body) || tier != cache.SharedTier {
			t.Errorf("replica B, %s: %d bytes from %q, %v; want the %d bytes A committed, read through the shared tier", tt.key, len(got), tier, err, len(tt.body))
		}
		if _, tier, err := read(t, b, tt.key); err != nil || tier == cache.SharedTier {
			t.Errorf("replica B again, %s: tier %q, %v; want its local tiers", tt.key, tier, err)
		}
	}
	if _, err := b.Get(t.Context(), "/example.com/nope/@v/v1.0.0.mod"); !errors.Is(err, cache.ErrNotCached) {
		t.Errorf("a key nobody stored: %v, want ErrNotCached", err)
	}
}

// TestSharedTierFirstCommitWins: an immutable entry committed by two
// replicas is the first one's; the second commit succeeds and changes
// nothing.
func TestSharedTierFirstCommitWins(t *testing.T) {
	cs, _, _ := replicas(t, 3)
	const key = "/example.com/m/@v/v1.0.0.info"
	if err := commit(t, cs[0], key, cache.Release, []byte(`{"Version":"v1.0.0","Time":"2024-01-01T00:00:00Z"}`), false); err != nil {
		t.Fatal(err)
	}
	if err := commit(t, cs[1], key, cache.Release, []byte(`{"Version":"v1.0.0"}`), false); err != nil {
		t.Fatalf("second commit: %v, want success", err)
	}
	got, _, err := read(t, cs[2], key)
	if err != nil || !bytes.Contains(got, []byte("2024")) {
		t.Errorf("replica C reads %q, %v; want the first commit", got, err)
	}
	// A list changes: the latest commit is the entry.
	const list = "/example.com/m/@v/list"
	commit(t, cs[0], list, cache.Query, []byte("v1.0.0\n"), false)
	commit(t, cs[1], list, cache.Query, []byte("v1.0.0\nv1.1.0\n"), false)
	if got, _, err := read(t, cs[2], list); err != nil || string(got) != "v1.0.0\nv1.1.0\n" {
		t.Errorf("replica C reads list %q, %v; want the latest", got, err)
	}
}

// TestSharedTierRefusesCorruptBodies: bytes in the store that are not what
// the entry names are never served.
func TestSharedTierRefusesCorruptBodies(t *testing.T) {
	cs, store, _ := replicas(t, 2)
	const key = "/example.com/m/@v/v1.0.0.zip"
	body := bytes.Repeat([]byte("z"), 4096)
	if err := commit(t, cs[0], key, cache.Release, body, true); err != nil {
		t.Fatal(err)
	}
	var blob string
	store.List(t.Context(), cache.SharedBlobsPrefix, func(o s3store.Object) error { blob = o.Name; return nil })
	bad := bytes.Clone(body)
	bad[100] = 'Z'
	if err := store.Put(t.Context(), blob, bad, false); err != nil {
		t.Fatal(err)
	}
	if got, _, err := read(t, cs[1], key); !errors.Is(err, cache.ErrNotCached) {
		t.Errorf("a blob that does not match its entry: %d bytes, %v; want ErrNotCached", len(got), err)
	}
	const inline = "/example.com/m/@v/v1.0.0.mod"
	entry := []byte(`{"key":"/example.com/m/@v/v1.0.0.mod","class":"release","status":200,"content_type":"text/plain","size":3,"sha256":"` + string(bytes.Repeat([]byte("0"), 64)) + `","stored":"2026-01-01T00:00:00Z"}` + "\nabc")
	if err := store.Put(t.Context(), "entries"+inline, entry, false); err != nil {
		t.Fatal(err)
	}
	if got, _, err := read(t, cs[1], inline); !errors.Is(err, cache.ErrNotCached) {
		t.Errorf("an inline body that does not match its entry: %q, %v; want ErrNotCached", got, err)
	}
}

// TestSharedTierUnavailable: with the store down, local entries are
// served, a miss is ErrUnavailable (never "not cached"), a commit fails
// and stores nothing; then it recovers.
func TestSharedTierUnavailable(t *testing.T) {
	cs, _, srv := replicas(t, 2)
	a, b := cs[0], cs[1]
	const warm, cold = "/example.com/m/@v/v1.0.0.mod", "/example.com/m/@v/v1.1.0.mod"
	if err := commit(t, a, warm, cache.Release, []byte("module example.com/m\n"), false); err != nil {
		t.Fatal(err)
	}
	srv.Stop(t)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if _, err := a.Get(ctx, warm); err != nil {
		t.Errorf("local entry with the store down: %v", err)
	}
	if _, err := b.Get(ctx, warm); !errors.Is(err, cache.ErrUnavailable) {
		t.Errorf("an entry only in the store, with the store down: %v, want ErrUnavailable", err)
	}
	w := a.NewWriter(cold, cache.Release, http.StatusOK, "text/plain")
	w.Write([]byte("module example.com/m\n"))
	if _, err := w.Commit(ctx); !errors.Is(err, cache.ErrUnavailable) {
		t.Errorf("commit with the store down: %v, want ErrUnavailable", err)
	}
	if _, err := a.Get(ctx, cold); !errors.Is(err, cache.ErrUnavailable) {
		t.Errorf("after a failed commit: %v, want ErrUnavailable (nothing stored locally)", err)
	}
	srv.Restart(t)
	if got, _, err := read(t, b, warm); err != nil || len(got) == 0 {
		t.Errorf("after the store came back: %q, %v", got, err)
	}
}
