package integration

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/modgate/modgate/capability"
	"github.com/modgate/modgate/integration/envoyemu"
)

// meshPKI makes the development PKI with the real `modgate certs`, and
// returns its directory and a client TLS config for certificate name
// ("gateway-client", "client"; "" for none) that verifies modgate's.
func meshPKI(t *testing.T) (string, func(name string) *tls.Config) {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command(modgateBin, "certs", "--out", dir).CombinedOutput(); err != nil {
		t.Fatalf("modgate certs: %v\n%s", err, out)
	}
	roots := x509.NewCertPool()
	ca, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil || !roots.AppendCertsFromPEM(ca) {
		t.Fatalf("ca.pem: %v", err)
	}
	return dir, func(name string) *tls.Config {
		c := &tls.Config{RootCAs: roots, ServerName: "modgate"}
		if name != "" {
			pair, err := tls.LoadX509KeyPair(filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem"))
			if err != nil {
				t.Fatal(err)
			}
			c.Certificates = []tls.Certificate{pair}
		}
		return c
	}
}

// TestMeshTLS runs modgate with mesh_tls and checks each mesh listener
// from the gateway's side: the gateway's certificate gets through to
// ext_proc, the blob listener and xDS; a client pod's certificate from the
// same CA, or none, does not, so nobody else can write identities into the
// audit log or read cached modules.
func TestMeshTLS(t *testing.T) {
	dir, tlsFor := meshPKI(t)
	public, private := upstreams(t)
	cfg := gatewayConfig(public, private) + fmt.Sprintf(`
immediate_max_bytes: 100
mesh_tls:
  cert: %[1]s/modgate.pem
  key: %[1]s/modgate-key.pem
  client_ca: %[1]s/ca.pem
  allowed_clients: ["spiffe://modgate.local/ns/modgate/sa/gateway"]
`, dir)
	g := startModgate(t, cfg)
	if !strings.HasPrefix(g.Blob, "https://") {
		t.Fatalf("blob listener %s, want https", g.Blob)
	}
	a := fixture(t, "example.com/a", "v1.0.0")

	emulator := func(t *testing.T, extproc, blob *tls.Config) *envoyemu.Emulator {
		t.Helper()
		c := envoyemu.NewConfig(g.ExtProc)
		c.ExtProcTLS, c.ClusterTLS = extproc, blob
		c.Clusters = map[string]string{"upstream_public": public.URL, "upstream_private": private.URL, "modgate_blob": g.Blob}
		c.Routes = []envoyemu.Route{
			{Namespace: "modgate", Key: "route", Value: "private", Cluster: "upstream_private"},
			{Namespace: "modgate", Key: "route", Value: "blob", Cluster: "modgate_blob"},
			{Namespace: "modgate", Key: "route", Value: "public", Cluster: "upstream_public"},
		}
		e, err := envoyemu.New(c)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { e.Close() })
		return e
	}
	const forged = "spiffe://modgate.local/ns/evil/sa/forged"
	do := func(t *testing.T, e *envoyemu.Emulator, path string) *envoyemu.Response {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		r, err := e.Do(ctx, envoyemu.Request{Method: "GET", Path: path, Attributes: map[string]any{
			"source.address": "10.1.1.1:5555", "connection.mtls": true, "connection.uri_san_peer_certificate": forged,
		}})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}

	t.Run("gateway: miss, then large hit through the blob listener", func(t *testing.T) {
		e := emulator(t, tlsFor("gateway-client"), tlsFor("gateway-client"))
		const zip = "/example.com/a/@v/v1.0.0.zip"
		if r := do(t, e, zip); r.Status != 200 || !bytes.Equal(r.Body, a.Zip) {
			t.Fatalf("zip miss = %d %q (%s), want the zip", r.Status, r.Body, r.Details)
		}
		if r := do(t, e, zip); r.Status != 200 || r.Cluster != "modgate_blob" || !bytes.Equal(r.Body, a.Zip) {
			t.Errorf("zip hit = %d via %q %q (%s), want the zip from modgate_blob", r.Status, r.Cluster, r.Body, r.Details)
		}
	})

	before := len(g.waitEvents(t, 2))
	for _, tt := range []struct {
		name string
		tc   *tls.Config
	}{
		{"a client pod's certificate", tlsFor("client")},
		{"no client certificate", tlsFor("")},
		{"plain text", nil},
	} {
		t.Run("ext_proc refuses "+tt.name, func(t *testing.T) {
			e := emulator(t, tt.tc, tlsFor("gateway-client"))
			if r := do(t, e, "/example.com/b/@v/v1.0.0.info"); r.Status < 500 || !r.LocalReply {
				t.Errorf("request over ext_proc with %s = %d (local %v, %s), want Envoy's 5xx: the processor is unreachable", tt.name, r.Status, r.LocalReply, r.Details)
			}
		})
	}
	time.Sleep(200 * time.Millisecond) // an event, had there been one
	if evs := g.events(t); len(evs) != before {
		t.Errorf("%d audit events from refused ext_proc clients, want none: %+v", len(evs)-before, evs[before:])
	}

	t.Run("blob listener", func(t *testing.T) {
		const zip = "/example.com/a/@v/v1.0.0.zip" // cached above
		get := func(tc *tls.Config, token string) (int, []byte, error) {
			client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}
			defer client.CloseIdleConnections()
			req, _ := http.NewRequest(http.MethodGet, g.Blob+zip, nil)
			if token != "" {
				req.Header.Set(capability.Header, token)
			}
			resp, err := client.Do(req)
			if err != nil {
				return 0, nil, err
			}
			defer resp.Body.Close()
			var b bytes.Buffer
			b.ReadFrom(resp.Body)
			return resp.StatusCode, b.Bytes(), nil
		}
		if code, body, err := get(tlsFor("gateway-client"), ""); err != nil || code != http.StatusForbidden || bytes.Contains(body, a.Zip[:32]) {
			t.Errorf("blob GET with the gateway's certificate but no capability = %d %q %v, want 403", code, body, err)
		}
		if code, body, err := get(tlsFor("gateway-client"), "9999999999.forged"); err != nil || code != http.StatusForbidden {
			t.Errorf("blob GET with a forged capability = %d %q %v, want 403", code, body, err)
		}
		for name, tc := range map[string]*tls.Config{"a client pod's certificate": tlsFor("client"), "no certificate": tlsFor("")} {
			if code, _, err := get(tc, ""); err == nil {
				t.Errorf("blob GET with %s = %d, want the TLS handshake refused", name, code)
			}
		}
	})

	t.Run("xds", func(t *testing.T) {
		check := func(creds credentials.TransportCredentials) error {
			conn, err := grpc.NewClient(g.XDS, grpc.WithTransportCredentials(creds))
			if err != nil {
				return err
			}
			defer conn.Close()
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
			if err == nil && resp.Status != healthpb.HealthCheckResponse_SERVING {
				err = fmt.Errorf("status %v", resp.Status)
			}
			return err
		}
		if err := check(credentials.NewTLS(tlsFor("gateway-client"))); err != nil {
			t.Errorf("xDS health check with the gateway's certificate: %v", err)
		}
		for name, creds := range map[string]credentials.TransportCredentials{
			"a client pod's certificate": credentials.NewTLS(tlsFor("client")),
			"plain text":                 insecure.NewCredentials(),
		} {
			if err := check(creds); err == nil {
				t.Errorf("xDS health check with %s succeeded, want it refused", name)
			}
		}
	})
}
