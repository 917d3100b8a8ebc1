// Package gateway is modgate's standalone HTTP front end: an http.Handler
// that drives the processor (package extproc) in-process and fetches from
// upstreams with an upstream.Client, the way Envoy and its router do in
// mesh mode.
//
// The handler makes no decision of its own: it moves the request into the
// processor, the processor's replies out to the client, and upstream bytes
// through within the limits the processor sets. A body that breaks a limit,
// or an upstream that stops mid-body, aborts the client's connection so the
// client sees an error instead of a complete-looking artifact.
//
// Client identity comes only from a verified TLS client certificate; the
// handler never trusts identity headers.
package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/modgate/modgate/extproc"
	"github.com/modgate/modgate/upstream"
)

// Options configures a Handler. Processor and Client are required.
type Options struct {
	Processor *extproc.Processor
	Client    *upstream.Client
	// FetchTimeout bounds a whole upstream fetch, body included, over all
	// candidate upstreams. Default 10 minutes (a 500 MiB zip at ~1 MiB/s).
	FetchTimeout time.Duration
	// Logger receives operational logs. Default slog.Default().
	Logger *slog.Logger
}

// A Handler serves the GOPROXY protocol through the processor.
type Handler struct {
	proc         *extproc.Processor
	client       *upstream.Client
	fetchTimeout time.Duration
	log          *slog.Logger
}

// New checks opts and returns a Handler.
func New(opts Options) (*Handler, error) {
	if opts.Processor == nil || opts.Client == nil {
		return nil, errors.New("gateway: Processor and Client are required")
	}
	if opts.FetchTimeout <= 0 {
		opts.FetchTimeout = 10 * time.Minute
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Handler{proc: opts.Processor, client: opts.Client, fetchTimeout: opts.FetchTimeout, log: opts.Logger}, nil
}

// errClientGone is what cut a response short when the client left first.
var errClientGone = errors.New("client went away")

// ServeHTTP runs one request through the processor.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	x := h.proc.Begin(clientOf(r))
	cw := &countingWriter{ResponseWriter: w}
	cw.Header().Set("X-Request-Id", x.ID())
	var cut error
	defer func() { x.Done(cw.status, cw.n, cut) }()

	ctx := r.Context()
	d := x.RequestHeaders(ctx, r.Method, r.RequestURI)
	if d.Action != extproc.Forward {
		writeReply(cw, r, d.Reply)
		return
	}

	ctx, cancel := context.WithTimeout(ctx, h.fetchTimeout)
	defer cancel()
	for i, u := range d.Candidates {
		resp, err := h.client.Do(ctx, u, d.Method, d.Path)
		if err != nil && r.Context().Err() != nil {
			cut = errClientGone
			return
		}
		var rr extproc.Response
		if err != nil {
			rr = x.UpstreamFailed(ctx, i, err)
		} else {
			rr = x.UpstreamResponse(ctx, i, resp.StatusCode, resp.Header)
		}
		switch rr.Action {
		case extproc.Next:
			discard(resp)
			continue
		case extproc.Replace:
			discard(resp)
			writeReply(cw, r, rr.Reply)
			return
		}
		cut = h.pass(cw, r, x, resp, rr)
		resp.Body.Close()
		if cut != nil {
			if r.Context().Err() != nil {
				cut = errClientGone
			}
			// The deferred Done runs first; then net/http drops the
			// connection without completing the response.
			panic(http.ErrAbortHandler)
		}
		return
	}
	// The processor never answers Next for the last candidate.
	panic("gateway: processor asked for a candidate beyond the last")
}

// pass sends an upstream response the processor let through. A non-nil
// error means the client must not see the response complete.
func (h *Handler) pass(w *countingWriter, r *http.Request, x *extproc.Exchange, resp *http.Response, rr extproc.Response) error {
	for k, v := range rr.Header {
		w.Header()[k] = v
	}
	if rr.Body == extproc.BodyExcerpt {
		b, err := io.ReadAll(io.LimitReader(resp.Body, rr.Limit))
		if err != nil {
			h.log.Debug("reading upstream error body", "err", err)
		}
		body := x.Excerpt(b)
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(rr.Status)
		if r.Method != http.MethodHead {
			w.Write(body)
		}
		return nil
	}

	if resp.ContentLength >= 0 {
		w.Header().Set("Content-Length", strconv.FormatInt(resp.ContentLength, 10))
	}
	w.WriteHeader(rr.Status)
	if r.Method == http.MethodHead {
		return nil
	}
	n, err := io.Copy(w, io.LimitReader(resp.Body, rr.Limit))
	if err != nil {
		return fmt.Errorf("copy upstream body after %d bytes: %w", n, err)
	}
	if n == rr.Limit {
		var one [1]byte
		if m, _ := io.ReadFull(resp.Body, one[:]); m > 0 {
			return fmt.Errorf("upstream body over the %d-byte limit", rr.Limit)
		}
	}
	return nil
}

// writeReply writes a reply the processor made.
func writeReply(w http.ResponseWriter, r *http.Request, rep *extproc.Reply) {
	for k, v := range rep.Header {
		w.Header()[k] = v
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(rep.Body)))
	w.WriteHeader(rep.Status)
	if r.Method != http.MethodHead {
		w.Write(rep.Body)
	}
}

// discard drains a little of an unused response so its connection can be
// reused, then closes it.
func discard(resp *http.Response) {
	if resp == nil {
		return
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
}

// clientOf reads the client's identity off the connection.
func clientOf(r *http.Request) extproc.Client {
	var c extproc.Client
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		c.Addr = ap
	}
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && len(r.TLS.PeerCertificates) > 0 {
		cert := r.TLS.PeerCertificates[0]
		c.Subject = cert.Subject.String()
		for _, u := range cert.URIs {
			c.URISANs = append(c.URISANs, u.String())
		}
		sum := sha256.Sum256(cert.Raw)
		c.CertSHA256 = hex.EncodeToString(sum[:])
	}
	return c
}

// countingWriter remembers the status and counts the body bytes written.
type countingWriter struct {
	http.ResponseWriter
	status int
	n      int64
}

func (c *countingWriter) WriteHeader(status int) {
	if c.status == 0 {
		c.status = status
	}
	c.ResponseWriter.WriteHeader(status)
}

func (c *countingWriter) Write(b []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	n, err := c.ResponseWriter.Write(b)
	c.n += int64(n)
	return n, err
}

// ReadFrom keeps io.Copy on the ResponseWriter's fast path.
func (c *countingWriter) ReadFrom(src io.Reader) (int64, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	n, err := io.Copy(c.ResponseWriter, src)
	c.n += n
	return n, err
}
