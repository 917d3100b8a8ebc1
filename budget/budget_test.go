package budget

import (
	"fmt"
	"math"
	"sync"
	"testing"
	"time"
)

// start is an arbitrary fixed instant for the fake clocks.
var start = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

// clock is a fake clock safe for concurrent use.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: start} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func mustNew(t testing.TB, cfg Config) *Budget {
	t.Helper()
	b, err := New(cfg)
	if err != nil {
		t.Fatalf("New(%+v): %v", cfg, err)
	}
	return b
}

// A step advances the clock by wait, then charges client and module.
type step struct {
	wait           time.Duration
	client, module string
	ok             bool
	which          string
	retry          time.Duration
}

// okStep is a step that must succeed.
func okStep(wait time.Duration, client, module string) step {
	return step{wait: wait, client: client, module: module, ok: true}
}

func TestCharge(t *testing.T) {
	tests := []struct {
		name  string
		cfg   Config
		steps []step
	}{
		{
			name: "client burst then refused",
			cfg:  Config{Client: Limit{Rate: 1, Burst: 3}},
			steps: []step{
				okStep(0, "c", "m"),
				okStep(0, "c", "m"),
				okStep(0, "c", "m"),
				{client: "c", module: "m", which: "client", retry: time.Second},
				{client: "c", module: "m", which: "client", retry: time.Second},
			},
		},
		{
			name: "module burst then refused",
			cfg:  Config{Module: Limit{Rate: 1, Burst: 2}},
			steps: []step{
				okStep(0, "a", "m"),
				okStep(0, "b", "m"),
				{client: "c", module: "m", which: "module", retry: time.Second},
			},
		},
		{
			name: "refill",
			cfg:  Config{Client: Limit{Rate: 2, Burst: 1}},
			steps: []step{
				okStep(0, "c", "m"),
				{wait: 100 * time.Millisecond, client: "c", module: "m", which: "client", retry: time.Second},
				okStep(400*time.Millisecond, "c", "m"),
				{client: "c", module: "m", which: "client", retry: time.Second},
				okStep(time.Hour, "c", "m"), // refills to the burst only
				{client: "c", module: "m", which: "client", retry: time.Second},
			},
		},
		{
			name: "retry-after rounds up to whole seconds",
			cfg:  Config{Module: Limit{Rate: 0.1, Burst: 1}},
			steps: []step{
				okStep(0, "c", "m"),
				{client: "c", module: "m", which: "module", retry: 10 * time.Second},
				{wait: 2500 * time.Millisecond, client: "c", module: "m", which: "module", retry: 8 * time.Second},
				{wait: 7400 * time.Millisecond, client: "c", module: "m", which: "module", retry: time.Second},
				okStep(100*time.Millisecond, "c", "m"),
			},
		},
		{
			name: "default burst is int(rate)",
			cfg:  Config{Client: Limit{Rate: 2.5}},
			steps: []step{
				okStep(0, "c", "m"),
				okStep(0, "c", "m"),
				{client: "c", module: "m", which: "client", retry: time.Second},
			},
		},
		{
			name: "default burst is at least 1",
			cfg:  Config{Client: Limit{Rate: 0.5}},
			steps: []step{
				okStep(0, "c", "m"),
				{client: "c", module: "m", which: "client", retry: 2 * time.Second},
			},
		},
		{
			name: "module refusal does not charge client",
			cfg:  Config{Client: Limit{Rate: 1, Burst: 2}, Module: Limit{Rate: 1, Burst: 1}},
			steps: []step{
				okStep(0, "c", "m1"),
				{client: "c", module: "m1", which: "module", retry: time.Second},
				{client: "c", module: "m1", which: "module", retry: time.Second},
				okStep(0, "c", "m2"), // c's second token is still there
				{client: "c", module: "m3", which: "client", retry: time.Second},
			},
		},
		{
			name: "client refusal does not charge module",
			cfg:  Config{Client: Limit{Rate: 1, Burst: 1}, Module: Limit{Rate: 1, Burst: 2}},
			steps: []step{
				okStep(0, "a", "m"),
				{client: "a", module: "m", which: "client", retry: time.Second},
				{client: "a", module: "m", which: "client", retry: time.Second},
				okStep(0, "b", "m"), // m's second token is still there
				{client: "c", module: "m", which: "module", retry: time.Second},
			},
		},
		{
			name: "both empty reports client",
			cfg:  Config{Client: Limit{Rate: 1, Burst: 1}, Module: Limit{Rate: 0.25, Burst: 1}},
			steps: []step{
				okStep(0, "c", "m"),
				{client: "c", module: "m", which: "client", retry: time.Second},
				{wait: time.Second, client: "c", module: "m", which: "module", retry: 3 * time.Second},
			},
		},
		{
			name: "clients are isolated",
			cfg:  Config{Client: Limit{Rate: 1, Burst: 1}},
			steps: []step{
				okStep(0, "a", "m"),
				{client: "a", module: "m", which: "client", retry: time.Second},
				okStep(0, "b", "m"),
				okStep(0, "", "m"),
				{client: "b", module: "m", which: "client", retry: time.Second},
			},
		},
		{
			name: "modules are isolated",
			cfg:  Config{Module: Limit{Rate: 1, Burst: 1}},
			steps: []step{
				okStep(0, "c", "x"),
				{client: "c", module: "x", which: "module", retry: time.Second},
				okStep(0, "c", "y"),
				{client: "c", module: "y", which: "module", retry: time.Second},
			},
		},
		{
			name: "client and module keys are separate namespaces",
			cfg:  Config{Client: Limit{Rate: 1, Burst: 1}, Module: Limit{Rate: 1, Burst: 1}},
			steps: []step{
				okStep(0, "k", "j"),
				okStep(0, "j", "k"),
			},
		},
		{
			name: "clock going backwards",
			cfg:  Config{Client: Limit{Rate: 1, Burst: 1}},
			steps: []step{
				okStep(0, "c", "m"),
				{wait: -time.Hour, client: "c", module: "m", which: "client", retry: time.Second},
				okStep(time.Hour+time.Second, "c", "m"),
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock()
			tt.cfg.Now = clk.Now
			b := mustNew(t, tt.cfg)
			for i, s := range tt.steps {
				clk.Advance(s.wait)
				ok, which, retry := b.Charge(s.client, s.module)
				if ok != s.ok || which != s.which || retry != s.retry {
					t.Errorf("step %d: Charge(%q, %q) = %v, %q, %v, want %v, %q, %v",
						i, s.client, s.module, ok, which, retry, s.ok, s.which, s.retry)
				}
			}
		})
	}
}

func TestZeroConfigNeverRefuses(t *testing.T) {
	for _, cfg := range []Config{
		{},
		{Client: Limit{Burst: 1}, Module: Limit{Burst: 1}}, // burst without rate: still no limit
		{MaxKeys: 1},
	} {
		b := mustNew(t, cfg)
		for i := range 10000 {
			client, module := fmt.Sprint("c", i%7), fmt.Sprint("m", i%3)
			if ok, which, retry := b.Charge(client, module); !ok {
				t.Fatalf("config %+v: Charge(%q, %q) = %v, %q, %v, want true",
					cfg, client, module, ok, which, retry)
			}
		}
	}
}

func TestRetryAfterAtLeastOneSecond(t *testing.T) {
	for _, r := range []float64{1e-300, 0.001, 0.3, 1, 7, 1000, 1e12} {
		clk := newClock()
		b := mustNew(t, Config{Client: Limit{Rate: r, Burst: 1}, Now: clk.Now})
		b.Charge("c", "m")
		for _, d := range []time.Duration{0, time.Nanosecond, 999 * time.Millisecond} {
			clk.Advance(d)
			ok, _, retry := b.Charge("c", "m")
			if !ok && (retry < time.Second || retry%time.Second != 0) {
				t.Errorf("rate %g: Charge(%q, %q) retry = %v, want whole seconds ≥ 1s", r, "c", "m", retry)
			}
		}
	}
}

func TestMaxKeys(t *testing.T) {
	const (
		maxKeys = 50
		burst   = 1000
	)
	clk := newClock()
	b := mustNew(t, Config{
		Client:  Limit{Rate: 1, Burst: burst},
		Module:  Limit{Rate: 1, Burst: burst},
		MaxKeys: maxKeys,
		Now:     clk.Now,
	})
	// Keep "hot" recently used while inserting many more keys than fit.
	for i := range maxKeys + 100 {
		if ok, which, retry := b.Charge("hot", "hot"); !ok {
			t.Fatalf("Charge(%q, %q) = %v, %q, %v, want true", "hot", "hot", ok, which, retry)
		}
		key := fmt.Sprint("key-", i)
		if ok, which, retry := b.Charge(key, key); !ok {
			t.Fatalf("Charge(%q, %q) = %v, %q, %v, want true", key, key, ok, which, retry)
		}
		if n := b.client.len(); n > maxKeys {
			t.Fatalf("after %d keys: %d client buckets, want ≤ %d", i+1, n, maxKeys)
		}
		if n := b.module.len(); n > maxKeys {
			t.Fatalf("after %d keys: %d module buckets, want ≤ %d", i+1, n, maxKeys)
		}
	}
	for _, bs := range []*buckets{b.client, b.module} {
		if n := bs.len(); n != maxKeys {
			t.Errorf("%d buckets, want %d", n, maxKeys)
		}
		// The survivors are "hot", still charged, and the newest maxKeys-1 keys.
		if e, ok := bs.byKey["hot"]; !ok {
			t.Errorf("recently used key %q was forgotten", "hot")
		} else if got, want := e.Value.(*entry).lim.TokensAt(clk.Now()), float64(burst-maxKeys-100); got != want {
			t.Errorf("key %q has %v tokens, want %v", "hot", got, want)
		}
		for i := range maxKeys + 100 {
			key := fmt.Sprint("key-", i)
			_, ok := bs.byKey[key]
			if want := i > 100; ok != want {
				t.Errorf("key %q remembered = %v, want %v", key, ok, want)
			}
		}
	}
}

func TestMaxKeysEvictsLeastRecentlyUsed(t *testing.T) {
	b := mustNew(t, Config{Client: Limit{Rate: 1, Burst: 1}, MaxKeys: 3, Now: newClock().Now})
	for _, c := range []string{"a", "b", "c"} {
		b.Charge(c, "m")
	}
	b.Charge("a", "m") // a is now the most recently used; b the least
	b.Charge("d", "m") // forgets b
	for _, tc := range []struct {
		client string
		ok     bool
	}{
		{"a", false},
		{"c", false},
		{"d", false},
		{"b", true}, // forgotten: full again; forgets a
		{"a", true}, // forgotten: full again
	} {
		if ok, which, retry := b.Charge(tc.client, "m"); ok != tc.ok {
			t.Errorf("Charge(%q, %q) = %v, %q, %v, want %v", tc.client, "m", ok, which, retry, tc.ok)
		}
	}
}

func TestNewErrors(t *testing.T) {
	nan, inf := math.NaN(), math.Inf(1)
	tests := []struct {
		cfg  Config
		want string
	}{
		{Config{Client: Limit{Rate: -1}}, "budget: client.rate: negative"},
		{Config{Module: Limit{Rate: -0.5}}, "budget: module.rate: negative"},
		{Config{Client: Limit{Rate: nan}}, "budget: client.rate: not finite"},
		{Config{Module: Limit{Rate: inf}}, "budget: module.rate: not finite"},
		{Config{Module: Limit{Rate: -inf}}, "budget: module.rate: not finite"},
		{Config{Client: Limit{Rate: 1, Burst: -1}}, "budget: client.burst: negative"},
		{Config{Module: Limit{Burst: -1}}, "budget: module.burst: negative"},
		{Config{MaxKeys: -1}, "budget: maxkeys: negative"},
	}
	for _, tt := range tests {
		b, err := New(tt.cfg)
		if err == nil || err.Error() != tt.want {
			t.Errorf("New(%+v) = %v, %v, want error %q", tt.cfg, b, err, tt.want)
		}
	}

	// Valid configs.
	for _, cfg := range []Config{
		{},
		{Client: Limit{Rate: 1e-9}, Module: Limit{Rate: 1e300}, MaxKeys: 1},
		{Client: Limit{Rate: 3, Burst: 100}},
	} {
		if _, err := New(cfg); err != nil {
			t.Errorf("New(%+v): %v", cfg, err)
		}
	}
}

func TestConcurrent(t *testing.T) {
	const (
		goroutines = 8
		charges    = 1000
	)
	// A frozen clock makes the outcome exact: each client passes its own
	// bucket 500 times (4000 in all), and the shared module bucket lets
	// 3000 of those through.
	b := mustNew(t, Config{
		Client: Limit{Rate: 1, Burst: 500},
		Module: Limit{Rate: 1, Burst: 3000},
		Now:    newClock().Now,
	})
	var wg sync.WaitGroup
	counts := make([]int, goroutines)
	for g := range goroutines {
		wg.Go(func() {
			client := fmt.Sprint("client-", g)
			for range charges {
				if ok, _, _ := b.Charge(client, "m"); ok {
					counts[g]++
				}
			}
		})
	}
	wg.Wait()
	total := 0
	for g, n := range counts {
		if n > 500 {
			t.Errorf("client-%d: %d charges allowed, want ≤ 500", g, n)
		}
		total += n
	}
	if total != 3000 {
		t.Errorf("%d charges allowed in all, want 3000", total)
	}
}

func TestConcurrentEviction(t *testing.T) {
	clk := newClock()
	b := mustNew(t, Config{
		Client:  Limit{Rate: 10, Burst: 2},
		Module:  Limit{Rate: 100, Burst: 5},
		MaxKeys: 16,
		Now:     clk.Now,
	})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 1000 {
				if g == 0 && i%100 == 0 {
					clk.Advance(time.Second)
				}
				b.Charge(fmt.Sprint("c", (g*31+i)%40), fmt.Sprint("m", i%20))
			}
		})
	}
	wg.Wait()
	if n, m := b.client.len(), b.module.len(); n > 16 || m > 16 {
		t.Errorf("%d client and %d module buckets, want ≤ 16 each", n, m)
	}
}

func TestChargeKnownKeysDoesNotAllocate(t *testing.T) {
	b := mustNew(t, Config{
		Client: Limit{Rate: 1e6, Burst: 1e6},
		Module: Limit{Rate: 1e6, Burst: 1e6},
		Now:    newClock().Now,
	})
	b.Charge("c", "m")
	if n := testing.AllocsPerRun(100, func() { b.Charge("c", "m") }); n != 0 {
		t.Errorf("Charge of known keys: %v allocations, want 0", n)
	}
}

func BenchmarkCharge(b *testing.B) {
	bg := mustNew(b, Config{Client: Limit{Rate: 1e9}, Module: Limit{Rate: 1e9}})
	for b.Loop() {
		bg.Charge("spiffe://example.org/ci", "golang.org/x/mod")
	}
}

func TestEmptyModuleHasNoBucket(t *testing.T) {
	b, err := New(Config{Client: Limit{Rate: 1000, Burst: 1000}, Module: Limit{Rate: 1, Burst: 1}})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if ok, which, _ := b.Charge("c", ""); !ok {
			t.Fatalf("Charge(%q, %q) #%d refused by %s, want no module bucket", "c", "", i, which)
		}
	}
}
