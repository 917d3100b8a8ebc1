package inventory

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modgate/modgate/audit"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC)

// fetch returns the audit event of a request for module@version of kind
// by client, answered status, at t0 plus i seconds.
func fetch(i int, c audit.Client, module, version, kind string, status int) *audit.Event {
	return audit.NewRequest(audit.Request{
		Start:   t0.Add(time.Duration(i) * time.Second),
		ID:      fmt.Sprint("req-", i),
		Method:  "GET",
		Target:  "/" + module + "/@v/" + version + "." + kind,
		Status:  status,
		Client:  c,
		Modgate: audit.ModgateGroup{Module: module, Version: version, Kind: kind, Decision: "serve", Cache: "hit"},
	})
}

var (
	alice  = audit.Client{Addr: netip.MustParseAddrPort("10.0.0.1:40000"), User: "alice", Roles: []string{"dev"}}
	ci     = audit.Client{Addr: netip.MustParseAddrPort("10.0.0.2:40000"), URISANs: []string{"spiffe://corp/ns/ci/sa/builder", "spiffe://corp/other"}, Subject: "CN=builder"}
	subj   = audit.Client{Addr: netip.MustParseAddrPort("10.0.0.3:40000"), Subject: "CN=laptop,O=corp"}
	anon   = audit.Client{Addr: netip.MustParseAddrPort("[::ffff:10.0.0.4]:40000")}
	nobody = audit.Client{}
)

// events is a mixed audit stream: fetches of several kinds, identities
// and versions, and events that are not fetches.
func events() []*audit.Event {
	var evs []*audit.Event
	add := func(e *audit.Event) { evs = append(evs, e) }
	i := 0
	next := func() int { i++; return i }
	for _, c := range []audit.Client{alice, ci, subj, anon, nobody} {
		for _, v := range []string{"v1.0.0", "v1.2.3", "v1.2.4-rc.1", "v1.10.0", "v2.0.0+incompatible"} {
			for _, k := range []string{"info", "mod", "zip"} {
				add(fetch(next(), c, "example.com/lib", v, k, 200))
			}
		}
		add(fetch(next(), c, "example.com/other", "v0.1.0", "zip", 200))
		add(fetch(next(), c, "example.com/lib", "", "list", 200))                           // no version: not a fetch
		add(fetch(next(), c, "example.com/lib", "v1.3.0", "zip", 404))                      // not served
		add(fetch(next(), c, "example.com/lib", "v1.3.0", "zip", 403))                      // denied
		add(fetch(next(), c, "example.com/lib", "v1.3.0", "sumdb-lookup", 200))             // a lookup: counted, kind sumdb-lookup
		add(fetch(next(), c, "example.com/lib", "master", "info", 200))                     // a query: counted as written
		add(fetch(next(), c, "example.com/lib", "v1.2.3", "weird-new-kind", 200))           // a kind goproxy does not name
		add(fetch(next(), c, "example.com/lib", "v1.0.0", "zip", 200))                      // again, later
		add(fetch(next(), c, "example.com/lib", "v1.0.0", "zip", 0))                        // nothing answered
		add(&audit.Event{Timestamp: t0, Event: audit.EventFields{Action: "audit-dropped"}}) // not a request
	}
	// Out of order: an earlier fetch recorded after later ones.
	add(fetch(-100, alice, "example.com/lib", "v1.0.0", "mod", 200))
	return evs
}

// writeAudit writes evs to an audit file with an audit Writer.
func writeAudit(t testing.TB, evs []*audit.Event) string {
	t.Helper()
	name := filepath.Join(t.TempDir(), "audit.log")
	f, err := os.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	w := audit.NewWriter(f)
	for _, e := range evs {
		if err := w.Record(e); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return name
}

func open(t testing.TB, opts Options) *Inventory {
	t.Helper()
	inv, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inv.Close() })
	return inv
}

// answers are the answers an inventory gives to a set of queries.
type answers map[string]any

func query(t testing.TB, inv *Inventory) answers {
	t.Helper()
	a := answers{}
	for _, mod := range []string{"example.com/lib", "example.com/other", "example.com/none"} {
		for _, q := range []string{"", "v1.0.0", "<v1.2.4", ">=v1.0.0 <v1.2.0", ">=v2.0.0", "master", "v9.9.9"} {
			got, err := inv.Who(mod, q)
			if err != nil {
				t.Fatalf("Who(%q, %q): %v", mod, q, err)
			}
			a["who "+mod+"@"+q] = got
		}
	}
	a["affected"] = inv.Affected("example.com/lib", func(v string) bool { return strings.HasPrefix(v, "v1.2") })
	a["top"] = inv.Top(10)
	st := inv.Stats()
	a["keys"], a["modules"] = st.Keys, st.Modules
	return a
}

func compare(t *testing.T, what string, got, want answers) {
	t.Helper()
	for k, w := range want {
		if g := got[k]; !reflect.DeepEqual(g, w) {
			t.Errorf("%s: %s = %+v, want %+v", what, k, g, w)
		}
	}
}

// TestAnswersAreTheAuditTrails checks that an inventory fed event by
// event, the same inventory reopened from its store, and one rebuilt from
// the audit file those events were written to all answer alike.
func TestAnswersAreTheAuditTrails(t *testing.T) {
	evs := events()
	file := writeAudit(t, evs)

	dir := filepath.Join(t.TempDir(), "inv")
	inc := open(t, Options{Dir: dir, FlushInterval: -1})
	for _, e := range evs {
		inc.Add(e)
	}
	want := query(t, inc)
	if err := inc.Close(); err != nil {
		t.Fatal(err)
	}
	compare(t, "after Close", query(t, inc), want)

	reopened := open(t, Options{Dir: dir})
	compare(t, "reopened", query(t, reopened), want)

	rebuilt, rep, err := Rebuild(Options{Dir: filepath.Join(t.TempDir(), "rebuilt")}, file)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rebuilt.Close() })
	compare(t, "rebuilt", query(t, rebuilt), want)
	if rep.Lines != len(evs) || rep.Malformed != 0 || rep.Fetches+rep.Ignored != len(evs) {
		t.Errorf("Rebuild report = %+v, want %d lines, none malformed", rep, len(evs))
	}
	if st := inc.Stats(); rep.Fetches != int(st.Events) || rep.Ignored != int(st.Ignored) {
		t.Errorf("Rebuild counted %d fetches, %d ignored; Add counted %d, %d", rep.Fetches, rep.Ignored, st.Events, st.Ignored)
	}
}

func TestWho(t *testing.T) {
	inv := open(t, Options{})
	for _, e := range events() {
		inv.Add(e)
	}
	ids := func(fs []Fetch) []string {
		var out []string
		for _, f := range fs {
			out = append(out, f.Version+" "+f.Identity)
		}
		return out
	}
	tests := []struct {
		module, q string
		want      []string
	}{
		{"example.com/other", "", []string{"v0.1.0 ", "v0.1.0 10.0.0.4", "v0.1.0 CN=laptop,O=corp", "v0.1.0 alice", "v0.1.0 spiffe://corp/ns/ci/sa/builder"}},
		{"example.com/lib", "<v1.2.4 >v1.2.3", []string{"v1.2.4-rc.1 ", "v1.2.4-rc.1 10.0.0.4", "v1.2.4-rc.1 CN=laptop,O=corp", "v1.2.4-rc.1 alice", "v1.2.4-rc.1 spiffe://corp/ns/ci/sa/builder"}},
		{"example.com/lib", ">=v1.3.0", []string{"v1.3.0 ", "v1.3.0 10.0.0.4", "v1.3.0 CN=laptop,O=corp", "v1.3.0 alice", "v1.3.0 spiffe://corp/ns/ci/sa/builder",
			"v1.10.0 ", "v1.10.0 10.0.0.4", "v1.10.0 CN=laptop,O=corp", "v1.10.0 alice", "v1.10.0 spiffe://corp/ns/ci/sa/builder",
			"v2.0.0+incompatible ", "v2.0.0+incompatible 10.0.0.4", "v2.0.0+incompatible CN=laptop,O=corp", "v2.0.0+incompatible alice", "v2.0.0+incompatible spiffe://corp/ns/ci/sa/builder"}},
		{"example.com/lib", "v1.0.0", []string{"v1.0.0 ", "v1.0.0 10.0.0.4", "v1.0.0 CN=laptop,O=corp", "v1.0.0 alice", "v1.0.0 spiffe://corp/ns/ci/sa/builder"}},
		{"example.com/lib", "master", []string{"master ", "master 10.0.0.4", "master CN=laptop,O=corp", "master alice", "master spiffe://corp/ns/ci/sa/builder"}},
		{"example.com/none", "", nil},
	}
	for _, tt := range tests {
		got, err := inv.Who(tt.module, tt.q)
		if err != nil {
			t.Errorf("Who(%q, %q): %v", tt.module, tt.q, err)
			continue
		}
		if g := ids(got); !reflect.DeepEqual(g, tt.want) {
			t.Errorf("Who(%q, %q) = %q, want %q", tt.module, tt.q, g, tt.want)
		}
	}
	for _, bad := range []string{"<v1.2", ">= v1.0.0", "<v1.0.0+meta"} {
		if _, err := inv.Who("example.com/lib", bad); err == nil {
			t.Errorf("Who(lib, %q): no error, want one", bad)
		}
	}
}

func TestFetchDetails(t *testing.T) {
	inv := open(t, Options{})
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	inv.Add(fetch(5, alice, "m.test/a", "v1.0.0", "zip", 200))
	inv.Add(fetch(1, alice, "m.test/a", "v1.0.0", "info", 200))
	inv.Add(fetch(9, alice, "m.test/a", "v1.0.0", "mod", 206))
	inv.Add(fetch(3, alice, "m.test/a", "v1.0.0", "mystery", 200))
	inv.Add(fetch(20, alice, "m.test/a", "v1.0.0", "zip", 304)) // not 2xx
	got, _ := inv.Who("m.test/a", "")
	want := []Fetch{{"m.test/a", "v1.0.0", "alice", at(1), at(9), 4, []string{"info", "mod", "zip", "other"}}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Who = %+v, want %+v", got, want)
	}
}

func TestIdentity(t *testing.T) {
	long := strings.Repeat("x", 300)
	tests := []struct {
		name string
		c    audit.Client
		want string
	}{
		{"user first", audit.Client{User: "alice", URISANs: []string{"spiffe://a"}, Subject: "CN=a", Addr: netip.MustParseAddrPort("1.2.3.4:5")}, "alice"},
		{"then the first URI SAN", audit.Client{URISANs: []string{"spiffe://a", "spiffe://b"}, Subject: "CN=a", Addr: netip.MustParseAddrPort("1.2.3.4:5")}, "spiffe://a"},
		{"then the subject", audit.Client{Subject: "CN=a", Addr: netip.MustParseAddrPort("1.2.3.4:5")}, "CN=a"},
		{"then the address", audit.Client{Addr: netip.MustParseAddrPort("1.2.3.4:5")}, "1.2.3.4"},
		{"mapped IPv4 as IPv4", audit.Client{Addr: netip.MustParseAddrPort("[::ffff:1.2.3.4]:5")}, "1.2.3.4"},
		{"IPv6", audit.Client{Addr: netip.MustParseAddrPort("[2001:db8::1]:5")}, "2001:db8::1"},
		{"none", audit.Client{}, ""},
		{"cut to 256 bytes", audit.Client{User: long}, long[:256]},
	}
	for _, tt := range tests {
		e := fetch(0, tt.c, "m.test/a", "v1.0.0", "zip", 200)
		if got := Identity(e); got != tt.want {
			t.Errorf("%s: Identity = %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestTop(t *testing.T) {
	inv := open(t, Options{})
	for i, m := range []string{"a.test/x", "b.test/y", "b.test/y", "c.test/z", "c.test/z", "c.test/z", "d.test/w", "d.test/w", "d.test/w"} {
		c := alice
		if i%2 == 0 {
			c = ci
		}
		inv.Add(fetch(i, c, m, fmt.Sprintf("v1.0.%d", i%2), "zip", 200))
	}
	got := inv.Top(3)
	want := []ModuleCount{{"c.test/z", 3, 2, 2}, {"d.test/w", 3, 2, 2}, {"b.test/y", 2, 2, 2}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Top(3) = %+v, want %+v", got, want)
	}
	if got := inv.Top(0); got != nil {
		t.Errorf("Top(0) = %+v, want none", got)
	}
	if got := inv.Top(100); len(got) != 4 {
		t.Errorf("Top(100) = %d modules, want 4", len(got))
	}
	for _, tc := range []struct {
		substr string
		n      int
		want   []ModuleCount
	}{
		{"C.TEST", 10, []ModuleCount{{"c.test/z", 3, 2, 2}}},
		{".test/", 2, []ModuleCount{{"c.test/z", 3, 2, 2}, {"d.test/w", 3, 2, 2}}},
		{"/y", 10, []ModuleCount{{"b.test/y", 2, 2, 2}}},
		{"nothing", 10, nil},
		{"", 0, nil},
	} {
		got := inv.Search(tc.substr, tc.n)
		if len(got) == 0 && len(tc.want) == 0 {
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Search(%q, %d) = %+v, want %+v", tc.substr, tc.n, got, tc.want)
		}
	}
}

func TestMaxKeys(t *testing.T) {
	dir := t.TempDir()
	inv := open(t, Options{Dir: dir, MaxKeys: 3, FlushInterval: -1, Logger: testLogger(io.Discard)})
	for i := range 5 {
		inv.Add(fetch(i, alice, "m.test/a", fmt.Sprintf("v1.0.%d", i), "zip", 200))
	}
	inv.Add(fetch(10, alice, "m.test/a", "v1.0.0", "zip", 200)) // a key it holds still counts
	st := inv.Stats()
	if st.Keys != 3 || st.Refused != 2 || st.Events != 4 {
		t.Errorf("Stats = %+v, want 3 keys, 2 refused, 4 events", st)
	}
	if err := inv.Close(); err != nil {
		t.Fatal(err)
	}
	// Reopened with a smaller bound, it keeps what fits.
	re := open(t, Options{Dir: dir, MaxKeys: 2, Logger: testLogger(io.Discard)})
	if st := re.Stats(); st.Keys != 2 || st.Refused != 1 {
		t.Errorf("reopened with MaxKeys 2: Stats = %+v, want 2 keys, 1 refused", st)
	}
}

func TestCompaction(t *testing.T) {
	dir := t.TempDir()
	inv := open(t, Options{Dir: dir, CompactBytes: 512, FlushInterval: -1})
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 2000 {
		c := []audit.Client{alice, ci, subj, anon}[r.IntN(4)]
		inv.Add(fetch(r.IntN(100000), c, fmt.Sprintf("m.test/m%d", r.IntN(20)), fmt.Sprintf("v1.%d.0", r.IntN(10)), "zip", 200))
		if i%50 == 0 {
			if err := inv.Flush(); err != nil {
				t.Fatal(err)
			}
		}
	}
	want := query(t, inv)
	if err := inv.Close(); err != nil {
		t.Fatal(err)
	}
	st := inv.Stats()
	if st.Compactions == 0 {
		t.Errorf("Stats = %+v: no compaction", st)
	}
	if _, err := os.Stat(filepath.Join(dir, "snapshot.tmp")); err == nil {
		t.Errorf("snapshot.tmp left behind")
	}
	re := open(t, Options{Dir: dir})
	compare(t, "reopened after compactions", query(t, re), want)
	for _, mod := range []string{"m.test/m0", "m.test/m7"} {
		a, _ := inv.Who(mod, "")
		b, _ := re.Who(mod, "")
		if !reflect.DeepEqual(a, b) {
			t.Errorf("Who(%s) after reopening = %+v, want %+v", mod, b, a)
		}
	}
}

// TestCrashRecovery damages the store as crashes would and checks what
// opening it makes of that.
func TestCrashRecovery(t *testing.T) {
	setup := func(t *testing.T) (dir string, want answers) {
		dir = t.TempDir()
		inv := open(t, Options{Dir: dir, FlushInterval: -1})
		evs := events()
		for _, e := range evs[:len(evs)/2] {
			inv.Add(e)
		}
		if err := inv.Flush(); err != nil {
			t.Fatal(err)
		}
		// Force a compaction, so that there is a snapshot and a journal.
		inv.store.compactBytes, inv.store.snapshotSize = 0, 0
		for _, e := range evs[len(evs)/2:] {
			inv.Add(e)
		}
		if err := inv.Flush(); err != nil {
			t.Fatal(err)
		}
		inv.store.compactBytes = 1 << 40
		inv.Add(fetch(1000, alice, "late.test/m", "v1.0.0", "zip", 200))
		want = query(t, inv)
		if err := inv.Close(); err != nil {
			t.Fatal(err)
		}
		return dir, want
	}
	appendTo := func(t *testing.T, name string, b []byte) {
		f, err := os.OpenFile(name, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.Write(b)
		f.Close()
	}

	t.Run("torn journal tail", func(t *testing.T) {
		dir, want := setup(t)
		journal := filepath.Join(dir, journalName)
		fi, _ := os.Stat(journal)
		// A record cut short, then zeros (what a crash mid-append leaves).
		rec := appendRecord(nil, key{"torn.test/m", "v1.0.0", "x"}, stat{count: 1})
		appendTo(t, journal, append(rec[:len(rec)-3], 0, 0, 0, 0))
		torn, _ := os.Stat(journal)
		ro := open(t, Options{Dir: dir, ReadOnly: true, Logger: testLogger(io.Discard)})
		compare(t, "torn tail, read-only", query(t, ro), want)
		ro.Add(fetch(1, alice, "ro.test/m", "v1.0.0", "zip", 200))
		if err := ro.Close(); err != nil {
			t.Fatal(err)
		}
		if fi2, _ := os.Stat(journal); fi2.Size() != torn.Size() {
			t.Errorf("read-only open changed the journal: %d bytes, was %d", fi2.Size(), torn.Size())
		}
		var logged bytes.Buffer
		re := open(t, Options{Dir: dir, Logger: testLogger(&logged)})
		compare(t, "torn tail", query(t, re), want)
		if !strings.Contains(logged.String(), "torn tail cut off") {
			t.Errorf("log = %q, want the torn tail reported", logged.String())
		}
		if fi2, _ := os.Stat(journal); fi2.Size() != fi.Size() {
			t.Errorf("journal is %d bytes after recovery, want %d (cut back)", fi2.Size(), fi.Size())
		}
	})
	t.Run("stale journal", func(t *testing.T) {
		// A compaction stopped between renaming the snapshot and the
		// journal: the old generation's journal is discarded.
		dir, want := setup(t)
		journal := filepath.Join(dir, journalName)
		b, _ := os.ReadFile(journal)
		copy(b[8:], header(journalMagic, 0)[8:]) // an older generation
		b = append(b, appendRecord(nil, key{"stale.test/m", "v1.0.0", "x"}, stat{count: 1})...)
		os.WriteFile(journal, b, 0o640)
		re := open(t, Options{Dir: dir, Logger: testLogger(io.Discard)})
		got := query(t, re)
		if w, _ := re.Who("stale.test/m", ""); w != nil {
			t.Errorf("stale journal replayed: %+v", w)
		}
		// The late fetch was only in the discarded journal.
		if got["keys"] != want["keys"].(int)-1 {
			t.Errorf("keys = %v, want %v", got["keys"], want["keys"].(int)-1)
		}
	})
	t.Run("damaged snapshot", func(t *testing.T) {
		dir, _ := setup(t)
		snap := filepath.Join(dir, snapshotName)
		b, _ := os.ReadFile(snap)
		b[len(b)/2] ^= 0xff
		os.WriteFile(snap, b, 0o640)
		if inv, err := Open(Options{Dir: dir}); err == nil {
			inv.Close()
			t.Fatal("Open of a damaged snapshot: no error")
		} else if !strings.Contains(err.Error(), "rebuild") {
			t.Errorf("Open: %v, want advice to rebuild", err)
		}
	})
	t.Run("missing journal", func(t *testing.T) {
		dir, _ := setup(t)
		os.Remove(filepath.Join(dir, journalName))
		re := open(t, Options{Dir: dir})
		if st := re.Stats(); st.Keys == 0 {
			t.Errorf("no keys from the snapshot")
		}
	})
}

func TestReadAuditMalformed(t *testing.T) {
	good := writeAudit(t, []*audit.Event{fetch(1, alice, "m.test/a", "v1.0.0", "zip", 200)})
	b, _ := os.ReadFile(good)
	in := "not json\n" + string(b) + "\n" + `{"@timestamp":"bad"}` + "\n" + strings.Repeat("x", MaxLine+10) + "\n" + strings.TrimSuffix(string(b), "\n")
	inv, rep, err := FromAudit(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := Report{Lines: 6, Fetches: 2, Malformed: 3, MalformedAt: []audit.Location{{File: "audit", Line: 1}, {File: "audit", Line: 4}, {File: "audit", Line: 5}}}
	if !reflect.DeepEqual(rep, want) {
		t.Errorf("FromAudit report = %+v, want %+v", rep, want)
	}
	if got, _ := inv.Who("m.test/a", ""); len(got) != 1 || got[0].Count != 2 {
		t.Errorf("Who = %+v, want one fetch counted twice", got)
	}
}

func TestRebuildKeepsOldStoreOnError(t *testing.T) {
	dir := t.TempDir()
	inv := open(t, Options{Dir: dir, FlushInterval: -1})
	inv.Add(fetch(1, alice, "m.test/a", "v1.0.0", "zip", 200))
	inv.Close()
	if _, _, err := Rebuild(Options{Dir: dir}, filepath.Join(dir, "no-such-audit-file")); err == nil {
		t.Fatal("Rebuild of a missing file: no error")
	}
	re := open(t, Options{Dir: dir})
	if got, _ := re.Who("m.test/a", ""); len(got) != 1 {
		t.Errorf("after a failed Rebuild, Who = %+v, want the old store's fetch", got)
	}
}

func TestReadOnlyMissingDir(t *testing.T) {
	_, err := Open(Options{Dir: filepath.Join(t.TempDir(), "none"), ReadOnly: true})
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Open(ReadOnly) of a missing dir: %v, want fs.ErrNotExist", err)
	}
}

func TestOptions(t *testing.T) {
	for _, o := range []Options{{MaxKeys: -1}, {CompactBytes: -1}} {
		if _, err := Open(o); err == nil {
			t.Errorf("Open(%+v): no error", o)
		}
	}
}

func TestKindNames(t *testing.T) {
	tests := []struct {
		kinds []string
		want  []string
	}{
		{nil, nil},
		{[]string{"zip", "info"}, []string{"info", "zip"}},
		{[]string{"sumdb-tile", "list", "what"}, []string{"list", "sumdb-tile", "other"}},
		{[]string{"list", "info", "mod", "zip", "latest", "sumdb-supported", "sumdb-latest", "sumdb-lookup", "sumdb-tile"}, []string{"list", "info", "mod", "zip", "latest", "sumdb-supported", "sumdb-latest", "sumdb-lookup", "sumdb-tile"}},
	}
	for _, tt := range tests {
		var s kindSet
		for _, k := range tt.kinds {
			s |= kindOf(k)
		}
		if got := s.names(); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("kinds %q: names() = %q, want %q", tt.kinds, got, tt.want)
		}
	}
}

// TestConcurrent adds, flushes, compacts and queries at once (run it with
// -race), then checks that the store holds what memory held.
func TestConcurrent(t *testing.T) {
	dir := t.TempDir()
	inv := open(t, Options{Dir: dir, CompactBytes: 4096, FlushInterval: time.Millisecond})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-t.Context().Done():
				return
			default:
			}
			if i > 200 {
				return
			}
			inv.Who("m.test/m1", "<v1.3.0")
			inv.Top(5)
			inv.Stats()
		}
	}()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 2000 {
				c := []audit.Client{alice, ci, subj, anon}[(g+i)%4]
				inv.Add(fetch(i, c, fmt.Sprintf("m.test/m%d", i%7), fmt.Sprintf("v1.%d.0", i%5), "zip", 200))
			}
		})
	}
	wg.Wait()
	<-done
	want := query(t, inv)
	if err := inv.Close(); err != nil {
		t.Fatal(err)
	}
	if st := inv.Stats(); st.Events != 8000 || st.Compactions == 0 {
		t.Errorf("Stats = %+v, want 8000 events and compactions", st)
	}
	re := open(t, Options{Dir: dir})
	for _, mod := range []string{"m.test/m1", "m.test/m6"} {
		a, _ := inv.Who(mod, "")
		b, _ := re.Who(mod, "")
		if !reflect.DeepEqual(a, b) {
			t.Errorf("Who(%s) after reopening = %+v, want %+v", mod, b, a)
		}
	}
	compare(t, "reopened", query(t, re), want)
}

// TestSearchMatchesScan: Search finds exactly the modules whose path
// contains the text, case-insensitively, as a scan of every path would,
// whatever the paths hold (a newline from a hand-made audit file too).
func TestSearchMatchesScan(t *testing.T) {
	inv := open(t, Options{})
	var mods []string
	for i := range 300 {
		mods = append(mods, fmt.Sprintf("Example.com/Org%d/mod%d", i%7, i))
	}
	mods = append(mods, "odd.example/line\nbreak", "odd.example/MiXeD")
	for i, m := range mods {
		inv.Add(fetch(i, alice, m, "v1.0.0", "zip", 200))
		if i%3 == 0 {
			inv.Add(fetch(i, ci, m, "v1.0.0", "zip", 200))
		}
	}
	for _, q := range []string{"org3", "ORG3/MOD1", "mod29", "example", "odd.example/m", "line", "break", "line\nbreak", "e\nb", "zzz", "/"} {
		got := inv.Search(q, 1000)
		var want []string
		for _, m := range mods {
			if strings.Contains(strings.ToLower(m), strings.ToLower(q)) && !strings.Contains(q, "\n") {
				want = append(want, m)
			}
		}
		var names []string
		for _, mc := range got {
			names = append(names, mc.Module)
		}
		slices.Sort(names)
		slices.Sort(want)
		if !slices.Equal(names, want) {
			t.Errorf("Search(%q) = %d modules %q, want %d %q", q, len(names), names, len(want), want)
		}
		// The first 7, in order: the most fetched, ties by path.
		all := inv.Search(q, 1000)
		slices.SortFunc(all, func(a, b ModuleCount) int {
			return cmp.Or(cmp.Compare(b.Count, a.Count), strings.Compare(a.Module, b.Module))
		})
		if top := inv.Search(q, 7); !reflect.DeepEqual(top, all[:min(7, len(all))]) && len(all) > 0 {
			t.Errorf("Search(%q, 7) = %v, want %v", q, top, all[:min(7, len(all))])
		}
	}
}
