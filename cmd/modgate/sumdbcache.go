package main

import (
	"context"
	"fmt"
	"io"
	"net/http"

	"github.com/modgate/modgate/cache"
	"github.com/modgate/modgate/gate"
	"github.com/modgate/modgate/goproxy"
)

// sumDBFetch is how the verifier reads the checksum database: a path
// under the database's root (/lookup/…, /tile/…, /latest).
type sumDBFetch func(ctx context.Context, p string) ([]byte, error)

// throughCache makes fetch read the lookups and tiles of the checksum
// database name through c, under the keys the go command's own requests
// for them have (/sumdb/NAME/…, as the processor caches them). So the
// record modgate fetched to verify a module answers the go command's
// lookup of the same record from the cache, and the other way round: one
// upstream request for both. Both readers check what they read (the
// verifier's sumdb.Client and the go command verify signatures and
// proofs), as they do for what the processor caches. Anything else, and
// any failure to use the cache, goes to fetch as before.
func throughCache(c *cache.Cache, name string, fetch sumDBFetch) sumDBFetch {
	return func(ctx context.Context, p string) ([]byte, error) {
		req, err := goproxy.Parse(http.MethodGet, "/sumdb/"+name+p, 0)
		if err != nil || (req.Kind != goproxy.KindSumDBLookup && req.Kind != goproxy.KindSumDBTile) {
			return fetch(ctx, p)
		}
		key := req.Path()
		if e, err := c.Get(ctx, key); err == nil {
			if e.Fresh && e.Status == http.StatusOK {
				if data, err := readEntry(e); err == nil {
					return data, nil
				}
			} else {
				e.Close()
			}
		}
		data, err := fetch(ctx, p)
		if err != nil {
			return nil, err
		}
		// Failing to cache it costs a later fetch, nothing more.
		class, _ := cache.ClassOf(req)
		w := c.NewWriter(key, class, http.StatusOK, textPlain)
		if _, err := w.Write(data); err != nil {
			w.Abort()
		} else if e, err := w.Commit(ctx); err == nil {
			e.Close()
		}
		return data, nil
	}
}

// textPlain is the content type the checksum database serves.
const textPlain = "text/plain; charset=utf-8"

// readEntry reads e's body whole, up to the checksum database's limit,
// and closes it.
func readEntry(e *cache.Entry) ([]byte, error) {
	defer e.Close()
	if b := e.Bytes(); b != nil {
		return b, nil
	}
	data, err := io.ReadAll(io.LimitReader(e.Reader(), gate.MaxSumDBBytes+1))
	if err == nil && len(data) > gate.MaxSumDBBytes {
		err = fmt.Errorf("cached %s: over %d bytes", e.Key, gate.MaxSumDBBytes)
	}
	return data, err
}
