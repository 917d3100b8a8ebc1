package audit

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
)

// A fullSink is a disk with room bytes free once full is set: a write
// that does not fit fails, having taken what fitted if cut is set (a sink
// that cannot take back part of a write), nothing otherwise.
type fullSink struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	full bool
	room int
	cut  bool
}

var errFull = errors.New("no space left on device")

func (s *fullSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.full || len(p) <= s.room {
		s.room -= len(p)
		return s.buf.Write(p)
	}
	if !s.cut {
		return 0, errFull
	}
	n := max(s.room, 0)
	s.buf.Write(p[:n])
	s.room = 0
	return n, errFull
}

func (s *fullSink) fill(room int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.full, s.room = true, room
}

func (s *fullSink) free() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.full = false
}

// TestWriterFailedWrites: events lost to failed writes (a disk full) are
// counted and recorded in the chain of the next line written; a line
// the sink kept in part is recovered as a torn line; the chain verifies
// once writes succeed again. Events 0-2 are written, 3-6 meet the full
// disk, 7 and 8 come after space is freed.
func TestWriterFailedWrites(t *testing.T) {
	tests := []struct {
		name        string
		room        float64 // lines' worth of room left when the disk fills
		cut         bool
		wantWritten uint64
		wantTorn    int
	}{
		{"no room", 0, false, 5, 0},
		{"room for part of a line, taken back", 0.5, false, 5, 0},
		{"room for part of a line, kept", 0.5, true, 5, 1},
		{"room for a line and a half, kept", 1.5, true, 6, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sink := &fullSink{cut: tt.cut}
			w := NewWriter(sink)
			for i := range 3 {
				w.Record(event(i))
				w.Flush()
			}
			line := float64(len(sink.buf.Bytes())) / 3
			sink.fill(int(tt.room * line))
			for i := 3; i < 7; i++ { // each its own write
				w.Record(event(i))
				w.Flush()
			}
			sink.free()
			w.Record(event(7)) // its error is the last write's
			w.Flush()
			if err := w.Record(event(8)); err != nil {
				t.Errorf("Record after a write succeeded again: %v", err)
			}
			if err := w.Close(); !errors.Is(err, errFull) {
				t.Errorf("Close = %v, want the first write error", err)
			}
			s := w.Stats()
			if s.Written != tt.wantWritten || s.Written+s.Failed != 9 {
				t.Errorf("Stats() = %+v, want %d written, %d failed", s, tt.wantWritten, 9-tt.wantWritten)
			}

			path := filepath.Join(t.TempDir(), "audit.jsonl")
			if err := os.WriteFile(path, sink.buf.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
			rep := verifyFiles(t, []string{path})
			if rep.Problem != nil {
				t.Fatalf("Verify: %v\n%s", rep.Problem, sink.buf.Bytes())
			}
			if uint64(rep.Events) != tt.wantWritten || rep.Dropped != s.Failed || len(rep.Torn) != tt.wantTorn {
				t.Errorf("Verify = %d events, %d dropped, %d torn; want %d, %d, %d", rep.Events, rep.Dropped, len(rep.Torn), tt.wantWritten, s.Failed, tt.wantTorn)
			}
		})
	}
}

// TestWriterFailedBatch: a batch of lines written in part keeps the
// lines written whole in the chain, and records the rest as lost.
func TestWriterFailedBatch(t *testing.T) {
	// The lines of events 0-2, as any Writer chains them.
	var scratch syncBuffer
	sw := NewWriter(&scratch)
	for i := range 3 {
		sw.Record(event(i))
	}
	sw.Close()
	lines := bytes.SplitAfter(scratch.bytes(), []byte("\n"))

	sink := &gatedSink{fullSink: fullSink{cut: true}, entered: make(chan struct{}), release: make(chan struct{})}
	w := NewWriter(sink)
	w.Record(event(0))
	<-sink.entered // event 0 is being written, and waits
	for i := 1; i < 4; i++ {
		w.Record(event(i)) // queued: one batch
	}
	// Room for events 0 and 1, and half of 2.
	sink.fill(len(lines[0]) + len(lines[1]) + len(lines[2])/2)
	close(sink.release)
	w.Flush()
	w.Record(event(4)) // fails: no room
	w.Flush()
	sink.free()
	w.Record(event(5))
	w.Close()

	s := w.Stats()
	if s.Written != 3 || s.Failed != 3 {
		t.Errorf("Stats() = %+v, want 3 written (0, 1, 5), 3 failed", s)
	}
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	if err := os.WriteFile(path, sink.buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	rep := verifyFiles(t, []string{path})
	if rep.Problem != nil || rep.Events != 3 || rep.Dropped != 3 || len(rep.Torn) != 1 {
		t.Errorf("Verify = %+v, want 3 events, 3 dropped, 1 torn and no problem\n%s", rep, sink.buf.Bytes())
	}
}

// A gatedSink is a fullSink whose first write waits for release.
type gatedSink struct {
	fullSink
	once             sync.Once
	entered, release chan struct{}
}

func (s *gatedSink) Write(p []byte) (int, error) {
	s.once.Do(func() {
		close(s.entered)
		<-s.release
	})
	return s.fullSink.Write(p)
}

// TestFileFailedWriteLeavesWholeLines: a file sink cuts off what a
// failed write left, so the file still ends with a whole line. The file
// size limit (RLIMIT_FSIZE) makes the write fail part-way, as a full disk
// does; Go ignores the SIGXFSZ that comes with it.
func TestFileFailedWriteLeavesWholeLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	s := &fileSink{path: path, maxBytes: DefaultMaxBytes, keep: DefaultKeep}
	if _, _, err := s.open(); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	first := []byte("{\"a\":1}\n")
	if _, err := s.Write(first); err != nil {
		t.Fatal(err)
	}
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		t.Skipf("getrlimit: %v", err)
	}
	limit := old
	limit.Cur = uint64(len(first)) + 5
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &limit); err != nil {
		t.Skipf("setrlimit: %v", err)
	}
	n, err := s.Write([]byte("{\"b\":2}\n{\"c\":3}\n"))
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		t.Fatalf("restoring RLIMIT_FSIZE: %v", err)
	}
	if err == nil || n != 0 {
		t.Errorf("Write over the file size limit = %d, %v; want 0 and an error", n, err)
	}
	if data, _ := os.ReadFile(path); string(data) != string(first) {
		t.Errorf("file after a failed write = %q, want the whole line before it only", data)
	}
	if _, err := s.Write([]byte("{\"d\":4}\n")); err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(path); string(data) != string(first)+"{\"d\":4}\n" {
		t.Errorf("file after a write that succeeds again = %q", data)
	}
}
