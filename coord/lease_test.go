package coord

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modgate/modgate/gate"
	"github.com/modgate/modgate/integration/natsserver"
)

// gateLeases adapts Leases to gate.Leases, as cmd/modgate does: Lead's
// result type differs, the methods are the same.
type gateLeases struct{ l *Leases }

func (g gateLeases) Lead(ctx context.Context, key string) (gate.Lease, error) {
	s, err := g.l.Lead(ctx, key)
	if err != nil {
		return nil, err
	}
	return s, nil
}

var (
	_ gate.Leases = gateLeases{}
	_ gate.Lease  = (*Lease)(nil)
)

func TestKVKey(t *testing.T) {
	tests := []string{
		"",
		"example.com/mod/@v/v0.1.0.zip",
		"example.com/!azure/sdk/@v/list",
		"example.com/m/@v/v1.0.0+incompatible.mod",
		"example.com/~user/m/@latest",
		"sumdb/sum.example/lookup/example.com/m@v1.0.0",
	}
	seen := map[string]string{}
	for _, key := range tests {
		got := kvKey(key)
		if len(got) != 64 || strings.Trim(got, "0123456789abcdef") != "" {
			t.Errorf("kvKey(%q) = %q, want 64 lowercase hex digits", key, got)
		}
		if other, ok := seen[got]; ok {
			t.Errorf("kvKey(%q) = kvKey(%q) = %q", key, other, got)
		}
		seen[got] = key
	}
}

func TestParseValue(t *testing.T) {
	tests := []struct {
		name  string
		value string
		want  string
	}{
		{"lease", `{"holder":"host-1","started":"2026-01-02T03:04:05Z","id":"X"}`, "host-1"},
		{"holder only", `{"holder":"h"}`, "h"},
		{"empty", ``, ""},
		{"garbage", `not json`, ""},
		{"wrong type", `{"holder":7}`, ""},
		{"too long", `{"holder":"h","pad":"` + strings.Repeat("x", maxValue) + `"}`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := parseValue([]byte(tt.value)); got != tt.want {
				t.Errorf("parseValue(%.40q) = %q, want %q", tt.value, got, tt.want)
			}
		})
	}
}

// replicas opens n Leases named r0, r1, … on url, each with its own
// connection, as n replicas would.
func replicas(t testing.TB, url string, n int, ttl time.Duration) []*Leases {
	t.Helper()
	ls := make([]*Leases, n)
	for i := range ls {
		ls[i] = openLeases(t, url, fmt.Sprintf("r%d", i), ttl)
	}
	return ls
}

// mustLead calls l.Lead and fails t unless it answers with held.
func mustLead(t testing.TB, l *Leases, key string, held bool) *Lease {
	t.Helper()
	s, err := l.Lead(t.Context(), key)
	if err != nil {
		t.Fatalf("%s.Lead(%q) = %v", l.name, key, err)
	}
	if s.Held() != held {
		t.Fatalf("%s.Lead(%q).Held() = %v, want %v", l.name, key, s.Held(), held)
	}
	return s
}

// waitAsync runs s.Wait(ctx) and sends its error and duration.
type waitResult struct {
	err error
	d   time.Duration
}

func waitAsync(ctx context.Context, s *Lease) <-chan waitResult {
	ch := make(chan waitResult, 1)
	go func() {
		start := time.Now()
		err := s.Wait(ctx)
		ch <- waitResult{err, time.Since(start)}
	}()
	return ch
}

// TestLeadOneHolder races 16 Leads of one key from 3 replicas: exactly
// one holds the lease, and the others name it.
func TestLeadOneHolder(t *testing.T) {
	srv := natsserver.Start(t)
	ls := replicas(t, srv.URL, 3, testTTL)
	const key = "example.com/mod/@v/v0.42.0.zip"
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		leases []*Lease
		times  []time.Duration
	)
	for i := range 16 {
		wg.Go(func() {
			start := time.Now()
			s, err := ls[i%len(ls)].Lead(t.Context(), key)
			d := time.Since(start)
			if err != nil {
				t.Errorf("Lead = %v", err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			leases = append(leases, s)
			times = append(times, d)
		})
	}
	wg.Wait()
	var holders []string
	for _, s := range leases {
		if s.Held() {
			holders = append(holders, s.Holder())
		}
	}
	if len(holders) != 1 {
		t.Fatalf("%d of %d Leads held, want 1", len(holders), len(leases))
	}
	for _, s := range leases {
		if !s.Held() && s.Holder() != holders[0] {
			t.Errorf("Holder() of a lease not held = %q, want %q", s.Holder(), holders[0])
		}
		s.Release()
	}
	slices.Sort(times)
	t.Logf("16 concurrent Leads: median %v, max %v", times[len(times)/2], times[len(times)-1])

	// Sequential Leads, uncontended: the usual cost of a miss.
	times = times[:0]
	for i := range 20 {
		start := time.Now()
		s := mustLead(t, ls[0], fmt.Sprintf("seq/%d", i), true)
		times = append(times, time.Since(start))
		s.Release()
	}
	slices.Sort(times)
	t.Logf("uncontended Lead: median %v, max %v", times[len(times)/2], times[len(times)-1])
}

// TestWaitRelease checks that followers wake promptly when the holder
// releases, and that a release or a new lease between a follower's Lead
// and its Wait is not missed.
func TestWaitRelease(t *testing.T) {
	srv := natsserver.Start(t)
	ls := replicas(t, srv.URL, 3, testTTL)
	a, b, c := ls[0], ls[1], ls[2]

	t.Run("release during Wait", func(t *testing.T) {
		held := mustLead(t, a, "k1", true)
		s := mustLead(t, b, "k1", false)
		woke := waitAsync(t.Context(), s)
		time.Sleep(200 * time.Millisecond)
		start := time.Now()
		held.Release()
		select {
		case r := <-woke:
			if r.err != nil {
				t.Errorf("Wait = %v, want nil", r.err)
			}
			t.Logf("Wait returned %v after Release", time.Since(start))
		case <-time.After(time.Second):
			t.Fatal("Wait did not return within 1s of Release")
		}
	})

	tests := []struct {
		name    string
		between func(t *testing.T, held *Lease)
	}{
		{"released before Wait", func(t *testing.T, held *Lease) {
			held.Release()
		}},
		{"replaced before Wait", func(t *testing.T, held *Lease) {
			held.Release()
			t.Cleanup(mustLead(t, c, "k2", true).Release)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			held := mustLead(t, a, "k2", true)
			s := mustLead(t, b, "k2", false)
			tt.between(t, held)
			start := time.Now()
			if err := s.Wait(t.Context()); err != nil {
				t.Errorf("Wait = %v, want nil", err)
			}
			if d := time.Since(start); d > 200*time.Millisecond {
				t.Errorf("Wait took %v, want at once", d)
			}
		})
	}
}

// TestLapse kills the holder's connection without Release: the
// followers' Waits return once the lease lapses, and then exactly one of
// them holds it.
func TestLapse(t *testing.T) {
	srv := natsserver.Start(t)
	ls := replicas(t, srv.URL, 4, testTTL)
	dead, followers := ls[0], ls[1:]
	const key = "example.com/m/@v/v1.0.0.zip"
	mustLead(t, dead, key, true)
	var woke []<-chan waitResult
	for _, l := range followers {
		woke = append(woke, waitAsync(t.Context(), mustLead(t, l, key, false)))
	}
	time.Sleep(100 * time.Millisecond)
	dead.nc.Close() // no more renewals, no release: a crashed replica
	died := time.Now()
	for i, ch := range woke {
		select {
		case r := <-ch:
			if r.err != nil {
				t.Errorf("follower %d: Wait = %v, want nil", i, r.err)
			}
			if r.d < testTTL {
				t.Errorf("follower %d: Wait returned after %v, before the lease could lapse (%v)", i, r.d, testTTL)
			}
			t.Logf("follower %d: Wait returned %v after the holder died", i, time.Since(died))
		case <-time.After(testLapse + margin):
			t.Fatalf("follower %d: Wait did not return within %v of the holder dying", i, testLapse+margin)
		}
	}

	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		nheld int
	)
	for _, l := range followers {
		wg.Go(func() {
			s, err := l.Lead(t.Context(), key)
			if err != nil {
				t.Errorf("Lead after the lapse = %v", err)
				return
			}
			if s.Held() {
				mu.Lock()
				nheld++
				mu.Unlock()
				t.Cleanup(s.Release)
			}
		})
	}
	wg.Wait()
	if nheld != 1 {
		t.Errorf("after the lapse, %d of %d Leads held, want 1", nheld, len(followers))
	}
}

// TestLongFill holds a lease for 5×LeaseTTL: the heartbeat keeps it, so
// a follower keeps waiting and other replicas keep following.
func TestLongFill(t *testing.T) {
	srv := natsserver.Start(t)
	ls := replicas(t, srv.URL, 3, testTTL)
	a, b, c := ls[0], ls[1], ls[2]
	const key = "example.com/big/@v/v1.0.0.zip"
	held := mustLead(t, a, key, true)
	ctx, cancel := context.WithTimeout(t.Context(), 5*testTTL)
	defer cancel()
	woke := waitAsync(ctx, mustLead(t, b, key, false))
	for ctx.Err() == nil {
		mustLead(t, c, key, false)
		time.Sleep(testTTL / 2)
	}
	r := <-woke
	if !errors.Is(r.err, context.DeadlineExceeded) {
		t.Errorf("Wait during a long fill = %v after %v, want %v at the end of ctx", r.err, r.d, context.DeadlineExceeded)
	}
	s := mustLead(t, c, key, false)
	woke = waitAsync(t.Context(), s)
	held.Release()
	select {
	case r := <-woke:
		if r.err != nil {
			t.Errorf("Wait = %v, want nil", r.err)
		}
	case <-time.After(time.Second):
		t.Fatal("Wait did not return within 1s of Release")
	}
}

// TestWaitContext checks that Wait returns ctx's error when ctx ends.
func TestWaitContext(t *testing.T) {
	srv := natsserver.Start(t)
	ls := replicas(t, srv.URL, 2, testTTL)
	held := mustLead(t, ls[0], "k", true)
	defer held.Release()
	s := mustLead(t, ls[1], "k", false)

	ctx, cancel := context.WithCancel(t.Context())
	woke := waitAsync(ctx, s)
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	cancel()
	select {
	case r := <-woke:
		if !errors.Is(r.err, context.Canceled) {
			t.Errorf("Wait = %v, want %v", r.err, context.Canceled)
		}
		if d := time.Since(start); d > 100*time.Millisecond {
			t.Errorf("Wait returned %v after cancel, want at once", d)
		}
	case <-time.After(time.Second):
		t.Fatal("Wait did not return within 1s of cancel")
	}
	if err := s.Wait(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Wait(ended ctx) = %v, want %v", err, context.Canceled)
	}
}

// TestRelease checks that Release may be called more than once, at the
// same time, and does nothing for a lease not held.
func TestRelease(t *testing.T) {
	srv := natsserver.Start(t)
	ls := replicas(t, srv.URL, 3, testTTL)
	a, b, c := ls[0], ls[1], ls[2]
	held := mustLead(t, a, "k", true)
	s := mustLead(t, b, "k", false)
	s.Release()
	s.Release()
	mustLead(t, c, "k", false) // still a's
	if err := held.Wait(t.Context()); err != nil {
		t.Errorf("Wait on a held lease = %v, want nil", err)
	}
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(held.Release)
	}
	wg.Wait()
	held.Release()
	mustLead(t, c, "k", true).Release()
}
