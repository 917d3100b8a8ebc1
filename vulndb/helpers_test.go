package vulndb

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// dbModified is index/db.json's modified time in testdata/db.
var dbModified = time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)

// t0 is the tests' starting time: a day after dbModified.
var t0 = dbModified.Add(24 * time.Hour)

// A clock is a fake time.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock(t time.Time) *clock { return &clock{t: t} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

func (c *clock) Advance(d time.Duration) { c.Set(c.Now().Add(d)) }

// copyDB copies testdata/db into a new directory and returns it.
func copyDB(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "db")
	if err := os.CopyFS(dir, os.DirFS("testdata/db")); err != nil {
		t.Fatal(err)
	}
	return dir
}

// fileURL is the file:// URL of dir.
func fileURL(t testing.TB, dir string) string {
	t.Helper()
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	return (&url.URL{Scheme: "file", Path: filepath.ToSlash(abs)}).String()
}

// An upstream serves a database directory over HTTP on 127.0.0.1,
// counting requests by path.
type upstream struct {
	dir string
	srv *httptest.Server

	mu     sync.Mutex
	counts map[string]int
}

func newUpstream(t testing.TB, dir string) *upstream {
	t.Helper()
	u := &upstream{dir: dir, counts: make(map[string]int)}
	fs := http.FileServer(http.Dir(dir))
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.counts[r.URL.Path]++
		u.mu.Unlock()
		fs.ServeHTTP(w, r)
	}))
	t.Cleanup(u.srv.Close)
	return u
}

// count returns the number of requests for paths with prefix.
func (u *upstream) count(prefix string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	n := 0
	for p, c := range u.counts {
		if strings.HasPrefix(p, prefix) {
			n += c
		}
	}
	return n
}

// noNetwork is an Options.Get that fails.
func noNetwork(ctx context.Context, u string) ([]byte, error) {
	return nil, errors.New("no network in this test")
}

// osvJSON is an OSV entry for tests: one module, one range.
func osvJSON(id, path string, modified time.Time, events ...[2]string) []byte {
	var evs []map[string]string
	for _, e := range events {
		evs = append(evs, map[string]string{e[0]: e[1]})
	}
	o := map[string]any{
		"id":       id,
		"modified": modified.Format(time.RFC3339),
		"summary":  "Test vulnerability " + id,
		"affected": []any{map[string]any{
			"package": map[string]string{"name": path, "ecosystem": "Go"},
			"ranges":  []any{map[string]any{"type": "SEMVER", "events": evs}},
		}},
	}
	data, err := json.Marshal(o)
	if err != nil {
		panic(err)
	}
	return data
}

// publish writes entry data as ID/id.json in dir, lists it for path in
// index/modules.json with modified, and sets index/db.json's modified.
func publish(t testing.TB, dir, id, path string, modified time.Time, data []byte) {
	t.Helper()
	if data != nil {
		if err := os.WriteFile(filepath.Join(dir, "ID", id+".json"), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mpath := filepath.Join(dir, "index", "modules.json")
	raw, err := os.ReadFile(mpath)
	if err != nil {
		t.Fatal(err)
	}
	var mods []map[string]any
	if err := json.Unmarshal(raw, &mods); err != nil {
		t.Fatal(err)
	}
	vuln := map[string]any{"id": id, "modified": modified.Format(time.RFC3339)}
	found := false
	for _, m := range mods {
		if m["path"] == path {
			m["vulns"] = append(m["vulns"].([]any), vuln)
			found = true
		}
	}
	if !found {
		mods = append(mods, map[string]any{"path": path, "vulns": []any{vuln}})
	}
	writeJSON(t, mpath, mods)
	setModified(t, dir, modified)
}

// setModified sets index/db.json's modified time in dir.
func setModified(t testing.TB, dir string, modified time.Time) {
	t.Helper()
	writeJSON(t, filepath.Join(dir, "index", "db.json"), map[string]string{"modified": modified.Format(time.RFC3339)})
}

func writeJSON(t testing.TB, name string, v any) {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(name, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// openStore opens a Store with the clock clk and no logs.
func openStore(t testing.TB, opts Options, clk *clock) *Store {
	t.Helper()
	opts.Now = clk.Now
	opts.Logger = discard
	s, err := Open(t.Context(), opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

// fileStore is a Store over testdata/db as file://, refreshed once.
func fileStore(t testing.TB, cfg Config, clk *clock) *Store {
	t.Helper()
	cfg.URL = fileURL(t, "testdata/db")
	s := openStore(t, Options{Config: cfg}, clk)
	if err := s.Refresh(t.Context()); err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	return s
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// discard is a logger that drops everything.
var discard = slog.New(slog.DiscardHandler)
