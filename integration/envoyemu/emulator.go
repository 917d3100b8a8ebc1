// Package envoyemu emulates the part of Envoy that modgate's mesh mode relies
// on: the ext_proc HTTP filter (envoy.filters.http.ext_proc) in front of the
// router, as described in /work/shared/ENVOY.md. No Envoy binary runs in our
// tests, so the emulator is a real gRPC client of
// envoy.service.ext_proc.v3.ExternalProcessor/Process that follows Envoy's
// rules and is strict where Envoy is strict: a processor that passes the
// emulator should pass a real Envoy.
//
// Each Do is one downstream HTTP request: the emulator opens one Process
// stream, sends the request headers, applies the reply (header mutations,
// dynamic metadata, route cache clearing, immediate responses), routes the
// request to a cluster (a plain HTTP server), and runs the response through
// ext_proc as the processing mode asks.
//
// Limits: the downstream request has no body and no trailers, so request
// body and trailer phases never occur; response trailers are never sent to
// ext_proc (HTTP/1 upstreams without trailers); FULL_DUPLEX_STREAMED and GRPC
// body modes, and CONTINUE_AND_REPLACE in a reply to request headers, make Do
// return an error rather than guess. Envoy-level failures are Responses, not
// errors.
package envoyemu

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/types/known/structpb"
)

// Config is the emulated Envoy's configuration: the ext_proc filter, the
// route table and the clusters. The zero value of every field except
// ExtProcAddr is usable; for AllowModeOverride and MaxMessageTimeout the zero
// value is Envoy's own proto default (off), while NewConfig returns modgate's
// shipped values.
type Config struct {
	// ExtProcAddr is host:port of the ext_proc gRPC server. Required.
	ExtProcAddr string
	// ExtProcTLS, if set, is the TLS the ext_proc cluster's transport
	// socket uses (the gateway's client certificate, the CA and server
	// name to verify); nil is plaintext h2c.
	ExtProcTLS *tls.Config
	// ClusterTLS is the TLS of clusters whose base URL is https (the blob
	// cluster with mTLS); nil uses the system's defaults.
	ClusterTLS *tls.Config
	// Clusters maps a cluster name to the base URL of an HTTP server,
	// e.g. "upstream_public" → "http://127.0.0.1:1234".
	Clusters map[string]string
	// Routes are evaluated in order; the first match wins.
	Routes []Route
	// MessageTimeout is ext_proc's message_timeout. Default 500ms (the
	// shipped value; Envoy's own default is 200ms).
	MessageTimeout time.Duration
	// MaxMessageTimeout is max_message_timeout, the ceiling for
	// override_message_timeout. Zero (Envoy's default) disables overrides;
	// NewConfig sets 60s.
	MaxMessageTimeout time.Duration
	// AllowModeOverride is allow_mode_override. Zero value false (Envoy's
	// default); NewConfig sets true (the shipped value).
	AllowModeOverride bool
	// ReceivingNamespaces is metadata_options.receiving_namespaces.untyped:
	// the dynamic metadata namespaces accepted from the processor.
	// Default ["modgate"].
	ReceivingNamespaces []string
	// ResponseAttributes is the ext_proc filter's response_attributes: the
	// attributes sent on the first message of the response direction.
	// The emulator evaluates upstream.address, xds.cluster_name and
	// response.code; NewConfig asks for the first two, as the shipped
	// gateway does.
	ResponseAttributes []string
	// ChunkSize is the size of the upstream body chunks sent in STREAMED
	// mode, 16–64 KiB. Default 32 KiB.
	ChunkSize int
	// BufferLimit is per_connection_buffer_limit_bytes, the bound on a
	// BUFFERED or BUFFERED_PARTIAL body. Default 1 MiB.
	BufferLimit int
	// Pipeline is how many STREAMED chunks Envoy sends before it waits for
	// a reply. Default 2.
	Pipeline int
	// UpstreamTimeout is the route timeout: the upstream must answer in
	// full within it. Default 15s (Envoy's default route timeout).
	UpstreamTimeout time.Duration
}

// NewConfig returns the configuration modgate ships: mode override allowed,
// max_message_timeout 60s, and the response attributes that name the
// upstream used; everything else at its default.
func NewConfig(extProcAddr string) Config {
	return Config{
		ExtProcAddr:        extProcAddr,
		AllowModeOverride:  true,
		MaxMessageTimeout:  60 * time.Second,
		ResponseAttributes: []string{"upstream.address", "xds.cluster_name"},
	}
}

// GatewayRoutes is the route table of the shipped gateway bootstrap
// (envoy/gateway.yaml): by the processor's dynamic metadata to the private,
// blob and public clusters, in that order. The bootstrap's last route, a
// 503 direct response, is not modelled: a request that matches none of
// these meets the emulator's route_not_found.
func GatewayRoutes() []Route {
	return []Route{
		{Namespace: "modgate", Key: "route", Value: "private", Cluster: "upstream_private"},
		{Namespace: "modgate", Key: "route", Value: "blob", Cluster: "modgate_blob"},
		{Namespace: "modgate", Key: "route", Value: "public", Cluster: "upstream_public"},
	}
}

// A Route sends a request to Cluster when its dynamic metadata matcher
// matches: the string value at Namespace/Key equals Value. A Route with an
// empty Key always matches.
type Route struct {
	Namespace, Key, Value string
	Cluster               string
}

// Request is what the downstream client sent, as Envoy sees it after TLS.
// It has no body: Envoy sends the request headers with end_of_stream true.
type Request struct {
	// Method and Path are :method and :path, as received.
	Method, Path string
	// Header holds the regular headers. Its Host entry, if any, becomes
	// :authority (default "modgate"); :scheme is "https". Envoy adds
	// x-request-id (if absent) and x-forwarded-proto before ext_proc runs.
	Header http.Header
	// Attributes are the request attributes (request_attributes) Envoy
	// would send (source.address "ip:port", connection.mtls bool,
	// connection.uri_san_peer_certificate string, …). They are sent as a
	// Struct under "envoy.filters.http.ext_proc" on the first message of
	// the request direction; bools and numbers are typed, nil values are
	// omitted, everything else is formatted as a string.
	Attributes map[string]any
	// ResetAfterChunks, if positive, makes the client reset its stream once
	// that many response body chunks have gone downstream, as a client
	// that leaves mid-body: Envoy then resets the ext_proc stream.
	ResetAfterChunks int
}

// Response is what the downstream client got.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
	// Reset reports that the stream was reset after the response headers
	// had gone downstream: the client saw an error, and Status, Header and
	// Body are what it had received by then.
	Reset bool
	// LocalReply reports that Envoy generated the response (immediate
	// response, ext_proc failure, timeout, no route, upstream failure).
	LocalReply bool
	// Cluster is the cluster the request was routed to, "" if none.
	Cluster string
	// Details is Envoy's response code details for a local reply or reset,
	// e.g. "ext_proc_error_gRPC_error_14", "message_timeout",
	// "spurious_message". For test messages only.
	Details string
	// Messages counts the ext_proc messages Envoy sent.
	Messages int
	// Metadata is the dynamic metadata accepted from the processor, by
	// namespace.
	Metadata map[string]*structpb.Struct
	// IgnoredMutations lists header mutations Envoy dropped under the
	// default mutation rules, as "phase: set|remove name".
	IgnoredMutations []string
}

// Emulator is one emulated Envoy. It is safe for concurrent use: each Do
// has its own ext_proc stream and upstream request.
type Emulator struct {
	cfg      Config
	conn     *grpc.ClientConn
	client   extprocv3.ExternalProcessorClient
	upstream *http.Client
}

// New checks cfg, fills in defaults and dials the ext_proc server lazily
// (grpc.NewClient), with keepalive pings every 30s like Envoy.
func New(cfg Config) (*Emulator, error) {
	if err := cfg.normalize(); err != nil {
		return nil, err
	}
	creds := insecure.NewCredentials()
	if cfg.ExtProcTLS != nil {
		creds = credentials.NewTLS(cfg.ExtProcTLS)
	}
	conn, err := grpc.NewClient(cfg.ExtProcAddr,
		grpc.WithTransportCredentials(creds),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time:                30 * time.Second,
			Timeout:             10 * time.Second,
			PermitWithoutStream: true,
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("envoyemu: dial ext_proc %s: %w", cfg.ExtProcAddr, err)
	}
	transport := &http.Transport{
		Proxy:               nil,
		DisableCompression:  true, // Envoy forwards accept-encoding untouched
		MaxIdleConnsPerHost: 16,
		TLSClientConfig:     cfg.ClusterTLS,
	}
	return &Emulator{
		cfg:    cfg,
		conn:   conn,
		client: extprocv3.NewExternalProcessorClient(conn),
		upstream: &http.Client{
			Transport: transport,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse // Envoy does not follow redirects
			},
		},
	}, nil
}

// normalize fills in defaults and rejects invalid values, naming the field.
func (c *Config) normalize() error {
	const kib = 1 << 10
	switch {
	case c.ExtProcAddr == "":
		return errors.New("envoyemu: config: ExtProcAddr is required")
	case c.MessageTimeout < 0:
		return errors.New("envoyemu: config: MessageTimeout is negative")
	case c.MaxMessageTimeout < 0:
		return errors.New("envoyemu: config: MaxMessageTimeout is negative")
	case c.ChunkSize != 0 && (c.ChunkSize < 16*kib || c.ChunkSize > 64*kib):
		return fmt.Errorf("envoyemu: config: ChunkSize %d outside 16–64 KiB", c.ChunkSize)
	case c.BufferLimit < 0:
		return errors.New("envoyemu: config: BufferLimit is negative")
	case c.Pipeline < 0:
		return errors.New("envoyemu: config: Pipeline is negative")
	case c.UpstreamTimeout < 0:
		return errors.New("envoyemu: config: UpstreamTimeout is negative")
	}
	if c.MessageTimeout == 0 {
		c.MessageTimeout = 500 * time.Millisecond
	}
	if c.ReceivingNamespaces == nil {
		c.ReceivingNamespaces = []string{"modgate"}
	}
	if c.ChunkSize == 0 {
		c.ChunkSize = 32 * kib
	}
	if c.BufferLimit == 0 {
		c.BufferLimit = 1 << 20
	}
	if c.Pipeline == 0 {
		c.Pipeline = 2
	}
	if c.UpstreamTimeout == 0 {
		c.UpstreamTimeout = 15 * time.Second
	}
	return nil
}

// Do sends one request through the emulated Envoy. The error is non-nil only
// for ctx cancellation (the stream is then canceled, like a client reset) or
// for behaviour the emulator does not model; every Envoy-level failure is a
// Response.
func (e *Emulator) Do(ctx context.Context, r Request) (*Response, error) {
	if r.Method == "" {
		r.Method = http.MethodGet
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	t := newTransaction(e, r)
	err := t.run(ctx)
	if ctxErr := ctx.Err(); err != nil && ctxErr != nil {
		return nil, fmt.Errorf("envoyemu: %s %s: %w", r.Method, r.Path, ctxErr)
	}
	var a *abort
	switch {
	case errors.As(err, &a):
		t.fail(a)
	case err != nil:
		return nil, fmt.Errorf("envoyemu: %s %s: %w", r.Method, r.Path, err)
	}
	return t.response(), nil
}

// Close closes the ext_proc connection and idle upstream connections.
func (e *Emulator) Close() error {
	e.upstream.CloseIdleConnections()
	if err := e.conn.Close(); err != nil {
		return fmt.Errorf("envoyemu: close: %w", err)
	}
	return nil
}
