package integration

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modgate/modgate/integration/testproxy"
)

// runCheck runs modgate check on dir with env and returns its output and
// exit status.
func runCheck(t *testing.T, env []string, dir string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return runCheckTB(t, env, dir, args...)
}

func runCheckTB(t testing.TB, env []string, dir string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(modgateBin, append([]string{"check", dir}, args...)...)
	cmd.Env = env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

// TestCheck builds a repository with the real go command through a
// gateway (go get, go mod vendor), proves that modgate check passes it and
// that go build -mod=vendor builds it, then tampers with go.sum and vendor/
// and proves each finding is reported, with the go command agreeing that
// the forged line is wrong.
func TestCheck(t *testing.T) {
	public, private := upstreams(t)
	g := startModgate(t, gatewayConfig(public, private))
	env := testproxy.GoEnv(t, g.URL, public.VerifierKey)

	dir := t.TempDir()
	write := func(name, text string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("go.mod", "module example.net/app\n\ngo 1.21\n")
	write("main.go", "package main\n\nimport (\n\t\"fmt\"\n\n\t\"example.com/b\"\n)\n\nfunc main() { fmt.Println(b.Version()) }\n")
	for _, args := range [][]string{{"get", "example.com/b@v1.0.0"}, {"mod", "vendor"}} {
		if out, stderr, err := testproxy.RunGo(t, dir, env, args...); err != nil {
			t.Fatalf("go %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr)
		}
	}

	t.Run("clean", func(t *testing.T) {
		out, stderr, code := runCheck(t, env, dir)
		if code != 0 || !strings.Contains(out, "ok:") {
			t.Fatalf("modgate check = %d\n%s%s", code, out, stderr)
		}
		// The build cache of this machine's go command: a fresh one would
		// compile the standard library first (half a minute). It holds
		// build results only; modules come from vendor/.
		gocache, err := exec.Command("go", "env", "GOCACHE").Output()
		if err != nil {
			t.Fatal(err)
		}
		build := append(slices.Clone(env), "GOCACHE="+strings.TrimSpace(string(gocache)))
		if out, stderr, err := testproxy.RunGo(t, dir, build, "build", "-mod=vendor", "-o", filepath.Join(t.TempDir(), "app"), "."); err != nil {
			t.Fatalf("go build -mod=vendor of a repository modgate check passed: %v\n%s%s", err, out, stderr)
		}
		// With an empty module cache, the zips come through the gateway.
		if out, stderr, code := runCheck(t, testproxy.GoEnv(t, g.URL, public.VerifierKey), dir); code != 0 {
			t.Errorf("modgate check, zips through the gateway = %d\n%s%s", code, out, stderr)
		}
		out, _, code = runCheck(t, env, dir, "--format", "json")
		var r struct {
			Modules, Vendored int
			Clean             bool
		}
		if err := json.Unmarshal([]byte(out), &r); err != nil || code != 0 || !r.Clean || r.Modules != 2 || r.Vendored != 2 {
			t.Errorf("--format json = %d %+v, %v:\n%s", code, r, err, out)
		}
	})

	t.Run("forged go.sum line", func(t *testing.T) {
		sum, err := os.ReadFile(filepath.Join(dir, "go.sum"))
		if err != nil {
			t.Fatal(err)
		}
		defer write("go.sum", string(sum))
		i := bytes.Index(sum, []byte("example.com/a v1.1.0 h1:")) + len("example.com/a v1.1.0 h1:")
		forged := bytes.Clone(sum)
		forged[i] ^= 1
		write("go.sum", string(forged))
		out, stderr, code := runCheck(t, env, dir)
		if code != 1 || !strings.Contains(out, "forged-sum") || !strings.Contains(out, "go.sum:") {
			t.Errorf("modgate check = %d, want 1 with forged-sum:\n%s%s", code, out, stderr)
		}
		out, _, code = runCheck(t, env, dir, "--format", "sarif")
		if code != 1 || !strings.Contains(out, `"ruleId": "forged-sum"`) || !strings.Contains(out, `"uri": "go.sum"`) || !strings.Contains(out, `"version": "2.1.0"`) {
			t.Errorf("--format sarif = %d:\n%s", code, out)
		}
		// The go command agrees: with an empty module cache, it refuses.
		fresh := testproxy.GoEnv(t, g.URL, public.VerifierKey)
		o, e, err := testproxy.RunGo(t, dir, fresh, "mod", "download", "example.com/a")
		if err == nil || !strings.Contains(o+e, "checksum mismatch") {
			t.Errorf("go mod download with the forged line: %v\n%s%s; want a checksum mismatch", err, o, e)
		}
	})

	t.Run("vendored file edited", func(t *testing.T) {
		file := filepath.Join(dir, "vendor", "example.com", "a", "a.go")
		orig, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		defer os.WriteFile(file, orig, 0o644)
		os.WriteFile(file, bytes.Replace(orig, []byte("v1.1.0"), []byte("v6.6.6"), 1), 0o644)
		extra := filepath.Join(dir, "vendor", "example.com", "a", "backdoor.go")
		os.WriteFile(extra, []byte("package a\n"), 0o644)
		defer os.Remove(extra)
		out, stderr, code := runCheck(t, env, dir)
		if code != 1 || !strings.Contains(out, "vendor/example.com/a/a.go") || !strings.Contains(out, "vendor/example.com/a/backdoor.go") {
			t.Errorf("modgate check = %d, want 1 naming both files:\n%s%s", code, out, stderr)
		}
	})

	t.Run("versions the gateway would refuse", func(t *testing.T) {
		strict := startModgate(t, gatewayConfig(public, private)+`
policy:
  rules:
    - name: old-a
      match: example.com/a
      versions: "<v1.2.0"
      action: deny
      reason: use v1.2.0 or later
`)
		out, stderr, code := runCheck(t, env, dir, "--gateway", strict.URL)
		if code != 1 || !strings.Contains(out, "refused") || !strings.Contains(out, `rule "old-a": use v1.2.0 or later`) || strings.Contains(out, "example.com/b v1.0.0: the gateway would refuse") {
			t.Errorf("modgate check --gateway (deny rule on example.com/a) = %d, want 1 naming the rule for a alone:\n%s%s", code, out, stderr)
		}
		// A cooldown whose module index knows of nothing: no version's age
		// can be proven, so every one is held back (it fails closed).
		held := startModgate(t, gatewayConfig(public, private)+fmt.Sprintf("policy:\n  cooldown:\n    min_age: 72h\n    index_url: %s\n", indexServer(t)))
		out, stderr, code = runCheck(t, env, dir, "--gateway", held.URL)
		if code != 1 || strings.Count(out, "the gateway would refuse") != 2 || !strings.Contains(out, "72h") {
			t.Errorf("modgate check --gateway (cooldown) = %d, want 1 with both versions held back and why:\n%s%s", code, out, stderr)
		}
	})

	t.Run("private module against the gateway's ledger", func(t *testing.T) {
		penv := append(slices.Clone(env), "GONOSUMDB=corp.example") // through the gateway, which is the private origin too
		pdir := t.TempDir()
		os.WriteFile(filepath.Join(pdir, "go.mod"), []byte("module example.net/priv\n\ngo 1.21\n"), 0o644)
		if out, stderr, err := testproxy.RunGo(t, pdir, penv, "get", "corp.example/private@v1.0.0"); err != nil {
			t.Fatalf("go get: %v\n%s%s", err, out, stderr)
		}
		out, stderr, code := runCheck(t, penv, pdir)
		if code != 0 || strings.Contains(out, "unverifiable") {
			t.Fatalf("modgate check of a private dependency = %d, want 0 and every line checked against the ledger:\n%s%s", code, out, stderr)
		}
		// Every lookup is audited, as every request is; a public module's
		// is refused.
		waitFor(t, 5*time.Second, func() bool {
			for _, ev := range g.events(t) {
				if strings.HasPrefix(ev.URL.Path, "/ledger/lookup?") && ev.Modgate.Module == "corp.example/private" && ev.HTTP.Response.StatusCode == 200 {
					return true
				}
			}
			return false
		}, "an audit event for the ledger lookups")
		if code, body := get(t, g.URL+"/ledger/lookup?module=example.com/a&version=v1.0.0"); code != 403 {
			t.Errorf("ledger lookup of a public module = %d %q, want 403", code, body)
		}
		sum, _ := os.ReadFile(filepath.Join(pdir, "go.sum"))
		i := bytes.Index(sum, []byte("corp.example/private v1.0.0 h1:")) + len("corp.example/private v1.0.0 h1:")
		sum[i] ^= 1
		os.WriteFile(filepath.Join(pdir, "go.sum"), sum, 0o644)
		out, stderr, code = runCheck(t, penv, pdir)
		if code != 1 || !strings.Contains(out, "private ledger records") {
			t.Errorf("a forged private line = %d, want 1 naming the ledger:\n%s%s", code, out, stderr)
		}
		// Without a gateway to ask, private lines are unverifiable, not failed.
		direct := append(slices.Clone(penv), "GOPROXY=direct")
		out, stderr, code = runCheck(t, direct, pdir)
		if code != 0 || !strings.Contains(out, "unverifiable (2)") {
			t.Errorf("no gateway: %d\n%s%s", code, out, stderr)
		}
	})

	t.Run("could not check", func(t *testing.T) {
		_, stderr, code := runCheck(t, env, t.TempDir())
		if code != 2 || !strings.Contains(stderr, "no go.mod") {
			t.Errorf("an empty directory: %d %q, want 2", code, stderr)
		}
		_, stderr, code = runCheck(t, env, dir, "--format", "xml")
		if code != 2 {
			t.Errorf("--format xml: %d %q, want 2", code, stderr)
		}
		down := testproxy.GoEnv(t, "http://127.0.0.1:1", public.VerifierKey)
		_, stderr, code = runCheck(t, down, dir)
		if code != 2 {
			t.Errorf("gateway down: %d %q, want 2", code, stderr)
		}
	})
}
