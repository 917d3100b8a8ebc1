package integration

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modgate/modgate/audit"
	"github.com/modgate/modgate/integration/envoyemu"
	"github.com/modgate/modgate/integration/testproxy"
)

// mesh is the gateway Envoy, emulated, in front of a real modgate whose
// ext_proc and blob listeners it uses, with the hermetic upstreams as its
// upstream clusters: the route table of envoy/gateway.yaml.
type mesh struct {
	g       *gatewayProc
	envoy   *envoyemu.Emulator
	public  *testproxy.Server
	private *testproxy.Server
}

func startMesh(t *testing.T, extraConfig string) *mesh {
	t.Helper()
	public, private := upstreams(t)
	g := startModgate(t, gatewayConfig(public, private)+extraConfig)
	cfg := envoyemu.NewConfig(g.ExtProc)
	cfg.Clusters = map[string]string{
		"upstream_public":  public.URL,
		"upstream_private": private.URL,
		"modgate_blob":     g.Blob,
	}
	cfg.Routes = envoyemu.GatewayRoutes()
	e, err := envoyemu.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return &mesh{g: g, envoy: e, public: public, private: private}
}

const clientSPIFFE = "spiffe://modgate.test/ns/ci/sa/builder"

func (m *mesh) get(t *testing.T, path string, header ...string) *envoyemu.Response {
	t.Helper()
	h := http.Header{}
	for i := 0; i+1 < len(header); i += 2 {
		h.Set(header[i], header[i+1])
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	resp, err := m.envoy.Do(ctx, envoyemu.Request{
		Method: "GET", Path: path, Header: h,
		Attributes: map[string]any{
			"source.address":                            "10.9.8.7:40000",
			"connection.mtls":                           true,
			"connection.uri_san_peer_certificate":       clientSPIFFE,
			"connection.subject_peer_certificate":       "CN=builder,O=ci",
			"connection.sha256_peer_certificate_digest": strings.Repeat("ab", 32),
		},
	})
	if err != nil {
		t.Fatalf("GET %s through the emulated Envoy: %v", path, err)
	}
	return resp
}

func TestMeshFlows(t *testing.T) {
	m := startMesh(t, "immediate_max_bytes: 100\n") // the zip (451 bytes) goes through the blob listener
	a := fixture(t, "example.com/a", "v1.0.0")

	t.Run("reject", func(t *testing.T) {
		r := m.get(t, "/example.com/a/@v/v1.0.0/../../etc/passwd")
		if r.Status != 400 || !r.LocalReply || r.Cluster != "" {
			t.Errorf("hostile path = %d, local %v, cluster %q; want a 400 local reply", r.Status, r.LocalReply, r.Cluster)
		}
	})
	t.Run("deny", func(t *testing.T) {
		r := m.get(t, "/sumdb/sum.other.test/supported")
		if r.Status != 403 || !r.LocalReply {
			t.Errorf("other checksum database = %d, local %v; want 403", r.Status, r.LocalReply)
		}
	})
	t.Run("miss, fill, then small hit", func(t *testing.T) {
		const mod = "/example.com/a/@v/v1.0.0.mod"
		r := m.get(t, mod)
		if r.Status != 200 || r.Cluster != "upstream_public" || !bytes.Equal(r.Body, a.Mod) || r.Reset || r.Header.Get("X-Modgate-Cache") != "miss" {
			t.Fatalf("miss = %d via %q (reset %v, cache %q): %q", r.Status, r.Cluster, r.Reset, r.Header.Get("X-Modgate-Cache"), r.Body)
		}
		r = m.get(t, mod)
		if r.Status != 200 || !r.LocalReply || !bytes.Equal(r.Body, a.Mod) || r.Header.Get("X-Modgate-Cache") != "hit" {
			t.Errorf("hit = %d, local %v, cache %q: %q; want an immediate 200 with the go.mod", r.Status, r.LocalReply, r.Header.Get("X-Modgate-Cache"), r.Body)
		}
		if n := m.public.Count(mod); n != 1 {
			t.Errorf("upstream saw %d requests for %s, want 1", n, mod)
		}
	})
	t.Run("large hit through the blob listener", func(t *testing.T) {
		const zip = "/example.com/a/@v/v1.0.0.zip"
		if r := m.get(t, zip); r.Status != 200 || !bytes.Equal(r.Body, a.Zip) {
			t.Fatalf("zip miss = %d (%d bytes), want the zip", r.Status, len(r.Body))
		}
		r := m.get(t, zip)
		if r.Status != 200 || r.Cluster != "modgate_blob" || !bytes.Equal(r.Body, a.Zip) {
			t.Errorf("zip hit = %d via %q (%d bytes); want it from modgate_blob", r.Status, r.Cluster, len(r.Body))
		}
		r = m.get(t, zip, "Range", "bytes=0-9")
		if r.Status != 206 || !bytes.Equal(r.Body, a.Zip[:10]) {
			t.Errorf("zip hit with Range = %d %q, want 206 and the first 10 bytes", r.Status, r.Body)
		}
		if n := m.public.Count(zip); n != 1 {
			t.Errorf("upstream saw %d requests for the zip, want 1", n)
		}
	})
	t.Run("private route", func(t *testing.T) {
		r := m.get(t, "/corp.example/private/@v/v1.0.0.info")
		if r.Status != 200 || r.Cluster != "upstream_private" {
			t.Errorf("private module = %d via %q, want 200 via upstream_private", r.Status, r.Cluster)
		}
		for _, p := range m.public.Requests() {
			if strings.Contains(p, "corp.example") {
				t.Errorf("public upstream saw %s", p)
			}
		}
	})
	t.Run("not found", func(t *testing.T) {
		r := m.get(t, "/example.com/nope/@v/list")
		if r.Status != 404 || !strings.Contains(string(r.Body), "not found") {
			t.Errorf("missing module = %d %q, want 404 not found", r.Status, r.Body)
		}
	})
	t.Run("audit", func(t *testing.T) {
		evs := m.g.waitEvents(t, 9)
		if len(evs) != 9 {
			t.Errorf("%d audit events for 9 requests", len(evs))
		}
		for _, e := range evs {
			if e.Source == nil || e.Source.IP != "10.9.8.7" || e.TLS == nil || e.TLS.Client.X509 == nil || !slices.Equal(e.TLS.Client.X509.SAN.URI, []string{clientSPIFFE}) {
				t.Errorf("audit event without the client's identity: %+v", e)
			}
		}
	})
}

func TestMeshWithholdsTamperedZip(t *testing.T) {
	m := startMesh(t, "")
	const zip = "/example.com/a/@v/v1.0.0.zip"
	bad := slices.Clone(fixture(t, "example.com/a", "v1.0.0").Zip)
	bad[len(bad)/2] ^= 1
	m.public.Replace(zip, bad)
	for i := range 2 {
		r := m.get(t, zip)
		if r.Status == 200 && !r.Reset && bytes.Equal(r.Body, bad) {
			t.Fatalf("request %d: the client got the tampered zip whole", i)
		}
		if !r.Reset && r.Status != 502 {
			t.Errorf("request %d: = %d, want 502 or a reset stream", i, r.Status)
		}
	}
	if n := m.public.Count(zip); n != 2 {
		t.Errorf("upstream saw %d requests, want 2 (nothing cached)", n)
	}
	evs := m.g.waitEvents(t, 2)
	if !slices.ContainsFunc(evs, func(e audit.Event) bool { return e.Modgate.Verification == "mismatch" }) {
		t.Errorf("no audit event with verification=mismatch: %+v", evs)
	}
}

func TestMeshSidecarUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	public := testproxy.Start(t, testproxy.Fixtures(t))
	cfg := envoyemu.NewConfig(addr)
	cfg.Clusters = map[string]string{"upstream_public": public.URL}
	cfg.Routes = []envoyemu.Route{{Cluster: "upstream_public"}}
	e, err := envoyemu.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	r, err := e.Do(t.Context(), envoyemu.Request{Method: "GET", Path: "/example.com/a/@v/list"})
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != 500 || !r.LocalReply || len(public.Requests()) != 0 {
		t.Errorf("sidecar down = %d (local %v), upstream requests %d; want a 500 and no upstream request (fail closed)", r.Status, r.LocalReply, len(public.Requests()))
	}
}

func TestMeshCoalescedWaitOutlastsMessageTimeout(t *testing.T) {
	// The follower waits for the leader's fill longer than Envoy's 500ms
	// message timeout: modgate must ask Envoy for more time.
	m := startMesh(t, "")
	const mod = "/example.com/a/@v/v1.0.0.mod"
	m.public.Delay(func(p string) time.Duration {
		if p == mod {
			return 1200 * time.Millisecond
		}
		return 0
	})
	leader := make(chan *envoyemu.Response, 1)
	go func() { leader <- m.get(t, mod) }()
	time.Sleep(200 * time.Millisecond)
	follower := m.get(t, mod)
	if follower.Status != 200 || follower.Header.Get("X-Modgate-Cache") != "coalesced" {
		t.Errorf("follower = %d (%s), cache %q; want a coalesced 200", follower.Status, follower.Details, follower.Header.Get("X-Modgate-Cache"))
	}
	if r := <-leader; r.Status != 200 || r.Header.Get("X-Modgate-Cache") != "miss" {
		t.Errorf("leader = %d (%s), cache %q; want a 200 miss", r.Status, r.Details, r.Header.Get("X-Modgate-Cache"))
	}
	if n := m.public.Count(mod); n != 1 {
		t.Errorf("upstream saw %d requests, want 1", n)
	}
}
