package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
)

// meshTLS returns the server TLS config of the mesh listeners (ext_proc,
// blob, xDS) from mesh_tls, or nil when mesh TLS is off. It requires a
// client certificate that chains to mesh_tls.client_ca and carries one of
// mesh_tls.allowed_clients: another certificate from that CA (a client
// pod's) is refused in the handshake.
func (c *fileConfig) meshTLS() (*tls.Config, error) {
	m := c.MeshTLS
	if m.Cert == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(m.Cert, m.Key)
	if err != nil {
		return nil, fmt.Errorf("mesh_tls.cert, mesh_tls.key: %w", err)
	}
	pem, err := os.ReadFile(m.ClientCA)
	if err != nil {
		return nil, fmt.Errorf("mesh_tls.client_ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("mesh_tls.client_ca: no PEM certificate in %s", m.ClientCA)
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		// VerifyConnection, unlike VerifyPeerCertificate, runs on resumed
		// sessions too.
		VerifyConnection: allowedPeer(m.AllowedClients),
	}, nil
}

// allowedPeer returns a tls.Config.VerifyConnection that accepts a peer
// whose (already verified) leaf certificate has one of allowed as a URI
// SAN (an entry with "://") or a DNS SAN, compared exactly.
func allowedPeer(allowed []string) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("mesh tls: no client certificate")
		}
		leaf := cs.PeerCertificates[0]
		var ids []string
		for _, u := range leaf.URIs {
			ids = append(ids, u.String())
		}
		ids = append(ids, leaf.DNSNames...)
		for _, id := range ids {
			if slices.Contains(allowed, id) {
				return nil
			}
		}
		return fmt.Errorf("mesh tls: client certificate %q (SANs %q) is not in mesh_tls.allowed_clients", leaf.Subject.String(), ids)
	}
}

// isLoopback reports whether the listen address addr (host:port) can only
// be reached from this host: a loopback IP, or "localhost". An empty host,
// 0.0.0.0, [::] or any other name is not.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// checkMeshListeners refuses an ext_proc or blob listener that others can
// reach without mesh TLS, unless insecure_mesh_listeners says so: anyone
// who reaches the ext_proc listener can write identities into the audit
// log, and the blob listener sends cached modules. extprocFlag is the
// command's flag for the ext_proc listener.
func (c *fileConfig) checkMeshListeners(extprocFlag string) (warnings []string, err error) {
	if c.MeshTLS.Cert != "" {
		return nil, nil
	}
	listeners := []struct{ field, flag, addr string }{
		{"extproc_listen", extprocFlag, c.ExtProcListen},
		{"blob_listen", "--blob-listen", c.BlobListen},
	}
	if c.VCS != nil {
		listeners = append(listeners, struct{ field, flag, addr string }{"vcs.listen", "vcs.listen", c.VCS.Listen})
	}
	for _, l := range listeners {
		if l.addr == "" || l.addr == "off" || isLoopback(l.addr) {
			continue
		}
		if c.InsecureMeshListeners {
			warnings = append(warnings, fmt.Sprintf("%s %s is not loopback and mesh_tls is off: anyone who reaches it is trusted (insecure_mesh_listeners: true)", l.field, l.addr))
			continue
		}
		return nil, fmt.Errorf("%s (%s) %s: not a loopback address, and mesh_tls is not set: anyone who reaches it could forge client identities into the audit log or read cached modules; set mesh_tls (cert, key, client_ca, allowed_clients), listen on 127.0.0.1, or set insecure_mesh_listeners: true in the config file", l.field, l.flag, l.addr)
	}
	return warnings, nil
}
