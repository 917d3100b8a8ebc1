package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/modgate/modgate/audit"
	"github.com/modgate/modgate/cache"
	"github.com/modgate/modgate/metrics"
)

// adminServer serves the admin handler of a gateway with a cache and the
// admin token tok.
func adminServer(t *testing.T, tok string) *httptest.Server {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	c, err := cache.Open(cache.Config{Dir: t.TempDir(), HotBytes: 1 << 20, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	aw := audit.NewWriter(io.Discard)
	t.Cleanup(func() { aw.Close() })
	g := &standalone{cfg: new(fileConfig), log: log, cache: c, audit: aw, metrics: metrics.New(), adminToken: tok}
	g.ready.Store(true)
	srv := httptest.NewServer(g.adminHandler())
	t.Cleanup(srv.Close)
	return srv
}

func TestAdminToken(t *testing.T) {
	const tok = "0123456789abcdef0123456789abcdef"
	srv := adminServer(t, tok)
	tests := []struct {
		method, path, auth string
		want               int
	}{
		{"POST", "/cache/purge?module=example.com/a", "", http.StatusUnauthorized},
		{"POST", "/cache/purge?module=example.com/a", "Bearer wrong-token-wrong-token", http.StatusUnauthorized},
		{"POST", "/cache/purge?module=example.com/a", "Bearer " + tok + "x", http.StatusUnauthorized},
		{"POST", "/cache/purge?module=example.com/a", tok, http.StatusUnauthorized}, // no "Bearer "
		{"POST", "/cache/purge?module=example.com/a", "Basic " + tok, http.StatusUnauthorized},
		{"POST", "/cache/purge?module=example.com/a", "Bearer " + tok, http.StatusOK},
		{"GET", "/debug/pprof/", "", http.StatusUnauthorized},
		{"GET", "/debug/pprof/heap", "", http.StatusUnauthorized},
		{"GET", "/debug/pprof/profile?seconds=1", "", http.StatusUnauthorized},
		{"GET", "/debug/pprof/trace?seconds=1", "", http.StatusUnauthorized},
		{"GET", "/debug/pprof/", "Bearer " + tok, http.StatusOK},
		// Read-only endpoints stay open.
		{"GET", "/healthz", "", http.StatusOK},
		{"GET", "/readyz", "", http.StatusOK},
		{"GET", "/metrics", "", http.StatusOK},
		{"GET", "/cache/stats", "", http.StatusOK},
	}
	for _, tt := range tests {
		req, err := http.NewRequest(tt.method, srv.URL+tt.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if tt.auth != "" {
			req.Header.Set("Authorization", tt.auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.want {
			t.Errorf("%s %s with Authorization %q = %d %q, want %d", tt.method, tt.path, tt.auth, resp.StatusCode, body, tt.want)
		}
		if resp.StatusCode == http.StatusUnauthorized && (!strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") || strings.Contains(string(body), tok)) {
			t.Errorf("%s %s refused with %q %q, want plain text without the token", tt.method, tt.path, resp.Header.Get("Content-Type"), body)
		}
	}

	// No token configured (admin off, say): nothing guarded gets through.
	open := adminServer(t, "")
	req, _ := http.NewRequest("POST", open.URL+"/cache/purge?module=example.com/a", nil)
	req.Header.Set("Authorization", "Bearer ")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("purge with an empty token against an empty admin token = %d, want 401", resp.StatusCode)
	}
}

func TestAdminTokenFile(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	dir := t.TempDir()
	tok, err := adminToken("", dir, log)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, adminTokenName)
	fi, err := os.Stat(p)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("generated token file %s: %v, mode %v; want 0600", p, err, fi.Mode())
	}
	if got, err := readAdminToken(p); err != nil || got != tok || len(tok) < minAdminToken {
		t.Errorf("token file holds %q (%v), want the %d-byte token returned", got, err, len(tok))
	}
	again, err := adminToken("", dir, log)
	if err != nil || again == tok {
		t.Errorf("second start: token %q (%v), want a fresh one", again, err)
	}
	if matches, _ := filepath.Glob(filepath.Join(dir, adminTokenName+"-*")); len(matches) != 0 {
		t.Errorf("temporary files left: %q", matches)
	}

	given := filepath.Join(t.TempDir(), "token")
	os.WriteFile(given, []byte("  a-token-from-a-secret-volume\n"), 0o644)
	if got, err := adminToken(given, dir, log); err != nil || got != "a-token-from-a-secret-volume" {
		t.Errorf("adminToken(admin_token_file) = %q, %v", got, err)
	}
	short := filepath.Join(t.TempDir(), "short")
	os.WriteFile(short, []byte("short\n"), 0o600)
	for _, f := range []string{short, filepath.Join(dir, "missing")} {
		if _, err := adminToken(f, dir, log); err == nil || !strings.Contains(err.Error(), "admin_token_file") {
			t.Errorf("adminToken(%s) = %v, want an error naming admin_token_file", f, err)
		}
	}
}

// TestCacheCommandToken runs `modgate cache purge` against an admin
// handler: the token comes from --admin-token-file, MODGATE_ADMIN_TOKEN or
// the default file, and without one the purge is refused before it is
// sent.
func TestCacheCommandToken(t *testing.T) {
	const tok = "0123456789abcdef0123456789abcdef"
	srv := adminServer(t, tok)
	addr := strings.TrimPrefix(srv.URL, "http://")
	home := t.TempDir()
	t.Setenv("XDG_CACHE_HOME", home) // the default cache directory
	t.Setenv("HOME", home)
	t.Setenv("MODGATE_ADMIN_TOKEN", "")
	good := filepath.Join(t.TempDir(), "token")
	os.WriteFile(good, []byte(tok+"\n"), 0o600)
	bad := filepath.Join(t.TempDir(), "bad")
	os.WriteFile(bad, []byte("wrong-token-wrong-token\n"), 0o600)

	purge := func(args ...string) (int, string) {
		var out bytes.Buffer
		code := run(context.Background(), append(append([]string{"cache", "purge", "--admin", addr}, args...), "example.com/a"), &out, &out)
		return code, out.String()
	}
	if code, out := purge(); code != 1 || !strings.Contains(out, "admin token") {
		t.Errorf("purge with no token anywhere = %d %q, want 1 and a message about the admin token", code, out)
	}
	if code, out := purge("--admin-token-file", good); code != 0 || !strings.Contains(out, "purged") {
		t.Errorf("purge --admin-token-file = %d %q", code, out)
	}
	if code, out := purge("--admin-token-file", bad); code != 1 || !strings.Contains(out, "401") {
		t.Errorf("purge with a wrong token = %d %q, want 1 and the 401", code, out)
	}
	t.Setenv("MODGATE_ADMIN_TOKEN", tok)
	if code, out := purge(); code != 0 {
		t.Errorf("purge with MODGATE_ADMIN_TOKEN = %d %q", code, out)
	}
	if code, out := purge("--admin-token-file", bad); code != 1 {
		t.Errorf("purge --admin-token-file over MODGATE_ADMIN_TOKEN = %d %q, want the flag to win (and fail)", code, out)
	}
	t.Setenv("MODGATE_ADMIN_TOKEN", "")
	def := filepath.Join(home, "modgate", adminTokenName)
	os.MkdirAll(filepath.Dir(def), 0o700)
	os.WriteFile(def, []byte(tok), 0o600)
	if code, out := purge(); code != 0 {
		t.Errorf("purge with the default token file %s = %d %q", def, code, out)
	}
	// stats needs no token.
	var out bytes.Buffer
	if code := run(context.Background(), []string{"cache", "stats", "--admin", addr}, &out, &out); code != 0 {
		t.Errorf("cache stats = %d %q", code, out.String())
	}
}
