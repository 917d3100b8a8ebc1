package writeback

import (
	"slices"
	"sync"
	"testing"
	"time"
)

// recorder records the items done, in order.
type recorder struct {
	mu   sync.Mutex
	done []int
}

func (r *recorder) do(v int) {
	r.mu.Lock()
	r.done = append(r.done, v)
	r.mu.Unlock()
}

func (r *recorder) list() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.done)
}

// TestOrderWaitClose checks that Wait waits for what was added before it,
// and that Add after Close does the work itself.
func TestOrderWaitClose(t *testing.T) {
	var r recorder
	q := New(4, r.do)
	for i := range 100 {
		q.Add(i)
	}
	q.Wait()
	if got := r.list(); len(got) != 100 {
		t.Fatalf("after Wait, %d items done, want 100", len(got))
	}
	q.Add(100)
	q.Close()
	q.Close() // again: nothing
	q.Add(101)
	q.Wait()
	got := r.list()
	if len(got) != 102 || got[100] != 100 || got[101] != 101 {
		t.Fatalf("done %v, want 0..101", got)
	}
}

// TestFull checks that Add does the work itself when the queue is full,
// and that Close drains what was queued.
func TestFull(t *testing.T) {
	var r recorder
	hold := make(chan struct{})
	q := New(2, func(v int) {
		if v == 0 {
			<-hold // the goroutine is busy with the first item
		}
		r.do(v)
	})
	q.Add(0)
	deadline := time.Now().Add(5 * time.Second)
	for len(q.items) != 0 { // the goroutine took item 0
		if time.Now().After(deadline) {
			t.Fatal("the goroutine never took the first item")
		}
		time.Sleep(time.Millisecond)
	}
	q.Add(1)
	q.Add(2)
	q.Add(3) // full: done now, by this call
	if got := r.list(); !slices.Equal(got, []int{3}) {
		t.Fatalf("done %v with the queue full, want [3] (done by Add)", got)
	}
	close(hold)
	q.Close()
	if got := r.list(); !slices.Equal(got, []int{3, 0, 1, 2}) {
		t.Fatalf("done %v after Close, want [3 0 1 2]", got)
	}
}
