package cooldown

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/mod/module"
	"golang.org/x/mod/sumdb"
	"golang.org/x/mod/sumdb/note"
)

// t0 is the tests' starting time.
var t0 = time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)

const minAge = 72 * time.Hour

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

// A testDB is a checksum database: sumdb.NewTestServer behind
// sumdb.NewServer, on 127.0.0.1. Like the real one, it records a module
// version the first time anyone looks it up, except for paths under
// notfound.example, which it does not know.
type testDB struct {
	ops      *sumdb.TestServer
	srv      *httptest.Server
	key      string // verifier key
	signer   string
	lookups  atomic.Int64                                // /lookup/ requests served
	rewrite  atomic.Pointer[func(string, []byte) []byte] // see Rewrite
	requests atomic.Int64
}

func newTestDB(t testing.TB) *testDB {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, "sum.test")
	if err != nil {
		t.Fatal(err)
	}
	return newTestDBWithKey(t, skey, vkey)
}

// newTestDBWithKey is a testDB signed by skey: two of them with one key
// are a forked database.
func newTestDBWithKey(t testing.TB, skey, vkey string) *testDB {
	t.Helper()
	db := &testDB{key: vkey, signer: skey}
	db.ops = sumdb.NewTestServer(skey, gosum)
	h := sumdb.NewServer(db.ops)
	db.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		db.requests.Add(1)
		if strings.HasPrefix(r.URL.Path, "/lookup/") {
			db.lookups.Add(1)
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(db.srv.Close)
	return db
}

// gosum is the test database's go.sum lines for a module version.
func gosum(path, vers string) ([]byte, error) {
	if strings.HasPrefix(path, "notfound.example/") {
		return nil, &fs.PathError{Op: "lookup", Path: path + "@" + vers, Err: fs.ErrNotExist}
	}
	h := sha256.Sum256([]byte(path + "@" + vers))
	m := sha256.Sum256([]byte(path + "@" + vers + "/go.mod"))
	return fmt.Appendf(nil, "%s %s h1:%s\n%s %s/go.mod h1:%s\n", path, vers, base64.StdEncoding.EncodeToString(h[:]),
		path, vers, base64.StdEncoding.EncodeToString(m[:])), nil
}

// Add records path@version in the log, as a lookup by anyone would, and
// returns its record number.
func (db *testDB) Add(t testing.TB, path, version string) int64 {
	t.Helper()
	id, err := db.ops.Lookup(context.Background(), module.Version{Path: path, Version: version})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// Latest returns the signed tree head of the log as it is.
func (db *testDB) Latest(t testing.TB) []byte {
	t.Helper()
	msg, err := db.ops.Signed(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

// Rewrite makes Fetch pass every answer through f, as a lying upstream.
func (db *testDB) Rewrite(f func(path string, body []byte) []byte) { db.rewrite.Store(&f) }

// Fetch reads a path of the database over HTTP, as verify's Fetch does.
func (db *testDB) Fetch(ctx context.Context, p string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, db.srv.URL+p, nil)
	if err != nil {
		return nil, err
	}
	resp, err := db.srv.Client().Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20+1))
	if err != nil {
		return nil, err
	}
	switch {
	case len(body) > 1<<20:
		return nil, fmt.Errorf("%s: too long", p)
	case resp.StatusCode == http.StatusNotFound:
		return nil, fmt.Errorf("%s: %w", p, fs.ErrNotExist)
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("%s: %s", p, resp.Status)
	}
	if f := db.rewrite.Load(); f != nil {
		body = (*f)(p, body)
	}
	return body, nil
}

// A testIndex is a module index on 127.0.0.1, answering
// /index?since=&limit= from its entries.
type testIndex struct {
	srv      *httptest.Server
	requests atomic.Int64

	mu      sync.Mutex
	entries []IndexEntry
}

func newTestIndex(t testing.TB, entries ...IndexEntry) *testIndex {
	t.Helper()
	ix := &testIndex{entries: entries}
	slices.SortStableFunc(ix.entries, func(a, b IndexEntry) int { return a.Timestamp.Compare(b.Timestamp) })
	ix.srv = httptest.NewServer(http.HandlerFunc(ix.serve))
	t.Cleanup(ix.srv.Close)
	return ix
}

// URL is the index endpoint, for Config.IndexURL.
func (ix *testIndex) URL() string { return ix.srv.URL + "/index" }

func (ix *testIndex) serve(w http.ResponseWriter, r *http.Request) {
	ix.requests.Add(1)
	if r.URL.Path != "/index" {
		http.NotFound(w, r)
		return
	}
	since, err := time.Parse(time.RFC3339Nano, r.URL.Query().Get("since"))
	if err != nil {
		http.Error(w, "bad since", http.StatusBadRequest)
		return
	}
	limit, err := strconv.Atoi(r.URL.Query().Get("limit"))
	if err != nil || limit <= 0 || limit > 2000 {
		limit = 2000
	}
	ix.mu.Lock()
	defer ix.mu.Unlock()
	enc := json.NewEncoder(w)
	n := 0
	for _, e := range ix.entries {
		if e.Timestamp.Before(since) || n == limit {
			continue
		}
		enc.Encode(e)
		n++
	}
}

// options are a Checker's options over db, index (nil: none), clock and
// dir, logging to t.
func options(t testing.TB, db *testDB, ix *testIndex, clk *clock, dir string) Options {
	o := Options{
		Config:      Config{MinAge: minAge, Exempt: []string{"example.com/exempt"}},
		Dir:         dir,
		Fetch:       db.Fetch,
		VerifierKey: db.key,
		Now:         clk.Now,
		Logger:      slog.New(slog.NewTextHandler(t.Output(), nil)),
	}
	if ix != nil {
		o.IndexURL = ix.URL()
	}
	return o
}

func mustNew(t testing.TB, opts Options) *Checker {
	t.Helper()
	c, err := New(t.Context(), opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// signWith signs a tree head note with skey.
func signWith(t testing.TB, skey, text string) []byte {
	t.Helper()
	s, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := note.Sign(&note.Note{Text: text}, s)
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

// firstLine is a Reason's first line.
func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
