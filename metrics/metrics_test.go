package metrics

import (
	"testing"
	"time"
)

// TestRequestSeries checks that requests land in the series of their own
// labels, however many times a label set comes back (the series are
// cached by their labels).
func TestRequestSeries(t *testing.T) {
	m := New()
	for range 3 {
		m.Request("info", 200, "hit", time.Millisecond)
	}
	m.Request("zip", 200, "miss", time.Second)
	m.Request("", 400, "", time.Microsecond)
	m.Phase("request_headers", time.Millisecond)
	m.Phase("request_headers", time.Millisecond)
	m.Refusal("cooldown")
	m.Refusal("cooldown")
	m.Refusal("")

	families, err := m.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		for _, s := range f.GetMetric() {
			key := f.GetName()
			for _, l := range s.GetLabel() {
				key += " " + l.GetName() + "=" + l.GetValue()
			}
			switch {
			case s.GetCounter() != nil:
				got[key] = s.GetCounter().GetValue()
			case s.GetHistogram() != nil:
				got[key] = float64(s.GetHistogram().GetSampleCount())
			}
		}
	}
	for key, want := range map[string]float64{
		"modgate_requests_total cache=hit kind=info status=200":        3,
		"modgate_requests_total cache=miss kind=zip status=200":        1,
		"modgate_requests_total cache=bypass kind=none status=400":     1,
		"modgate_requests_total cache=hit kind=zip status=200":         0,
		"modgate_request_duration_seconds cache=hit kind=info":         3,
		"modgate_request_duration_seconds cache=miss kind=zip":         1,
		"modgate_extproc_phase_duration_seconds phase=request_headers": 2,
		"modgate_request_duration_seconds cache=bypass kind=none":      1,
		"modgate_refusals_total rule=cooldown":                         2,
		"modgate_refusals_total rule=none":                             1,
	} {
		if got[key] != want {
			t.Errorf("%s = %v, want %v", key, got[key], want)
		}
	}
}
