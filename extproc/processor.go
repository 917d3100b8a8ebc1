// Package extproc is modgate's request processor: the steps every request
// goes through, whichever front end received it.
//
// A front end (the standalone HTTP server, or the ext_proc gRPC server that
// Envoy streams to) opens one Exchange per request and drives it through
// phases that mirror Envoy's ext_proc messages:
//
//	x := p.Begin(client)
//	d := x.RequestHeaders(ctx, method, target)   // classify, decide
//	   Reject or Serve: write d.Reply
//	   Forward: for each candidate upstream i, in order,
//	       r := x.UpstreamResponse(ctx, i, status, header)   or
//	       r := x.UpstreamFailed(ctx, i, err)
//	       Next: try candidate i+1; Replace: write r.Reply;
//	       Pass: write r.Status and r.Header, then the body as r.Body says
//	x.Done(status, bytes, err)                   // exactly one audit event
//
// The processor owns every decision: status codes, which upstream may see
// a path, which upstream answers count as "not found" and which as an
// outage, what headers reach the client, and how large a body may be. Front
// ends only move bytes. Errors become client replies in one place
// (Exchange.refuse), which is also the one place they are logged.
//
// Status semantics: grammar rejects are 400/404/405; policy denials are 403
// (never 404 or 410, which make the go command fall back to the next proxy
// in its list); an upstream outage is 502, or 504 for a timeout, never 404;
// an upstream 404/410 reaches the client only for a public path, and only
// when no candidate upstream failed. Every error body is plain text of at
// most 8 lines.
//
// A Processor is safe for concurrent use. An Exchange belongs to one
// request and is used by one goroutine at a time.
package extproc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/modgate/modgate/audit"
	"github.com/modgate/modgate/goproxy"
	"github.com/modgate/modgate/policy"
	"github.com/modgate/modgate/upstream"
)

// Body-size limits on what an upstream may send, per kind of request. The
// go.mod and zip limits are golang.org/x/mod/zip's.
const (
	MaxModBytes   = 16 << 20
	MaxZipBytes   = 500 << 20
	MaxListBytes  = 16 << 20
	MaxInfoBytes  = 1 << 20
	MaxSumDBBytes = 1 << 20
	// MaxExcerptBytes is how much of an upstream's error body is read to
	// quote it to the client.
	MaxExcerptBytes = 4 << 10
)

// Auditor records audit events. Record must not keep e after it returns.
// An error means the event may not have been recorded; the processor logs
// it.
type Auditor interface {
	Record(e *audit.Event) error
}

// Upstreams gives the ordered candidate upstreams for a route. A private
// request must only ever get private upstreams.
type Upstreams interface {
	Candidates(private bool) []*upstream.Upstream
}

// Options configures a Processor. Audit and Upstreams are required; the
// other fields' zero values work.
type Options struct {
	// Policy decides what is allowed. Default: a policy with no private
	// patterns and no checksum database.
	Policy *policy.Policy
	// Upstreams gives the candidate upstreams per route.
	Upstreams Upstreams
	// Audit receives exactly one event per request.
	Audit Auditor
	// MaxTarget limits the request target in bytes. Default
	// goproxy.DefaultMaxTarget (1 KiB).
	MaxTarget int
	// PassPrivateNotFound lets a private upstream's 404/410 reach the
	// client as such. Default false: it becomes a 403, so that a client
	// whose GOPROXY lists other proxies after modgate does not go on to ask
	// them for the private path. Set it when clients use modgate alone and
	// need "not found" to probe module path prefixes.
	PassPrivateNotFound bool
	// Logger receives operational logs. Default slog.Default().
	Logger *slog.Logger
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// A Processor runs the per-request steps. Create it with New.
type Processor struct {
	policy    *policy.Policy
	upstreams Upstreams
	audit     Auditor
	maxTarget int
	passPriv  bool
	log       *slog.Logger
	now       func() time.Time
}

// New checks opts and returns a Processor.
func New(opts Options) (*Processor, error) {
	if opts.Upstreams == nil {
		return nil, errors.New("extproc: Upstreams is required")
	}
	if opts.Audit == nil {
		return nil, errors.New("extproc: Audit is required")
	}
	if opts.MaxTarget < 0 {
		return nil, fmt.Errorf("extproc: MaxTarget %d is negative", opts.MaxTarget)
	}
	p := &Processor{
		policy:    opts.Policy,
		upstreams: opts.Upstreams,
		audit:     opts.Audit,
		maxTarget: opts.MaxTarget,
		passPriv:  opts.PassPrivateNotFound,
		log:       opts.Logger,
		now:       opts.Now,
	}
	if p.policy == nil {
		var err error
		if p.policy, err = policy.New(policy.Config{}); err != nil {
			return nil, err
		}
	}
	if p.maxTarget == 0 {
		p.maxTarget = goproxy.DefaultMaxTarget
	}
	if p.log == nil {
		p.log = slog.Default()
	}
	if p.now == nil {
		p.now = time.Now
	}
	return p, nil
}

// Client identifies who sent a request, as far as the front end knows.
type Client struct {
	Addr       netip.AddrPort // the peer's address
	Subject    string         // verified client certificate's subject
	URISANs    []string       // its URI SANs (SPIFFE IDs)
	CertSHA256 string         // hex SHA-256 of its DER encoding
	User       string         // basic-auth user name
}

// Action is what a front end does next.
type Action uint8

const (
	// Reject: write Reply, an error.
	Reject Action = iota + 1
	// Serve: write Reply, content modgate has itself.
	Serve
	// Forward: fetch Path from the candidate upstreams in order.
	Forward
	// Pass: send the upstream's response on, as the fields say.
	Pass
	// Replace: drop the upstream's response and write Reply instead.
	Replace
	// Next: drop the upstream's response and try the next candidate.
	Next
)

var actionNames = [...]string{Reject: "reject", Serve: "serve", Forward: "forward", Pass: "pass", Replace: "replace", Next: "next"}

func (a Action) String() string {
	if int(a) < len(actionNames) && actionNames[a] != "" {
		return actionNames[a]
	}
	return "Action(" + strconv.Itoa(int(a)) + ")"
}

// A Reply is a complete response that modgate makes itself.
type Reply struct {
	Status int
	Header http.Header
	Body   []byte
}

// Decision is the answer to the request-headers phase.
type Decision struct {
	Action     Action               // Reject, Serve or Forward
	Reply      *Reply               // Reject and Serve
	Method     string               // Forward: method to send upstream
	Path       string               // Forward: canonical path to request
	Candidates []*upstream.Upstream // Forward: upstreams to try, in order
}

// BodyMode says what the processor needs of an upstream body it lets pass.
type BodyMode uint8

const (
	// BodyPass: copy the body to the client, at most Limit bytes; a longer
	// body is an error and the response must be aborted, not completed.
	BodyPass BodyMode = iota + 1
	// BodyExcerpt: read at most Limit bytes (the rest is dropped), hand
	// them to Exchange.Excerpt and send its result as the whole body.
	BodyExcerpt
)

// A Response is the answer to an upstream response (or failure).
type Response struct {
	Action Action      // Pass, Replace or Next
	Reply  *Reply      // Replace
	Status int         // Pass: status for the client
	Header http.Header // Pass: headers for the client (Content-Length excluded)
	Body   BodyMode    // Pass
	Limit  int64       // Pass: bytes the body may have
}

// Exchange is one request's passage through the processor.
type Exchange struct {
	p      *Processor
	start  time.Time
	id     string
	client Client
	log    *slog.Logger

	method     string
	target     string
	req        goproxy.Request
	parsed     bool
	route      policy.Route
	candidates []*upstream.Upstream
	failure    error // the last upstream failure, if any

	decision string // reject, deny, serve or forward
	rule     string
	reason   string
	upstream string
	done     bool
}

// Begin opens the Exchange for one request from client.
func (p *Processor) Begin(client Client) *Exchange {
	id := newID()
	return &Exchange{
		p:      p,
		start:  p.now(),
		id:     id,
		client: client,
		log:    p.log.With("request_id", id),
	}
}

// ID returns the request's id, unique per Exchange.
func (x *Exchange) ID() string { return x.id }

// RequestHeaders runs classify and decide for the request's method and raw
// target (the request-target as received, or Envoy's :path).
func (x *Exchange) RequestHeaders(ctx context.Context, method, target string) Decision {
	x.method, x.target = method, target
	req, err := goproxy.Parse(method, target, x.p.maxTarget)
	if err != nil {
		return Decision{Action: Reject, Reply: x.refuse(ctx, err)}
	}
	x.req, x.parsed = req, true

	v := x.p.policy.Decide(req)
	if !v.Allow {
		return Decision{Action: Reject, Reply: x.refuse(ctx, &denial{rule: v.Rule, reason: v.Reason})}
	}
	x.route = v.Route
	switch v.Route {
	case policy.Local:
		// The only local answer: /sumdb/NAME/supported for an allowed NAME.
		x.decision = "serve"
		return Decision{Action: Serve, Reply: &Reply{Status: http.StatusOK, Header: textHeader()}}
	case policy.Private:
		x.candidates = x.p.upstreams.Candidates(true)
		if len(x.candidates) == 0 {
			return Decision{Action: Reject, Reply: x.refuse(ctx, &denial{
				rule:   "private-no-upstream",
				reason: fmt.Sprintf("%s is a private module and no private upstream is configured", req.Module),
			})}
		}
	default:
		x.candidates = x.p.upstreams.Candidates(false)
		if len(x.candidates) == 0 {
			return Decision{Action: Reject, Reply: x.refuse(ctx, &upstreamError{err: errors.New("no public upstream is configured")})}
		}
	}
	x.decision = "forward"
	return Decision{
		Action:     Forward,
		Method:     method,
		Path:       req.Path(),
		Candidates: x.candidates,
	}
}

// UpstreamResponse decides what to do with the response headers that
// candidate i of the Forward decision answered with.
func (x *Exchange) UpstreamResponse(ctx context.Context, i int, status int, h http.Header) Response {
	u := x.candidates[i]
	x.upstream = u.Name
	last := i == len(x.candidates)-1
	switch {
	case status == http.StatusOK:
		limit := x.bodyLimit()
		if n := contentLength(h); n > limit {
			return x.replace(ctx, &upstreamError{upstream: u.Name, err: fmt.Errorf("announced %d bytes for a %s, over the %d-byte limit", n, x.req.Kind, limit)})
		}
		return Response{Action: Pass, Status: status, Header: passHeader(h, x.req.Kind), Body: BodyPass, Limit: limit}

	case status == http.StatusNotFound || status == http.StatusGone:
		if !last {
			return Response{Action: Next}
		}
		if x.failure != nil {
			// Some candidate failed: it might have had the module, so this is
			// an outage, not "not found" (invariant 4).
			return x.replace(ctx, x.failure)
		}
		if x.route == policy.Private && !x.p.passPriv {
			return x.replace(ctx, &denial{
				rule:   "private-not-found",
				reason: fmt.Sprintf("%s: not found at private upstream %s (refused rather than 404, so clients do not ask other proxies)", x.req.Module, u.Name),
			})
		}
		x.reason = "upstream " + u.Name + ": " + http.StatusText(status)
		return Response{Action: Pass, Status: status, Header: textHeader(), Body: BodyExcerpt, Limit: MaxExcerptBytes}

	default:
		x.failure = &upstreamError{upstream: u.Name, status: status}
		if !last {
			x.logFailure(x.failure)
			return Response{Action: Next}
		}
		return x.replace(ctx, x.failure)
	}
}

// UpstreamFailed decides what to do when candidate i could not be asked:
// no connection, a TLS failure, no response headers in time.
func (x *Exchange) UpstreamFailed(ctx context.Context, i int, err error) Response {
	u := x.candidates[i]
	x.upstream = u.Name
	x.failure = &upstreamError{upstream: u.Name, err: err, timeout: upstream.IsTimeout(err)}
	if i < len(x.candidates)-1 {
		x.logFailure(x.failure)
		return Response{Action: Next}
	}
	return x.replace(ctx, x.failure)
}

// Excerpt turns the first bytes of an upstream's "not found" body into the
// body the client gets: plain text, at most 8 lines.
func (x *Exchange) Excerpt(b []byte) []byte {
	lines := splitLines(string(b))
	if len(lines) == 0 {
		lines = []string{"not found"}
	}
	return plainText(lines...)
}

// Done ends the Exchange: status is what the client was sent, n the body
// bytes written, err what cut the response short (nil if it completed).
// It records the one audit event of the request; calls after the first
// do nothing.
func (x *Exchange) Done(status int, n int64, err error) {
	if x.done {
		return
	}
	x.done = true
	end := x.p.now()
	outcome := audit.OutcomeSuccess
	if status >= 400 || err != nil {
		outcome = audit.OutcomeFailure
	}
	reason := x.reason
	if err != nil {
		reason = err.Error()
		x.log.Warn("response cut short", "status", status, "bytes", n, "err", err)
	}
	if x.decision == "" {
		// The front end never got a decision, e.g. the client went away.
		x.decision = "abort"
	}
	e := &audit.Event{
		Timestamp: x.start.UTC(),
		Event: audit.EventFields{
			Action:   "request",
			Outcome:  outcome,
			Reason:   reason,
			Duration: end.Sub(x.start).Nanoseconds(),
		},
		URL: &audit.URL{Path: x.target},
		HTTP: &audit.HTTP{
			Request:  audit.HTTPRequest{ID: x.id, Method: x.method},
			Response: audit.HTTPResponse{StatusCode: status, Bytes: n},
		},
		Modgate: audit.ModgateGroup{
			Decision: x.decision,
			Rule:     x.rule,
			Upstream: x.upstream,
		},
	}
	if x.client.Addr.IsValid() {
		e.Source = &audit.Source{IP: x.client.Addr.Addr().Unmap().String(), Port: x.client.Addr.Port()}
	}
	if c := x.client; c.Subject != "" || len(c.URISANs) > 0 || c.CertSHA256 != "" {
		e.TLS = &audit.TLS{Client: audit.TLSClient{Subject: c.Subject}}
		if len(c.URISANs) > 0 {
			e.TLS.Client.X509 = &audit.X509{SAN: audit.X509SAN{URI: c.URISANs}}
		}
		if c.CertSHA256 != "" {
			e.TLS.Client.Hash = &audit.ClientHash{SHA256: c.CertSHA256}
		}
	}
	if x.client.User != "" {
		e.User = &audit.User{Name: x.client.User}
	}
	if x.parsed {
		e.Modgate.Kind = x.req.Kind.String()
		e.Modgate.Module = x.req.Module
		e.Modgate.Version = x.req.Version
		e.Modgate.SumDB = x.req.SumDB
		if x.decision == "forward" {
			e.Modgate.Cache = "bypass"
		}
	}
	if err := x.p.audit.Record(e); err != nil {
		x.log.Error("audit event not recorded", "err", err)
	}
}

func (x *Exchange) replace(ctx context.Context, err error) Response {
	return Response{Action: Replace, Reply: x.refuse(ctx, err)}
}

// refuse is the one place an error becomes a client reply, and the one
// place such errors are logged.
func (x *Exchange) refuse(ctx context.Context, err error) *Reply {
	var (
		status int
		rule   string
		pe     *goproxy.Error
		de     *denial
		ue     *upstreamError
	)
	switch {
	case errors.As(err, &pe):
		x.decision = "reject"
		switch {
		case errors.Is(err, goproxy.ErrMethod):
			status, rule = http.StatusMethodNotAllowed, "method"
		case errors.Is(err, goproxy.ErrNotFound):
			status, rule = http.StatusNotFound, "no-endpoint"
		default:
			status, rule = http.StatusBadRequest, "grammar"
		}
		x.log.DebugContext(ctx, "request rejected", "status", status, "err", err)
	case errors.As(err, &de):
		x.decision = "deny"
		status, rule = http.StatusForbidden, de.rule
		x.log.InfoContext(ctx, "request denied", "rule", de.rule, "reason", de.reason)
	case errors.As(err, &ue):
		x.decision = "forward"
		status, rule = ue.clientStatus(), "upstream"
		x.logFailure(ue)
	default:
		status, rule = http.StatusInternalServerError, "internal"
		x.log.ErrorContext(ctx, "internal error", "err", err)
	}
	x.rule = rule
	x.reason = err.Error()
	h := textHeader()
	if status == http.StatusMethodNotAllowed {
		h.Set("Allow", "GET, HEAD")
	}
	return &Reply{Status: status, Header: h, Body: plainText(x.reason)}
}

func (x *Exchange) logFailure(err error) {
	x.log.Warn("upstream failed", "err", err, "path", x.req.Path())
}

func (x *Exchange) bodyLimit() int64 {
	switch x.req.Kind {
	case goproxy.KindZip:
		return MaxZipBytes
	case goproxy.KindMod:
		return MaxModBytes
	case goproxy.KindList:
		return MaxListBytes
	case goproxy.KindInfo, goproxy.KindLatest:
		return MaxInfoBytes
	}
	return MaxSumDBBytes
}

// A denial is a policy refusal: 403.
type denial struct {
	rule   string
	reason string
}

func (d *denial) Error() string { return "forbidden: " + d.reason }

// An upstreamError is an upstream that failed: a status other than 200,
// 404 or 410, no answer, or an answer over the limits.
type upstreamError struct {
	upstream string
	status   int   // the upstream's status, or 0
	err      error // what went wrong, if not a status
	timeout  bool
}

func (e *upstreamError) Error() string {
	name := e.upstream
	if name == "" {
		name = "upstream"
	} else {
		name = "upstream " + name
	}
	switch {
	case e.err != nil && e.timeout:
		return name + ": timed out: " + e.err.Error()
	case e.err != nil:
		return name + ": " + e.err.Error()
	}
	return fmt.Sprintf("%s answered %d %s", name, e.status, http.StatusText(e.status))
}

func (e *upstreamError) Unwrap() error { return e.err }

// clientStatus is the status an upstream failure becomes: never a 404.
func (e *upstreamError) clientStatus() int {
	switch {
	case e.timeout, e.status == http.StatusGatewayTimeout:
		return http.StatusGatewayTimeout
	case e.status == http.StatusTooManyRequests, e.status == http.StatusServiceUnavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusBadGateway
}

func newID() string {
	var b [8]byte
	rand.Read(b[:]) // never fails (crypto/rand)
	return hex.EncodeToString(b[:])
}

func contentLength(h http.Header) int64 {
	n, err := strconv.ParseInt(h.Get("Content-Length"), 10, 64)
	if err != nil {
		return -1
	}
	return n
}
