package audit

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// openFile opens an audit file Writer, failing the test on error.
func openFile(t testing.TB, path string, opts FileOptions) *Writer {
	t.Helper()
	w, err := OpenFile(path, opts)
	if err != nil {
		t.Fatalf("OpenFile(%s): %v", path, err)
	}
	return w
}

// record records events from … from+n-1 and closes w.
func record(t testing.TB, w *Writer, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		if err := w.Record(event(i)); err != nil {
			t.Fatalf("Record(%d): %v", i, err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// logFiles lists the files of the rotated log at path that exist, oldest
// first: path.N … path.1, path.
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

// verifyFiles verifies files, failing the test on an I/O error.
func verifyFiles(t testing.TB, files []string) Report {
	t.Helper()
	rep, err := Verify(files)
	if err != nil {
		t.Fatalf("Verify(%q): %v", files, err)
	}
	return rep
}

func TestRotation(t *testing.T) {
	line := len(event(10).appendJSON(nil)) + len(`,"chain":{"seq":100,"prev":""}`) + 64 + 1
	tests := []struct {
		name      string
		maxBytes  int64
		keep      int
		events    int
		wantFiles int
	}{
		{"no rotation", 0, 0, 50, 1},
		{"one line per file", 1, 3, 50, 4},
		{"a few lines per file", int64(4 * line), 5, 50, 6},
		{"keep outlasts the log", int64(10 * line), 20, 50, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "audit.jsonl")
			record(t, openFile(t, path, FileOptions{MaxBytes: tt.maxBytes, Keep: tt.keep}), 0, tt.events)
			files := logFiles(t, path)
			if len(files) != tt.wantFiles {
				t.Fatalf("files = %q, want %d", files, tt.wantFiles)
			}
			if _, err := os.Stat(fmt.Sprintf("%s.%d", path, tt.wantFiles)); err == nil {
				t.Errorf("%s.%d exists: more files than Keep", path, tt.wantFiles)
			}
			lines := 0
			for _, f := range files {
				st, _ := os.Stat(f)
				n := len(fileLines(t, f))
				lines += n
				if tt.maxBytes > 0 && st.Size() > tt.maxBytes && n > 1 {
					t.Errorf("%s: %d bytes in %d lines, over MaxBytes %d", f, st.Size(), n, tt.maxBytes)
				}
			}
			rep := verifyFiles(t, files)
			if rep.Problem != nil || rep.Events != lines || rep.LastSeq != uint64(tt.events) || rep.FirstSeq != uint64(tt.events-lines+1) {
				t.Errorf("Verify = %+v, want %d events ending at seq %d, intact", rep, lines, tt.events)
			}
		})
	}
}

func TestFileSinkSplitsBatchesAtLines(t *testing.T) {
	// One Write of many lines spreads over files, none split.
	path := filepath.Join(t.TempDir(), "f")
	s := &fileSink{path: path, maxBytes: 10, keep: 5}
	if _, _, err := s.open(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write([]byte("aaa\nbbb\nccc\nddddddddddddddd\ne\n")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// The long line gets a file of its own; "e" then starts another.
	want := map[string]string{path + ".3": "aaa\nbbb\n", path + ".2": "ccc\n", path + ".1": "ddddddddddddddd\n", path: "e\n"}
	for name, content := range want {
		if got, err := os.ReadFile(name); err != nil || string(got) != content {
			t.Errorf("%s = %q, %v; want %q", name, got, err, content)
		}
	}
}

func TestRestart(t *testing.T) {
	line := len(event(10).appendJSON(nil)) + 120
	tests := []struct {
		name string
		opts FileOptions
		// crash changes the log at path between the two runs.
		crash func(t *testing.T, path string)
		// beforeRestart is the problem Verify reports before the restart.
		beforeRestart Kind
		wantEvents    int    // in the chain after the second run
		wantTorn      int    // recovered torn lines
		wantFirst     string // Event.Action of the first line the second run writes
	}{
		{name: "clean", wantEvents: 20, wantFirst: "request"},
		{name: "rotated", opts: FileOptions{MaxBytes: int64(3 * line)}, wantEvents: 20, wantFirst: "request"},
		{
			name: "torn last line",
			crash: func(t *testing.T, path string) {
				truncateBy(t, path, 17)
			},
			beforeRestart: KindTorn, wantEvents: 20, wantTorn: 1, wantFirst: ActionRecovered,
		},
		{
			name: "only the newline lost",
			crash: func(t *testing.T, path string) {
				truncateBy(t, path, 1)
			},
			beforeRestart: KindTorn, wantEvents: 20, wantFirst: "request",
		},
		{
			name: "crash between rotating and creating the new file",
			opts: FileOptions{MaxBytes: int64(3 * line)},
			crash: func(t *testing.T, path string) {
				shift(t, path)
			},
			wantEvents: 20, wantFirst: "request",
		},
		{
			name: "torn line alone in a new file",
			opts: FileOptions{MaxBytes: int64(3 * line)},
			crash: func(t *testing.T, path string) {
				shift(t, path)
				if err := os.WriteFile(path, []byte(`{"@timestamp":"2026-11-21T08:5`), 0o640); err != nil {
					t.Fatal(err)
				}
			},
			beforeRestart: KindTorn, wantEvents: 21, wantTorn: 1, wantFirst: ActionRecovered,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "audit.jsonl")
			record(t, openFile(t, path, tt.opts), 0, 10)
			if tt.crash != nil {
				tt.crash(t, path)
			}
			rep := verifyFiles(t, logFiles(t, path))
			if got := problemKind(rep); got != tt.beforeRestart {
				t.Fatalf("before restart: Verify problem = %v, want %q", rep.Problem, tt.beforeRestart)
			}

			record(t, openFile(t, path, tt.opts), 100, 10)
			files := logFiles(t, path)
			rep = verifyFiles(t, files)
			written := 10
			if tt.wantFirst != "request" {
				written++
			}
			if rep.Problem != nil || rep.Events != tt.wantEvents || rep.FirstSeq != 1 || len(rep.Torn) != tt.wantTorn {
				t.Errorf("after restart: Verify = %+v, want %d events from seq 1, %d torn lines, intact", rep, tt.wantEvents, tt.wantTorn)
			}
			// The second run's first line follows the first run's last.
			var all [][]byte
			for _, f := range files {
				all = append(all, fileLines(t, f)...)
			}
			first := all[len(all)-written]
			var e Event
			if err := json.Unmarshal(first, &e); err != nil {
				t.Fatal(err)
			}
			if want := uint64(tt.wantEvents - written + 1); e.Event.Action != tt.wantFirst || e.Chain.Seq != want {
				t.Errorf("first line after restart: action %q, seq %d; want %q, seq %d", e.Event.Action, e.Chain.Seq, tt.wantFirst, want)
			}
			if tt.wantTorn > 0 {
				tl := rep.Torn[0]
				torn := fileLines(t, tl.File)[tl.Line-1]
				if e.Chain.Torn != lineHash(torn) || !strings.Contains(e.Event.Reason, fmt.Sprintf("torn line of %d bytes", len(torn))) {
					t.Errorf("recovery event %+v, chain %+v: want it to name the torn line %s (%q)", e.Event, e.Chain, tl, torn)
				}
			}
		})
	}
}

// truncateBy cuts n bytes off the end of a file.
func truncateBy(t *testing.T, path string, n int64) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, st.Size()-n); err != nil {
		t.Fatal(err)
	}
}

// shift renames path.N … path to path.N+1 … path.1, as rotation does
// before it creates the new file.
func shift(t *testing.T, path string) {
	t.Helper()
	files := logFiles(t, path)
	for i, f := range files {
		if err := os.Rename(f, fmt.Sprintf("%s.%d", path, len(files)-i)); err != nil {
			t.Fatal(err)
		}
	}
}

func problemKind(rep Report) Kind {
	if rep.Problem == nil {
		return ""
	}
	return rep.Problem.Kind
}

func TestOpenFileStartsANewChainAfterForeignLines(t *testing.T) {
	// A log from before the chain (or a damaged one) is set aside, not
	// extended.
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	legacy := `{"@timestamp":"2026-11-21T08:55:18Z","event":{"action":"request","outcome":"success"},"modgate":{}}` + "\n"
	if err := os.WriteFile(path, []byte(legacy+legacy), 0o640); err != nil {
		t.Fatal(err)
	}
	record(t, openFile(t, path, FileOptions{}), 0, 3)
	if got, err := os.ReadFile(path + ".1"); err != nil || string(got) != legacy+legacy {
		t.Errorf("%s.1 = %q, %v; want the old log", path, got, err)
	}
	rep := verifyFiles(t, []string{path})
	if rep.Problem != nil || rep.Events != 4 || rep.FirstSeq != 1 {
		t.Errorf("Verify(new file) = %+v, want 4 events from seq 1", rep)
	}
	var e Event
	json.Unmarshal(fileLines(t, path)[0], &e)
	if e.Event.Action != ActionChainStarted || !strings.Contains(e.Event.Reason, "not a chained audit event") {
		t.Errorf("first line = %+v, want %s saying why", e.Event, ActionChainStarted)
	}
	rep = verifyFiles(t, []string{path + ".1", path})
	if rep.Problem == nil || rep.Problem.Kind != KindMalformed || rep.Problem.Location != (Location{path + ".1", 1}) {
		t.Errorf("Verify(old, new) problem = %v, want malformed at %s.1:1", rep.Problem, path)
	}
}

func TestFileOptionsChecked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	for _, tt := range []struct {
		opts      FileOptions
		wantField string
	}{
		{FileOptions{MaxBytes: -1}, "MaxBytes"},
		{FileOptions{Keep: -1}, "Keep"},
		{FileOptions{WriterOptions: WriterOptions{BlockFor: -1}}, "BlockFor"},
	} {
		if _, err := OpenFile(path, tt.opts); err == nil || !strings.Contains(err.Error(), tt.wantField) {
			t.Errorf("OpenFile(%+v) = %v, want an error naming %s", tt.opts, err, tt.wantField)
		}
	}
}

func TestLoadFile(t *testing.T) {
	// 8 goroutines × 5000 events through a rotating file in Block mode:
	// every event written, one intact chain.
	const goroutines, each = 8, 5000
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	w := openFile(t, path, FileOptions{MaxBytes: 1 << 20, Keep: 1000})
	start := time.Now()
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				if err := w.Record(event(g*each + i)); err != nil {
					t.Errorf("Record: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	files := logFiles(t, path)
	rep := verifyFiles(t, files)
	if rep.Problem != nil || rep.Events != goroutines*each || rep.Dropped != 0 {
		t.Fatalf("Verify = %+v, want %d events, none dropped, intact", rep, goroutines*each)
	}
	seen := make([]bool, goroutines*each)
	for _, f := range files {
		for _, l := range fileLines(t, f) {
			var e Event
			if err := json.Unmarshal(l, &e); err != nil {
				t.Fatal(err)
			}
			seen[e.HTTP.Response.Bytes] = true
		}
	}
	for i, ok := range seen {
		if !ok {
			t.Errorf("event %d lost", i)
		}
	}
	t.Logf("%d events in %v over %d files: %.0f events/s", goroutines*each, elapsed, len(files), float64(goroutines*each)/elapsed.Seconds())
}

// BenchmarkRecordFile measures the audit overhead per request: Record into
// a rotating file, chain and write included (the timer stops after Flush),
// from one goroutine and from GOMAXPROCS; and, for comparison, into
// io.Discard (encoding and chaining without the file).
func BenchmarkRecordFile(b *testing.B) {
	for _, bc := range []struct {
		name     string
		parallel bool
		discard  bool
	}{
		{"serial", false, false},
		{"parallel", true, false},
		{"discard", false, true},
	} {
		parallel := bc.parallel
		b.Run(bc.name, func(b *testing.B) {
			var w *Writer
			if bc.discard {
				w = NewWriter(io.Discard)
			} else {
				w = openFile(b, filepath.Join(b.TempDir(), "audit.jsonl"), FileOptions{})
			}
			e := event(1)
			b.ReportAllocs()
			b.ResetTimer()
			if parallel {
				b.RunParallel(func(pb *testing.PB) {
					e := event(1)
					for pb.Next() {
						w.Record(e)
					}
				})
			} else {
				for b.Loop() {
					w.Record(e)
				}
			}
			if err := w.Flush(); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			w.Close()
		})
	}
}
