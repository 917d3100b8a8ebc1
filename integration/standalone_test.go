package integration

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/modgate/modgate/audit"
	"github.com/modgate/modgate/integration/testproxy"
)

// upstreams starts a public and a private hermetic upstream from the
// fixtures: corp.example modules are private, the rest public.
func upstreams(t testing.TB) (public, private *testproxy.Server) {
	t.Helper()
	pub, priv := fixtures(t)
	return testproxy.Start(t, pub), testproxy.Start(t, priv)
}

// fixtures returns testproxy's fixtures, public and private
// (corp.example) apart.
func fixtures(t testing.TB) (pub, priv []*testproxy.Module) {
	for _, m := range testproxy.Fixtures(t) {
		if strings.HasPrefix(m.Path, "corp.example/") {
			priv = append(priv, m)
		} else {
			pub = append(pub, m)
		}
	}
	return pub, priv
}

func gatewayConfig(public, private *testproxy.Server) string {
	cfg := fmt.Sprintf(`
upstreams:
  - name: public
    url: %s
`, public.URL)
	if private != nil {
		cfg += fmt.Sprintf(`  - name: corp
    url: %s
    private: true
`, private.URL)
	}
	return cfg + fmt.Sprintf(`
private: ["corp.example"]
sumdb: [%s]
sumdb_key: %s
`, public.SumDB, public.VerifierKey)
}

// clientEnv runs modgate client-env for a gateway with config at url and
// returns the variables its go env -w line sets.
func clientEnv(t *testing.T, config, url string) []string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "modgate.yaml")
	if err := os.WriteFile(path, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(modgateBin, "client-env", "--config", path, "--gateway", url)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "GOENV=off"}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("modgate client-env: %v", err)
	}
	fields := strings.Fields(string(out))
	if len(fields) < 4 || strings.Join(fields[:3], " ") != "go env -w" {
		t.Fatalf("modgate client-env printed %q, want a go env -w line", out)
	}
	return fields[3:]
}

// noPrivateRequests fails t if the public upstream ever saw a private path.
func noPrivateRequests(t *testing.T, public *testproxy.Server) {
	t.Helper()
	for _, r := range public.Requests() {
		if strings.Contains(r, "corp.example") {
			t.Errorf("public upstream saw private path %q", r)
		}
	}
}

func TestGoCommandThroughGateway(t *testing.T) {
	public, private := upstreams(t)
	g := startModgate(t, gatewayConfig(public, private))

	t.Run("mod download", func(t *testing.T) {
		env := testproxy.GoEnv(t, g.URL, public.VerifierKey)
		out, stderr, err := testproxy.RunGo(t, t.TempDir(), env, "mod", "download", "-json",
			"example.com/a@v1.0.0", "example.com/a@v1.1.0", "example.com/b@v1.0.0",
			"example.com/Upper/m@v1.0.0", "example.com/c/v2@v2.0.0",
			"example.com/pseudo@v0.0.0-20240101000000-abcdefabcdef")
		if err != nil {
			t.Fatalf("%v\n%s\n%s", err, out, stderr)
		}
		for _, want := range []string{`"Version": "v1.1.0"`, `"Path": "example.com/Upper/m"`, `"Path": "example.com/c/v2"`, `"Zip":`, `"Sum": "h1:`} {
			if !strings.Contains(out, want) {
				t.Errorf("go mod download output lacks %s:\n%s", want, out)
			}
		}
		if strings.Contains(out, `"Error"`) {
			t.Errorf("go mod download reported an error:\n%s", out)
		}
		// The checksum database was consulted, through modgate.
		lookups := 0
		for _, r := range public.Requests() {
			if strings.HasPrefix(r, "/sumdb/"+public.SumDB+"/lookup/") {
				lookups++
			}
		}
		if lookups == 0 {
			t.Errorf("no checksum database lookup reached the upstream through modgate; requests: %q", public.Requests())
		}
	})

	t.Run("go get", func(t *testing.T) {
		env := testproxy.GoEnv(t, g.URL, public.VerifierKey)
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module example.net/client\n\ngo 1.21\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, stderr, err := testproxy.RunGo(t, dir, env, "get", "example.com/b@v1.0.0"); err != nil {
			t.Fatalf("%v\n%s\n%s", err, out, stderr)
		}
		gomod := readFile(t, filepath.Join(dir, "go.mod"))
		gosum := readFile(t, filepath.Join(dir, "go.sum"))
		if !containsAll(gomod, "example.com/b v1.0.0", "example.com/a v1.1.0") {
			t.Errorf("go.mod after go get:\n%s", gomod)
		}
		if !containsAll(gosum, "example.com/a v1.1.0 h1:", "example.com/b v1.0.0/go.mod h1:") {
			t.Errorf("go.sum after go get:\n%s", gosum)
		}
	})

	t.Run("list versions", func(t *testing.T) {
		env := testproxy.GoEnv(t, g.URL, public.VerifierKey)
		out, stderr, err := testproxy.RunGo(t, t.TempDir(), env, "list", "-m", "-versions", "example.com/a")
		if err != nil {
			t.Fatalf("%v\n%s", err, stderr)
		}
		if got, want := strings.TrimSpace(out), "example.com/a v1.0.0 v1.1.0 v1.2.0-rc.1"; got != want {
			t.Errorf("go list -m -versions = %q, want %q", got, want)
		}
	})

	t.Run("latest", func(t *testing.T) {
		env := testproxy.GoEnv(t, g.URL, public.VerifierKey)
		out, stderr, err := testproxy.RunGo(t, t.TempDir(), env, "list", "-m", "example.com/a@latest")
		if err != nil {
			t.Fatalf("%v\n%s", err, stderr)
		}
		if got, want := strings.TrimSpace(out), "example.com/a v1.1.0"; got != want {
			t.Errorf("go list -m example.com/a@latest = %q, want %q", got, want)
		}
		// A module with no tagged version: the go command asks @latest.
		out, stderr, err = testproxy.RunGo(t, t.TempDir(), env, "list", "-m", "example.com/pseudo@latest")
		if err != nil {
			t.Fatalf("%v\n%s", err, stderr)
		}
		if got, want := strings.TrimSpace(out), "example.com/pseudo v0.0.0-20240101000000-abcdefabcdef"; got != want {
			t.Errorf("go list -m example.com/pseudo@latest = %q, want %q", got, want)
		}
	})

	t.Run("private module", func(t *testing.T) {
		env := append(testproxy.GoEnv(t, g.URL, public.VerifierKey), "GONOSUMDB=corp.example")
		out, stderr, err := testproxy.RunGo(t, t.TempDir(), env, "mod", "download", "-json", "corp.example/private@v1.0.0")
		if err != nil {
			t.Fatalf("%v\n%s\n%s", err, out, stderr)
		}
		if !strings.Contains(out, `"Version": "v1.0.0"`) {
			t.Errorf("go mod download of the private module:\n%s", out)
		}
		if private.Count("/corp.example/private/@v/v1.0.0.zip") != 1 {
			t.Errorf("private upstream requests = %q, want the zip once", private.Requests())
		}
		noPrivateRequests(t, public)
	})

	t.Run("go get of a package inside a private module", func(t *testing.T) {
		// The go command asks for corp.example/private/pkg as a module
		// first: the private upstream's 404 must reach it as a 404, or the
		// whole query fails. The client is configured as modgate client-env
		// says: modgate alone in GOPROXY, the private patterns in GONOSUMDB.
		env := append(testproxy.GoEnv(t, g.URL, public.VerifierKey), clientEnv(t, gatewayConfig(public, private), g.URL)...)
		if !slices.Contains(env, "GONOSUMDB=corp.example") {
			t.Fatalf("modgate client-env gave %q, want GONOSUMDB=corp.example", env)
		}
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module example.net/client\n\ngo 1.21\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, stderr, err := testproxy.RunGo(t, dir, env, "get", "corp.example/private/pkg@v1.0.0"); err != nil {
			t.Fatalf("go get of a private package path: %v\n%s\n%s", err, out, stderr)
		}
		if gomod := readFile(t, filepath.Join(dir, "go.mod")); !strings.Contains(gomod, "corp.example/private v1.0.0") {
			t.Errorf("go.mod after go get:\n%s", gomod)
		}
		if private.Count("/corp.example/private/pkg/@v/v1.0.0.info") != 1 {
			t.Errorf("private upstream requests = %q, want the package path probed once", private.Requests())
		}
		noPrivateRequests(t, public)
	})

	t.Run("private module checksum lookup denied", func(t *testing.T) {
		// A client that forgot GONOSUMDB would look the private module up in
		// the public database: modgate refuses, and the go command fails
		// instead of leaking the path.
		env := testproxy.GoEnv(t, g.URL, public.VerifierKey)
		_, stderr, err := testproxy.RunGo(t, t.TempDir(), env, "mod", "download", "corp.example/private@v1.0.0")
		if err == nil {
			t.Fatal("go mod download of a private module with its checksum lookup denied succeeded")
		}
		if !strings.Contains(stderr, "403 Forbidden") {
			t.Errorf("go command stderr lacks the 403:\n%s", stderr)
		}
		noPrivateRequests(t, public)
	})

	t.Run("audit", func(t *testing.T) {
		evs := g.events(t)
		if len(evs) == 0 {
			t.Fatal("no audit events")
		}
		kinds := map[string]int{}
		for _, ev := range evs {
			kinds[ev.Modgate.Kind]++
			if ev.Timestamp.IsZero() || ev.HTTP == nil || ev.HTTP.Response.StatusCode == 0 || ev.URL == nil || ev.Source == nil || ev.Event.Outcome == "" {
				t.Errorf("incomplete audit event: %+v", ev)
			}
		}
		for _, k := range []string{"list", "info", "mod", "zip", "latest", "sumdb-supported", "sumdb-lookup", "sumdb-tile"} {
			if kinds[k] == 0 {
				t.Errorf("no audit event of kind %s; kinds: %v", k, kinds)
			}
		}
	})
}

func TestUpstreamOutageIsNotNotFound(t *testing.T) {
	public, private := upstreams(t)
	public.Fault(func(p string) int {
		if strings.HasPrefix(p, "/example.com/") {
			return http.StatusInternalServerError
		}
		return 0
	})
	g := startModgate(t, gatewayConfig(public, private))
	env := testproxy.GoEnv(t, g.URL, public.VerifierKey)
	_, stderr, err := testproxy.RunGo(t, t.TempDir(), env, "mod", "download", "example.com/a@v1.0.0")
	if err == nil {
		t.Fatal("go mod download succeeded against a failing upstream")
	}
	if !strings.Contains(stderr, "502 Bad Gateway") || strings.Contains(stderr, "404") || strings.Contains(stderr, "not found") {
		t.Errorf("go command stderr = %q, want a 502 and no 'not found'", stderr)
	}

	evs := g.waitEvents(t, 1)
	i := slices.IndexFunc(evs, func(e audit.Event) bool { return e.HTTP != nil && e.HTTP.Response.StatusCode == http.StatusBadGateway })
	if i < 0 {
		t.Fatalf("no 502 audit event; events: %+v", evs)
	}
	if ev := evs[i]; ev.Modgate.Upstream != "public" || ev.Event.Outcome != "failure" || !strings.Contains(ev.Event.Reason, "500") {
		t.Errorf("502 audit event = %+v, want upstream public, failure, reason naming the 500", ev)
	}
}

func readFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestRequestLimits pins invariant 6 at the listener: request headers are
// bounded (32 KiB by default) and so is the request target (1 KiB).
func TestRequestLimits(t *testing.T) {
	public, private := upstreams(t)
	g := startModgate(t, gatewayConfig(public, private))
	req, err := http.NewRequest("GET", g.URL+"/example.com/a/@v/list", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Padding", strings.Repeat("x", 40<<10))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("40 KiB of headers = %s, want 431", resp.Status)
	}
	long := "/example.com/" + strings.Repeat("a", 1100) + "/@v/list"
	if code, body := get(t, g.URL+long); code != http.StatusBadRequest || !strings.Contains(body, "longer than 1024") {
		t.Errorf("a 1.1 KiB target = %d %q, want 400 naming the limit", code, body)
	}
	for _, r := range public.Requests() {
		if strings.HasPrefix(r, "/example.com/") { // health probes aside
			t.Errorf("the upstream saw %s, want no refused request passed on", r)
		}
	}
}
