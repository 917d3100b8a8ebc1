package cache

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestFlights(t *testing.T) {
	var g Flights[string]
	if g.Pending("k") {
		t.Errorf("Pending(%q) on zero Flights = true, want false", "k")
	}
	f, leader := g.Start("k")
	if !leader {
		t.Fatalf("first Start(%q) leader = false, want true", "k")
	}
	if !g.Pending("k") {
		t.Errorf("Pending(%q) = false during a flight, want true", "k")
	}
	if g.Pending("other") {
		t.Errorf("Pending(%q) = true, want false", "other")
	}
	other, leader := g.Start("other")
	if !leader || other == f {
		t.Errorf("Start(%q) = %p, %v; want a new flight led by the caller", "other", other, leader)
	}

	const followers = 5
	var wg sync.WaitGroup
	results := make([]string, followers)
	errs := make([]error, followers)
	for i := range followers {
		ff, leader := g.Start("k")
		if leader || ff != f {
			t.Fatalf("Start(%q) #%d = %p, %v; want %p, false", "k", i+2, ff, leader, f)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = ff.Wait(context.Background())
		}()
	}

	// A follower that gives up returns promptly; the others still wait.
	ctx, cancel := context.WithCancel(context.Background())
	quit := make(chan error, 1)
	go func() {
		ff, _ := g.Start("k")
		_, err := ff.Wait(ctx)
		quit <- err
	}()
	time.Sleep(10 * time.Millisecond)
	cancel()
	select {
	case err := <-quit:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Wait with a cancelled ctx = %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("Wait with a cancelled ctx did not return")
	}
	if !g.Pending("k") {
		t.Errorf("Pending(%q) = false after a follower left, want true", "k")
	}

	g.Land(f, "value")
	wg.Wait()
	for i := range followers {
		if results[i] != "value" || errs[i] != nil {
			t.Errorf("follower %d: Wait() = %q, %v; want %q, nil", i, results[i], errs[i], "value")
		}
	}
	if v, err := f.Wait(context.Background()); v != "value" || err != nil {
		t.Errorf("Wait() after Land = %q, %v; want %q, nil", v, err, "value")
	}
	// A landed flight's result is there even for a done ctx.
	done, cancelDone := context.WithCancel(context.Background())
	cancelDone()
	if v, err := f.Wait(done); err == nil && v != "value" {
		t.Errorf("Wait(done ctx) after Land = %q, nil; want %q", v, "value")
	}
	if g.Pending("k") {
		t.Errorf("Pending(%q) = true after Land, want false", "k")
	}
	if !g.Pending("other") {
		t.Errorf("Pending(%q) = false, want true: only k landed", "other")
	}

	f2, leader := g.Start("k")
	if !leader || f2 == f {
		t.Fatalf("Start(%q) after Land = %p, %v; want a new flight led by the caller", "k", f2, leader)
	}
	// Landing the old flight again must not end the new one.
	g.Land(other, "o")
	if !g.Pending("k") {
		t.Errorf("Pending(%q) = false, want the new flight", "k")
	}
	g.Land(f2, "second")
	if v, _ := f2.Wait(context.Background()); v != "second" {
		t.Errorf("new flight Wait() = %q, want %q", v, "second")
	}
}

func TestFlightsConcurrent(t *testing.T) {
	var g Flights[int]
	const n = 100
	var leaders atomic.Int32
	var wg, started sync.WaitGroup
	started.Add(n)
	start := make(chan struct{})
	results := make(chan int, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			f, leader := g.Start("k")
			started.Done()
			if leader {
				leaders.Add(1)
				started.Wait() // every Start before the Land
				g.Land(f, 42)
			}
			v, err := f.Wait(context.Background())
			if err != nil {
				t.Errorf("Wait() = %v", err)
			}
			results <- v
		}()
	}
	close(start)
	wg.Wait()
	close(results)
	if got := leaders.Load(); got != 1 {
		t.Errorf("%d leaders among %d concurrent Starts, want 1", got, n)
	}
	for v := range results {
		if v != 42 {
			t.Errorf("Wait() = %d, want 42", v)
		}
	}
	if g.Pending("k") {
		t.Errorf("Pending(%q) = true after Land, want false", "k")
	}
}
