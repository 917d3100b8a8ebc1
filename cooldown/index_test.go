package cooldown

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/module"
)

var indexTests = []struct {
	name  string
	body  string
	limit int
	n     int    // entries, when err is ""
	err   string // "" for none
}{
	{name: "empty", body: "", limit: 10},
	{name: "two", limit: 10, n: 2, body: `{"Path":"example.com/a","Version":"v1.0.0","Timestamp":"2026-12-01T00:00:00Z"}
{"Path":"example.com/b","Version":"v1.0.0+incompatible","Timestamp":"2026-12-01T00:00:00.5Z"}
`},
	{name: "no final newline", limit: 10, n: 1, body: `{"Path":"example.com/a","Version":"v1.0.0","Timestamp":"2026-12-01T00:00:00Z"}`},
	{name: "unknown field", limit: 10, n: 1, body: `{"Path":"example.com/a","Version":"v1.0.0","Timestamp":"2026-12-01T00:00:00Z","Origin":"x"}`},
	{name: "before since", limit: 10, err: "before since", body: `{"Path":"example.com/a","Version":"v1.0.0","Timestamp":"2026-11-30T23:59:59Z"}`},
	{name: "out of order", limit: 10, err: "out of order", body: `{"Path":"example.com/a","Version":"v1.0.0","Timestamp":"2026-12-01T00:00:01Z"}
{"Path":"example.com/b","Version":"v1.0.0","Timestamp":"2026-12-01T00:00:00Z"}`},
	{name: "over the limit", limit: 1, err: "more than the 1 entries", body: `{"Path":"example.com/a","Version":"v1.0.0","Timestamp":"2026-12-01T00:00:00Z"}
{"Path":"example.com/b","Version":"v1.0.0","Timestamp":"2026-12-01T00:00:00Z"}`},
	{name: "bad path", limit: 10, err: "malformed module path", body: `{"Path":"example.com/../a","Version":"v1.0.0","Timestamp":"2026-12-01T00:00:00Z"}`},
	{name: "bad version", limit: 10, err: "not a semantic version", body: `{"Path":"example.com/a","Version":"latest","Timestamp":"2026-12-01T00:00:00Z"}`},
	{name: "non-canonical version", limit: 10, err: "not canonical", body: `{"Path":"example.com/a","Version":"v1.0","Timestamp":"2026-12-01T00:00:00Z"}`},
	{name: "no timestamp", limit: 10, err: "no timestamp", body: `{"Path":"example.com/a","Version":"v1.0.0"}`},
	{name: "not JSON", limit: 10, err: "index line 1", body: `example.com/a v1.0.0`},
	{name: "long line", limit: 10, err: "longer than", body: `{"Path":"example.com/a","Version":"v1.0.0","Timestamp":"2026-12-01T00:00:00Z","X":"` + strings.Repeat("x", maxIndexLine) + `"}`},
}

func TestParseIndex(t *testing.T) {
	for _, tt := range indexTests {
		got, err := parseIndex([]byte(tt.body), t0, tt.limit)
		switch {
		case tt.err == "" && (err != nil || len(got) != tt.n):
			t.Errorf("parseIndex(%s) = %v, %v, want %d entries", tt.name, got, err, tt.n)
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("parseIndex(%s) = %v, want an error containing %q", tt.name, err, tt.err)
		}
	}
}

func FuzzParseIndex(f *testing.F) {
	for _, tt := range indexTests {
		f.Add([]byte(tt.body), tt.limit)
	}
	f.Fuzz(func(t *testing.T, body []byte, limit int) {
		got, err := parseIndex(body, t0, limit)
		if err != nil {
			return
		}
		if len(got) > max(limit, 0) {
			t.Errorf("parseIndex returned %d entries, limit %d", len(got), limit)
		}
		for i, e := range got {
			if module.Check(e.Path, e.Version) != nil || e.Timestamp.Before(t0) || i > 0 && e.Timestamp.Before(got[i-1].Timestamp) {
				t.Errorf("parseIndex returned a bad entry %d: %+v", i, e)
			}
		}
	})
}

// TestHTTPIndex: the query the index is sent, and the limits on its answer.
func TestHTTPIndex(t *testing.T) {
	var query url.Values
	body := []byte(`{"Path":"example.com/a","Version":"v1.0.0","Timestamp":"2026-12-01T00:00:00Z"}` + "\n")
	status := http.StatusOK
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		query = r.URL.Query()
		w.WriteHeader(status)
		w.Write(body)
	}))
	t.Cleanup(srv.Close)
	u, err := parseIndexURL(srv.URL + "/index?key=k")
	if err != nil {
		t.Fatal(err)
	}
	ix := &httpIndex{url: u, client: srv.Client()}

	got, err := ix.entries(t.Context(), t0, 5)
	if err != nil || len(got) != 1 || got[0].Path != "example.com/a" {
		t.Errorf("entries = %+v, %v, want example.com/a", got, err)
	}
	if query.Get("since") != "2026-12-01T00:00:00Z" || query.Get("limit") != "5" || query.Get("key") != "k" {
		t.Errorf("query sent = %v, want since, limit and the URL's own key", query)
	}

	body = bytes.Repeat([]byte("\n"), maxIndexBytes+1)
	if _, err := ix.entries(t.Context(), t0, 5); err == nil || !strings.Contains(err.Error(), "longer than") {
		t.Errorf("entries(answer too long) = %v, want an error", err)
	}
	body, status = nil, http.StatusServiceUnavailable
	if _, err := ix.entries(t.Context(), t0, 5); err == nil || !strings.Contains(err.Error(), "503") {
		t.Errorf("entries(503) = %v, want an error", err)
	}
}

// TestIndexWindows: entries far before the cutoff are found by widening
// the window.
func TestIndexWindows(t *testing.T) {
	db := newTestDB(t)
	db.Add(t, "example.com/old", "v1.0.0")
	db.Add(t, "example.com/a", "v1.0.0")
	ix := newTestIndex(t, IndexEntry{"example.com/a", "v1.0.0", t0.Add(-minAge - 5*24*time.Hour)})
	c := mustNew(t, options(t, db, ix, newClock(t0), t.TempDir()))
	if v := c.Check(t.Context(), "example.com/old", "v1.0.0", false); !v.Allow {
		t.Errorf("Check(old) = %+v, want allowed by an anchor the index dates 5 days before the cutoff", v)
	}
	if n := ix.requests.Load(); n != int64(len(indexWindows)) {
		t.Errorf("index asked %d times, want %d (every window)", n, len(indexWindows))
	}
}
