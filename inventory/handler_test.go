package inventory

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

func testLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, nil))
}

func TestHandler(t *testing.T) {
	inv := open(t, Options{})
	for _, e := range events() {
		inv.Add(e)
	}
	srv := httptest.NewServer(inv.Handler())
	defer srv.Close()
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	tests := []struct {
		path   string
		status int
		fetch  int // Fetches or ModuleCounts in the answer
	}{
		{"/inventory/who?module=example.com/lib", 200, 35},
		{"/inventory/who?module=example.com/lib&version=v1.0.0", 200, 5},
		{"/inventory/who?module=example.com/lib&version=" + url.QueryEscape(">=v1.0.0 <v1.2.0"), 200, 5},
		{"/inventory/who?module=example.com/none", 200, 0},
		{"/inventory/who?module=example.com/lib&version=%3Cv1", 400, -1},
		{"/inventory/who", 400, -1},
		{"/inventory/affected?module=example.com/lib&range=" + url.QueryEscape("<v1.2.4"), 200, 15},
		{"/inventory/affected?module=example.com/lib", 400, -1},
		{"/inventory/top", 200, 2},
		{"/inventory/top?n=1", 200, 1},
		{"/inventory/top?n=0", 400, -1},
		{"/inventory/top?n=x", 400, -1},
	}
	for _, tt := range tests {
		status, body := get(tt.path)
		if status != tt.status {
			t.Errorf("GET %s = %d %q, want %d", tt.path, status, body, tt.status)
			continue
		}
		if tt.fetch < 0 {
			continue
		}
		var got []json.RawMessage
		if err := json.Unmarshal([]byte(body), &got); err != nil {
			t.Errorf("GET %s: %v in %q", tt.path, err, body)
			continue
		}
		if len(got) != tt.fetch {
			t.Errorf("GET %s = %d items, want %d: %s", tt.path, len(got), tt.fetch, body)
		}
	}
	resp, err := http.Post(srv.URL+"/inventory/top", "text/plain", strings.NewReader(""))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /inventory/top = %d, want 405", resp.StatusCode)
	}
}
