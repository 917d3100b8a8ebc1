package auth

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

// created is an arbitrary creation time, to the second.
var created = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

const (
	hashA = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
	hashB = "sha256:60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752"
)

func mustHash(t testing.TB, s string) [sha256.Size]byte {
	t.Helper()
	recs, err := parse([]byte("x 2026-03-01T12:00:00Z " + s + "\n"))
	if err != nil {
		t.Fatalf("parse hash %q: %v", s, err)
	}
	return recs[0].Hash
}

func TestParse(t *testing.T) {
	a, b := mustHash(t, hashA), mustHash(t, hashB)
	tests := []struct {
		name string
		file string
		want []Record
		err  string // substring of the error; "" for none
	}{
		{name: "empty", file: ""},
		{name: "comments and blank lines", file: "# a comment\n\n#\n"},
		{
			name: "records",
			file: header + "ci 2026-03-01T12:00:00Z " + hashA + "\n\nalice@corp 2026-03-01T12:00:00Z " + hashB + " dev release\n",
			want: []Record{
				{Name: "ci", Created: created, Hash: a},
				{Name: "alice@corp", Groups: []string{"dev", "release"}, Created: created, Hash: b},
			},
		},
		{name: "name charset", file: "a.b_c@d-E9 2026-03-01T12:00:00Z " + hashA + " -\n", want: []Record{{Name: "a.b_c@d-E9", Groups: []string{"-"}, Created: created, Hash: a}}},
		{name: "no final newline", file: "ci 2026-03-01T12:00:00Z " + hashA, err: "line 1: no newline"},
		{name: "too few fields", file: "# c\nci 2026-03-01T12:00:00Z\n", err: "line 2: want NAME"},
		{name: "double space", file: "ci  2026-03-01T12:00:00Z " + hashA + "\n", err: "line 1: created"},
		{name: "trailing space", file: "ci 2026-03-01T12:00:00Z " + hashA + " \n", err: "line 1: group \"\""},
		{name: "leading space", file: " ci 2026-03-01T12:00:00Z " + hashA + "\n", err: "line 1: name \"\""},
		{name: "tab", file: "ci\t2026-03-01T12:00:00Z " + hashA + "\n", err: "line 1: want NAME"},
		{name: "crlf", file: "ci 2026-03-01T12:00:00Z " + hashA + "\r\n", err: "line 1: hash"},
		{name: "bad name", file: "c/i 2026-03-01T12:00:00Z " + hashA + "\n", err: "line 1: name \"c/i\""},
		{name: "long name", file: strings.Repeat("n", 65) + " 2026-03-01T12:00:00Z " + hashA + "\n", err: "line 1: name"},
		{name: "bad group", file: "ci 2026-03-01T12:00:00Z " + hashA + " dev,ops\n", err: "line 1: group \"dev,ops\""},
		{name: "group twice", file: "ci 2026-03-01T12:00:00Z " + hashA + " dev dev\n", err: "line 1: group \"dev\": given twice"},
		{name: "time with offset", file: "ci 2026-03-01T13:00:00+01:00 " + hashA + "\n", err: "line 1: created"},
		{name: "time with fraction", file: "ci 2026-03-01T12:00:00.5Z " + hashA + "\n", err: "line 1: created"},
		{name: "no hash prefix", file: "ci 2026-03-01T12:00:00Z " + hashA[len("sha256:"):] + "\n", err: "line 1: hash"},
		{name: "upper-case hash", file: "ci 2026-03-01T12:00:00Z " + strings.ToUpper(hashA[:7]) + strings.ToUpper(hashA[7:]) + "\n", err: "line 1: hash"},
		{name: "short hash", file: "ci 2026-03-01T12:00:00Z " + hashA[:len(hashA)-2] + "\n", err: "line 1: hash"},
		{name: "duplicate name", file: "ci 2026-03-01T12:00:00Z " + hashA + "\n#\nci 2026-03-01T12:00:00Z " + hashB + "\n", err: "line 3: name \"ci\" already on line 1"},
		{name: "duplicate hash", file: "ci 2026-03-01T12:00:00Z " + hashA + "\nbob 2026-03-01T12:00:00Z " + hashA + "\n", err: "line 2: same token hash as line 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parse([]byte(tt.file))
			switch {
			case tt.err == "" && err != nil:
				t.Fatalf("parse(%q): %v", tt.file, err)
			case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
				t.Fatalf("parse(%q) = %v, want error containing %q", tt.file, err, tt.err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("parse(%q) = %+v, want %+v", tt.file, got, tt.want)
			}
		})
	}
}

func TestFormatRoundTrip(t *testing.T) {
	recs := []Record{
		{Name: "ci", Created: created, Hash: sha256.Sum256([]byte("a"))},
		{Name: "alice@corp", Groups: []string{"release", "dev"}, Created: created.Add(time.Hour), Hash: sha256.Sum256([]byte("b"))},
	}
	data := format(recs)
	got, err := parse(data)
	if err != nil {
		t.Fatalf("parse(format(recs)): %v\n%s", err, data)
	}
	if !reflect.DeepEqual(got, recs) {
		t.Errorf("parse(format(recs)) = %+v, want %+v", got, recs)
	}
	if got, err := parse(format(nil)); err != nil || got != nil {
		t.Errorf("parse(format(nil)) = %v, %v; want nil, nil", got, err)
	}
}

func TestCheckName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"ci", true},
		{"alice@corp.example", true},
		{"A-Z_0.9", true},
		{strings.Repeat("x", 64), true},
		{"", false},
		{strings.Repeat("x", 65), false},
		{"a b", false},
		{"a,b", false},
		{"a/b", false},
		{"#a", false},
		{"é", false},
		{"a\n", false},
	}
	for _, tt := range tests {
		if err := CheckName(tt.name); (err == nil) != tt.ok {
			t.Errorf("CheckName(%q) = %v, want ok %v", tt.name, err, tt.ok)
		}
	}
}

func TestCreateListRevoke(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens")
	now := time.Date(2026, 3, 1, 13, 0, 0, 999, time.FixedZone("X", 3600)) // created, in another zone, past the second
	tokCI, err := Create(path, "ci", nil, now)
	if err != nil {
		t.Fatal(err)
	}
	tokAlice, err := Create(path, "alice", []string{"dev", "release"}, now)
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range []string{tokCI, tokAlice} {
		raw, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(tok, TokenPrefix))
		if !strings.HasPrefix(tok, TokenPrefix) || len(tok) != 47 || err != nil || len(raw) != 32 {
			t.Errorf("token %q: want %s and 32 bytes in unpadded base64url", tok, TokenPrefix)
		}
	}
	if tokCI == tokAlice {
		t.Errorf("Create returned the same token twice")
	}

	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("tokens file mode = %v, want 0600", fi.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range []string{tokCI, tokAlice} {
		if strings.Contains(string(data), strings.TrimPrefix(tok, TokenPrefix)) {
			t.Errorf("tokens file holds a token:\n%s", data)
		}
	}

	got, err := List(path)
	if err != nil {
		t.Fatal(err)
	}
	want := []Record{
		{Name: "ci", Created: created, Hash: sha256.Sum256([]byte(tokCI))},
		{Name: "alice", Groups: []string{"dev", "release"}, Created: created, Hash: sha256.Sum256([]byte(tokAlice))},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("List = %+v, want %+v", got, want)
	}

	if _, err := Create(path, "ci", nil, now); !errors.Is(err, fs.ErrExist) || !strings.Contains(err.Error(), `"ci"`) {
		t.Errorf("Create of an existing name: %v, want fs.ErrExist naming it", err)
	}
	if err := Revoke(path, "bob"); !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), `"bob"`) {
		t.Errorf("Revoke(bob) = %v, want fs.ErrNotExist naming bob", err)
	}
	if err := Revoke(path, "ci"); err != nil {
		t.Fatal(err)
	}
	got, err = List(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want[1:]) {
		t.Errorf("List after Revoke(ci) = %+v, want %+v", got, want[1:])
	}
	if err := Revoke(path, "ci"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("second Revoke(ci) = %v, want fs.ErrNotExist", err)
	}
	if matches, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".tokens.tmp-*")); len(matches) > 0 {
		t.Errorf("temporary files left: %v", matches)
	}
}

func TestCreateInvalid(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens")
	tests := []struct {
		name   string
		groups []string
	}{
		{"", nil},
		{"a b", nil},
		{"ci", []string{""}},
		{"ci", []string{"dev,ops"}},
		{"ci", []string{"dev", "dev"}},
	}
	for _, tt := range tests {
		if tok, err := Create(path, tt.name, tt.groups, created); err == nil || tok != "" {
			t.Errorf("Create(%q, %q) = %q, %v; want an error", tt.name, tt.groups, tok, err)
		}
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("failed Creates made the file: %v", err)
	}
}

func TestCreateCorruptFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens")
	corrupt := "ci 2026-03-01T12:00:00Z " + hashA + "\nbroken\n"
	if err := os.WriteFile(path, []byte(corrupt), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Create(path, "bob", nil, created); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("Create on a corrupt file = %v, want an error naming line 2", err)
	}
	if err := Revoke(path, "ci"); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("Revoke on a corrupt file = %v, want an error naming line 2", err)
	}
	if data, _ := os.ReadFile(path); string(data) != corrupt {
		t.Errorf("corrupt file rewritten: %q", data)
	}
}

func TestCreateConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens")
	const n = 20
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			_, errs[i] = Create(path, fmt.Sprintf("client%d", i), nil, created)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	recs, err := List(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != n {
		t.Errorf("after %d concurrent Creates, List has %d records", n, len(recs))
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	if _, err := Load(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load(missing) = %v, want fs.ErrNotExist", err)
	}
	bad := filepath.Join(dir, "bad")
	if err := os.WriteFile(bad, []byte("# ok\nci 2026-03-01T12:00:00Z sha256:00\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(bad); err == nil || !strings.Contains(err.Error(), bad+": line 2: hash") {
		t.Errorf("Load(bad) = %v, want an error naming %s line 2", err, bad)
	}
	big := filepath.Join(dir, "big")
	if err := os.WriteFile(big, []byte(strings.Repeat("#\n", maxFileSize/2+1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(big); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("Load(big) = %v, want too large", err)
	}

	path := filepath.Join(dir, "tokens")
	tok, err := Create(path, "ci", []string{"ci"}, created)
	if err != nil {
		t.Fatal(err)
	}
	ts, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if ts.Len() != 1 {
		t.Errorf("Len = %d, want 1", ts.Len())
	}
	if r := ts.lookup(tok); r == nil || r.Name != "ci" {
		t.Errorf("lookup(token) = %+v, want ci", r)
	}
	for _, wrong := range []string{"", tok[:len(tok)-1], tok + "x", strings.ToUpper(tok)} {
		if r := ts.lookup(wrong); r != nil {
			t.Errorf("lookup(%q) = %+v, want nil", wrong, r)
		}
	}
	var none *Tokens
	if none.Len() != 0 || none.lookup(tok) != nil {
		t.Errorf("nil *Tokens is not empty")
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(""))
	f.Add([]byte(header))
	f.Add([]byte("ci 2026-03-01T12:00:00Z " + hashA + "\n\nalice@corp 2026-03-01T12:00:00Z " + hashB + " dev release\n"))
	f.Add([]byte("ci 2026-03-01T12:00:00Z " + hashA + "\nci 2026-03-01T12:00:00Z " + hashB + "\n"))
	f.Add([]byte("ci 2026-03-01T13:00:00+01:00 " + hashA + " dev dev\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		recs, err := parse(data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "line ") && !strings.HasPrefix(err.Error(), "larger") {
				t.Errorf("parse error %q names no line", err)
			}
			return
		}
		again, err := parse(format(recs))
		if err != nil {
			t.Fatalf("parse(format(parse(data))): %v", err)
		}
		if !reflect.DeepEqual(again, recs) {
			t.Errorf("parse(format(recs)) = %+v, want %+v", again, recs)
		}
	})
}
