package gateway

import (
	"errors"
	"log/slog"
	"net/http"

	"github.com/modgate/modgate/cache"
	"github.com/modgate/modgate/extproc"
	"github.com/modgate/modgate/goproxy"
)

// Getter reads the cache. Get's error wraps fs.ErrNotExist when the key is
// not cached; the caller closes the Entry.
type Getter interface {
	Get(key string) (*cache.Entry, error)
}

// NewBlobHandler serves cached responses, and nothing else: it is the
// sidecar's blob listener, which Envoy is routed to (by the ext_proc
// server) for cache hits too large for an ImmediateResponse. The ext_proc
// server has already decided and audited the request; this handler only
// sends the bytes, with Range and If-None-Match support. An entry evicted
// between that decision and this request is a 503: the client may retry.
func NewBlobHandler(c Getter, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.Default()
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req, err := goproxy.Parse(r.Method, r.RequestURI, 0)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		e, err := c.Get(req.Path())
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
		if err := serveEntry(cw, r, extproc.Decision{Action: extproc.Hit, Entry: e, Status: e.Status, Header: h}); err != nil {
			panic(http.ErrAbortHandler)
		}
	})
}
