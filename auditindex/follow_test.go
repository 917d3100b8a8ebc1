package auditindex

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/modgate/modgate/audit"
)

// seqsIn returns the seqs of the lines of the log's files, newest first.
func seqsIn(t testing.TB, path string) []uint64 {
	t.Helper()
	var seqs []uint64
	for _, f := range logFiles(t, path) {
		for _, l := range fileLines(t, f) {
			var e audit.Event
			if err := json.Unmarshal(l, &e); err != nil || e.Chain == nil {
				t.Fatalf("%s: line %q: no chain (%v)", f, l, err)
			}
			seqs = append(seqs, e.Chain.Seq)
		}
	}
	slices.Reverse(seqs)
	return seqs
}

// checkHolds checks that ix holds exactly the events of the log at path,
// written events in all, the chain intact.
func checkHolds(t *testing.T, ix *Index, path string, written int) {
	t.Helper()
	want := seqsIn(t, path)
	got, first := pageAll(t, ix, Query{Limit: 64})
	if !slices.Equal(got, want) {
		t.Fatalf("paged seqs = %v\nwant the files' %v", got, want)
	}
	st := ix.Stats()
	if st.Events != len(want) || st.Dropped != written-len(want) || st.Files != len(logFiles(t, path)) ||
		st.NewestSeq != uint64(written) || st.OldestSeq != want[len(want)-1] || st.Malformed != 0 || st.Building {
		t.Errorf("Stats = %+v; want %d events from seq %d to %d, %d dropped, %d files", st, len(want), want[len(want)-1], written, written-len(want), len(logFiles(t, path)))
	}
	if c := first.Chain; c.Problem != nil || c.VerifiedFrom != st.OldestSeq || c.VerifiedThrough != uint64(written) || !c.Complete {
		t.Errorf("Chain = %+v (problem %v), want verified from %d through %d", c, c.Problem, st.OldestSeq, written)
	}
}

func TestFollowAppends(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	ix := openIndex(t, Options{Path: path, Interval: time.Hour})
	if st := ix.Stats(); st.Events != 0 || st.Files != 0 || st.Building {
		t.Errorf("Stats of a log not yet written = %+v, want empty, built", st)
	}
	writeEvents(t, path, audit.FileOptions{}, 0, 10)
	// Query catches up by itself.
	if p := query(t, ix, Query{}); p.Matched != 10 || len(p.Events) != 10 || p.Events[0].Seq != 10 {
		t.Errorf("Query after 10 events: %d matched, %d shown; want 10", p.Matched, len(p.Events))
	}
	writeEvents(t, path, audit.FileOptions{}, 10, 5)
	refresh(t, ix)
	checkHolds(t, ix, path, 15)
}

func TestFollowRotation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	fds := openFDs(t)
	ix, err := Open(Options{Path: path, Interval: time.Hour, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	line := len(mustJSON(t, genEvent(3))) + 130
	w, err := audit.OpenFile(path, audit.FileOptions{MaxBytes: int64(4 * line), Keep: 2})
	if err != nil {
		t.Fatal(err)
	}
	written := 0
	for round := range 25 {
		for range 3 {
			if err := w.Record(genEvent(written)); err != nil {
				t.Fatal(err)
			}
			written++
		}
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		refresh(t, ix)
		checkHolds(t, ix, path, written)
		if round == 24 && ix.Stats().Dropped == 0 {
			t.Errorf("no events dropped: the log did not rotate past Keep")
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := ix.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if got := openFDs(t); got != fds {
		t.Errorf("open files: %d after Close, %d before Open", got, fds)
	}
}

func TestFollowRotationWhileWriting(t *testing.T) {
	// The writer rotates while queries and the follower catch up; the
	// index ends up holding what the files hold.
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	fds := openFDs(t)
	ix, err := Open(Options{Path: path, Interval: time.Millisecond, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	line := len(mustJSON(t, genEvent(3))) + 130
	const n = 1500
	var wg sync.WaitGroup
	wg.Go(func() {
		w, err := audit.OpenFile(path, audit.FileOptions{MaxBytes: int64(25 * line), Keep: 2})
		if err != nil {
			t.Error(err)
			return
		}
		for i := range n {
			if err := w.Record(genEvent(i)); err != nil {
				t.Error(err)
			}
			if i%50 == 0 {
				w.Flush()
				time.Sleep(time.Millisecond)
			}
		}
		if err := w.Close(); err != nil {
			t.Error(err)
		}
	})
	defer wg.Wait() // a Fatal below must not leave the writer running
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	queries := 0
	for loop := true; loop; queries++ {
		select {
		case <-done:
			loop = false
		default:
		}
		p := query(t, ix, Query{Limit: 100})
		for i := 1; i < len(p.Events); i++ {
			if p.Events[i].Seq >= p.Events[i-1].Seq {
				t.Fatalf("page not newest first: seq %d after %d", p.Events[i].Seq, p.Events[i-1].Seq)
			}
		}
		// Gaps are possible: rotation may delete a file before the
		// index opens it (checked at the end); more events than seqs
		// is not.
		if st := ix.Stats(); st.Events > 0 && uint64(st.Events) > st.NewestSeq-st.OldestSeq+1 {
			t.Fatalf("Stats = %+v: more events than seqs", st)
		}
	}
	refresh(t, ix)
	t.Logf("%d queries while writing; %+v", queries, ix.Stats())
	want := seqsIn(t, path)
	if got, _ := pageAll(t, ix, Query{Limit: 500}); !slices.Equal(got, want) {
		t.Errorf("paged seqs = %v\nwant the files' %v", got, want)
	}
	st := ix.Stats()
	if st.Events != len(want) || st.Files != len(logFiles(t, path)) || st.NewestSeq != n {
		t.Errorf("Stats = %+v, want %d events, %d files, newest seq %d", st, len(want), len(logFiles(t, path)), n)
	}
	// Files deleted before the index opened them are missing from the
	// chain it read; else it is intact.
	p := query(t, ix, Query{})
	if missed := n - st.Events - st.Dropped; missed == 0 && p.Chain.Problem != nil || missed > 0 && (p.Chain.Problem == nil || p.Chain.Problem.Kind != audit.KindMissing) {
		t.Errorf("%d events never read; Chain.Problem = %v", missed, p.Chain.Problem)
	}
	if err := ix.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if got := openFDs(t); got != fds {
		t.Errorf("open files: %d after Close, %d before Open", got, fds)
	}
}

func TestMaxEvents(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	writeEvents(t, path, audit.FileOptions{MaxBytes: 20 << 10, Keep: 100}, 0, 250)
	ix := openIndex(t, Options{Path: path, MaxEvents: 100})
	check := func(oldest, newest uint64, dropped int) {
		t.Helper()
		st := ix.Stats()
		if st.Events != 100 || st.Dropped != dropped || st.OldestSeq != oldest || st.NewestSeq != newest {
			t.Errorf("Stats = %+v, want 100 events, %d to %d, %d dropped", st, oldest, newest, dropped)
		}
		got, first := pageAll(t, ix, Query{Limit: 33})
		if want := reversed(oldest, newest); !slices.Equal(got, want) {
			t.Errorf("paged seqs = %v\nwant %v", got, want)
		}
		if c := first.Chain; c.Problem != nil || c.VerifiedFrom != oldest || c.VerifiedThrough != newest {
			t.Errorf("Chain = %+v, want verified from %d through %d", c, oldest, newest)
		}
	}
	check(151, 250, 150)
	writeEvents(t, path, audit.FileOptions{MaxBytes: 20 << 10, Keep: 100}, 250, 30)
	refresh(t, ix)
	check(181, 280, 180)

	// Rebuilding the interned strings keeps the answers.
	q := Query{IdentityLike: "alice", Limit: 500}
	before := query(t, ix, q)
	ix.mu.Lock()
	n := len(ix.tabs.version.strs)
	ix.retable()
	ix.mu.Unlock()
	after := query(t, ix, q)
	if before.Matched != after.Matched || len(before.Events) != len(after.Events) {
		t.Errorf("after retable: %d matched, want %d", after.Matched, before.Matched)
	}
	for i := range before.Events {
		if b, a := before.Events[i], after.Events[i]; a.Seq != b.Seq || a.Identity != b.Identity {
			t.Errorf("after retable: event %d is seq %d (%s), want %d (%s)", i, a.Seq, a.Identity, b.Seq, b.Identity)
		}
	}
	if ix.mu.RLock(); len(ix.tabs.version.strs) > n {
		t.Errorf("retable grew the versions from %d to %d", n, len(ix.tabs.version.strs))
	}
	ix.mu.RUnlock()
}

func TestTruncatedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	writeEvents(t, path, audit.FileOptions{}, 0, 20)
	ix := openIndex(t, Options{Path: path, Interval: time.Hour})
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	writeEvents(t, path, audit.FileOptions{}, 100, 5) // a new chain
	refresh(t, ix)
	st := ix.Stats()
	if st.Events != 5 || st.Dropped != 20 || st.NewestSeq != 5 {
		t.Errorf("Stats after truncation = %+v, want 5 events, 20 dropped", st)
	}
	p := query(t, ix, Query{})
	if p.Chain.Problem == nil || p.Chain.Problem.Kind != audit.KindReordered || p.Chain.Problem.Location != (audit.Location{File: path, Line: 1}) {
		t.Errorf("Chain.Problem = %v, want reordered at %s:1 (a new chain)", p.Chain.Problem, path)
	}
	if len(p.Events) != 5 || p.Events[0].Seq != 5 || p.Events[0].Verified {
		t.Errorf("events after truncation: %+v, want 5, unverified", p.Events)
	}
}

func TestRestartedChainPages(t *testing.T) {
	// A log with a line that is not a chained event at its end is set
	// aside, and a new chain starts: seqs repeat, paging must not.
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	writeEvents(t, path, audit.FileOptions{}, 0, 50)
	appendTo(t, path, `{"@timestamp":"2026-03-01T12:00:00Z","event":{"action":"legacy"}}`+"\n")
	writeEvents(t, path, audit.FileOptions{}, 50, 30)
	if files := logFiles(t, path); len(files) != 2 {
		t.Fatalf("files = %q, want the old log set aside", files)
	}
	ix := openIndex(t, Options{Path: path})
	want := append(reversed(1, 31), reversed(1, 50)...)
	for _, limit := range []int{1, 7, 50, 500} {
		if got, _ := pageAll(t, ix, Query{Limit: limit}); !slices.Equal(got, want) {
			t.Errorf("Limit %d: paged seqs = %v\nwant %v", limit, got, want)
		}
	}
	// Along the old chain, Before is a seq.
	if got, _ := pageAll(t, ix, Query{Before: 40}); !slices.Equal(got, reversed(1, 39)) {
		t.Errorf("Before 40: seqs %v, want 39 … 1", got)
	}
	p := query(t, ix, Query{})
	if c := p.Chain; c.Problem == nil || c.Problem.Kind != audit.KindMalformed || c.Problem.Location != (audit.Location{File: path + ".1", Line: 51}) || c.VerifiedFrom != 1 || c.VerifiedThrough != 50 {
		t.Errorf("Chain = %+v (problem %v), want verified 1 through 50, malformed at %s.1:51", c, c.Problem, path)
	}
	if st := ix.Stats(); st.Malformed != 1 || st.Events != 81 {
		t.Errorf("Stats = %+v, want 81 events, 1 malformed", st)
	}
}

func TestCloseStopsGoroutine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	writeEvents(t, path, audit.FileOptions{}, 0, 10)
	before := runtime.NumGoroutine()
	ix, err := Open(Options{Path: path, Interval: time.Millisecond, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	refresh(t, ix)
	var wg sync.WaitGroup
	for range 4 { // queries racing Close
		wg.Go(func() {
			for {
				if _, err := ix.Query(context.Background(), Query{}); err != nil {
					return
				}
			}
		})
	}
	time.Sleep(10 * time.Millisecond)
	if err := ix.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	wg.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines after Close, %d before Open", runtime.NumGoroutine(), before)
		}
		time.Sleep(time.Millisecond)
	}
}

func mustJSON(t testing.TB, e *audit.Event) []byte {
	t.Helper()
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func appendTo(t testing.TB, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// bigLog writes a log of 3 files, each more than one read of the index.
func bigLog(t *testing.T) (path string, n int) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "audit.jsonl")
	n = 7500
	writeEvents(t, path, audit.FileOptions{MaxBytes: 1500 << 10, Keep: 10}, 0, n)
	if files := logFiles(t, path); len(files) != 3 {
		t.Fatalf("files = %q, want 3", files)
	}
	return path, n
}

// stillIndex returns an Index whose goroutine does not run: the test
// catches up by hand.
func stillIndex(t *testing.T, path string) *Index {
	t.Helper()
	ix, err := newIndex(Options{Path: path, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	close(ix.done) // no follower to wait for
	t.Cleanup(func() { ix.Close() })
	return ix
}

// readSome runs the first steps of a catch-up, as one stopped after the
// first read of the oldest file would.
func readSome(t *testing.T, ix *Index) {
	t.Helper()
	ix.catch <- struct{}{}
	defer func() { <-ix.catch }()
	cur, err := statPath(ix.path)
	if err != nil {
		t.Fatal(err)
	}
	files, err := ix.list(cur)
	if err != nil {
		t.Fatal(err)
	}
	if err := ix.match(files); err != nil {
		t.Fatal(err)
	}
	more, err := ix.readBatch(ix.fl.order[0], true)
	if err != nil || !more {
		t.Fatalf("readBatch = %v, %v; want more to read", more, err)
	}
	ix.commit(ix.fl.order[0])
	ix.fl.behind = true
}

func TestQueryWhileBuilding(t *testing.T) {
	path, n := bigLog(t)
	ix := stillIndex(t, path)
	readSome(t, ix)
	// The first reading runs (and holds the right to catch up): Query
	// answers at once from what is indexed so far.
	ix.catch <- struct{}{}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p, err := ix.Query(ctx, Query{Limit: 5})
	if err != nil {
		t.Fatalf("Query while building: %v", err)
	}
	st := ix.Stats()
	if !st.Building || st.Events == 0 || st.Events >= n || p.Matched != st.Events || p.Chain.Complete || p.Chain.Problem != nil {
		t.Errorf("while building: Stats %+v, %d matched, Chain %+v; want some events, incomplete", st, p.Matched, p.Chain)
	}
	// Refresh waits for the reading.
	short, cancel2 := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel2()
	if err := ix.Refresh(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Refresh while building = %v, want it to wait", err)
	}
	<-ix.catch
	refresh(t, ix)
	if p := query(t, ix, Query{}); p.Matched != n || !p.Chain.Complete || p.Chain.Problem != nil || p.Chain.VerifiedThrough != uint64(n) {
		t.Errorf("built: %d matched, Chain %+v; want %d, complete, intact", p.Matched, p.Chain, n)
	}
}

func TestCatchUpResumes(t *testing.T) {
	// After a catch-up that stopped part way through an older file, the
	// next one (here a Query's) finishes that file before PATH.
	path, n := bigLog(t)
	ix := stillIndex(t, path)
	readSome(t, ix)
	ix.mu.Lock()
	ix.building = false // as if a first reading had completed before
	ix.mu.Unlock()
	writeEvents(t, path, audit.FileOptions{MaxBytes: 1500 << 10, Keep: 10}, n, 10)
	p := query(t, ix, Query{})
	if p.Matched != n+10 || p.Chain.Problem != nil || p.Chain.VerifiedThrough != uint64(n+10) || !p.Chain.Complete {
		t.Errorf("%d matched, Chain %+v (problem %v); want %d, intact", p.Matched, p.Chain, p.Chain.Problem, n+10)
	}
}
