package verify

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"golang.org/x/mod/module"
	"golang.org/x/mod/sumdb/tlog"
)

// manySums returns go.sum lines for n made-up module versions, enough
// for a log with full and partial tiles.
func manySums(n int) map[module.Version]string {
	sums := map[module.Version]string{}
	for i := range n {
		path := fmt.Sprintf("example.com/m%03d", i)
		h := func(s string) string {
			sum := sha256.Sum256([]byte(s))
			return "h1:" + base64.StdEncoding.EncodeToString(sum[:])
		}
		sums[module.Version{Path: path, Version: "v1.0.0"}] = fmt.Sprintf("%s v1.0.0 %s\n%s v1.0.0/go.mod %s\n", path, h(path), path, h(path+"/go.mod"))
	}
	return sums
}

// TestAnswer checks Answer on the answers a client may be handed for
// the checksum database's paths: honest ones are proven, wrong ones are
// errors, and what cannot be proven now is neither.
func TestAnswer(t *testing.T) {
	const records = 300 // a full tile at level 0, then a partial one of 44
	skey, vkey := newKey(t)
	d := newDB(t, skey, manySums(records))
	get := func(p string) []byte {
		t.Helper()
		data, err := d.fetch(t.Context(), p)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	for i := range records {
		get(fmt.Sprintf("/lookup/example.com/m%03d@v1.0.0", i))
	}
	otherSkey, _ := newKey(t)
	other := newDB(t, otherSkey, manySums(3))

	var mu sync.Mutex
	verified := map[string]bool{}
	v := newVerifier(t, opts{key: vkey, dir: t.TempDir(), fetch: d.fetch, onVerified: func(file string, _ []byte) {
		mu.Lock()
		verified[file] = true
		mu.Unlock()
	}})
	name := v.Name()

	lookup := get("/lookup/example.com/m005@v1.0.0")
	tampered := bytes.Replace(lookup, []byte("h1:"), []byte("h1:A"), 1)
	tile0 := get("/tile/8/0/000")
	flipped := flip(tile0, 100)

	tests := []struct {
		name   string
		db     string // default name
		path   string
		data   []byte
		proven bool
		wrong  string // substring of the *AnswerError, if one is expected
	}{
		{name: "latest", path: "/latest", data: get("/latest"), proven: true},
		{name: "latest garbage", path: "/latest", data: []byte("<html>sign in to the network</html>"), wrong: "signed tree head"},
		{name: "latest of another key", path: "/latest", data: other.mustGet(t, "/latest"), wrong: "signed tree head"},
		{name: "lookup", path: "/lookup/example.com/m005@v1.0.0", data: lookup, proven: true},
		{name: "lookup of another version", path: "/lookup/example.com/m006@v1.0.0", data: lookup, wrong: "record 5 is not about example.com/m006 v1.0.0"},
		{name: "lookup record changed", path: "/lookup/example.com/m005@v1.0.0", data: tampered, wrong: "not the one the tree"},
		{name: "lookup garbage", path: "/lookup/example.com/m005@v1.0.0", data: []byte("<html>sign in</html>"), wrong: "malformed record"},
		{name: "lookup of another database", path: "/lookup/example.com/m001@v1.0.0", data: other.mustGet(t, "/lookup/example.com/m001@v1.0.0"), wrong: "signed tree head"},
		{name: "full tile", path: "/tile/8/0/000", data: tile0, proven: true},
		{name: "partial tile", path: "/tile/8/0/001.p/44", data: get("/tile/8/0/001.p/44"), proven: true},
		{name: "shorter partial tile", path: "/tile/8/0/001.p/10", data: get("/tile/8/0/001.p/10"), proven: true},
		{name: "level 1 tile", path: "/tile/8/1/000.p/1", data: get("/tile/8/1/000.p/1"), proven: true},
		{name: "tile changed", path: "/tile/8/0/000", data: flipped, wrong: "inconsistent tile"},
		{name: "shorter partial tile changed", path: "/tile/8/0/001.p/10", data: flip(get("/tile/8/0/001.p/10"), 40), wrong: "not the hashes of the tree of size 300"},
		{name: "tile short", path: "/tile/8/0/000", data: tile0[:100], wrong: "100 bytes, want 8192"},
		{name: "tile garbage", path: "/tile/8/0/001.p/44", data: []byte("<html>sign in</html>"), wrong: "want 1408"},
		{name: "tile beyond every tree", path: "/tile/8/0/002", data: make([]byte, 8192)},
		{name: "data tile", path: "/tile/8/data/000", data: get("/tile/8/data/000")},
		{name: "another database", db: "sum.other.test", path: "/latest", data: get("/latest")},
		{name: "bad tile path", path: "/tile/8/0/x", data: tile0, wrong: "malformed tile path"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := name
			if tt.db != "" {
				db = tt.db
			}
			ok, err := v.Answer(t.Context(), db, tt.path, tt.data)
			var ae *AnswerError
			switch {
			case tt.wrong != "":
				if ok || !errors.As(err, &ae) || !strings.Contains(err.Error(), tt.wrong) {
					t.Fatalf("Answer = %v, %v; want an *AnswerError containing %q", ok, err, tt.wrong)
				}
				if ae.Path != tt.path {
					t.Errorf("AnswerError.Path = %q, want %q", ae.Path, tt.path)
				}
			case ok != tt.proven || err != nil:
				t.Fatalf("Answer = %v, %v; want %v, no error", ok, err, tt.proven)
			}
		})
	}

	// Wrong answers say nothing about the database: the Verifier still
	// verifies.
	if _, err := v.Lookup("example.com/m007", "v1.0.0"); err != nil {
		t.Fatalf("a lookup after the wrong answers: %v", err)
	}
	// The tiles fetched for the lookup's proof were handed on, proven.
	mu.Lock()
	defer mu.Unlock()
	for _, f := range []string{name + "/tile/8/0/000", name + "/tile/8/1/000.p/1"} {
		if !verified[f] {
			t.Errorf("%s not handed to OnVerified; got %v", f, verified)
		}
	}
}

// TestAnswerTileOfClientTree checks that a tile is proven against the
// tree head the Client verified, with no /latest asked through Answer:
// in this process, and after a restart, from the one it kept on disk.
func TestAnswerTileOfClientTree(t *testing.T) {
	skey, vkey := newKey(t)
	d := newDB(t, skey, manySums(3))
	for i := range 3 {
		d.mustGet(t, fmt.Sprintf("/lookup/example.com/m%03d@v1.0.0", i))
	}
	tile := d.mustGet(t, "/tile/8/0/000.p/3")
	dir := t.TempDir()
	v := newVerifier(t, opts{key: vkey, dir: dir, fetch: d.fetch})
	if ok, err := v.Answer(t.Context(), v.Name(), "/tile/8/0/000.p/3", tile); ok || err != nil {
		t.Fatalf("Answer before any tree is known = %v, %v; want false, no error", ok, err)
	}
	if _, err := v.Lookup("example.com/m001", "v1.0.0"); err != nil {
		t.Fatal(err)
	}
	if ok, err := v.Answer(t.Context(), v.Name(), "/tile/8/0/000.p/3", tile); !ok || err != nil {
		t.Errorf("Answer after the Client verified the tree = %v, %v; want true", ok, err)
	}
	v.Close()
	again := newVerifier(t, opts{key: vkey, dir: dir, fetch: d.fetch})
	if ok, err := again.Answer(t.Context(), again.Name(), "/tile/8/0/000.p/3", tile); !ok || err != nil {
		t.Errorf("Answer after a restart = %v, %v; want true (the tree kept on disk)", ok, err)
	}
}

// TestAnswerUnreachable checks that a lookup whose proof needs tiles the
// database cannot give now is not proven, and not wrong either.
func TestAnswerUnreachable(t *testing.T) {
	skey, vkey := newKey(t)
	d := newDB(t, skey, manySums(3))
	lookup := d.mustGet(t, "/lookup/example.com/m001@v1.0.0")
	v := newVerifier(t, opts{key: vkey, dir: t.TempDir(), fetch: d.fetch})
	d.down.Store(true)
	if ok, err := v.Answer(t.Context(), v.Name(), "/lookup/example.com/m001@v1.0.0", lookup); ok || err != nil {
		t.Errorf("Answer with the database down = %v, %v; want false, no error", ok, err)
	}
	d.down.Store(false)
	if ok, err := v.Answer(t.Context(), v.Name(), "/lookup/example.com/m001@v1.0.0", lookup); !ok || err != nil {
		t.Errorf("Answer with the database back = %v, %v; want true", ok, err)
	}
	none := newVerifier(t, opts{})
	if ok, err := none.Answer(t.Context(), "sum.verify.test", "/latest", []byte("x")); ok || err != nil {
		t.Errorf("Answer without a database = %v, %v; want false, no error", ok, err)
	}
}

func (d *db) mustGet(t testing.TB, p string) []byte {
	t.Helper()
	data, err := d.fetch(t.Context(), p)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// flip returns data with one bit of byte i changed.
func flip(data []byte, i int) []byte {
	data = bytes.Clone(data)
	data[i] ^= 1
	return data
}

// FuzzAnswer checks that no answer makes Answer panic, and that an answer
// it proves is the database's own: the same tile bytes, the same record.
func FuzzAnswer(f *testing.F) {
	skey, vkey := newKey(f)
	d := newDB(f, skey, manySums(20))
	for i := range 20 {
		d.mustGet(f, fmt.Sprintf("/lookup/example.com/m%03d@v1.0.0", i))
	}
	v := newVerifier(f, opts{key: vkey, dir: f.TempDir(), fetch: d.fetch})
	for _, p := range []string{"/latest", "/lookup/example.com/m003@v1.0.0", "/tile/8/0/000.p/20", "/tile/8/0/000.p/7", "/tile/8/data/000.p/20"} {
		f.Add(p, d.mustGet(f, p))
	}
	f.Add("/lookup/example.com/m003@v1.0.0", []byte("3\nexample.com/m003 v1.0.0 h1:x\n\ngo.sum database tree\n20\nAAAA\n"))
	f.Fuzz(func(t *testing.T, p string, data []byte) {
		ok, err := v.Answer(t.Context(), v.Name(), p, data)
		if err != nil || !ok {
			return
		}
		honest, ferr := d.fetch(t.Context(), p)
		if ferr != nil {
			t.Fatalf("Answer proved %q for %s, which the database does not serve: %v", data, p, ferr)
		}
		if strings.HasPrefix(p, "/lookup/") {
			_, text, _, _ := tlog.ParseRecord(data)
			_, want, _, _ := tlog.ParseRecord(honest)
			honest, data = want, text
		}
		if p != "/latest" && !bytes.Equal(data, honest) {
			t.Fatalf("Answer proved %q for %s; the database has %q", data, p, honest)
		}
	})
}
