package main

import (
	"bytes"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modgate/modgate/cache"
	"github.com/modgate/modgate/integration/s3server"
	"github.com/modgate/modgate/s3store"
)

// TestStoreGC runs the garbage collection on a real S3 server: it deletes
// the blobs no entry names and the long-expired entries of changing
// classes, and keeps everything else.
func TestStoreGC(t *testing.T) {
	srv := s3server.Start(t, "modgate-gc")
	srv.Setenv(t)
	store, err := s3store.Open(t.Context(), s3store.Config{Bucket: "modgate-gc", Prefix: "cache/", Endpoint: srv.Endpoint, Region: srv.Region})
	if err != nil {
		t.Fatal(err)
	}
	c, err := cache.Open(cache.Config{Dir: t.TempDir(), HotBytes: 4 << 20, Shared: store, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	put := func(key string, class cache.Class, body []byte, blob bool) {
		w := c.NewWriter(key, class, http.StatusOK, "application/octet-stream")
		if blob {
			w = c.NewBlobWriter(key, class, "application/zip")
		}
		w.Write(body)
		e, err := w.Commit(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		e.Close()
	}
	put("/example.com/m/@v/v1.0.0.zip", cache.Release, bytes.Repeat([]byte("z"), 1000), true)
	put("/example.com/m/@v/v1.0.0.mod", cache.Release, []byte("module example.com/m\n"), false)
	put("/example.com/m/@v/list", cache.Query, []byte("v1.0.0\n"), false)
	// A fill that died between its blob and its entry.
	if err := store.Upload(t.Context(), cache.SharedBlobsPrefix+strings.Repeat("ab", 32), bytes.NewReader([]byte("orphan")), 6); err != nil {
		t.Fatal(err)
	}
	names := func() []string {
		var out []string
		store.List(t.Context(), "", func(o s3store.Object) error { out = append(out, o.Name); return nil })
		return out
	}
	all := names()
	if len(all) != 5 {
		t.Fatalf("store holds %q, want 3 entries and 2 blobs", all)
	}

	now := time.Now()
	r, err := collectGarbage(t.Context(), store, now, 24*time.Hour, 7*24*time.Hour, false)
	if err != nil || r.blobs != 0 || r.entries != 0 {
		t.Errorf("gc now: %+v, %v; want nothing deleted, everything younger than the grace", r, err)
	}
	r, err = collectGarbage(t.Context(), store, now.Add(48*time.Hour), 24*time.Hour, 7*24*time.Hour, true)
	if err != nil || r.blobs != 1 || r.blobBytes != 6 || len(names()) != 5 {
		t.Errorf("gc --dry-run in 2 days: %+v, %v; want one orphan reported and nothing deleted", r, err)
	}
	r, err = collectGarbage(t.Context(), store, now.Add(48*time.Hour), 24*time.Hour, 7*24*time.Hour, false)
	if err != nil || r.blobs != 1 || r.entries != 0 || r.keptEntries != 3 || r.keptBlobs != 1 {
		t.Errorf("gc in 2 days: %+v, %v; want the orphan deleted, 3 entries and 1 blob kept", r, err)
	}
	if got := names(); slices.Contains(got, cache.SharedBlobsPrefix+strings.Repeat("ab", 32)) || len(got) != 4 {
		t.Errorf("after gc: %q", got)
	}
	r, err = collectGarbage(t.Context(), store, now.Add(8*24*time.Hour), 24*time.Hour, 7*24*time.Hour, false)
	if err != nil || r.entries != 1 || r.keptEntries != 2 {
		t.Errorf("gc in 8 days: %+v, %v; want the list deleted, the immutable entries kept", r, err)
	}
	if got := names(); slices.Contains(got, "entries/example.com/m/@v/list") || len(got) != 3 {
		t.Errorf("after gc in 8 days: %q", got)
	}
	// What is left still serves.
	c2, err := cache.Open(cache.Config{Dir: t.TempDir(), HotBytes: 4 << 20, Shared: store, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if e, err := c2.Get(t.Context(), "/example.com/m/@v/v1.0.0.zip"); err != nil {
		t.Errorf("the zip after gc: %v", err)
	} else {
		e.Close()
	}
}

func TestStoreCmdUsage(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"store"}, "missing subcommand"},
		{[]string{"store", "gc", "--grace", "10m"}, "--grace under 1h"},
		{[]string{"store", "gc", "--grace", "48h", "--expired", "24h"}, "--expired must be at least --grace"},
		{[]string{"store", "gc", "extra"}, "takes no arguments"},
	}
	for _, tt := range tests {
		var stdout, stderr bytes.Buffer
		if code := run(t.Context(), tt.args, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), tt.want) {
			t.Errorf("modgate %s = exit %d, %q; want 2 and %q", strings.Join(tt.args, " "), code, stderr.String(), tt.want)
		}
	}
	cfg := writeConfig(t, "listen: 127.0.0.1:0\n")
	var stdout, stderr bytes.Buffer
	if code := run(t.Context(), []string{"store", "gc", "--config", cfg}, &stdout, &stderr); code != 1 || !strings.Contains(stderr.String(), "no store: section") {
		t.Errorf("store gc without a store: exit %d, %q", code, stderr.String())
	}
}
