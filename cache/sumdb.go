package cache

import (
	"context"
	"fmt"
	"io"
	"net/http"

	"github.com/modgate/modgate/goproxy"
)

// The checksum database's lookups and tiles are cached under the keys of
// the go command's requests for them (/sumdb/NAME/lookup/…,
// /sumdb/NAME/tile/…), and only once proven: by the verifier's
// sumdb.Client, which hands over what it verified (StoreSumDB), or by the
// processor's check of an answer it fetched for a client. So the record
// modgate fetched to verify a module answers the go command's lookup of
// the same record, and the other way round: one upstream request for
// both, and never a wrong answer kept for a day.

// SumDBFetch returns fetch, a reader of checksum database name's paths
// (/lookup/…, /tile/…, /latest), that answers the lookups and tiles the
// cache holds from it. What fetch returns is not stored: its reader (the
// verifier's Client) checks it first and stores it with StoreSumDB. Any
// failure to use the cache goes to fetch as before.
func (c *Cache) SumDBFetch(name string, fetch func(ctx context.Context, p string) ([]byte, error)) func(ctx context.Context, p string) ([]byte, error) {
	return func(ctx context.Context, p string) ([]byte, error) {
		key, ok := sumDBKey("/sumdb/" + name + p)
		if !ok {
			return fetch(ctx, p)
		}
		if e, err := c.Get(ctx, key); err == nil {
			if e.Fresh && e.Status == http.StatusOK {
				if data, err := readSumDBEntry(e); err == nil {
					return data, nil
				}
			} else {
				e.Close()
			}
		}
		return fetch(ctx, p)
	}
}

// StoreSumDB caches data, a lookup or tile that a checksum database client
// has verified, named as sumdb.ClientOps.WriteCache names it
// ("NAME/lookup/M@V", "NAME/tile/…"), unless the cache holds it already.
// Failing to cache costs a later fetch, nothing more, so it is only
// logged.
func (c *Cache) StoreSumDB(ctx context.Context, file string, data []byte) {
	key, ok := sumDBKey("/sumdb/" + file)
	if !ok {
		return
	}
	if _, ok := c.Peek(key); ok {
		return
	}
	w := c.NewWriter(key, SumDB, http.StatusOK, "text/plain; charset=utf-8")
	if _, err := w.Write(data); err != nil {
		w.Abort()
		c.log.Warn("cache: checksum database data not cached", "key", key, "err", err)
		return
	}
	e, err := w.Commit(ctx)
	if err != nil {
		c.log.Warn("cache: checksum database data not cached", "key", key, "err", err)
		return
	}
	e.Close()
}

// sumDBKey returns the cache key of a lookup or tile path
// (/sumdb/NAME/lookup/… or /sumdb/NAME/tile/…), in any escaping of it.
func sumDBKey(p string) (string, bool) {
	req, err := goproxy.Parse(http.MethodGet, p, 0)
	if err != nil || (req.Kind != goproxy.KindSumDBLookup && req.Kind != goproxy.KindSumDBTile) {
		return "", false
	}
	return req.Path(), true
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
