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

	// The mesh pair: modgate's listeners and the gateway's client identity.
	sidecar := load("modgate")
	if _, err := sidecar.Verify(x509.VerifyOptions{Roots: pool, DNSName: "modgate", KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Errorf("modgate certificate does not verify for DNS modgate: %v", err)
	}
	if err := sidecar.VerifyHostname("127.0.0.1"); err != nil {
		t.Errorf("modgate certificate: %v", err)
	}
	gwClient := load("gateway-client")
	if _, err := gwClient.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("gateway-client certificate does not verify as a client: %v", err)
	}
	if len(gwClient.URIs) != 1 || gwClient.URIs[0].String() != "spiffe://modgate.local/ns/modgate/sa/gateway" {
		t.Errorf("gateway-client URI SANs = %v", gwClient.URIs)
	}

	out.Reset()
	if code := run(context.Background(), []string{"certs", "--out", dir}, &out, &out); code == 0 || !strings.Contains(out.String(), "exists") {
		t.Errorf("second modgate certs without --force = %d %q, want a refusal", code, out.String())
	}
	if code := run(context.Background(), []string{"certs", "--out", dir, "--force", "--spiffe-id", "https://x"}, &out, &out); code != 2 {
		t.Errorf("modgate certs with a non-SPIFFE id = %d, want 2", code)
	}
	out.Reset()
	if code := run(context.Background(), []string{"certs", "--out", dir, "--force", "--gateway-spiffe-id", "gateway"}, &out, &out); code != 2 || !strings.Contains(out.String(), "--gateway-spiffe-id") {
		t.Errorf("modgate certs with a non-SPIFFE gateway id = %d %q, want 2 naming the flag", code, out.String())
	}
	other := t.TempDir()
	out.Reset()
	if code := run(context.Background(), []string{"certs", "--out", other, "--gateway-spiffe-id", "spiffe://corp.example/gw", "--modgate-hosts", "sidecar.corp.example"}, &out, &out); code != 0 {
		t.Fatalf("modgate certs with mesh flags = %d: %s", code, out.String())
	}
	pair, err := tls.LoadX509KeyPair(filepath.Join(other, "gateway-client.pem"), filepath.Join(other, "gateway-client-key.pem"))
	if err != nil || pair.Leaf.URIs[0].String() != "spiffe://corp.example/gw" {
		t.Errorf("gateway-client with --gateway-spiffe-id: %v %v", err, pair.Leaf)
	}
	pair, err = tls.LoadX509KeyPair(filepath.Join(other, "modgate.pem"), filepath.Join(other, "modgate-key.pem"))
	if err != nil || pair.Leaf.VerifyHostname("sidecar.corp.example") != nil {
		t.Errorf("modgate certificate with --modgate-hosts: %v", err)
	}
}
