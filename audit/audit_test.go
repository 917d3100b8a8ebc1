package audit

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
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
	w := NewWriter(sink)
	w.mu.Lock()
	w.maxPending = 512
	w.mu.Unlock()
	for i := range 100 {
		if err := w.Record(event(i)); err != nil {
			t.Fatal(err)
		}
		w.mu.Lock()
		if len(w.pending) > w.maxPending+1024 {
			t.Errorf("queue holds %d bytes, over its bound", len(w.pending))
		}
		w.mu.Unlock()
	}
	w.Close()
	if n := len(sink.lines(t)); n != 100 {
		t.Errorf("%d events written, want 100", n)
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
