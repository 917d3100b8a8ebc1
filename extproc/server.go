// Package extproc is modgate's mesh front end: the
// envoy.service.ext_proc.v3.ExternalProcessor gRPC server that the gateway
// Envoy streams every request to. It is a thin adapter over the processor
// (package gate), of equal rank with the standalone HTTP front end
// (package gateway): it turns Envoy's messages into the processor's phases
// and the processor's decisions into Envoy's replies, and decides nothing
// itself.
//
// What the adapter must do that the HTTP front end need not: route
// (dynamic metadata the gateway's route table matches, with a header
// mutation that leaves the routed request only the canonical path and the
// headers the processor allows), narrow a fill to the upstream Envoy's
// router chose (from the upstream.address and xds.cluster_name response
// attributes), hold back the reply to a fill's final body chunk until the
// artifact is verified, and abandon a fill whose stream ended mid-body so
// that no key stays wedged.
package extproc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"go.opentelemetry.io/otel/propagation"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/modgate/modgate/capability"
	"github.com/modgate/modgate/gate"
)

// Routing by dynamic metadata: the gateway's route table sends a request
// to a cluster by the value of MetadataKey in MetadataNamespace (ENVOY.md:
// match routes on metadata, not on a header a client could forge).
const (
	MetadataNamespace = "modgate"
	MetadataKey       = "route"
	RoutePublic       = "public"
	RoutePrivate      = "private"
	RouteBlob         = "blob"
)

// attributesKey is where Envoy puts the request and response attributes.
const attributesKey = "envoy.filters.http.ext_proc"

// The response attributes that name the upstream Envoy's router used; the
// gateway bootstrap asks for them (response_attributes).
const (
	attrUpstreamAddress = "upstream.address"
	attrClusterName     = "xds.cluster_name"
)

// ServerOptions configures a Server. The zero value works.
type ServerOptions struct {
	// MaxImmediateBytes is the largest cache hit answered in an
	// ImmediateResponse, which Envoy holds in memory; larger hits are
	// routed to the blob listener. Default 256 KiB.
	MaxImmediateBytes int64
	// BufferLimit is the gateway's per_connection_buffer_limit_bytes: a body
	// announced no larger is asked for BUFFERED, others STREAMED.
	// Default 1 MiB.
	BufferLimit int64
	// WaitNotice is how long a phase may run (a wait for another
	// request's fill, the verification of a large zip) before the Server
	// asks Envoy for more time. Default 300ms, under the shipped 500ms
	// message timeout.
	WaitNotice time.Duration
	// ExtendTo is the message timeout asked for then: the gateway's
	// max_message_timeout. Default 60s.
	ExtendTo time.Duration
	// Capability makes the token (package capability) that a hit routed
	// to the blob listener carries, binding the processor's decision to
	// the one path. Default: none, and the blob listener, which requires
	// one, refuses routed hits.
	Capability interface{ Token(path string) string }
	// Logger receives operational logs. Default: the Processor's.
	Logger *slog.Logger
	// Observer receives stream counts and phase latencies. Default: none.
	Observer StreamObserver
}

// StreamObserver takes the Server's measurements. Its methods must not
// block.
type StreamObserver interface {
	StreamStarted()
	StreamEnded(ok bool)
	Phase(phase string, d time.Duration)
}

// A Server is the envoy.service.ext_proc.v3.ExternalProcessor over a
// Processor: a thin adapter that turns Envoy's messages into the
// processor's phases and its decisions into Envoy's replies. It decides
// nothing itself. Each Process stream is one request; every message gets
// exactly one reply.
type Server struct {
	extprocv3.UnimplementedExternalProcessorServer
	p    *gate.Processor
	opts ServerOptions
	log  *slog.Logger
}

// NewServer returns the Server for p.
func NewServer(p *gate.Processor, opts ServerOptions) *Server {
	if opts.MaxImmediateBytes <= 0 {
		opts.MaxImmediateBytes = 256 << 10
	}
	if opts.BufferLimit <= 0 {
		opts.BufferLimit = 1 << 20
	}
	if opts.WaitNotice <= 0 {
		opts.WaitNotice = 300 * time.Millisecond
	}
	if opts.ExtendTo <= 0 {
		opts.ExtendTo = 60 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = p.Logger()
	}
	return &Server{p: p, opts: opts, log: opts.Logger}
}

// Register serves s on g.
func (s *Server) Register(g *grpc.Server) {
	extprocv3.RegisterExternalProcessorServer(g, s)
}

// stream is one request's state on a Process stream.
type stream struct {
	s         *Server
	srv       extprocv3.ExternalProcessor_ProcessServer
	x         *gate.Exchange
	fill      *gate.Fill
	reqHeader http.Header // the request headers Envoy sent
	excerpt   bool        // the fill wants only the first part of a not-found body
	status    int         // what the client was sent
	bytes     int64       // body bytes the client was sent
	cut       error       // what cut the response short
}

// errStreamEnded is what cut a response short when Envoy ended the stream
// before the response was whole.
var errStreamEnded = errors.New("stream ended before the response was whole")

// errHeadOnly ends the fill of a HEAD miss: nothing to store.
var errHeadOnly = errors.New("a HEAD has no body to store")

// Process handles one request's stream. Envoy ending the stream (io.EOF,
// or Canceled when it resets it) is a normal end.
func (s *Server) Process(srv extprocv3.ExternalProcessor_ProcessServer) error {
	st := &stream{s: s, srv: srv}
	if o := s.opts.Observer; o != nil {
		o.StreamStarted()
	}
	var procErr error
	ctx := srv.Context()
	defer func() {
		if st.fill != nil {
			// The stream ended while this request led a fill: land it, so
			// the requests waiting for it look again instead of waiting out
			// their time, and nothing partial stays open.
			if st.cut == nil {
				st.cut = errStreamEnded
			}
			st.fill.Abandon(context.WithoutCancel(ctx), st.cut)
			st.fill = nil
		}
		if st.x != nil {
			st.x.Done(context.WithoutCancel(ctx), st.status, st.bytes, st.cut)
		}
		if o := s.opts.Observer; o != nil {
			o.StreamEnded(procErr == nil)
		}
	}()
	for {
		req, err := srv.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled || errors.Is(err, context.Canceled) {
				if (st.status == 0 || st.fill != nil) && st.x != nil && st.cut == nil {
					st.cut = errStreamEnded
				}
				return nil
			}
			st.cut = err
			return err
		}
		start := time.Now()
		resp, err := st.handle(ctx, req)
		if o := s.opts.Observer; o != nil {
			o.Phase(phaseName(req), time.Since(start))
		}
		if err != nil {
			st.cut = err
			procErr = status.Error(codes.InvalidArgument, err.Error())
			return procErr
		}
		if resp == nil {
			continue
		}
		if err := srv.Send(resp); err != nil {
			st.cut = err
			return err
		}
	}
}

// phaseName names a message's phase for the metrics.
func phaseName(req *extprocv3.ProcessingRequest) string {
	switch req.Request.(type) {
	case *extprocv3.ProcessingRequest_RequestHeaders:
		return "request_headers"
	case *extprocv3.ProcessingRequest_ResponseHeaders:
		return "response_headers"
	case *extprocv3.ProcessingRequest_ResponseBody:
		return "response_body"
	}
	return "other"
}

// handle answers one message; a nil reply with a nil error sends nothing.
func (st *stream) handle(ctx context.Context, req *extprocv3.ProcessingRequest) (*extprocv3.ProcessingResponse, error) {
	switch r := req.Request.(type) {
	case *extprocv3.ProcessingRequest_RequestHeaders:
		if st.x != nil {
			return nil, errors.New("request headers twice on one stream")
		}
		return st.requestHeaders(ctx, r.RequestHeaders, req.Attributes[attributesKey])
	case *extprocv3.ProcessingRequest_ResponseHeaders:
		return st.responseHeaders(ctx, r.ResponseHeaders, req.Attributes[attributesKey])
	case *extprocv3.ProcessingRequest_ResponseBody:
		return st.responseBody(ctx, r.ResponseBody)
	case *extprocv3.ProcessingRequest_RequestBody:
		// Never asked for; answered so Envoy's stream does not stall.
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{RequestBody: &extprocv3.BodyResponse{}}}, nil
	case *extprocv3.ProcessingRequest_RequestTrailers:
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestTrailers{RequestTrailers: &extprocv3.TrailersResponse{}}}, nil
	case *extprocv3.ProcessingRequest_ResponseTrailers:
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseTrailers{ResponseTrailers: &extprocv3.TrailersResponse{}}}, nil
	}
	return nil, fmt.Errorf("unknown ext_proc message %T", req.Request)
}

func (st *stream) requestHeaders(ctx context.Context, h *extprocv3.HttpHeaders, attrs *structpb.Struct) (*extprocv3.ProcessingResponse, error) {
	hdr := headerMap(h.GetHeaders())
	st.x = st.s.p.Begin(clientFromAttributes(attrs))
	st.reqHeader = hdr
	method, path := hdr.Get(":method"), hdr.Get(":path")

	// Envoy forwards the client's W3C traceparent among the headers.
	ctx = propagation.TraceContext{}.Extract(ctx, propagation.HeaderCarrier(hdr))
	// A request may wait here for another request's fill, in this
	// process or another replica: no longer than Envoy waits for this
	// answer once told to (ExtendTo), which the processor knows from the
	// deadline (it waits for another replica at most half of it, then
	// fetches itself).
	d, err := slow(st, func() gate.Decision {
		hctx, cancel := context.WithTimeout(ctx, st.s.opts.ExtendTo)
		defer cancel()
		return st.x.RequestHeaders(hctx, gate.Request{Method: method, Target: path, Header: hdr})
	})
	if err != nil {
		closeEntry(d)
		st.fill = d.Fill // led and never fed: Process abandons it
		return nil, err
	}

	switch d.Action {
	case gate.Abort:
		st.cut = errors.New("client went away")
		return nil, nil
	case gate.Reject, gate.Serve:
		return st.immediate(d.Reply, false), nil
	case gate.Hit:
		return st.hit(d)
	case gate.Forward:
		st.fill = d.Fill
		route := RoutePublic
		if d.Fill.Private() {
			route = RoutePrivate
		}
		return st.routeTo(route, d.Fill.Path(), gate.UpstreamHeader, nil), nil
	}
	closeEntry(d)
	return nil, fmt.Errorf("processor decided %v on request headers", d.Action)
}

// slow runs fn, which may outlast Envoy's message timeout (a wait for
// another request's fill, the verification of a large zip): if fn has not
// returned after WaitNotice, well within the timeout, Envoy is asked for
// more time for the message being answered (override_message_timeout, up
// to the gateway's max_message_timeout). fn runs on the stream's own
// goroutine, as every phase does (most return at once: a hit, a reject);
// the notice is sent from the timer's, and nothing else sends while fn
// runs. It always waits for fn, and for the notice if it was sent; the
// error is the notice's.
func slow[T any](st *stream, fn func() T) (T, error) {
	var err error
	sent := make(chan struct{})
	notice := time.AfterFunc(st.s.opts.WaitNotice, func() {
		defer close(sent)
		err = st.srv.Send(&extprocv3.ProcessingResponse{OverrideMessageTimeout: durationpb.New(st.s.opts.ExtendTo)})
	})
	v := fn()
	if !notice.Stop() {
		<-sent // the notice went out, or is going: no other Send until it is done
	}
	return v, err
}

// hit answers a cache hit: small ones in an ImmediateResponse, large ones
// by routing to the blob listener.
func (st *stream) hit(d gate.Decision) (*extprocv3.ProcessingResponse, error) {
	defer d.Entry.Close()
	// A private entry (a list filtered for who asks) is not in the cache
	// the blob listener serves: it goes inline, whatever its size (a list
	// is at most gate.MaxListBytes).
	if d.Entry.Size > st.s.opts.MaxImmediateBytes && !d.Private {
		st.status, st.bytes = d.Status, d.Entry.Size
		var set http.Header
		if c := st.s.opts.Capability; c != nil {
			set = http.Header{capability.Header: {c.Token(d.Entry.Key)}}
		}
		return st.routeTo(RouteBlob, d.Entry.Key, set, blobHeaders), nil
	}
	body := d.Entry.Bytes()
	if body == nil {
		var err error
		if body, err = io.ReadAll(io.LimitReader(d.Entry.Reader(), max(st.s.opts.MaxImmediateBytes, d.Entry.Size)+1)); err != nil {
			return nil, fmt.Errorf("reading cached %s: %w", d.Entry.Key, err)
		}
	}
	return st.immediate(&gate.Reply{Status: d.Status, Header: d.Header, Body: body}, true), nil
}

// responseHeaders hands the upstream's answer to the fill. Envoy's router
// chose the upstream, so the fill is narrowed to that one (Fill.Via, from
// the upstream.address and xds.cluster_name response attributes): in mesh
// mode there is no next candidate to try.
func (st *stream) responseHeaders(ctx context.Context, h *extprocv3.HttpHeaders, attrs *structpb.Struct) (*extprocv3.ProcessingResponse, error) {
	headers := &extprocv3.ProcessingResponse_ResponseHeaders{ResponseHeaders: &extprocv3.HeadersResponse{}}
	if st.fill == nil {
		// A blob-listener hit passing through: nothing to do.
		return &extprocv3.ProcessingResponse{Response: headers}, nil
	}
	hdr := headerMap(h.GetHeaders())
	code, err := strconv.Atoi(hdr.Get(":status"))
	if err != nil {
		return nil, fmt.Errorf("response headers without a valid :status: %q", hdr.Get(":status"))
	}
	f := attrs.GetFields()
	st.fill.Via(f[attrUpstreamAddress].GetStringValue(), f[attrClusterName].GetStringValue())
	r := st.fill.UpstreamResponse(ctx, 0, code, hdr)
	if r.Action == gate.Store && code == http.StatusOK && h.GetEndOfStream() && st.reqHeader.Get(":method") == http.MethodHead {
		// A HEAD went upstream as a HEAD (Envoy's router keeps the method):
		// there is no body to check and store. The answer's headers pass;
		// the next GET fills the cache.
		st.x.Passed(ctx, st.fill.Abandon(ctx, errHeadOnly))
		st.fill, st.status = nil, code
		headers.ResponseHeaders.Response = &extprocv3.CommonResponse{HeaderMutation: &extprocv3.HeaderMutation{
			SetHeaders: []*corev3.HeaderValueOption{setHeader("x-modgate-cache", "miss"), setHeader("x-request-id", st.x.ID())},
		}}
		return &extprocv3.ProcessingResponse{Response: headers}, nil
	}
	if r.Action != gate.Store || h.GetEndOfStream() {
		// Fail, or a response without a body to wait for. (Next cannot
		// happen: the fill has one candidate.)
		return st.finish(ctx, nil)
	}
	mode := filterv3.ProcessingMode_STREAMED
	switch n := contentLength(hdr); {
	case r.Excerpt:
		mode, st.excerpt = filterv3.ProcessingMode_BUFFERED_PARTIAL, true
	case n >= 0 && n <= st.s.opts.BufferLimit:
		mode = filterv3.ProcessingMode_BUFFERED
	}
	st.status = code
	set := []*corev3.HeaderValueOption{setHeader("x-modgate-cache", "miss"), setHeader("x-request-id", st.x.ID())}
	if w := st.x.Warning(); w != "" {
		set = append(set, setHeader("warning", w))
	}
	headers.ResponseHeaders.Response = &extprocv3.CommonResponse{HeaderMutation: &extprocv3.HeaderMutation{SetHeaders: set}}
	return &extprocv3.ProcessingResponse{
		Response: headers,
		ModeOverride: &filterv3.ProcessingMode{
			ResponseHeaderMode: filterv3.ProcessingMode_SEND,
			ResponseBodyMode:   mode,
			RequestBodyMode:    filterv3.ProcessingMode_NONE,
		},
	}, nil
}

func (st *stream) responseBody(ctx context.Context, b *extprocv3.HttpBody) (*extprocv3.ProcessingResponse, error) {
	pass := &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{ResponseBody: &extprocv3.BodyResponse{}}}
	if st.fill == nil {
		return pass, nil
	}
	if err := st.fill.ResponseBody(ctx, b.GetBody()); err != nil {
		return st.finish(ctx, err)
	}
	// A BUFFERED_PARTIAL excerpt comes in one message, end_of_stream false
	// if it was cut: that is all the fill wants.
	if !b.GetEndOfStream() && !st.excerpt {
		// This chunk goes on to the client; the last one waits for the
		// verdict below.
		st.bytes += int64(len(b.GetBody()))
		return pass, nil
	}
	return st.finish(ctx, nil)
}

// finish ends the fill and answers its last message: the final chunk
// passes only if the artifact was stored, so a client never completes an
// artifact that failed verification (Envoy resets the stream when an
// ImmediateResponse comes after body bytes).
func (st *stream) finish(ctx context.Context, bodyErr error) (*extprocv3.ProcessingResponse, error) {
	f := st.fill
	st.fill = nil
	// Verifying a large zip takes longer than a message timeout.
	res, err := slow(st, func() gate.FillResult { return f.Finish(ctx, bodyErr) })
	if err != nil {
		return nil, err
	}
	d := st.x.Filled(ctx, res)
	switch d.Action {
	case gate.Hit:
		if d.Status == http.StatusOK && !d.Entry.Fresh {
			// A stale answer replaces the failed upstream's.
			return st.hit(d)
		}
		if d.Private {
			// The upstream's answer, filtered for who asks (a version
			// list): it replaces what the upstream sent. The body was
			// asked for BUFFERED (a list is small), so nothing of it has
			// gone downstream; a list streamed past the buffer cannot be
			// filtered any more, and is refused rather than leaked.
			if st.bytes > 0 {
				closeEntry(d)
				st.cut = errors.New("a version list too large to filter: stream reset")
				return st.immediate(&gate.Reply{Status: http.StatusBadGateway, Header: http.Header{"Content-Type": {"text/plain; charset=utf-8"}}, Body: []byte("version list too large to filter\n")}, false), nil
			}
			return st.hit(d)
		}
		if d.Status == http.StatusOK {
			size := d.Entry.Size
			d.Entry.Close()
			st.bytes = size
			return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{ResponseBody: &extprocv3.BodyResponse{}}}, nil
		}
		return st.hit(d) // a negative entry: the cleaned not-found text
	case gate.Reject:
		if st.bytes == 0 {
			return st.immediate(d.Reply, false), nil
		}
		// The headers and part of the body went to the client: Envoy
		// resets the stream on this reply. The audit records what the
		// client was sent, and why it was cut.
		st.cut = fmt.Errorf("artifact refused after part of it went to the client, stream reset: %s", d.Reply.Body)
		status, n := st.status, st.bytes
		resp := st.immediate(d.Reply, false)
		st.status, st.bytes = status, n
		return resp, nil
	}
	closeEntry(d)
	return nil, fmt.Errorf("processor decided %v after a fill", d.Action)
}

// immediate is the one place a processor reply becomes an Envoy
// ImmediateResponse. withLength sets the body's Content-Length, which a
// cache hit's headers leave out.
func (st *stream) immediate(rep *gate.Reply, withLength bool) *extprocv3.ProcessingResponse {
	st.status, st.bytes = rep.Status, int64(len(rep.Body))
	n, size := 0, 0
	for _, vs := range rep.Header {
		n += len(vs)
		for _, v := range vs {
			size += len(v)
		}
	}
	var length string
	if withLength {
		length = strconv.Itoa(len(rep.Body))
		n, size = n+1, size+len(length)
	}
	if st.x != nil {
		n, size = n+1, size+len(st.x.ID())
	}
	hs := newHeaderSet(n, size)
	for k, vs := range rep.Header {
		if withLength && k == "Content-Length" {
			continue
		}
		for _, v := range vs {
			hs.add(lowerKey(k), v)
		}
	}
	if withLength {
		hs.add("content-length", length)
	}
	if st.x != nil {
		hs.add("x-request-id", st.x.ID())
	}
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ImmediateResponse{ImmediateResponse: &extprocv3.ImmediateResponse{
		Status:  &typev3.HttpStatus{Code: typev3.StatusCode(rep.Status)},
		Headers: &extprocv3.HeaderMutation{SetHeaders: hs.set},
		Body:    rep.Body,
		Details: "modgate",
	}}}
}

// blobHeaders are the client's headers the blob listener needs: a range
// and its preconditions.
var blobHeaders = map[string]bool{
	"range": true, "if-range": true, "if-match": true, "if-none-match": true,
	"if-modified-since": true, "if-unmodified-since": true,
}

// routeTo answers request headers by routing to one of the gateway's
// clusters: dynamic metadata, a header mutation (Envoy ignores
// clear_route_cache without one) and clear_route_cache. The mutation makes
// the routed request carry the canonical path and only the headers the
// processor allows: set, plus the client's headers named in keep; every
// other header the client sent is removed, so no credential, cookie or
// identity reaches a cluster. Envoy's own headers (x-envoy-*, host) are
// not the client's and cannot be removed.
func (st *stream) routeTo(route, path string, set http.Header, keep map[string]bool) *extprocv3.ProcessingResponse {
	mut := &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{
		setHeader(":path", path),
		setHeader("x-request-id", st.x.ID()),
	}}
	for k, vs := range set {
		for _, v := range vs {
			mut.SetHeaders = append(mut.SetHeaders, setHeader(strings.ToLower(k), v))
		}
	}
	for k := range st.reqHeader {
		k = strings.ToLower(k)
		if strings.HasPrefix(k, ":") || k == "host" || k == "x-request-id" || strings.HasPrefix(k, "x-envoy-") || keep[k] || set.Get(k) != "" {
			continue
		}
		mut.RemoveHeaders = append(mut.RemoveHeaders, k)
	}
	slices.Sort(mut.RemoveHeaders) // one order for one request
	md, _ := structpb.NewStruct(map[string]any{MetadataNamespace: map[string]any{MetadataKey: route}})
	return &extprocv3.ProcessingResponse{
		Response: &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocv3.HeadersResponse{
			Response: &extprocv3.CommonResponse{HeaderMutation: mut, ClearRouteCache: true},
		}},
		DynamicMetadata: md,
	}
}

// setHeader overwrites a header: the value only in raw_value, and append
// explicitly false (Envoy reads the legacy flag, not append_action).
func setHeader(k, v string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header: &corev3.HeaderValue{Key: k, RawValue: []byte(v)},
		//lint:ignore SA1019 Envoy's ext_proc reads only the legacy append flag (envoy#36982, ENVOY.md).
		Append: wrapperspb.Bool(false),
	}
}

// headerSet collects the set_headers of one reply, each made as
// setHeader makes it, but with the options, values, append flags and
// value bytes of the whole reply allocated together: a hit's reply sets
// seven headers, which one by one cost four allocations each.
type headerSet struct {
	set    []*corev3.HeaderValueOption // the headers added
	opts   []corev3.HeaderValueOption  // room for the next ones
	values []corev3.HeaderValue
	flags  []wrapperspb.BoolValue // all false
	raw    []byte                 // the values' bytes
}

// newHeaderSet returns a headerSet with room for n headers whose values
// total size bytes. More may be added, each allocated on its own.
func newHeaderSet(n, size int) headerSet {
	return headerSet{
		set:    make([]*corev3.HeaderValueOption, 0, n),
		opts:   make([]corev3.HeaderValueOption, n),
		values: make([]corev3.HeaderValue, n),
		flags:  make([]wrapperspb.BoolValue, n),
		raw:    make([]byte, 0, size),
	}
}

// add overwrites header k with v, as setHeader does.
func (hs *headerSet) add(k, v string) {
	if len(hs.opts) == 0 {
		hs.set = append(hs.set, setHeader(k, v))
		return
	}
	o, hv, app := &hs.opts[0], &hs.values[0], &hs.flags[0]
	hs.opts, hs.values, hs.flags = hs.opts[1:], hs.values[1:], hs.flags[1:]
	start := len(hs.raw)
	hs.raw = append(hs.raw, v...) // a new array if size was short: the earlier values keep theirs
	hv.Key, hv.RawValue = k, hs.raw[start:len(hs.raw):len(hs.raw)]
	o.Header = hv
	//lint:ignore SA1019 Envoy's ext_proc reads only the legacy append flag (envoy#36982, ENVOY.md).
	o.Append = app // false
	hs.set = append(hs.set, o)
}

// lowerKey returns header key k lower-case, as Envoy wants it, without
// allocating for the keys of a cache hit's reply.
func lowerKey(k string) string {
	switch k {
	case "Cache-Control":
		return "cache-control"
	case "Content-Length":
		return "content-length"
	case "Content-Type":
		return "content-type"
	case "Etag":
		return "etag"
	case "X-Content-Type-Options":
		return "x-content-type-options"
	case "X-Modgate-Cache":
		return "x-modgate-cache"
	}
	return strings.ToLower(k)
}

// headerMap reads Envoy's headers, values from raw_value (value if it is
// empty). As net/textproto's reader does, the values share one string and
// the one-value slices one array: a request's headers cost a few
// allocations, not two each.
func headerMap(hm *corev3.HeaderMap) http.Header {
	hvs := hm.GetHeaders()
	size := 0
	for _, hv := range hvs {
		size += len(hv.GetRawValue()) + len(hv.GetValue())
	}
	var b strings.Builder
	b.Grow(size)
	h := make(http.Header, len(hvs))
	vals := make([]string, len(hvs))
	for i, hv := range hvs {
		start := b.Len()
		if raw := hv.GetRawValue(); len(raw) > 0 {
			b.Write(raw)
		} else {
			b.WriteString(hv.GetValue())
		}
		v := b.String()[start:] // a Builder never changes what it has built
		// Pseudo headers (":path") are not valid MIME keys, so
		// CanonicalHeaderKey keeps them as they are.
		k := http.CanonicalHeaderKey(hv.GetKey())
		if h[k] == nil {
			vals[i] = v
			h[k] = vals[i : i+1 : i+1] // a second value gets an array of its own
		} else {
			h[k] = append(h[k], v)
		}
	}
	return h
}

// clientFromAttributes reads the client's identity from Envoy's request
// attributes.
func clientFromAttributes(attrs *structpb.Struct) gate.Client {
	var c gate.Client
	f := attrs.GetFields()
	str := func(k string) string { return f[k].GetStringValue() }
	if ap, err := netip.ParseAddrPort(str("source.address")); err == nil {
		c.Addr = ap
	}
	c.Subject = str("connection.subject_peer_certificate")
	if san := str("connection.uri_san_peer_certificate"); san != "" {
		c.URISANs = []string{san}
	}
	c.CertSHA256 = str("connection.sha256_peer_certificate_digest")
	return c
}

func closeEntry(d gate.Decision) {
	if d.Entry != nil {
		d.Entry.Close()
	}
}

// contentLength returns the announced body length, -1 if none.
func contentLength(h http.Header) int64 {
	n, err := strconv.ParseInt(h.Get("Content-Length"), 10, 64)
	if err != nil {
		return -1
	}
	return n
}
