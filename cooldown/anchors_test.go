package cooldown

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"
)

func TestAnchorLine(t *testing.T) {
	a := anchor{Time: t0.Add(1500 * time.Millisecond), Tree: tlog.Tree{N: 41234567, Hash: tlog.RecordHash([]byte("x"))}, Source: sourceTree}
	line := formatAnchor(a)
	got, err := parseAnchor(line)
	if err != nil || !got.Time.Equal(a.Time) || got.Tree != a.Tree || got.Source != a.Source {
		t.Errorf("parseAnchor(%q) = %+v, %v, want %+v", line, got, err, a)
	}
	h := a.Tree.Hash.String()
	bad := []struct{ name, line string }{
		{"empty", ""},
		{"three fields", "2026-12-01T00:00:00Z 5 " + h},
		{"bad time", "yesterday 5 " + h + " tree"},
		{"zero size", "2026-12-01T00:00:00Z 0 " + h + " tree"},
		{"negative size", "2026-12-01T00:00:00Z -5 " + h + " tree"},
		{"bad hash", "2026-12-01T00:00:00Z 5 abc tree"},
		{"bad source", "2026-12-01T00:00:00Z 5 " + h + " gossip"},
		{"too long", "2026-12-01T00:00:00Z 5 " + h + " tree" + strings.Repeat(" ", 100)},
	}
	for _, tt := range bad {
		if a, err := parseAnchor([]byte(tt.line)); err == nil {
			t.Errorf("parseAnchor(%s) = %+v, want an error", tt.name, a)
		}
	}
}

func TestThin(t *testing.T) {
	var list []anchor
	for i := range 5000 {
		list = insertAnchor(list, anchor{Time: t0.Add(time.Duration(i) * time.Minute), Tree: tlog.Tree{N: int64(i + 1)}, Source: sourceTree})
		list = thin(list, maxAnchors)
		if len(list) > maxAnchors {
			t.Fatalf("after %d anchors, thin kept %d, want at most %d", i+1, len(list), maxAnchors)
		}
	}
	if list[0].Tree.N != 1 {
		t.Errorf("thin dropped the oldest anchor: first is %d", list[0].Tree.N)
	}
	last := list[len(list)-maxAnchors/2:]
	for i, a := range last {
		if want := int64(5000 - maxAnchors/2 + i + 1); a.Tree.N != want {
			t.Fatalf("recent anchor %d is %d, want %d: thin must keep the newest %d", i, a.Tree.N, want, maxAnchors/2)
		}
	}
	for i := 1; i < len(list); i++ {
		if list[i].Time.Before(list[i-1].Time) {
			t.Fatalf("thin's result is out of order at %d", i)
		}
	}
}

// TestAnchorsFile: a torn last line and lines that are not anchors are
// dropped; the anchors file is thinned when it holds too many.
func TestAnchorsFile(t *testing.T) {
	db := newTestDB(t)
	db.Add(t, "example.com/old", "v1.0.0")
	dir := t.TempDir()
	file := filepath.Join(dir, "anchors")
	clk := newClock(t0)

	c := mustNew(t, options(t, db, nil, clk, dir))
	if err := c.ObserveTree(t.Context(), db.Latest(t)); err != nil {
		t.Fatal(err)
	}
	c.Close()
	f, err := os.OpenFile(file, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("not an anchor\n2026-12-01T00:00:00Z 99 torn")
	f.Close()

	clk.Advance(minAge)
	c = mustNew(t, options(t, db, nil, clk, dir))
	if v := c.Check(t.Context(), "example.com/old", "v1.0.0", false); !v.Allow {
		t.Errorf("Check(old) after a torn anchors file = %+v, want allowed", v)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(data, []byte("torn")) || !bytes.HasSuffix(data, []byte("\n")) {
		t.Errorf("anchors file after reopening:\n%s\nwant the torn line gone", data)
	}

	c.Close()

	// Too many anchors: the file is thinned when one more is added, and
	// when it is opened.
	var lines []byte
	for i := range maxAnchors {
		a := anchor{Time: t0.Add(-time.Duration(maxAnchors-i) * time.Hour), Tree: tlog.Tree{N: int64(i + 1)}, Source: sourceIndex}
		lines = append(append(lines, formatAnchor(a)...), '\n')
	}
	if err := os.WriteFile(file, lines, 0o640); err != nil {
		t.Fatal(err)
	}
	c = mustNew(t, options(t, db, nil, clk, dir))
	if n := len(c.anchors); n != maxAnchors {
		t.Fatalf("New read %d anchors, want %d", n, maxAnchors)
	}
	if err := c.ObserveTree(t.Context(), db.Latest(t)); err != nil {
		t.Fatal(err)
	}
	c.Close()
	c = mustNew(t, options(t, db, nil, clk, dir))
	if n := len(c.anchors); n > maxAnchors*3/4+1 || n < maxAnchors/2 {
		t.Errorf("after %d anchors, %d kept, want between %d and %d", maxAnchors+1, n, maxAnchors/2, maxAnchors*3/4+1)
	}
	if last := c.anchors[len(c.anchors)-1]; last.Source != sourceTree {
		t.Errorf("after thinning, the newest anchor is %+v, want the tree head observed last", last)
	}
}

func TestJournal(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j")
	j, lines, err := openJournal(path, 64)
	if err != nil || len(lines) != 0 {
		t.Fatalf("openJournal(new) = %q, %v", lines, err)
	}
	for _, l := range []string{"one", "two"} {
		if err := j.append([]byte(l)); err != nil {
			t.Fatalf("append(%s) = %v", l, err)
		}
	}
	if err := j.append(bytes.Repeat([]byte("x"), 64)); err == nil {
		t.Errorf("append past the limit = nil, want an error")
	}
	if err := j.rewrite([][]byte{[]byte("three")}); err != nil {
		t.Fatalf("rewrite = %v", err)
	}
	if err := j.append([]byte("four")); err != nil {
		t.Fatalf("append after rewrite = %v", err)
	}
	j.close()
	if data, _ := os.ReadFile(path); string(data) != "three\nfour\n" {
		t.Errorf("journal file = %q, want %q", data, "three\nfour\n")
	}
	os.WriteFile(path, []byte(strings.Repeat("y", 65)), 0o640)
	if _, _, err := openJournal(path, 64); err == nil {
		t.Errorf("openJournal(too long) = nil, want an error")
	}
}
