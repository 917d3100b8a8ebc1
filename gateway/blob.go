package gateway

import (
	"context"
	"errors"
	"log/slog"
	"net/http"

	"github.com/modgate/modgate/cache"
	"github.com/modgate/modgate/capability"
	"github.com/modgate/modgate/gate"
	"github.com/modgate/modgate/goproxy"
)

// Getter reads the cache. Get's error wraps fs.ErrNotExist when the key is
// not cached; the caller closes the Entry.
type Getter interface {
	Get(ctx context.Context, key string) (*cache.Entry, error)
}

// A Checker checks the capability token a routed request carries (in
// capability.Header) against the request's canonical path. Check returns
// nil only if the token admits that path now. It must be safe for
// concurrent use. *capability.Key is one; the blob listener must be given
// the Key the ext_proc server makes its tokens with.
type Checker interface {
	Check(token, path string) error
}

// NewBlobHandler serves cached responses, and nothing else: it is the
// sidecar's blob listener, which Envoy is routed to (by the ext_proc
// server) for cache hits too large for an ImmediateResponse. The ext_proc
// server has already decided and audited the request; this handler only
// sends the bytes, with Range and If-None-Match support. An entry evicted
// between that decision and this request is a 503: the client may retry.
//
// Every request must carry a token from caps for its canonical path in
// capability.Header (the ext_proc server adds it when it routes a hit
// here): without one, or with one for another path, expired or made under
// another key, the answer is a plain-text 403 and the cache is not read.
// A nil caps refuses every request.
func NewBlobHandler(c Getter, caps Checker, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.Default()
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req, err := goproxy.Parse(r.Method, r.RequestURI, 0)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		p := req.Path()
		err = errors.New("blob listener: no capability checker configured")
		if caps != nil {
			err = caps.Check(r.Header.Get(capability.Header), p)
		}
		if err != nil {
			log.Info("blob listener: request refused", "path", p, "remote", r.RemoteAddr, "err", err)
			http.Error(w, "forbidden: the blob listener serves only requests routed by modgate's ext_proc server", http.StatusForbidden)
			return
		}
		e, err := c.Get(r.Context(), p)
		if errors.Is(err, cache.ErrNotCached) {
			http.Error(w, "not in the cache any more: retry", http.StatusServiceUnavailable)
			return
		}
		if err != nil {
			log.Error("blob listener: reading the cache", "err", err)
			http.Error(w, "cache read failed", http.StatusInternalServerError)
			return
		}
		h := http.Header{
			"Content-Type":           {e.ContentType},
			"Etag":                   {e.ETag()},
			"X-Content-Type-Options": {"nosniff"},
			"X-Modgate-Cache":        {"hit"},
		}
		if e.Class.Immutable() {
			h.Set("Cache-Control", "public, max-age=31536000, immutable")
		} else {
			h.Set("Cache-Control", "no-cache")
		}
		cw := &countingWriter{ResponseWriter: w}
		if err := serveEntry(cw, r, gate.Decision{Action: gate.Hit, Entry: e, Status: e.Status, Header: h}); err != nil {
			panic(http.ErrAbortHandler)
		}
	})
}
