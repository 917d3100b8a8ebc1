package integration

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modgate/modgate/audit"
	"github.com/modgate/modgate/integration/testproxy"
)

// testPKI is a throwaway CA with a server certificate for 127.0.0.1 and a
// client certificate carrying a SPIFFE ID, all written as PEM files.
type testPKI struct {
	CA, ServerCert, ServerKey, ClientCert, ClientKey string // file names
	SPIFFE                                           string
}

func newPKI(t *testing.T) *testPKI {
	t.Helper()
	dir := t.TempDir()
	p := &testPKI{SPIFFE: "spiffe://corp.example/ns/ci/sa/builder"}
	caKey := newKey(t)
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "modgate test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	p.CA = writePEM(t, dir, "ca.pem", "CERTIFICATE", caDER)

	issue := func(name string, serial int64, tmpl *x509.Certificate) (certFile, keyFile string) {
		key := newKey(t)
		tmpl.SerialNumber = big.NewInt(serial)
		tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		return writePEM(t, dir, name+".pem", "CERTIFICATE", der), writePEM(t, dir, name+"-key.pem", "EC PRIVATE KEY", keyDER)
	}
	p.ServerCert, p.ServerKey = issue("server", 2, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "modgate"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	spiffe, err := url.Parse(p.SPIFFE)
	if err != nil {
		t.Fatal(err)
	}
	p.ClientCert, p.ClientKey = issue("client", 3, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "builder", Organization: []string{"ci"}},
		URIs:        []*url.URL{spiffe},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	return p
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func writePEM(t *testing.T, dir, name, typ string, der []byte) string {
	t.Helper()
	file := filepath.Join(dir, name)
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}

func TestTLSListener(t *testing.T) {
	public, private := upstreams(t)
	pki := newPKI(t)
	g := startModgate(t, gatewayConfig(public, private), "--tls-cert", pki.ServerCert, "--tls-key", pki.ServerKey)
	if !strings.HasPrefix(g.URL, "https://") {
		t.Fatalf("listener URL = %q, want https", g.URL)
	}
	env := append(testproxy.GoEnv(t, g.URL, public.VerifierKey), "SSL_CERT_FILE="+pki.CA)
	if out, stderr, err := testproxy.RunGo(t, t.TempDir(), env, "mod", "download", "-json", "example.com/b@v1.0.0"); err != nil {
		t.Fatalf("go mod download over HTTPS: %v\n%s\n%s", err, out, stderr)
	}
}

func TestClientCertificates(t *testing.T) {
	public, private := upstreams(t)
	pki := newPKI(t)
	g := startModgate(t, gatewayConfig(public, private),
		"--tls-cert", pki.ServerCert, "--tls-key", pki.ServerKey, "--tls-client-ca", pki.CA)

	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM([]byte(readFile(t, pki.CA)))
	client := func(withCert bool) *http.Client {
		tc := &tls.Config{RootCAs: roots}
		if withCert {
			cert, err := tls.LoadX509KeyPair(pki.ClientCert, pki.ClientKey)
			if err != nil {
				t.Fatal(err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		return &http.Client{Transport: &http.Transport{TLSClientConfig: tc}, Timeout: 10 * time.Second}
	}

	if resp, err := client(false).Get(g.URL + "/example.com/a/@v/list"); err == nil {
		resp.Body.Close()
		t.Fatalf("request without a client certificate got %s, want a failed handshake", resp.Status)
	}

	resp, err := client(true).Get(g.URL + "/example.com/a/@v/list")
	if err != nil {
		t.Fatal(err)
	}
	body := readAll(t, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "v1.0.0") {
		t.Fatalf("GET list with a client certificate = %s %q", resp.Status, body)
	}

	evs := g.waitEvents(t, 1)
	i := slices.IndexFunc(evs, func(e audit.Event) bool { return e.TLS != nil })
	if i < 0 {
		t.Fatalf("no audit event carries the client certificate: %+v", evs)
	}
	c := evs[i].TLS.Client
	if c.X509 == nil || !slices.Equal(c.X509.SAN.URI, []string{pki.SPIFFE}) || !strings.Contains(c.Subject, "CN=builder") || c.Hash == nil || len(c.Hash.SHA256) != 64 {
		t.Errorf("audit tls.client = %+v, want SPIFFE ID %s, subject CN=builder and a sha256", c, pki.SPIFFE)
	}
}
