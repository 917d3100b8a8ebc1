package cache

import (
	"context"
	"sync"
)

// Flights coalesces concurrent misses: the first caller for a key leads a
// flight (it fetches), later callers follow it (they wait for its result).
// A follower whose context ends stops waiting; the flight goes on for the
// others. The leader owns the flight and must Land it exactly once, with
// its own context and timeout: no follower can cancel it.
//
// The zero Flights is ready to use and safe for concurrent use.
type Flights[T any] struct {
	mu      sync.Mutex
	pending map[string]*Flight[T]
}

// A Flight is one fetch in progress.
type Flight[T any] struct {
	g    *Flights[T]
	key  string
	done chan struct{}
	val  T // set before done is closed
}

// Start returns the flight for key and whether the caller leads it.
func (g *Flights[T]) Start(key string) (f *Flight[T], leader bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if f := g.pending[key]; f != nil {
		return f, false
	}
	if g.pending == nil {
		g.pending = make(map[string]*Flight[T])
	}
	f = &Flight[T]{g: g, key: key, done: make(chan struct{})}
	g.pending[key] = f
	return f, true
}

// Pending reports whether a flight for key is in progress.
func (g *Flights[T]) Pending(key string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.pending[key] != nil
}

// Land ends f with the result v and wakes its followers. Only f's leader
// calls it, once.
func (g *Flights[T]) Land(f *Flight[T], v T) {
	g.mu.Lock()
	if g.pending[f.key] == f {
		delete(g.pending, f.key)
	}
	g.mu.Unlock()
	f.val = v
	close(f.done)
}

// Land ends f with the result v and wakes its followers: g.Land(f, v)
// for the Flights that started it. Only f's leader calls it, once.
func (f *Flight[T]) Land(v T) { f.g.Land(f, v) }

// Wait returns the flight's result, or ctx's error if ctx ends first.
func (f *Flight[T]) Wait(ctx context.Context) (T, error) {
	select {
	case <-f.done:
		return f.val, nil
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}
