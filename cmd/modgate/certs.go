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
	gateway-client.pem,            the gateway Envoy's client certificate
	gateway-client-key.pem         towards modgate's ext_proc, blob and xDS
	                               listeners (SPIFFE URI SAN --gateway-spiffe-id:
	                               what mesh_tls.allowed_clients admits)
	modgate.pem, modgate-key.pem   the server certificate of those listeners
	                               (mesh_tls.cert; DNS: modgate, localhost;
	                               IP: 127.0.0.1), which the gateway checks

Keys are ECDSA P-256, written with mode 0600. Existing files are kept
unless --force is given.

Flags:
`

// The files `modgate certs` writes, each with its -key.pem.
var pkiNames = []string{"ca", "gateway", "client", "gateway-client", "modgate"}

// certsCmd runs `modgate certs`.
func certsCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("certs", certsUsage, stderr)
	out := fs.String("out", "", "`directory` to write the files to (required)")
	spiffe := fs.String("spiffe-id", "spiffe://modgate.local/ns/default/sa/go-client", "the client certificate's URI SAN")
	gatewaySpiffe := fs.String("gateway-spiffe-id", "spiffe://modgate.local/ns/modgate/sa/gateway", "the URI SAN of the gateway Envoy's client certificate (gateway-client.pem)")
	hosts := fs.String("gateway-hosts", "gateway,localhost,127.0.0.1", "comma-separated DNS names and IPs of the gateway certificate")
	modgateHosts := fs.String("modgate-hosts", "modgate,localhost,127.0.0.1", "comma-separated DNS names and IPs of modgate's mesh listener certificate (modgate.pem)")
	force := fs.Bool("force", false, "overwrite existing files")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" || fs.NArg() > 0 {
		return usageError{"certs: want --out DIR and no arguments"}
	}
	var ids [2]*url.URL
	for i, f := range []struct{ flag, value string }{{"--spiffe-id", *spiffe}, {"--gateway-spiffe-id", *gatewaySpiffe}} {
		id, err := url.Parse(f.value)
		if err != nil || id.Scheme != "spiffe" || id.Host == "" {
			return usageError{fmt.Sprintf("certs: %s %q: want spiffe://TRUST-DOMAIN/PATH", f.flag, f.value)}
		}
		ids[i] = id
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	if !*force {
		for _, n := range pkiNames {
			for _, name := range []string{n + ".pem", n + "-key.pem"} {
				if _, err := os.Stat(filepath.Join(*out, name)); err == nil {
					return fmt.Errorf("certs: %s exists (use --force to replace the set)", filepath.Join(*out, name))
				} else if !errors.Is(err, os.ErrNotExist) {
					return fmt.Errorf("certs: %w", err)
				}
			}
		}
	}
	p := pki{
		clientID:     ids[0],
		gatewayID:    ids[1],
		gatewayHosts: strings.Split(*hosts, ","),
		modgateHosts: strings.Split(*modgateHosts, ","),
	}
	if err := writePKI(*out, p, time.Now()); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote a development CA, a gateway certificate, a client certificate (%s), the gateway's client certificate for modgate (%s) and modgate's mesh certificate to %s\n", p.clientID, p.gatewayID, *out)
	return nil
}

// pki is what the development PKI's certificates name.
type pki struct {
	clientID     *url.URL // URI SAN of client.pem
	gatewayID    *url.URL // URI SAN of gateway-client.pem
	gatewayHosts []string // DNS and IP SANs of gateway.pem
	modgateHosts []string // DNS and IP SANs of modgate.pem
}

// writePKI writes the CA and the certificates and keys of p.
func writePKI(dir string, p pki, now time.Time) error {
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

	server := func(cn string, hosts []string) *x509.Certificate {
		c := &x509.Certificate{
			Subject:     pkix.Name{CommonName: cn, Organization: []string{"modgate"}},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		}
		for _, h := range hosts {
			if h = strings.TrimSpace(h); h == "" {
				continue
			}
			if ip := net.ParseIP(h); ip != nil {
				c.IPAddresses = append(c.IPAddresses, ip)
			} else {
				c.DNSNames = append(c.DNSNames, h)
			}
		}
		return c
	}
	client := func(cn string, id *url.URL) *x509.Certificate {
		return &x509.Certificate{
			Subject:     pkix.Name{CommonName: cn, Organization: []string{"modgate"}},
			URIs:        []*url.URL{id},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}
	}
	for name, tmpl := range map[string]*x509.Certificate{
		"gateway":        server("gateway", p.gatewayHosts),
		"client":         client("go-client", p.clientID),
		"gateway-client": client("gateway", p.gatewayID),
		"modgate":        server("modgate", p.modgateHosts),
	} {
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
