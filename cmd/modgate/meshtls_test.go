package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// devPKI writes `modgate certs`' files to a new directory, with its
// default identities, and returns it.
func devPKI(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	var out bytes.Buffer
	if code := run(context.Background(), []string{"certs", "--out", dir}, &out, &out); code != 0 {
		t.Fatalf("modgate certs = %d: %s", code, out.String())
	}
	return dir
}

// meshConfig is a config with mesh TLS from the certificates in dir,
// admitting allowed.
func meshConfig(dir string, allowed ...string) *fileConfig {
	cfg := new(fileConfig)
	cfg.MeshTLS = meshTLSConfig{
		Cert:           filepath.Join(dir, "modgate.pem"),
		Key:            filepath.Join(dir, "modgate-key.pem"),
		ClientCA:       filepath.Join(dir, "ca.pem"),
		AllowedClients: allowed,
	}
	return cfg
}

const gatewayID = "spiffe://modgate.local/ns/modgate/sa/gateway" // modgate certs' default

// TestMeshTLS runs a TLS server with the mesh listeners' config and
// connects with each kind of client certificate: only the gateway's
// identity from the mesh CA gets through.
func TestMeshTLS(t *testing.T) {
	dir, otherCA := devPKI(t), devPKI(t)
	srvTLS, err := meshConfig(dir, gatewayID).meshTLS()
	if err != nil {
		t.Fatal(err)
	}
	l, err := tls.Listen("tcp", "127.0.0.1:0", srvTLS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				if err := c.(*tls.Conn).Handshake(); err == nil {
					io.WriteString(c, "hello\n")
				}
			}()
		}
	}()

	roots := x509.NewCertPool()
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil || !roots.AppendCertsFromPEM(caPEM) {
		t.Fatalf("ca.pem: %v", err)
	}
	pair := func(dir, name string) []tls.Certificate {
		t.Helper()
		c, err := tls.LoadX509KeyPair(filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem"))
		if err != nil {
			t.Fatal(err)
		}
		return []tls.Certificate{c}
	}
	tests := []struct {
		name  string
		certs []tls.Certificate
		ok    bool
	}{
		{"the gateway's client certificate", pair(dir, "gateway-client"), true},
		{"a client pod's certificate from the same CA", pair(dir, "client"), false},
		{"the gateway's identity from another CA", pair(otherCA, "gateway-client"), false},
		{"no client certificate", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := tls.Dial("tcp", l.Addr().String(), &tls.Config{RootCAs: roots, ServerName: "modgate", Certificates: tt.certs})
			var line []byte
			if err == nil {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				// TLS 1.3: the server's verdict on the client arrives with
				// the first read.
				line, err = io.ReadAll(io.LimitReader(c, 6))
			}
			got := err == nil && string(line) == "hello\n"
			if got != tt.ok {
				t.Errorf("connection with %s: read %q, err %v; want accepted = %v", tt.name, line, err, tt.ok)
			}
		})
	}
}

func TestAllowedPeer(t *testing.T) {
	spiffe, _ := url.Parse(gatewayID)
	other, _ := url.Parse("spiffe://modgate.local/ns/default/sa/go-client")
	tests := []struct {
		name    string
		allowed []string
		leaf    *x509.Certificate
		ok      bool
	}{
		{"uri", []string{gatewayID}, &x509.Certificate{URIs: []*url.URL{spiffe}}, true},
		{"dns", []string{"gateway.mesh"}, &x509.Certificate{DNSNames: []string{"gateway.mesh"}}, true},
		{"other uri", []string{gatewayID}, &x509.Certificate{URIs: []*url.URL{other}}, false},
		{"uri prefix is not enough", []string{"spiffe://modgate.local/ns/modgate"}, &x509.Certificate{URIs: []*url.URL{spiffe}}, false},
		{"dns is not a uri", []string{gatewayID}, &x509.Certificate{DNSNames: []string{"modgate.local"}}, false},
		{"common name does not count", []string{"gateway"}, &x509.Certificate{Subject: pkix.Name{CommonName: "gateway"}}, false},
	}
	for _, tt := range tests {
		err := allowedPeer(tt.allowed)(tls.ConnectionState{PeerCertificates: []*x509.Certificate{tt.leaf}})
		if (err == nil) != tt.ok {
			t.Errorf("%s: allowedPeer(%q) = %v, want ok = %v", tt.name, tt.allowed, err, tt.ok)
		}
	}
	if err := allowedPeer([]string{gatewayID})(tls.ConnectionState{}); err == nil {
		t.Error("allowedPeer with no peer certificate = nil, want an error")
	}
}

func TestCheckMeshListeners(t *testing.T) {
	tests := []struct {
		name           string
		extproc, blob  string
		meshTLS        bool
		insecure       bool
		want           string // in the error; "" for none
		wantWarnings   int
		extprocFlagArg string
	}{
		{name: "defaults on loopback", extproc: "127.0.0.1:9002", blob: "127.0.0.1:9003"},
		{name: "ipv6 loopback and localhost", extproc: "[::1]:9002", blob: "localhost:9003"},
		{name: "off", extproc: "off", blob: "off"},
		{name: "ext_proc on all interfaces", extproc: "0.0.0.0:9002", blob: "127.0.0.1:9003", want: "extproc_listen (--extproc-listen) 0.0.0.0:9002: not a loopback address"},
		{name: "ext_proc on an empty host", extproc: ":9002", blob: "127.0.0.1:9003", want: "extproc_listen"},
		{name: "blob on a name", extproc: "127.0.0.1:9002", blob: "modgate:9003", want: "blob_listen (--blob-listen) modgate:9003"},
		{name: "blob on ipv6 any", extproc: "127.0.0.1:9002", blob: "[::]:9003", want: "blob_listen"},
		{name: "with mesh tls", extproc: "0.0.0.0:9002", blob: "0.0.0.0:9003", meshTLS: true},
		{name: "insecure on purpose", extproc: "0.0.0.0:9002", blob: "0.0.0.0:9003", insecure: true, wantWarnings: 2},
		{name: "modgate extproc's flag", extproc: "0.0.0.0:9002", blob: "off", extprocFlagArg: "--listen", want: "extproc_listen (--listen)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := &fileConfig{ExtProcListen: tt.extproc, BlobListen: tt.blob, InsecureMeshListeners: tt.insecure}
			if tt.meshTLS {
				cfg.MeshTLS.Cert = "modgate.pem"
			}
			flag := "--extproc-listen"
			if tt.extprocFlagArg != "" {
				flag = tt.extprocFlagArg
			}
			warnings, err := cfg.checkMeshListeners(flag)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("checkMeshListeners = %v, want nil", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("checkMeshListeners = %v, want an error containing %q", err, tt.want)
			}
			if len(warnings) != tt.wantWarnings {
				t.Errorf("checkMeshListeners warnings = %q, want %d", warnings, tt.wantWarnings)
			}
		})
	}
}

// TestServeRefusesOpenMeshListeners runs the commands: an ext_proc or blob
// listener others can reach needs mesh TLS or the explicit opt-out.
func TestServeRefusesOpenMeshListeners(t *testing.T) {
	cfg := writeConfig(t, "upstreams: [{url: http://127.0.0.1:1}]\nsumdb_key: \"off\"\n")
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"serve", "--config", cfg, "--listen", "off", "--admin", "off", "--xds-listen", "off", "--extproc-listen", "0.0.0.0:0"}, "extproc_listen (--extproc-listen)"},
		{[]string{"serve", "--config", cfg, "--listen", "off", "--admin", "off", "--xds-listen", "off", "--blob-listen", ":0"}, "blob_listen (--blob-listen)"},
		{[]string{"extproc", "--config", cfg, "--admin", "off", "--listen", "0.0.0.0:0"}, "extproc_listen (--listen)"},
	}
	for _, tt := range tests {
		var out bytes.Buffer
		args := append(tt.args, "--cache-dir", t.TempDir())
		if code := run(context.Background(), args, &out, &out); code != 1 || !strings.Contains(out.String(), tt.want) || !strings.Contains(out.String(), "mesh_tls") {
			t.Errorf("modgate %s = %d\n%s\nwant 1 and an error naming %s and mesh_tls", strings.Join(tt.args, " "), code, out.String(), tt.want)
		}
	}
}

func TestMeshTLSConfigErrors(t *testing.T) {
	dir := devPKI(t)
	tests := []struct {
		name string
		cfg  *fileConfig
		want string
	}{
		{"missing cert file", func() *fileConfig {
			c := meshConfig(dir, gatewayID)
			c.MeshTLS.Cert = filepath.Join(dir, "nope.pem")
			return c
		}(), "mesh_tls.cert"},
		{"missing CA file", func() *fileConfig {
			c := meshConfig(dir, gatewayID)
			c.MeshTLS.ClientCA = filepath.Join(dir, "nope.pem")
			return c
		}(), "mesh_tls.client_ca"},
		{"CA file without a certificate", func() *fileConfig {
			c := meshConfig(dir, gatewayID)
			c.MeshTLS.ClientCA = filepath.Join(dir, "modgate-key.pem")
			return c
		}(), "mesh_tls.client_ca: no PEM certificate"},
	}
	for _, tt := range tests {
		if _, err := tt.cfg.meshTLS(); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: meshTLS() = %v, want an error naming %s", tt.name, err, tt.want)
		}
	}
	if tc, err := new(fileConfig).meshTLS(); tc != nil || err != nil {
		t.Errorf("meshTLS() with mesh_tls unset = %v, %v; want nil, nil", tc, err)
	}
}

// TestShippedMeshConfig checks envoy/modgate-mesh.yaml against what
// `modgate certs` makes: the files it names, the gateway identity it
// admits, and that it may listen beyond loopback.
func TestShippedMeshConfig(t *testing.T) {
	cfg, err := loadConfig("../../envoy/modgate-mesh.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cfg.checkMeshListeners("--extproc-listen"); err != nil {
		t.Errorf("modgate-mesh.yaml: %v", err)
	}
	if !slices.Equal(cfg.MeshTLS.AllowedClients, []string{gatewayID}) {
		t.Errorf("mesh_tls.allowed_clients = %q, want the gateway's default identity %q only", cfg.MeshTLS.AllowedClients, gatewayID)
	}
	names := map[string]string{
		"mesh_tls.cert": cfg.MeshTLS.Cert, "mesh_tls.key": cfg.MeshTLS.Key, "mesh_tls.client_ca": cfg.MeshTLS.ClientCA,
		"xds.blob_tls.cert": cfg.XDS.BlobTLS.Cert, "xds.blob_tls.key": cfg.XDS.BlobTLS.Key, "xds.blob_tls.ca": cfg.XDS.BlobTLS.CA,
	}
	dir := devPKI(t)
	for field, p := range names {
		if _, err := os.Stat(filepath.Join(dir, filepath.Base(p))); err != nil || filepath.Dir(p) != "/etc/modgate/certs" {
			t.Errorf("%s = %s: not a file modgate certs makes, in /etc/modgate/certs: %v", field, p, err)
		}
	}
	// With the files where the config says, it loads.
	cfg.MeshTLS = meshConfig(dir, gatewayID).MeshTLS
	if _, err := cfg.meshTLS(); err != nil {
		t.Errorf("mesh TLS of modgate-mesh.yaml with modgate certs' files: %v", err)
	}
	if o := cfg.xdsOptions(nil, nil); o.BlobTLS == nil || o.BlobTLS.SAN != "modgate" {
		t.Errorf("xds options of modgate-mesh.yaml: blob TLS %+v, want SAN modgate", o.BlobTLS)
	}
}

func TestIsLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:1": true, "127.1.2.3:1": true, "[::1]:1": true, "localhost:1": true, "LOCALHOST:1": true, "[::ffff:127.0.0.1]:1": true,
		"0.0.0.0:1": false, ":1": false, "[::]:1": false, "10.0.0.1:1": false, "modgate:1": false, "garbage": false,
	} {
		if got := isLoopback(addr); got != want {
			t.Errorf("isLoopback(%q) = %v, want %v", addr, got, want)
		}
	}
}
