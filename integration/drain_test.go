package integration

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/modgate/modgate/audit"
)

// TestCacheServesWhileUpstreamDrained: the only upstream dies under load
// and stays down past the drain threshold. What the cache holds is served
// throughout (artifacts 200, the list stale with its Warning), and only
// true misses are refused, with a 503 ("no healthy upstream") once the
// upstream is drained.
func TestCacheServesWhileUpstreamDrained(t *testing.T) {
	public, private := upstreams(t)
	g := startModgate(t, gatewayConfig(public, private)+`
health: {probe_path: /example.com/a/@v/list, interval: 100ms, timeout: 500ms, fail_threshold: 3, recover_threshold: 2, drain_period: 10m}
cache:
  ttl: {query: 1s}
`)
	cached := []string{
		"/example.com/a/@v/v1.0.0.info", "/example.com/a/@v/v1.0.0.mod", "/example.com/a/@v/v1.0.0.zip",
		"/example.com/b/@v/v1.0.0.mod",
	}
	const list = "/example.com/a/@v/list"
	const miss = "/example.com/a/@v/v1.1.0.mod"
	client := &http.Client{Timeout: 10 * time.Second}
	get := func(path string) (*http.Response, error) {
		resp, err := client.Get(g.URL + path)
		if err != nil {
			return nil, err
		}
		resp.Body.Close()
		return resp, nil
	}
	for _, p := range append(slices.Clone(cached), list) {
		if resp, err := get(p); err != nil || resp.StatusCode != 200 {
			t.Fatalf("warming %s: %v %v", p, resp, err)
		}
	}

	// The upstream dies. Load runs from now on: real failures (probes and
	// fills) drain it.
	public.Close()
	type result struct {
		path   string
		status int
		cache  string
		warn   string
		err    error
	}
	var (
		mu      sync.Mutex
		results []result
	)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := 0; i < 2000 && ctx.Err() == nil; i++ {
				p := cached[(w+i)%len(cached)]
				switch i % 10 {
				case 7:
					p = list
				case 9:
					p = miss
				}
				resp, err := get(p)
				r := result{path: p, err: err}
				if err == nil {
					r.status, r.cache, r.warn = resp.StatusCode, resp.Header.Get("X-Modgate-Cache"), resp.Header.Get("Warning")
				}
				mu.Lock()
				results = append(results, r)
				mu.Unlock()
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
	// Keep the load on until the upstream has been drained for a while.
	drained := false
	for ctx.Err() == nil && !drained {
		drained = slices.ContainsFunc(g.events(t), func(e audit.Event) bool {
			return e.Event.Action == "upstream-health" && e.Event.Reason == "healthy -> draining"
		})
		time.Sleep(50 * time.Millisecond)
	}
	if !drained {
		t.Fatalf("the dead upstream was not drained within 3s; log:\n%s", g.logText())
	}
	wg.Wait()

	counts := map[string]int{}
	wrong := 0
	for _, r := range results {
		var bad string
		switch {
		case r.err != nil:
			bad = fmt.Sprintf("GET %s: %v", r.path, r.err)
		case r.path == miss:
			if r.status != http.StatusBadGateway && r.status != http.StatusServiceUnavailable {
				bad = fmt.Sprintf("miss %s = %d, want 502 (upstream failing) or 503 (drained)", r.path, r.status)
			}
		case r.path == list:
			if r.status != 200 || (r.cache == "stale" && r.warn == "") || (r.cache != "stale" && r.cache != "hit") {
				bad = fmt.Sprintf("list = %d, cache %q, Warning %q; want 200, fresh or stale with a Warning", r.status, r.cache, r.warn)
			}
		default:
			if r.status != 200 || r.cache != "hit" {
				bad = fmt.Sprintf("cached %s = %d (cache %q), want a 200 hit", r.path, r.status, r.cache)
			}
		}
		if bad != "" {
			if wrong++; wrong <= 5 {
				t.Error(bad)
			}
		}
		counts[fmt.Sprintf("%s %d %s", r.path, r.status, r.cache)]++
	}
	if wrong > 0 {
		t.Errorf("%d of %d answers wrong while the upstream was down", wrong, len(results))
	}
	t.Logf("while the upstream was down (%d requests): %v", len(results), counts)
	if counts[fmt.Sprintf("%s 503 miss", miss)] == 0 {
		t.Errorf("no miss was answered 503 after the drain: %v", counts)
	}
	if counts[fmt.Sprintf("%s 200 stale", list)] == 0 {
		t.Errorf("the list was never served stale: %v", counts)
	}

	// The audit says the same: every cached request a 200 hit.
	for _, e := range g.events(t) {
		if e.Event.Action != audit.ActionRequest || e.URL == nil || !slices.Contains(cached, e.URL.Path) {
			continue
		}
		if e.HTTP.Response.StatusCode != 200 {
			t.Errorf("audit: %s answered %d (%s)", e.URL.Path, e.HTTP.Response.StatusCode, e.Event.Reason)
			break
		}
	}
}
