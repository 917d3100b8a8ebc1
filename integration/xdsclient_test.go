package integration

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	grpchealth "google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/xds"
	"google.golang.org/protobuf/types/known/anypb"
)

// grpc-go's xDS client (google.golang.org/grpc/xds) is a second,
// independent consumer of modgate's control plane. Its resolver and
// balancers register themselves process-wide when the package is
// imported, but only xds:/// targets use them, and only this file dials
// one; its bootstrap comes from xds.NewXDSResolverWithConfigForTesting,
// per ClientConn, not from the process's environment.

// xdsAuthority is the federation authority under which the test's own
// control plane serves the Listener grpc-go asks for first: modgate
// publishes clusters and endpoints, no listeners.
const xdsAuthority = "modgate.test"

// A grpcBackend is a private upstream that is a gRPC server (the health
// service) and also answers modgate's HTTP health probes, on one port:
// HTTP/1.1 for the probes, HTTP/2 without TLS (prior knowledge) for gRPC.
type grpcBackend struct {
	Addr    string // host:port
	URL     string // http://host:port
	failing atomic.Bool
}

func startGRPCBackend(t *testing.T) *grpcBackend {
	t.Helper()
	g := grpc.NewServer()
	healthpb.RegisterHealthServer(g, grpchealth.NewServer())
	b := &grpcBackend{}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
			g.ServeHTTP(w, r)
			return
		}
		if b.failing.Load() {
			http.Error(w, "failing on purpose", http.StatusInternalServerError)
			return
		}
		http.NotFound(w, r) // alive: any answer below 500
	})
	srv := httptest.NewUnstartedServer(h)
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(func() {
		srv.Close()
		g.Stop()
	})
	b.URL = srv.URL
	b.Addr = strings.TrimPrefix(srv.URL, "http://")
	return b
}

// startListenerServer serves, over ADS to node, one Listener named
// xdstp://<xdsAuthority>/envoy.config.listener.v3.Listener/<name> for
// gRPC clients (an API listener) whose route sends everything to cluster.
// It returns the server's address.
func startListenerServer(t *testing.T, node, name, cluster string) string {
	t.Helper()
	router, err := anypb.New(&routerv3.Router{})
	if err != nil {
		t.Fatal(err)
	}
	hcm, err := anypb.New(&hcmv3.HttpConnectionManager{
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{
			Name: name,
			VirtualHosts: []*routev3.VirtualHost{{
				Name:    name,
				Domains: []string{"*"},
				Routes: []*routev3.Route{{
					Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: ""}},
					Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster}}},
				}},
			}},
		}},
		HttpFilters: []*hcmv3.HttpFilter{{Name: "router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	l := &listenerv3.Listener{
		Name:        "xdstp://" + xdsAuthority + "/envoy.config.listener.v3.Listener/" + name,
		ApiListener: &listenerv3.ApiListener{ApiListener: hcm},
	}
	snap, err := cachev3.NewSnapshot("1", map[resource.Type][]types.Resource{resource.ListenerType: {l}})
	if err != nil {
		t.Fatal(err)
	}
	c := cachev3.NewSnapshotCache(false, cachev3.IDHash{}, nil)
	if err := c.SetSnapshot(t.Context(), node, snap); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	g := grpc.NewServer()
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(g, serverv3.NewServer(ctx, c, nil))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { defer close(served); g.Serve(ln) }()
	t.Cleanup(func() {
		cancel()
		g.Stop()
		<-served
	})
	return ln.Addr().String()
}

// xdsBootstrap is grpc-go's bootstrap: clusters and endpoints from
// modgate, the listener from the authority's server.
func xdsBootstrap(node, modgate, listeners string) []byte {
	return fmt.Appendf(nil, `{
  "xds_servers": [{"server_uri": %q, "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3"]}],
  "node": {"id": %q},
  "authorities": {
    %q: {"xds_servers": [{"server_uri": %q, "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3"]}]}
  },
  "client_default_listener_resource_name_template": "xdstp://%s/envoy.config.listener.v3.Listener/%%s"
}`, modgate, node, xdsAuthority, listeners, xdsAuthority)
}

// TestGRPCClientFollowsDrains runs grpc-go's xDS client against `modgate
// xds`: two private upstreams are gRPC servers that modgate probes over
// HTTP. Calls through xds:/// spread over both; when one fails its probes
// and modgate drains it, every call goes to the other; when it recovers,
// calls spread again. grpc-go must accept everything modgate sends it.
func TestGRPCClientFollowsDrains(t *testing.T) {
	const node = "modgate-gateway"
	a, b := startGRPCBackend(t), startGRPCBackend(t)
	public := httptest.NewServer(http.NotFoundHandler())
	defer public.Close()
	x := startXDS(t, fmt.Sprintf(`
upstreams:
  - {name: public, url: %s}
  - {name: corp-a, url: %s, private: true}
  - {name: corp-b, url: %s, private: true}
private: [corp.example]
xds: {node_id: %s}
health: {interval: 100ms, timeout: 1s}
`, public.URL, a.URL, b.URL, node))
	lds := startListenerServer(t, node, "private", "upstream_private")

	builder, err := xds.NewXDSResolverWithConfigForTesting(xdsBootstrap(node, x.Addr, lds))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient("xds:///private", grpc.WithResolvers(builder), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	name := map[string]string{a.Addr: "a", b.Addr: "b"}
	// call makes one call and returns the backend that answered it.
	call := func() (string, error) {
		ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
		defer cancel()
		var p peer.Peer
		if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Peer(&p), grpc.WaitForReady(true)); err != nil {
			return "", err
		}
		return name[p.Addr.String()], nil
	}
	// spread makes n calls and counts them by backend.
	spread := func(n int) map[string]int {
		t.Helper()
		got := map[string]int{}
		for range n {
			who, err := call()
			if err != nil {
				t.Fatalf("call through xds:///private: %v; modgate log:\n%s", err, x.logText())
			}
			got[who]++
		}
		return got
	}
	// until makes calls until one is answered by want, for at most 10s.
	until := func(want string) time.Duration {
		t.Helper()
		start := time.Now()
		for time.Since(start) < 10*time.Second {
			if who, err := call(); err == nil && who == want {
				return time.Since(start)
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("no call reached backend %s within 10s; modgate log:\n%s", want, x.logText())
		return 0
	}
	// untilOnly makes calls until 10 in a row go to want, for at most 10s.
	untilOnly := func(want string) time.Duration {
		t.Helper()
		start, run := time.Now(), 0
		for time.Since(start) < 10*time.Second {
			if who, err := call(); err == nil && who == want {
				if run++; run == 10 {
					return time.Since(start)
				}
				continue
			}
			run = 0
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("calls did not settle on backend %s within 10s; modgate log:\n%s", want, x.logText())
		return 0
	}

	const n = 40
	until("a")
	until("b")
	before := spread(n)
	t.Logf("both healthy: %d calls went %v", n, before)
	if before["a"] == 0 || before["b"] == 0 {
		t.Errorf("both healthy: %d calls went %v, want both backends used", n, before)
	}

	a.failing.Store(true)
	took := untilOnly("b")
	if !strings.Contains(x.logText(), "upstream=corp-a from=healthy to=draining") {
		t.Fatalf("calls left a, but modgate did not drain it; log:\n%s", x.logText())
	}
	drained := spread(n)
	t.Logf("a failing its probes: calls went only to b after %v; then %d calls went %v", took.Round(time.Millisecond), n, drained)
	if drained["a"] != 0 || drained["b"] != n {
		t.Errorf("a drained: %d calls went %v, want all to b", n, drained)
	}

	a.failing.Store(false)
	took = until("a")
	after := spread(n)
	t.Logf("a recovered: a call reached a after %v; then %d calls went %v", took.Round(time.Millisecond), n, after)
	if after["a"] == 0 || after["b"] == 0 {
		t.Errorf("a recovered: %d calls went %v, want both backends used", n, after)
	}

	if log := x.logText(); strings.Contains(log, "(NACK)") {
		t.Errorf("grpc-go rejected something modgate sent; log:\n%s", log)
	}
}
