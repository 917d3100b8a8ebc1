package gate

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/modgate/modgate/cache"
	"github.com/modgate/modgate/goproxy"
	"github.com/modgate/modgate/ledger"
	"github.com/modgate/modgate/verify"
)

// refuse is the one place an error becomes a client reply, and the one
// place such errors are logged.
func (x *Exchange) refuse(ctx context.Context, err error) *Reply {
	var (
		status int
		rule   string
		pe     *goproxy.Error
		de     *denial
		be     *overBudget
		ae     *authError
		ue     *upstreamError
		ve     *verifyError
		se     *storageError
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
	case errors.As(err, &ae):
		x.decision = "deny"
		status, rule = http.StatusUnauthorized, "auth"
		if ae.retryAfter() > 0 {
			status, rule = http.StatusTooManyRequests, "auth-failures"
		}
		x.logger().InfoContext(ctx, "authentication refused", "status", status, "source", x.client.Addr.Addr().Unmap().String(), "err", err)
	case errors.As(err, &be):
		x.decision = "deny"
		status, rule = http.StatusTooManyRequests, "budget-"+be.which
		x.logger().InfoContext(ctx, "miss budget exhausted", "budget", be.which, "client", identity(x.client), "module", x.req.Module)
	case errors.As(err, &ue):
		x.decision = "forward"
		status, rule = ue.clientStatus(), "upstream"
		x.logger().WarnContext(ctx, "upstream failed", "err", err, "path", x.target)
	case storeUnavailable(err):
		x.decision = "forward"
		status, rule = http.StatusServiceUnavailable, "store-unavailable"
		x.logger().ErrorContext(ctx, "shared store unavailable", "err", err, "path", x.target)
	case errors.As(err, &se):
		x.decision = "forward"
		status, rule = http.StatusServiceUnavailable, "cache-storage"
		x.logger().ErrorContext(ctx, "cache storage failed: the answer was not stored", "err", err, "path", x.target)
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
	switch {
	case status == http.StatusMethodNotAllowed:
		h.Set("Allow", "GET, HEAD")
	case status == http.StatusUnauthorized:
		h.Set("WWW-Authenticate", `Basic realm="modgate"`)
	case ae != nil && ae.retryAfter() > 0:
		h.Set("Retry-After", strconv.Itoa(int(ae.retryAfter()/time.Second)))
	case rule == "store-unavailable", rule == "cache-storage":
		h.Set("Retry-After", "5")
	}
	return &Reply{Status: status, Header: h, Body: plainText(x.reason)}
}

// storeUnavailable reports whether err is the shared tier's or the shared
// ledger's being unreachable: 503, an outage, never an answer about the
// module (not a 404, not a verification failure).
func storeUnavailable(err error) bool {
	return errors.Is(err, cache.ErrUnavailable) || errors.Is(err, ledger.ErrUnavailable)
}

// A storageError is a body that this gateway's cache could not store (its
// disk full, or read-only): 503, an outage of modgate's own, not the
// upstream's (which answered) and not an answer about the module.
type storageError struct {
	key string
	err error
}

func (e *storageError) Error() string {
	return fmt.Sprintf("modgate could not store %s: %v", e.key, e.err)
}
func (e *storageError) Unwrap() error { return e.err }

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
	var ae *verify.AnswerError
	if errors.As(e.err, &me) || errors.As(e.err, &ze) || errors.As(e.err, &ae) {
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

// An authError is a client the authenticator refused: 401, or 429 when it
// tried too often.
type authError struct {
	err error
}

func (e *authError) Error() string { return e.err.Error() }
func (e *authError) Unwrap() error { return e.err }

// retryAfter is how long a throttled client must wait, 0 if it is not
// throttled.
func (e *authError) retryAfter() time.Duration {
	var t interface{ RetryAfter() time.Duration }
	if errors.As(e.err, &t) {
		return max(t.RetryAfter(), time.Second)
	}
	return 0
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
	status   int    // the upstream's status, or 0
	err      error  // what went wrong, if not a status
	detail   string // the first line of its answer's body, cleaned
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
	msg := fmt.Sprintf("%s answered %d %s", name, e.status, http.StatusText(e.status))
	if e.detail != "" {
		msg += ": " + e.detail
	}
	return msg
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
