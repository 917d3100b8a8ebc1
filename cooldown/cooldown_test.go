package cooldown

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/mod/module"
	"golang.org/x/mod/sumdb/tlog"
)

// TestCheck drives one Checker through the life of a gateway: it sees
// tree heads at t0 and t0+1h, then is asked about versions 73h30m later.
func TestCheck(t *testing.T) {
	db := newTestDB(t)
	clk := newClock(t0)
	db.Add(t, "example.com/old", "v1.0.0")
	db.Add(t, "example.com/old", "v1.1.0")

	private := map[module.Version]time.Time{
		{Path: "corp.example/old", Version: "v1.0.0"}: t0.Add(-10 * 24 * time.Hour),
		{Path: "corp.example/new", Version: "v1.0.0"}: t0.Add(72*time.Hour + 30*time.Minute),
	}
	opts := options(t, db, nil, clk, t.TempDir())
	opts.FirstSeen = func(path, version string) (time.Time, bool) {
		t, ok := private[module.Version{Path: path, Version: version}]
		return t, ok
	}
	c := mustNew(t, opts)
	if err := c.ObserveTree(t.Context(), db.Latest(t)); err != nil {
		t.Fatalf("ObserveTree: %v", err)
	}
	clk.Advance(time.Hour)
	db.Add(t, "example.com/mid", "v1.0.0")
	if err := c.ObserveTree(t.Context(), db.Latest(t)); err != nil {
		t.Fatalf("ObserveTree: %v", err)
	}
	clk.Advance(72*time.Hour + 30*time.Minute)
	now := clk.Now()
	soon := fmtTime(now.Add(minAge))

	tests := []struct {
		name        string
		path, vers  string
		private     bool
		allow       bool
		reason      string // the Reason's first line, when !allow
		after       time.Time
		noLookup    bool // decided without asking the database
		evidenceHas string
	}{
		{name: "old", path: "example.com/old", vers: "v1.0.0", allow: true, evidenceHas: "(tree)"},
		{name: "below an anchor just older than min_age", path: "example.com/mid", vers: "v1.0.0", allow: true},
		{
			name: "new", path: "example.com/new", vers: "v1.0.0",
			reason: "example.com/new v1.0.0 was published within the last 72h; available after " + soon,
			after:  now.Add(minAge),
		},
		{
			// Its .info Time would say 2019: the Checker never reads it.
			name: "backdated", path: "example.com/backdated", vers: "v0.0.0-20190101000000-abcdefabcdef",
			reason: "example.com/backdated v0.0.0-20190101000000-abcdefabcdef was published within the last 72h; available after " + soon,
			after:  now.Add(minAge),
		},
		{name: "exempt", path: "example.com/exempt/tool", vers: "v1.0.0", allow: true, noLookup: true, evidenceHas: "exempt"},
		{name: "private old", path: "corp.example/old", vers: "v1.0.0", private: true, allow: true, noLookup: true},
		{
			name: "private new", path: "corp.example/new", vers: "v1.0.0", private: true, noLookup: true,
			reason: "corp.example/new v1.0.0 was first seen by modgate within the last 72h; available after " + fmtTime(t0.Add(144*time.Hour+30*time.Minute)),
			after:  t0.Add(144*time.Hour + 30*time.Minute),
		},
		{
			name: "private never seen", path: "corp.example/unseen", vers: "v1.0.0", private: true, noLookup: true,
			reason: "corp.example/unseen v1.0.0 was first seen by modgate within the last 72h; available after " + soon,
			after:  now.Add(minAge),
		},
		{
			name: "not in the database", path: "notfound.example/m", vers: "v1.0.0",
			reason: "notfound.example/m v1.0.0: its age cannot be proven: checksum database sum.test did not prove its record",
		},
		{
			name: "not canonical", path: "example.com/old", vers: "v1.0", noLookup: true,
			reason: "example.com/old v1.0: its age cannot be proven: it is not a canonical version",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lookups := db.lookups.Load()
			v := c.Check(t.Context(), tt.path, tt.vers, tt.private)
			if v.Allow != tt.allow || v.Rule != Rule {
				t.Fatalf("Check(%s, %s) = %+v, want Allow %v, Rule %q", tt.path, tt.vers, v, tt.allow, Rule)
			}
			if !tt.allow {
				if got := firstLine(v.Reason); got != tt.reason {
					t.Errorf("Check(%s, %s).Reason = %q, want first line %q", tt.path, tt.vers, v.Reason, tt.reason)
				}
				if !v.AvailableAfter.Equal(tt.after) {
					t.Errorf("Check(%s, %s).AvailableAfter = %v, want %v", tt.path, tt.vers, v.AvailableAfter, tt.after)
				}
				if n := strings.Count(v.Reason, "\n"); n > 7 || strings.Contains(v.Reason, "\n\n") {
					t.Errorf("Check(%s, %s).Reason = %q: more than 8 lines, or a blank one", tt.path, tt.vers, v.Reason)
				}
			}
			if tt.noLookup && db.lookups.Load() != lookups {
				t.Errorf("Check(%s, %s) looked up the checksum database", tt.path, tt.vers)
			}
			if !strings.Contains(v.Evidence, tt.evidenceHas) {
				t.Errorf("Check(%s, %s).Evidence = %q, want it to contain %q", tt.path, tt.vers, v.Evidence, tt.evidenceHas)
			}
		})
	}

	// Known versions are decided from memory.
	lookups := db.lookups.Load()
	if v := c.Check(t.Context(), "example.com/old", "v1.0.0", false); !v.Allow {
		t.Errorf("Check(old) again = %+v, want allowed", v)
	}
	if db.lookups.Load() != lookups {
		t.Errorf("Check(old) again looked up the database")
	}
	if got := c.AnchorAge(); got != 72*time.Hour+30*time.Minute {
		t.Errorf("AnchorAge() = %v, want 72h30m", got)
	}
}

// TestAvailableAfter checks the promise of a refusal: the version is
// refused until AvailableAfter, and allowed from then on.
func TestAvailableAfter(t *testing.T) {
	db := newTestDB(t)
	clk := newClock(t0)
	db.Add(t, "example.com/old", "v1.0.0")
	c := mustNew(t, options(t, db, nil, clk, t.TempDir()))
	if err := c.ObserveTree(t.Context(), db.Latest(t)); err != nil {
		t.Fatal(err)
	}
	clk.Advance(100 * time.Hour)
	v := c.Check(t.Context(), "example.com/new", "v1.2.3", false)
	if v.Allow || v.AvailableAfter.IsZero() {
		t.Fatalf("Check(new) = %+v, want refused with a time", v)
	}
	// The anchor judged by (t0) is 28h older than min_age: the Reason says
	// only what it proves.
	if want := "example.com/new v1.2.3 was published after 2026-12-01T00:00Z; available after " + fmtTime(v.AvailableAfter); firstLine(v.Reason) != want {
		t.Errorf("Check(new).Reason = %q, want first line %q", v.Reason, want)
	}
	clk.Set(v.AvailableAfter.Add(-time.Minute))
	if v := c.Check(t.Context(), "example.com/new", "v1.2.3", false); v.Allow {
		t.Errorf("Check(new) a minute before AvailableAfter = %+v, want refused", v)
	}
	clk.Set(v.AvailableAfter)
	if v := c.Check(t.Context(), "example.com/new", "v1.2.3", false); !v.Allow {
		t.Errorf("Check(new) at AvailableAfter = %+v, want allowed", v)
	}
}

// TestFreshInstall learns the first anchor from the module index.
func TestFreshInstall(t *testing.T) {
	db := newTestDB(t)
	at := func(d time.Duration) time.Time { return t0.Add(-d) }
	db.Add(t, "example.com/ancient", "v1.0.0") // 0, never in the index window
	db.Add(t, "example.com/a", "v1.0.0")       // 1
	db.Add(t, "example.com/b", "v1.0.0")       // 2
	db.Add(t, "example.com/c", "v1.0.0")       // 3
	db.Add(t, "example.com/recent", "v1.0.0")  // 4
	ix := newTestIndex(t,
		IndexEntry{"example.com/ancient", "v1.0.0", at(400 * time.Hour)},
		IndexEntry{"example.com/a", "v1.0.0", at(100 * time.Hour)},
		IndexEntry{"example.com/b", "v1.0.0", at(99 * time.Hour)},
		IndexEntry{"example.com/c", "v1.0.0", at(98 * time.Hour)},
		// The proxy saw it, but no one looked it up: the index's time says
		// nothing about a record the Checker's own lookup will create.
		IndexEntry{"example.com/unrecorded", "v1.0.0", at(97 * time.Hour)},
		IndexEntry{"example.com/recent", "v1.0.0", at(time.Hour)},
	)
	clk := newClock(t0)
	dir := t.TempDir()
	c := mustNew(t, options(t, db, ix, clk, dir))

	tests := []struct {
		path  string
		allow bool
	}{
		{"example.com/ancient", true},
		{"example.com/a", true}, // the smallest record of the witnesses: the anchor's
		{"example.com/b", false},
		{"example.com/unrecorded", false},
		{"example.com/recent", false},
		{"example.com/new", false},
	}
	for _, tt := range tests {
		v := c.Check(t.Context(), tt.path, "v1.0.0", false)
		if v.Allow != tt.allow {
			t.Errorf("Check(%s) = %+v, want Allow %v", tt.path, v, tt.allow)
		}
		if !tt.allow && v.AvailableAfter.IsZero() {
			t.Errorf("Check(%s) = %+v, want an AvailableAfter", tt.path, v)
		}
	}
	if got, want := c.AnchorAge(), 100*time.Hour; got != want {
		t.Errorf("AnchorAge() = %v, want %v", got, want)
	}
	data, err := os.ReadFile(filepath.Join(dir, "anchors"))
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("\n%s 2 %s index\n", at(100*time.Hour).Format(time.RFC3339Nano), "kAk1Gr81wAOBsKYtPAgSTv5Gh9OAEJ1uTPtnM9jwb7A="); !bytes.Contains(data, []byte(want)) {
		t.Errorf("anchors file:\n%s\nwant it to hold the index's anchor, %q", data, want)
	}
	// The index is asked once, not per Check.
	if n := ix.requests.Load(); n > int64(len(indexWindows)) {
		t.Errorf("index asked %d times, want at most %d", n, len(indexWindows))
	}
}

// TestUnprovable: with nothing to prove an age from, Check refuses.
func TestUnprovable(t *testing.T) {
	tests := []struct {
		name    string
		dbDown  bool
		ixDown  bool
		noIndex bool
		reason  string
	}{
		{
			name: "database and index unreachable", dbDown: true, ixDown: true,
			reason: "example.com/m v1.0.0: its age cannot be proven: checksum database sum.test did not prove its record",
		},
		{
			name: "index unreachable", ixDown: true,
			reason: "example.com/m v1.0.0: its age cannot be proven: modgate has no record of checksum database sum.test older than 72h, and the module index did not date one",
		},
		{
			name: "no index", noIndex: true,
			reason: "example.com/m v1.0.0: its age cannot be proven: modgate has no record of checksum database sum.test older than 72h (it has not been observing it that long, and no module index is configured)",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := newTestDB(t)
			db.Add(t, "example.com/m", "v1.0.0")
			ix := newTestIndex(t, IndexEntry{"example.com/m", "v1.0.0", t0.Add(-100 * time.Hour)})
			if tt.dbDown {
				db.srv.Close()
			}
			if tt.ixDown {
				ix.srv.Close()
			}
			if tt.noIndex {
				ix = nil
			}
			c := mustNew(t, options(t, db, ix, newClock(t0), t.TempDir()))
			v := c.Check(t.Context(), "example.com/m", "v1.0.0", false)
			if v.Allow || !v.AvailableAfter.IsZero() {
				t.Fatalf("Check = %+v, want refused, without a time", v)
			}
			if firstLine(v.Reason) != tt.reason {
				t.Errorf("Check.Reason = %q, want first line %q", v.Reason, tt.reason)
			}
			if c.AnchorAge() != 0 {
				t.Errorf("AnchorAge() = %v, want 0", c.AnchorAge())
			}
		})
	}
}

func TestPrivateExemptWithoutFirstSeen(t *testing.T) {
	db := newTestDB(t)
	dir := t.TempDir()
	c := mustNew(t, options(t, db, nil, newClock(t0), dir))
	if v := c.Check(t.Context(), "corp.example/m", "v1.0.0", true); !v.Allow {
		t.Errorf("Check(private) = %+v, want allowed", v)
	}
	if db.requests.Load() != 0 {
		t.Errorf("Check(private) asked the checksum database")
	}
	if _, err := os.Stat(filepath.Join(dir, "private")); err == nil {
		t.Errorf("Check(private) made a private record without FirstSeen")
	}
}

// TestRestart: anchors and private first sights survive a restart.
func TestRestart(t *testing.T) {
	db := newTestDB(t)
	clk := newClock(t0)
	dir := t.TempDir()
	db.Add(t, "example.com/old", "v1.0.0")
	opts := options(t, db, nil, clk, dir)
	opts.FirstSeen = func(string, string) (time.Time, bool) { return time.Time{}, false }

	c, err := New(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.ObserveTree(t.Context(), db.Latest(t)); err != nil {
		t.Fatal(err)
	}
	if v := c.Check(t.Context(), "corp.example/m", "v1.0.0", true); v.Allow {
		t.Fatalf("Check(private, first sight) = %+v, want refused", v)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	clk.Advance(minAge + time.Minute)
	c = mustNew(t, opts)
	if v := c.Check(t.Context(), "example.com/old", "v1.0.0", false); !v.Allow {
		t.Errorf("after restart, Check(old) = %+v, want allowed", v)
	}
	if v := c.Check(t.Context(), "corp.example/m", "v1.0.0", true); !v.Allow {
		t.Errorf("after restart, Check(private seen 72h1m ago) = %+v, want allowed", v)
	}
}

func TestObserveTreeBadSignature(t *testing.T) {
	db := newTestDB(t)
	other := newTestDB(t)
	db.Add(t, "example.com/m", "v1.0.0")
	other.Add(t, "example.com/m", "v1.0.0")
	dir := t.TempDir()
	c := mustNew(t, options(t, db, nil, newClock(t0), dir))

	good := db.Latest(t)
	text, _, _ := bytes.Cut(good, []byte("\n\n"))
	tests := []struct {
		name string
		msg  []byte
	}{
		{"other key, same name", other.Latest(t)},
		{"altered tree", bytes.Replace(good, []byte("\n1\n"), []byte("\n9\n"), 1)},
		{"unsigned", append(text, "\n\n"...)},
		{"not a tree", signWith(t, db.signer, "hello\n")},
		{"empty", nil},
	}
	for _, tt := range tests {
		if err := c.ObserveTree(t.Context(), tt.msg); err == nil {
			t.Errorf("ObserveTree(%s) = nil, want an error", tt.name)
		}
	}
	if data, _ := os.ReadFile(filepath.Join(dir, "anchors")); len(data) != 0 {
		t.Errorf("anchors file after bad tree heads:\n%s\nwant empty", data)
	}
	if err := c.ObserveTree(t.Context(), good); err != nil {
		t.Errorf("ObserveTree(good) = %v", err)
	}
	if data, _ := os.ReadFile(filepath.Join(dir, "anchors")); bytes.Count(data, []byte("\n")) != 1 {
		t.Errorf("anchors file after a good tree head:\n%s\nwant one line", data)
	}
}

// TestLyingUpstream: an upstream that relays the database can make no
// version look older than it is.
func TestLyingUpstream(t *testing.T) {
	db := newTestDB(t)
	clk := newClock(t0)
	db.Add(t, "example.com/old", "v1.0.0")
	c := mustNew(t, options(t, db, nil, clk, t.TempDir()))
	if err := c.ObserveTree(t.Context(), db.Latest(t)); err != nil {
		t.Fatal(err)
	}
	clk.Advance(100 * time.Hour)
	oldLookup, err := db.Fetch(t.Context(), "/lookup/example.com/old@v1.0.0")
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		rewrite func(path string, body []byte) []byte
	}{
		{"record number 0", func(path string, body []byte) []byte {
			if !strings.HasPrefix(path, "/lookup/") {
				return body
			}
			_, rest, _ := bytes.Cut(body, []byte("\n"))
			return append([]byte("0\n"), rest...)
		}},
		{"another module's record", func(path string, body []byte) []byte {
			if !strings.HasPrefix(path, "/lookup/") {
				return body
			}
			return oldLookup
		}},
		{"forged tiles", func(path string, body []byte) []byte {
			if !strings.HasPrefix(path, "/tile/") {
				return body
			}
			return bytes.Repeat([]byte{1}, len(body))
		}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db.Rewrite(tt.rewrite)
			mod := fmt.Sprintf("example.com/new%d", i)
			v := c.Check(t.Context(), mod, "v1.0.0", false)
			if v.Allow || !strings.Contains(v.Reason, "its age cannot be proven") {
				t.Errorf("Check(%s) through a lying upstream = %+v, want refused, unproven", mod, v)
			}
			db.Rewrite(func(_ string, b []byte) []byte { return b })
			if v := c.Check(t.Context(), mod, "v1.0.0", false); v.Allow || v.AvailableAfter.IsZero() {
				t.Errorf("Check(%s) afterwards = %+v, want refused as too new", mod, v)
			}
		})
	}
}

// TestForkedAnchor: an anchor that is not on the database's log is never
// used.
func TestForkedAnchor(t *testing.T) {
	db := newTestDB(t)
	dir := t.TempDir()
	db.Add(t, "example.com/a", "v1.0.0")
	db.Add(t, "example.com/b", "v1.0.0")
	forged := anchor{Time: t0.Add(-100 * time.Hour), Tree: tlog.Tree{N: 2, Hash: tlog.RecordHash([]byte("forged"))}, Source: sourceTree}
	if err := os.WriteFile(filepath.Join(dir, "anchors"), append(formatAnchor(forged), '\n'), 0o640); err != nil {
		t.Fatal(err)
	}
	c := mustNew(t, options(t, db, nil, newClock(t0), dir))
	v := c.Check(t.Context(), "example.com/a", "v1.0.0", false)
	if v.Allow || !strings.Contains(v.Reason, "its age cannot be proven") {
		t.Errorf("Check with a forged anchor = %+v, want refused, unproven", v)
	}
	if c.AnchorAge() != 0 {
		t.Errorf("AnchorAge() with only a forged anchor = %v, want 0", c.AnchorAge())
	}
}

func TestFilter(t *testing.T) {
	db := newTestDB(t)
	clk := newClock(t0)
	for _, v := range []string{"v1.0.0", "v1.1.0", "v1.3.0-rc.1"} {
		db.Add(t, "example.com/m", v)
	}
	c := mustNew(t, options(t, db, nil, clk, t.TempDir()))
	if err := c.ObserveTree(t.Context(), db.Latest(t)); err != nil {
		t.Fatal(err)
	}
	clk.Advance(minAge + time.Minute)
	db.Add(t, "example.com/m", "v1.2.0")
	db.Add(t, "example.com/m", "v1.3.0")

	// From the top: v1.3.0 is dropped, v1.3.0-rc.1 kept, v1.2.0 dropped,
	// and v1.1.0, an allowed release, ends the checks.
	list := []string{"v1.0.0", "v1.1.0", "v1.2.0", "v1.3.0-rc.1", "v1.3.0", "junk"}
	got := c.Filter(t.Context(), "example.com/m", list, false)
	if want := []string{"v1.0.0", "v1.1.0", "v1.3.0-rc.1", "junk"}; !slices.Equal(got, want) {
		t.Errorf("Filter(%v) = %v, want %v", list, got, want)
	}
}

func TestOff(t *testing.T) {
	var nilChecker *Checker
	c, err := New(t.Context(), Options{})
	if err != nil {
		t.Fatalf("New(zero Options) = %v", err)
	}
	for _, c := range []*Checker{nilChecker, c} {
		if v := c.Check(t.Context(), "example.com/m", "v1.0.0", false); !v.Allow {
			t.Errorf("Check with the cooldown off = %+v, want allowed", v)
		}
		if err := c.ObserveTree(t.Context(), []byte("junk")); err != nil {
			t.Errorf("ObserveTree with the cooldown off = %v", err)
		}
		if got := c.Filter(t.Context(), "example.com/m", []string{"v1.0.0"}, false); len(got) != 1 {
			t.Errorf("Filter with the cooldown off = %v", got)
		}
	}
}

func TestNewErrors(t *testing.T) {
	db := newTestDB(t)
	base := options(t, db, nil, newClock(t0), t.TempDir())
	tests := []struct {
		name string
		edit func(*Options)
		want string
	}{
		{"negative min_age", func(o *Options) { o.MinAge = -time.Hour }, "policy.cooldown.min_age: "},
		{"no dir", func(o *Options) { o.Dir = "" }, "cooldown: Dir is required"},
		{"no fetch", func(o *Options) { o.Fetch = nil }, "cooldown: Fetch and VerifierKey are required"},
		{"bad key", func(o *Options) { o.VerifierKey = "sum.test+nope" }, "cooldown: checksum database key"},
		{"bad exempt", func(o *Options) { o.Exempt = []string{"ok", "a[b"} }, "policy.cooldown.exempt[1]: bad pattern"},
		{"http index", func(o *Options) { o.IndexURL = "http://index.example/index" }, "policy.cooldown.index_url: "},
	}
	for _, tt := range tests {
		opts := base
		tt.edit(&opts)
		_, err := New(t.Context(), opts)
		if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
			t.Errorf("New(%s) = %v, want an error starting %q", tt.name, err, tt.want)
		}
	}
}

func TestConfigCheck(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		err  string // "" for none
	}{
		{"zero", Config{}, ""},
		{"full", Config{MinAge: minAge, Exempt: []string{"github.com/corp/*,golang.org/x"}, IndexURL: "https://index.golang.org/index"}, ""},
		{"loopback http index", Config{IndexURL: "http://127.0.0.1:8080/index"}, ""},
		{"negative", Config{MinAge: -1}, "policy.cooldown.min_age: -1ns: want a duration of zero (off) or more, such as 72h"},
		{"bad glob", Config{Exempt: []string{"a[b"}}, `policy.cooldown.exempt[0]: bad pattern "a[b": syntax error in pattern`},
		{"version in pattern", Config{Exempt: []string{"x, a@v1"}}, `policy.cooldown.exempt[0]: bad pattern "a@v1": a module path has no "@"`},
		{"relative index", Config{IndexURL: "/index"}, `policy.cooldown.index_url: "/index": want an absolute https URL, such as https://index.golang.org/index`},
		{"plain http index", Config{IndexURL: "http://index.example/index"}, "policy.cooldown.index_url: "},
		{"credentials", Config{IndexURL: "https://u:p@index.example/index"}, "policy.cooldown.index_url: credentials in the URL are not supported"},
	}
	for _, tt := range tests {
		err := tt.cfg.Check()
		switch {
		case tt.err == "" && err != nil:
			t.Errorf("%s: Check() = %v, want nil", tt.name, err)
		case tt.err != "" && (err == nil || !strings.HasPrefix(err.Error(), tt.err)):
			t.Errorf("%s: Check() = %v, want %q", tt.name, err, tt.err)
		}
	}
}

func TestFmt(t *testing.T) {
	for _, tt := range []struct {
		d    time.Duration
		want string
	}{{72 * time.Hour, "72h"}, {90 * time.Minute, "90m"}, {90 * time.Second, "1m30s"}} {
		if got := fmtDuration(tt.d); got != tt.want {
			t.Errorf("fmtDuration(%v) = %q, want %q", tt.d, got, tt.want)
		}
	}
	for _, tt := range []struct {
		t, want time.Time
	}{
		{t0, t0},
		{t0.Add(time.Nanosecond), t0.Add(time.Minute)},
		{t0.Add(59 * time.Second), t0.Add(time.Minute)},
	} {
		if got := ceilMinute(tt.t); !got.Equal(tt.want) {
			t.Errorf("ceilMinute(%v) = %v, want %v", tt.t, got, tt.want)
		}
	}
}

// TestFork: a database that signs two trees that disagree is caught, and
// from then on the Checker proves nothing from it.
func TestFork(t *testing.T) {
	db := newTestDB(t)
	fork := newTestDBWithKey(t, db.signer, db.key)
	clk := newClock(t0)
	db.Add(t, "example.com/old", "v1.0.0")
	fork.Add(t, "example.com/other", "v1.0.0")
	fork.Add(t, "example.com/old", "v1.0.0")
	opts := options(t, db, nil, clk, t.TempDir())
	var useFork atomic.Bool
	opts.Fetch = func(ctx context.Context, p string) ([]byte, error) {
		if useFork.Load() {
			return fork.Fetch(ctx, p)
		}
		return db.Fetch(ctx, p)
	}
	c := mustNew(t, opts)
	if err := c.ObserveTree(t.Context(), db.Latest(t)); err != nil {
		t.Fatal(err)
	}
	clk.Advance(minAge + time.Minute)
	if v := c.Check(t.Context(), "example.com/old", "v1.0.0", false); !v.Allow {
		t.Fatalf("Check(old) = %+v, want allowed", v)
	}
	useFork.Store(true)
	if v := c.Check(t.Context(), "example.com/new", "v1.0.0", false); v.Allow || !strings.Contains(v.Evidence, "misbehaved") {
		t.Errorf("Check(new) from a forked database = %+v, want refused with the security error", v)
	}
	useFork.Store(false)
	if v := c.Check(t.Context(), "example.com/new2", "v1.0.0", false); v.Allow || !strings.Contains(v.Evidence, "misbehaved earlier") {
		t.Errorf("Check(new2) after the fork = %+v, want refused: the error is sticky", v)
	}
}

// TestConcurrent runs Checks and ObserveTree at once, for the race
// detector; concurrent Checks of one new version share one lookup.
func TestConcurrent(t *testing.T) {
	db := newTestDB(t)
	clk := newClock(t0)
	db.Add(t, "example.com/old", "v1.0.0")
	c := mustNew(t, options(t, db, nil, clk, t.TempDir()))
	if err := c.ObserveTree(t.Context(), db.Latest(t)); err != nil {
		t.Fatal(err)
	}
	clk.Advance(minAge + time.Minute)
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			if v := c.Check(t.Context(), "example.com/old", "v1.0.0", false); !v.Allow {
				t.Errorf("Check(old) = %+v, want allowed", v)
			}
			if v := c.Check(t.Context(), "example.com/new", "v1.0.0", false); v.Allow {
				t.Errorf("Check(new) = %+v, want refused", v)
			}
			c.Check(t.Context(), "example.com/other", fmt.Sprintf("v1.0.%d", i), false)
			c.ObserveTree(t.Context(), db.Latest(t))
			c.AnchorAge()
		})
	}
	wg.Wait()
	// One lookup for old, at most a few for new (a waiter may arrive after
	// the first lookup finished and find it cached), 16 for the others.
	if n := db.lookups.Load(); n > 2+16+2 {
		t.Errorf("%d lookups, want about 18: concurrent Checks of a version must share one", n)
	}
}

// TestPreviewRecordsNothing: Preview judges a private version it has not
// seen as first seen now, and does not record it, so asking early does
// not start its cooldown; Check then does.
func TestPreviewRecordsNothing(t *testing.T) {
	db := newTestDB(t)
	clk := newClock(t0)
	opts := options(t, db, nil, clk, t.TempDir())
	opts.FirstSeen = func(string, string) (time.Time, bool) { return time.Time{}, false }
	c := mustNew(t, opts)
	if v := c.Preview(t.Context(), "corp.example/m", "v1.0.0", true); v.Allow || v.AvailableAfter != ceilMinute(t0.Add(minAge)) {
		t.Fatalf("Preview(private, unseen) = %+v, want refused until %v", v, ceilMinute(t0.Add(minAge)))
	}
	clk.Advance(minAge / 2)
	first := clk.Now()
	if v := c.Preview(t.Context(), "corp.example/m", "v1.0.0", true); v.AvailableAfter != ceilMinute(first.Add(minAge)) {
		t.Errorf("Preview after a while = %+v: the first Preview was recorded as a sight", v)
	}
	if v := c.Check(t.Context(), "corp.example/m", "v1.0.0", true); v.Allow || v.AvailableAfter != ceilMinute(first.Add(minAge)) {
		t.Errorf("Check(private, first sight) = %+v, want refused until %v", v, ceilMinute(first.Add(minAge)))
	}
	clk.Advance(time.Minute)
	if v := c.Preview(t.Context(), "corp.example/m", "v1.0.0", true); v.AvailableAfter != ceilMinute(first.Add(minAge)) {
		t.Errorf("Preview after Check = %+v, want the recorded sight's time", v)
	}
}
