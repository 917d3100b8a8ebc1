package cache

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"testing"

	"github.com/modgate/modgate/goproxy"
)

// TestSumDBFetch checks that the verifier's reads of lookups and tiles
// share the cache entries of the go command's requests for them, and
// that only what the verifier proved is kept: a read stores nothing; what
// StoreSumDB stores (a verified record or tile) answers the next read
// without a fetch and the go command's request for it; /latest and
// failures are never kept.
func TestSumDBFetch(t *testing.T) {
	c := openCache(t, Config{HotBytes: 1 << 20, Logger: slog.New(slog.DiscardHandler)})
	fetched := map[string]int{}
	failing := errors.New("database down")
	fetch := c.SumDBFetch("sum.example.com", func(ctx context.Context, p string) ([]byte, error) {
		fetched[p]++
		if p == "/lookup/example.com/down@v1.0.0" {
			return nil, failing
		}
		return []byte("data of " + p), nil
	})
	ctx := context.Background()
	read := func(p string) {
		t.Helper()
		data, err := fetch(ctx, p)
		if err != nil || string(data) != "data of "+p {
			t.Fatalf("fetch(%q) = %q, %v; want its data", p, data, err)
		}
	}

	// Upper case is escaped with "!" by the database's client, "%21" in
	// the go command's requests: one key for both.
	const lookup = "/lookup/example.com/!m@v1.0.0"
	read(lookup)
	read(lookup) // not yet verified: fetched again
	c.StoreSumDB(ctx, "sum.example.com"+lookup, []byte("data of "+lookup))
	c.StoreSumDB(ctx, "sum.example.com"+lookup, []byte("again")) // held already: kept as it was
	read(lookup)
	read("/tile/8/0/001")
	c.StoreSumDB(ctx, "sum.example.com/tile/8/0/001", []byte("data of /tile/8/0/001"))
	read("/tile/8/0/001")
	read("/latest")
	c.StoreSumDB(ctx, "sum.example.com/latest", []byte("data of /latest")) // not a record or tile: ignored
	read("/latest")
	if _, err := fetch(ctx, "/lookup/example.com/down@v1.0.0"); !errors.Is(err, failing) {
		t.Errorf("a failed fetch: %v, want its error", err)
	}
	if _, err := fetch(ctx, "/lookup/example.com/down@v1.0.0"); !errors.Is(err, failing) {
		t.Errorf("a failed fetch again: %v, want its error (not cached)", err)
	}
	for p, want := range map[string]int{lookup: 2, "/tile/8/0/001": 1, "/latest": 2, "/lookup/example.com/down@v1.0.0": 2} {
		if fetched[p] != want {
			t.Errorf("%s fetched %d times, want %d", p, fetched[p], want)
		}
	}

	// The go command's request for the record is a hit on the same entry.
	req, err := goproxy.Parse(http.MethodGet, "/sumdb/sum.example.com/lookup/example.com/%21m@v1.0.0", 0)
	if err != nil {
		t.Fatal(err)
	}
	e, err := c.Get(ctx, req.Path())
	if err != nil {
		t.Fatalf("the go command's lookup: %v, want the entry StoreSumDB filled", err)
	}
	defer e.Close()
	if string(e.Bytes()) != "data of "+lookup || e.Class != SumDB {
		t.Errorf("entry %q of class %v, want the record, class sumdb", e.Bytes(), e.Class)
	}
	if _, err := c.Get(ctx, "/sumdb/sum.example.com/latest"); err == nil {
		t.Error("/latest was cached")
	}
}
