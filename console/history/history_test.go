package history

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/modgate/modgate/metrics"
)

var t0 = time.Date(2026, 3, 1, 14, 0, 0, 0, time.UTC)

// at is t0 plus sec seconds.
func at(sec int) time.Time { return t0.Add(time.Duration(sec) * time.Second) }

// fakeClock is a clock that moves 10s each time it is read, from t0.
type fakeClock struct{ n int }

func (c *fakeClock) now() time.Time {
	t := at(10 * c.n)
	c.n++
	return t
}

// TestSampleRegistry updates a real metrics registry and checks that a
// sample of it holds what the registry does.
func TestSampleRegistry(t *testing.T) {
	tests := []struct {
		name   string
		update func(m *metrics.Metrics)
		want   Sample
	}{
		{
			name:   "fresh process",
			update: func(m *metrics.Metrics) {},
			want:   Sample{Refusals: map[string]float64{}, Upstreams: map[string]string{}},
		},
		{
			name: "requests",
			update: func(m *metrics.Metrics) {
				for range 3 {
					m.Request("zip", 200, "hit", time.Millisecond)
				}
				m.Request("info", 200, "miss", time.Millisecond)
				m.Request("mod", 200, "coalesced", time.Millisecond)
				m.Request("mod", 200, "stale", time.Millisecond)
				m.Request("mod", 404, "negative", time.Millisecond)
				m.Request("list", 200, "bypass", time.Millisecond)
				m.Request("", 400, "", time.Millisecond) // a reject: bypass
			},
			want: Sample{Requests: 9, Hits: 3, Lookups: 7, Refusals: map[string]float64{}, Upstreams: map[string]string{}},
		},
		{
			name: "refusals",
			update: func(m *metrics.Metrics) {
				m.Refusal("cooldown")
				m.Refusal("cooldown")
				m.Refusal(`"><script>alert(1)</script>`)
				m.Refusal("")
			},
			want: Sample{
				Refusals:  map[string]float64{"cooldown": 2, `"><script>alert(1)</script>`: 1, "none": 1},
				Upstreams: map[string]string{},
			},
		},
		{
			name: "verifications",
			update: func(m *metrics.Metrics) {
				m.Verification("verified")
				m.Verification("ledger")
				m.Verification("skipped")
				m.Verification("mismatch")
				m.Verification("failed")
				m.Verification("failed")
			},
			want: Sample{VerifyFailures: 3, Refusals: map[string]float64{}, Upstreams: map[string]string{}},
		},
		{
			name: "upstream states",
			update: func(m *metrics.Metrics) {
				m.UpstreamState("a", "healthy")
				m.UpstreamState("b", "healthy")
				m.UpstreamState("b", "draining")
				m.UpstreamState("c", "draining")
				m.UpstreamState("c", "removed")
				m.UpstreamState("c", "healthy")
			},
			want: Sample{
				Refusals:  map[string]float64{},
				Upstreams: map[string]string{"a": "healthy", "b": "draining", "c": "healthy"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := metrics.New()
			tt.update(m)
			clk := &fakeClock{n: 6}
			s := New(m.Gatherer(), Options{Now: clk.now})
			if err := s.Sample(); err != nil {
				t.Fatalf("Sample() = %v", err)
			}
			got, ok := s.Latest()
			if !ok {
				t.Fatal("Latest() = false after a sample")
			}
			tt.want.Time = at(60)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Latest() = %+v, want %+v", got, tt.want)
			}
			cur, err := s.Current()
			if err != nil {
				t.Fatalf("Current() = %v", err)
			}
			tt.want.Time = at(70)
			if !reflect.DeepEqual(cur, tt.want) {
				t.Errorf("Current() = %+v, want %+v", cur, tt.want)
			}
			if n := len(s.Samples()); n != 1 {
				t.Errorf("after Sample and Current, len(Samples()) = %d, want 1", n)
			}
		})
	}
}

// TestSampleParse checks the families a registry cannot produce: states
// that are all 0 or more than one 1, values that are not finite.
func TestSampleParse(t *testing.T) {
	gauge := func(up, state string, v float64) *dto.Metric {
		return &dto.Metric{
			Label: []*dto.LabelPair{{Name: new("upstream"), Value: new(up)}, {Name: new("state"), Value: new(state)}},
			Gauge: &dto.Gauge{Value: new(v)},
		}
	}
	families := []*dto.MetricFamily{
		{Name: new(familyUpstreamState), Metric: []*dto.Metric{
			gauge("both", "healthy", 1), gauge("both", "draining", 1), gauge("both", "removed", 0),
			gauge("none", "healthy", 0), gauge("none", "draining", 0),
			gauge("odd", "healthy", 1), gauge("odd", "weird", 1),
		}},
		{Name: new(familyRequests), Metric: []*dto.Metric{
			{Label: []*dto.LabelPair{{Name: new("cache"), Value: new("hit")}}, Counter: &dto.Counter{Value: new(1.0)}},
			{Label: []*dto.LabelPair{{Name: new("cache"), Value: new("miss")}}, Counter: &dto.Counter{Value: new(nan())}},
		}},
	}
	got := parse(t0, families)
	want := Sample{
		Time: t0, Requests: 1, Hits: 1, Lookups: 1,
		Refusals:  map[string]float64{},
		Upstreams: map[string]string{"both": "draining", "odd": "healthy"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("parse() = %+v, want %+v", got, want)
	}
}

func nan() float64 { return math.NaN() }

// TestKeep checks that the ring keeps the newest Keep samples, oldest
// first.
func TestKeep(t *testing.T) {
	tests := []struct {
		name    string
		keep, n int
		want    []time.Time
	}{
		{"none", 3, 0, nil},
		{"fewer than keep", 3, 2, []time.Time{at(0), at(10)}},
		{"exactly keep", 3, 3, []time.Time{at(0), at(10), at(20)}},
		{"wrapped", 3, 5, []time.Time{at(20), at(30), at(40)}},
		{"wrapped twice", 3, 7, []time.Time{at(40), at(50), at(60)}},
		{"keep one", 1, 4, []time.Time{at(30)}},
	}
	g := metrics.New().Gatherer()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := &fakeClock{}
			s := New(g, Options{Keep: tt.keep, Now: clk.now})
			for range tt.n {
				if err := s.Sample(); err != nil {
					t.Fatal(err)
				}
			}
			var got []time.Time
			for _, smp := range s.Samples() {
				got = append(got, smp.Time)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Samples() times = %v, want %v", got, tt.want)
			}
			latest, ok := s.Latest()
			if ok != (len(tt.want) > 0) {
				t.Fatalf("Latest() ok = %v, want %v", ok, len(tt.want) > 0)
			}
			if ok && !latest.Time.Equal(tt.want[len(tt.want)-1]) {
				t.Errorf("Latest().Time = %v, want %v", latest.Time, tt.want[len(tt.want)-1])
			}
		})
	}
}

// TestSamplesCopy checks that what Samples and Latest return is the
// caller's to change.
func TestSamplesCopy(t *testing.T) {
	m := metrics.New()
	m.Refusal("cooldown")
	m.UpstreamState("a", "healthy")
	s := New(m.Gatherer(), Options{})
	if err := s.Sample(); err != nil {
		t.Fatal(err)
	}
	got := s.Samples()
	got[0].Refusals["cooldown"] = 99
	got[0].Upstreams["a"] = "removed"
	latest, _ := s.Latest()
	latest.Refusals["cooldown"] = 98
	again, _ := s.Latest()
	if again.Refusals["cooldown"] != 1 || again.Upstreams["a"] != "healthy" {
		t.Errorf("after changing copies, Latest() = %+v, want cooldown 1, a healthy", again)
	}
}

// TestSampleError checks what a failing gatherer leaves behind.
func TestSampleError(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name     string
		families []*dto.MetricFamily
		kept     int
	}{
		{"no families", nil, 0},
		{"some families", []*dto.MetricFamily{{
			Name:   new(familyVerifications),
			Metric: []*dto.Metric{{Label: []*dto.LabelPair{{Name: new("result"), Value: new("failed")}}, Counter: &dto.Counter{Value: new(2.0)}}},
		}}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) { return tt.families, boom })
			s := New(g, Options{})
			if err := s.Sample(); !errors.Is(err, boom) {
				t.Errorf("Sample() = %v, want %v", err, boom)
			}
			if got := s.Samples(); len(got) != tt.kept {
				t.Errorf("len(Samples()) = %d, want %d", len(got), tt.kept)
			}
			cur, err := s.Current()
			if !errors.Is(err, boom) {
				t.Errorf("Current() = _, %v, want %v", err, boom)
			}
			if got, want := cur.VerifyFailures, 2*float64(tt.kept); got != want {
				t.Errorf("Current().VerifyFailures = %v, want %v", got, want)
			}
		})
	}
}

// TestRun checks that Run samples until its context is cancelled, then
// returns, and that it logs a lasting failure once.
func TestRun(t *testing.T) {
	tests := []struct {
		name    string
		g       prometheus.Gatherer
		samples int // wait for this many samples
		logs    int // lines logged
	}{
		{"gathers", metrics.New().Gatherer(), 3, 0},
		{"fails", prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) { return nil, errors.New("boom") }), 0, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			calls := make(chan struct{}, 1000)
			g := prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
				calls <- struct{}{}
				return tt.g.Gather()
			})
			s := New(g, Options{Interval: time.Millisecond, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan struct{})
			go func() {
				defer close(done)
				s.Run(ctx)
			}()
			deadline := time.After(10 * time.Second)
			for n := 0; n < 3; n++ {
				select {
				case <-calls:
				case <-deadline:
					t.Fatalf("Run gathered %d times in 10s, want 3", n)
				}
			}
			for len(s.Samples()) < tt.samples { // concurrent with Run, for -race
				time.Sleep(time.Millisecond)
			}
			cancel()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("Run did not return after its context was cancelled")
			}
			if got := strings.Count(logs.String(), "\n"); got != tt.logs {
				t.Errorf("Run logged %d lines, want %d:\n%s", got, tt.logs, logs.String())
			}
		})
	}
}
