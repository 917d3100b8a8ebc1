package health

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modgate/modgate/upstream"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func mustParse(t *testing.T, name, url string, private bool) *upstream.Upstream {
	t.Helper()
	u, err := upstream.Parse(name, url, private)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestBreaker(t *testing.T) {
	clk := &clock{t: time.Unix(1_000_000, 0)}
	var changes []string
	set := &upstream.Set{Public: []*upstream.Upstream{
		mustParse(t, "a", "http://127.0.0.1:1", false),
		mustParse(t, "b", "http://127.0.0.1:2", false),
	}}
	r := New(set, Config{Now: clk.now, DrainPeriod: time.Minute, Logger: slog.New(slog.DiscardHandler),
		OnChange: func(name string, from, to State) { changes = append(changes, name+":"+from.String()+"->"+to.String()) }})

	names := func() []string {
		var n []string
		for _, u := range r.Candidates(false) {
			n = append(n, u.Name)
		}
		return n
	}
	steps := []struct {
		do        func()
		wantState State
		wantCands []string
	}{
		{func() { r.Report("a", false) }, Healthy, []string{"a", "b"}},
		{func() { r.Report("a", false) }, Healthy, []string{"a", "b"}},
		{func() { r.Report("a", true) }, Healthy, []string{"a", "b"}}, // a success resets the count
		{func() { r.Report("a", false); r.Report("a", false) }, Healthy, []string{"a", "b"}},
		{func() { r.Report("a", false) }, Draining, []string{"b"}}, // exactly the third in a row
		{func() { clk.advance(59 * time.Second); r.Tick() }, Draining, []string{"b"}},
		{func() { clk.advance(time.Second); r.Tick() }, Removed, []string{"b"}},
		{func() { r.Report("a", true) }, Removed, []string{"b"}},
		{func() { r.Report("a", true) }, Healthy, []string{"a", "b"}}, // two successes
	}
	for i, s := range steps {
		s.do()
		if got := r.State("a"); got != s.wantState {
			t.Errorf("step %d: State(a) = %v, want %v", i, got, s.wantState)
		}
		if got := names(); !slices.Equal(got, s.wantCands) {
			t.Errorf("step %d: Candidates = %v, want %v", i, got, s.wantCands)
		}
	}
	want := []string{"a:healthy->draining", "a:draining->removed", "a:removed->healthy"}
	if !slices.Equal(changes, want) {
		t.Errorf("changes = %v, want %v", changes, want)
	}
	select {
	case <-r.Changes():
	default:
		t.Error("no change notified")
	}
}

func TestConfigureKeepsState(t *testing.T) {
	a := mustParse(t, "a", "http://127.0.0.1:1", false)
	r := New(&upstream.Set{Public: []*upstream.Upstream{a}}, Config{Logger: slog.New(slog.DiscardHandler)})
	for range 3 {
		r.Report("a", false)
	}
	c := mustParse(t, "c", "http://127.0.0.1:3", true)
	r.Configure(&upstream.Set{Public: []*upstream.Upstream{a}, Private: []*upstream.Upstream{c}})
	if r.State("a") != Draining || r.State("c") != Healthy {
		t.Errorf("after Configure: a %v, c %v; want draining, healthy", r.State("a"), r.State("c"))
	}
	if got := r.Candidates(true); len(got) != 1 || got[0].Name != "c" {
		t.Errorf("private candidates = %v", got)
	}
}

func TestProbe(t *testing.T) {
	var failing atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if failing.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		http.NotFound(w, r) // an answer: the probe module need not exist
	}))
	defer srv.Close()
	r := New(&upstream.Set{Public: []*upstream.Upstream{mustParse(t, "u", srv.URL, false)}}, Config{Logger: slog.New(slog.DiscardHandler)})
	pc := ProbeConfig{Client: upstream.NewClient(upstream.ClientOptions{}), Timeout: time.Second}
	failing.Store(true)
	for range 3 {
		r.Probe(t.Context(), pc)
	}
	if r.State("u") != Draining {
		t.Errorf("after 3 failed probes: %v, want draining", r.State("u"))
	}
	failing.Store(false)
	for range 2 {
		r.Probe(t.Context(), pc)
	}
	if r.State("u") != Healthy {
		t.Errorf("after 2 answered probes: %v, want healthy", r.State("u"))
	}
}

func TestStatus(t *testing.T) {
	clk := &clock{t: time.Unix(1_000_000, 0)}
	set := &upstream.Set{
		Public:  []*upstream.Upstream{mustParse(t, "pub", "http://127.0.0.1:1", false)},
		Private: []*upstream.Upstream{mustParse(t, "priv", "http://127.0.0.1:2", true)},
	}
	r := New(set, Config{Now: clk.now, FailThreshold: 2, Logger: slog.New(slog.DiscardHandler)})
	clk.advance(time.Minute)
	r.Report("pub", false)
	r.Report("pub", false) // now draining, since clk
	got := r.Status()
	want := []Status{
		{Name: "pub", URL: "http://127.0.0.1:1", State: Draining, Since: clk.now(), Fails: 2},
		{Name: "priv", URL: "http://127.0.0.1:2", Private: true, State: Healthy, Since: time.Unix(1_000_000, 0)},
	}
	if !slices.Equal(got, want) {
		t.Errorf("Status() = %+v, want %+v", got, want)
	}
}
