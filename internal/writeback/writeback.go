// Package writeback does work behind the callers that ask for it: in the
// order asked, on one goroutine of its own. It is for durable writes that
// need not delay the request that caused them (a cache entry's fsyncs,
// the checksum database's state).
//
// The queue is bounded. When it is full, or closed, Add does the work
// itself: nothing is dropped, and a caller that outruns the writer slows
// to its pace. Close does what is queued before it returns.
package writeback

import "sync"

// A Queue does work items of type T in order. It is safe for concurrent
// use.
type Queue[T any] struct {
	do    func(T)
	items chan item[T]
	done  chan struct{} // closed when the goroutine has drained items

	mu     sync.RWMutex // held for reading while sending on items
	closed bool
}

// item is a work item, or a barrier (Wait) to close when reached.
type item[T any] struct {
	v       T
	barrier chan struct{}
}

// New starts a Queue of at most size items waiting, which calls do for
// each item added.
func New[T any](size int, do func(T)) *Queue[T] {
	q := &Queue[T]{do: do, items: make(chan item[T], size), done: make(chan struct{})}
	go q.run()
	return q
}

func (q *Queue[T]) run() {
	defer close(q.done)
	for it := range q.items {
		if it.barrier != nil {
			close(it.barrier)
			continue
		}
		q.do(it.v)
	}
}

// Add queues v, or does it now if the queue is full or closed.
func (q *Queue[T]) Add(v T) {
	q.mu.RLock()
	queued := false
	if !q.closed {
		select {
		case q.items <- item[T]{v: v}:
			queued = true
		default:
		}
	}
	q.mu.RUnlock()
	if !queued {
		q.do(v)
	}
}

// Wait returns when every item added before it is done.
func (q *Queue[T]) Wait() {
	barrier := make(chan struct{})
	q.mu.RLock()
	if q.closed {
		q.mu.RUnlock()
		<-q.done // Close is draining, or has drained, the queue
		return
	}
	q.items <- item[T]{barrier: barrier}
	q.mu.RUnlock()
	<-barrier
}

// Close does the items queued, then returns. Items added after it are
// done by Add itself. It may be called more than once.
func (q *Queue[T]) Close() {
	q.mu.Lock()
	if !q.closed {
		q.closed = true
		close(q.items)
	}
	q.mu.Unlock()
	<-q.done
}
