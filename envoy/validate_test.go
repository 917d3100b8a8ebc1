package envoy

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
)

// certsExist is the file system of the Envoy container: the modgate
// certificates and the system CA bundle.
func certsExist(path string) bool {
	switch path {
	case "/etc/modgate/certs/ca.pem",
		"/etc/modgate/certs/gateway.pem", "/etc/modgate/certs/gateway-key.pem",
		"/etc/modgate/certs/client.pem", "/etc/modgate/certs/client-key.pem",
		"/etc/modgate/certs/gateway-client.pem", "/etc/modgate/certs/gateway-client-key.pem",
		"/etc/ssl/certs/ca-certificates.crt":
		return true
	}
	return false
}

func readFile(t testing.TB, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestShippedConfigs(t *testing.T) {
	v := &Validator{FileExists: certsExist}
	for _, name := range []string{"gateway.yaml", "client-sidecar.yaml"} {
		t.Run(name, func(t *testing.T) {
			if err := v.ValidateBootstrap(readFile(t, name)); err != nil {
				t.Errorf("ValidateBootstrap(%s) = %v, want nil", name, err)
			}
		})
	}
}

// extProc is the path of the ext_proc filter's config in gateway.yaml.
const extProc = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.http_filters[0].typed_config"

var brokenTests = []struct {
	file string
	want []string // substrings of the error
}{
	{"unknown-field-top", []string{`overload_managr (line 7): unknown field "overload_managr"`}},
	{"unknown-field-in-any", []string{extProc + `.failure_mode_alow (line 79): unknown field "failure_mode_alow"`}},
	{"bad-enum", []string{`static_resources.clusters[1].type (line 183): invalid value for enum field type: "STRICT_DNSS"`}},
	{"duplicate-key", []string{`static_resources.clusters[1].connect_timeout (line 185): duplicate key "connect_timeout" (first at line 184)`}},
	{"empty-cluster-name", []string{`static_resources.clusters[2].name (line 199): value length must be at least 1 runes`}},
	{"negative-timeout", []string{`static_resources.clusters[2].connect_timeout (line 201): value must be greater than 0s`}},
	{"empty-stat-prefix", []string{`static_resources.listeners[0].filter_chains[0].filters[0].typed_config.stat_prefix (line 34): value length must be at least 1 runes`}},
	{"extproc-no-grpc-service", []string{extProc + `.grpc_service (line 70): ext_proc needs grpc_service`}},
	{"deprecated-field", []string{`static_resources.clusters[0].http2_protocol_options (line 144): field envoy.config.cluster.v3.Cluster.http2_protocol_options is deprecated`}},
	{"route-missing-cluster", []string{`routes[0].route.cluster (line 121): unknown cluster "upstream_privat"`}},
	{"extproc-not-http2", []string{extProc + `.grpc_service.envoy_grpc.cluster_name (line 74): cluster "modgate_extproc" serves gRPC but is not HTTP/2`}},
	{"alpn-without-tls", []string{`static_resources.clusters[1].typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].auto_config (line 188): ALPN auto_config needs a TLS transport_socket`}},
	{"failure-mode-allow", []string{extProc + `.failure_mode_allow (line 78): must be false`}},
	{"message-timeout-short", []string{extProc + `.message_timeout (line 80): 200ms is below the minimum 500ms`}},
	{"max-message-timeout-missing", []string{extProc + `.max_message_timeout (line 70): must be set`}},
	{"no-receiving-namespace", []string{extProc + `.metadata_options.receiving_namespaces.untyped (line 102): must list "modgate"`}},
	{"missing-cert", []string{`transport_socket.typed_config.common_tls_context.tls_certificates[0].certificate_chain.filename (line 25): file "/etc/modgate/certs/gateway-cert.pem" does not exist`}},
	{"upstream-tls-no-san", []string{`static_resources.clusters[3].transport_socket.typed_config.common_tls_context.validation_context (line 247): upstream TLS accepts any certificate its CAs signed`}},
	{"extproc-cluster-no-tls", []string{`static_resources.clusters[0].transport_socket (line 167): the ext_proc cluster "modgate_extproc" must use TLS`}},
	{"extproc-cluster-no-client-cert", []string{`static_resources.clusters[0].transport_socket.typed_config.common_tls_context.tls_certificates (line 200): the ext_proc cluster "modgate_extproc" presents no client certificate`}},
	{"extproc-cluster-tls-no-san", []string{`static_resources.clusters[0].transport_socket.typed_config.common_tls_context.validation_context (line 206): upstream TLS accepts any certificate its CAs signed`}},
	{"extproc-cluster-tls-no-alpn", []string{`static_resources.clusters[0].transport_socket.typed_config.common_tls_context.alpn_protocols (line 200): cluster "modgate_extproc" serves gRPC over TLS but offers no ALPN`}},
	{"extproc-no-response-attributes", []string{extProc + `.response_attributes (line 110): must list upstream.address and xds.cluster_name: the processor learns from them which upstream Envoy's router used (missing: xds.cluster_name)`}},
	{"extproc-disabled-on-route", []string{`routes[1].typed_per_filter_config["envoy.filters.http.ext_proc"].disabled (line 133): ext_proc must not be disabled on a route`}},
}

// TestExtProcClusterOnLoopback checks the one exemption from mutual TLS
// to the sidecar: a cluster whose endpoints are all loopback addresses (or
// pipes) reaches a sidecar in Envoy's own network namespace.
func TestExtProcClusterOnLoopback(t *testing.T) {
	gw := string(readFile(t, "gateway.yaml"))
	plain := gw[:strings.Index(gw, "    # Mutual TLS to the sidecar")] + gw[strings.Index(gw, "  # The xDS server"):]
	if strings.Count(plain, "- name: modgate_extproc") != 1 || strings.Count(gw, "transport_socket:")-strings.Count(plain, "transport_socket:") != 1 {
		t.Fatal("gateway.yaml changed shape: cannot cut out the ext_proc cluster's transport_socket")
	}
	v := &Validator{FileExists: certsExist}
	tests := []struct {
		endpoint string
		wantErr  bool
	}{
		{"{address: 127.0.0.1, port_value: 9002}", false},
		{"{address: \"::1\", port_value: 9002}", false},
		{"{address: modgate, port_value: 9002}", true},
		{"{address: 10.0.0.1, port_value: 9002}", true},
		{"{address: localhost, port_value: 9002}", true}, // a name: Envoy resolves it, who knows where
	}
	for _, tt := range tests {
		cfg := strings.Replace(plain, "{address: modgate, port_value: 9002}", tt.endpoint, 1)
		err := v.ValidateBootstrap([]byte(cfg))
		if gotErr := err != nil; gotErr != tt.wantErr {
			t.Errorf("ext_proc cluster without TLS at %s: ValidateBootstrap = %v, want error: %v", tt.endpoint, err, tt.wantErr)
		}
	}
}

func TestBrokenFixtures(t *testing.T) {
	v := &Validator{FileExists: certsExist}
	tested := make(map[string]bool)
	for _, tt := range brokenTests {
		file := filepath.Join("testdata", "broken", tt.file+".yaml")
		tested[file] = true
		t.Run(tt.file, func(t *testing.T) {
			err := v.ValidateBootstrap(readFile(t, file))
			if err == nil {
				t.Fatalf("ValidateBootstrap(%s) = nil, want %q", file, tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("ValidateBootstrap(%s) = %v, want it to contain %q", file, err, w)
				}
			}
			// One defect: one problem.
			if n := strings.Count(err.Error(), "\n") + 1; n != 1 {
				t.Errorf("ValidateBootstrap(%s) reported %d problems, want 1:\n%v", file, n, err)
			}
		})
	}
	files, err := filepath.Glob(filepath.Join("testdata", "broken", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if !tested[f] {
			t.Errorf("fixture %s has no case in brokenTests", f)
		}
	}
}

func TestValidateBootstrapYAML(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"empty", "", "yaml: empty document"},
		{"syntax", "node: [\n", "yaml: line"},
		{"two documents", "node: {id: a}\n---\nnode: {id: b}\n", "more than one document"},
		{"not a mapping", "- a\n", "document is not a mapping"},
		{"alias cycle", "node: &n {metadata: {x: *n}}\n", "alias *n refers to a value that contains it"},
		{"non-scalar key", "? [a]\n: b\n", "mapping key is not a scalar"},
		{"custom tag", "node: {id: !secret a}\n", "node.id (line 1): unsupported tag !secret"},
		{"duplicate map key", "node: {id: a, id: b}\n", `node.id (line 1): duplicate key "id"`},
		{"undefined enum number", "static_resources: {clusters: [{name: a, type: 42}]}\n", "undefined value 42 for enum"},
		{"unknown Any type", "static_resources: {listeners: [{name: a, filter_chains: [{filters: [{name: x, typed_config: {\"@type\": type.googleapis.com/x.Y}}]}]}]}\n", `unable to resolve "type.googleapis.com/x.Y"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := (&Validator{}).ValidateBootstrap([]byte(tt.yaml))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ValidateBootstrap(%q) = %v, want error containing %q", tt.yaml, err, tt.want)
			}
		})
	}
}

func TestValidateBootstrapLocalFiles(t *testing.T) {
	if _, err := os.Stat("/etc/modgate/certs/gateway.pem"); err == nil {
		t.Skip("this machine has modgate certificates")
	}
	err := ValidateBootstrap(readFile(t, "gateway.yaml"))
	if want := `file "/etc/modgate/certs/gateway.pem" does not exist`; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("ValidateBootstrap(gateway.yaml) = %v, want error containing %q", err, want)
	}
}

// cluster returns a valid STRICT_DNS cluster.
func cluster() *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 "upstream_private",
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS},
		ConnectTimeout:       durationpb.New(5 * time.Second),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: "upstream_private",
			Endpoints: []*endpointv3.LocalityLbEndpoints{{
				LbEndpoints: []*endpointv3.LbEndpoint{{
					HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
						Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
							Address:       "private-upstream.invalid",
							PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 443},
						}}},
					}},
				}},
			}},
		},
	}
}

func mustAny(t testing.TB, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestValidateResource(t *testing.T) {
	tests := []struct {
		name string
		edit func(*clusterv3.Cluster)
		want string // "" for valid
	}{
		{"valid", func(*clusterv3.Cluster) {}, ""},
		{"valid HTTP/2", func(c *clusterv3.Cluster) {
			c.TypedExtensionProtocolOptions = map[string]*anypb.Any{httpOptionsName: mustAny(t, &httpv3.HttpProtocolOptions{
				UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
					ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}},
				}},
			})}
		}, ""},
		{"empty name", func(c *clusterv3.Cluster) { c.Name = "" }, "name: value length must be at least 1 runes"},
		{"negative connect_timeout", func(c *clusterv3.Cluster) { c.ConnectTimeout = durationpb.New(-time.Second) }, "connect_timeout: value must be greater than 0s"},
		{"invalid endpoint port", func(c *clusterv3.Cluster) {
			c.LoadAssignment.Endpoints[0].LbEndpoints[0].GetEndpoint().Address.GetSocketAddress().PortSpecifier = &corev3.SocketAddress_PortValue{PortValue: 70000}
		}, "load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value: value must be less than or equal to 65535"},
		{"PGV inside Any", func(c *clusterv3.Cluster) {
			c.TypedExtensionProtocolOptions = map[string]*anypb.Any{httpOptionsName: mustAny(t, &httpv3.HttpProtocolOptions{})}
		}, `typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].upstream_protocol_options: value is required`},
		//lint:ignore SA1019 the test sets a deprecated field to see it reported.
		{"deprecated field", func(c *clusterv3.Cluster) { c.Http2ProtocolOptions = &corev3.Http2ProtocolOptions{} }, "http2_protocol_options: field envoy.config.cluster.v3.Cluster.http2_protocol_options is deprecated"},
		{"deprecated enum value", func(c *clusterv3.Cluster) {
			c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}
			c.EdsClusterConfig = &clusterv3.Cluster_EdsClusterConfig{EdsConfig: &corev3.ConfigSource{
				ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
				//lint:ignore SA1019 the test sets a deprecated enum value to see it reported.
				ResourceApiVersion: corev3.ApiVersion_V2,
			}}
		}, "eds_cluster_config.eds_config.resource_api_version: enum value envoy.config.core.v3.V2 is deprecated"},
		{"unknown Any type", func(c *clusterv3.Cluster) {
			c.TypedExtensionProtocolOptions = map[string]*anypb.Any{"x": {TypeUrl: "type.googleapis.com/x.Y"}}
		}, `typed_extension_protocol_options.x: unknown type "type.googleapis.com/x.Y"`},
		{"ALPN without TLS", func(c *clusterv3.Cluster) {
			c.TypedExtensionProtocolOptions = map[string]*anypb.Any{httpOptionsName: mustAny(t, &httpv3.HttpProtocolOptions{
				UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_AutoConfig{AutoConfig: &httpv3.HttpProtocolOptions_AutoHttpConfig{
					HttpProtocolOptions:  &corev3.Http1ProtocolOptions{},
					Http2ProtocolOptions: &corev3.Http2ProtocolOptions{},
				}},
			})}
		}, "auto_config: ALPN auto_config needs a TLS transport_socket"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := cluster()
			tt.edit(c)
			err := ValidateResource(c)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("ValidateResource(%s) = %v, want nil", tt.name, err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("ValidateResource(%s) = %v, want error containing %q", tt.name, err, tt.want)
			}
		})
	}
	if err := ValidateResource(nil); err == nil {
		t.Errorf("ValidateResource(nil) = nil, want error")
	}
}

func TestFilesUnder(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc", "modgate", "certs"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "etc", "modgate", "certs", "ca.pem"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	exists := FilesUnder(root)
	for path, want := range map[string]bool{
		"/etc/modgate/certs/ca.pem":                                true,
		"etc/modgate/certs/ca.pem":                                 true,
		"/etc/modgate/certs/client.pem":                            false,
		"/etc/modgate/certs":                                       false, // a directory
		"/../" + filepath.Base(root) + "/etc/modgate/certs/ca.pem": false,
	} {
		if got := exists(path); got != want {
			t.Errorf("FilesUnder(root)(%q) = %v, want %v", path, got, want)
		}
	}
}

// xdsBootstrap is a bootstrap with CDS over ADS; %s are the ADS cluster's
// protocol, the dynamic_resources, and the route configuration's
// validate_clusters.
const xdsBootstrap = `
node: {id: modgate-gateway, cluster: modgate}
dynamic_resources: %[2]s
static_resources:
  clusters:
  - name: modgate_xds
    type: STRICT_DNS
    connect_timeout: 5s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {%[1]s: {}}
    load_assignment:
      cluster_name: modgate_xds
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: modgate-xds, port_value: 18000}}}}]}]
  listeners:
  - name: gateway
    address: {socket_address: {address: 0.0.0.0, port_value: 8080}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: gateway
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
          route_config:
            %[3]s
            virtual_hosts:
            - name: modgate
              domains: ["*"]
              routes: [{match: {prefix: /}, route: {cluster: from_cds}}]
`

const (
	withADS    = `{ads_config: {api_type: GRPC, transport_api_version: V3, grpc_services: [{envoy_grpc: {cluster_name: modgate_xds}}]}, cds_config: {ads: {}, resource_api_version: V3}}`
	withoutADS = `{cds_config: {ads: {}, resource_api_version: V3}}`
	noCDS      = `{}`
)

func TestClusterReferences(t *testing.T) {
	tests := []struct {
		name                    string
		protocol, dyn, validate string
		want                    string // "" for valid
	}{
		{"CDS, validate_clusters false", "http2_protocol_options", withADS, "validate_clusters: false", ""},
		{"CDS, validate_clusters default", "http2_protocol_options", withADS, "", `route.cluster (line 33): unknown cluster "from_cds": no static cluster has this name (clusters from CDS need validate_clusters: false`},
		{"no CDS", "http2_protocol_options", noCDS, "validate_clusters: false", `unknown cluster "from_cds": no static cluster has this name`},
		{"ADS cluster not HTTP/2", "http_protocol_options", withADS, "validate_clusters: false", `dynamic_resources.ads_config.grpc_services[0].envoy_grpc.cluster_name (line 3): cluster "modgate_xds" serves gRPC but is not HTTP/2`},
		{"ADS not configured", "http2_protocol_options", withoutADS, "validate_clusters: false", "dynamic_resources.cds_config.ads (line 3): config source uses ADS but dynamic_resources.ads_config is not set"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			yaml := fmt.Sprintf(xdsBootstrap, tt.protocol, tt.dyn, tt.validate)
			err := (&Validator{FileExists: certsExist}).ValidateBootstrap([]byte(yaml))
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("ValidateBootstrap(%s) = %v, want nil", tt.name, err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("ValidateBootstrap(%s) = %v, want error containing %q", tt.name, err, tt.want)
			}
		})
	}
}

func FuzzValidateBootstrap(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("testdata", "broken", "*.yaml"))
	if err != nil {
		f.Fatal(err)
	}
	for _, name := range append(files, "gateway.yaml", "client-sidecar.yaml") {
		f.Add(readFile(f, name))
	}
	v := &Validator{FileExists: certsExist}
	f.Fuzz(func(t *testing.T, data []byte) {
		v.ValidateBootstrap(data) // must not panic or hang
	})
}
