package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCerts(t *testing.T) {
	dir := t.TempDir()
	var out bytes.Buffer
	if code := run(context.Background(), []string{"certs", "--out", dir}, &out, &out); code != 0 {
		t.Fatalf("modgate certs = %d: %s", code, out.String())
	}
	pool := x509.NewCertPool()
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil || !pool.AppendCertsFromPEM(caPEM) {
		t.Fatalf("ca.pem: %v", err)
	}
	load := func(name string) *x509.Certificate {
		t.Helper()
		pair, err := tls.LoadX509KeyPair(filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem"))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		fi, err := os.Stat(filepath.Join(dir, name+"-key.pem"))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s-key.pem mode = %v, want 0600", name, fi.Mode())
		}
		return pair.Leaf
	}
	gw := load("gateway")
	if _, err := gw.Verify(x509.VerifyOptions{Roots: pool, DNSName: "gateway", KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Errorf("gateway certificate does not verify for DNS gateway: %v", err)
	}
	if err := gw.VerifyHostname("127.0.0.1"); err != nil {
		t.Errorf("gateway certificate: %v", err)
	}
	client := load("client")
	if _, err := client.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("client certificate does not verify as a client: %v", err)
	}
	if len(client.URIs) != 1 || client.URIs[0].String() != "spiffe://modgate.local/ns/default/sa/go-client" {
		t.Errorf("client URI SANs = %v", client.URIs)
	}

	out.Reset()
	if code := run(context.Background(), []string{"certs", "--out", dir}, &out, &out); code == 0 || !strings.Contains(out.String(), "exists") {
		t.Errorf("second modgate certs without --force = %d %q, want a refusal", code, out.String())
	}
	if code := run(context.Background(), []string{"certs", "--out", dir, "--force", "--spiffe-id", "https://x"}, &out, &out); code != 2 {
		t.Errorf("modgate certs with a non-SPIFFE id = %d, want 2", code)
	}
}
