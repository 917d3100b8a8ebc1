package upstream

import (
	"bytes"
	"io"
	"net/http"
	"testing"
)

func TestServes(t *testing.T) {
	vcs := &Upstream{Name: "vcs", Private: true, Patterns: []string{"corp.example.com", "*.git.corp"}}
	proxy := &Upstream{Name: "proxy", Private: true}
	all := []*Upstream{proxy, vcs}
	tests := []struct {
		u    *Upstream
		path string
		want bool
	}{
		{vcs, "corp.example.com/lib", true},
		{vcs, "corp.example.com/lib/v2", true},
		{vcs, "a.git.corp/x", true},
		{vcs, "corp.example.org/lib", false},
		{vcs, "", false}, // checksum-database requests belong to no module
		{proxy, "corp.example.com/lib", false},
		{proxy, "other.corp/lib", true},
		{proxy, "", true},
	}
	for _, tt := range tests {
		if got := Serves(tt.u, tt.path, all); got != tt.want {
			t.Errorf("Serves(%s, %q) = %v, want %v", tt.u, tt.path, got, tt.want)
		}
	}
}

func TestInProcess(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/big":
			w.Header().Set("Content-Type", "application/zip")
			for i := 0; i < len(big); i += 32 << 10 {
				w.Write(big[i : i+32<<10])
			}
		case "/missing":
			http.Error(w, "not found: "+r.RequestURI, http.StatusNotFound)
		case "/panic":
			panic(http.ErrAbortHandler)
		case "/cut":
			w.Write([]byte("part"))
			panic(http.ErrAbortHandler)
		}
	})
	u, err := Parse("vcs", "http://"+InProcessHost, true)
	if err != nil {
		t.Fatal(err)
	}
	c := NewClient(ClientOptions{InProcess: map[string]http.Handler{InProcessHost: h}})
	get := func(p, method string) (*http.Response, []byte, error) {
		t.Helper()
		resp, err := c.Do(t.Context(), u, method, p, nil)
		if err != nil {
			return nil, nil, err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		return resp, body, err
	}
	if resp, body, err := get("/big", "GET"); err != nil || resp.StatusCode != 200 || !bytes.Equal(body, big) || resp.Header.Get("Content-Type") != "application/zip" {
		t.Errorf("GET /big = %v, %d bytes, %v; want 200 and the 1 MiB body", resp, len(body), err)
	}
	if resp, body, err := get("/big", "HEAD"); err != nil || resp.StatusCode != 200 || len(body) != 0 {
		t.Errorf("HEAD /big = %v, %d bytes, %v; want 200 and no body", resp, len(body), err)
	}
	if resp, body, err := get("/missing", "GET"); err != nil || resp.StatusCode != 404 || string(body) != "not found: /missing\n" {
		t.Errorf("GET /missing = %v, %q, %v; want 404 naming the request", resp, body, err)
	}
	if resp, _, err := get("/panic", "GET"); resp == nil || resp.StatusCode != 500 || err == nil {
		t.Errorf("GET /panic = %v, %v; want a 500 whose body reads as an error", resp, err)
	}
	if _, _, err := get("/cut", "GET"); err == nil {
		t.Errorf("GET /cut: no error; a body cut short must not read as complete")
	}
}
