package integration

import (
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// scrape returns the value of every sample in modgate's /metrics, keyed by
// the sample as written ("name{labels}").
func scrape(t *testing.T, admin string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body := readAll(t, resp.Body)
	out := map[string]float64{}
	for _, line := range strings.Split(body, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

// sum adds the samples whose names match re.
func sum(samples map[string]float64, re string) float64 {
	r := regexp.MustCompile(re)
	total := 0.0
	for k, v := range samples {
		if r.MatchString(k) {
			total += v
		}
	}
	return total
}

func TestMetrics(t *testing.T) {
	m := startMesh(t, "")
	const mod = "/example.com/a/@v/v1.0.0.mod"
	before := scrape(t, m.g.Admin)

	// Through the standalone listener: a miss, a hit, a reject.
	for _, p := range []string{mod, mod, "/x/../y"} {
		resp, err := http.Get(m.g.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	// Through the emulated Envoy: ext_proc streams, and a reject.
	m.get(t, "/example.com/a/@v/v1.1.0.mod")
	if r := m.get(t, "/x/../y"); r.Status != http.StatusBadRequest {
		t.Fatalf("a reject through the emulated Envoy = %d, want 400", r.Status)
	}
	m.g.waitEvents(t, 5)

	after := scrape(t, m.g.Admin)
	moved := []struct {
		name, re string
	}{
		{"a miss", `^modgate_requests_total\{cache="miss",kind="mod",status="200"\}$`},
		{"a hit", `^modgate_requests_total\{cache="hit",kind="mod",status="200"\}$`},
		{"a reject", `^modgate_requests_total\{cache="bypass",kind="none",status="400"\}$`},
		{"request latency", `^modgate_request_duration_seconds_count\{`},
		{"upstream latency", `^modgate_upstream_fetch_duration_seconds_count\{outcome="ok",upstream="public"\}$`},
		{"verifications", `^modgate_verifications_total\{result="verified"\}$`},
		{"ext_proc streams", `^modgate_extproc_streams_total\{`},
		{"ext_proc phases", `^modgate_extproc_phase_duration_seconds_count\{phase="request_headers"\}$`},
		{"hot-tier lookups", `^modgate_cache_hot_lookups_total\{`},
		{"audit events written", `^modgate_audit_events_total\{fate="written"\}$`},
	}
	for _, mv := range moved {
		if a, b := sum(after, mv.re), sum(before, mv.re); a <= b {
			t.Errorf("%s: %s went from %v to %v, want it to move", mv.name, mv.re, b, a)
		}
	}
	present := []string{
		`^modgate_upstream_state\{state="healthy",upstream="public"\}$`,
		`^modgate_cache_entries\{tier="disk"\}$`,
		`^modgate_cache_limit_bytes\{tier="hot"\}$`,
		`^modgate_cache_evictions_total\{tier="disk"\}$`,
		`^modgate_extproc_streams_active$`,
		`^go_goroutines$`,
	}
	for _, re := range present {
		found := false
		for k := range after {
			if regexp.MustCompile(re).MatchString(k) {
				found = true
			}
		}
		if !found {
			t.Errorf("no sample matches %s", re)
		}
	}
	// Refusals are counted by rule, once each, whichever front end.
	if a, b := sum(after, `^modgate_refusals_total\{rule="grammar"\}$`), sum(before, `^modgate_refusals_total\{rule="grammar"\}$`); a-b != 2 {
		t.Errorf("modgate_refusals_total{rule=\"grammar\"} went from %v to %v, want 2 more: a reject through each front end", b, a)
	}
	if v := sum(after, `^modgate_upstream_state\{state="healthy",upstream="public"\}$`); v != 1 {
		t.Errorf("public upstream state healthy = %v, want 1", v)
	}
}
