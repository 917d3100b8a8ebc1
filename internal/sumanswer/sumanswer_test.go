package sumanswer

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strings"
	"sync"
	"testing"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// lookupFixture is a signer and the answers of a database of three
// records, for Lookup's tests and fuzzing.
type lookupFixture struct {
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
		msg, _ := tlog.FormatRecord(1, gosum("example.com/m", "v1.0.0"))
		fixture = lookupFixture{verifiers: note.VerifierList(v), tree: tree, good: append(msg, tree...)}
	})
	return fixture
}

// gosum is a record's text: path at vers's go.sum lines.
func gosum(path, vers string) []byte {
	h := sha256.Sum256([]byte(path + "@" + vers))
	m := sha256.Sum256([]byte(path + "@" + vers + "/go.mod"))
	return fmt.Appendf(nil, "%s %s h1:%s\n%s %s/go.mod h1:%s\n", path, vers, base64.StdEncoding.EncodeToString(h[:]),
		path, vers, base64.StdEncoding.EncodeToString(m[:]))
}

// signed is text signed by a new key of another database named sum.test.
func signed(t testing.TB, text string) []byte {
	t.Helper()
	skey, _, err := note.GenerateKey(rand.Reader, "sum.test")
	if err != nil {
		t.Fatal(err)
	}
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

func TestLookup(t *testing.T) {
	fx := getFixture(t)
	rec := gosum("example.com/m", "v1.0.0")
	other := gosum("example.com/other", "v1.0.0")
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
		{"wrong key", answer("1", rec, signed(t, "go.sum database tree\n3\n"+tlog.RecordHash(nil).String()+"\n")), "signed tree head"},
		{"no tree", answer("1", rec, nil), "signed tree head"},
		{"too long", append(bytes.Clone(fx.good), bytes.Repeat([]byte("x"), MaxLookupBytes)...), "longer than"},
		{"empty", nil, "malformed"},
	}
	for _, tt := range tests {
		id, text, tree, msg, err := Lookup(tt.data, "example.com/m", "v1.0.0", fx.verifiers)
		switch {
		case tt.err == "" && err != nil:
			t.Errorf("Lookup(%s) = %v", tt.name, err)
		case tt.err == "" && (id != 1 || !bytes.Equal(text, rec) || tree.N != 3 || !bytes.Equal(msg, fx.tree)):
			t.Errorf("Lookup(%s) = %d, %q, %+v, %q", tt.name, id, text, tree, msg)
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("Lookup(%s) = %v, want an error containing %q", tt.name, err, tt.err)
		}
	}
}

func TestTree(t *testing.T) {
	fx := getFixture(t)
	tests := []struct {
		name string
		msg  []byte
		err  string
	}{
		{"good", fx.tree, ""},
		{"another key", signed(t, "go.sum database tree\n3\n"+tlog.RecordHash(nil).String()+"\n"), "signed tree head"},
		{"a captive portal", []byte("<html>sign in</html>\n"), "signed tree head"},
		{"too long", append(bytes.Clone(fx.tree), bytes.Repeat([]byte("x"), MaxNoteBytes)...), "longer than"},
	}
	for _, tt := range tests {
		tree, err := Tree(tt.msg, fx.verifiers)
		switch {
		case tt.err == "" && (err != nil || tree.N != 3):
			t.Errorf("Tree(%s) = %+v, %v; want the tree of 3", tt.name, tree, err)
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("Tree(%s) = %v, want an error containing %q", tt.name, err, tt.err)
		}
	}
}

func FuzzLookup(f *testing.F) {
	fx := getFixture(f)
	f.Add(fx.good, "example.com/m", "v1.0.0")
	f.Add(fx.good, "example.com/m", "v1.0.0/go.mod")
	f.Add(fx.good[:40], "example.com/m", "v1.0.0")
	f.Add([]byte("0\nexample.com/m v1.0.0 h1:x\n\n"), "example.com/m", "v1.0.0")
	f.Fuzz(func(t *testing.T, data []byte, path, version string) {
		id, text, tree, msg, err := Lookup(data, path, version, fx.verifiers)
		if err != nil {
			return
		}
		if id < 0 || id >= tree.N {
			t.Errorf("Lookup accepted record %d of a tree of %d", id, tree.N)
		}
		if !strings.Contains("\n"+string(text), fmt.Sprintf("\n%s %s ", path, version)) {
			t.Errorf("Lookup accepted a record %q that is not about %s %s", text, path, version)
		}
		if _, err := note.Open(msg, fx.verifiers); err != nil {
			t.Errorf("Lookup accepted an unverified tree head: %v", err)
		}
	})
}
