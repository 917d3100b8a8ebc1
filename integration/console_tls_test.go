package integration

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestConsoleIdentities: with admin_tls and console.groups, the console
// admits the gateway's identities in the group (a client certificate
// mapped by auth.identities, with no login; a client token) and refuses
// others; the admin listener's other endpoints and `modgate cache` keep
// working over HTTPS without a client certificate.
func TestConsoleIdentities(t *testing.T) {
	public, private := upstreams(t)
	pki := newPKI(t)
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	olivia := newToken(t, tokens, "olivia", "ops")
	dave := newToken(t, tokens, "dave", "dev")
	g := startModgate(t, gatewayConfig(public, private)+fmt.Sprintf(`
admin_tls: {cert: %s, key: %s, client_ca: %s}
auth:
  tokens: %s
  identities: {%q: [ops]}
console:
  groups: [ops]
`, pki.ServerCert, pki.ServerKey, pki.CA, tokens, pki.SPIFFE))
	if !strings.HasPrefix(g.Admin, "https://") {
		t.Fatalf("admin listener %s, want https", g.Admin)
	}
	caPEM, err := os.ReadFile(pki.CA)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	cert, err := tls.LoadX509KeyPair(pki.ClientCert, pki.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	client := func(withCert bool) *http.Client {
		tc := &tls.Config{RootCAs: roots}
		if withCert {
			tc.Certificates = []tls.Certificate{cert}
		}
		return &http.Client{
			Timeout:       10 * time.Second,
			Transport:     &http.Transport{TLSClientConfig: tc},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	for _, tc := range []struct {
		name     string
		withCert bool
		token    string
		path     string
		want     int
		who      string
	}{
		{"certificate in the group", true, "", "/ui/policy", 200, pki.SPIFFE},
		{"token in the group", false, olivia, "/ui/policy", 200, "olivia"},
		{"token not in the group", false, dave, "/ui/policy", 401, ""},
		{"nothing", false, "", "/ui/policy", 303, ""},
		{"metrics without a certificate", false, "", "/metrics", 200, ""},
	} {
		req, err := http.NewRequestWithContext(t.Context(), "GET", g.Admin+tc.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if tc.token != "" {
			req.Header.Set("Authorization", "Bearer "+tc.token)
		}
		resp, err := client(tc.withCert).Do(req)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.want || (tc.who != "" && !strings.Contains(string(body), `id="who">`+tc.who+`<`)) {
			t.Errorf("%s: GET %s = %d, want %d as %q", tc.name, tc.path, resp.StatusCode, tc.want, tc.who)
		}
	}
	cmd := exec.Command(modgateBin, "cache", "stats", "--admin", g.Admin)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "SSL_CERT_FILE=" + pki.CA}
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "hot tier") {
		t.Errorf("modgate cache stats --admin %s: %v\n%s", g.Admin, err, out)
	}
}
