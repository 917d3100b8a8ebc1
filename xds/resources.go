package xds

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/modgate/modgate/upstream"
)

// The clusters the gateway bootstrap (envoy/gateway.yaml) routes to.
const (
	ClusterPublic  = "upstream_public"
	ClusterPrivate = "upstream_private"
	ClusterBlob    = "modgate_blob"
)

// systemCAs is where the Envoy image keeps the system's trusted CAs.
const systemCAs = "/etc/ssl/certs/ca-certificates.crt"

// hostPort splits an upstream's URL into host and port (443 for https,
// 80 for http, unless the URL says).
func hostPort(u *upstream.Upstream) (string, uint32, error) {
	host, port := u.URL.Hostname(), u.URL.Port()
	if port == "" {
		port = "80"
		if u.URL.Scheme == "https" {
			port = "443"
		}
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return "", 0, fmt.Errorf("upstream %s: port %q: %w", u.Name, port, err)
	}
	return host, uint32(p), nil
}

// base returns a cluster with modgate's common settings: timeouts,
// circuit breakers, outlier detection that acts on small clusters, no
// panic routing to unhealthy hosts, and hosts removed even while
// health-checked.
func base(name string) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:           name,
		ConnectTimeout: durationpb.New(5 * time.Second),
		LbPolicy:       clusterv3.Cluster_ROUND_ROBIN,
		CircuitBreakers: &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
			MaxConnections:     wrapperspb.UInt32(4096),
			MaxPendingRequests: wrapperspb.UInt32(4096),
			MaxRequests:        wrapperspb.UInt32(4096),
			MaxRetries:         wrapperspb.UInt32(16),
		}}},
		OutlierDetection: &clusterv3.OutlierDetection{
			ConsecutiveGatewayFailure:          wrapperspb.UInt32(3),
			EnforcingConsecutiveGatewayFailure: wrapperspb.UInt32(100),
			Consecutive_5Xx:                    wrapperspb.UInt32(3),
			EnforcingConsecutive_5Xx:           wrapperspb.UInt32(100),
			MaxEjectionPercent:                 wrapperspb.UInt32(100),
			Interval:                           durationpb.New(5 * time.Second),
			BaseEjectionTime:                   durationpb.New(30 * time.Second),
		},
		CommonLbConfig:            &clusterv3.Cluster_CommonLbConfig{HealthyPanicThreshold: &typev3.Percent{Value: 0}},
		IgnoreHealthOnHostRemoval: true,
		DnsLookupFamily:           clusterv3.Cluster_V4_PREFERRED,
	}
}

// publicCluster is a LOGICAL_DNS cluster for the public upstream u, with
// TLS (SNI and a SAN check on its host) for an https URL.
func publicCluster(u *upstream.Upstream) (*clusterv3.Cluster, error) {
	host, port, err := hostPort(u)
	if err != nil {
		return nil, err
	}
	c := base(ClusterPublic)
	c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_LOGICAL_DNS}
	c.LoadAssignment = &endpointv3.ClusterLoadAssignment{
		ClusterName: ClusterPublic,
		Endpoints:   []*endpointv3.LocalityLbEndpoints{locality(lbEndpoint(host, port, corev3.HealthStatus_UNKNOWN))},
	}
	if err := withTLS(c, u, host); err != nil {
		return nil, err
	}
	return c, nil
}

// privateCluster is an EDS cluster (over ADS) for the private upstreams.
func privateCluster(ups []*upstream.Upstream) (*clusterv3.Cluster, error) {
	c := base(ClusterPrivate)
	c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}
	c.EdsClusterConfig = &clusterv3.Cluster_EdsClusterConfig{EdsConfig: &corev3.ConfigSource{
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
		ResourceApiVersion:    corev3.ApiVersion_V3,
	}}
	if len(ups) > 0 {
		host, _, err := hostPort(ups[0])
		if err != nil {
			return nil, err
		}
		if err := withTLS(c, ups[0], host); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// privateEndpoints is the assignment of upstream_private: one endpoint
// per private upstream that is not Removed, DRAINING ones marked so.
func privateEndpoints(eps []endpoint) (*endpointv3.ClusterLoadAssignment, error) {
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: ClusterPrivate}
	var lbs []*endpointv3.LbEndpoint
	for _, e := range eps {
		host, port, err := hostPort(e.u)
		if err != nil {
			return nil, err
		}
		if _, err := netip.ParseAddr(host); err != nil {
			return nil, fmt.Errorf("private upstream %s: EDS endpoints must be IP addresses, not %q", e.u.Name, host)
		}
		lbs = append(lbs, lbEndpoint(host, port, e.status))
	}
	if len(lbs) > 0 {
		cla.Endpoints = []*endpointv3.LocalityLbEndpoints{locality(lbs...)}
	}
	return cla, nil
}

// blobCluster points at the sidecar's blob listener, over mutual TLS if
// tc is not nil.
func blobCluster(addr string, tc *BlobTLS) (*clusterv3.Cluster, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("blob address %q: %w", addr, err)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("blob address %q: %w", addr, err)
	}
	c := base(ClusterBlob)
	c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS}
	c.LoadAssignment = &endpointv3.ClusterLoadAssignment{
		ClusterName: ClusterBlob,
		Endpoints:   []*endpointv3.LocalityLbEndpoints{locality(lbEndpoint(host, uint32(p), corev3.HealthStatus_UNKNOWN))},
	}
	if tc == nil {
		return c, nil
	}
	if err := sidecarTLS(c, tc); err != nil {
		return nil, err
	}
	return c, nil
}

// sidecarTLS makes c reach a sidecar listener (blob, VCS) over mutual TLS
// with the gateway's client certificate, replacing any transport socket.
func sidecarTLS(c *clusterv3.Cluster, tc *BlobTLS) error {
	file := func(name string) *corev3.DataSource {
		return &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: name}}
	}
	utc := &tlsv3.UpstreamTlsContext{
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificates: []*tlsv3.TlsCertificate{{CertificateChain: file(tc.Cert), PrivateKey: file(tc.Key)}},
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				TrustedCa:                 file(tc.CA),
				MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{sanMatcher(tc.SAN)},
			}},
		},
	}
	if !strings.Contains(tc.SAN, "://") {
		if _, err := netip.ParseAddr(tc.SAN); err != nil {
			utc.Sni = tc.SAN
		}
	}
	a, err := anypb.New(utc)
	if err != nil {
		return err
	}
	c.TransportSocket = &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: a}}
	return nil
}

// sanMatcher matches a certificate's SAN exactly: a URI SAN for a name
// with "://", an IP SAN for an IP address, else a DNS SAN.
func sanMatcher(san string) *tlsv3.SubjectAltNameMatcher {
	m := &tlsv3.SubjectAltNameMatcher{SanType: tlsv3.SubjectAltNameMatcher_DNS, Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: san}}}
	switch _, err := netip.ParseAddr(san); {
	case strings.Contains(san, "://"):
		m.SanType = tlsv3.SubjectAltNameMatcher_URI
	case err == nil:
		m.SanType = tlsv3.SubjectAltNameMatcher_IP_ADDRESS
	}
	return m
}

// locality groups endpoints in one locality, named explicitly (empty: we
// have no zones) with load_balancing_weight 1. Envoy ignores both unless
// a cluster asks for locality-weighted balancing; grpc-go's xDS client
// rejects a whole assignment with a locality that has no locality field
// ("EDS response contains a locality without ID") and drops localities of
// weight 0, the protobuf default.
func locality(lbs ...*endpointv3.LbEndpoint) *endpointv3.LocalityLbEndpoints {
	return &endpointv3.LocalityLbEndpoints{
		Locality:            &corev3.Locality{},
		LoadBalancingWeight: wrapperspb.UInt32(1),
		LbEndpoints:         lbs,
	}
}

func lbEndpoint(host string, port uint32, status corev3.HealthStatus) *endpointv3.LbEndpoint {
	return &endpointv3.LbEndpoint{
		HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
			Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
				Address:       host,
				PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
			}}},
		}},
		HealthStatus: status,
	}
}

// withTLS adds upstream TLS to c for an https upstream: SNI, and the
// server's certificate checked against the system CAs and its host name.
func withTLS(c *clusterv3.Cluster, u *upstream.Upstream, host string) error {
	opts := &httpv3.HttpProtocolOptions{UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{
		ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions{HttpProtocolOptions: &corev3.Http1ProtocolOptions{}},
		},
	}}
	if u.URL.Scheme != "https" {
		a, err := anypb.New(opts)
		if err != nil {
			return err
		}
		c.TypedExtensionProtocolOptions = map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": a}
		return nil
	}
	san := sanMatcher(host)
	tc := &tlsv3.UpstreamTlsContext{
		Sni: host,
		CommonTlsContext: &tlsv3.CommonTlsContext{
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				TrustedCa:                 &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: systemCAs}},
				MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{san},
			}},
		},
	}
	tcAny, err := anypb.New(tc)
	if err != nil {
		return err
	}
	c.TransportSocket = &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: tcAny}}
	a, err := anypb.New(opts)
	if err != nil {
		return err
	}
	c.TypedExtensionProtocolOptions = map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": a}
	return nil
}
