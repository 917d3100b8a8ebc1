package history

import (
	"reflect"
	"testing"
)

// counters are samples with the counters given, at the seconds given.
func counters(sec []int, requests []float64) []Sample {
	var s []Sample
	for i := range sec {
		s = append(s, Sample{Time: at(sec[i]), Requests: requests[i], VerifyFailures: requests[i]})
	}
	return s
}

func TestRates(t *testing.T) {
	tests := []struct {
		name     string
		sec      []int
		requests []float64
		want     []Point
	}{
		{"no samples", nil, nil, nil},
		{"one sample", []int{0}, []float64{5}, nil},
		{"steady", []int{0, 10, 20}, []float64{0, 10, 30}, []Point{{at(10), 1}, {at(20), 2}}},
		{"idle", []int{0, 10}, []float64{7, 7}, []Point{{at(10), 0}}},
		{"uneven intervals", []int{0, 4, 20}, []float64{0, 2, 10}, []Point{{at(4), 0.5}, {at(20), 0.5}}},
		{"reset", []int{0, 10, 20}, []float64{100, 20, 40}, []Point{{at(10), 2}, {at(20), 2}}},
		{"same time", []int{0, 0, 10}, []float64{0, 5, 15}, []Point{{at(10), 1}}},
		{"clock went back", []int{10, 0, 10}, []float64{0, 5, 15}, []Point{{at(10), 1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := counters(tt.sec, tt.requests)
			if got := RequestRate(s); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("RequestRate(%v) = %v, want %v", tt.requests, got, tt.want)
			}
			if got := VerifyFailureRate(s); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("VerifyFailureRate(%v) = %v, want %v", tt.requests, got, tt.want)
			}
		})
	}
}

func TestHitRatio(t *testing.T) {
	type hl struct{ hits, lookups float64 }
	tests := []struct {
		name string
		in   []hl // at 0, 10, 20, …
		want []Point
	}{
		{"no samples", nil, nil},
		{"no lookups", []hl{{0, 0}, {0, 0}}, nil},
		{"skips idle intervals", []hl{{0, 0}, {5, 10}, {5, 10}, {6, 12}}, []Point{{at(10), 0.5}, {at(30), 0.5}}},
		{"all hits", []hl{{2, 2}, {12, 12}}, []Point{{at(10), 1}}},
		{"all misses", []hl{{2, 2}, {2, 12}}, []Point{{at(10), 0}}},
		{"reset", []hl{{8, 10}, {1, 4}}, []Point{{at(10), 0.25}}},
		{"inconsistent", []hl{{0, 0}, {9, 3}}, []Point{{at(10), 1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s []Sample
			for i, x := range tt.in {
				s = append(s, Sample{Time: at(10 * i), Hits: x.hits, Lookups: x.lookups})
			}
			if got := HitRatio(s); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("HitRatio(%v) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestSampleHitRatio(t *testing.T) {
	tests := []struct {
		s      Sample
		want   float64
		wantOK bool
	}{
		{Sample{}, 0, false},
		{Sample{Hits: 3, Lookups: 4, Requests: 10}, 0.75, true},
		{Sample{Hits: 0, Lookups: 4}, 0, true},
	}
	for _, tt := range tests {
		if got, ok := tt.s.HitRatio(); got != tt.want || ok != tt.wantOK {
			t.Errorf("%+v.HitRatio() = %v, %v, want %v, %v", tt.s, got, ok, tt.want, tt.wantOK)
		}
	}
}

// refusals are samples 10s apart with the refusals given.
func refusals(r ...map[string]float64) []Sample {
	var s []Sample
	for i, x := range r {
		s = append(s, Sample{Time: at(10 * i), Refusals: x})
	}
	return s
}

func TestRefusalRate(t *testing.T) {
	tests := []struct {
		name string
		s    []Sample
		rule string
		want []Point
	}{
		{"appears", refusals(nil, map[string]float64{"a": 5}), "a", []Point{{at(10), 0.5}}},
		{"other rule", refusals(nil, map[string]float64{"a": 5}), "b", []Point{{at(10), 0}}},
		{"steady", refusals(map[string]float64{"a": 5}, map[string]float64{"a": 5}, map[string]float64{"a": 25}), "a",
			[]Point{{at(10), 0}, {at(20), 2}}},
		{"reset", refusals(map[string]float64{"a": 50}, map[string]float64{"a": 10}), "a", []Point{{at(10), 1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := RefusalRate(tt.s, tt.rule); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("RefusalRate(%q) = %v, want %v", tt.rule, got, tt.want)
			}
		})
	}
}

func TestRules(t *testing.T) {
	tests := []struct {
		name string
		s    []Sample
		want []string
	}{
		{"no samples", nil, []string{}},
		{"one sample, by name", refusals(map[string]float64{"b": 100, "a": 1}), []string{"a", "b"}},
		{"by refusals in the window", refusals(
			map[string]float64{"old": 100, "busy": 1, "quiet": 1},
			map[string]float64{"old": 100, "busy": 9, "quiet": 2},
			map[string]float64{"old": 100, "busy": 10, "quiet": 2, "new": 4},
		), []string{"busy", "new", "quiet", "old"}},
		{"reset counts the new value", refusals(
			map[string]float64{"a": 100, "b": 0},
			map[string]float64{"a": 3, "b": 2},
		), []string{"a", "b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Rules(tt.s); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Rules() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestUpstreamStates(t *testing.T) {
	ups := func(u ...map[string]string) []Sample {
		var s []Sample
		for i, x := range u {
			s = append(s, Sample{Time: at(10 * i), Upstreams: x})
		}
		return s
	}
	tests := []struct {
		name string
		s    []Sample
		want map[string][]StateSpan
	}{
		{"no samples", nil, map[string][]StateSpan{}},
		{"one sample", ups(map[string]string{"a": "healthy"}),
			map[string][]StateSpan{"a": {{"healthy", at(0), at(0)}}}},
		{"changes", ups(
			map[string]string{"a": "healthy"},
			map[string]string{"a": "healthy"},
			map[string]string{"a": "draining"},
			map[string]string{"a": "draining"},
			map[string]string{"a": "removed"},
			map[string]string{"a": "healthy"},
		), map[string][]StateSpan{"a": {
			{"healthy", at(0), at(20)},
			{"draining", at(20), at(40)},
			{"removed", at(40), at(50)},
			{"healthy", at(50), at(50)},
		}}},
		{"gaps", ups(
			nil,
			map[string]string{"b": "healthy", "c": "removed"},
			map[string]string{"c": "removed"},
			map[string]string{"b": "healthy", "c": "removed"},
			map[string]string{"b": "healthy", "c": "removed"},
		), map[string][]StateSpan{
			"b": {{"healthy", at(10), at(20)}, {"healthy", at(30), at(40)}},
			"c": {{"removed", at(10), at(40)}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := UpstreamStates(tt.s); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("UpstreamStates() = %v, want %v", got, tt.want)
			}
		})
	}
}
