package inventory

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// FuzzReadAudit feeds arbitrary audit files to ReadAudit: it must count
// every line and never fail on content.
func FuzzReadAudit(f *testing.F) {
	b, err := os.ReadFile(writeAudit(f, events()[:20]))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte("not json\n\n{}\n"))
	f.Add([]byte(`{"@timestamp":"2026-01-01T00:00:00Z","event":{"action":"request"},"http":{"response":{"status_code":200}},"modgate":{"module":"m","version":"v1.0.0"}}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		inv, rep, err := FromAudit(bytes.NewReader(in))
		if err != nil {
			t.Fatal(err)
		}
		if rep.Fetches+rep.Ignored+rep.Refused+rep.Malformed > rep.Lines {
			t.Errorf("report %+v counts more events than lines", rep)
		}
		if st := inv.Stats(); st.Events != uint64(rep.Fetches) {
			t.Errorf("Stats.Events = %d, report %d fetches", st.Events, rep.Fetches)
		}
	})
}

// FuzzJournal opens stores whose journal holds arbitrary bytes after its
// header: a damaged journal is cut back, never an error or a panic, and
// what was replayed survives a reopening.
func FuzzJournal(f *testing.F) {
	var seed []byte
	for i, k := range []key{{"m.test/a", "v1.0.0", "alice"}, {"m.test/b", "v2.0.0+incompatible", ""}} {
		seed = appendRecord(seed, k, stat{first: int64(i), last: int64(i) + 5, count: 3, kinds: 1<<3 | kindOther})
	}
	f.Add(seed)
	f.Add(seed[:len(seed)-1])
	f.Add(append(bytes.Clone(seed), 0, 0, 0, 0, 0, 0, 0, 0))
	f.Fuzz(func(t *testing.T, journal []byte) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, journalName), append(header(journalMagic, 0), journal...), 0o640)
		inv, err := Open(Options{Dir: dir, FlushInterval: -1, Logger: testLogger(io.Discard)})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		want := inv.Stats().Keys
		top := inv.Top(100)
		inv.Close()
		re, err := Open(Options{Dir: dir, FlushInterval: -1, Logger: testLogger(io.Discard)})
		if err != nil {
			t.Fatalf("reopen: %v", err)
		}
		defer re.Close()
		if got := re.Stats().Keys; got != want {
			t.Errorf("reopened: %d keys, want %d", got, want)
		}
		if got := re.Top(100); len(got) != len(top) {
			t.Errorf("reopened: Top = %+v, want %+v", got, top)
		}
	})
}

// FuzzRecord checks that a record that parses encodes back to itself.
func FuzzRecord(f *testing.F) {
	rec := appendRecord(nil, key{"m.test/a", "v1.0.0", "alice"}, stat{first: -5, last: 7, count: 9, kinds: 6})
	f.Add(rec[8:])
	f.Fuzz(func(t *testing.T, p []byte) {
		k, st, err := parseKey(p)
		if err != nil {
			return
		}
		if got := appendRecord(nil, k, st)[8:]; !bytes.Equal(got, p) {
			// Varints have one shortest form; longer forms parse too.
			k2, st2, err := parseKey(got)
			if err != nil || k2 != k || st2 != st {
				t.Errorf("parseKey(appendRecord(parseKey(%x))) = %v, %+v, %v; want %v, %+v", p, k2, st2, err, k, st)
			}
		}
	})
}
