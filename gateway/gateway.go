// Package gateway is modgate's standalone HTTP front end: an http.Handler
// that drives the processor (package gate) in-process and fetches from
// upstreams with an upstream.Client, the way Envoy and its router do in
// mesh mode.
//
// The handler makes no decision of its own: it moves the request into the
// processor, upstream bytes into the processor's fill (the processor checks
// and caches them), and the processor's answers out to the client, which
// always gets a response served from what the processor stored. A
// response that cannot be sent whole aborts the client's connection, so the
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
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"go.opentelemetry.io/otel/propagation"

	"github.com/modgate/modgate/gate"
	"github.com/modgate/modgate/upstream"
)

// Options configures a Handler. Processor and Client are required.
type Options struct {
	Processor *gate.Processor
	Client    *upstream.Client
	// FetchTimeout bounds a whole fill — every candidate upstream, body
	// included. Default 10 minutes (a 500 MiB zip at ~1 MiB/s).
	FetchTimeout time.Duration
	// Logger receives operational logs. Default slog.Default().
	Logger *slog.Logger
	// Propagator reads a trace context from request headers. Default: W3C
	// trace context (traceparent).
	Propagator propagation.TextMapPropagator
}

// A Handler serves the GOPROXY protocol through the processor.
type Handler struct {
	proc         *gate.Processor
	client       *upstream.Client
	fetchTimeout time.Duration
	log          *slog.Logger
	prop         propagation.TextMapPropagator
	fills        sync.WaitGroup // fills outlive the request that started them
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
	if opts.Propagator == nil {
		opts.Propagator = propagation.TraceContext{}
	}
	return &Handler{proc: opts.Processor, client: opts.Client, fetchTimeout: opts.FetchTimeout, log: opts.Logger, prop: opts.Propagator}, nil
}

// Wait waits for the fills in progress, which each end within the fetch
// timeout, or for ctx to end. Call it after the server has stopped
// accepting requests. A fill cut short by the process's exit leaves
// nothing in the cache (its temporary file is removed at the next start).
func (h *Handler) Wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		h.fills.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("fills still running: %w", ctx.Err())
	}
}

// connKey is the context key under which ConnContext stores the
// connection.
type connKey struct{}

// ConnContext gives the handler access to each request's connection (to
// cork it while a file is sent). Set it as the http.Server's ConnContext.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// errClientGone is what cut a response short when the client left first.
var errClientGone = errors.New("client went away")

// ServeHTTP runs one request through the processor.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	x := h.proc.Begin(ClientOf(r))
	cw := &countingWriter{ResponseWriter: w}
	cw.Header().Set("X-Request-Id", x.ID())
	ctx := h.prop.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
	var cut error
	defer func() { x.Done(context.WithoutCancel(ctx), cw.status, cw.n, cut) }()

	d := x.RequestHeaders(ctx, gate.Request{Method: r.Method, Target: r.RequestURI, Header: r.Header})
	if d.Action == gate.Forward {
		res, err := h.fill(ctx, d.Fill)
		if err != nil {
			cut = errClientGone
			return
		}
		d = x.Filled(ctx, res)
	}
	switch d.Action {
	case gate.Abort:
		cut = errClientGone
	case gate.Hit:
		cut = serveEntry(cw, r, d)
		if cut != nil {
			if ctx.Err() != nil {
				cut = errClientGone
			}
			// The deferred Done runs first; then net/http drops the
			// connection without completing the response.
			panic(http.ErrAbortHandler)
		}
	default:
		writeReply(cw, r, d.Reply)
	}
}

// fill runs f on a goroutine of its own, with its own timeout, so that it
// completes for the requests waiting on it even if this one's client goes
// away; it returns early only with ctx's error.
func (h *Handler) fill(ctx context.Context, f *gate.Fill) (gate.FillResult, error) {
	done := make(chan gate.FillResult, 1)
	h.fills.Add(1)
	go func() {
		defer h.fills.Done()
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), h.fetchTimeout)
		defer cancel()
		done <- h.fetch(fctx, f)
	}()
	select {
	case res := <-done:
		return res, nil
	case <-ctx.Done():
		return gate.FillResult{}, ctx.Err()
	}
}

// fetch asks the candidates in order, as the fill decides, and feeds it
// the body to store.
func (h *Handler) fetch(ctx context.Context, f *gate.Fill) gate.FillResult {
	for i, u := range f.Candidates() {
		resp, err := h.client.Do(ctx, u, http.MethodGet, f.Path(), gate.UpstreamHeader)
		var rr gate.Response
		if err != nil {
			rr = f.UpstreamFailed(ctx, i, err)
		} else {
			rr = f.UpstreamResponse(ctx, i, resp.StatusCode, resp.Header)
		}
		switch rr.Action {
		case gate.Next:
			discard(resp)
			continue
		case gate.Store:
			err := feed(ctx, f, resp.Body, rr)
			resp.Body.Close()
			return f.Finish(ctx, err)
		}
		discard(resp) // Fail
		return f.Finish(ctx, nil)
	}
	return f.Finish(ctx, nil)
}

// feed copies an upstream body into the fill, chunk by chunk.
func feed(ctx context.Context, f *gate.Fill, body io.Reader, rr gate.Response) error {
	if rr.Excerpt {
		body = io.LimitReader(body, rr.Limit)
	}
	buf := make([]byte, 32<<10)
	for {
		n, err := body.Read(buf)
		if n > 0 {
			if ferr := f.ResponseBody(ctx, buf[:n]); ferr != nil {
				return ferr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading upstream body: %w", err)
		}
	}
}

// serveEntry writes a cached response. A plain GET or HEAD of a 200 takes
// the short way: headers, then the body, a file going out with sendfile.
// A request with a Range or a precondition goes through http.ServeContent.
// A non-nil error means the client must not see the response complete.
func serveEntry(w *countingWriter, r *http.Request, d gate.Decision) error {
	defer d.Entry.Close()
	for k, v := range d.Header {
		w.Header()[k] = v
	}
	if d.Status == http.StatusOK && !ranged(r) {
		w.Header().Set("Accept-Ranges", "bytes")
	} else if d.Status == http.StatusOK {
		http.ServeContent(w, r, "", time.Time{}, d.Entry.Reader())
		if w.status == http.StatusOK && r.Method != http.MethodHead && w.n != d.Entry.Size {
			return fmt.Errorf("sent %d of %d bytes", w.n, d.Entry.Size)
		}
		return nil
	}

	w.Header().Set("Content-Length", strconv.FormatInt(d.Entry.Size, 10))
	file := d.Entry.Bytes() == nil
	if file && r.Method != http.MethodHead {
		// Hold the headers back until the first full segment of the file.
		if c, ok := r.Context().Value(connKey{}).(net.Conn); ok {
			defer cork(c)()
		}
	}
	w.WriteHeader(d.Status)
	if r.Method == http.MethodHead {
		return nil
	}
	if file {
		// With the headers flushed, the ResponseWriter hands the file to
		// the connection's ReadFrom (sendfile) without copying a first
		// chunk through its buffer.
		if err := http.NewResponseController(w).Flush(); err != nil {
			return err
		}
	}
	// The limit also tells sendfile where the file ends, saving the call
	// that would find out.
	n, err := io.Copy(w, io.LimitReader(d.Entry.Reader(), d.Entry.Size))
	if err == nil && n != d.Entry.Size {
		err = fmt.Errorf("sent %d of %d bytes", n, d.Entry.Size)
	}
	return err
}

// ranged reports whether r asks for part of a body, or for it only under a
// precondition: what http.ServeContent handles.
func ranged(r *http.Request) bool {
	for _, h := range []string{"Range", "If-Range", "If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since"} {
		if r.Header.Get(h) != "" {
			return true
		}
	}
	return false
}

// writeReply writes a reply the processor made.
func writeReply(w http.ResponseWriter, r *http.Request, rep *gate.Reply) {
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

// ClientOf reads the client's identity off the connection: its address,
// where a redirected connection was going, and the verified client
// certificate (the console identifies its users with it too).
func ClientOf(r *http.Request) gate.Client {
	var c gate.Client
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		c.Addr = ap
	}
	if ap, ok := r.Context().Value(origDstKey{}).(netip.AddrPort); ok {
		c.OriginalDst = ap
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

// Unwrap gives http.ResponseController the underlying writer.
func (c *countingWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

// ReadFrom keeps io.Copy on the ResponseWriter's fast path.
func (c *countingWriter) ReadFrom(src io.Reader) (int64, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	n, err := io.Copy(c.ResponseWriter, src)
	c.n += n
	return n, err
}
