// Package gate is modgate's request processor: the steps every request
// goes through, whichever front end received it. It knows no transport:
// the standalone HTTP front end (package gateway) and the ext_proc gRPC
// server that Envoy streams to (package extproc) are two equal front ends
// over it, and the one behaviour table (package gate/gatetest) runs
// through both.
//
// A front end opens one Exchange per request and drives it through
// phases that mirror Envoy's ext_proc messages:
//
//	x := p.Begin(client)
//	d := x.RequestHeaders(ctx, Request{…})       // authenticate, classify, decide, look up
//	if d.Action == Forward {                     // a miss this request leads
//	    f := d.Fill
//	    // Standalone: the front end asks f.Candidates() in order.
//	    // Mesh: Envoy's router chose the upstream; f.Via narrows the
//	    // fill to it, so it has exactly one candidate.
//	    r := f.UpstreamResponse(ctx, i, status, header) // or f.UpstreamFailed(ctx, i, err)
//	    //   Next: try candidate i+1; Fail: stop; Store: feed the body to
//	    //   f.ResponseBody, chunk by chunk
//	    res := f.Finish(ctx, err)                // verify, store, wake coalesced requests
//	    d = x.Filled(ctx, res)                   // or f.Abandon(ctx, err) if the leader's
//	}                                            // stream ended mid-fill
//	// Reject or Serve: write d.Reply.  Hit: serve d.Entry with d.Status and
//	// d.Header, then close it.  Abort: the client is gone, write nothing.
//	x.Done(ctx, status, bytes, err)              // exactly one audit event
//
// The processor owns every decision: status codes, which upstream may see
// a path, which upstream answers count as "not found" and which as an
// outage, what is cached and for how long, what headers reach the client
// and the upstream, and how large a body may be. Front ends only move
// bytes. Errors become client replies in one place (Exchange.refuse),
// which is also the one place they are logged.
//
// Status semantics: grammar rejects are 400/404/405; policy denials are 403
// (never 404 or 410, which make the go command fall back to the next proxy
// in its list); an exhausted miss budget is 429 with Retry-After; an
// upstream outage is 502, or 504 for a timeout, never 404; an upstream
// 404/410 reaches the client only for a public path, and only when no
// candidate upstream failed. Every error body is plain text of at most 8
// lines.
//
// Caching: concurrent misses for one key share one Fill through the
// Coalescer (the others wait in RequestHeaders, each as long as its own
// context lives); 404/410 answers are cached as negative entries; when a
// fill fails and a stale Query entry exists, the stale entry is served
// with a Warning header.
//
// A Processor is safe for concurrent use. An Exchange or a Fill belongs to
// one request and is used by one goroutine at a time.
package gate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

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

// DefaultFollowTimeout is Options.FollowTimeout's default.
const DefaultFollowTimeout = 60 * time.Second

// UpstreamHeader is every header a request to an upstream carries, in
// both modes: nothing of the client's (no credentials, cookies, or
// identity), only modgate's own. The path is the canonical one
// (Fill.Path). Front ends must send exactly these; the ext_proc server
// removes every other header Envoy would forward. Callers must not modify
// it.
var UpstreamHeader = http.Header{"User-Agent": {"modgate"}}

// An Identity is who sent a request, as the authenticator established
// it: a token's name and groups, a verified certificate's SPIFFE ID or
// subject (mapped to groups), the identity Envoy vouched for; the zero
// Identity is anonymous.
type Identity struct {
	Name   string
	Groups []string
	Method string // how it was established: "token", "mtls", "mesh"; "" anonymous
}

// Authenticator establishes who sent a request from its headers and the
// connection's verified peer (either front end passes only what it
// verified). An error wrapping ErrUnauthenticated is answered 401 with a
// Basic challenge, so the go command's netrc and GOAUTH flows work; an
// error with a RetryAfter() time.Duration method (too many failures from
// one source) is answered 429. It must not return the credential in an
// error. It must be safe for concurrent use.
type Authenticator interface {
	Authenticate(ctx context.Context, h http.Header, peer Client) (Identity, error)
}

// Cooldown holds back versions whose age is not proven to be at least a
// minimum (package cooldown). Admit reports whether path@version may be
// fetched; if not, rule and reason say why, in words for the developer
// (when it becomes available, or why its age cannot be proven). It may
// consult the checksum database and must be safe for concurrent use.
// Filter returns, in their order, the versions of path's list without
// those it holds back: it may check only the newest (the ones the go
// command picks for @latest and upgrades), leaving older ones to be
// refused when fetched.
type Cooldown interface {
	Admit(ctx context.Context, path, version string, private bool) (ok bool, rule, reason string)
	Filter(ctx context.Context, path string, versions []string, private bool) []string
}

// Vulnerabilities gates versions with known vulnerabilities (package
// vulndb). Check returns the IDs of path@version's known vulnerabilities,
// which the audit records whatever is decided, and whether to refuse it
// (reason, for the developer) or serve it with a Warning header value. It
// must not block on the network and must be safe for concurrent use.
// Filter returns, in their order, the versions of path's list that Check
// would not refuse.
type Vulnerabilities interface {
	Check(path, version string) (ids []string, deny bool, reason, warning string)
	Filter(path string, versions []string) []string
}

// ErrUnauthenticated is an Authenticator's error for a request without
// valid credentials where they are needed, or with wrong ones.
var ErrUnauthenticated = errors.New("authentication required")

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
// time), true for one that answered. Names it does not know are ignored.
type Health interface {
	Report(upstream string, ok bool)
}

// Cache stores responses. Get returns an error wrapping fs.ErrNotExist
// (cache.ErrNotCached) when key has no servable entry, and any other error
// for a failure to read; the caller closes a returned Entry. Get lives as
// long as ctx. A Writer's bytes are servable only after its Commit.
type Cache interface {
	Get(ctx context.Context, key string) (*cache.Entry, error)
	NewWriter(key string, class cache.Class, status int, contentType string) *cache.Writer
	NewBlobWriter(key string, class cache.Class, contentType string) *cache.Writer
}

// Coalescer lets concurrent misses of one key share one fill: Join
// returns the key's flight in progress, or a new one that the caller
// leads (leader true). The leader must Land its flight exactly once,
// whatever happens; the others Wait for it as long as their own context
// lives. It must be safe for concurrent use. The default is in-process
// (cache.Flights); a shared one coordinates replicas.
type Coalescer interface {
	Join(key string) (f Flight, leader bool)
}

// A Flight is one fill in progress, as seen by its leader and followers.
type Flight interface {
	// Wait returns the result the leader landed, or ctx's error.
	Wait(ctx context.Context) (FillResult, error)
	// Land ends the flight with res and wakes the followers. Only the
	// leader calls it, once.
	Land(res FillResult)
}

// Leases coordinate fills across replicas that share a cache tier
// (package coord): only the replica that holds a key's lease fetches it,
// and the others wait for it to commit to the shared tier, then read it
// from there. Correctness never depends on a lease (the shared tier's
// conditional writes decide what is stored), so a Lead error, such as
// coordination being unreachable, lets the fill go ahead coalesced only
// within this replica. It must be safe for concurrent use.
type Leases interface {
	// Lead takes key's lease for a fill by this replica, or returns the
	// lease another replica holds. A held lease is kept alive (renewed)
	// until Release. Lead must not block for long: it bounds its own
	// round trips.
	Lead(ctx context.Context, key string) (Lease, error)
}

// A Lease is a replica's claim on one key's fill.
type Lease interface {
	// Held reports whether this replica holds the lease, and so leads.
	Held() bool
	// Wait, for a lease another replica holds, blocks until that lease
	// ends (released by its holder after its fill, or lapsed because its
	// holder stopped renewing it) and returns nil, or until ctx ends and
	// returns its error. For a held lease it returns nil at once.
	Wait(ctx context.Context) error
	// Release ends a held lease; it does nothing for one not held. It
	// may be called more than once.
	Release()
}

// Verifier checks a fetched go.mod or zip of path at version before it is
// stored: against a checksum database, or, for a private module, the
// ledger. The result is what the audit event records; an error means the
// artifact must not be cached or served.
//
// Answer checks a checksum database's answer fetched for a client (path
// is the database's: /latest, /lookup/…, /tile/…): true means it is
// proven and may be cached; false with no error, that it cannot be proven
// now, so it is served but not kept; an error, that it is wrong.
type Verifier interface {
	Mod(ctx context.Context, path, version string, data []byte, private bool) (verify.Result, error)
	Zip(ctx context.Context, path, version, file string, private bool) (verify.Result, error)
	Answer(ctx context.Context, name, path string, data []byte) (bool, error)
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
	// Coalescer shares one fill among concurrent misses of a key.
	// Default: in-process.
	Coalescer Coalescer
	// Leases coordinate fills with other replicas that share the cache.
	// Default: none, fills are coalesced within this process only.
	Leases Leases
	// FollowTimeout bounds how long a miss waits for another replica's
	// fill of the same key before it fetches the key itself (a follower
	// never fails for want of the lease). It is at most half of what is
	// left of the request's own deadline, if it has one. Default 60s.
	FollowTimeout time.Duration
	// Verifier checks .mod and .zip bodies before they are stored.
	Verifier Verifier
	// Authenticator establishes who sent each request. Default: none,
	// every request anonymous (identified by address and certificate).
	Authenticator Authenticator
	// Rules decide which module versions each identity may fetch, and
	// filter the version lists it is answered with. Default: none, every
	// version of every allowed module.
	Rules *policy.Rules
	// Cooldown holds back the code of versions too new or of unproven
	// age, and leaves them out of version lists. Default: none.
	Cooldown Cooldown
	// Vulnerabilities refuses, or warns about, versions with known
	// vulnerabilities, and leaves refused ones out of version lists.
	// Default: none.
	Vulnerabilities Vulnerabilities
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
	// RefusePrivateNotFound turns a private upstream's 404/410 into a 403.
	// Default false: "not found" reaches the client as such, which the go
	// command needs to probe module path prefixes (go get of a package
	// inside a private module asks for every prefix of its path, and any
	// answer but 404/410 aborts the query). Set it only for clients whose
	// GOPROXY lists other proxies after modgate, which a 404 would send
	// the private path to; it breaks go get of private package paths.
	RefusePrivateNotFound bool
	// Logger receives operational logs. Default slog.Default().
	Logger *slog.Logger
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// A Processor runs the per-request steps. Create it with New.
type Processor struct {
	policy             *policy.Policy
	upstreams          Upstreams
	cache              Cache
	flights            Coalescer
	leases             Leases
	followTimeout      time.Duration
	auth               Authenticator
	cooldown           Cooldown
	vulns              Vulnerabilities
	rules              atomic.Pointer[policy.Rules]
	verifier           Verifier
	budget             Budget
	health             Health
	observer           Observer
	tracer             trace.Tracer
	tracing            bool // a Tracer was given: spans are worth starting
	audit              Auditor
	maxTarget          int
	refusePrivNotFound bool
	log                *slog.Logger
	now                func() time.Time
}

// New checks opts and returns a Processor.
func New(opts Options) (*Processor, error) {
	switch {
	case opts.Upstreams == nil:
		return nil, errors.New("gate: Upstreams is required")
	case opts.Cache == nil:
		return nil, errors.New("gate: Cache is required")
	case opts.Verifier == nil:
		return nil, errors.New("gate: Verifier is required")
	case opts.Audit == nil:
		return nil, errors.New("gate: Audit is required")
	case opts.MaxTarget < 0:
		return nil, fmt.Errorf("gate: MaxTarget %d is negative", opts.MaxTarget)
	}
	p := &Processor{
		policy:             opts.Policy,
		upstreams:          opts.Upstreams,
		cache:              opts.Cache,
		flights:            opts.Coalescer,
		leases:             opts.Leases,
		followTimeout:      opts.FollowTimeout,
		auth:               opts.Authenticator,
		cooldown:           opts.Cooldown,
		vulns:              opts.Vulnerabilities,
		verifier:           opts.Verifier,
		budget:             opts.Budget,
		health:             opts.Health,
		observer:           opts.Observer,
		tracer:             opts.Tracer,
		tracing:            opts.Tracer != nil,
		audit:              opts.Audit,
		maxTarget:          opts.MaxTarget,
		refusePrivNotFound: opts.RefusePrivateNotFound,
		log:                opts.Logger,
		now:                opts.Now,
	}
	if p.policy == nil {
		var err error
		if p.policy, err = policy.New(policy.Config{}); err != nil {
			return nil, err
		}
	}
	p.rules.Store(opts.Rules)
	if p.followTimeout <= 0 {
		p.followTimeout = DefaultFollowTimeout
	}
	if p.flights == nil {
		p.flights = new(localFlights)
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

// SetRules replaces the policy rules, atomically: requests already past
// their decision keep the rules they were decided by.
func (p *Processor) SetRules(r *policy.Rules) { p.rules.Store(r) }

// Logger returns the processor's logger, for front ends that log beside it.
func (p *Processor) Logger() *slog.Logger { return p.log }

// localFlights is the in-process Coalescer.
type localFlights struct {
	g cache.Flights[FillResult]
}

func (l *localFlights) Join(key string) (Flight, bool) {
	f, leader := l.g.Start(key)
	return f, leader
}
