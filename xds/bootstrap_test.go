package xds

import (
	"encoding/json"
	"log/slog"
	"net"
	"os"
	"strconv"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"gopkg.in/yaml.v3"

	"github.com/modgate/modgate/health"
	"github.com/modgate/modgate/upstream"
)

// TestShippedBootstrapAgrees checks that modgate xds and the shipped
// gateway bootstrap form a pair: the node id, the ADS cluster and its port,
// and every cluster a route names exists, statically or in the snapshot.
func TestShippedBootstrapAgrees(t *testing.T) {
	data, err := os.ReadFile("../envoy/gateway.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	js, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	var b bootstrapv3.Bootstrap
	if err := protojson.Unmarshal(js, &b); err != nil {
		t.Fatal(err)
	}
	if b.Node.GetId() != DefaultNodeID {
		t.Errorf("bootstrap node id %q, xds publishes for %q", b.Node.GetId(), DefaultNodeID)
	}

	static := map[string]*clusterv3.Cluster{}
	for _, c := range b.StaticResources.GetClusters() {
		static[c.Name] = c
	}
	ads := b.DynamicResources.GetAdsConfig().GetGrpcServices()
	if len(ads) != 1 || b.DynamicResources.GetCdsConfig().GetAds() == nil {
		t.Fatalf("bootstrap does not take CDS over ADS: %v", b.DynamicResources)
	}
	adsCluster := static[ads[0].GetEnvoyGrpc().GetClusterName()]
	if adsCluster == nil {
		t.Fatalf("ADS cluster %q is not a static cluster", ads[0].GetEnvoyGrpc().GetClusterName())
	}
	_, port, _ := net.SplitHostPort(DefaultListen)
	got := adsCluster.LoadAssignment.Endpoints[0].LbEndpoints[0].GetEndpoint().Address.GetSocketAddress().GetPortValue()
	if strconv.Itoa(int(got)) != port {
		t.Errorf("ADS cluster port %d, modgate xds listens on %s", got, port)
	}

	pub, _ := upstream.Parse("public", "https://proxy.example.test", false)
	priv, _ := upstream.Parse("corp", "https://10.0.0.1", true)
	reg := health.New(&upstream.Set{Public: []*upstream.Upstream{pub}, Private: []*upstream.Upstream{priv}}, health.Config{Logger: slog.New(slog.DiscardHandler)})
	snap, err := Build("1", reg, Sidecar{BlobAddr: DefaultBlobAddr})
	if err != nil {
		t.Fatal(err)
	}
	published := map[string]bool{}
	for name := range snap.GetResources(resource.ClusterType) {
		published[name] = true
		if static[name] != nil {
			t.Errorf("cluster %s is both static and published: Envoy refuses that", name)
		}
	}

	// Every route's cluster exists.
	var hcm hcmv3.HttpConnectionManager
	if err := b.StaticResources.Listeners[0].FilterChains[0].Filters[0].GetTypedConfig().UnmarshalTo(&hcm); err != nil {
		t.Fatal(err)
	}
	routes := 0
	for _, vh := range hcm.GetRouteConfig().GetVirtualHosts() {
		for _, r := range vh.Routes {
			name := r.GetRoute().GetCluster()
			if name == "" {
				continue // the direct response
			}
			routes++
			if static[name] == nil && !published[name] {
				t.Errorf("route to %s: neither static nor published by xds", name)
			}
		}
	}
	if routes != 3 {
		t.Errorf("%d routes to clusters, want 3 (private, blob, public)", routes)
	}
}
