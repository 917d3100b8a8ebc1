// Package upstream describes the GOPROXY-protocol servers modgate fetches
// from and holds the HTTP client the standalone data plane fetches with.
//
// An Upstream is either public (it may see any public module path and the
// checksum-database endpoints) or private (it alone may see paths matching
// the private patterns). The two sets never mix: a private path is never
// sent to a public upstream.
//
// The Client plays the part Envoy's router plays in mesh mode: it sends one
// request to one upstream, with bounded connect, TLS and header time. It
// follows no more than a few redirects and never sends credentials of the
// client to an upstream. Which upstream to try next is the caller's
// decision.
package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"golang.org/x/mod/module"
)

// An Upstream is one GOPROXY-protocol server.
type Upstream struct {
	Name    string   // short name for logs, audit and metrics
	URL     *url.URL // base URL; request paths are appended to its path
	Private bool     // serves private module paths only
	// Patterns, if any, are the module paths (GOPRIVATE syntax) this
	// upstream alone serves: a module matching them goes only to the
	// upstreams whose patterns match it, never to the others (the VCS
	// origin for its patterns). Empty: every other module of its route.
	Patterns []string
}

// Serves reports whether u is a candidate for the module path among the
// candidates of its route: an upstream with patterns serves the modules
// they match; one without serves every module that no candidate's
// patterns claim.
func Serves(u *Upstream, path string, candidates []*Upstream) bool {
	if len(u.Patterns) > 0 {
		return path != "" && module.MatchPrefixPatterns(strings.Join(u.Patterns, ","), path)
	}
	for _, c := range candidates {
		if len(c.Patterns) > 0 && path != "" && module.MatchPrefixPatterns(strings.Join(c.Patterns, ","), path) {
			return false
		}
	}
	return true
}

// Parse returns the Upstream for a base URL such as "https://proxy.example/".
// An empty name defaults to the URL's host.
func Parse(name, rawURL string, private bool) (*Upstream, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("upstream %q: %w", rawURL, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("upstream %q: scheme must be http or https", rawURL)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("upstream %q: no host", rawURL)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("upstream %q: user info, query and fragment are not allowed", rawURL)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawPath = ""
	if name == "" {
		name = u.Host
	}
	return &Upstream{Name: name, URL: u, Private: private}, nil
}

// String returns the upstream's name.
func (u *Upstream) String() string { return u.Name }

// Address returns the host:port the upstream's URL names, with the
// scheme's default port (443 for https, 80 for http) when the URL has
// none; "" for an upstream without a URL.
func (u *Upstream) Address() string {
	if u.URL == nil {
		return ""
	}
	port := u.URL.Port()
	if port == "" {
		port = "80"
		if u.URL.Scheme == "https" {
			port = "443"
		}
	}
	return net.JoinHostPort(u.URL.Hostname(), port)
}

// ClientOptions configures a Client. The zero value works.
type ClientOptions struct {
	// HeaderTimeout bounds the time from sending a request to receiving the
	// response headers. Default 30s.
	HeaderTimeout time.Duration
	// DialTimeout bounds connection set-up, TLS included. Default 10s.
	DialTimeout time.Duration
	// MaxRedirects is how many redirects a fetch follows. Default 5;
	// negative follows none.
	MaxRedirects int
	// Mark, if not zero, is set (SO_MARK) on every upstream socket, so the
	// transparent redirect exempts modgate's own connections.
	Mark uint32
	// Transport replaces the default transport (tests).
	Transport http.RoundTripper
	// InProcess serves the upstreams whose URL has one of its hosts (such
	// as InProcessHost) with its handler, in this process, with no socket:
	// the VCS origin in standalone mode. Default: none.
	InProcess map[string]http.Handler
}

// A Client fetches from upstreams. It is safe for concurrent use.
type Client struct {
	hc *http.Client
}

// NewClient returns a Client configured by opts.
func NewClient(opts ClientOptions) *Client {
	if opts.HeaderTimeout <= 0 {
		opts.HeaderTimeout = 30 * time.Second
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = 10 * time.Second
	}
	if opts.MaxRedirects == 0 {
		opts.MaxRedirects = 5
	}
	rt := opts.Transport
	if rt == nil {
		dialer := &net.Dialer{Timeout: opts.DialTimeout, KeepAlive: 30 * time.Second}
		if opts.Mark != 0 {
			dialer.Control = markControl(opts.Mark)
		}
		rt = &http.Transport{
			Proxy:                  http.ProxyFromEnvironment,
			DialContext:            dialer.DialContext,
			TLSHandshakeTimeout:    opts.DialTimeout,
			ResponseHeaderTimeout:  opts.HeaderTimeout,
			MaxIdleConnsPerHost:    64,
			IdleConnTimeout:        90 * time.Second,
			ForceAttemptHTTP2:      true,
			MaxResponseHeaderBytes: 64 << 10,
		}
	}
	if len(opts.InProcess) > 0 {
		rt = &inProcess{handlers: opts.InProcess, next: rt}
	}
	maxRedirects := opts.MaxRedirects
	return &Client{hc: &http.Client{
		Transport: rt,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) > maxRedirects {
				return fmt.Errorf("more than %d redirects", maxRedirects)
			}
			if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
				return fmt.Errorf("redirect to unsupported scheme %q", req.URL.Scheme)
			}
			return nil
		},
	}}
}

// Do sends method (GET or HEAD) for the canonical request path p (as made
// by goproxy.Request.Path) to u, with the headers h (nil: only
// User-Agent: modgate) and nothing else of a client's. The caller closes
// the response body. The request lives as long as ctx.
func (c *Client) Do(ctx context.Context, u *Upstream, method, p string, h http.Header) (*http.Response, error) {
	target := u.URL.String() + p
	req, err := http.NewRequestWithContext(ctx, method, target, nil)
	if err != nil {
		return nil, fmt.Errorf("upstream %s: %w", u.Name, err)
	}
	if h != nil {
		req.Header = h.Clone()
	} else {
		req.Header.Set("User-Agent", "modgate")
	}
	// The error names the URL, and so the upstream.
	return c.hc.Do(req)
}

// IsTimeout reports whether err is a fetch that ran out of time, as opposed
// to one that failed: the first becomes a 504, the second a 502.
func IsTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// A Set is a fixed, ordered list of public and private upstreams.
type Set struct {
	Public  []*Upstream
	Private []*Upstream
}

// Configured reports whether any upstream serves private (or public)
// requests.
func (s *Set) Configured(private bool) bool { return len(s.Candidates(private)) > 0 }

// Candidates returns, in order of preference, the upstreams that may see a
// public (private == false) or private request. The caller must not modify
// the returned slice.
func (s *Set) Candidates(private bool) []*Upstream {
	if private {
		return s.Private
	}
	return s.Public
}

// Get fetches p (a canonical path, such as "/sumdb/NAME/latest") from the
// first of candidates that answers 200, reading at most limit bytes of its
// body; a longer body is an error. The error, if every candidate fails,
// names each failure.
func (c *Client) Get(ctx context.Context, candidates []*Upstream, p string, limit int64) ([]byte, error) {
	var errs []error
	for _, u := range candidates {
		body, err := c.get(ctx, u, p, limit)
		if err == nil {
			return body, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	if len(errs) == 0 {
		return nil, fmt.Errorf("get %s: no upstream", p)
	}
	return nil, errors.Join(errs...)
}

func (c *Client) get(ctx context.Context, u *Upstream, p string, limit int64) ([]byte, error) {
	resp, err := c.Do(ctx, u, http.MethodGet, p, nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("upstream %s: GET %s: %s", u.Name, p, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("upstream %s: GET %s: %w", u.Name, p, err)
	}
	if int64(len(body)) > limit {
		return nil, fmt.Errorf("upstream %s: GET %s: body over the %d-byte limit", u.Name, p, limit)
	}
	return body, nil
}
