package audit

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe for the Writer's goroutine and the test.
type syncBuffer struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	delay time.Duration
	fail  error
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	time.Sleep(b.delay)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fail != nil {
		return 0, b.fail
	}
	return b.buf.Write(p)
}

func (b *syncBuffer) bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}

func (b *syncBuffer) lines(t *testing.T) []Event {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var evs []Event
	sc := bufio.NewScanner(bytes.NewReader(b.buf.Bytes()))
	for sc.Scan() {
		var e Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		evs = append(evs, e)
	}
	return evs
}

func event(i int) *Event {
	return &Event{
		Timestamp: time.Unix(1700000000, int64(i)).UTC(),
		Event:     EventFields{Action: "request", Outcome: OutcomeSuccess, Reason: fmt.Sprintf("n=%d \"quoted\" <tag> \u2028", i)},
		URL:       &URL{Path: fmt.Sprintf("/example.com/m/@v/v1.0.%d.zip", i)},
		HTTP:      &HTTP{Response: HTTPResponse{StatusCode: 200, Bytes: int64(i)}},
		Modgate:   ModgateGroup{Module: "example.com/m", Kind: "zip"},
	}
}

func TestWriterKeepsEveryEvent(t *testing.T) {
	sink := &syncBuffer{delay: 100 * time.Microsecond}
	w := NewWriter(sink)
	const goroutines, each = 8, 200
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				if err := w.Record(event(g*each + i)); err != nil {
					t.Errorf("Record: %v", err)
				}
			}
		})
	}
	wg.Wait()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	evs := sink.lines(t)
	if len(evs) != goroutines*each {
		t.Fatalf("got %d events, want %d", len(evs), goroutines*each)
	}
	rep := verifyBytes(t, sink.bytes())
	if rep.Problem != nil || rep.Events != goroutines*each || rep.FirstSeq != 1 {
		t.Errorf("Verify = %+v, want %d events from seq 1, intact", rep, goroutines*each)
	}
	seen := map[int64]bool{}
	last := map[int64]int64{} // per goroutine, events stay in order
	for _, e := range evs {
		n := e.HTTP.Response.Bytes
		if seen[n] {
			t.Errorf("event %d written twice", n)
		}
		seen[n] = true
		g := n / each
		if prev, ok := last[g]; ok && prev > n {
			t.Errorf("goroutine %d: event %d written after %d", g, n, prev)
		}
		last[g] = n
		if want := event(int(n)); e.Event.Reason != want.Event.Reason || e.URL.Path != want.URL.Path {
			t.Errorf("event %d = %+v, want %+v", n, e, want)
		}
	}
}

func TestWriterFlushAndClose(t *testing.T) {
	sink := &syncBuffer{}
	w := NewWriter(sink)
	for i := range 10 {
		w.Record(event(i))
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if n := len(sink.lines(t)); n != 10 {
		t.Errorf("after Flush: %d events written, want 10", n)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Record(event(11)); err == nil {
		t.Error("Record after Close succeeded")
	}
}

func TestWriterBackpressure(t *testing.T) {
	// A slow sink and a tiny queue: Record must wait, never drop.
	sink := &syncBuffer{delay: time.Millisecond}
	w, err := New(sink, WriterOptions{MaxPending: 512})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		if err := w.Record(event(i)); err != nil {
			t.Fatal(err)
		}
		w.mu.Lock()
		if len(w.pending) > 512+1024 {
			t.Errorf("queue holds %d bytes, over its bound", len(w.pending))
		}
		w.mu.Unlock()
	}
	w.Close()
	if n := len(sink.lines(t)); n != 100 {
		t.Errorf("%d events written, want 100", n)
	}
	if s := w.Stats(); s.Dropped != 0 || s.Written != 100 {
		t.Errorf("Stats() = %+v, want 100 written, none dropped", s)
	}
}

func TestWriterReportsWriteErrors(t *testing.T) {
	boom := errors.New("disk full")
	sink := &syncBuffer{fail: boom}
	w := NewWriter(sink)
	w.Record(event(1))
	if err := w.Flush(); !errors.Is(err, boom) {
		t.Errorf("Flush = %v, want %v", err, boom)
	}
	if err := w.Record(event(2)); !errors.Is(err, boom) {
		t.Errorf("Record after a failed write = %v, want %v", err, boom)
	}
	if err := w.Close(); !errors.Is(err, boom) {
		t.Errorf("Close = %v, want %v", err, boom)
	}
}

// verifyBytes verifies data as one audit file.
func verifyBytes(t testing.TB, data []byte) Report {
	t.Helper()
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	rep, err := Verify([]string{path})
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	return rep
}

// chains parses the chain of every line of data.
func chains(t testing.TB, data []byte) []Chain {
	t.Helper()
	var cs []Chain
	for l := range bytes.Lines(data) {
		var e Event
		if err := json.Unmarshal(l, &e); err != nil || e.Chain == nil {
			t.Fatalf("line %q: no chain (%v)", l, err)
		}
		cs = append(cs, *e.Chain)
	}
	return cs
}

// gateSink holds every Write until release is closed, telling entered
// when one starts.
type gateSink struct {
	entered chan struct{}
	release chan struct{}
	syncBuffer
}

func newGateSink() *gateSink {
	return &gateSink{entered: make(chan struct{}, 1), release: make(chan struct{})}
}

func (s *gateSink) Write(p []byte) (int, error) {
	select {
	case s.entered <- struct{}{}:
	default:
	}
	<-s.release
	return s.syncBuffer.Write(p)
}

func TestWriterOverflow(t *testing.T) {
	tests := []struct {
		name     string
		opts     WriterOptions
		minBlock time.Duration // how long a dropped Record must have waited
	}{
		{"drop", WriterOptions{MaxPending: 1, Overflow: Drop}, 0},
		{"block then drop", WriterOptions{MaxPending: 1, Overflow: Block, BlockFor: 20 * time.Millisecond}, 20 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sink := newGateSink()
			w, err := New(sink, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			if err := w.Record(event(0)); err != nil {
				t.Fatal(err)
			}
			<-sink.entered // event 0 is being written; the sink holds it
			if err := w.Record(event(1)); err != nil {
				t.Fatalf("Record(1) into an empty queue = %v", err)
			}
			const drops = 4
			for i := range drops {
				start := time.Now()
				err := w.Record(event(2 + i))
				if !errors.Is(err, ErrDropped) {
					t.Errorf("Record(%d) into a full queue = %v, want ErrDropped", 2+i, err)
				}
				if d := time.Since(start); d < tt.minBlock {
					t.Errorf("Record(%d) dropped after %v, want at least %v", 2+i, d, tt.minBlock)
				}
			}
			if s := w.Stats(); s.Dropped != drops || s.QueueEvents != 2 || s.Written != 0 || s.QueueBytes == 0 {
				t.Errorf("Stats() while blocked = %+v, want %d dropped, 2 queued, 0 written", s, drops)
			}
			close(sink.release)
			if err := w.Flush(); err != nil {
				t.Fatal(err)
			}
			if err := w.Record(event(9)); err != nil {
				t.Fatal(err)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if s := w.Stats(); s.Dropped != drops || s.Written != 3 || s.QueueEvents != 0 || s.Seq != 3 {
				t.Errorf("Stats() after Close = %+v, want %d dropped, 3 written, seq 3", s, drops)
			}
			cs := chains(t, sink.bytes())
			want := []Chain{{Seq: 1}, {Seq: 2}, {Seq: 3, Dropped: drops}}
			if len(cs) != len(want) {
				t.Fatalf("%d lines written, want %d", len(cs), len(want))
			}
			for i := range want {
				if cs[i].Seq != want[i].Seq || cs[i].Dropped != want[i].Dropped {
					t.Errorf("line %d chain = %+v, want seq %d, dropped %d", i+1, cs[i], want[i].Seq, want[i].Dropped)
				}
			}
			rep := verifyBytes(t, sink.bytes())
			if rep.Problem != nil || rep.Dropped != drops || len(rep.Drops) != 1 || rep.Drops[0].Line != 3 {
				t.Errorf("Verify = %+v, want intact, %d dropped at line 3", rep, drops)
			}
		})
	}
}

func TestCloseRecordsUnreportedDrops(t *testing.T) {
	sink := newGateSink()
	w, err := New(sink, WriterOptions{MaxPending: 1, Overflow: Drop})
	if err != nil {
		t.Fatal(err)
	}
	w.Record(event(0))
	<-sink.entered
	w.Record(event(1))
	if err := w.Record(event(2)); !errors.Is(err, ErrDropped) {
		t.Fatalf("Record into a full queue = %v, want ErrDropped", err)
	}
	close(sink.release)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	evs := sink.lines(t)
	if len(evs) != 3 {
		t.Fatalf("%d lines written, want 3", len(evs))
	}
	if last := evs[2]; last.Event.Action != ActionDropped || last.Chain.Dropped != 1 {
		t.Errorf("last line = %+v, chain %+v; want %s with dropped 1", last.Event, last.Chain, ActionDropped)
	}
}

func TestRecordDropsOversizeEvent(t *testing.T) {
	sink := &syncBuffer{}
	w := NewWriter(sink)
	e := event(0)
	e.Event.Reason = strings.Repeat("x", maxLine)
	if err := w.Record(e); !errors.Is(err, ErrDropped) {
		t.Errorf("Record(%d-byte event) = %v, want ErrDropped", maxLine, err)
	}
	w.Record(event(1))
	w.Close()
	if cs := chains(t, sink.bytes()); len(cs) != 1 || cs[0].Dropped != 1 {
		t.Errorf("chains = %+v, want the next line to record 1 dropped", cs)
	}
}

func TestWriterOptionsChecked(t *testing.T) {
	tests := []struct {
		opts      WriterOptions
		wantField string
	}{
		{WriterOptions{MaxPending: -1}, "MaxPending"},
		{WriterOptions{BlockFor: -time.Second}, "BlockFor"},
		{WriterOptions{Overflow: 7}, "Overflow"},
	}
	for _, tt := range tests {
		if _, err := New(io.Discard, tt.opts); err == nil || !strings.Contains(err.Error(), tt.wantField) {
			t.Errorf("New(%+v) = %v, want an error naming %s", tt.opts, err, tt.wantField)
		}
	}
}

// slowFile is a file whose writes take a while.
type slowFile struct {
	f     *os.File
	delay time.Duration
}

func (s slowFile) Write(p []byte) (int, error) {
	time.Sleep(s.delay)
	return s.f.Write(p)
}

func TestConcurrentRecordsKeepTheChain(t *testing.T) {
	// Many goroutines, a slow sink and a tiny queue, Block mode: Record
	// waits, nothing is dropped, and the chain is the file's order.
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w, err := New(slowFile{f, 100 * time.Microsecond}, WriterOptions{MaxPending: 1024})
	if err != nil {
		t.Fatal(err)
	}
	const goroutines, each = 16, 100
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				if err := w.Record(event(g*each + i)); err != nil {
					t.Errorf("Record: %v", err)
				}
			}
		})
	}
	wg.Wait()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	rep, err := Verify([]string{path})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Problem != nil || rep.Events != goroutines*each || rep.Dropped != 0 || rep.LastSeq != goroutines*each {
		t.Errorf("Verify = %+v, want %d events, intact, none dropped", rep, goroutines*each)
	}
	if s := w.Stats(); s.Written != goroutines*each || s.Dropped != 0 {
		t.Errorf("Stats() = %+v, want %d written, none dropped", s, goroutines*each)
	}
}
