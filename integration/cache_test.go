package integration

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modgate/modgate/audit"
	"github.com/modgate/modgate/integration/testproxy"
)

// fetch GETs url and returns the status, the X-Modgate-Cache header and
// the body.
func fetch(t *testing.T, client *http.Client, url string) (int, string, []byte) {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Errorf("GET %s: %v", url, err)
		return 0, "", nil
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Errorf("GET %s: reading body: %v", url, err)
	}
	return resp.StatusCode, resp.Header.Get("X-Modgate-Cache"), body
}

func TestCoalescedMisses(t *testing.T) {
	public, private := upstreams(t)
	const zip = "/example.com/a/@v/v1.0.0.zip"
	// Slow the upstream down so that all requests arrive while the first
	// one's fetch is still in flight.
	public.Delay(func(p string) time.Duration {
		if p == zip {
			return 500 * time.Millisecond
		}
		return 0
	})
	g := startModgate(t, gatewayConfig(public, private))

	const n = 100
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: n}, Timeout: 30 * time.Second}
	bodies := make([][]byte, n)
	statuses := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			code, cache, body := fetch(t, client, g.URL+zip)
			if code != http.StatusOK {
				t.Errorf("request %d: status %d", i, code)
			}
			bodies[i], statuses[i] = body, cache
		})
	}
	wg.Wait()

	if got := public.Count(zip); got != 1 {
		t.Errorf("upstream saw %d requests for %s, want exactly 1", got, zip)
	}
	for i, b := range bodies {
		if !bytes.Equal(b, bodies[0]) || len(b) == 0 {
			t.Fatalf("request %d got %d bytes that differ from request 0's %d", i, len(b), len(bodies[0]))
		}
	}
	count := map[string]int{}
	for _, s := range statuses {
		count[s]++
	}
	if count["miss"] != 1 || count["coalesced"] < n/2 || count["miss"]+count["coalesced"]+count["hit"] != n {
		t.Errorf("X-Modgate-Cache counts = %v, want 1 miss and the rest coalesced (or hit)", count)
	}
}

func TestNegativeEntries(t *testing.T) {
	public, private := upstreams(t)
	g := startModgate(t, gatewayConfig(public, private))
	const missing = "/example.com/missing/@v/list"
	client := &http.Client{Timeout: 10 * time.Second}
	for i := range 50 {
		code, cache, body := fetch(t, client, g.URL+missing)
		want := "negative"
		if i == 0 {
			want = "miss"
		}
		if code != http.StatusNotFound || cache != want || !strings.Contains(string(body), "not found") {
			t.Fatalf("request %d for a missing module = %d %s %q, want 404 %s 'not found'", i, code, cache, body, want)
		}
	}
	if got := public.Count(missing); got != 1 {
		t.Errorf("upstream saw %d requests for %s, want exactly 1", got, missing)
	}
	// Upstream failures are never cached: each request asks again.
	const failing = "/example.com/failing/@v/list"
	public.Fault(func(p string) int {
		if p == failing {
			return http.StatusInternalServerError
		}
		return 0
	})
	for range 3 {
		if code, _, _ := fetch(t, client, g.URL+failing); code != http.StatusBadGateway {
			t.Errorf("GET of a failing path = %d, want 502", code)
		}
	}
	if got := public.Count(failing); got != 3 {
		t.Errorf("upstream saw %d requests for a failing path, want 3 (5xx is never cached)", got)
	}
}

// warmModules are downloaded to warm the cache, then downloaded again with
// the upstream gone.
var warmModules = []string{
	"example.com/a@v1.0.0", "example.com/a@v1.1.0", "example.com/b@v1.0.0",
	"example.com/Upper/m@v1.0.0", "example.com/c/v2@v2.0.0",
	"example.com/pseudo@v0.0.0-20240101000000-abcdefabcdef",
}

func download(t *testing.T, proxyURL, sumdb string, modules ...string) (string, error) {
	t.Helper()
	env := testproxy.GoEnv(t, proxyURL, sumdb)
	out, stderr, err := testproxy.RunGo(t, t.TempDir(), env, append([]string{"mod", "download", "-json"}, modules...)...)
	if err != nil {
		return out + stderr, err
	}
	return out, nil
}

func TestServesWarmedModulesWithUpstreamDown(t *testing.T) {
	public, private := upstreams(t)
	cacheDir := t.TempDir()
	cfg := gatewayConfig(public, private) + "cache:\n  ttl:\n    query: 1s\n"
	g := startModgate(t, cfg, "--cache-dir", cacheDir)

	if out, err := download(t, g.URL, public.VerifierKey, warmModules...); err != nil {
		t.Fatalf("warming: %v\n%s", err, out)
	}
	env := testproxy.GoEnv(t, g.URL, public.VerifierKey)
	if out, stderr, err := testproxy.RunGo(t, t.TempDir(), env, "list", "-m", "-versions", "example.com/a"); err != nil {
		t.Fatalf("warming the list: %v\n%s%s", err, out, stderr)
	}
	public.Close()

	t.Run("same process", func(t *testing.T) {
		if out, err := download(t, g.URL, public.VerifierKey, warmModules...); err != nil {
			t.Fatalf("go mod download with the upstream down: %v\n%s", err, out)
		}
	})

	t.Run("stale list", func(t *testing.T) {
		time.Sleep(1100 * time.Millisecond) // past the 1s query TTL
		resp, err := http.Get(g.URL + "/example.com/a/@v/list")
		if err != nil {
			t.Fatal(err)
		}
		body := readAll(t, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Modgate-Cache") != "stale" || resp.Header.Get("Warning") == "" || !strings.Contains(body, "v1.1.0") {
			t.Errorf("list past its TTL with the upstream down = %s, cache %q, warning %q, body %q; want the stale list",
				resp.Status, resp.Header.Get("X-Modgate-Cache"), resp.Header.Get("Warning"), body)
		}
	})

	t.Run("after restart", func(t *testing.T) {
		// A second gateway on the same cache directory: the first must stop
		// first (the directory is locked), so stop it by hand.
		stopModgate(t, g)
		g2 := startModgate(t, cfg, "--cache-dir", cacheDir)
		if out, err := download(t, g2.URL, public.VerifierKey, warmModules...); err != nil {
			t.Fatalf("go mod download from a restarted gateway with the upstream down: %v\n%s", err, out)
		}
	})
}

func TestCacheLockedDirectory(t *testing.T) {
	public, private := upstreams(t)
	cacheDir := t.TempDir()
	startModgate(t, gatewayConfig(public, private), "--cache-dir", cacheDir)
	cmd := exec.Command(modgateBin, "serve", "--listen", "127.0.0.1:0", "--admin", "off", "--cache-dir", cacheDir, "--config", writeConfigFile(t, gatewayConfig(public, private)))
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "in use") {
		t.Errorf("second modgate on a locked cache dir: %v\n%s; want a refusal naming the lock", err, out)
	}
}

func TestCachePurge(t *testing.T) {
	public, private := upstreams(t)
	g := startModgate(t, gatewayConfig(public, private))
	client := &http.Client{Timeout: 10 * time.Second}
	const mod = "/example.com/a/@v/v1.0.0.mod"
	const other = "/example.com/a/@v/v1.1.0.mod"
	for _, p := range []string{mod, other, mod, other} {
		fetch(t, client, g.URL+p)
	}
	if public.Count(mod) != 1 || public.Count(other) != 1 {
		t.Fatalf("upstream counts %d, %d; want 1, 1 before the purge", public.Count(mod), public.Count(other))
	}

	admin := strings.TrimPrefix(g.Admin, "http://")
	// Without the admin token, neither the API nor the command purges.
	for _, auth := range []string{"", "Bearer not-the-admin-token"} {
		req, _ := http.NewRequest(http.MethodPost, g.Admin+"/cache/purge?module=example.com/a", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("POST /cache/purge with Authorization %q = %d, want 401", auth, resp.StatusCode)
		}
	}
	noToken := exec.Command(modgateBin, "cache", "purge", "--admin", admin, "example.com/a@v1.0.0")
	noToken.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "XDG_CACHE_HOME=" + t.TempDir()}
	if out, err := noToken.CombinedOutput(); err == nil {
		t.Errorf("modgate cache purge without an admin token succeeded:\n%s", out)
	}
	if resp, err := client.Get(g.Admin + "/debug/pprof/"); err != nil {
		t.Fatal(err)
	} else if resp.Body.Close(); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET /debug/pprof/ without the admin token = %d, want 401", resp.StatusCode)
	}
	for _, p := range []string{mod, other} {
		fetch(t, client, g.URL+p)
	}
	if public.Count(mod) != 1 || public.Count(other) != 1 {
		t.Fatalf("upstream counts %d, %d after refused purges; want 1, 1", public.Count(mod), public.Count(other))
	}

	out, err := exec.Command(modgateBin, "cache", "purge", "--admin", admin, "--admin-token-file", g.AdminTokenFile, "example.com/a@v1.0.0").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "purged") {
		t.Fatalf("modgate cache purge: %v\n%s", err, out)
	}
	for _, p := range []string{mod, other} {
		fetch(t, client, g.URL+p)
	}
	if public.Count(mod) != 2 || public.Count(other) != 1 {
		t.Errorf("upstream counts %d, %d after purging v1.0.0; want 2, 1", public.Count(mod), public.Count(other))
	}

	out, err = exec.Command(modgateBin, "cache", "stats", "--admin", admin).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "hot tier:") || !strings.Contains(string(out), "disk tier:") {
		t.Errorf("modgate cache stats: %v\n%s", err, out)
	}
	out, err = exec.Command(modgateBin, "cache", "purge", "--admin", admin, "--admin-token-file", g.AdminTokenFile, "Example.com/A").CombinedOutput()
	if err == nil {
		t.Errorf("modgate cache purge of an invalid path succeeded:\n%s", out)
	}
	// MODGATE_ADMIN_TOKEN works too, and pprof takes the token.
	withEnv := exec.Command(modgateBin, "cache", "purge", "--admin", admin, "example.com/a@v1.1.0")
	withEnv.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "MODGATE_ADMIN_TOKEN=" + g.adminToken(t)}
	if out, err := withEnv.CombinedOutput(); err != nil || !strings.Contains(string(out), "purged") {
		t.Errorf("modgate cache purge with MODGATE_ADMIN_TOKEN: %v\n%s", err, out)
	}
	req, _ := http.NewRequest(http.MethodGet, g.Admin+"/debug/pprof/", nil)
	req.Header.Set("Authorization", "Bearer "+g.adminToken(t))
	if resp, err := client.Do(req); err != nil {
		t.Fatal(err)
	} else if resp.Body.Close(); resp.StatusCode != http.StatusOK {
		t.Errorf("GET /debug/pprof/ with the admin token = %d, want 200", resp.StatusCode)
	}

	evs := g.waitEvents(t, 7)
	i := slices.IndexFunc(evs, func(e audit.Event) bool { return e.Event.Action == "cache-purge" })
	if i < 0 {
		t.Fatalf("no cache-purge audit event in %+v", evs)
	}
	if ev := evs[i]; ev.Modgate.Module != "example.com/a" || ev.Modgate.Version != "v1.0.0" || ev.Event.Outcome != "success" || ev.Source == nil {
		t.Errorf("cache-purge audit event = %+v", ev)
	}
}

func writeConfigFile(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "modgate.yaml")
	if err := writeFileString(p, text); err != nil {
		t.Fatal(err)
	}
	return p
}
