package integration

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/modgate/modgate/audit"
	"github.com/modgate/modgate/integration/testproxy"
)

// snapshotOf asks modgate's xDS server, as the gateway Envoy would, for
// its current clusters and the private cluster's endpoints.
func snapshotOf(t *testing.T, addr string) (version string, clusters map[string]*clusterv3.Cluster, private []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	s, err := discoverygrpc.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	node := &corev3.Node{Id: "modgate-gateway"}
	ask := func(typ string, names []string) *discoverygrpc.DiscoveryResponse {
		if err := s.Send(&discoverygrpc.DiscoveryRequest{Node: node, TypeUrl: typ, ResourceNames: names}); err != nil {
			t.Fatal(err)
		}
		for {
			r, err := s.Recv()
			if err != nil {
				t.Fatalf("xds %s: %v", typ, err)
			}
			if r.TypeUrl == typ {
				return r
			}
		}
	}
	cds := ask(resource.ClusterType, nil)
	clusters = map[string]*clusterv3.Cluster{}
	for _, r := range cds.Resources {
		var c clusterv3.Cluster
		if err := r.UnmarshalTo(&c); err != nil {
			t.Fatal(err)
		}
		clusters[c.Name] = &c
	}
	eds := ask(resource.EndpointType, []string{"upstream_private"})
	for _, r := range eds.Resources {
		var cla endpointv3.ClusterLoadAssignment
		if err := r.UnmarshalTo(&cla); err != nil {
			t.Fatal(err)
		}
		for _, l := range cla.Endpoints {
			for _, e := range l.LbEndpoints {
				sa := e.GetEndpoint().Address.GetSocketAddress()
				private = append(private, fmt.Sprintf("%s:%d %s", sa.Address, sa.GetPortValue(), e.HealthStatus))
			}
		}
	}
	return cds.VersionInfo, clusters, private
}

func TestFailoverWhenAnUpstreamDrains(t *testing.T) {
	var pub []*testproxy.Module
	for _, m := range testproxy.Fixtures(t) {
		if !strings.HasPrefix(m.Path, "corp.example/") {
			pub = append(pub, m)
		}
	}
	key := testproxy.NewKey(t)
	first := testproxy.StartWith(t, pub, testproxy.Options{Key: key})
	second := testproxy.StartWith(t, pub, testproxy.Options{Key: key})
	first.Fault(func(string) int { return http.StatusInternalServerError })
	cfg := fmt.Sprintf(`
upstreams:
  - {name: first, url: %s}
  - {name: second, url: %s}
sumdb: [%s]
sumdb_key: %s
health: {interval: 100ms, timeout: 1s}
`, first.URL, second.URL, first.SumDB, key.Verifier)
	g := startModgate(t, cfg)

	// Downloads work while the first upstream fails (it is skipped after
	// its failures), and keep working once it is drained.
	if out, err := download(t, g.URL, key.Verifier, "example.com/a@v1.0.0"); err != nil {
		t.Fatalf("download while the first upstream fails: %v\n%s", err, out)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(g.logText(), "upstream=first from=healthy to=draining") {
		if time.Now().After(deadline) {
			t.Fatalf("the failing upstream was not drained within 10s; log:\n%s", g.logText())
		}
		time.Sleep(50 * time.Millisecond)
	}
	moduleRequests := func() int {
		n := 0
		for _, r := range first.Requests() {
			if strings.HasPrefix(r, "/example.com/") || strings.HasPrefix(r, "/sumdb/") {
				n++
			}
		}
		return n
	}
	before := moduleRequests()
	if out, err := download(t, g.URL, key.Verifier, "example.com/b@v1.0.0", "example.com/c/v2@v2.0.0"); err != nil {
		t.Fatalf("download after the drain: %v\n%s", err, out)
	}
	if after := moduleRequests(); after != before {
		t.Errorf("the drained upstream got %d more module requests", after-before)
	}

	// Its drain is in the control plane's snapshot too: upstream_public
	// now points at the second upstream.
	_, clusters, _ := snapshotOf(t, g.XDS)
	sa := clusters["upstream_public"].GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
	if want := strings.TrimPrefix(second.URL, "http://"); fmt.Sprintf("%s:%d", sa.GetAddress(), sa.GetPortValue()) != want {
		t.Errorf("upstream_public points at %s:%d, want the second upstream %s", sa.GetAddress(), sa.GetPortValue(), want)
	}

	// No request in between was answered 404, and the drain is audited.
	evs := g.waitEvents(t, 1)
	for _, e := range evs {
		if e.HTTP != nil && e.HTTP.Response.StatusCode == http.StatusNotFound {
			t.Errorf("a request was answered 404 during the failover: %+v", e)
		}
	}
	if !slices.ContainsFunc(evs, func(e audit.Event) bool {
		return e.Event.Action == "upstream-health" && e.Modgate.Upstream == "first" && e.Event.Reason == "healthy -> draining"
	}) {
		t.Errorf("the drain was not audited")
	}
}

func TestReloadUpstreams(t *testing.T) {
	public, private := upstreams(t)
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "modgate.yaml")
	write := func(text string) {
		if err := os.WriteFile(cfgFile, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	config := func(extraUpstreams string) string {
		return fmt.Sprintf("upstreams:\n  - {name: public, url: %s}\n%sprivate: [corp.example]\nsumdb: [%s]\nsumdb_key: %s\n",
			public.URL, extraUpstreams, public.SumDB, public.VerifierKey)
	}
	write(config(""))
	g := startModgate(t, "", "--config", cfgFile) // the later --config wins
	v1, _, priv := snapshotOf(t, g.XDS)
	if len(priv) != 0 {
		t.Fatalf("private endpoints before the reload: %v", priv)
	}

	// Add the private upstream and reload: the next snapshot has it.
	write(config(fmt.Sprintf("  - {name: corp, url: %s, private: true}\n", private.URL)))
	g.cmd.Process.Signal(syscall.SIGHUP)
	want := strings.TrimPrefix(private.URL, "http://") + " HEALTHY"
	deadline := time.Now().Add(10 * time.Second)
	var v2 string
	// snapshotOf reads the version from CDS, then the endpoints from EDS:
	// a reload between the two shows the new endpoints under the old
	// version, so wait for both.
	for {
		v2, _, priv = snapshotOf(t, g.XDS)
		if slices.Contains(priv, want) && v2 != v1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the reload: version %s (was %s), private endpoints %v, want a new version with %s; log:\n%s", v2, v1, priv, want, g.logText())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code, _ := get(t, g.URL+"/corp.example/private/@v/v1.0.0.info"); code != 200 {
		t.Errorf("private module after the reload = %d, want 200", code)
	}

	// A broken file changes nothing.
	write("upstreams: [this is not: valid\n")
	g.cmd.Process.Signal(syscall.SIGHUP)
	deadline = time.Now().Add(10 * time.Second)
	for !strings.Contains(g.logText(), "config reload refused") {
		if time.Now().After(deadline) {
			t.Fatalf("the broken reload was not refused; log:\n%s", g.logText())
		}
		time.Sleep(50 * time.Millisecond)
	}
	v3, _, priv := snapshotOf(t, g.XDS)
	if v3 != v2 || !slices.Contains(priv, want) {
		t.Errorf("after a broken reload: version %s (was %s), private %v", v3, v2, priv)
	}
	if code, _ := get(t, g.URL+"/corp.example/private/@v/v1.0.0.info"); code != 200 {
		t.Errorf("private module after the broken reload = %d, want 200", code)
	}
}

// TestRejectedVersionIsNotResent runs two xDS clients that cannot accept
// the first snapshot version: one rejects its clusters (CDS), the other
// its endpoints (EDS). For 5 s each NACKs every copy of that version it
// gets. Each must get it at most twice (the first send, and at most one
// more), modgate must stay near idle meanwhile, and each rejection must be
// logged, audited and counted once. When the next version comes (a
// private upstream drains), both get it, and accept it.
func TestRejectedVersionIsNotResent(t *testing.T) {
	public := httptest.NewServer(http.NotFoundHandler())
	defer public.Close()
	var failing atomic.Bool
	private := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if failing.Load() {
			http.Error(w, "down", http.StatusInternalServerError)
			return
		}
		http.NotFound(w, r)
	}))
	defer private.Close()
	g := startModgate(t, fmt.Sprintf(`
upstreams:
  - {name: public, url: %s}
  - {name: corp, url: %s, private: true}
private: [corp.example]
sumdb_key: "off"
health: {interval: 100ms, timeout: 1s}
`, public.URL, private.URL))

	const window = 5 * time.Second
	clients := []struct {
		name, typ string
		c         *adsRejecter
	}{
		{name: "cds", typ: resource.ClusterType},
		{name: "eds", typ: resource.EndpointType},
	}
	for i := range clients {
		clients[i].c = startRejecter(t, g.XDS, "modgate-gateway", clients[i].typ)
	}
	for _, cl := range clients {
		if !cl.c.waitFor(10*time.Second, func(c *adsRejecter) bool { return c.rejected != "" }) {
			t.Fatalf("%s client: nothing to reject within 10s; log:\n%s", cl.name, g.logText())
		}
	}
	pid := g.cmd.Process.Pid
	cpu0 := procCPU(t, pid)
	time.Sleep(window)
	cpu := procCPU(t, pid) - cpu0
	t.Logf("modgate used %v of CPU in the %v two clients rejected a version", cpu, window)
	if cpu > window/5 {
		t.Errorf("modgate used %v of CPU in %v while clients rejected a version, want it near idle", cpu, window)
	}
	for _, cl := range clients {
		v := cl.c.rejected
		n := cl.c.count(cl.typ, v)
		t.Logf("%s client got the version it rejected (%s) %d times in %v", cl.name, v, n, window)
		if n > 2 {
			t.Errorf("%s client got version %s, which it rejected, %d times in %v; want at most 2", cl.name, v, n, window)
		}
	}

	// The next version reaches both, and they accept it.
	failing.Store(true)
	for _, cl := range clients {
		next := func(c *adsRejecter) bool { a := c.acked[cl.typ]; return a != "" && a != c.rejected }
		if !cl.c.waitFor(10*time.Second, next) {
			t.Errorf("%s client: no version after %s within 10s of a drain; log:\n%s", cl.name, cl.c.rejected, g.logText())
		}
	}

	// Each rejection is logged once, audited once, and counted.
	var lines []string
	for _, line := range strings.Split(g.logText(), "\n") {
		if strings.Contains(line, "rejected (NACK)") {
			lines = append(lines, line)
		}
	}
	evs := g.waitEvents(t, 1)
	samples := scrape(t, g.Admin)
	for _, cl := range clients {
		logged := 0
		for _, line := range lines {
			if strings.Contains(line, "type="+cl.name+" ") {
				logged++
			}
		}
		if logged != 1 {
			t.Errorf("%s rejection logged %d times, want once; NACK lines:\n%s", cl.name, logged, strings.Join(lines, "\n"))
		}
		audited := 0
		for _, e := range evs {
			if e.Event.Action == "xds-nack" && strings.Contains(e.Event.Reason, cl.typ) {
				audited++
				if e.Event.Outcome != audit.OutcomeFailure || !strings.Contains(e.Event.Reason, "test client: cannot accept") || e.Source == nil {
					t.Errorf("%s rejection audited as %+v (source %+v), want a failure with the client's error detail and address", cl.name, e.Event, e.Source)
				}
			}
		}
		if audited != 1 {
			t.Errorf("%s rejection audited %d times, want once", cl.name, audited)
		}
		if n := sum(samples, `^modgate_xds_nacks_total\{type="`+cl.name+`"\}$`); n < 1 || n > 2 {
			t.Errorf("modgate_xds_nacks_total{type=%q} = %v, want 1 or 2", cl.name, n)
		}
	}
}
