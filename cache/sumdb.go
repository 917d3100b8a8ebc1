package cache

import (
	"context"
	"fmt"
	"io"
	"net/http"

	"github.com/modgate/modgate/goproxy"
)

// SumDBFetch returns fetch, a reader of checksum database name's paths
// (/lookup/…, /tile/…, /latest), reading the lookups and tiles through c
// under the keys the go command's own requests for them have
// (/sumdb/NAME/…, as the processor caches them). So the record modgate
// fetched to verify a module answers the go command's lookup of the same
// record from the cache, and the other way round: one upstream request
// for both. Both readers check what they read (the verifier's
// sumdb.Client and the go command verify signatures and proofs), as they
// do for what the processor caches. Anything else, and any failure to use
// the cache, goes to fetch as before; failing to cache costs a later
// fetch, nothing more.
func (c *Cache) SumDBFetch(name string, fetch func(ctx context.Context, p string) ([]byte, error)) func(ctx context.Context, p string) ([]byte, error) {
	return func(ctx context.Context, p string) ([]byte, error) {
		req, err := goproxy.Parse(http.MethodGet, "/sumdb/"+name+p, 0)
		if err != nil || (req.Kind != goproxy.KindSumDBLookup && req.Kind != goproxy.KindSumDBTile) {
			return fetch(ctx, p)
		}
		key := req.Path()
		if e, err := c.Get(ctx, key); err == nil {
			if e.Fresh && e.Status == http.StatusOK {
				if data, err := readSumDBEntry(e); err == nil {
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
		class, _ := ClassOf(req)
		w := c.NewWriter(key, class, http.StatusOK, "text/plain; charset=utf-8")
		if _, err := w.Write(data); err != nil {
			w.Abort()
		} else if e, err := w.Commit(ctx); err == nil {
			e.Close()
		}
		return data, nil
	}
}

// readSumDBEntry reads e's body whole, and closes e. It was bounded when
// it was stored (by the processor, or fetch).
func readSumDBEntry(e *Entry) ([]byte, error) {
	defer e.Close()
	if b := e.Bytes(); b != nil {
		return b, nil
	}
	data, err := io.ReadAll(io.LimitReader(e.Reader(), e.Size))
	if err == nil && int64(len(data)) != e.Size {
		err = fmt.Errorf("cached %s: %d of %d bytes", e.Key, len(data), e.Size)
	}
	return data, err
}
