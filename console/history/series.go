package history

import (
	"cmp"
	"math"
	"slices"
	"time"
)

// A Point is one value of a derived series, at the time of the later of
// the two samples it was derived from.
type Point struct {
	Time  time.Time
	Value float64
}

// A StateSpan is a stretch of time in which an upstream was in one state:
// from the first sample that showed State to the first that did not (the
// change happened in between), or, for the newest span, to the newest
// sample.
type StateSpan struct {
	State    string
	From, To time.Time
}

// RequestRate is the rate of requests per second in each interval between
// consecutive samples. A counter that went down (a reset) counts its new
// value as the interval's increase. Intervals that are not positive are
// left out.
func RequestRate(s []Sample) []Point {
	return rate(s, func(x Sample) float64 { return x.Requests })
}

// VerifyFailureRate is the rate of failed verifications (mismatch or
// failed) per second, like RequestRate.
func VerifyFailureRate(s []Sample) []Point {
	return rate(s, func(x Sample) float64 { return x.VerifyFailures })
}

// RefusalRate is the rate of refusals by rule per second, like
// RequestRate. A rule absent from a sample counts as zero there.
func RefusalRate(s []Sample, rule string) []Point {
	return rate(s, func(x Sample) float64 { return x.Refusals[rule] })
}

// HitRatio is the cache hit ratio of each interval between consecutive
// samples: the increase of Hits divided by the increase of Lookups, in
// [0, 1]. An interval with no lookups has no point.
func HitRatio(s []Sample) []Point {
	var pts []Point
	for i := 1; i < len(s); i++ {
		lookups := increase(s[i-1].Lookups, s[i].Lookups)
		if lookups <= 0 {
			continue
		}
		r := increase(s[i-1].Hits, s[i].Hits) / lookups
		if !finite(r) {
			continue
		}
		pts = append(pts, Point{s[i].Time, math.Min(math.Max(r, 0), 1)})
	}
	return pts
}

// Rules is every rule that has a refusal count in any sample, sorted by
// the refusals within the window (the sum of the intervals' increases),
// most first, then by name.
func Rules(s []Sample) []string {
	total := map[string]float64{}
	for i, x := range s {
		for rule, v := range x.Refusals {
			var n float64 // a rule seen only once counts 0
			if i > 0 {
				n = increase(s[i-1].Refusals[rule], v)
			}
			total[rule] += n
		}
	}
	rules := make([]string, 0, len(total))
	for rule := range total {
		rules = append(rules, rule)
	}
	slices.SortFunc(rules, func(a, b string) int {
		if c := cmp.Compare(total[b], total[a]); c != 0 {
			return c
		}
		return cmp.Compare(a, b)
	})
	return rules
}

// UpstreamStates is, for each upstream in any sample, its consecutive
// spans of one state, oldest first. A sample without the upstream ends
// its current span; the next sample with it starts a new one.
func UpstreamStates(s []Sample) map[string][]StateSpan {
	out := map[string][]StateSpan{}
	open := map[string]bool{} // upstreams whose last span is still growing
	for _, x := range s {
		for up := range open {
			if _, ok := x.Upstreams[up]; !ok {
				spans := out[up]
				spans[len(spans)-1].To = x.Time
				delete(open, up)
			}
		}
		for up, state := range x.Upstreams {
			spans := out[up]
			if open[up] {
				last := &spans[len(spans)-1]
				if last.State == state {
					last.To = x.Time
					continue
				}
				last.To = x.Time
			}
			out[up] = append(spans, StateSpan{State: state, From: x.Time, To: x.Time})
			open[up] = true
		}
	}
	return out
}

// rate is the per-second rate of the counter v between consecutive
// samples.
func rate(s []Sample, v func(Sample) float64) []Point {
	var pts []Point
	for i := 1; i < len(s); i++ {
		secs := s[i].Time.Sub(s[i-1].Time).Seconds()
		if secs <= 0 {
			continue
		}
		r := increase(v(s[i-1]), v(s[i])) / secs
		if !finite(r) {
			continue
		}
		pts = append(pts, Point{s[i].Time, r})
	}
	return pts
}

// increase is a counter's increase from prev to cur: cur itself if it
// went down (the counter was reset and counted cur since).
func increase(prev, cur float64) float64 {
	if cur < prev {
		return cur
	}
	return cur - prev
}

func finite(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }
