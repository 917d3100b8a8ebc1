package health

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/modgate/modgate/upstream"
)

// ProbeConfig configures active probes. Client is required.
type ProbeConfig struct {
	Client *upstream.Client
	// Path is the request each probe sends. Default "/golang.org/x/mod/@v/list".
	Path string
	// Interval is the time between probe rounds. Default 5s.
	Interval time.Duration
	// Timeout bounds one probe. Default 8s.
	Timeout time.Duration
}

func (pc *ProbeConfig) defaults() {
	if pc.Path == "" {
		pc.Path = "/golang.org/x/mod/@v/list"
	}
	if pc.Interval <= 0 {
		pc.Interval = 5 * time.Second
	}
	if pc.Timeout <= 0 {
		pc.Timeout = 8 * time.Second
	}
}

// Probe probes every upstream once, concurrently, reports the results,
// and then removes upstreams drained for long enough (Tick). An upstream
// that answers at all below 500 (a 404 for the probe module is an answer)
// succeeds; a 5xx, a failed connection or no answer within the timeout
// fails.
func (r *Registry) Probe(ctx context.Context, pc ProbeConfig) {
	pc.defaults()
	set := r.Upstreams()
	all := append(set.Public, set.Private...)
	var wg sync.WaitGroup
	for _, u := range all {
		if u.URL != nil && u.URL.Host == upstream.InProcessHost {
			continue // in this process: there is no connection to lose
		}
		wg.Go(func() {
			pctx, cancel := context.WithTimeout(ctx, pc.Timeout)
			defer cancel()
			resp, err := pc.Client.Do(pctx, u, http.MethodGet, pc.Path, nil)
			ok := err == nil && resp.StatusCode < 500
			if err == nil {
				resp.Body.Close()
			}
			if ctx.Err() == nil {
				r.Report(u.Name, ok)
			}
		})
	}
	wg.Wait()
	r.Tick()
}

// RunProber probes every Interval until ctx ends.
func (r *Registry) RunProber(ctx context.Context, pc ProbeConfig) {
	pc.defaults()
	t := time.NewTicker(pc.Interval)
	defer t.Stop()
	for {
		r.Probe(ctx, pc)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
