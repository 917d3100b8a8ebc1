package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/modgate/modgate/auth"
)

// runModgate runs modgate with args and returns its exit code and output.
func runModgate(t testing.TB, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(t.Context(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// authenticate authenticates a request carrying token as basic auth
// against the tokens file at path.
func authenticate(t testing.TB, path, token string) (auth.Identity, error) {
	t.Helper()
	ts, err := auth.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	a, err := auth.New(auth.Config{Tokens: ts, Required: true})
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte("any:"+token))}}
	return a.Authenticate(t.Context(), h, auth.Peer{Addr: netip.MustParseAddrPort("127.0.0.1:40000")})
}

func TestTokenCommand(t *testing.T) {
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	cfg := filepath.Join(dir, "modgate.yaml")
	if err := os.WriteFile(cfg, []byte("listen: 127.0.0.1:8443\nauth:\n  tokens: "+tokens+"\n  required: true\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	code, ciToken, stderr := runModgate(t, "token", "create", "--name", "ci", "--group", "ci", "--group", "release", "--tokens", tokens)
	if code != 0 || !regexp.MustCompile(`^mgt_[A-Za-z0-9_-]{43}\n$`).MatchString(ciToken) {
		t.Fatalf("token create = %d, %q (stderr %q); want 0 and one token line", code, ciToken, stderr)
	}
	ciToken = strings.TrimSuffix(ciToken, "\n")
	if !strings.Contains(stderr, "machine HOST:PORT login any password TOKEN") || strings.Contains(stderr, ciToken) {
		t.Errorf("token create: stderr %q: want the netrc hint, without the token", stderr)
	}
	id, err := authenticate(t, tokens, ciToken)
	if want := (auth.Identity{Name: "ci", Groups: []string{"ci", "release"}, Method: auth.MethodToken}); err != nil || id.Name != want.Name || strings.Join(id.Groups, ",") != "ci,release" || id.Method != want.Method {
		t.Fatalf("Authenticate(created token) = %+v, %v; want %+v", id, err, want)
	}

	// Flags may follow --config; a second token, in no group.
	code, bobToken, stderr := runModgate(t, "token", "create", "--config", cfg, "--name", "bob@corp")
	if code != 0 {
		t.Fatalf("token create --config = %d (stderr %q)", code, stderr)
	}
	bobToken = strings.TrimSuffix(bobToken, "\n")

	code, _, stderr = runModgate(t, "token", "create", "--name", "ci", "--tokens", tokens)
	if code != 1 || !strings.Contains(stderr, `"ci"`) || !strings.Contains(stderr, "exists") {
		t.Errorf("token create of an existing name = %d, stderr %q; want 1 naming it", code, stderr)
	}

	code, list, stderr := runModgate(t, "token", "list", "--config", cfg)
	wantList := regexp.MustCompile(`^NAME\tGROUPS\tCREATED\nci\tci,release\t\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\nbob@corp\t-\t\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\n$`)
	if code != 0 || !wantList.MatchString(list) {
		t.Errorf("token list = %d, %q (stderr %q); want %s", code, list, stderr, wantList)
	}
	for _, tok := range []string{ciToken, bobToken} {
		sum := sha256.Sum256([]byte(tok))
		if h := hex.EncodeToString(sum[:]); strings.Contains(list, h[:16]) || strings.Contains(list, "sha256") {
			t.Errorf("token list shows a hash:\n%s", list)
		}
	}

	// NAME before or after the flags.
	if code, _, stderr := runModgate(t, "token", "revoke", "ci", "--tokens", tokens); code != 0 {
		t.Fatalf("token revoke ci = %d (stderr %q)", code, stderr)
	}
	if _, err := authenticate(t, tokens, ciToken); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Errorf("Authenticate(revoked token) = %v, want ErrUnauthenticated", err)
	}
	if _, err := authenticate(t, tokens, bobToken); err != nil {
		t.Errorf("Authenticate(other token) = %v after revoking ci", err)
	}
	code, list, _ = runModgate(t, "token", "list", "--tokens", tokens)
	if code != 0 || strings.Contains(list, "\nci\t") || !strings.Contains(list, "\nbob@corp\t") {
		t.Errorf("token list after revoke = %d, %q; want bob@corp only", code, list)
	}
	code, _, stderr = runModgate(t, "token", "revoke", "--tokens", tokens, "ci")
	if code != 1 || !strings.Contains(stderr, `"ci"`) {
		t.Errorf("token revoke of a revoked name = %d, stderr %q; want 1 naming it", code, stderr)
	}
	if code, _, stderr := runModgate(t, "token", "revoke", "--name", "bob@corp", "--config", cfg); code != 0 {
		t.Errorf("token revoke --name = %d (stderr %q)", code, stderr)
	}

	fi, err := os.Stat(tokens)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("tokens file mode = %v, want 0600", fi.Mode().Perm())
	}
}

func TestTokenCommandErrors(t *testing.T) {
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	noAuth := filepath.Join(dir, "noauth.yaml")
	if err := os.WriteFile(noAuth, []byte("listen: 127.0.0.1:8443\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args []string
		code int
		want string // in stderr
	}{
		{[]string{"token"}, 2, "missing subcommand"},
		{[]string{"token", "rotate"}, 2, "unknown subcommand"},
		{[]string{"token", "create", "--tokens", tokens}, 2, "--name is required"},
		{[]string{"token", "create", "--name", "a b", "--tokens", tokens}, 2, "--name"},
		{[]string{"token", "create", "--name", "ci", "--group", "dev,ops", "--tokens", tokens}, 2, "--group"},
		{[]string{"token", "create", "--name", "ci", "--group", "dev", "--group", "dev", "--tokens", tokens}, 2, "given twice"},
		{[]string{"token", "create", "ci", "--tokens", tokens}, 2, "--name NAME"},
		{[]string{"token", "create", "--name", "ci", "--bogus"}, 2, "bogus"},
		{[]string{"token", "create", "--name", "ci"}, 2, "no tokens file"},
		{[]string{"token", "create", "--name", "ci", "--config", noAuth}, 2, "no auth.tokens"},
		{[]string{"token", "create", "--name", "ci", "--config", filepath.Join(dir, "missing.yaml")}, 1, "missing.yaml"},
		{[]string{"token", "list", "extra", "--tokens", tokens}, 2, "unexpected argument"},
		{[]string{"token", "list", "--name", "ci", "--tokens", tokens}, 2, "flags of create"},
		{[]string{"token", "list", "--tokens", tokens}, 1, "no tokens file"},
		{[]string{"token", "revoke", "--tokens", tokens}, 2, "want the NAME"},
		{[]string{"token", "revoke", "a", "b", "--tokens", tokens}, 2, "one token at a time"},
		{[]string{"token", "revoke", "a", "--name", "b", "--tokens", tokens}, 2, "two names"},
		{[]string{"token", "revoke", "a", "--group", "g", "--tokens", tokens}, 2, "flag of create"},
		{[]string{"token", "revoke", "a", "--tokens", tokens}, 1, "no such file"},
		{[]string{"token", "--help"}, 0, "netrc"},
		{[]string{"token", "create", "--help"}, 0, "SIGHUP"},
		{[]string{"help", "token"}, 0, "port included"},
	}
	for _, tt := range tests {
		code, stdout, stderr := runModgate(t, tt.args...)
		if code != tt.code || !strings.Contains(stderr, tt.want) || stdout != "" {
			t.Errorf("modgate %s = %d, stdout %q, stderr %q; want %d, stderr containing %q", strings.Join(tt.args, " "), code, stdout, stderr, tt.code, tt.want)
		}
	}
	for _, f := range []string{tokens, tokens + ".lock"} {
		if _, err := os.Stat(f); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("failed token commands made %s: %v", f, err)
		}
	}
}
