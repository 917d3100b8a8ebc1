package integration

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modgate/modgate/audit"
	"github.com/modgate/modgate/integration/envoyemu"
	"github.com/modgate/modgate/integration/gitserver"
	"github.com/modgate/modgate/integration/testproxy"
)

// vcsConfig is a gateway whose private modules (corp.example.com) come
// from the Git server, with netrc and the extra config it needs.
func vcsConfig(t testing.TB, public *testproxy.Server, git *gitserver.Server, netrc, extra string) string {
	t.Helper()
	var env []string
	for _, kv := range git.Env() {
		env = append(env, fmt.Sprintf("%q", kv))
	}
	return fmt.Sprintf(`
upstreams:
  - name: public
    url: %s
private: [%s]
sumdb: [%s]
sumdb_key: %s
vcs:
  netrc: %s
  env: [%s]
  timeout: 60s
%s`, public.URL, git.Domain, public.SumDB, public.VerifierKey, netrc, strings.Join(env, ", "), extra)
}

// vcsClientEnv is the go command's environment as a client of g: modgate
// alone in GOPROXY, the private domain in GONOSUMDB.
func vcsClientEnv(t *testing.T, g *gatewayProc, public *testproxy.Server, git *gitserver.Server) []string {
	return append(testproxy.GoEnv(t, g.URL, public.VerifierKey), "GONOSUMDB="+git.Domain)
}

func TestVCSOrigin(t *testing.T) {
	public, _ := upstreams(t)
	git := gitserver.Start(t, gitserver.Options{})
	st := git.Standard(t)
	g := startModgate(t, vcsConfig(t, public, git, git.Netrc(t, ""), ""))
	lib := git.Domain + "/lib"

	t.Run("go mod download", func(t *testing.T) {
		out, stderr, err := testproxy.RunGo(t, t.TempDir(), vcsClientEnv(t, g, public, git), "mod", "download", "-json",
			lib+"@v1.0.0", lib+"/v2@v2.0.0", lib+"/sub@v1.0.0", git.Domain+"/old@v3.0.0+incompatible")
		if err != nil {
			t.Fatalf("%v\n%s\n%s", err, out, stderr)
		}
		for _, want := range []string{`"Path": "` + lib + `/v2"`, `"Path": "` + lib + `/sub"`, `"Version": "v3.0.0+incompatible"`, `"Sum": "h1:`} {
			if !strings.Contains(out, want) {
				t.Errorf("go mod download output lacks %s:\n%s", want, out)
			}
		}
	})
	t.Run("go get latest and main", func(t *testing.T) {
		env := vcsClientEnv(t, g, public, git)
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module example.net/client\n\ngo 1.21\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, stderr, err := testproxy.RunGo(t, dir, env, "get", lib+"@latest"); err != nil {
			t.Fatalf("go get %s@latest: %v\n%s\n%s", lib, err, out, stderr)
		}
		if gomod := readFile(t, filepath.Join(dir, "go.mod")); !strings.Contains(gomod, lib+" v1.1.0") {
			t.Errorf("go get @latest (v1.2.x are retracted): go.mod\n%s", gomod)
		}
		if out, stderr, err := testproxy.RunGo(t, dir, env, "get", lib+"@main"); err != nil {
			t.Fatalf("go get %s@main: %v\n%s\n%s", lib, err, out, stderr)
		}
		if gomod := readFile(t, filepath.Join(dir, "go.mod")); !strings.Contains(gomod, lib+" v1.1.1-0.") || !strings.Contains(gomod, st.Main[:12]) {
			t.Errorf("go get @main: want the pseudo-version of %s; go.mod\n%s", st.Main[:12], gomod)
		}
	})
	t.Run("go list versions", func(t *testing.T) {
		out, stderr, err := testproxy.RunGo(t, t.TempDir(), vcsClientEnv(t, g, public, git), "list", "-m", "-versions", lib)
		if err != nil {
			t.Fatalf("%v\n%s", err, stderr)
		}
		if got, want := strings.TrimSpace(out), lib+" v1.0.0 v1.1.0"; got != want {
			t.Errorf("go list -m -versions = %q, want %q (retracted versions hidden)", got, want)
		}
	})
	t.Run("one fetch for 50 concurrent cold requests", func(t *testing.T) {
		before := git.Count("http://" + git.Domain + "/old")
		const zip = "/corp.example.com/old/@v/v1.0.0.zip"
		var wg sync.WaitGroup
		var mu sync.Mutex
		var sizes []int
		for range 50 {
			wg.Go(func() {
				resp, err := http.Get(g.URL + zip)
				if err != nil {
					t.Error(err)
					return
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				if resp.StatusCode != 200 {
					t.Errorf("GET %s = %d %q", zip, resp.StatusCode, b)
				}
				mu.Lock()
				sizes = append(sizes, len(b))
				mu.Unlock()
			})
		}
		wg.Wait()
		if n := git.Count("http://"+git.Domain+"/old") - before; n != 1 {
			t.Errorf("50 concurrent cold requests made %d go-get discoveries at the Git server, want 1 (one fetch)", n)
		}
		if slices.Min(sizes) != slices.Max(sizes) || slices.Min(sizes) == 0 {
			t.Errorf("zip sizes = %v, want 50 times the same zip", sizes)
		}
	})
	t.Run("version beginning with a dash", func(t *testing.T) {
		resp, err := http.Get(g.URL + "/corp.example.com/lib/@v/-uploadpack=touch.info")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("version beginning with '-' = %d, want 400", resp.StatusCode)
		}
	})
	t.Run("audit and the public upstream", func(t *testing.T) {
		noPrivateRequests(t, public)
		evs := g.events(t)
		vcs := slices.IndexFunc(evs, func(e audit.Event) bool {
			return e.Modgate.Upstream == "vcs" && e.Modgate.Kind == "zip" && e.Modgate.Verification == "ledger"
		})
		if vcs < 0 {
			t.Fatalf("no audit event of a zip from the VCS origin checked against the ledger")
		}
		if got := evs[vcs].Modgate.OriginHost; got != git.Host {
			t.Errorf("audit origin_host = %q, want the Git host %q", got, git.Host)
		}
	})
}

// TestVCSOriginInMesh: in mesh mode the VCS origin is the sidecar's own
// listener, which the gateway Envoy reaches as upstream_private; the miss
// is routed there, checked against the ledger and cached like any private
// upstream's.
func TestVCSOriginInMesh(t *testing.T) {
	public, _ := upstreams(t)
	git := gitserver.Start(t, gitserver.Options{})
	git.Standard(t)
	g := startModgate(t, vcsConfig(t, public, git, git.Netrc(t, ""), "  listen: 127.0.0.1:0\n"))
	if g.VCS == "" {
		t.Fatalf("no vcs listener in the log:\n%s", g.logText())
	}
	cfg := envoyemu.NewConfig(g.ExtProc)
	cfg.Clusters = map[string]string{"upstream_public": public.URL, "upstream_private": g.VCS, "modgate_blob": g.Blob}
	cfg.Routes = envoyemu.GatewayRoutes()
	e, err := envoyemu.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	const mod = "/corp.example.com/lib/@v/v1.0.0.mod"
	for i, want := range []string{"miss", "hit"} {
		r, err := e.Do(t.Context(), envoyemu.Request{Method: "GET", Path: mod, Header: http.Header{"Authorization": {"Bearer client-token"}}})
		if err != nil {
			t.Fatal(err)
		}
		if r.Status != 200 || !strings.Contains(string(r.Body), "module corp.example.com/lib") || r.Header.Get("X-Modgate-Cache") != want {
			t.Errorf("request %d = %d (%s) cache %q: %q; want 200, %s", i, r.Status, r.Details, r.Header.Get("X-Modgate-Cache"), r.Body, want)
		}
		if i == 0 && r.Cluster != "upstream_private" {
			t.Errorf("the miss went to %q, want upstream_private", r.Cluster)
		}
	}
	evs := g.waitEvents(t, 2)
	if !slices.ContainsFunc(evs, func(e audit.Event) bool {
		return e.Modgate.Upstream == "vcs" && e.Modgate.Verification == "ledger" && e.Modgate.OriginHost == git.Host
	}) {
		t.Errorf("no audit event of the mesh miss filled by vcs, checked against the ledger, from %s: %+v", git.Host, evs)
	}
	// The VCS listener serves nothing but its patterns.
	resp, err := http.Get(g.VCS + "/example.com/a/@v/list")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("a public path at the VCS listener = %d, want 403", resp.StatusCode)
	}
	noPrivateRequests(t, public)
}

// TestVCSFailures: what the client sees when the Git host says no, the
// repository is missing, the host hangs, or a tag moves.
func TestVCSFailures(t *testing.T) {
	public, _ := upstreams(t)
	git := gitserver.Start(t, gitserver.Options{})
	st := git.Standard(t)
	get := func(t *testing.T, g *gatewayProc, path string) (int, string) {
		t.Helper()
		resp, err := http.Get(g.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	t.Run("wrong credentials", func(t *testing.T) {
		const wrong = "not-the-password-0123456789"
		g := startModgate(t, vcsConfig(t, public, git, git.Netrc(t, wrong), ""))
		code, body := get(t, g, "/corp.example.com/lib/@v/v1.0.0.info")
		if code != http.StatusBadGateway || !strings.Contains(body, "refused modgate's credentials for corp.example.com/lib") {
			t.Errorf("with wrong credentials = %d %q, want 502 saying the Git host refused modgate's credentials", code, body)
		}
		_, stderr, err := testproxy.RunGo(t, t.TempDir(), vcsClientEnv(t, g, public, git), "mod", "download", "corp.example.com/lib@v1.0.0")
		if err == nil {
			t.Error("go mod download with wrong credentials at the origin succeeded")
		}
		g.stop(t)
		for what, text := range map[string]string{"body": body, "go command": stderr, "log": g.logText(), "audit": readFile(t, g.audit)} {
			if strings.Contains(text, wrong) || strings.Contains(text, git.Password) {
				t.Errorf("the credential appears in the %s", what)
			}
		}
	})
	t.Run("missing repository", func(t *testing.T) {
		g := startModgate(t, vcsConfig(t, public, git, git.Netrc(t, ""), ""))
		if code, body := get(t, g, "/corp.example.com/nope/@v/list"); code != http.StatusNotFound {
			t.Errorf("missing repository = %d %q, want 404 (the go command probes package paths)", code, body)
		}
		strict := startModgate(t, vcsConfig(t, public, git, git.Netrc(t, ""), "private_not_found: refuse\n"))
		if code, body := get(t, strict, "/corp.example.com/nope/@v/list"); code != http.StatusForbidden {
			t.Errorf("missing repository with private_not_found: refuse = %d %q, want 403", code, body)
		}
	})
	t.Run("hanging Git host", func(t *testing.T) {
		g := startModgate(t, strings.Replace(vcsConfig(t, public, git, git.Netrc(t, ""), ""), "timeout: 60s", "timeout: 2s", 1))
		release := git.Hang(func(key string) bool { return strings.HasPrefix(key, "/old.git/") })
		defer release()
		start := time.Now()
		code, body := get(t, g, "/corp.example.com/old/@v/v1.0.0.info")
		if code != http.StatusGatewayTimeout || time.Since(start) > 10*time.Second {
			t.Errorf("hanging Git host = %d %q after %v, want 504 within the 2s timeout", code, body, time.Since(start))
		}
		// Nothing the fetch started is left running.
		deadline := time.Now().Add(5 * time.Second)
		for len(children(t, g.cmd.Process.Pid)) > 0 && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if left := children(t, g.cmd.Process.Pid); len(left) > 0 {
			t.Errorf("processes left behind by the timed-out fetch: %v", left)
		}
	})
	t.Run("moved tag refused after a restart", func(t *testing.T) {
		dir := t.TempDir()
		cache := filepath.Join(dir, "cache")
		const zip = "/corp.example.com/lib/@v/v1.0.0.zip"
		g := startModgate(t, vcsConfig(t, public, git, git.Netrc(t, ""), "  cache_dir: "+filepath.Join(dir, "vcs1")+"\n"), "--cache-dir", cache)
		if code, body := get(t, g, zip); code != 200 {
			t.Fatalf("first fetch = %d %q", code, body)
		}
		g.stop(t)
		// The tag moves to another commit (a force-push). modgate restarts
		// with its ledger but nothing else: no cached artifact, and a fresh
		// fetcher that sees the moved tag.
		st.Lib.MoveTag(t, "v1.0.0", st.Commits["lib@v1.1.0"])
		entries, err := os.ReadDir(cache)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if e.Name() != "ledger" {
				if err := os.RemoveAll(filepath.Join(cache, e.Name())); err != nil {
					t.Fatal(err)
				}
			}
		}
		g = startModgate(t, vcsConfig(t, public, git, git.Netrc(t, ""), "  cache_dir: "+filepath.Join(dir, "vcs2")+"\n"), "--cache-dir", cache)
		code, body := get(t, g, zip)
		if code != http.StatusBadGateway || !strings.Contains(body, "ledger") {
			t.Errorf("a moved tag after a restart = %d %q, want 502 naming the ledger", code, body)
		}
		evs := g.waitEvents(t, 1)
		if !slices.ContainsFunc(evs, func(e audit.Event) bool { return e.Modgate.Verification == "mismatch" && e.Modgate.Upstream == "vcs" }) {
			t.Errorf("no audit event of the moved tag as a mismatch from vcs: %+v", evs)
		}
	})
}

// children returns the pids of the processes whose parent is pid.
func children(t *testing.T, pid int) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	var out []int
	for _, e := range entries {
		var p int
		if _, err := fmt.Sscanf(e.Name(), "%d", &p); err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces and parentheses.
		rest := string(stat[strings.LastIndexByte(string(stat), ')')+1:])
		var state string
		var ppid int
		if _, err := fmt.Sscanf(rest, " %s %d", &state, &ppid); err == nil && ppid == pid && state != "Z" {
			out = append(out, p)
		}
	}
	return out
}
