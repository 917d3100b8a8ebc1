package xds

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/modgate/modgate/health"
	"github.com/modgate/modgate/upstream"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// syncBuf collects logs.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// envoyClient plays Envoy on an ADS stream: it ACKs every response and
// hands the responses to the test.
type envoyClient struct {
	t      *testing.T
	stream discoverygrpc.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	node   *corev3.Node
	got    chan *discoverygrpc.DiscoveryResponse
	nack   atomic.Bool // NACK the next CDS response instead of ACKing it
}

func (c *envoyClient) request(typeURL, version, nonce string, names []string, nack bool) {
	req := &discoverygrpc.DiscoveryRequest{Node: c.node, TypeUrl: typeURL, VersionInfo: version, ResponseNonce: nonce, ResourceNames: names}
	if nack {
		req.ErrorDetail = &status.Status{Code: 3, Message: "test NACK: pretend the cluster is invalid"}
	}
	if err := c.stream.Send(req); err != nil {
		c.t.Errorf("send: %v", err)
	}
}

func (c *envoyClient) loop() {
	acked := map[string]string{} // type → last version ACKed
	for {
		resp, err := c.stream.Recv()
		if err != nil {
			close(c.got)
			return
		}
		names := []string(nil)
		if resp.TypeUrl == resource.EndpointType {
			names = []string{ClusterPrivate}
		}
		if resp.TypeUrl == resource.ClusterType && c.nack.CompareAndSwap(true, false) {
			c.request(resp.TypeUrl, acked[resp.TypeUrl], resp.Nonce, names, true)
		} else {
			acked[resp.TypeUrl] = resp.VersionInfo
			c.request(resp.TypeUrl, resp.VersionInfo, resp.Nonce, names, false)
		}
		c.got <- resp
	}
}

// await returns the first response of typeURL that satisfies ok.
func (c *envoyClient) await(typeURL string, ok func(*discoverygrpc.DiscoveryResponse) bool) *discoverygrpc.DiscoveryResponse {
	c.t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case resp, open := <-c.got:
			if !open {
				c.t.Fatalf("ADS stream ended waiting for %s", typeURL)
			}
			if resp.TypeUrl == typeURL && ok(resp) {
				return resp
			}
		case <-timeout:
			c.t.Fatalf("no matching %s response within 10s", typeURL)
		}
	}
}

// endpoints returns the private endpoints' health statuses in an EDS response.
func endpoints(t *testing.T, resp *discoverygrpc.DiscoveryResponse) []corev3.HealthStatus {
	t.Helper()
	var out []corev3.HealthStatus
	for _, r := range resp.Resources {
		var cla endpointv3.ClusterLoadAssignment
		if err := r.UnmarshalTo(&cla); err != nil {
			t.Fatal(err)
		}
		for _, l := range cla.Endpoints {
			for _, e := range l.LbEndpoints {
				out = append(out, e.HealthStatus)
			}
		}
	}
	return out
}

func TestDrainAndRecover(t *testing.T) {
	var failing atomic.Bool
	priv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if failing.Load() {
			http.Error(w, "down", http.StatusInternalServerError)
			return
		}
		http.NotFound(w, r)
	}))
	defer priv.Close()
	pub, err := upstream.Parse("public", "https://proxy.example.test", false)
	if err != nil {
		t.Fatal(err)
	}
	pu, err := upstream.Parse("corp", priv.URL, true)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuf{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	clk := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	reg := health.New(&upstream.Set{Public: []*upstream.Upstream{pub}, Private: []*upstream.Upstream{pu}},
		health.Config{Now: clk.now, DrainPeriod: 11 * time.Minute, Logger: log})

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	srv, err := New(ctx, Options{Health: reg, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	srv.Register(g)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(l)
	defer g.Stop()
	go srv.Run(ctx)

	conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stream, err := discoverygrpc.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := &envoyClient{t: t, stream: stream, node: &corev3.Node{Id: DefaultNodeID, Cluster: "modgate"}, got: make(chan *discoverygrpc.DiscoveryResponse, 64)}
	go c.loop()

	// CDS, then EDS, as Envoy asks.
	c.request(resource.ClusterType, "", "", nil, false)
	cds := c.await(resource.ClusterType, func(*discoverygrpc.DiscoveryResponse) bool { return true })
	names := map[string]bool{}
	for _, r := range cds.Resources {
		var cl clusterv3.Cluster
		if err := r.UnmarshalTo(&cl); err != nil {
			t.Fatal(err)
		}
		names[cl.Name] = true
		if cl.CommonLbConfig.GetHealthyPanicThreshold().GetValue() != 0 || !cl.IgnoreHealthOnHostRemoval {
			t.Errorf("cluster %s: panic threshold %v, ignore_health_on_host_removal %v", cl.Name, cl.CommonLbConfig.GetHealthyPanicThreshold(), cl.IgnoreHealthOnHostRemoval)
		}
	}
	for _, n := range []string{ClusterPublic, ClusterPrivate, ClusterBlob} {
		if !names[n] {
			t.Errorf("CDS lacks %s: %v", n, names)
		}
	}
	c.request(resource.EndpointType, "", "", []string{ClusterPrivate}, false)
	eds := c.await(resource.EndpointType, func(*discoverygrpc.DiscoveryResponse) bool { return true })
	var seq []string
	record := func(resp *discoverygrpc.DiscoveryResponse) {
		seq = append(seq, fmt.Sprintf("v%s %v", resp.VersionInfo, endpoints(t, resp)))
	}
	record(eds)
	if got := endpoints(t, eds); len(got) != 1 || got[0] != corev3.HealthStatus_HEALTHY {
		t.Fatalf("EDS = %v, want one HEALTHY endpoint", got)
	}

	pc := health.ProbeConfig{Client: upstream.NewClient(upstream.ClientOptions{}), Timeout: 2 * time.Second}
	version := func() string { srv.mu.Lock(); defer srv.mu.Unlock(); return fmt.Sprint(srv.version) }

	// A NACK is logged and survived: the next change still arrives.
	c.nack.Store(true)
	failing.Store(true)
	reg.Probe(ctx, pc)
	reg.Probe(ctx, pc)
	if v := version(); v != eds.VersionInfo {
		t.Errorf("after 2 failed probes the snapshot moved to version %s", v)
	}
	reg.Probe(ctx, pc) // exactly the third failure drains
	drained := c.await(resource.EndpointType, func(r *discoverygrpc.DiscoveryResponse) bool {
		s := endpoints(t, r)
		return len(s) == 1 && s[0] == corev3.HealthStatus_DRAINING
	})
	record(drained)

	// Still down past the drain period: removed.
	clk.advance(11*time.Minute + time.Second)
	reg.Probe(ctx, pc)
	removed := c.await(resource.EndpointType, func(r *discoverygrpc.DiscoveryResponse) bool { return len(endpoints(t, r)) == 0 })
	record(removed)

	// Back: one success is not enough, two are.
	failing.Store(false)
	reg.Probe(ctx, pc)
	if st := reg.State("corp"); st != health.Removed {
		t.Errorf("after 1 success: %v, want still removed", st)
	}
	reg.Probe(ctx, pc)
	back := c.await(resource.EndpointType, func(r *discoverygrpc.DiscoveryResponse) bool {
		s := endpoints(t, r)
		return len(s) == 1 && s[0] == corev3.HealthStatus_HEALTHY
	})
	record(back)
	t.Logf("snapshot sequence: %s", strings.Join(seq, " → "))

	if !strings.Contains(logs.String(), "NACK") {
		t.Error("the NACK was not logged")
	}
}

func TestPublicShiftsToNextHealthy(t *testing.T) {
	a, _ := upstream.Parse("a", "https://a.example.test", false)
	b, _ := upstream.Parse("b", "https://b.example.test", false)
	reg := health.New(&upstream.Set{Public: []*upstream.Upstream{a, b}}, health.Config{Logger: slog.New(slog.DiscardHandler)})
	host := func() string {
		snap, err := Build("1", reg, Sidecar{BlobAddr: DefaultBlobAddr})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range snap.GetResources(resource.ClusterType) {
			cl := r.(*clusterv3.Cluster)
			if cl.Name == ClusterPublic {
				return cl.LoadAssignment.Endpoints[0].LbEndpoints[0].GetEndpoint().Address.GetSocketAddress().Address
			}
		}
		t.Fatal("no public cluster")
		return ""
	}
	if h := host(); h != "a.example.test" {
		t.Errorf("public cluster host = %s, want a.example.test", h)
	}
	for range 3 {
		reg.Report("a", false)
	}
	if h := host(); h != "b.example.test" {
		t.Errorf("with a draining: public cluster host = %s, want b.example.test", h)
	}
}

func TestBuildRefusesHostNamesForEDS(t *testing.T) {
	p, _ := upstream.Parse("p", "https://proxy.example.test", false)
	priv, _ := upstream.Parse("corp", "https://goproxy.corp.example", true)
	reg := health.New(&upstream.Set{Public: []*upstream.Upstream{p}, Private: []*upstream.Upstream{priv}}, health.Config{Logger: slog.New(slog.DiscardHandler)})
	if _, err := Build("1", reg, Sidecar{BlobAddr: DefaultBlobAddr}); err == nil || !strings.Contains(err.Error(), "IP") {
		t.Errorf("Build with a private host name = %v, want an error asking for IP addresses", err)
	}
}

func TestBlobCluster(t *testing.T) {
	p, _ := upstream.Parse("p", "https://proxy.example.test", false)
	reg := health.New(&upstream.Set{Public: []*upstream.Upstream{p}}, health.Config{Logger: slog.New(slog.DiscardHandler)})
	files := BlobTLS{Cert: "/certs/gateway-client.pem", Key: "/certs/gateway-client-key.pem", CA: "/certs/ca.pem"}
	with := func(san string) *BlobTLS { b := files; b.SAN = san; return &b }
	tests := []struct {
		name    string
		tls     *BlobTLS
		wantSAN tlsv3.SubjectAltNameMatcher_SanType // -1: no TLS
		wantSNI string
		wantErr string
	}{
		{name: "plain", tls: nil, wantSAN: -1},
		{name: "dns", tls: with("modgate"), wantSAN: tlsv3.SubjectAltNameMatcher_DNS, wantSNI: "modgate"},
		{name: "spiffe", tls: with("spiffe://modgate.local/ns/modgate/sa/modgate"), wantSAN: tlsv3.SubjectAltNameMatcher_URI},
		{name: "ip", tls: with("10.0.0.7"), wantSAN: tlsv3.SubjectAltNameMatcher_IP_ADDRESS},
		{name: "no san", tls: with(""), wantErr: "SAN"},
		{name: "no ca", tls: &BlobTLS{Cert: "c", Key: "k", SAN: "modgate"}, wantErr: "CA"},
		{name: "no key", tls: &BlobTLS{Cert: "c", CA: "ca", SAN: "modgate"}, wantErr: "key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			snap, err := Build("1", reg, Sidecar{BlobAddr: DefaultBlobAddr, BlobTLS: tt.tls})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Build with blob TLS %+v = %v, want an error naming %s", tt.tls, err, tt.wantErr)
				}
				if _, err := New(t.Context(), Options{Health: reg, BlobTLS: tt.tls}); err == nil {
					t.Errorf("New with blob TLS %+v = nil error, want one", tt.tls)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			cl, ok := snap.GetResources(resource.ClusterType)[ClusterBlob].(*clusterv3.Cluster)
			if !ok {
				t.Fatal("no blob cluster")
			}
			if tt.wantSAN == -1 {
				if cl.TransportSocket != nil {
					t.Errorf("blob cluster transport socket = %v, want none", cl.TransportSocket)
				}
				return
			}
			var utc tlsv3.UpstreamTlsContext
			if err := cl.GetTransportSocket().GetTypedConfig().UnmarshalTo(&utc); err != nil {
				t.Fatalf("blob cluster transport socket: %v", err)
			}
			ctx := utc.GetCommonTlsContext()
			certs := ctx.GetTlsCertificates()
			if len(certs) != 1 || certs[0].GetCertificateChain().GetFilename() != files.Cert || certs[0].GetPrivateKey().GetFilename() != files.Key {
				t.Errorf("blob cluster client certificate = %v, want %s and %s", certs, files.Cert, files.Key)
			}
			vc := ctx.GetValidationContext()
			if vc.GetTrustedCa().GetFilename() != files.CA {
				t.Errorf("blob cluster trusted CA = %v, want %s", vc.GetTrustedCa(), files.CA)
			}
			sans := vc.GetMatchTypedSubjectAltNames()
			if len(sans) != 1 || sans[0].SanType != tt.wantSAN || sans[0].GetMatcher().GetExact() != tt.tls.SAN {
				t.Errorf("blob cluster SAN matchers = %v, want %v %q", sans, tt.wantSAN, tt.tls.SAN)
			}
			if utc.Sni != tt.wantSNI {
				t.Errorf("blob cluster SNI = %q, want %q", utc.Sni, tt.wantSNI)
			}
		})
	}
}

// An upstream served inside modgate (the VCS origin in standalone mode) is
// nothing Envoy could reach: it is left out of upstream_private, and the
// snapshot is still built.
func TestBuildLeavesOutInProcessUpstreams(t *testing.T) {
	p, _ := upstream.Parse("pub", "https://proxy.example", false)
	vcs, _ := upstream.Parse("vcs", "http://"+upstream.InProcessHost, true)
	corp, _ := upstream.Parse("corp", "http://10.1.2.3:8081", true)
	reg := health.New(&upstream.Set{Public: []*upstream.Upstream{p}, Private: []*upstream.Upstream{vcs, corp}}, health.Config{Logger: slog.New(slog.DiscardHandler)})
	snap, err := Build("1", reg, Sidecar{BlobAddr: DefaultBlobAddr})
	if err != nil {
		t.Fatalf("Build with an in-process upstream: %v", err)
	}
	cla := snap.GetResources(resource.EndpointType)[ClusterPrivate].(*endpointv3.ClusterLoadAssignment)
	var addrs []string
	for _, l := range cla.GetEndpoints() {
		for _, e := range l.GetLbEndpoints() {
			addrs = append(addrs, e.GetEndpoint().GetAddress().GetSocketAddress().GetAddress())
		}
	}
	if len(addrs) != 1 || addrs[0] != "10.1.2.3" {
		t.Errorf("upstream_private endpoints = %q, want only 10.1.2.3", addrs)
	}
}

// In mesh mode the VCS origin's listener is the upstream_private endpoint,
// reached over the sidecar's mutual TLS; it cannot share the cluster.
func TestBuildPublishesVCSListener(t *testing.T) {
	p, _ := upstream.Parse("pub", "https://proxy.example", false)
	vcs, _ := upstream.Parse("vcs", "http://"+upstream.InProcessHost, true)
	corp, _ := upstream.Parse("corp", "http://10.1.2.3:8081", true)
	tls := &BlobTLS{Cert: "/certs/gateway-client.pem", Key: "/certs/gateway-client-key.pem", CA: "/certs/ca.pem", SAN: "modgate"}
	reg := health.New(&upstream.Set{Public: []*upstream.Upstream{p}, Private: []*upstream.Upstream{vcs}}, health.Config{Logger: slog.New(slog.DiscardHandler)})
	snap, err := Build("1", reg, Sidecar{BlobAddr: DefaultBlobAddr, BlobTLS: tls, VCSAddr: "10.0.0.9:9004"})
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	cla := snap.GetResources(resource.EndpointType)[ClusterPrivate].(*endpointv3.ClusterLoadAssignment)
	sa := cla.GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
	if sa.GetAddress() != "10.0.0.9" || sa.GetPortValue() != 9004 {
		t.Errorf("upstream_private endpoint = %s:%d, want the VCS listener 10.0.0.9:9004", sa.GetAddress(), sa.GetPortValue())
	}
	c := snap.GetResources(resource.ClusterType)[ClusterPrivate].(*clusterv3.Cluster)
	var utc tlsv3.UpstreamTlsContext
	if err := c.GetTransportSocket().GetTypedConfig().UnmarshalTo(&utc); err != nil || len(utc.GetCommonTlsContext().GetTlsCertificates()) != 1 {
		t.Errorf("upstream_private transport socket = %v (%v), want mutual TLS with the gateway's client certificate", c.GetTransportSocket(), err)
	}

	mixed := health.New(&upstream.Set{Public: []*upstream.Upstream{p}, Private: []*upstream.Upstream{vcs, corp}}, health.Config{Logger: slog.New(slog.DiscardHandler)})
	if _, err := Build("1", mixed, Sidecar{BlobAddr: DefaultBlobAddr, VCSAddr: "10.0.0.9:9004"}); err == nil || !strings.Contains(err.Error(), "VCS") {
		t.Errorf("Build with the VCS listener and another private upstream = %v, want an error", err)
	}
}
