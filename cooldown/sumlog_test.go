package cooldown

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"strings"
	"sync"
	"testing"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// lookupFixture is a signer and the answers of a database of three
// records, for parseLookup's tests and fuzzing.
type lookupFixture struct {
	signer    string
	verifiers note.Verifiers
	tree      []byte // the signed tree head: three records
	good      []byte // the answer for example.com/m@v1.0.0, record 1
}

var (
	fixtureOnce sync.Once
	fixture     lookupFixture
)

func getFixture(t testing.TB) lookupFixture {
	t.Helper()
	fixtureOnce.Do(func() {
		skey, vkey, err := note.GenerateKey(rand.Reader, "sum.test")
		if err != nil {
			panic(err)
		}
		v, err := note.NewVerifier(vkey)
		if err != nil {
			panic(err)
		}
		s, _ := note.NewSigner(skey)
		tree, err := note.Sign(&note.Note{Text: string(tlog.FormatTree(tlog.Tree{N: 3, Hash: tlog.RecordHash([]byte("x"))}))}, s)
		if err != nil {
			panic(err)
		}
		rec, _ := gosum("example.com/m", "v1.0.0")
		msg, _ := tlog.FormatRecord(1, rec)
		fixture = lookupFixture{signer: skey, verifiers: note.VerifierList(v), tree: tree, good: append(msg, tree...)}
	})
	return fixture
}

func TestParseLookup(t *testing.T) {
	fx := getFixture(t)
	rec, _ := gosum("example.com/m", "v1.0.0")
	other, _ := gosum("example.com/other", "v1.0.0")
	answer := func(id string, text []byte, tree []byte) []byte {
		return append(append([]byte(id+"\n"), text...), append([]byte("\n"), tree...)...)
	}
	tests := []struct {
		name string
		data []byte
		err  string // "" for none
	}{
		{"good", fx.good, ""},
		{"record beyond the tree", answer("3", rec, fx.tree), "outside its tree of 3 records"},
		{"negative record", answer("-1", rec, fx.tree), "record number -1"},
		{"not a number", answer("one", rec, fx.tree), "malformed"},
		{"another module's record", answer("1", other, fx.tree), "is not about example.com/m v1.0.0"},
		{"go.mod line only", answer("1", []byte("example.com/m v1.0.0/go.mod h1:x=\n"), fx.tree), "is not about"},
		{"unsigned tree", answer("1", rec, []byte("go.sum database tree\n3\nAAAA\n\n")), "signed tree head"},
		{"wrong key", answer("1", rec, signWith(t, mustKey(t), "go.sum database tree\n3\n"+tlog.RecordHash(nil).String()+"\n")), "signed tree head"},
		{"no tree", answer("1", rec, nil), "signed tree head"},
		{"too long", append(bytes.Clone(fx.good), bytes.Repeat([]byte("x"), maxLookupBytes)...), "longer than"},
		{"empty", nil, "malformed"},
	}
	for _, tt := range tests {
		id, text, tree, msg, err := parseLookup(tt.data, "example.com/m", "v1.0.0", fx.verifiers)
		switch {
		case tt.err == "" && err != nil:
			t.Errorf("parseLookup(%s) = %v", tt.name, err)
		case tt.err == "" && (id != 1 || !bytes.Equal(text, rec) || tree.N != 3 || !bytes.Equal(msg, fx.tree)):
			t.Errorf("parseLookup(%s) = %d, %q, %+v, %q", tt.name, id, text, tree, msg)
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("parseLookup(%s) = %v, want an error containing %q", tt.name, err, tt.err)
		}
	}
}

// mustKey is a signer key of another database named sum.test.
func mustKey(t testing.TB) string {
	skey, _, err := note.GenerateKey(rand.Reader, "sum.test")
	if err != nil {
		t.Fatal(err)
	}
	return skey
}

func FuzzParseLookup(f *testing.F) {
	fx := getFixture(f)
	f.Add(fx.good, "example.com/m", "v1.0.0")
	f.Add(fx.good, "example.com/m", "v1.0.0/go.mod")
	f.Add(fx.good[:40], "example.com/m", "v1.0.0")
	f.Add([]byte("0\nexample.com/m v1.0.0 h1:x\n\n"), "example.com/m", "v1.0.0")
	f.Fuzz(func(t *testing.T, data []byte, path, version string) {
		id, text, tree, msg, err := parseLookup(data, path, version, fx.verifiers)
		if err != nil {
			return
		}
		if id < 0 || id >= tree.N {
			t.Errorf("parseLookup accepted record %d of a tree of %d", id, tree.N)
		}
		if !strings.Contains("\n"+string(text), fmt.Sprintf("\n%s %s ", path, version)) {
			t.Errorf("parseLookup accepted a record %q that is not about %s %s", text, path, version)
		}
		if _, err := note.Open(msg, fx.verifiers); err != nil {
			t.Errorf("parseLookup accepted an unverified tree head: %v", err)
		}
	})
}
