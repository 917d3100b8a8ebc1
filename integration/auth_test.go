package integration

import (
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/modgate/modgate/audit"
	"github.com/modgate/modgate/integration/testproxy"
)

// newToken runs modgate token create and returns the token it printed.
func newToken(t *testing.T, tokens, name string, groups ...string) string {
	t.Helper()
	args := []string{"token", "create", "--tokens", tokens, "--name", name}
	for _, g := range groups {
		args = append(args, "--group", g)
	}
	out, err := exec.Command(modgateBin, args...).Output()
	if err != nil {
		t.Fatalf("modgate %s: %v", strings.Join(args, " "), err)
	}
	return strings.TrimSpace(string(out))
}

// netrcFor writes a netrc giving token to the gateway at base (the machine
// names the port, as the go command matches it) and returns the go
// command's environment with it.
func netrcFor(t *testing.T, env []string, base, token string) []string {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "netrc")
	if err := os.WriteFile(file, []byte(fmt.Sprintf("machine %s\nlogin ci\npassword %s\n", u.Host, token)), 0o600); err != nil {
		t.Fatal(err)
	}
	return append(env, "NETRC="+file)
}

// TestTokensAndRules: with auth.required, the real go command downloads
// with a token from its netrc over HTTPS and is refused (401 naming the
// gateway) without one; a revoked token stops working after SIGHUP; a
// deny range refuses a version with the rule's reason, while @latest and
// the list offer only allowed versions; a group-scoped rule lets one
// token through and refuses another; the token appears nowhere.
func TestTokensAndRules(t *testing.T) {
	public, private := upstreams(t)
	pki := newPKI(t)
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	alice := newToken(t, tokens, "alice", "release")
	bob := newToken(t, tokens, "bob")
	g := startModgate(t, gatewayConfig(public, private)+fmt.Sprintf(`
auth:
  tokens: %s
  required: true
policy:
  rules:
    - name: old-a
      match: example.com/a
      versions: "<v1.1.0"
      action: deny
      reason: use v1.1.0 or later
    - name: rc-for-release
      match: example.com/a
      versions: ">=v1.2.0-0"
      groups: [release]
      action: allow
    - name: no-rc
      match: example.com/a
      versions: ">=v1.2.0-0"
      action: deny
`, tokens), "--tls-cert", pki.ServerCert, "--tls-key", pki.ServerKey)
	base := append(testproxy.GoEnv(t, g.URL, public.VerifierKey), "SSL_CERT_FILE="+pki.CA)
	run := func(env []string, args ...string) (string, string, error) {
		t.Helper()
		// Each run with a module cache of its own: nothing fetched by one
		// identity is at hand for another.
		return testproxy.RunGo(t, t.TempDir(), append(env, "GOMODCACHE="+t.TempDir()), args...)
	}

	t.Run("no credentials", func(t *testing.T) {
		_, stderr, err := run(base, "mod", "download", "example.com/b@v1.0.0")
		if err == nil || !strings.Contains(stderr, "401 Unauthorized") || !strings.Contains(stderr, g.URL) {
			t.Errorf("go mod download without a token: %v\n%s\nwant a 401 naming %s", err, stderr, g.URL)
		}
	})
	t.Run("token from netrc", func(t *testing.T) {
		if out, stderr, err := run(netrcFor(t, base, g.URL, bob), "mod", "download", "-json", "example.com/b@v1.0.0"); err != nil {
			t.Fatalf("go mod download with a token: %v\n%s\n%s", err, out, stderr)
		}
	})
	t.Run("deny range", func(t *testing.T) {
		_, stderr, err := run(netrcFor(t, base, g.URL, bob), "mod", "download", "example.com/a@v1.0.0")
		if err == nil || !strings.Contains(stderr, `denied by rule "old-a": use v1.1.0 or later`) {
			t.Errorf("go mod download of a denied version: %v\n%s\nwant the rule's reason", err, stderr)
		}
		out, stderr, err := run(netrcFor(t, base, g.URL, bob), "list", "-m", "-versions", "example.com/a")
		if err != nil || strings.TrimSpace(out) != "example.com/a v1.1.0" {
			t.Errorf("go list -m -versions as bob = %q, %v\n%s; want only v1.1.0", out, err, stderr)
		}
		out, stderr, err = run(netrcFor(t, base, g.URL, bob), "list", "-m", "example.com/a@latest")
		if err != nil || strings.TrimSpace(out) != "example.com/a v1.1.0" {
			t.Errorf("go list -m @latest as bob = %q, %v\n%s; want v1.1.0", out, err, stderr)
		}
	})
	t.Run("a denied version in the graph but not selected", func(t *testing.T) {
		// The client requires a v1.0.0 (denied) and b v1.0.0, which requires
		// a v1.1.0: the go command reads a@v1.0.0's go.mod and selects
		// v1.1.0. The go.mod stays servable, so the build goes on.
		dir := t.TempDir()
		gomod := "module example.net/client\n\ngo 1.21\n\nrequire (\n\texample.com/a v1.0.0\n\texample.com/b v1.0.0\n)\n"
		if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte(gomod), 0o644); err != nil {
			t.Fatal(err)
		}
		env := append(netrcFor(t, base, g.URL, bob), "GOMODCACHE="+t.TempDir())
		out, stderr, err := testproxy.RunGo(t, dir, env, "list", "-mod=mod", "-m", "all")
		if err != nil || !strings.Contains(out, "example.com/a v1.1.0") {
			t.Errorf("go list -m all with a denied, unselected version = %q, %v\n%s; want a v1.1.0 selected", out, err, stderr)
		}
	})
	t.Run("group-scoped rule", func(t *testing.T) {
		if out, stderr, err := run(netrcFor(t, base, g.URL, alice), "mod", "download", "example.com/a@v1.2.0-rc.1"); err != nil {
			t.Errorf("alice (release) downloading the rc: %v\n%s\n%s", err, out, stderr)
		}
		if _, stderr, err := run(netrcFor(t, base, g.URL, bob), "mod", "download", "example.com/a@v1.2.0-rc.1"); err == nil || !strings.Contains(stderr, `rule "no-rc"`) {
			t.Errorf("bob downloading the rc: %v\n%s\nwant the no-rc denial", err, stderr)
		}
	})
	t.Run("revoked after SIGHUP", func(t *testing.T) {
		if out, err := exec.Command(modgateBin, "token", "revoke", "--tokens", tokens, "bob").CombinedOutput(); err != nil {
			t.Fatalf("modgate token revoke: %v\n%s", err, out)
		}
		if err := g.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for !strings.Contains(g.logText(), "config reloaded") && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		_, stderr, err := run(netrcFor(t, base, g.URL, bob), "mod", "download", "example.com/c/v2@v2.0.0")
		if err == nil || !strings.Contains(stderr, "401 Unauthorized") {
			t.Errorf("a revoked token after SIGHUP: %v\n%s\nwant 401", err, stderr)
		}
	})
	t.Run("audit and secrecy", func(t *testing.T) {
		evs := g.events(t)
		if !slices.ContainsFunc(evs, func(e audit.Event) bool {
			return e.User != nil && e.User.Name == "alice" && slices.Equal(e.User.Roles, []string{"release"})
		}) {
			t.Errorf("no audit event names alice with her group")
		}
		if !slices.ContainsFunc(evs, func(e audit.Event) bool { return e.Modgate.Rule == "old-a" && e.Modgate.Decision == "deny" }) {
			t.Errorf("no audit event of the old-a denial")
		}
		resp, err := http.Get(g.Admin + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		metrics := readAll(t, resp.Body)
		resp.Body.Close()
		g.stop(t)
		for _, tok := range []string{alice, bob} {
			if strings.Contains(metrics, tok) {
				t.Errorf("a token appears in the metrics")
			}
			for what, text := range map[string]string{"audit": readFile(t, g.audit), "log": g.logText()} {
				if strings.Contains(text, tok) {
					t.Errorf("a token appears in the %s", what)
				}
			}
			for _, r := range append(public.Received(), private.Received()...) {
				if r.Header.Get("Authorization") != "" {
					t.Errorf("an upstream received an Authorization header for %s", r.Path)
				}
			}
		}
	})
}
