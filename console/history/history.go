// Package history keeps the last hour of modgate's own metrics and draws
// them as small inline SVG charts for the web console's Overview page.
//
// A Sampler reads a prometheus.Gatherer (the registry /metrics serves, so
// the charts and /metrics never disagree) every Interval and keeps the
// newest Keep samples in a ring; the oldest is dropped when it is full.
// Each Sample holds only the few values the page shows: requests, cache
// hits and lookups, refusals by rule, failed verifications (all counters,
// as totals since the process started) and each upstream's health state.
// A family that is absent from the gather (a fresh process has no series
// yet) reads as zero or empty. Latest is the newest sample kept, Current a
// fresh one, kept nowhere, for totals that match /metrics to the moment. A
// Sampler is safe for concurrent use; Run is its only goroutine, and its
// caller owns it.
//
// The derived series (RequestRate, HitRatio, RefusalRate, VerifyFailureRate,
// UpstreamStates, Rules) are pure functions of a []Sample, oldest first.
// They never return NaN or ±Inf: an interval that would need a division by
// zero is left out.
//
// Line and Strip render series as self-contained SVG elements, returned as
// template.HTML for the page's html/template. Every string that came from
// outside (titles, units, rule and upstream names) is escaped and made
// valid XML; the elements carry no style attributes and no script, only
// class names (mg-…) for the page's stylesheet and plain presentation
// attributes as a fallback, so they are fit for a page whose
// Content-Security-Policy forbids inline script and style. Numbers are
// written with fixed precision and are always finite. The classes: mg-chart
// (each svg), mg-title, mg-chart-last, mg-chart-empty, mg-tick, mg-axis,
// mg-grid, mg-line and mg-dot (the newest point), mg-alert (with
// Highlight); in the strip also mg-strip, mg-upstream, mg-upstream-name,
// mg-upstream-since, mg-band (the window behind the spans) and mg-healthy,
// mg-draining, mg-removed, mg-unknown.
package history

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// The metric families a Sample reads, as the metrics package names them.
const (
	familyRequests      = "modgate_requests_total"
	familyRefusals      = "modgate_refusals_total"
	familyVerifications = "modgate_verifications_total"
	familyUpstreamState = "modgate_upstream_state"
)

// A Sample is the values of the process's metrics at one time. The
// counters are totals since the process started.
type Sample struct {
	Time time.Time
	// Requests is modgate_requests_total summed over all its labels.
	Requests float64
	// Hits is modgate_requests_total with cache="hit".
	Hits float64
	// Lookups is modgate_requests_total with any cache status but
	// "bypass": the requests that looked in the cache (hit, miss,
	// coalesced, stale, negative).
	Lookups float64
	// Refusals is modgate_refusals_total by rule.
	Refusals map[string]float64
	// VerifyFailures is modgate_verifications_total with result
	// "mismatch" or "failed".
	VerifyFailures float64
	// Upstreams maps each upstream in modgate_upstream_state to the state
	// whose gauge is 1 (healthy, draining, removed). An upstream with no
	// state at 1 is left out; if more than one is 1 (a gather between
	// the gauges' updates) the worst wins: removed, draining, healthy,
	// then any other state by name.
	Upstreams map[string]string
}

// HitRatio is the cache hit ratio since the process started: Hits divided
// by Lookups. It is false when there were no lookups.
func (s Sample) HitRatio() (float64, bool) {
	if s.Lookups <= 0 {
		return 0, false
	}
	return math.Min(math.Max(s.Hits/s.Lookups, 0), 1), true
}

// Refused is the number of refusals since the process started, all rules
// together.
func (s Sample) Refused() float64 {
	var n float64
	for _, v := range s.Refusals {
		n += v
	}
	return n
}

// clone returns s with maps of its own.
func (s Sample) clone() Sample {
	s.Refusals = maps.Clone(s.Refusals)
	s.Upstreams = maps.Clone(s.Upstreams)
	return s
}

// Options configures a Sampler. The zero value works.
type Options struct {
	// Interval is the time between samples. Default 10s.
	Interval time.Duration
	// Keep is the number of samples kept. Default 360 (one hour of
	// 10-second samples).
	Keep int
	// Now is the clock samples are stamped with. Default time.Now.
	Now func() time.Time
	// Logger receives Run's failures to gather. Default slog.Default().
	Logger *slog.Logger
}

// A Sampler samples a prometheus.Gatherer every Interval and keeps the
// last Keep samples.
type Sampler struct {
	g        prometheus.Gatherer
	interval time.Duration
	keep     int
	now      func() time.Time
	log      *slog.Logger

	mu   sync.Mutex
	ring []Sample // oldest at next once len(ring) == keep
	next int      // where the next sample goes once the ring is full
}

// New returns a Sampler of g, which must not be nil. Options that are zero
// or negative take their defaults.
func New(g prometheus.Gatherer, opts Options) *Sampler {
	if opts.Interval <= 0 {
		opts.Interval = 10 * time.Second
	}
	if opts.Keep <= 0 {
		opts.Keep = 360
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Sampler{
		g:        g,
		interval: opts.Interval,
		keep:     opts.Keep,
		now:      opts.Now,
		log:      opts.Logger,
		ring:     make([]Sample, 0, min(opts.Keep, 1024)),
	}
}

// Window is the time the samples kept span when the ring is full:
// Interval × Keep (an hour by default).
func (s *Sampler) Window() time.Duration {
	return s.interval * time.Duration(s.keep)
}

// Interval is the time between samples.
func (s *Sampler) Interval() time.Duration { return s.interval }

// Run takes a sample at once, then one every Interval, until ctx is done.
// A failure to gather is logged when it starts, when its message changes
// and when it ends, not at every sample.
func (s *Sampler) Run(ctx context.Context) {
	t := time.NewTicker(s.interval)
	defer t.Stop()
	var failing string
	for {
		err := s.Sample()
		switch {
		case err != nil && err.Error() != failing:
			failing = err.Error()
			s.log.Warn("sample metrics", "err", err)
		case err == nil && failing != "":
			failing = ""
			s.log.Info("sample metrics: recovered")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Sample takes one sample now and keeps it. If the gatherer reports an
// error but still returns metric families (one failing collector elsewhere
// in the registry, such as the process collector without /proc), the
// sample is kept and the error returned; if it returns no families,
// nothing is kept.
func (s *Sampler) Sample() error {
	smp, err := s.gather()
	if smp == nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.ring) < s.keep {
		s.ring = append(s.ring, *smp)
		return err
	}
	s.ring[s.next] = *smp
	s.next = (s.next + 1) % s.keep
	return err
}

// Current gathers the metrics now and returns them as a Sample without
// keeping it: the totals since the process started, as /metrics shows them
// at this moment (Latest may be up to Interval older). Errors are as for
// Sample; with no families at all the Sample is zero.
func (s *Sampler) Current() (Sample, error) {
	smp, err := s.gather()
	if smp == nil {
		return Sample{}, err
	}
	return *smp, err
}

// gather gathers the metrics and parses them; nil if the gatherer failed
// without returning any families.
func (s *Sampler) gather() (*Sample, error) {
	families, err := s.g.Gather()
	if err != nil {
		err = fmt.Errorf("gather metrics: %w", err)
		if len(families) == 0 {
			return nil, err
		}
	}
	smp := parse(s.now(), families)
	return &smp, err
}

// Samples returns a copy of the samples kept, oldest first.
func (s *Sampler) Samples() []Sample {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Sample, 0, len(s.ring))
	for _, smp := range s.ring[s.next:] {
		out = append(out, smp.clone())
	}
	for _, smp := range s.ring[:s.next] {
		out = append(out, smp.clone())
	}
	return out
}

// Latest returns a copy of the newest sample kept, or false if none was
// taken yet. Its counters are the totals since the process started, as
// /metrics showed them when it was taken; the overall hit ratio is its
// HitRatio.
func (s *Sampler) Latest() (Sample, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.ring) == 0 {
		return Sample{}, false
	}
	i := len(s.ring) - 1
	if len(s.ring) == s.keep {
		i = (s.next + s.keep - 1) % s.keep
	}
	return s.ring[i].clone(), true
}

// parse reads a Sample out of gathered metric families. Values that are
// not finite read as zero.
func parse(t time.Time, families []*dto.MetricFamily) Sample {
	smp := Sample{Time: t, Refusals: map[string]float64{}, Upstreams: map[string]string{}}
	for _, f := range families {
		switch f.GetName() {
		case familyRequests:
			for _, m := range f.GetMetric() {
				v := value(m)
				smp.Requests += v
				switch label(m, "cache") {
				case "hit":
					smp.Hits += v
					smp.Lookups += v
				case "bypass":
				default:
					smp.Lookups += v
				}
			}
		case familyRefusals:
			for _, m := range f.GetMetric() {
				smp.Refusals[label(m, "rule")] += value(m)
			}
		case familyVerifications:
			for _, m := range f.GetMetric() {
				switch label(m, "result") {
				case "mismatch", "failed":
					smp.VerifyFailures += value(m)
				}
			}
		case familyUpstreamState:
			for _, m := range f.GetMetric() {
				if value(m) != 1 {
					continue
				}
				up, state := label(m, "upstream"), label(m, "state")
				if old, ok := smp.Upstreams[up]; !ok || worse(state, old) {
					smp.Upstreams[up] = state
				}
			}
		}
	}
	return smp
}

// value is a counter's, gauge's or untyped metric's value; zero if it is
// none of those or not finite.
func value(m *dto.Metric) float64 {
	var v float64
	switch {
	case m.GetCounter() != nil:
		v = m.GetCounter().GetValue()
	case m.GetGauge() != nil:
		v = m.GetGauge().GetValue()
	case m.GetUntyped() != nil:
		v = m.GetUntyped().GetValue()
	}
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0
	}
	return v
}

// label is the value of m's label name, "" if it has none.
func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// severity ranks the known upstream states, worst highest.
var severity = map[string]int{"healthy": 1, "draining": 2, "removed": 3}

// worse reports whether state a is worse than b: by severity, then, for
// two states of the same rank, the first by name.
func worse(a, b string) bool {
	if severity[a] != severity[b] {
		return severity[a] > severity[b]
	}
	return a < b
}
