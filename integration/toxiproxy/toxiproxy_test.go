package toxiproxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestProxy drives a real toxiproxy-server through every call of the
// package: a proxy in front of an HTTP server, a toxic added and
// removed, the proxy disabled and enabled, and pointed elsewhere.
func TestProxy(t *testing.T) {
	s := Start(t)
	backend := func(name string) string {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, name) }))
		t.Cleanup(srv.Close)
		return strings.TrimPrefix(srv.URL, "http://")
	}
	a, b := backend("a"), backend("b")
	p := s.Proxy(t, "web", a)
	// A fresh connection per request: a toxic acts on the bytes of open
	// connections, a disabled proxy refuses new ones.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	get := func() (string, time.Duration, error) {
		start := time.Now()
		resp, err := client.Get("http://" + p.Listen + "/")
		if err != nil {
			return "", time.Since(start), err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		return string(body), time.Since(start), err
	}

	const latency = time.Second // a local GET taking that long without it would be extraordinary
	steps := []struct {
		name    string
		do      func()
		want    string // the body; "" for a refused connection
		slow    bool   // at least latency
		notSlow bool   // well under latency
	}{
		{"through the proxy", func() {}, "a", false, true},
		{"latency toxic", func() {
			p.AddToxic(t, Toxic{Name: "slow", Type: "latency", Attributes: map[string]any{"latency": latency.Milliseconds()}})
		}, "a", true, false},
		{"toxic removed", func() { p.RemoveToxic(t, "slow") }, "a", false, true},
		{"disabled", func() { p.Disable(t) }, "", false, false},
		{"enabled", func() { p.Enable(t) }, "a", false, false},
		{"upstream changed", func() { p.SetUpstream(t, b) }, "b", false, false},
	}
	for _, st := range steps {
		st.do()
		body, took, err := get()
		switch {
		case st.want == "" && err == nil:
			t.Errorf("%s: GET = %q, want a refused connection", st.name, body)
		case st.want != "" && (err != nil || body != st.want):
			t.Errorf("%s: GET = %q, %v; want %q", st.name, body, err, st.want)
		case st.slow && took < latency:
			t.Errorf("%s: GET took %v, want at least %v", st.name, took, latency)
		case st.notSlow && took >= latency:
			t.Errorf("%s: GET took %v, want well under %v", st.name, took, latency)
		}
	}
}
