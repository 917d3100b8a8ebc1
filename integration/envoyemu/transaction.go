package envoyemu

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"strings"

	procmodev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// attributesKey is where Envoy puts request attributes (ENVOY.md).
const attributesKey = "envoy.filters.http.ext_proc"

// direction indexes per-direction state.
type direction int

const (
	dirRequest direction = iota
	dirResponse
)

// transaction is one downstream request on its way through the emulated
// filter chain. It is used by one goroutine.
type transaction struct {
	e   *Emulator
	cfg *Config
	req Request
	x   *exchange

	mode       *procmodev3.ProcessingMode // current processing mode
	md         metadata
	reqHeaders headerMap
	route      Route
	routed     bool
	cluster    string
	// upstreamAddr is the address of the upstream connection the router
	// used, host:port.
	upstreamAddr string
	upCancel     context.CancelFunc
	protoSent    bool
	attrsSent    [2]bool
	ignored      []string
	respHeader   headerMap // response headers incl. :status

	// What went downstream.
	headersSent bool
	chunksOut   int // STREAMED body chunks that went downstream
	body        []byte
	reset       bool
	localReply  bool
	details     string
}

func newTransaction(e *Emulator, r Request) *transaction {
	return &transaction{
		e:   e,
		cfg: &e.cfg,
		req: r,
		// ENVOY.md: request and response headers SEND, bodies NONE,
		// trailers SKIP.
		mode: &procmodev3.ProcessingMode{
			RequestHeaderMode:   procmodev3.ProcessingMode_SEND,
			ResponseHeaderMode:  procmodev3.ProcessingMode_SEND,
			RequestBodyMode:     procmodev3.ProcessingMode_NONE,
			ResponseBodyMode:    procmodev3.ProcessingMode_NONE,
			RequestTrailerMode:  procmodev3.ProcessingMode_SKIP,
			ResponseTrailerMode: procmodev3.ProcessingMode_SKIP,
		},
		md: metadata{},
	}
}

// run drives the request through ext_proc, the router and the response
// path. An *abort ends it with a local reply or reset.
func (t *transaction) run(ctx context.Context) (err error) {
	t.reqHeaders = t.initialHeaders()
	// The HCM picks the route before any filter runs, with no metadata.
	t.route, t.routed = selectRoute(t.cfg.Routes, nil)
	defer func() {
		if t.upCancel != nil {
			t.upCancel()
		}
	}()

	x, err := openExchange(ctx, t.e.client, t.cfg)
	if err != nil {
		return err
	}
	t.x = x
	defer func() { x.close(err == nil) }()

	if err := t.requestHeaders(ctx); err != nil {
		return err
	}
	if t.headersSent { // a StreamedImmediateResponse answered
		return nil
	}
	up, err := t.forward(ctx)
	if err != nil {
		return err
	}
	defer up.Body.Close()
	return t.respond(ctx, up)
}

// initialHeaders is the request header map as ext_proc sees it: pseudo
// headers, then the regular headers lower-cased, with the headers the HCM
// adds before the filter chain.
func (t *transaction) initialHeaders() headerMap {
	h := t.req.Header.Clone()
	authority := h.Get("Host")
	if authority == "" {
		authority = "modgate"
	}
	h.Del("Host")
	m := headerMap{
		{":method", t.req.Method},
		{":path", t.req.Path},
		{":authority", authority},
		{":scheme", "https"},
	}
	m = append(m, fromHTTP(h)...)
	if _, ok := m.get("x-request-id"); !ok {
		m = m.add("x-request-id", requestID())
	}
	return m.set("x-forwarded-proto", "https")
}

// requestID returns a random UUID, like Envoy's x-request-id.
func requestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// decorate adds what Envoy puts on first messages: protocol_config on the
// stream's first message, attributes on the first message of a direction:
// the request's on the request direction, the configured response
// attributes on the response direction.
func (t *transaction) decorate(msg *extprocv3.ProcessingRequest, dir direction) {
	if !t.protoSent {
		t.protoSent = true
		msg.ProtocolConfig = &extprocv3.ProtocolConfiguration{
			RequestBodyMode:  t.mode.GetRequestBodyMode(),
			ResponseBodyMode: t.mode.GetResponseBodyMode(),
		}
	}
	if t.attrsSent[dir] {
		return
	}
	t.attrsSent[dir] = true
	attrs := t.req.Attributes
	if dir == dirResponse {
		attrs = t.responseAttributes()
	}
	if len(attrs) > 0 {
		msg.Attributes = map[string]*structpb.Struct{attributesKey: attributeStruct(attrs)}
	}
}

// responseAttributes evaluates Config.ResponseAttributes for the
// response: upstream.address (the address the router connected to),
// xds.cluster_name and response.code. Others, and ones without a value,
// are omitted, as Envoy omits absent attributes.
func (t *transaction) responseAttributes() map[string]any {
	out := map[string]any{}
	for _, name := range t.cfg.ResponseAttributes {
		switch name {
		case "upstream.address":
			if t.upstreamAddr != "" {
				out[name] = t.upstreamAddr
			}
		case "xds.cluster_name":
			if t.cluster != "" {
				out[name] = t.cluster
			}
		case "response.code":
			if s, ok := t.respHeader.get(":status"); ok {
				n, _ := strconv.Atoi(s)
				out[name] = n
			}
		}
	}
	return out
}

// requestHeaders sends the request headers and applies the reply.
func (t *transaction) requestHeaders(ctx context.Context) error {
	msg := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{
		RequestHeaders: &extprocv3.HttpHeaders{Headers: t.reqHeaders.proto(), EndOfStream: true},
	}}
	t.decorate(msg, dirRequest)
	reply, err := t.roundTrip(ctx, msg, kindRequestHeaders)
	if err != nil || reply == nil {
		return err
	}
	if err := t.onReply(reply, true); err != nil {
		return err
	}
	if sir := reply.GetStreamedImmediateResponse(); sir != nil {
		return t.streamedImmediate(ctx, sir)
	}
	cr := reply.GetRequestHeaders().GetResponse()
	if cr.GetStatus() == extprocv3.CommonResponse_CONTINUE_AND_REPLACE {
		return errors.New("CONTINUE_AND_REPLACE in a reply to request headers is not emulated")
	}
	if mut := cr.GetHeaderMutation(); mut != nil {
		if err := t.mutate(&t.reqHeaders, mutationRules{phase: "request_headers", pseudo: ":path"}, mut); err != nil {
			return err
		}
		// ENVOY.md: clear_route_cache counts only with a header mutation
		// in the same reply (an empty one counts).
		if cr.GetClearRouteCache() {
			t.route, t.routed = selectRoute(t.cfg.Routes, t.md)
		}
	}
	return nil
}

// roundTrip sends msg and waits for its reply. A nil reply means the
// processor is gone (clean close) and Envoy goes on without it.
func (t *transaction) roundTrip(ctx context.Context, msg *extprocv3.ProcessingRequest, kind msgKind) (*extprocv3.ProcessingResponse, error) {
	sent, err := t.x.send(ctx, msg, kind)
	if err != nil || !sent {
		return nil, err
	}
	return t.x.await(ctx)
}

// onReply applies what any reply may carry: dynamic metadata (only the
// receiving namespaces), mode_override (only in a reply to headers, only
// with allow_mode_override, effective for later phases), and an immediate
// response.
func (t *transaction) onReply(reply *extprocv3.ProcessingResponse, toHeaders bool) error {
	t.md.merge(reply.GetDynamicMetadata(), t.cfg.ReceivingNamespaces)
	if mo := reply.GetModeOverride(); mo != nil && toHeaders && t.cfg.AllowModeOverride {
		// The override replaces the whole mode: unset fields fall back to
		// their defaults (ENVOY.md: always set both body modes).
		t.mode = proto.Clone(mo).(*procmodev3.ProcessingMode)
	}
	if ir := reply.GetImmediateResponse(); ir != nil {
		return t.immediate(ir)
	}
	return nil
}

// mutate applies a header mutation to *h, recording ignored mutations; an
// invalid mutation fails closed.
func (t *transaction) mutate(h *headerMap, rules mutationRules, mut *extprocv3.HeaderMutation) error {
	out, ignored, err := rules.apply(*h, mut)
	if err != nil {
		return &abort{status: http.StatusInternalServerError, details: "invalid_header_mutation: " + err.Error()}
	}
	t.ignored = append(t.ignored, ignored...)
	*h = out
	return nil
}

// immediate turns an ImmediateResponse into a local reply (or a reset if
// the response has started downstream).
func (t *transaction) immediate(ir *extprocv3.ImmediateResponse) error {
	code := http.StatusOK
	if ir.GetStatus() != nil {
		code = int(ir.GetStatus().GetCode())
	}
	if code < 200 || code > 599 {
		return failClosed("invalid_immediate_response_status")
	}
	var h headerMap
	if err := t.mutate(&h, mutationRules{phase: "immediate_response"}, ir.GetHeaders()); err != nil {
		return err
	}
	details := ir.GetDetails()
	if details == "" {
		details = "immediate_response"
	}
	return &abort{status: code, details: details, header: h, body: ir.GetBody()}
}

// forward sends the request upstream on the chosen route. Envoy's own
// local replies here are not sent to ext_proc (ENVOY.md, 1.34+).
func (t *transaction) forward(ctx context.Context) (*http.Response, error) {
	if !t.routed {
		return nil, &abort{status: http.StatusNotFound, details: "route_not_found"}
	}
	base, ok := t.cfg.Clusters[t.route.Cluster]
	if !ok {
		return nil, &abort{status: http.StatusServiceUnavailable, details: "no_cluster"}
	}
	t.cluster = t.route.Cluster
	method, _ := t.reqHeaders.get(":method")
	path, _ := t.reqHeaders.get(":path")
	authority, _ := t.reqHeaders.get(":authority")

	uctx, cancel := context.WithTimeout(ctx, t.cfg.UpstreamTimeout)
	t.upCancel = cancel
	req, err := http.NewRequestWithContext(uctx, method, strings.TrimSuffix(base, "/")+path, nil)
	if err != nil {
		return nil, &abort{status: http.StatusBadRequest, details: "invalid_upstream_request"}
	}
	req.Host = authority
	req.Header = make(http.Header)
	for _, f := range t.reqHeaders {
		if strings.HasPrefix(f.key, ":") || f.key == "host" || strings.HasPrefix(f.key, "x-envoy-") {
			continue
		}
		req.Header.Add(f.key, f.value)
	}
	if _, ok := req.Header["User-Agent"]; !ok {
		req.Header["User-Agent"] = []string{""} // no Go default
	}
	req = req.WithContext(httptrace.WithClientTrace(uctx, &httptrace.ClientTrace{
		GotConn: func(ci httptrace.GotConnInfo) { t.upstreamAddr = ci.Conn.RemoteAddr().String() },
	}))
	resp, err := t.e.upstream.Do(req)
	switch {
	case err == nil:
		return resp, nil
	case ctx.Err() != nil:
		return nil, ctx.Err()
	case errors.Is(err, context.DeadlineExceeded):
		return nil, &abort{status: http.StatusGatewayTimeout, details: "upstream_response_timeout",
			body: []byte("upstream request timeout")}
	default:
		return nil, &abort{status: http.StatusServiceUnavailable,
			details: "upstream_reset_before_response_started{connection_failure}",
			body:    []byte("upstream connect error or disconnect/reset before headers. reset reason: connection failure")}
	}
}

// fail is the one place an abort becomes what the client sees: a local
// reply while nothing has gone downstream, a reset afterwards.
func (t *transaction) fail(a *abort) {
	t.details = a.details
	if t.headersSent || a.reset {
		t.reset = true
		return
	}
	t.localReply = true
	h := headerMap{{":status", strconv.Itoa(a.status)}}
	h = append(h, a.header.del(":status")...)
	h = h.set("content-length", strconv.Itoa(len(a.body)))
	if _, ok := h.get("content-type"); !ok && len(a.body) > 0 {
		h = h.set("content-type", "text/plain")
	}
	t.respHeader = h
	t.body = a.body
	t.headersSent = true
}

// sendHeaders sends the response headers downstream.
func (t *transaction) sendHeaders() { t.headersSent = true }

// response is what the client got.
func (t *transaction) response() *Response {
	r := &Response{
		Reset:            t.reset,
		LocalReply:       t.localReply,
		Cluster:          t.cluster,
		Details:          t.details,
		Metadata:         t.md,
		IgnoredMutations: t.ignored,
	}
	if t.x != nil {
		r.Messages = t.x.sent
	}
	if t.headersSent {
		s, _ := t.respHeader.get(":status")
		r.Status, _ = strconv.Atoi(s)
		r.Header = t.respHeader.http()
		r.Body = t.body
	}
	return r
}
