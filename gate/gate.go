// Package extproc is modgate's request processor: the steps every request
// goes through, whichever front end received it.
//
// A front end (the standalone HTTP server, or the ext_proc gRPC server that
// Envoy streams to) opens one Exchange per request and drives it through
// phases that mirror Envoy's ext_proc messages:
//
//	x := p.Begin(client)
//	d := x.RequestHeaders(ctx, method, target)  // classify, identify, decide, look up
//	if d.Action == Forward {                     // a miss this request leads
//	    f := d.Fill                              // fetch from f.Candidates in order:
//	    r := f.UpstreamResponse(ctx, i, status, header) // or f.UpstreamFailed(ctx, i, err)
//	    //   Next: try candidate i+1; Fail: stop; Store: feed the body to
//	    //   f.ResponseBody, chunk by chunk
//	    res := f.Finish(ctx, err)                // verify, store, wake coalesced requests
//	    d = x.Filled(ctx, res)
//	}
//	// Reject or Serve: write d.Reply.  Hit: serve d.Entry with d.Status and
//	// d.Header, then close it.  Abort: the client is gone, write nothing.
//	x.Done(status, bytes, err)                   // exactly one audit event
//
// The processor owns every decision: status codes, which upstream may see
// a path, which upstream answers count as "not found" and which as an
// outage, what is cached and for how long, what headers reach the client,
// and how large a body may be. Front ends only move bytes. Errors become
// client replies in one place (Exchange.refuse), which is also the one
// place they are logged.
//
// Status semantics: grammar rejects are 400/404/405; policy denials are 403
// (never 404 or 410, which make the go command fall back to the next proxy
// in its list); an exhausted miss budget is 429 with Retry-After; an
// upstream outage is 502, or 504 for a timeout, never 404; an upstream
// 404/410 reaches the client only for a public path, and only when no
// candidate upstream failed. Every error body is plain text of at most 8
// lines.
//
// Caching: concurrent misses for one key share one Fill (the others wait
// in RequestHeaders, each as long as its own context lives); 404/410
// answers are cached as negative entries; when a fill fails and a stale
// Query entry exists, the stale entry is served with a Warning header.
//
// A Processor is safe for concurrent use. An Exchange or a Fill belongs to
// one request and is used by one goroutine at a time.
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

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/modgate/modgate/audit"
	"github.com/modgate/modgate/cache"
	"github.com/modgate/modgate/goproxy"
	"github.com/modgate/modgate/policy"
	"github.com/modgate/modgate/upstream"
	"github.com/modgate/modgate/verify"
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

// Upstreams gives the ordered candidate upstreams for a route: the usable
// ones (healthy), and whether any is configured at all. A private request
// must only ever get private upstreams.
type Upstreams interface {
	Candidates(private bool) []*upstream.Upstream
	Configured(private bool) bool
}

// Health takes the data plane's own view of upstreams (passive checks):
// ok false for an upstream that failed (5xx, no connection, no answer in
// time), true for one that answered.
type Health interface {
	Report(upstream string, ok bool)
}

// Cache stores responses. Get returns an error wrapping fs.ErrNotExist
// when key has no servable entry; the caller closes a returned Entry.
type Cache interface {
	Get(key string) (*cache.Entry, error)
	NewWriter(key string, class cache.Class, status int, contentType string) *cache.Writer
	NewBlobWriter(key string, class cache.Class, contentType string) *cache.Writer
}

// Verifier checks a fetched go.mod or zip of path at version before it is
// stored: against a checksum database, or, for a private module, the
// ledger. The result is what the audit event records; an error means the
// artifact must not be cached or served.
type Verifier interface {
	Mod(path, version string, data []byte, private bool) (verify.Result, error)
	Zip(path, version, file string, private bool) (verify.Result, error)
}

// Observer takes the processor's measurements (the metrics). Its methods
// must not block.
type Observer interface {
	Request(kind string, status int, cache string, d time.Duration)
	UpstreamFetch(upstream, outcome string, d time.Duration)
	Verification(result string)
}

// Budget rations misses per client and per module ("" for none). Charge
// reports whether the miss may go upstream and, if not, which budget
// refused and when to retry.
type Budget interface {
	Charge(client, module string) (ok bool, which string, retryAfter time.Duration)
}

// Options configures a Processor. Upstreams, Cache, Verifier and Audit are
// required; the other fields' zero values work.
type Options struct {
	// Policy decides what is allowed. Default: a policy with no private
	// patterns and no checksum database.
	Policy *policy.Policy
	// Upstreams gives the candidate upstreams per route.
	Upstreams Upstreams
	// Cache stores what upstreams answer.
	Cache Cache
	// Verifier checks .mod and .zip bodies before they are stored.
	Verifier Verifier
	// Budget rations misses. Default: none.
	Budget Budget
	// Health receives passive health reports. Default: none.
	Health Health
	// Observer receives measurements. Default: none.
	Observer Observer
	// Tracer makes a span per request, with child spans for the cache
	// lookup, the upstream fetch and the verification; a span context in
	// the context RequestHeaders gets (the front end extracts W3C
	// traceparent) is its parent. Default: no tracing.
	Tracer trace.Tracer
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
	cache     Cache
	verifier  Verifier
	budget    Budget
	health    Health
	observer  Observer
	tracer    trace.Tracer
	audit     Auditor
	maxTarget int
	passPriv  bool
	log       *slog.Logger
	now       func() time.Time
	flights   cache.Flights[FillResult]
}

// New checks opts and returns a Processor.
func New(opts Options) (*Processor, error) {
	switch {
	case opts.Upstreams == nil:
		return nil, errors.New("extproc: Upstreams is required")
	case opts.Cache == nil:
		return nil, errors.New("extproc: Cache is required")
	case opts.Verifier == nil:
		return nil, errors.New("extproc: Verifier is required")
	case opts.Audit == nil:
		return nil, errors.New("extproc: Audit is required")
	case opts.MaxTarget < 0:
		return nil, fmt.Errorf("extproc: MaxTarget %d is negative", opts.MaxTarget)
	}
	p := &Processor{
		policy:    opts.Policy,
		upstreams: opts.Upstreams,
		cache:     opts.Cache,
		verifier:  opts.Verifier,
		budget:    opts.Budget,
		health:    opts.Health,
		observer:  opts.Observer,
		tracer:    opts.Tracer,
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
	if p.tracer == nil {
		p.tracer = noop.NewTracerProvider().Tracer("")
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
	// OriginalDst is where a redirected connection was going, for
	// connections the transparent listener accepted.
	OriginalDst netip.AddrPort
}

// identity is the client's name for budgets: the strongest identity known.
func (c Client) identity() string {
	id := c.Addr.Addr().Unmap().String()
	switch {
	case len(c.URISANs) > 0:
		id = c.URISANs[0]
	case c.Subject != "":
		id = c.Subject
	case c.User != "":
		id = "user:" + c.User
	}
	if len(id) > 256 {
		id = id[:256]
	}
	return id
}

// Action is what a front end does next.
type Action uint8

const (
	// Reject: write Reply, an error.
	Reject Action = iota + 1
	// Serve: write Reply, content modgate makes itself.
	Serve
	// Hit: serve Entry with Status and Header, then close it.
	Hit
	// Forward: this request leads the Fill of a miss.
	Forward
	// Abort: the client went away while waiting; write nothing.
	Abort
	// Store: feed the upstream body to Fill.ResponseBody, then Finish.
	Store
	// Next: drop the upstream's response and try the next candidate.
	Next
	// Fail: drop the upstream's response and Finish the fill.
	Fail
)

var actionNames = [...]string{Reject: "reject", Serve: "serve", Hit: "hit", Forward: "forward", Abort: "abort", Store: "store", Next: "next", Fail: "fail"}

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

// Decision is what the front end does with a request.
type Decision struct {
	Action Action       // Reject, Serve, Hit, Forward or Abort
	Reply  *Reply       // Reject and Serve
	Entry  *cache.Entry // Hit: the body, owned by the front end, which closes it
	Status int          // Hit: 200, or 404/410 for a negative entry
	Header http.Header  // Hit: the headers (Content-Length excluded)
	Fill   *Fill        // Forward
}

// Cache statuses, as in X-Modgate-Cache and the audit event.
const (
	cacheBypass    = "bypass" // the cache was not consulted: rejected, denied, or local
	cacheHit       = "hit"
	cacheMiss      = "miss"
	cacheStale     = "stale"
	cacheNegative  = "negative"
	cacheCoalesced = "coalesced"
)

// Exchange is one request's passage through the processor.
type Exchange struct {
	p      *Processor
	start  time.Time
	id     string
	client Client
	log    *slog.Logger // see logger

	method string
	target string
	req    goproxy.Request
	parsed bool
	route  policy.Route
	class  cache.Class
	stale  *cache.Entry // a stale Query entry, served if the fill fails

	decision string // reject, deny, serve or forward
	rule     string
	reason   string
	upstream string
	cache    string
	verified string // how the fetched artifact was checked
	span     trace.Span
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
		cache:  cacheBypass,
	}
}

// logger returns the request's logger, made on first use: most requests
// log nothing.
func (x *Exchange) logger() *slog.Logger {
	if x.log == nil {
		x.log = x.p.log.With("request_id", x.id)
	}
	return x.log
}

// ID returns the request's id, unique per Exchange.
func (x *Exchange) ID() string { return x.id }

// RequestHeaders classifies the request from its method and raw target (the
// request-target as received, or Envoy's :path), decides on it, and looks
// it up. On a miss it either leads a new fill (Forward) or, if one is in
// progress for the same key, waits for it as long as ctx lives.
func (x *Exchange) RequestHeaders(ctx context.Context, method, target string) Decision {
	x.method, x.target = method, target
	ctx, x.span = x.p.tracer.Start(ctx, "modgate.request", trace.WithSpanKind(trace.SpanKindServer))
	if x.span.IsRecording() { // no attribute work on every request when tracing is off
		x.span.SetAttributes(attribute.String("http.request.method", method), attribute.String("url.path", target))
	}
	req, err := goproxy.Parse(method, target, x.p.maxTarget)
	if err != nil {
		return x.reject(ctx, err)
	}
	x.req, x.parsed = req, true

	v := x.p.policy.Decide(req)
	if !v.Allow {
		return x.reject(ctx, &denial{rule: v.Rule, reason: v.Reason})
	}
	x.route = v.Route
	if v.Route == policy.Local {
		// The only local answer: /sumdb/NAME/supported for an allowed NAME.
		x.decision = "serve"
		return Decision{Action: Serve, Reply: &Reply{Status: http.StatusOK, Header: textHeader(cacheBypass)}}
	}
	private := v.Route == policy.Private
	candidates := x.p.upstreams.Candidates(private)
	if len(candidates) == 0 {
		switch {
		case private && !x.p.upstreams.Configured(true):
			return x.reject(ctx, &denial{
				rule:   "private-no-upstream",
				reason: fmt.Sprintf("%s is a private module and no private upstream is configured", req.Module),
			})
		case !x.p.upstreams.Configured(private):
			return x.reject(ctx, &upstreamError{err: errors.New("no public upstream is configured")})
		}
		return x.reject(ctx, &upstreamError{status: http.StatusServiceUnavailable, err: fmt.Errorf("no healthy %s upstream: all are drained", v.Route)})
	}
	x.class, _ = cache.ClassOf(req)
	key := req.Path()

	// Normally one round; another only when a coalesced fill's entry is
	// gone before this request could open it.
	for range 3 {
		if d, ok := x.lookup(ctx, key); ok {
			return d
		}
		f, leader := x.p.flights.Start(key)
		if !leader {
			res, err := f.Wait(ctx)
			if err != nil {
				x.closeStale()
				return Decision{Action: Abort}
			}
			if d, ok := x.follow(ctx, res); ok {
				return d
			}
			continue // the flight's entry is gone already: look again
		}
		if d, ok := x.charge(ctx); !ok {
			x.p.flights.Land(f, FillResult{retry: true})
			return d
		}
		x.decision, x.cache = "forward", cacheMiss
		return Decision{Action: Forward, Fill: x.newFill(ctx, f, key, candidates)}
	}
	return x.reject(ctx, fmt.Errorf("cache entry for %s vanished three times while being filled", key))
}

// lookup serves key from the cache if it holds a fresh entry. A stale one
// is kept for stale-if-error.
func (x *Exchange) lookup(ctx context.Context, key string) (Decision, bool) {
	_, span := x.p.tracer.Start(ctx, "modgate.cache.lookup")
	e, err := x.p.cache.Get(key)
	span.SetAttributes(attribute.Bool("modgate.cache.found", err == nil))
	span.End()
	if err != nil {
		if !errors.Is(err, cache.ErrNotCached) {
			x.logger().ErrorContext(ctx, "cache read failed; treating as a miss", "key", key, "err", err)
		}
		return Decision{}, false
	}
	if !e.Fresh {
		x.closeStale()
		x.stale = e
		return Decision{}, false
	}
	status := cacheHit
	if e.Status != http.StatusOK {
		status = cacheNegative
	}
	return x.serveEntry(ctx, e, status), true
}

// charge takes a miss that this request is about to fetch out of the
// client's and the module's budgets (requests that wait for another's
// fetch are not charged). A refusal is the Decision to send.
func (x *Exchange) charge(ctx context.Context) (Decision, bool) {
	if x.p.budget == nil {
		return Decision{}, true
	}
	module := x.req.Module
	if x.req.Kind.IsSumDB() {
		module = "" // tiles and tree heads belong to no module
	}
	ok, which, retry := x.p.budget.Charge(x.client.identity(), module)
	if ok {
		return Decision{}, true
	}
	x.closeStale()
	secs := int((retry + time.Second - 1) / time.Second)
	d := x.reject(ctx, &overBudget{which: which, retry: secs})
	d.Reply.Header.Set("Retry-After", strconv.Itoa(secs))
	return d, false
}

// follow turns the result of another request's fill into this request's
// Decision. ok is false if the filled entry is already gone from the
// cache, so the caller should look again.
func (x *Exchange) follow(ctx context.Context, res FillResult) (Decision, bool) {
	if res.retry {
		return Decision{}, false
	}
	x.upstream, x.verified = res.upstream, res.verification
	if res.entry == nil {
		return x.failed(ctx, res), true
	}
	e, err := res.entry.Reopen()
	if err != nil {
		return Decision{}, false
	}
	x.closeStale()
	return x.serveEntry(ctx, e, cacheCoalesced), true
}

// Filled turns the result of the fill this request led into its Decision.
func (x *Exchange) Filled(ctx context.Context, res FillResult) Decision {
	x.upstream, x.verified = res.upstream, res.verification
	if res.entry == nil {
		return x.failed(ctx, res)
	}
	e, err := res.entry.Reopen()
	if err != nil {
		return x.reject(ctx, fmt.Errorf("reopen filled entry: %w", err))
	}
	x.closeStale()
	return x.serveEntry(ctx, e, cacheMiss)
}

// failed answers a fill that stored nothing: the stale entry if there is
// one and the failure is an upstream's, else the failure.
func (x *Exchange) failed(ctx context.Context, res FillResult) Decision {
	var ue *upstreamError
	if x.stale != nil && errors.As(res.err, &ue) {
		e := x.stale
		x.stale = nil
		x.reason = "stale: " + res.err.Error()
		x.logger().WarnContext(ctx, "serving stale entry", "key", e.Key, "err", res.err)
		d := x.serveEntry(ctx, e, cacheStale)
		d.Header.Set("Warning", `110 modgate "Response is Stale"`)
		return d
	}
	x.closeStale()
	return x.reject(ctx, res.err)
}

// serveEntry answers with e, or with a denial for a private negative entry.
func (x *Exchange) serveEntry(ctx context.Context, e *cache.Entry, status string) Decision {
	x.cache = status
	if x.decision == "" {
		x.decision = "serve"
	}
	if e.Status != http.StatusOK {
		if status == cacheHit {
			x.cache = cacheNegative
		}
		if x.route == policy.Private && !x.p.passPriv {
			e.Close()
			return x.reject(ctx, &denial{
				rule:   "private-not-found",
				reason: fmt.Sprintf("%s: not found at the private upstreams (refused rather than 404, so clients do not ask other proxies)", x.req.Module),
			})
		}
		if x.reason == "" {
			x.reason = http.StatusText(e.Status) + " upstream"
		}
	}
	return Decision{Action: Hit, Entry: e, Status: e.Status, Header: x.entryHeader(e)}
}

func (x *Exchange) closeStale() {
	if x.stale != nil {
		x.stale.Close()
		x.stale = nil
	}
}

func (x *Exchange) reject(ctx context.Context, err error) Decision {
	return Decision{Action: Reject, Reply: x.refuse(ctx, err)}
}

// Done ends the Exchange: status is what the client was sent (0 if
// nothing), n the body bytes written, err what cut the response short (nil
// if it completed). It records the one audit event of the request; calls
// after the first do nothing.
func (x *Exchange) Done(status int, n int64, err error) {
	if x.done {
		return
	}
	x.done = true
	x.closeStale()
	end := x.p.now()
	outcome := audit.OutcomeSuccess
	if status >= 400 || status == 0 || err != nil {
		outcome = audit.OutcomeFailure
	}
	reason := x.reason
	if err != nil {
		reason = err.Error()
		x.logger().Warn("response cut short", "status", status, "bytes", n, "err", err)
	}
	if x.decision == "" {
		x.decision = "abort" // the client left before a decision
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
			Decision:     x.decision,
			Rule:         x.rule,
			Upstream:     x.upstream,
			Cache:        x.cache,
			Verification: x.verified,
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
	if x.client.OriginalDst.IsValid() {
		e.Modgate.OriginalDestination = x.client.OriginalDst.String()
	}
	e.Modgate.TraceID = x.TraceID()
	if x.parsed {
		e.Modgate.Kind = x.req.Kind.String()
		e.Modgate.Module = x.req.Module
		e.Modgate.Version = x.req.Version
		e.Modgate.SumDB = x.req.SumDB
	}
	if err := x.p.audit.Record(e); err != nil {
		x.logger().Error("audit event not recorded", "err", err)
	}
	if x.p.observer != nil {
		x.p.observer.Request(e.Modgate.Kind, status, x.cache, end.Sub(x.start))
	}
	if x.span != nil && x.span.IsRecording() {
		x.span.SetAttributes(
			attribute.Int("http.response.status_code", status),
			attribute.String("modgate.kind", e.Modgate.Kind),
			attribute.String("modgate.module", e.Modgate.Module),
			attribute.String("modgate.version", e.Modgate.Version),
			attribute.String("modgate.cache", x.cache),
			attribute.String("modgate.decision", x.decision),
		)
		if outcome == audit.OutcomeFailure {
			x.span.SetStatus(codes.Error, reason)
		}
	}
	if x.span != nil {
		x.span.End()
	}
}

// TraceID returns the request's trace id, "" without tracing.
func (x *Exchange) TraceID() string {
	if x.span == nil || !x.span.SpanContext().HasTraceID() {
		return ""
	}
	return x.span.SpanContext().TraceID().String()
}

// refuse is the one place an error becomes a client reply, and the one
// place such errors are logged.
func (x *Exchange) refuse(ctx context.Context, err error) *Reply {
	var (
		status int
		rule   string
		pe     *goproxy.Error
		de     *denial
		be     *overBudget
		ue     *upstreamError
		ve     *verifyError
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
		x.logger().DebugContext(ctx, "request rejected", "status", status, "err", err)
	case errors.As(err, &de):
		x.decision = "deny"
		status, rule = http.StatusForbidden, de.rule
		x.logger().InfoContext(ctx, "request denied", "rule", de.rule, "reason", de.reason)
	case errors.As(err, &be):
		x.decision = "deny"
		status, rule = http.StatusTooManyRequests, "budget-"+be.which
		x.logger().InfoContext(ctx, "miss budget exhausted", "budget", be.which, "client", x.client.identity(), "module", x.req.Module)
	case errors.As(err, &ue):
		x.decision = "forward"
		status, rule = ue.clientStatus(), "upstream"
		x.logger().WarnContext(ctx, "upstream failed", "err", err, "path", x.target)
	case errors.As(err, &ve):
		x.decision = "forward"
		status, rule = http.StatusBadGateway, ve.rule()
		x.logger().ErrorContext(ctx, "verification failed: not cached, not served", "rule", rule, "err", err)
	default:
		status, rule = http.StatusInternalServerError, "internal"
		x.logger().ErrorContext(ctx, "internal error", "err", err)
	}
	x.rule = rule
	x.reason = err.Error()
	h := textHeader(x.cache)
	if status == http.StatusMethodNotAllowed {
		h.Set("Allow", "GET, HEAD")
	}
	return &Reply{Status: status, Header: h, Body: plainText(x.reason)}
}

// A verifyError is an artifact that failed its check, or could not be
// checked: 502, and never cached.
type verifyError struct {
	err error
}

func (e *verifyError) Error() string { return e.err.Error() }
func (e *verifyError) Unwrap() error { return e.err }

// result is the audit's verification value for e.
func (e *verifyError) result() string {
	var me *verify.MismatchError
	var ze *verify.InvalidZipError
	if errors.As(e.err, &me) || errors.As(e.err, &ze) {
		return "mismatch"
	}
	return "failed"
}

// rule is the audit's rule for e.
func (e *verifyError) rule() string {
	switch {
	case errors.Is(e.err, verify.ErrSecurity):
		return "sumdb-security"
	case e.result() == "mismatch":
		return "verify-mismatch"
	}
	return "verify-failed"
}

// A denial is a policy refusal: 403.
type denial struct {
	rule   string
	reason string
}

func (d *denial) Error() string { return "forbidden: " + d.reason }

// overBudget is a miss over the client's or the module's budget: 429.
type overBudget struct {
	which string // "client" or "module"
	retry int    // seconds
}

func (e *overBudget) Error() string {
	return fmt.Sprintf("too many cache misses from this %s; retry in %ds", e.which, e.retry)
}

// An upstreamError is an upstream that failed: a status other than 200,
// 404 or 410, no answer, or an answer over the limits.
type upstreamError struct {
	upstream string
	status   int   // the upstream's status, or 0
	err      error // what went wrong, if not a status
	timeout  bool
}

func (e *upstreamError) Error() string {
	name := "upstream"
	if e.upstream != "" {
		name += " " + e.upstream
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
