package vulndb

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/semver"
)

var mod0 = time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC)

func TestParseEntry(t *testing.T) {
	ev := func(kv ...string) [][2]string {
		var out [][2]string
		for i := 0; i < len(kv); i += 2 {
			out = append(out, [2]string{kv[i], kv[i+1]})
		}
		return out
	}
	tests := []struct {
		name   string
		id     string
		data   string
		spans  []span // of the first affected, when no error
		errHas string
	}{
		{name: "fixed", data: string(osvJSON("GO-2026-0001", "example.com/m", mod0, ev("introduced", "0", "fixed", "1.0.1")...)),
			spans: []span{{fixed: "v1.0.1"}}},
		{name: "no fix", data: string(osvJSON("GO-2026-0001", "example.com/m", mod0, ev("introduced", "1.0.0")...)),
			spans: []span{{introduced: "v1.0.0"}}},
		{name: "last_affected", data: string(osvJSON("GO-2026-0001", "example.com/m", mod0, ev("introduced", "1.0.0", "last_affected", "1.0.0")...)),
			spans: []span{{introduced: "v1.0.0", lastAffected: "v1.0.0"}}},
		{name: "two spans", data: string(osvJSON("GO-2026-0001", "example.com/m", mod0, ev("introduced", "0", "fixed", "1.0.1", "introduced", "1.1.0", "fixed", "1.1.2")...)),
			spans: []span{{fixed: "v1.0.1"}, {introduced: "v1.1.0", fixed: "v1.1.2"}}},
		{name: "+incompatible", data: string(osvJSON("GO-2026-0001", "example.com/m", mod0, ev("introduced", "2.0.0+incompatible", "fixed", "2.0.1+incompatible")...)),
			spans: []span{{introduced: "v2.0.0+incompatible", fixed: "v2.0.1+incompatible"}}},
		{name: "stdlib", data: string(osvJSON("GO-2026-0001", "stdlib", mod0, ev("introduced", "0", "fixed", "1.22.0-rc.2")...)),
			spans: []span{{fixed: "v1.22.0-rc.2"}}},
		{name: "wrong id", id: "GO-2026-0002", data: string(osvJSON("GO-2026-0001", "example.com/m", mod0, ev("introduced", "0")...)), errHas: `the entry's id is "GO-2026-0001"`},
		{name: "v in version", data: string(osvJSON("GO-2026-0001", "example.com/m", mod0, ev("introduced", "0", "fixed", "v1.0.1")...)), errHas: `bad version "v1.0.1"`},
		{name: "not semver", data: string(osvJSON("GO-2026-0001", "example.com/m", mod0, ev("introduced", "0", "fixed", "1.0")...)), errHas: `bad version "1.0"`},
		{name: "fix before introduction", data: string(osvJSON("GO-2026-0001", "example.com/m", mod0, ev("introduced", "1.2.0", "fixed", "1.1.0")...)), errHas: "is not after introduced"},
		{name: "fix equals introduction", data: string(osvJSON("GO-2026-0001", "example.com/m", mod0, ev("introduced", "1.2.0", "fixed", "1.2.0")...)), errHas: "is not after introduced"},
		{name: "fix first", data: string(osvJSON("GO-2026-0001", "example.com/m", mod0, ev("fixed", "1.2.0")...)), errHas: "without an introduction"},
		{name: "introduced twice", data: string(osvJSON("GO-2026-0001", "example.com/m", mod0, ev("introduced", "0", "introduced", "1.0.0")...)), errHas: "introduced twice"},
		{name: "descending spans", data: string(osvJSON("GO-2026-0001", "example.com/m", mod0, ev("introduced", "1.1.0", "fixed", "1.2.0", "introduced", "1.0.0", "fixed", "1.0.5")...)), errHas: "is not after"},
		{name: "introduced 0 later", data: string(osvJSON("GO-2026-0001", "example.com/m", mod0, ev("introduced", "1.1.0", "fixed", "1.2.0", "introduced", "0")...)), errHas: "introduced 0 after"},
		{name: "no events", data: string(osvJSON("GO-2026-0001", "example.com/m", mod0)), errHas: "no events"},
		{name: "bad module path", data: string(osvJSON("GO-2026-0001", "example.com/m/../x", mod0, ev("introduced", "0")...)), errHas: "affected[0]"},
		{name: "path without a dot", data: string(osvJSON("GO-2026-0001", "localhost/x", mod0, ev("introduced", "0")...)), errHas: "missing dot"},
		{name: "not Go", data: strings.Replace(string(osvJSON("GO-2026-0001", "example.com/m", mod0, ev("introduced", "0")...)), `"ecosystem":"Go"`, `"ecosystem":"npm"`, 1), errHas: `ecosystem "npm"`},
		{name: "not SEMVER", data: strings.Replace(string(osvJSON("GO-2026-0001", "example.com/m", mod0, ev("introduced", "0")...)), `"SEMVER"`, `"GIT"`, 1), errHas: `type "GIT"`},
		{name: "two kinds in one event", data: strings.Replace(string(osvJSON("GO-2026-0001", "example.com/m", mod0, ev("introduced", "0")...)), `{"introduced":"0"}`, `{"introduced":"0","fixed":"1.0.0"}`, 1), errHas: "exactly one"},
		{name: "no modified", data: `{"id":"GO-2026-0001","affected":[]}`, errHas: "no modified"},
		{name: "affects nothing", data: `{"id":"GO-2026-0001","modified":"2026-10-01T00:00:00Z"}`, errHas: "affects nothing"},
		{name: "withdrawn affects nothing", data: `{"id":"GO-2026-0001","modified":"2026-10-01T00:00:00Z","withdrawn":"2026-10-01T00:00:00Z"}`},
		{name: "no ranges: every version", data: `{"id":"GO-2026-0001","modified":"2026-10-01T00:00:00Z","affected":[{"package":{"name":"example.com/m","ecosystem":"Go"}}]}`},
		{name: "trailing data", data: `{"id":"GO-2026-0001","modified":"2026-10-01T00:00:00Z","withdrawn":"2026-10-01T00:00:00Z"} {}`, errHas: "after the JSON value"},
		{name: "not JSON", data: `<html>`, errHas: "invalid character"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := tt.id
			if id == "" {
				id = "GO-2026-0001"
			}
			e, err := parseEntry(id, []byte(tt.data))
			if tt.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errHas) {
					t.Fatalf("parseEntry(%s) = %v, want an error containing %q", tt.name, err, tt.errHas)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseEntry(%s) = %v", tt.name, err)
			}
			if tt.spans != nil {
				got := e.affects[0].spans
				if len(got) != len(tt.spans) {
					t.Fatalf("parseEntry(%s) spans = %+v, want %+v", tt.name, got, tt.spans)
				}
				for i := range got {
					if got[i] != tt.spans[i] && !(len(tt.spans) == 1 && tt.spans[0] == span{} && got[i] == span{}) {
						t.Errorf("parseEntry(%s) spans[%d] = %+v, want %+v", tt.name, i, got[i], tt.spans[i])
					}
				}
			}
		})
	}
}

func TestCleanText(t *testing.T) {
	tests := []struct{ in, want string }{
		{"plain", "plain"},
		{"  two\n\nlines\t ", "two lines"},
		{"bell\x07\x1b[31mred", "bell [31mred"},
		{"bad \xff utf8", "bad \uFFFD utf8"},
	}
	for _, tt := range tests {
		if got := cleanText(tt.in, 100); got != tt.want {
			t.Errorf("cleanText(%q, 100) = %q, want %q", tt.in, got, tt.want)
		}
	}
	if got, want := cleanText(strings.Repeat("é", 10), 9), strings.Repeat("é", 4); got != want {
		t.Errorf("cleanText(10 × é, 9) = %q, want %q", got, want)
	}
}

func seedEntries(f *testing.F) {
	ents, err := os.ReadDir("testdata/db/ID")
	if err != nil {
		f.Fatal(err)
	}
	for _, de := range ents {
		data, err := os.ReadFile(filepath.Join("testdata/db/ID", de.Name()))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(strings.TrimSuffix(de.Name(), ".json"), data)
	}
	f.Add("GO-2026-0001", osvJSON("GO-2026-0001", "example.com/m", mod0, [2]string{"introduced", "1.0.0"}, [2]string{"last_affected", "1.0.3"}))
	f.Add("GO-2026-0001", []byte(`{"id":"GO-2026-0001","modified":"2026-10-01T00:00:00Z","affected":[{"package":{"name":"example.com/m","ecosystem":"Go"}}]}`))
}

func FuzzParseEntry(f *testing.F) {
	seedEntries(f)
	probes := []string{"v0.0.0", "v1.0.0", "v1.0.1-0.20260101000000-abcdefabcdef", "v1.0.1", "v2.0.0+incompatible", "v1.22.0-rc.1", "v99.0.0"}
	f.Fuzz(func(t *testing.T, id string, data []byte) {
		e, err := parseEntry(id, data)
		if err != nil {
			return
		}
		if e.id != id || e.modified.IsZero() {
			t.Fatalf("parseEntry(%q) = id %q modified %v", id, e.id, e.modified)
		}
		for _, a := range e.affects {
			if checkPath(a.path) != nil {
				t.Fatalf("parseEntry(%q): bad path %q accepted", id, a.path)
			}
			for _, s := range a.spans {
				for _, v := range []string{s.introduced, s.fixed, s.lastAffected} {
					if v != "" && !semver.IsValid(v) {
						t.Fatalf("parseEntry(%q): bad version %q accepted", id, v)
					}
				}
				if s.introduced != "" && s.fixed != "" && semver.Compare(s.introduced, s.fixed) >= 0 {
					t.Fatalf("parseEntry(%q): span %+v out of order", id, s)
				}
			}
		}
		db := newDB(e.modified, e.modified, map[string]*entry{id: e}, 0)
		for _, a := range e.affects {
			for _, v := range probes {
				for _, vu := range db.Vulns(a.path, v) {
					if vu.Fixed != "" && semver.Compare(vu.Fixed, v) <= 0 {
						t.Fatalf("Vulns(%s, %s): fixed %s is not after the version", a.path, v, vu.Fixed)
					}
				}
			}
		}
	})
}

func FuzzParseModulesIndex(f *testing.F) {
	data, err := os.ReadFile("testdata/db/index/modules.json")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(data)
	f.Add([]byte(`[{"path":"stdlib","vulns":[{"id":"GO-2026-0001","modified":"2026-10-01T00:00:00Z","fixed":"1.2.3"}]}]`))
	f.Add([]byte(`[{"path":"x","vulns":[{"id":"../x","modified":"2026-10-01T00:00:00Z"}]}]`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		ids, err := parseModulesIndex(data)
		if err != nil {
			return
		}
		for id, m := range ids {
			if !idPattern.MatchString(id) || m.IsZero() {
				t.Fatalf("parseModulesIndex: accepted %q modified %v", id, m)
			}
		}
	})
}

func FuzzParseDBIndex(f *testing.F) {
	f.Add([]byte(`{"modified":"2026-11-01T00:00:00Z"}`))
	f.Add([]byte(`{"modified":"0001-01-01T00:00:00Z"}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := parseDBIndex(data)
		if err == nil && m.IsZero() {
			t.Fatalf("parseDBIndex(%q) = zero time, no error", data)
		}
	})
}
