// Package auth establishes who sent a request to the gateway: the holder
// of a client token, the owner of a verified client certificate, or nobody.
//
// # Tokens
//
// A token is 256 random bits from crypto/rand, written as [TokenPrefix]
// ("mgt_") and their unpadded base64url encoding: 47 characters. It is
// shown once, when [Create] makes it; the tokens file keeps only its
// SHA-256, so reading the file reveals no token.
//
// Clients send a token as the password of HTTP basic authentication, with
// any user name, or as "Authorization: Bearer TOKEN". The go command sends
// basic authentication from a .netrc file (or GOAUTH), and only over HTTPS:
//
//	machine modgate.corp.example:8443 login any password mgt_...
//
// where the machine is the host as GOPROXY writes it, port included.
//
// # The tokens file
//
// The tokens file holds one record a line:
//
//	NAME CREATED sha256:HASH [GROUP...]
//
// separated by single spaces. NAME is unique in the file; NAME and each
// GROUP are 1 to 64 of a-z A-Z 0-9 . _ @ - (see [CheckName]), and no group
// appears twice in a record. CREATED is RFC 3339 UTC to the second
// (2006-01-02T15:04:05Z). HASH is the SHA-256 of the token in 64
// lower-case hex digits; no two records share one. Every line ends in a
// newline. Empty lines and lines starting with '#' are ignored. Anything
// else is an error naming its line: a server refuses to start with, or to
// reload, such a file. For example:
//
//	# modgate tokens: NAME CREATED sha256:HASH [GROUP...]; edit with modgate token
//	ci-builder 2026-03-01T12:00:00Z sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 ci
//	alice@corp 2026-03-02T08:30:00Z sha256:60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752 dev release
//
// [Create] and [Revoke] rewrite the file atomically (a synced temporary
// file renamed over it, mode 0600), under a lock on the file PATH.lock so
// that concurrent updates do not lose one another; they do not keep
// comments. A server reads the file with [Load] and again with
// [Authenticator.Reload].
//
// # Identities
//
// [Authenticator.Authenticate] takes, in this order: a valid token; else a
// verified client certificate, named by its first SPIFFE ID (URI SAN) or
// else its subject and given groups by [Config.Identities]; else nobody,
// if credentials are not required. A wrong token is always refused: it is
// never taken for anonymous access.
//
// Wrong credentials are budgeted per source address (per /64 for IPv6);
// past the budget they are answered [ErrThrottled] instead of
// [ErrUnauthenticated]. A valid credential is accepted even then: a token
// cannot be guessed, so the budget is there to bound how fast a source is
// told no (and how fast it fills the logs), and a neighbour behind the
// same address (a NAT, a proxy) must not be able to lock a client out.
// Requests without credentials are not charged.
package auth

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/modgate/modgate/budget"
)

// ErrUnauthenticated is the error of a request whose credentials are
// missing (when required) or wrong. It is answered 401 with
// WWW-Authenticate: Basic realm="modgate".
var ErrUnauthenticated = errors.New("unauthenticated")

// ErrThrottled is the error of a request with wrong credentials from a
// source that has failed too often. It is answered 429 with the
// Retry-After of the [ThrottledError] that wraps it.
var ErrThrottled = errors.New("too many failed authentications")

// A ThrottledError is returned for wrong credentials from a source past
// its failure budget. It wraps [ErrThrottled].
type ThrottledError struct {
	Source     string // the source address
	retryAfter time.Duration
}

func (e *ThrottledError) Error() string {
	return fmt.Sprintf("authenticate %s: %v: retry after %v", e.Source, ErrThrottled, e.retryAfter)
}

// Unwrap returns ErrThrottled.
func (e *ThrottledError) Unwrap() error { return ErrThrottled }

// RetryAfter returns how long the source must wait before a failure is
// answered 401 again: whole seconds, at least one.
func (e *ThrottledError) RetryAfter() time.Duration { return e.retryAfter }

// Methods by which an [Identity] was established.
const (
	MethodToken     = "token" // a client token
	MethodMTLS      = "mtls"  // a client certificate verified by modgate's TLS listener
	MethodMesh      = "mesh"  // a client certificate verified by the mesh (Envoy)
	MethodAnonymous = ""      // nothing: an anonymous request
)

// An Identity is who sent a request.
type Identity struct {
	// Name is the token's name, or the certificate's SPIFFE ID or subject;
	// "" for an anonymous request.
	Name string
	// Groups are the token's groups, or the certificate identity's from
	// Config.Identities.
	Groups []string
	// Method is how the identity was established: one of the Method constants.
	Method string
}

// A Peer is what the front end verified of a request's connection.
type Peer struct {
	// Addr is the client's address: the source address of the connection,
	// or in mesh mode the downstream address Envoy reports. The failure
	// budget is kept per address (per /64 for IPv6).
	Addr netip.AddrPort
	// Subject, URISANs and CertSHA256 describe the client certificate, set
	// only if the front end verified it; all empty if there was none.
	Subject    string
	URISANs    []string
	CertSHA256 string
	// FromMesh says the request came through the mesh, which verified the
	// certificate, rather than through modgate's own TLS listener.
	FromMesh bool
}

// DefaultFailures and DefaultFailureWindow are the failure budget of
// a source when Config.Failures is zero: 10 failures a minute.
const (
	DefaultFailures      = 10
	DefaultFailureWindow = time.Minute
)

// Config configures an [Authenticator]. The zero Config authenticates no
// tokens and no certificates, and lets anonymous requests through.
type Config struct {
	// Tokens is the initial token set. Default nil: no token is valid.
	Tokens *Tokens
	// Required refuses requests without credentials. Default false:
	// they are anonymous.
	Required bool
	// Identities maps the identity of a verified client certificate, a
	// SPIFFE ID (spiffe://...) or a subject exactly as the front end
	// reports it, to its groups. A verified certificate not in the map is
	// authenticated with no groups. Default: none.
	Identities map[string][]string
	// Failures bounds failed authentications per source address: after
	// Max failures, more are throttled; one more is allowed every
	// Window/Max, and a source that stops for Window starts over. Default
	// DefaultFailures in DefaultFailureWindow.
	Failures FailureLimit
	// Now returns the current time. Default time.Now.
	Now func() time.Time
}

// A FailureLimit is a failure budget: Max failures in Window.
type FailureLimit struct {
	Max    int           // default DefaultFailures
	Window time.Duration // default DefaultFailureWindow
}

// An Authenticator establishes who sent each request. Create one with
// [New]. It is safe for concurrent use.
type Authenticator struct {
	tokens     atomic.Pointer[Tokens] // swapped whole by Reload
	required   bool
	identities map[string][]string // read-only after New
	failures   *budget.Budget      // keyed by source
}

// New returns an Authenticator for cfg, or an error naming the first
// invalid field.
func New(cfg Config) (*Authenticator, error) {
	a := &Authenticator{required: cfg.Required, identities: make(map[string][]string, len(cfg.Identities))}
	for id, groups := range cfg.Identities {
		if id == "" {
			return nil, errors.New("auth: identities: empty identity")
		}
		if err := CheckGroups(groups); err != nil {
			return nil, fmt.Errorf("auth: identities[%q]: %w", id, err)
		}
		a.identities[id] = slices.Clone(groups)
	}
	lim := cfg.Failures
	if lim.Max < 0 {
		return nil, errors.New("auth: failures.max: negative")
	}
	if lim.Window < 0 {
		return nil, errors.New("auth: failures.window: negative")
	}
	if lim.Max == 0 {
		lim.Max = DefaultFailures
	}
	if lim.Window == 0 {
		lim.Window = DefaultFailureWindow
	}
	b, err := budget.New(budget.Config{
		Client: budget.Limit{Rate: float64(lim.Max) / lim.Window.Seconds(), Burst: lim.Max},
		Now:    cfg.Now,
	})
	if err != nil {
		return nil, fmt.Errorf("auth: failures: %w", err)
	}
	a.failures = b
	a.tokens.Store(cfg.Tokens)
	return a, nil
}

// Reload reads the tokens file at path with [Load] and makes it the token
// set of later requests. On error it keeps the set it had.
func (a *Authenticator) Reload(path string) error {
	t, err := Load(path)
	if err != nil {
		return err
	}
	a.tokens.Store(t)
	return nil
}

// Tokens returns the current token set.
func (a *Authenticator) Tokens() *Tokens {
	return a.tokens.Load()
}

// Authenticate establishes who sent a request from its headers and the
// connection's verified peer.
//
// A request that carries an Authorization header (basic, with the token
// as password and any user name, or bearer) is the token's holder, or is
// refused with an error wrapping ErrUnauthenticated, even when credentials
// are not required; past the source's failure budget, with a
// [*ThrottledError] instead. Otherwise a verified client certificate
// identifies it (Method "mtls", or "mesh" if peer.FromMesh). Otherwise it
// is anonymous, or refused with ErrUnauthenticated if credentials are
// required. Errors name the source address, never the credential.
//
// The returned Identity's Groups are the caller's to keep.
func (a *Authenticator) Authenticate(ctx context.Context, h http.Header, peer Peer) (Identity, error) {
	token, presented, err := credential(h)
	if presented {
		if err == nil {
			if r := a.tokens.Load().lookup(token); r != nil {
				return Identity{Name: r.Name, Groups: slices.Clone(r.Groups), Method: MethodToken}, nil
			}
			err = errors.New("token not valid")
		}
		return Identity{}, a.fail(peer.Addr, err)
	}
	if name := certName(peer); name != "" {
		method := MethodMTLS
		if peer.FromMesh {
			method = MethodMesh
		}
		return Identity{Name: name, Groups: slices.Clone(a.identities[name]), Method: method}, nil
	}
	if a.required {
		return Identity{}, fmt.Errorf("authenticate %s: no credentials: %w", source(peer.Addr), ErrUnauthenticated)
	}
	return Identity{}, nil
}

// fail charges a failed authentication from addr, whose reason is why,
// and returns its error.
func (a *Authenticator) fail(addr netip.AddrPort, why error) error {
	if ok, _, retry := a.failures.Charge(budgetKey(addr), ""); !ok {
		return &ThrottledError{Source: source(addr), retryAfter: retry}
	}
	return fmt.Errorf("authenticate %s: %v: %w", source(addr), why, ErrUnauthenticated)
}

// source is addr for error messages.
func source(addr netip.AddrPort) string {
	if !addr.IsValid() {
		return "unknown source"
	}
	return addr.String()
}

// budgetKey is the failure budget that addr is charged to: its IPv4
// address, or its IPv6 /64 (one host's usual allocation). Requests with no
// address share one budget.
func budgetKey(addr netip.AddrPort) string {
	ip := addr.Addr().Unmap()
	if ip.Is6() {
		p, _ := ip.Prefix(64) // cannot fail for an IPv6 address
		return p.String()
	}
	return ip.String() // "invalid IP" for no address
}

// certName is the identity of peer's verified client certificate: its
// first SPIFFE ID, else its subject; "" if it has neither.
func certName(peer Peer) string {
	for _, u := range peer.URISANs {
		if strings.HasPrefix(u, "spiffe://") {
			return u
		}
	}
	return peer.Subject
}

// credential returns the token that h's Authorization header carries.
// presented reports whether h has that header at all: a request that has
// it but no well-formed credential in it failed to authenticate.
func credential(h http.Header) (token string, presented bool, err error) {
	vs := h.Values("Authorization")
	switch len(vs) {
	case 0:
		return "", false, nil
	case 1:
		token, err := parseAuthorization(vs[0])
		return token, true, err
	}
	return "", true, errors.New("several authorization headers")
}

// parseAuthorization returns the token in an Authorization header value:
// "Basic base64(USER:TOKEN)" with any USER, or "Bearer TOKEN". Scheme
// names are case-insensitive. Errors do not repeat the value.
func parseAuthorization(v string) (string, error) {
	scheme, cred, ok := strings.Cut(v, " ")
	cred = strings.TrimLeft(cred, " ")
	if !ok || cred == "" {
		return "", errors.New("malformed authorization header")
	}
	switch {
	case strings.EqualFold(scheme, "Bearer"):
		if strings.ContainsAny(cred, " \t") {
			return "", errors.New("malformed bearer credentials")
		}
		return cred, nil
	case strings.EqualFold(scheme, "Basic"):
		b, err := base64.StdEncoding.DecodeString(cred)
		if err != nil {
			return "", errors.New("malformed basic credentials")
		}
		_, pass, ok := strings.Cut(string(b), ":")
		if !ok || pass == "" {
			return "", errors.New("malformed basic credentials: no password")
		}
		return pass, nil
	}
	return "", errors.New("unsupported authorization scheme")
}
