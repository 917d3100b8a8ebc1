package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

const certsUsage = `Usage: modgate certs --out DIR [flags]

Creates a development PKI for mesh mode (never for production):

	ca.pem, ca-key.pem             a CA, valid 2 years
	gateway.pem, gateway-key.pem   the gateway Envoy's server certificate
	                               (DNS: gateway, localhost; IP: 127.0.0.1)
	client.pem, client-key.pem     a client certificate with a SPIFFE URI
	                               SAN, for the client-side Envoy sidecar

Keys are ECDSA P-256, written with mode 0600. Existing files are kept
unless --force is given.

Flags:
`

// certsCmd runs `modgate certs`.
func certsCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("certs", certsUsage, stderr)
	out := fs.String("out", "", "`directory` to write the files to (required)")
	spiffe := fs.String("spiffe-id", "spiffe://modgate.local/ns/default/sa/go-client", "the client certificate's URI SAN")
	hosts := fs.String("gateway-hosts", "gateway,localhost,127.0.0.1", "comma-separated DNS names and IPs of the gateway certificate")
	force := fs.Bool("force", false, "overwrite existing files")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" || fs.NArg() > 0 {
		return usageError{"certs: want --out DIR and no arguments"}
	}
	id, err := url.Parse(*spiffe)
	if err != nil || id.Scheme != "spiffe" || id.Host == "" {
		return usageError{fmt.Sprintf("certs: --spiffe-id %q: want spiffe://TRUST-DOMAIN/PATH", *spiffe)}
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	if !*force {
		for _, name := range []string{"ca.pem", "ca-key.pem", "gateway.pem", "gateway-key.pem", "client.pem", "client-key.pem"} {
			if _, err := os.Stat(filepath.Join(*out, name)); err == nil {
				return fmt.Errorf("certs: %s exists (use --force to replace the set)", filepath.Join(*out, name))
			} else if !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("certs: %w", err)
			}
		}
	}
	if err := writePKI(*out, id, strings.Split(*hosts, ","), time.Now()); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote a development CA, a gateway certificate and a client certificate (%s) to %s\n", id, *out)
	return nil
}

// writePKI writes the CA, gateway and client certificates and keys.
func writePKI(dir string, clientID *url.URL, gatewayHosts []string, now time.Time) error {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "modgate development CA", Organization: []string{"modgate"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(2, 0, 0),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	if err := writeCertKey(dir, "ca", caDER, caKey); err != nil {
		return err
	}

	gw := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "gateway", Organization: []string{"modgate"}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range gatewayHosts {
		if h = strings.TrimSpace(h); h == "" {
			continue
		}
		if ip := net.ParseIP(h); ip != nil {
			gw.IPAddresses = append(gw.IPAddresses, ip)
		} else {
			gw.DNSNames = append(gw.DNSNames, h)
		}
	}
	client := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "go-client", Organization: []string{"modgate"}},
		URIs:        []*url.URL{clientID},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	for name, tmpl := range map[string]*x509.Certificate{"gateway": gw, "client": client} {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return fmt.Errorf("certs: %w", err)
		}
		tmpl.SerialNumber = serial()
		tmpl.NotBefore, tmpl.NotAfter = now.Add(-time.Hour), now.AddDate(1, 0, 0)
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return fmt.Errorf("certs: %s: %w", name, err)
		}
		if err := writeCertKey(dir, name, der, key); err != nil {
			return err
		}
	}
	return nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127)) // never fails (crypto/rand)
	return n
}

// writeCertKey writes NAME.pem and NAME-key.pem (mode 0600).
func writeCertKey(dir, name string, der []byte, key *ecdsa.PrivateKey) error {
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+"-key.pem"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	return nil
}
