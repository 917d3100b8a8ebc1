package vulndb

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRefreshConditional checks that a refresh reads entries only when
// index/db.json's modified time changed, and then only the new ones.
func TestRefreshConditional(t *testing.T) {
	up := newUpstream(t, copyDB(t))
	clk := newClock(t0)
	state := t.TempDir()
	s := openStore(t, Options{Config: Config{URL: up.srv.URL}, Dir: state}, clk)
	if s.Current() != nil || !s.Stale() {
		t.Fatalf("new Store: Current() = %v, Stale() = %v, want nil, true", s.Current(), s.Stale())
	}
	counts := func() [3]int {
		return [3]int{up.count("/index/db.json"), up.count("/index/modules.json"), up.count("/ID/")}
	}
	steps := []struct {
		name   string
		change func()
		want   [3]int // db.json, modules.json, entries: cumulative
		len    int
	}{
		{"first", func() {}, [3]int{1, 1, 8}, 8},
		{"unchanged", func() {}, [3]int{2, 1, 8}, 8},
		{"new entry", func() {
			m := dbModified.Add(time.Hour)
			publish(t, up.dir, "GO-2026-0009", "example.com/late", m, osvJSON("GO-2026-0009", "example.com/late", m, [2]string{"introduced", "0"}, [2]string{"fixed", "0.2.0"}))
		}, [3]int{3, 2, 9}, 9},
		{"unchanged again", func() {}, [3]int{4, 2, 9}, 9},
	}
	for _, st := range steps {
		st.change()
		if err := s.Refresh(t.Context()); err != nil {
			t.Fatalf("%s: Refresh: %v", st.name, err)
		}
		if got := counts(); got != st.want {
			t.Errorf("%s: requests (db.json, modules.json, entries) = %v, want %v", st.name, got, st.want)
		}
		if got := s.Current().Len(); got != st.len {
			t.Errorf("%s: Current().Len() = %d, want %d", st.name, got, st.len)
		}
	}
	if vs := s.Current().Vulns("example.com/late", "v0.1.0"); len(vs) != 1 || vs[0].ID != "GO-2026-0009" {
		t.Errorf("Vulns(example.com/late, v0.1.0) = %+v, want GO-2026-0009", vs)
	}
	// One snapshot held, one before it; no temporary directories.
	des, _ := os.ReadDir(state)
	var names []string
	for _, de := range des {
		names = append(names, de.Name())
	}
	if len(names) != 3 {
		t.Errorf("state directory holds %v, want state.json and two snapshots", names)
	}
}

// TestRefreshRejectsWhole checks that an update with one bad file is
// refused whole, the data held kept in memory and on disk.
func TestRefreshRejectsWhole(t *testing.T) {
	later := dbModified.Add(time.Hour)
	good := func(dir string) {
		publish(t, dir, "GO-2026-0009", "example.com/late", later, osvJSON("GO-2026-0009", "example.com/late", later, [2]string{"introduced", "0"}))
	}
	tests := []struct {
		name   string
		change func(dir string)
		errHas string
	}{
		{"bad version", func(dir string) {
			publish(t, dir, "GO-2026-0009", "example.com/late", later, osvJSON("GO-2026-0009", "example.com/late", later, [2]string{"introduced", "0"}, [2]string{"fixed", "1.x"}))
		}, `bad version "1.x"`},
		{"events out of order", func(dir string) {
			publish(t, dir, "GO-2026-0009", "example.com/late", later, osvJSON("GO-2026-0009", "example.com/late", later, [2]string{"introduced", "2.0.0"}, [2]string{"fixed", "1.0.0"}))
		}, "is not after"},
		{"bad module path", func(dir string) {
			publish(t, dir, "GO-2026-0009", "example.com/late", later, osvJSON("GO-2026-0009", "Example.com/../late", later, [2]string{"introduced", "0"}))
		}, "malformed module path"},
		{"missing entry", func(dir string) {
			good(dir)
			os.Remove(filepath.Join(dir, "ID", "GO-2026-0009.json"))
		}, "404"},
		{"truncated entry", func(dir string) {
			good(dir)
			os.WriteFile(filepath.Join(dir, "ID", "GO-2026-0009.json"), []byte(`{"id":"GO-2026-0009",`), 0o644)
		}, "unexpected EOF"},
		{"changed entry with a bad id", func(dir string) {
			good(dir)
			os.WriteFile(filepath.Join(dir, "ID", "GO-2026-0009.json"), osvJSON("GO-2026-0001", "example.com/late", later, [2]string{"introduced", "0"}), 0o644)
		}, "the entry's id"},
		{"garbled modules index", func(dir string) {
			setModified(t, dir, later)
			os.WriteFile(filepath.Join(dir, "index", "modules.json"), []byte(`[{"path":`), 0o644)
		}, "index/modules.json"},
		{"rollback", func(dir string) {
			setModified(t, dir, dbModified.Add(-time.Hour))
		}, "went backwards"},
		{"modified in the future", func(dir string) {
			setModified(t, dir, t0.Add(48*time.Hour))
		}, "in the future"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := newUpstream(t, copyDB(t))
			clk := newClock(t0)
			state := t.TempDir()
			s := openStore(t, Options{Config: Config{URL: up.srv.URL}, Dir: state}, clk)
			if err := s.Refresh(t.Context()); err != nil {
				t.Fatal(err)
			}
			before := s.Current()
			tt.change(up.dir)
			err := s.Refresh(t.Context())
			if err == nil || !strings.Contains(err.Error(), tt.errHas) {
				t.Fatalf("Refresh = %v, want an error containing %q", err, tt.errHas)
			}
			if s.Current() != before {
				t.Errorf("after a refused update, Current() changed")
			}
			// On disk too: a restart without network holds the old data.
			r := openStore(t, Options{Config: Config{URL: up.srv.URL}, Dir: state, Get: noNetwork}, clk)
			if db := r.Current(); db == nil || db.Len() != 8 || !db.Modified().Equal(dbModified) {
				t.Fatalf("after a restart, Current() = %v, want the 8 entries modified %v", db, dbModified)
			}
			if des, _ := os.ReadDir(state); len(des) != 2 {
				t.Errorf("state directory holds %d names, want state.json and one snapshot", len(des))
			}
		})
	}
}

// TestRestart checks that a Store opened again holds the last good copy,
// with its age, and reads no network until asked to.
func TestRestart(t *testing.T) {
	up := newUpstream(t, copyDB(t))
	clk := newClock(t0)
	state := t.TempDir()
	s := openStore(t, Options{Config: Config{URL: up.srv.URL}, Dir: state}, clk)
	if err := s.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	clk.Advance(2 * time.Hour)
	if err := s.Refresh(t.Context()); err != nil { // unchanged: a check
		t.Fatal(err)
	}
	clk.Advance(3 * time.Hour)
	r := openStore(t, Options{Config: Config{URL: up.srv.URL}, Dir: state, Get: noNetwork}, clk)
	db := r.Current()
	if db == nil {
		t.Fatal("after a restart, Current() = nil, want the copy held")
	}
	if vs := db.Vulns("example.com/vuln", "v1.0.0"); len(vs) != 1 {
		t.Errorf("after a restart, Vulns(example.com/vuln, v1.0.0) = %v, want GO-2026-0001", vs)
	}
	if got := r.Age(); got != 3*time.Hour {
		t.Errorf("after a restart, Age() = %v, want 3h (since the last check)", got)
	}
	if !db.Fetched().Equal(t0) {
		t.Errorf("after a restart, Fetched() = %v, want %v", db.Fetched(), t0)
	}
	if err := r.Refresh(t.Context()); err == nil {
		t.Errorf("Refresh without network = nil, want an error")
	}
	if r.Current() != db {
		t.Errorf("a failed refresh changed Current()")
	}

	// Another URL's copy is not used.
	o := openStore(t, Options{Config: Config{URL: "https://vulndb.example"}, Dir: state, Get: noNetwork}, clk)
	if o.Current() != nil {
		t.Errorf("Open with another URL holds %v, want nothing", o.Current())
	}

	// A corrupt copy is not used, and does not stop Open.
	os.WriteFile(filepath.Join(state, stateFile), []byte("{"), 0o644)
	c := openStore(t, Options{Config: Config{URL: up.srv.URL}, Dir: state, Get: noNetwork}, clk)
	if c.Current() != nil {
		t.Errorf("Open with a corrupt state file holds %v, want nothing", c.Current())
	}
}

// TestAge checks the age of an http source (since the last check) and of
// a file:// one (since the database's modified time).
func TestAge(t *testing.T) {
	up := newUpstream(t, copyDB(t))
	clk := newClock(t0)
	s := openStore(t, Options{Config: Config{URL: up.srv.URL}}, clk)
	if err := s.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := s.Age(); got != 0 {
		t.Errorf("http: Age() after a refresh = %v, want 0", got)
	}
	clk.Advance(73 * time.Hour)
	if got := s.Age(); got != 73*time.Hour || !s.Stale() {
		t.Errorf("http: 73h later, Age() = %v, Stale() = %v, want 73h, true", got, s.Stale())
	}
	entries := up.count("/ID/")
	if err := s.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	if s.Age() != 0 || s.Stale() || up.count("/ID/") != entries {
		t.Errorf("http: after an unchanged refresh, Age() = %v, Stale() = %v, entries fetched %d, want 0, false, none", s.Age(), s.Stale(), up.count("/ID/")-entries)
	}

	clk.Set(t0)
	f := fileStore(t, Config{}, clk)
	if got := f.Age(); got != 24*time.Hour {
		t.Errorf("file: Age() = %v, want 24h (since modified)", got)
	}
	clk.Advance(49 * time.Hour)
	if err := f.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := f.Age(); got != 73*time.Hour || !f.Stale() {
		t.Errorf("file: after a refresh 49h later, Age() = %v, Stale() = %v, want 73h, true", got, f.Stale())
	}
}

func TestRun(t *testing.T) {
	up := newUpstream(t, copyDB(t))
	s := openStore(t, Options{Config: Config{URL: up.srv.URL}}, newClock(t0))
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		s.Run(ctx)
		close(done)
	}()
	deadline := time.Now().Add(5 * time.Second)
	for s.Current() == nil && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	if s.Current() == nil {
		t.Errorf("Run did not load the database")
	}
}

func TestOpenErrors(t *testing.T) {
	tests := []struct {
		cfg  Config
		want string
	}{
		{Config{}, "vulndb.url: missing"},
		{Config{URL: "http://vulndb.example"}, "vulndb.url: "},
		{Config{URL: "https://x.example", OnStale: "maybe"}, "vulndb.on_stale: "},
	}
	for _, tt := range tests {
		if _, err := Open(t.Context(), Options{Config: tt.cfg}); err == nil || !strings.HasPrefix(err.Error(), tt.want) {
			t.Errorf("Open(%+v) = %v, want an error starting %q", tt.cfg, err, tt.want)
		}
	}
}
