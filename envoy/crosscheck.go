package envoy

import (
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/proto"
)

// httpOptionsName is the key Envoy looks up a cluster's
// HttpProtocolOptions by in typed_extension_protocol_options.
const httpOptionsName = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

// Envoy's ext_proc message_timeout default, and modgate's floor for it.
const (
	extProcDefaultTimeout = 200 * time.Millisecond
	extProcMinTimeout     = 500 * time.Millisecond
)

// extProcNamespace is the dynamic metadata namespace the ext_proc server
// writes the route decision to.
const extProcNamespace = "modgate"

// extProcResponseAttributes are the response attributes the ext_proc
// server reads to learn which upstream Envoy's router used.
var extProcResponseAttributes = []string{"upstream.address", "xds.cluster_name"}

// local runs the checks that need only the message at hand, on every node.
func (c *checker) local() {
	for _, n := range c.nodes {
		switch m := n.msg.(type) {
		case *clusterv3.Cluster:
			c.clusterProtocol(m, n.path)
		case *tlsv3.UpstreamTlsContext:
			c.upstreamTLS(m, n.path)
		case *extprocv3.ExternalProcessor:
			c.extProc(m, n.path)
		case *extprocv3.ExtProcPerRoute:
			if m.GetDisabled() {
				c.add(joinKey(n.path, "disabled"), "ext_proc must not be disabled on a route: requests would bypass policy")
			}
		}
	}
}

// clusterProtocol checks a cluster's HTTP protocol options: under the key
// Envoy looks them up by, and ALPN auto_config only over TLS.
func (c *checker) clusterProtocol(cl *clusterv3.Cluster, path string) {
	opath := joinKey(path, "typed_extension_protocol_options")
	for _, k := range slices.Sorted(maps.Keys(cl.GetTypedExtensionProtocolOptions())) {
		a := cl.GetTypedExtensionProtocolOptions()[k]
		if a.MessageIs(&httpv3.HttpProtocolOptions{}) && k != httpOptionsName {
			c.add(joinKey(opath, k), "HttpProtocolOptions must be keyed %q, or Envoy ignores them", httpOptionsName)
		}
	}
	if httpOptions(cl).GetAutoConfig() != nil && !clusterTLS(cl) {
		c.add(joinKey(joinKey(opath, httpOptionsName), "auto_config"),
			"ALPN auto_config needs a TLS transport_socket (envoy.transport_sockets.tls): without TLS there is no ALPN to pick the protocol")
	}
}

// httpOptions returns cl's HttpProtocolOptions, or nil.
func httpOptions(cl *clusterv3.Cluster) *httpv3.HttpProtocolOptions {
	a := cl.GetTypedExtensionProtocolOptions()[httpOptionsName]
	if a == nil {
		return nil
	}
	var o httpv3.HttpProtocolOptions
	if err := a.UnmarshalTo(&o); err != nil {
		return nil
	}
	return &o
}

// isHTTP2 reports whether cl always speaks HTTP/2 upstream.
func isHTTP2(cl *clusterv3.Cluster) bool {
	return httpOptions(cl).GetExplicitHttpConfig().GetHttp2ProtocolOptions() != nil ||
		//lint:ignore SA1019 still honoured by Envoy; the deprecation itself is reported elsewhere.
		cl.GetHttp2ProtocolOptions() != nil
}

// clusterTLS reports whether every transport socket of cl is TLS.
func clusterTLS(cl *clusterv3.Cluster) bool {
	isTLS := func(ts *corev3.TransportSocket) bool {
		return ts.GetTypedConfig().MessageIs(&tlsv3.UpstreamTlsContext{})
	}
	if !isTLS(cl.GetTransportSocket()) {
		return false
	}
	for _, m := range cl.GetTransportSocketMatches() {
		if !isTLS(m.GetTransportSocket()) {
			return false
		}
	}
	return true
}

// upstreamTLS checks that an upstream TLS context verifies the server:
// without a CA Envoy accepts any certificate, and with a CA but no SAN
// matcher any certificate that CA signed (with system CAs: any host).
func (c *checker) upstreamTLS(t *tlsv3.UpstreamTlsContext, path string) {
	ctx := t.GetCommonTlsContext()
	if ctx.GetValidationContextSdsSecretConfig() != nil ||
		ctx.GetCombinedValidationContext().GetValidationContextSdsSecretConfig() != nil {
		return // from SDS: not visible here
	}
	vpath := joinKey(joinKey(path, "common_tls_context"), "validation_context")
	vc := ctx.GetValidationContext()
	if vc == nil && ctx.GetCombinedValidationContext() != nil {
		vpath = joinKey(joinKey(joinKey(path, "common_tls_context"), "combined_validation_context"), "default_validation_context")
		vc = ctx.GetCombinedValidationContext().GetDefaultValidationContext()
	}
	switch {
	case vc.GetTrustedCa() == nil && vc.GetSystemRootCerts() == nil:
		c.add(vpath, "upstream TLS does not verify the server certificate: set trusted_ca")
	//lint:ignore SA1019 the deprecated matcher still constrains the SAN; its deprecation is reported elsewhere.
	case len(vc.GetMatchTypedSubjectAltNames()) == 0 && len(vc.GetMatchSubjectAltNames()) == 0:
		c.add(vpath, "upstream TLS accepts any certificate its CAs signed: set match_typed_subject_alt_names")
	}
}

// extProc checks modgate's contract with Envoy's ext_proc filter (see
// /work/shared/ENVOY.md): fail closed, timeouts a cache lookup fits in,
// mode overrides allowed, the route decision's namespace accepted.
func (c *checker) extProc(e *extprocv3.ExternalProcessor, path string) {
	at := func(field string) string {
		p := path
		for _, f := range strings.Split(field, ".") {
			p = joinKey(p, f)
		}
		return p
	}
	switch g := e.GetGrpcService(); {
	case g == nil:
		c.add(at("grpc_service"), "ext_proc needs grpc_service: modgate's processor is a gRPC server")
	case g.GetEnvoyGrpc() != nil && g.GetEnvoyGrpc().GetMaxReceiveMessageLength() == nil:
		c.add(at("grpc_service.envoy_grpc.max_receive_message_length"),
			"not set: Envoy accepts ext_proc messages of any size; cap it (4 MiB, grpc-go's default)")
	}
	if e.GetFailureModeAllow() {
		c.add(at("failure_mode_allow"), "must be false: ext_proc is the policy point, so fail closed")
	}
	timeout := extProcDefaultTimeout
	if d := e.GetMessageTimeout(); d != nil {
		timeout = d.AsDuration()
	}
	if timeout < extProcMinTimeout {
		c.add(at("message_timeout"), "%v is below the minimum %v (Envoy's default is %v, which times cache lookups out as 504s)",
			timeout, extProcMinTimeout, extProcDefaultTimeout)
	}
	switch d := e.GetMaxMessageTimeout(); {
	case d == nil:
		c.add(at("max_message_timeout"), "must be set: without it the processor cannot send override_message_timeout for a slow phase")
	case d.AsDuration() < timeout:
		c.add(at("max_message_timeout"), "%v is below message_timeout (%v)", d.AsDuration(), timeout)
	}
	if !e.GetAllowModeOverride() {
		c.add(at("allow_mode_override"), "must be true: the processor switches body modes per request")
	}
	if e.GetProcessingMode().GetRequestHeaderMode() == extprocv3.ProcessingMode_SKIP {
		c.add(at("processing_mode.request_header_mode"), "must not be SKIP: the processor decides on the request headers")
	}
	if !slices.Contains(e.GetMetadataOptions().GetReceivingNamespaces().GetUntyped(), extProcNamespace) {
		c.add(at("metadata_options.receiving_namespaces.untyped"),
			"must list %q: the processor's route decision is dynamic metadata in that namespace", extProcNamespace)
	}
	var missing []string
	for _, a := range extProcResponseAttributes {
		if !slices.Contains(e.GetResponseAttributes(), a) {
			missing = append(missing, a)
		}
	}
	if len(missing) > 0 {
		c.add(at("response_attributes"), "must list %s: the processor learns from them which upstream Envoy's router used (missing: %s)",
			strings.Join(extProcResponseAttributes, " and "), strings.Join(missing, ", "))
	}
}

// extProcCluster checks the static cluster cl (at path) that an ext_proc
// filter streams to: the sidecar trusts what arrives there (client
// identities, and so the audit log), and with mesh_tls it admits only the
// gateway's client certificate, so the cluster must use TLS and present
// one (a SAN matcher is required of every upstream TLS context). A
// cluster whose every endpoint is a loopback IP address or a pipe (the
// sidecar in Envoy's own network namespace) is exempt, as the sidecar
// accepts plain connections on loopback.
func (c *checker) extProcCluster(cl *clusterv3.Cluster, path string) {
	if localOnly(cl) {
		return
	}
	if !clusterTLS(cl) {
		c.add(joinKey(path, "transport_socket"),
			"the ext_proc cluster %q must use TLS (envoy.transport_sockets.tls) with a client certificate: the sidecar trusts what arrives on it, and its mesh_tls admits only the gateway's certificate", cl.GetName())
		return
	}
	var t tlsv3.UpstreamTlsContext
	if err := cl.GetTransportSocket().GetTypedConfig().UnmarshalTo(&t); err != nil {
		return // reported by the walk
	}
	ctx := t.GetCommonTlsContext()
	if len(ctx.GetTlsCertificates()) == 0 && len(ctx.GetTlsCertificateSdsSecretConfigs()) == 0 && ctx.GetTlsCertificateProviderInstance() == nil {
		c.add(joinKey(joinKey(joinKey(joinKey(path, "transport_socket"), "typed_config"), "common_tls_context"), "tls_certificates"),
			"the ext_proc cluster %q presents no client certificate: the sidecar's mesh_tls admits only the gateway's", cl.GetName())
	}
}

// offersH2 reports whether cl's TLS transport socket offers ALPN h2.
func offersH2(cl *clusterv3.Cluster) bool {
	var t tlsv3.UpstreamTlsContext
	if err := cl.GetTransportSocket().GetTypedConfig().UnmarshalTo(&t); err != nil {
		return true // reported by the walk
	}
	return slices.Contains(t.GetCommonTlsContext().GetAlpnProtocols(), "h2")
}

// localOnly reports whether cl has endpoints and every one is a loopback
// IP address or a pipe.
func localOnly(cl *clusterv3.Cluster) bool {
	n := 0
	for _, le := range cl.GetLoadAssignment().GetEndpoints() {
		for _, lb := range le.GetLbEndpoints() {
			a := lb.GetEndpoint().GetAddress()
			n++
			if a.GetPipe() != nil {
				continue
			}
			ip, err := netip.ParseAddr(a.GetSocketAddress().GetAddress())
			if err != nil || !ip.Unmap().IsLoopback() {
				return false
			}
		}
	}
	return n > 0
}

// cross runs the checks that span the bootstrap: names unique, referenced
// clusters present, gRPC clusters HTTP/2 (and offering ALPN h2 over TLS),
// the ext_proc cluster over mutual TLS, ADS configured where used, files
// present (when exists is not nil).
func (c *checker) cross(b *bootstrapv3.Bootstrap, exists func(string) bool) {
	static := make(map[string]*clusterv3.Cluster)
	staticPath := make(map[string]string)
	for i, cl := range b.GetStaticResources().GetClusters() {
		p := joinKey(joinIndex("static_resources.clusters", i), "name")
		if _, dup := static[cl.GetName()]; dup {
			c.add(p, "duplicate cluster name %q", cl.GetName())
		}
		static[cl.GetName()] = cl
		staticPath[cl.GetName()] = joinIndex("static_resources.clusters", i)
	}
	listeners := make(map[string]bool)
	for i, l := range b.GetStaticResources().GetListeners() {
		if listeners[l.GetName()] {
			c.add(joinKey(joinIndex("static_resources.listeners", i), "name"), "duplicate listener name %q", l.GetName())
		}
		listeners[l.GetName()] = true
	}
	dyn := b.GetDynamicResources()
	cds := dyn.GetCdsConfig() != nil || dyn.GetCdsResourcesLocator() != ""

	// route checks a cluster a route names: static, or from CDS when the
	// route configuration does not ask Envoy to validate clusters.
	route := func(i int, path, name string) {
		if name == "" || static[name] != nil {
			return
		}
		rc, _ := c.ancestor(i, isRouteConfig).(*routev3.RouteConfiguration)
		if cds && rc.GetValidateClusters() != nil && !rc.GetValidateClusters().GetValue() {
			return
		}
		hint := ""
		if cds {
			hint = " (clusters from CDS need validate_clusters: false on the route configuration)"
		}
		c.add(path, "unknown cluster %q: no static cluster has this name%s", name, hint)
	}
	extProcClusters := make(map[string]bool)
	grpcALPN := make(map[string]bool) // clusters reported for ALPN
	for i, n := range c.nodes {
		switch m := n.msg.(type) {
		case *extprocv3.ExternalProcessor:
			name := m.GetGrpcService().GetEnvoyGrpc().GetClusterName()
			if cl := static[name]; cl != nil && !extProcClusters[name] {
				extProcClusters[name] = true
				c.extProcCluster(cl, staticPath[name])
			}
		case *routev3.RouteAction:
			route(i, joinKey(n.path, "cluster"), m.GetCluster())
			for j, w := range m.GetWeightedClusters().GetClusters() {
				route(i, joinKey(joinIndex(joinKey(joinKey(n.path, "weighted_clusters"), "clusters"), j), "name"), w.GetName())
			}
			for j, mp := range m.GetRequestMirrorPolicies() {
				route(i, joinKey(joinIndex(joinKey(n.path, "request_mirror_policies"), j), "cluster"), mp.GetCluster())
			}
		case *corev3.GrpcService_EnvoyGrpc:
			p := joinKey(n.path, "cluster_name")
			switch cl := static[m.GetClusterName()]; {
			case cl == nil:
				c.add(p, "unknown cluster %q: a gRPC service's cluster must be a static cluster", m.GetClusterName())
			case !isHTTP2(cl):
				c.add(p, "cluster %q serves gRPC but is not HTTP/2: set typed_extension_protocol_options[%q].explicit_http_config.http2_protocol_options",
					m.GetClusterName(), httpOptionsName)
			case !grpcALPN[m.GetClusterName()] && clusterTLS(cl) && !offersH2(cl):
				grpcALPN[m.GetClusterName()] = true
				c.add(joinKey(joinKey(joinKey(joinKey(staticPath[m.GetClusterName()], "transport_socket"), "typed_config"), "common_tls_context"), "alpn_protocols"),
					"cluster %q serves gRPC over TLS but offers no ALPN: set alpn_protocols: [h2] (Envoy sends none unless told, and grpc-go servers refuse TLS without h2)", m.GetClusterName())
			}
		case *corev3.ApiConfigSource:
			if m.GetApiType() == corev3.ApiConfigSource_REST {
				for j, name := range m.GetClusterNames() {
					if static[name] == nil {
						c.add(joinIndex(joinKey(n.path, "cluster_names"), j), "unknown cluster %q: an xDS cluster must be a static cluster", name)
					}
				}
			}
		case *corev3.ConfigSource:
			if m.GetAds() != nil && dyn.GetAdsConfig() == nil {
				c.add(joinKey(n.path, "ads"), "config source uses ADS but dynamic_resources.ads_config is not set")
			}
		case *corev3.HttpUri:
			if name := m.GetCluster(); name != "" && static[name] == nil && !cds {
				c.add(joinKey(n.path, "cluster"), "unknown cluster %q", name)
			}
		case *corev3.DataSource:
			if f := m.GetFilename(); f != "" && exists != nil && !exists(f) {
				c.add(joinKey(n.path, "filename"), "file %q does not exist", f)
			}
		}
	}
}

func isRouteConfig(m proto.Message) bool {
	_, ok := m.(*routev3.RouteConfiguration)
	return ok
}
