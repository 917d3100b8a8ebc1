package gate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/mod/module"

	"github.com/modgate/modgate/cache"
	"github.com/modgate/modgate/goproxy"
	"github.com/modgate/modgate/policy"
	"github.com/modgate/modgate/upstream"
	"github.com/modgate/modgate/verify"
)

// A Fill fetches one missed key from the candidate upstreams, checks and
// stores what they answer, and hands the result to every request that
// waited for it. The front end drives it (see the package comment) on a
// context of the fill's own, with its own timeout: the requests waiting
// for it cannot cancel it.
type Fill struct {
	p          *Processor
	flight     Flight
	lease      Lease // among replicas, if any: released when the fill lands
	req        goproxy.Request
	route      policy.Route
	key        string
	class      cache.Class
	candidates []*upstream.Upstream
	log        *slog.Logger

	failure  error  // the last upstream failure
	upstream string // the upstream that answered, or last failed
	origin   string // the repository host a private origin reported
	w        *cache.Writer
	limit    int64
	status   int    // being stored: 200, or 404/410
	excerpt  []byte // of a 404/410 body, or of the last failure's
	quote    bool   // the excerpt is of the last failure, to quote it
	landed   bool
	result   FillResult
	mark     time.Time // when the current upstream was asked
	span     trace.Span
}

// FillResult is what a Fill leaves for the requests that waited for it.
type FillResult struct {
	entry        *cache.Entry // closed: Reopen it to serve; nil if nothing was stored
	err          error        // why nothing was stored
	upstream     string
	origin       string // see Fill.origin
	verification string // how the artifact was checked; see audit.ModgateGroup
	retry        bool   // the fill never started (its leader was refused): look again
}

// Response is the answer to an upstream's response headers, or failure.
type Response struct {
	Action  Action // Store, Next or Fail
	Limit   int64  // Store: the most body bytes accepted
	Excerpt bool   // Store: read at most Limit bytes; more is not an error
}

func (x *Exchange) newFill(ctx context.Context, f Flight, key string, candidates []*upstream.Upstream) *Fill {
	_, span := x.p.tracer.Start(ctx, "modgate.upstream.fetch", trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("url.path", key)))
	return &Fill{
		span:       span,
		p:          x.p,
		flight:     f,
		req:        x.req,
		route:      x.route,
		key:        key,
		class:      x.class,
		candidates: candidates,
		log:        x.logger().With("fill", key),
		mark:       x.p.now(),
	}
}

// observe reports how long the current upstream took to answer, and
// starts the clock for the next one.
func (f *Fill) observe(upstream, outcome string) {
	now := f.p.now()
	if f.p.observer != nil {
		f.p.observer.UpstreamFetch(upstream, outcome, now.Sub(f.mark))
	}
	f.mark = now
}

// Candidates returns the upstreams to try, in order.
func (f *Fill) Candidates() []*upstream.Upstream { return f.candidates }

// Via narrows the fill to the one upstream that a front end's own router
// chose (Envoy's, in mesh mode), before its response is handed over:
// addr is the host:port Envoy connected to (the upstream.address
// attribute) and cluster the cluster's name (xds.cluster_name); either
// may be "". The fill then has exactly one candidate, so a 404 from it is
// the answer, never a reason to try another that nobody will ask.
//
// The candidate is the route's upstream whose URL names addr. If none
// does (a DNS-named upstream, which Envoy reaches by a resolved address),
// and the route has one upstream, it is that one. Otherwise it is an
// upstream named for what Envoy reported, which no health registry
// knows: modgate does not guess which upstream answered.
func (f *Fill) Via(addr, cluster string) *upstream.Upstream {
	var u *upstream.Upstream
	for _, c := range f.candidates {
		if addr != "" && c.Address() == addr {
			u = c
			break
		}
	}
	if u == nil && len(f.candidates) == 1 {
		u = f.candidates[0]
	}
	if u == nil {
		name := cluster
		if name == "" {
			name = "envoy"
		}
		if addr != "" {
			name += "@" + addr
		}
		u = &upstream.Upstream{Name: name, Private: f.route == policy.Private}
	}
	f.candidates = []*upstream.Upstream{u}
	return u
}

// Private reports whether the fill is for a private module, whose
// candidates are the private upstreams.
func (f *Fill) Private() bool { return f.route == policy.Private }

// Path returns the canonical path to GET from each candidate.
func (f *Fill) Path() string { return f.key }

// UpstreamResponse decides what to do with the response headers that
// candidate i answered with.
func (f *Fill) UpstreamResponse(ctx context.Context, i int, status int, h http.Header) Response {
	u := f.candidates[i]
	f.upstream = u.Name
	if u.Private {
		f.origin = originHost(h.Get(OriginHostHeader))
	}
	last := i == len(f.candidates)-1
	switch {
	case status == http.StatusOK:
		f.observe(u.Name, "ok")
		f.report(u.Name, true)
		limit := f.bodyLimit()
		if n := contentLength(h); n > limit {
			return f.fail(ctx, last, &upstreamError{upstream: u.Name, err: fmt.Errorf("announced %d bytes for a %s, over the %d-byte limit", n, f.req.Kind, limit)})
		}
		f.status, f.limit = status, limit
		if ct := contentType(h, f.req.Kind); f.req.Kind == goproxy.KindZip {
			f.w = f.p.cache.NewBlobWriter(f.key, f.class, ct)
		} else {
			f.w = f.p.cache.NewWriter(f.key, f.class, status, ct)
		}
		return Response{Action: Store, Limit: limit}

	case status == http.StatusNotFound || status == http.StatusGone:
		f.observe(u.Name, "not_found")
		f.report(u.Name, true)
		if !last {
			return Response{Action: Next}
		}
		if f.failure != nil {
			// Some candidate failed: it might have had the module, so this is
			// an outage, not "not found" (invariant 4).
			return Response{Action: Fail}
		}
		f.status, f.limit = status, MaxExcerptBytes
		return Response{Action: Store, Limit: MaxExcerptBytes, Excerpt: true}
	}
	f.observe(u.Name, "error")
	// Any answer below 500 is alive, as for the prober: the upstream
	// refused (403) or throttled (429) this request, it is not down.
	f.report(u.Name, status < 500)
	ue := &upstreamError{upstream: u.Name, status: status}
	if !last {
		return f.fail(ctx, last, ue)
	}
	// The last answer: read the start of its body to quote the upstream's
	// words to the client (a VCS origin says why the Git host refused).
	f.failure, f.quote = ue, true
	f.limit = MaxExcerptBytes
	return Response{Action: Store, Limit: MaxExcerptBytes, Excerpt: true}
}

// OriginHostHeader is the response header in which a private origin (the
// VCS origin) names the repository host it fetched from; the audit
// records it (modgate.origin_host). Only private upstreams' are read.
const OriginHostHeader = "X-Modgate-VCS-Host"

// originHost returns h if it is a plain host or host:port, else "": no
// credentials, no spaces, nothing long.
func originHost(h string) string {
	if h == "" || len(h) > 255 || strings.ContainsAny(h, "@/ ") {
		return ""
	}
	for i := 0; i < len(h); i++ {
		if h[i] <= 0x20 || h[i] >= 0x7f {
			return ""
		}
	}
	return h
}

// report passes a passive health signal on, if anyone listens.
func (f *Fill) report(name string, ok bool) {
	if f.p.health != nil {
		f.p.health.Report(name, ok)
	}
}

// UpstreamFailed decides what to do when candidate i could not be asked:
// no connection, a TLS failure, no response headers in time.
func (f *Fill) UpstreamFailed(ctx context.Context, i int, err error) Response {
	u := f.candidates[i]
	f.upstream = u.Name
	f.observe(u.Name, "error")
	if ctx.Err() == nil { // not our own fill's deadline
		f.report(u.Name, false)
	}
	return f.fail(ctx, i == len(f.candidates)-1, &upstreamError{upstream: u.Name, err: err, timeout: upstream.IsTimeout(err)})
}

func (f *Fill) fail(ctx context.Context, last bool, err error) Response {
	f.failure = err
	if last {
		return Response{Action: Fail}
	}
	f.log.WarnContext(ctx, "upstream failed; trying the next", "err", err)
	return Response{Action: Next}
}

// errOverLimit is a body longer than its limit.
var errOverLimit = errors.New("body over the limit")

// ResponseBody takes the next chunk of the body being stored. An error
// means the body is refused: stop reading and Finish with it.
// Writing may block on the cache's storage; ctx is for implementations
// that honour it.
func (f *Fill) ResponseBody(ctx context.Context, chunk []byte) error {
	if f.w == nil {
		if f.status == 0 && !f.quote {
			return errors.New("gate: body without a Store decision")
		}
		room := int(f.limit) - len(f.excerpt)
		f.excerpt = append(f.excerpt, chunk[:min(len(chunk), max(room, 0))]...)
		return nil
	}
	if f.w.Size()+int64(len(chunk)) > f.limit {
		return fmt.Errorf("%w of %d bytes for a %s", errOverLimit, f.limit, f.req.Kind)
	}
	if _, err := f.w.Write(chunk); err != nil {
		return f.storageFailed(err)
	}
	return nil
}

// storageFailed wraps a failure to store the body: this gateway's own
// storage, not the upstream, failed. The shared tier's unavailability is
// left as it is (503 store-unavailable).
func (f *Fill) storageFailed(err error) error {
	if storeUnavailable(err) {
		return fmt.Errorf("storing %s: %w", f.key, err)
	}
	return &storageError{key: f.key, err: err}
}

// Finish ends the fill: with bodyErr nil, it stores what was received
// (Store) or records the failure (Fail); with bodyErr set, the body could
// not be read whole, so nothing is stored. It wakes the waiting requests
// and returns the result for the leading one. Calls after the first return
// the same result.
func (f *Fill) Finish(ctx context.Context, bodyErr error) FillResult {
	if f.landed {
		return f.result
	}
	res := FillResult{upstream: f.upstream, origin: f.origin}
	var se *storageError
	switch {
	case errors.As(bodyErr, &se):
		f.abortWriter()
		res.err = se
	case bodyErr != nil:
		f.abortWriter()
		res.err = &upstreamError{upstream: f.upstream, err: bodyErr}
	case f.w != nil:
		_, vspan := f.p.tracer.Start(trace.ContextWithSpan(ctx, f.span), "modgate.verify")
		result, keep, err := f.verify(ctx)
		vspan.SetAttributes(attribute.String("modgate.verification", string(result)))
		if err != nil {
			vspan.SetStatus(codes.Error, err.Error())
		}
		vspan.End()
		res.verification = string(result)
		if err != nil {
			f.abortWriter()
			ve := &verifyError{err: err}
			res.err, res.verification = ve, ve.result()
		}
		if f.p.observer != nil && res.verification != "" {
			f.p.observer.Verification(res.verification)
		}
		if err != nil {
			break
		}
		if !keep {
			if res.entry, err = f.serveUnkept(); err != nil {
				res.err = err
			}
			break
		}
		e, err := f.w.Commit(ctx)
		if err != nil {
			res.err = f.storageFailed(err)
			break
		}
		e.Close()
		res.entry = e
	case f.status != 0:
		res.entry = f.storeNegative(ctx)
	case f.quote:
		ue := *f.failure.(*upstreamError)
		if lines := splitLines(string(f.excerpt)); len(lines) > 0 {
			ue.detail = lines[0]
		}
		res.err = &ue
	case f.failure != nil:
		res.err = f.failure
	default:
		res.err = errors.New("gate: fill finished without an upstream answer")
	}
	f.landed, f.result = true, res
	f.span.SetAttributes(attribute.String("modgate.upstream", res.upstream))
	if res.err != nil {
		f.span.SetStatus(codes.Error, res.err.Error())
	}
	f.span.End()
	release(f.lease) // after the commit: other replicas look in the store
	f.flight.Land(res)
	return res
}

// Abandon ends a fill whose leader can no longer feed it: the front end's
// stream ended before the body was whole (Envoy reset it, or the client
// left), or the answer has no body (a HEAD). Nothing is stored, and the requests waiting for the fill look
// again, so one of them leads a fresh fill; no key stays wedged. It
// returns the fill's result; calls after Finish or Abandon return the
// result they landed.
func (f *Fill) Abandon(ctx context.Context, err error) FillResult {
	if f.landed {
		return f.result
	}
	f.abortWriter()
	f.landed = true
	f.result = FillResult{upstream: f.upstream, origin: f.origin, err: &upstreamError{upstream: f.upstream, err: err}, retry: true}
	f.log.InfoContext(ctx, "fill abandoned: nothing stored", "err", err)
	f.span.SetStatus(codes.Error, "abandoned: "+err.Error())
	f.span.End()
	release(f.lease)
	f.flight.Land(f.result)
	return f.result
}

// verify checks the body about to be stored: a go.mod or zip against the
// checksum database or the ledger, an .info for the version asked, a
// checksum database answer against the database's key and log. keep is
// false for a body that may be served but not stored: a database answer
// that cannot be proven now (the audit records no verification for
// database answers, which are not artifacts; only their failures).
func (f *Fill) verify(ctx context.Context) (result verify.Result, keep bool, err error) {
	private := f.route == policy.Private
	if f.req.Kind == goproxy.KindZip {
		_, file := f.w.Body()
		result, err = f.p.verifier.Zip(ctx, f.req.Module, f.req.Version, file, private)
		return result, true, err
	}
	data, err := f.body()
	if err != nil {
		return "", false, err
	}
	switch f.req.Kind {
	case goproxy.KindMod:
		result, err = f.p.verifier.Mod(ctx, f.req.Module, f.req.Version, data, private)
	case goproxy.KindInfo, goproxy.KindLatest:
		err = checkInfo(f.req, data)
	case goproxy.KindSumDBLatest, goproxy.KindSumDBLookup, goproxy.KindSumDBTile:
		keep, err = f.p.verifier.Answer(ctx, f.req.SumDB, strings.TrimPrefix(f.key, "/sumdb/"+f.req.SumDB), data)
		return "", keep, err
	}
	return result, true, err
}

// serveUnkept ends a fill whose body may be served but not kept: an
// answer of the checksum database that cannot be proven now. The go
// command checks it; caching it could keep a wrong one for a day.
func (f *Fill) serveUnkept() (*cache.Entry, error) {
	data, err := f.body()
	f.w.Abort()
	if err != nil {
		return nil, err
	}
	f.log.Debug("checksum database answer served, not cached: it cannot be proven now")
	return cache.NewMemoryEntry(cache.Meta{Key: f.key, Class: f.class, Status: http.StatusOK, ContentType: textContentType}, data), nil
}

// body returns the body received, from memory or from the temporary
// file the writer moved it to once it outgrew the hot tier's largest
// entry (at most the fill's limit). The caller must not modify it.
func (f *Fill) body() ([]byte, error) {
	data, file := f.w.Body()
	if file == "" {
		return data, nil
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, f.storageFailed(fmt.Errorf("reading the %s received back: %w", f.req.Kind, err))
	}
	return data, nil
}

// checkInfo checks an .info or @latest answer: JSON naming a valid version
// of the module, the very version asked for unless the request was a query.
func checkInfo(r goproxy.Request, data []byte) error {
	var info struct{ Version string }
	if err := json.Unmarshal(data, &info); err != nil {
		return fmt.Errorf("verifying %s: malformed %s: %w", r.Module, r.Kind, err)
	}
	if err := module.Check(r.Module, info.Version); err != nil || module.CanonicalVersion(info.Version) != info.Version {
		return fmt.Errorf("verifying %s: %s names version %q, not a canonical version of the module", r.Module, r.Kind, info.Version)
	}
	if r.Kind == goproxy.KindInfo && module.CanonicalVersion(r.Version) == r.Version && info.Version != r.Version {
		return fmt.Errorf("verifying %s@%s: .info names version %q", r.Module, r.Version, info.Version)
	}
	return nil
}

func (f *Fill) abortWriter() {
	if f.w != nil {
		f.w.Abort()
	}
}

// storeNegative caches a 404/410 with the upstream's words, cleaned.
func (f *Fill) storeNegative(ctx context.Context) *cache.Entry {
	lines := splitLines(string(f.excerpt))
	if len(lines) == 0 {
		lines = []string{"not found"}
	}
	body := plainText(lines...)
	w := f.p.cache.NewWriter(f.key, cache.Negative, f.status, textContentType)
	_, err := w.Write(body)
	var e *cache.Entry
	if err == nil {
		e, err = w.Commit(ctx)
	}
	if err != nil {
		w.Abort()
		f.log.DebugContext(ctx, "negative entry not cached", "err", err)
		return cache.NewMemoryEntry(cache.Meta{Key: f.key, Class: cache.Negative, Status: f.status, ContentType: textContentType}, body)
	}
	return e
}

func (f *Fill) bodyLimit() int64 {
	switch f.req.Kind {
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

func contentLength(h http.Header) int64 {
	n, err := strconv.ParseInt(h.Get("Content-Length"), 10, 64)
	if err != nil {
		return -1
	}
	return n
}
