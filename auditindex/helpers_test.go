package auditindex

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/modgate/modgate/audit"
)

// t0 is the time of the first generated event.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// genEvent returns the i-th event of a generated log: a mix of actions,
// decisions, rules, kinds, statuses, verifications, and identities by
// user name, certificate SAN, subject and source address.
func genEvent(i int) *audit.Event {
	decisions := []string{"serve", "serve", "forward", "deny", "reject", ""}
	kinds := []string{"info", "mod", "zip", "list", "sumdb-lookup"}
	d := decisions[i%len(decisions)]
	r := audit.Request{
		Start:    t0.Add(time.Duration(i) * time.Second),
		Duration: time.Millisecond,
		ID:       fmt.Sprintf("req-%d", i),
		Method:   "GET",
		Target:   fmt.Sprintf("/example.com/Mod%d/@v/v1.0.%d.zip", i%7, i%3),
		Status:   200,
		Modgate: audit.ModgateGroup{
			Module:   fmt.Sprintf("example.com/Mod%d", i%7),
			Version:  fmt.Sprintf("v1.0.%d", i%3),
			Kind:     kinds[i%len(kinds)],
			Decision: d,
		},
	}
	switch d {
	case "deny":
		r.Status, r.Modgate.Rule, r.Reason = 403, fmt.Sprintf("rule-%d", i%2), "denied \"by\" <policy>"
	case "reject":
		r.Status, r.Modgate.Rule = 400, "grammar"
	case "":
		r.Status = 502
	}
	if i%4 == 0 {
		r.Modgate.Verification = []string{"verified", "ledger", "mismatch"}[i%3]
	}
	switch i % 5 {
	case 0:
		r.Client.User = fmt.Sprintf("Alice%d", i%3)
	case 1:
		r.Client.URISANs = []string{fmt.Sprintf("spiffe://example.org/ns/ci/sa/builder-%d", i%4), "spiffe://other"}
		r.Client.Subject = "CN=builder"
	case 2:
		r.Client.Subject = fmt.Sprintf("CN=host-%d,O=Example", i%2)
	}
	r.Client.Addr = netipAddr(i)
	e := audit.NewRequest(r)
	if i%11 == 10 {
		e = &audit.Event{Timestamp: r.Start, Event: audit.EventFields{Action: "config-reload", Outcome: audit.OutcomeSuccess}}
	}
	return e
}

// writeEvents records events from … from+n-1 to the log at path and
// closes the writer.
func writeEvents(t testing.TB, path string, opts audit.FileOptions, from, n int) {
	t.Helper()
	w, err := audit.OpenFile(path, opts)
	if err != nil {
		t.Fatalf("OpenFile: %v", err)
	}
	for i := from; i < from+n; i++ {
		if err := w.Record(genEvent(i)); err != nil {
			t.Fatalf("Record(%d): %v", i, err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// logFiles lists the files of the log at path, oldest first.
func logFiles(t testing.TB, path string) []string {
	t.Helper()
	var files []string
	for i := 1; ; i++ {
		name := fmt.Sprintf("%s.%d", path, i)
		if _, err := os.Stat(name); err != nil {
			break
		}
		files = append([]string{name}, files...)
	}
	if _, err := os.Stat(path); err == nil {
		files = append(files, path)
	}
	return files
}

// fileLines returns the lines of a file, without newlines.
func fileLines(t testing.TB, name string) [][]byte {
	t.Helper()
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	var lines [][]byte
	for l := range bytes.Lines(data) {
		lines = append(lines, bytes.TrimSuffix(l, []byte("\n")))
	}
	return lines
}

// quiet is a logger that drops everything.
var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// openIndex opens an index of path, closed at the end of the test, and
// catches it up.
func openIndex(t testing.TB, opts Options) *Index {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = quiet
	}
	ix, err := Open(opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { ix.Close() })
	refresh(t, ix)
	return ix
}

func refresh(t testing.TB, ix *Index) {
	t.Helper()
	if err := ix.Refresh(context.Background()); err != nil {
		t.Fatalf("Refresh: %v", err)
	}
}

func query(t testing.TB, ix *Index, q Query) Page {
	t.Helper()
	p, err := ix.Query(context.Background(), q)
	if err != nil {
		t.Fatalf("Query(%+v): %v", q, err)
	}
	return p
}

// pageAll pages through q to the end, and returns the seqs shown and the
// first page.
func pageAll(t testing.TB, ix *Index, q Query) (seqs []uint64, first Page) {
	t.Helper()
	for n := 0; ; n++ {
		p := query(t, ix, q)
		if n == 0 {
			first = p
		}
		for _, e := range p.Events {
			seqs = append(seqs, e.Seq)
		}
		if p.Next == 0 {
			return seqs, first
		}
		if p.Next == q.Before && q.Before != 0 {
			t.Fatalf("Query(Before %d).Next = %d: paging does not advance", q.Before, p.Next)
		}
		if n > 100000 {
			t.Fatal("paging does not end")
		}
		q.Before = p.Next
	}
}

// openFDs counts the process's open file descriptors.
func openFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count open files: %v", err)
	}
	return len(ents)
}

// copyLog copies the files of the log at path to dir, with the same base
// names, and returns the copy's path.
func copyLog(t testing.TB, path, dir string) string {
	t.Helper()
	for _, f := range logFiles(t, path) {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(f)), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dir, filepath.Base(path))
}

// reversed returns the seqs hi … lo.
func reversed(lo, hi uint64) []uint64 {
	var s []uint64
	for q := lo; q <= hi; q++ {
		s = append(s, q)
	}
	slices.Reverse(s)
	return s
}

// netipAddr is the client address of the i-th event.
func netipAddr(i int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i / 256 % 4), byte(i % 256)}), uint16(40000+i%1000))
}
