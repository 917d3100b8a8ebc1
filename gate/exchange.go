package gate

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/mod/module"

	"github.com/modgate/modgate/audit"
	"github.com/modgate/modgate/cache"
	"github.com/modgate/modgate/goproxy"
	"github.com/modgate/modgate/policy"
	"github.com/modgate/modgate/upstream"
)

// Client identifies who sent a request, as far as the front end could
// verify: the peer's address, a verified client certificate, an
// authenticated user, the original destination of a redirected
// connection.
type Client = audit.Client

// identity is c's name for budgets: the strongest identity known (an
// authenticated user first).
func identity(c Client) string {
	id := c.Addr.Addr().Unmap().String()
	switch {
	case c.User != "":
		id = "user:" + c.User
	case len(c.URISANs) > 0:
		id = c.URISANs[0]
	case c.Subject != "":
		id = c.Subject
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
	// Private marks a Hit whose Entry was made for this request alone (a
	// version list filtered for who asks): it is not the cache's entry, so
	// a front end must send it itself, never route the client to a
	// listener that serves the cache (the blob listener).
	Private bool
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
	p       *Processor
	start   time.Time
	id      string
	client  Client
	who     Identity     // who the authenticator says sent it
	vulns   []string     // IDs of the known vulnerabilities of the version asked for
	warning string       // a Warning header value for the answer (a vulnerability served)
	log     *slog.Logger // see logger

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
	origin   string // the repository host a private origin reported
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

// Warning returns the Warning header value the answer to this request
// carries (a known vulnerability served in warn mode), "" if none. A front
// end that passes an upstream's answer through (ext_proc) adds it.
func (x *Exchange) Warning() string { return x.warning }

// ID returns the request's id, unique per Exchange.
func (x *Exchange) ID() string { return x.id }

// A Request is what a front end knows of a request before anything is
// decided: the method, the raw target (the request-target as received, or
// Envoy's :path) and the client's headers, from which the authenticator
// reads credentials.
type Request struct {
	Method string
	Target string
	Header http.Header
}

// RequestHeaders authenticates the client, classifies the request,
// decides on it, and looks it up. On a miss it either leads a new fill
// (Forward) or, if one is in progress for the same key, waits for it as
// long as ctx lives.
func (x *Exchange) RequestHeaders(ctx context.Context, r Request) Decision {
	method, target := r.Method, r.Target
	x.method, x.target = method, target
	if x.p.tracing {
		ctx, x.span = x.p.tracer.Start(ctx, "modgate.request", trace.WithSpanKind(trace.SpanKindServer))
		if x.span.IsRecording() {
			x.span.SetAttributes(attribute.String("http.request.method", method), attribute.String("url.path", target))
		}
	} else {
		// No span, no context to allocate: only the trace id a client
		// sent (traceparent), for the audit event.
		x.span = trace.SpanFromContext(ctx)
	}
	// Who asks comes first: nothing of the request is looked at for a
	// client that must authenticate and has not.
	if a := x.p.auth; a != nil {
		who, err := a.Authenticate(ctx, r.Header, x.client)
		if err != nil {
			return x.reject(ctx, &authError{err: err})
		}
		x.who = who
		if who.Name != "" {
			x.client.User, x.client.Roles = who.Name, who.Groups
		}
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
	if rv := x.p.rules.Load().Decide(x.subject(), req.Module, req.Version, req.Kind); !rv.Allow {
		return x.reject(ctx, &denial{rule: rv.Rule, reason: rv.Reason})
	} else if rv.Rule != policy.RuleDefault && rv.Rule != "" {
		x.rule = rv.Rule // the rule that allowed it, for the audit
	}
	if vu := x.p.vulns; vu != nil && gatedVersion(req) {
		ids, deny, reason, warning := vu.Check(req.Module, req.Version)
		x.vulns, x.warning = ids, warning
		if deny {
			return x.reject(ctx, &denial{rule: "vulnerability", reason: reason})
		}
	}
	if cd := x.p.cooldown; cd != nil && gatedVersion(req) {
		if ok, rule, reason := cd.Admit(ctx, req.Module, req.Version, v.Route == policy.Private); !ok {
			return x.reject(ctx, &denial{rule: rule, reason: reason})
		}
	}
	x.route = v.Route
	if v.Route == policy.Local {
		// The only local answer: /sumdb/NAME/supported for an allowed NAME.
		x.decision = "serve"
		return Decision{Action: Serve, Reply: &Reply{Status: http.StatusOK, Header: textHeader(cacheBypass)}}
	}
	private := v.Route == policy.Private
	if private && !x.p.upstreams.Configured(true) {
		return x.reject(ctx, &denial{
			rule:   "private-no-upstream",
			reason: fmt.Sprintf("%s is a private module and no private upstream is configured", req.Module),
		})
	}
	x.class, _ = cache.ClassOf(req)
	key := req.Path()

	// The cache comes before the upstreams' health: what it holds is
	// served when every upstream is down, which is what it is for. Only a
	// miss needs an upstream.
	//
	// Normally one round; another only when a coalesced fill's entry is
	// gone before this request could open it.
	for range 3 {
		if d, ok := x.lookup(ctx, key); ok {
			return d
		}
		f, leader := x.p.flights.Join(key)
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
		lease, again := x.lead(ctx, f, key)
		if again {
			if ctx.Err() != nil {
				x.closeStale()
				return Decision{Action: Abort}
			}
			continue // another replica's fill ended: look again
		}
		x.decision, x.cache = "forward", cacheMiss
		candidates, err := x.candidates(private)
		if err != nil {
			// The requests waiting on this flight get the same answer,
			// each its own stale entry if it has one.
			res := FillResult{err: err}
			release(lease)
			f.Land(res)
			return x.failed(ctx, res)
		}
		if d, ok := x.charge(ctx); !ok {
			release(lease)
			f.Land(FillResult{retry: true})
			return d
		}
		fill := x.newFill(ctx, f, key, candidates)
		fill.lease = lease
		return Decision{Action: Forward, Fill: fill}
	}
	return x.reject(ctx, fmt.Errorf("cache entry for %s vanished three times while being filled", key))
}

// lead takes key's lease among the replicas for the fill that this
// request leads in its own process (flight f). It returns the lease to
// release when the fill lands, or nil if there are no leases, they are
// unreachable, or this request waited for another replica's fill as long
// as it may: then it fills alone, and the shared tier's conditional
// writes keep one commit. again is true if another replica's fill ended
// while this request waited: f is landed, and the requests waiting on it
// look in the cache again, as this one must.
func (x *Exchange) lead(ctx context.Context, f Flight, key string) (lease Lease, again bool) {
	if x.p.leases == nil {
		return nil, false
	}
	l, err := x.p.leases.Lead(ctx, key)
	if err != nil {
		x.logger().DebugContext(ctx, "fill coordination unavailable: this replica fills alone", "key", key, "err", err)
		return nil, false
	}
	if l.Held() {
		return l, false
	}
	wait := x.p.followTimeout
	if deadline, ok := ctx.Deadline(); ok {
		wait = min(wait, time.Until(deadline)/2)
	}
	wctx, cancel := context.WithTimeout(ctx, wait)
	err = l.Wait(wctx)
	cancel()
	if err != nil && ctx.Err() == nil {
		x.logger().InfoContext(ctx, "another replica's fill is taking too long: fetching it here too", "key", key, "waited", wait)
		return nil, false
	}
	f.Land(FillResult{retry: true})
	return nil, true
}

// release releases l, if any.
func release(l Lease) {
	if l != nil {
		l.Release()
	}
}

// candidates returns the upstreams a miss on the route may ask for the
// module (those whose patterns claim it, else those without patterns), or
// the upstream error that answers it when there are none: none configured
// (502), or all drained (503, never a 404).
func (x *Exchange) candidates(private bool) ([]*upstream.Upstream, error) {
	all := x.p.upstreams.Candidates(private)
	var c []*upstream.Upstream
	for _, u := range all {
		if upstream.Serves(u, x.req.Module, all) {
			c = append(c, u)
		}
	}
	switch {
	case len(c) > 0:
		return c, nil
	case len(all) > 0:
		// Upstreams are up, but their patterns give this module to none.
		return nil, &denial{rule: "private-no-upstream", reason: fmt.Sprintf("no %s upstream serves %s", x.route, x.req.Module)}
	}
	if !x.p.upstreams.Configured(private) {
		return nil, &upstreamError{err: fmt.Errorf("no %s upstream is configured", x.route)}
	}
	return nil, &upstreamError{status: http.StatusServiceUnavailable, err: fmt.Errorf("no healthy %s upstream: all are drained", x.route)}
}

// lookup serves key from the cache if it holds a fresh entry. A stale one
// is kept for stale-if-error.
func (x *Exchange) lookup(ctx context.Context, key string) (Decision, bool) {
	var span trace.Span
	if x.p.tracing {
		_, span = x.p.tracer.Start(ctx, "modgate.cache.lookup")
	}
	e, err := x.p.cache.Get(ctx, key)
	if span != nil {
		span.SetAttributes(attribute.Bool("modgate.cache.found", err == nil))
		span.End()
	}
	if err != nil {
		if errors.Is(err, cache.ErrUnavailable) {
			// The shared tier may hold it: fetching it now could not be
			// committed, and "not found" would be a guess.
			x.cache = cacheMiss
			return x.reject(ctx, err), true
		}
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
	ok, which, retry := x.p.budget.Charge(identity(x.client), module)
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
	x.upstream, x.origin, x.verified = res.upstream, res.origin, res.verification
	if res.entry == nil {
		x.cache = cacheCoalesced // it waited for a fill that failed
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
	x.upstream, x.origin, x.verified = res.upstream, res.origin, res.verification
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

// Passed records that the upstream's answer to the fill this request led
// went to the client as it was, with nothing stored (a HEAD, in mesh
// mode): res names the upstream the audit credits.
func (x *Exchange) Passed(ctx context.Context, res FillResult) {
	x.upstream, x.origin = res.upstream, res.origin
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

// subject is who asks, for the policy rules.
func (x *Exchange) subject() policy.Subject {
	return policy.Subject{Name: x.who.Name, Groups: x.who.Groups}
}

// filtered answers a version list or @latest for who asks: the versions
// the rules deny it are left out, and an @latest naming one is answered
// with the highest allowed version of the cached list, or refused. ok is
// false when the entry needs no change. The answer is made for this
// request alone (Decision.Private).
func (x *Exchange) filtered(ctx context.Context, e *cache.Entry) (Decision, bool) {
	rules := x.p.rules.Load()
	if rules.AllowsAll() {
		rules = nil // nothing to filter: no need to read the list for it
	}
	if (rules == nil && x.p.cooldown == nil && x.p.vulns == nil) || e.Status != http.StatusOK || (x.req.Kind != goproxy.KindList && x.req.Kind != goproxy.KindLatest) {
		return Decision{}, false
	}
	body := e.Bytes()
	if body == nil {
		var err error
		if body, err = io.ReadAll(io.LimitReader(e.Reader(), MaxListBytes+1)); err != nil {
			return x.reject(ctx, fmt.Errorf("reading cached %s: %w", e.Key, err)), true
		}
	}
	who := x.subject()
	var out []byte
	switch x.req.Kind {
	case goproxy.KindList:
		versions := listVersions(body)
		allowed := x.allowed(ctx, rules, who, versions)
		if len(allowed) == len(versions) {
			return Decision{}, false
		}
		for _, v := range allowed {
			out = append(out, v+"\n"...)
		}
	case goproxy.KindLatest:
		var info struct{ Version string }
		if json.Unmarshal(body, &info) != nil {
			return Decision{}, false // checked when it was stored; served as it is
		}
		rv := rules.Decide(who, x.req.Module, info.Version, goproxy.KindZip)
		if rv.Allow && x.p.vulns != nil {
			if _, deny, reason, _ := x.p.vulns.Check(x.req.Module, info.Version); deny {
				rv = policy.RuleVerdict{Rule: "vulnerability", Reason: reason}
			}
		}
		if rv.Allow && x.p.cooldown != nil {
			if ok, rule, reason := x.p.cooldown.Admit(ctx, x.req.Module, info.Version, x.route == policy.Private); !ok {
				rv = policy.RuleVerdict{Rule: rule, Reason: reason}
			}
		}
		if rv.Allow {
			return Decision{}, false
		}
		latest, ok := x.latestFromList(ctx, rules, who)
		if !ok {
			e.Close()
			return x.reject(ctx, &denial{rule: rv.Rule, reason: rv.Reason}), true
		}
		out, _ = json.Marshal(struct{ Version string }{latest})
	}
	d := Decision{Action: Hit, Status: http.StatusOK, Header: x.entryHeader(e), Private: true}
	d.Header.Set("Cache-Control", "private, no-store") // per identity
	meta := e.Meta
	meta.Size = int64(len(out))
	d.Entry = cache.NewMemoryEntry(meta, out)
	d.Header.Set("Etag", d.Entry.ETag())
	e.Close()
	return d, true
}

// latestFromList is the highest version of the module's cached list that
// who may fetch.
func (x *Exchange) latestFromList(ctx context.Context, rules *policy.Rules, who policy.Subject) (string, bool) {
	list := goproxy.Request{Kind: goproxy.KindList, Module: x.req.Module}
	e, err := x.p.cache.Get(ctx, list.Path())
	if err != nil {
		return "", false
	}
	defer e.Close()
	body, err := io.ReadAll(io.LimitReader(e.Reader(), MaxListBytes+1))
	if err != nil || e.Status != http.StatusOK {
		return "", false
	}
	return rules.Latest(who, x.req.Module, x.allowed(ctx, rules, who, listVersions(body)))
}

// allowed returns the versions who may fetch, in their order: those the
// rules allow, less those with known vulnerabilities refused, less those
// the cooldown holds back. Each gate decides how far down a list it
// looks.
func (x *Exchange) allowed(ctx context.Context, rules *policy.Rules, who policy.Subject, versions []string) []string {
	if rules != nil {
		versions = rules.Filter(who, x.req.Module, versions)
	}
	if vu := x.p.vulns; vu != nil {
		versions = vu.Filter(x.req.Module, versions)
	}
	if cd := x.p.cooldown; cd != nil {
		versions = cd.Filter(ctx, x.req.Module, versions, x.route == policy.Private)
	}
	return versions
}

// gatedVersion reports whether req fetches a particular version's code,
// which the cooldown holds back: a .zip, or the .info of a canonical
// version. A .mod stays servable, as for the rules: the go command reads
// the go.mod files of versions it never builds.
func gatedVersion(req goproxy.Request) bool {
	switch req.Kind {
	case goproxy.KindZip:
		return true
	case goproxy.KindInfo:
		return module.CanonicalVersion(req.Version) == req.Version && req.Version != ""
	}
	return false
}

// listVersions returns the versions of a @v/list body: the first field of
// each line.
func listVersions(body []byte) []string {
	var versions []string
	for line := range strings.SplitSeq(string(body), "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			versions = append(versions, f[0])
		}
	}
	return versions
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
		if x.route == policy.Private && x.p.refusePrivNotFound {
			e.Close()
			return x.reject(ctx, &denial{
				rule:   "private-not-found",
				reason: fmt.Sprintf("%s: not found at the private upstreams (refused rather than 404, so clients do not ask other proxies: private_not_found is refuse)", x.req.Module),
			})
		}
		if x.reason == "" {
			x.reason = http.StatusText(e.Status) + " upstream"
		}
	}
	if d, ok := x.filtered(ctx, e); ok {
		return d
	}
	h := x.entryHeader(e)
	if x.warning != "" {
		h.Set("Warning", x.warning)
	}
	return Decision{Action: Hit, Entry: e, Status: e.Status, Header: h}
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
// if it completed). It records the one audit event of the request, which
// may wait for room in the audit queue; calls after the first do nothing.
func (x *Exchange) Done(ctx context.Context, status int, n int64, err error) {
	if x.done {
		return
	}
	x.done = true
	x.closeStale()
	end := x.p.now()
	reason := x.reason
	if err != nil {
		reason = err.Error()
		x.logger().WarnContext(ctx, "response cut short", "status", status, "bytes", n, "err", err)
	}
	if x.decision == "" {
		x.decision = "abort" // the client left before a decision
	}
	md := audit.ModgateGroup{
		Decision:     x.decision,
		Rule:         x.rule,
		Upstream:     x.upstream,
		OriginHost:   x.origin,
		Cache:        x.cache,
		Verification: x.verified,
		TraceID:      x.TraceID(),
	}
	if x.parsed {
		md.Kind, md.Module, md.Version, md.SumDB = x.req.Kind.String(), x.req.Module, x.req.Version, x.req.SumDB
	}
	e := audit.NewRequest(audit.Request{
		Start: x.start, Duration: end.Sub(x.start),
		ID: x.id, Method: x.method, Target: x.target,
		Status: status, Bytes: n, Failed: err != nil, Reason: reason,
		Client: x.client, Modgate: md, Vulnerabilities: x.vulns,
	})
	if err := x.p.audit.Record(e); err != nil {
		x.logger().ErrorContext(ctx, "audit event not recorded", "err", err)
	}
	if x.p.observer != nil {
		x.p.observer.Request(md.Kind, status, x.cache, end.Sub(x.start))
	}
	x.endSpan(status, md, e.Event.Outcome == audit.OutcomeFailure, reason)
}

// endSpan ends the request's span with what Done knows.
func (x *Exchange) endSpan(status int, md audit.ModgateGroup, failed bool, reason string) {
	if x.span == nil || !x.p.tracing {
		return // not a span this request started
	}
	if x.span.IsRecording() {
		x.span.SetAttributes(
			attribute.Int("http.response.status_code", status),
			attribute.String("modgate.kind", md.Kind),
			attribute.String("modgate.module", md.Module),
			attribute.String("modgate.version", md.Version),
			attribute.String("modgate.cache", md.Cache),
			attribute.String("modgate.decision", md.Decision),
		)
		if failed {
			x.span.SetStatus(codes.Error, reason)
		}
	}
	x.span.End()
}

// TraceID returns the request's trace id, "" without tracing.
func (x *Exchange) TraceID() string {
	if x.span == nil || !x.span.SpanContext().HasTraceID() {
		return ""
	}
	return x.span.SpanContext().TraceID().String()
}

func newID() string {
	var b [8]byte
	rand.Read(b[:]) // never fails (crypto/rand)
	return hex.EncodeToString(b[:])
}
