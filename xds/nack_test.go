package xds

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/modgate/modgate/audit"
	"github.com/modgate/modgate/health"
	"github.com/modgate/modgate/upstream"
)

// quiet is how long a test waits to be sure a response does not come: a
// server that re-sends a rejected version does so within milliseconds.
const quiet = 300 * time.Millisecond

type auditLog struct {
	mu  sync.Mutex
	evs []*audit.Event
}

func (a *auditLog) Record(e *audit.Event) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.evs = append(a.evs, e)
	return nil
}

func (a *auditLog) events() []*audit.Event {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.evs)
}

type nackCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *nackCounter) XDSNack(typ string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[typ]++
}

func (c *nackCounter) count(typ string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[typ]
}

// testPlane is a Server on 127.0.0.1 over a registry with one public and
// one private upstream, both on 127.0.0.1; the private one fails its
// probes while failing is set.
type testPlane struct {
	srv     *Server
	reg     *health.Registry
	addr    string
	logs    *syncBuf
	audit   *auditLog
	nacks   *nackCounter
	failing atomic.Bool
	probe   health.ProbeConfig
}

func startPlane(t testing.TB) *testPlane {
	t.Helper()
	p := &testPlane{logs: &syncBuf{}, audit: &auditLog{}, nacks: &nackCounter{}}
	priv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p.failing.Load() {
			http.Error(w, "down", http.StatusInternalServerError)
			return
		}
		http.NotFound(w, r)
	}))
	t.Cleanup(priv.Close)
	alive := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(alive.Close)
	pub, err := upstream.Parse("public", alive.URL, false)
	if err != nil {
		t.Fatal(err)
	}
	pu, err := upstream.Parse("corp", priv.URL, true)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(p.logs, nil))
	p.reg = health.New(&upstream.Set{Public: []*upstream.Upstream{pub}, Private: []*upstream.Upstream{pu}}, health.Config{Logger: log})
	p.probe = health.ProbeConfig{Client: upstream.NewClient(upstream.ClientOptions{}), Timeout: 2 * time.Second}
	ctx, cancel := context.WithCancel(context.Background())
	p.srv, err = New(ctx, Options{Health: p.reg, Logger: log, Auditor: p.audit, Observer: p.nacks})
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	p.srv.Register(g)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = l.Addr().String()
	var wg sync.WaitGroup
	wg.Go(func() { g.Serve(l) })
	wg.Go(func() { p.srv.Run(ctx) })
	t.Cleanup(func() {
		cancel()
		g.Stop()
		wg.Wait()
	})
	return p
}

// drain makes the private upstream fail three probes: a new snapshot.
func (p *testPlane) drain(t testing.TB) {
	t.Helper()
	p.failing.Store(true)
	for range 3 {
		p.reg.Probe(t.Context(), p.probe)
	}
	if st := p.reg.State("corp"); st != health.Draining {
		t.Fatalf("private upstream %v after 3 failed probes, want draining", st)
	}
}

// nackLines returns the log lines that report a NACK.
func (p *testPlane) nackLines() []string {
	var out []string
	for _, line := range strings.Split(p.logs.String(), "\n") {
		if strings.Contains(line, "rejected (NACK)") {
			out = append(out, line)
		}
	}
	return out
}

// adsConn is one ADS stream whose responses arrive on a channel.
type adsConn struct {
	t      testing.TB
	stream discoverygrpc.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	node   *corev3.Node
	got    chan *discoverygrpc.DiscoveryResponse
	// pending holds responses received while waiting for another type.
	pending []*discoverygrpc.DiscoveryResponse
}

func dialADS(t testing.TB, addr, node string) *adsConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s, err := discoverygrpc.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := &adsConn{t: t, stream: s, node: &corev3.Node{Id: node}, got: make(chan *discoverygrpc.DiscoveryResponse, 1024)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			resp, err := s.Recv()
			if err != nil {
				return
			}
			select {
			case c.got <- resp:
			default: // a flood: the test has failed already; drop the rest
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		conn.Close()
	})
	return c
}

// send sends a request; a non-empty nack makes it a NACK with that
// error detail.
func (c *adsConn) send(typ, version, nonce string, names []string, nack string) {
	c.t.Helper()
	req := &discoverygrpc.DiscoveryRequest{Node: c.node, TypeUrl: typ, VersionInfo: version, ResponseNonce: nonce, ResourceNames: names}
	if nack != "" {
		req.ErrorDetail = &status.Status{Code: 3, Message: nack}
	}
	if err := c.stream.Send(req); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

// next returns the next response of typ within 5s; those of other types
// wait for their turn.
func (c *adsConn) next(typ string) *discoverygrpc.DiscoveryResponse {
	c.t.Helper()
	for i, resp := range c.pending {
		if resp.TypeUrl == typ {
			c.pending = slices.Delete(c.pending, i, i+1)
			return resp
		}
	}
	timeout := time.After(5 * time.Second)
	for {
		select {
		case resp := <-c.got:
			if resp.TypeUrl == typ {
				return resp
			}
			c.pending = append(c.pending, resp)
		case <-timeout:
			c.t.Fatalf("no %s response within 5s", typ)
			return nil
		}
	}
}

// none fails the test if a response of typ has arrived or arrives
// within quiet.
func (c *adsConn) none(typ, why string) {
	c.t.Helper()
	timeout := time.After(quiet)
	for {
		for _, resp := range c.pending {
			if resp.TypeUrl == typ {
				c.t.Errorf("%s: got %s version %s, want nothing", why, typeName(typ), resp.VersionInfo)
				return
			}
		}
		select {
		case resp := <-c.got:
			c.pending = append(c.pending, resp)
		case <-timeout:
			return
		}
	}
}

// names returns the resource names in a CDS or EDS response.
func names(t testing.TB, resp *discoverygrpc.DiscoveryResponse) []string {
	t.Helper()
	var out []string
	for _, r := range resp.Resources {
		switch resp.TypeUrl {
		case resource.ClusterType:
			var c clusterv3.Cluster
			if err := r.UnmarshalTo(&c); err != nil {
				t.Fatal(err)
			}
			out = append(out, c.Name)
		case resource.EndpointType:
			var cla endpointv3.ClusterLoadAssignment
			if err := r.UnmarshalTo(&cla); err != nil {
				t.Fatal(err)
			}
			out = append(out, cla.ClusterName)
		}
	}
	slices.Sort(out)
	return out
}

// TestRejectedVersionIsNotResent NACKs a version of clusters or of
// endpoints: it must not come back, the next version must, and the
// rejection is logged, audited and counted once.
func TestRejectedVersionIsNotResent(t *testing.T) {
	for _, typ := range []string{resource.ClusterType, resource.EndpointType} {
		t.Run(typeName(typ), func(t *testing.T) {
			p := startPlane(t)
			c := dialADS(t, p.addr, DefaultNodeID)
			c.send(resource.ClusterType, "", "", nil, "")
			cds := c.next(resource.ClusterType)
			resp := cds
			if typ == resource.EndpointType {
				c.send(resource.ClusterType, cds.VersionInfo, cds.Nonce, nil, "")
				c.send(resource.EndpointType, "", "", []string{ClusterPrivate}, "")
				resp = c.next(resource.EndpointType)
			}
			v := resp.VersionInfo
			var sub []string
			if typ == resource.EndpointType {
				sub = []string{ClusterPrivate}
			}
			// Envoy's NACK: the last version accepted (none), the rejected
			// response's nonce, the error.
			c.send(typ, "", resp.Nonce, sub, "bad resource\nsecond line")
			c.none(typ, "after a NACK")
			// Asking again, still holding nothing, with the same nonce (a
			// client that re-sends its request) gets nothing either.
			c.send(typ, "", resp.Nonce, sub, "")
			c.none(typ, "after a repeated request")

			p.drain(t)
			next := c.next(typ)
			if next.VersionInfo == v {
				t.Fatalf("after a drain: version %s again, want a new one", v)
			}
			c.send(typ, next.VersionInfo, next.Nonce, sub, "")
			c.none(typ, "after an ACK")

			if lines := p.nackLines(); len(lines) != 1 || !strings.Contains(lines[0], "type="+typeName(typ)+" ") || !strings.Contains(lines[0], `version=`+v) || !strings.Contains(lines[0], `error="bad resource\nsecond line"`) {
				t.Errorf("NACK log lines = %q, want one for %s version %s with the error", lines, typeName(typ), v)
			}
			evs := p.audit.events()
			if len(evs) != 1 {
				t.Fatalf("audit events = %d, want 1", len(evs))
			}
			e := evs[0]
			if e.Event.Action != ActionNACK || e.Event.Outcome != audit.OutcomeFailure || !strings.Contains(e.Event.Reason, typ) || !strings.Contains(e.Event.Reason, "bad resource") || e.Source == nil || e.Source.IP != "127.0.0.1" {
				t.Errorf("audit event = %+v, source %+v; want an %s failure naming %s, the error and the client", e.Event, e.Source, ActionNACK, typ)
			}
			if n := p.nacks.count(typeName(typ)); n != 1 {
				t.Errorf("NACKs counted for %s = %d, want 1", typeName(typ), n)
			}
		})
	}
}

// TestRejectionReportedOncePerClient: a client that reconnects is sent
// the current version once more, and may reject it again; that is counted
// but not logged or audited again. A client that accepts it is not
// affected by the other's rejection.
func TestRejectionReportedOncePerClient(t *testing.T) {
	p := startPlane(t)
	rejecting := func() {
		c := dialADS(t, p.addr, DefaultNodeID)
		c.send(resource.ClusterType, "", "", nil, "")
		r := c.next(resource.ClusterType)
		c.send(resource.ClusterType, "", r.Nonce, nil, "cannot")
		c.none(resource.ClusterType, "after a NACK")
	}
	rejecting()
	rejecting()
	other := dialADS(t, p.addr, DefaultNodeID)
	other.send(resource.ClusterType, "", "", nil, "")
	r := other.next(resource.ClusterType)
	other.send(resource.ClusterType, r.VersionInfo, r.Nonce, nil, "")
	other.none(resource.ClusterType, "after an ACK")

	if n := p.nacks.count("cds"); n != 2 {
		t.Errorf("NACKs counted = %d, want 2", n)
	}
	if lines := p.nackLines(); len(lines) != 1 {
		t.Errorf("NACK log lines = %q, want 1", lines)
	}
	if evs := p.audit.events(); len(evs) != 1 {
		t.Errorf("audit events = %d, want 1", len(evs))
	}
}

// TestNamedSubscriptions: a client that names the resources it wants (as
// grpc-go does) gets those, now and at every new version, while Envoy's
// wildcard CDS gets every cluster.
func TestNamedSubscriptions(t *testing.T) {
	p := startPlane(t)
	named := dialADS(t, p.addr, DefaultNodeID)
	named.send(resource.ClusterType, "", "", []string{ClusterPrivate}, "")
	cds := named.next(resource.ClusterType)
	named.send(resource.EndpointType, "", "", []string{ClusterPrivate}, "")
	eds := named.next(resource.EndpointType)
	if got := names(t, cds); !slices.Equal(got, []string{ClusterPrivate}) {
		t.Errorf("CDS for %s = %v", ClusterPrivate, got)
	}
	if got := names(t, eds); !slices.Equal(got, []string{ClusterPrivate}) {
		t.Errorf("EDS for %s = %v", ClusterPrivate, got)
	}
	named.send(resource.ClusterType, cds.VersionInfo, cds.Nonce, []string{ClusterPrivate}, "")
	named.send(resource.EndpointType, eds.VersionInfo, eds.Nonce, []string{ClusterPrivate}, "")
	named.none(resource.ClusterType, "after an ACK")

	wildcard := dialADS(t, p.addr, DefaultNodeID)
	wildcard.send(resource.ClusterType, "", "", nil, "")
	all := wildcard.next(resource.ClusterType)
	want := []string{ClusterBlob, ClusterPublic, ClusterPrivate}
	slices.Sort(want)
	if got := names(t, all); !slices.Equal(got, want) {
		t.Errorf("wildcard CDS = %v, want %v", got, want)
	}
	wildcard.send(resource.ClusterType, all.VersionInfo, all.Nonce, nil, "")

	p.drain(t)
	cds2 := named.next(resource.ClusterType)
	eds2 := named.next(resource.EndpointType)
	if got := names(t, cds2); cds2.VersionInfo == cds.VersionInfo || !slices.Equal(got, []string{ClusterPrivate}) {
		t.Errorf("CDS after a drain: version %s (was %s), %v", cds2.VersionInfo, cds.VersionInfo, got)
	}
	if got := names(t, eds2); eds2.VersionInfo == eds.VersionInfo || !slices.Equal(got, []string{ClusterPrivate}) {
		t.Errorf("EDS after a drain: version %s (was %s), %v", eds2.VersionInfo, eds.VersionInfo, got)
	}
	if got := names(t, wildcard.next(resource.ClusterType)); !slices.Equal(got, want) {
		t.Errorf("wildcard CDS after a drain = %v, want %v", got, want)
	}
}

// TestEveryLocalityIsExplicit: every locality of endpoints, in EDS and in
// the DNS clusters, has a locality and weight 1 (grpc-go drops the others).
func TestEveryLocalityIsExplicit(t *testing.T) {
	pub, _ := upstream.Parse("public", "https://proxy.example.test", false)
	a, _ := upstream.Parse("a", "http://10.0.0.1:8080", true)
	b, _ := upstream.Parse("b", "http://10.0.0.2:8080", true)
	reg := health.New(&upstream.Set{Public: []*upstream.Upstream{pub}, Private: []*upstream.Upstream{a, b}}, health.Config{Logger: slog.New(slog.DiscardHandler)})
	for range 3 {
		reg.Report("b", false) // one draining endpoint too
	}
	snap, err := Build("1", reg, Sidecar{BlobAddr: DefaultBlobAddr})
	if err != nil {
		t.Fatal(err)
	}
	var localities []*endpointv3.LocalityLbEndpoints
	for _, r := range snap.GetResources(resource.ClusterType) {
		localities = append(localities, r.(*clusterv3.Cluster).GetLoadAssignment().GetEndpoints()...)
	}
	cla := snap.GetResources(resource.EndpointType)[ClusterPrivate].(*endpointv3.ClusterLoadAssignment)
	if n := len(cla.Endpoints); n != 1 || len(cla.Endpoints[0].LbEndpoints) != 2 {
		t.Fatalf("EDS localities = %v, want one with both endpoints", cla.Endpoints)
	}
	localities = append(localities, cla.Endpoints...)
	if len(localities) != 3 {
		t.Fatalf("%d localities, want 3 (public, blob, private)", len(localities))
	}
	for _, l := range localities {
		if l.Locality == nil || l.GetLoadBalancingWeight().GetValue() != 1 {
			t.Errorf("locality %v with weight %v, want an explicit locality of weight 1", l.Locality, l.GetLoadBalancingWeight())
		}
	}
}

func TestClip(t *testing.T) {
	long := strings.Repeat("é", maxDetail) // 2 bytes a rune
	tests := []struct {
		name, in string
		want     func(string) bool
	}{
		{"short", "bad cluster", func(s string) bool { return s == "bad cluster" }},
		{"invalid UTF-8", "bad \xff", func(s string) bool { return s == "bad \uFFFD" }},
		{"long", long, func(s string) bool {
			return len(s) < maxDetail+32 && strings.HasSuffix(s, "… (4096 bytes)") && strings.HasPrefix(s, "éé") && !strings.Contains(s, "\uFFFD")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := clip(tt.in); !tt.want(got) {
				t.Errorf("clip(%.20q…) = %.40q…", tt.in, got)
			}
		})
	}
}
