package repocheck

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net/http"
	"strings"
	"sync"

	"golang.org/x/mod/module"

	"github.com/modgate/modgate/verify"
)

// Database is a SumDB: golang.org/x/mod/sumdb's Client, through package
// verify, with its verified state (the tree it trusts, the tiles and
// records it checked) kept in a directory, as the go command keeps its own.
type Database struct {
	v *verify.Verifier

	mu      sync.Mutex
	missing map[string]bool // lookup paths the database answered "not found"
}

// OpenDatabase opens the checksum database named by key (a note verifier
// key, or the name of a known database), read with fetch: a path of the
// database ("/lookup/…", "/tile/…", "/latest") in, its bytes out, and an
// error wrapping fs.ErrNotExist when the database has no such path (404,
// 410). Its state is kept in dir. ctx bounds every fetch.
func OpenDatabase(ctx context.Context, key, dir string, fetch func(ctx context.Context, path string) ([]byte, error)) (*Database, error) {
	d := &Database{missing: map[string]bool{}}
	v, err := verify.New(ctx, verify.Config{
		Key: key,
		Dir: dir,
		Fetch: func(ctx context.Context, path string) ([]byte, error) {
			data, err := fetch(ctx, path)
			if errors.Is(err, fs.ErrNotExist) {
				d.mu.Lock()
				d.missing[path] = true
				d.mu.Unlock()
			}
			return data, err
		},
	})
	if err != nil {
		return nil, err
	}
	d.v = v
	return d, nil
}

// Name returns the database's name.
func (d *Database) Name() string { return d.v.Name() }

// Close releases the state directory.
func (d *Database) Close() error { return d.v.Close() }

// Lookup returns the database's lines for path at version; a version the
// database does not know is an error wrapping fs.ErrNotExist.
func (d *Database) Lookup(_ context.Context, path, version string) ([]string, error) {
	lines, err := d.v.Lookup(path, version)
	if err == nil {
		return lines, nil
	}
	ep, perr := module.EscapePath(path)
	ev, verr := module.EscapeVersion(version)
	if perr == nil && verr == nil {
		d.mu.Lock()
		missing := d.missing["/lookup/"+ep+"@"+ev]
		d.mu.Unlock()
		if missing {
			return nil, fmt.Errorf("%s@%s: %w", path, version, fs.ErrNotExist)
		}
	}
	return nil, err
}

// maxFetch bounds one answer of the database: a record, a tile, a tree.
const maxFetch = 1 << 20

// HTTPFetch returns a fetch function for OpenDatabase that reads the
// database's paths under base (a database's URL, or a proxy's
// /sumdb/NAME), sending header with each request (credentials).
func HTTPFetch(client *http.Client, base string, header http.Header) func(ctx context.Context, path string) ([]byte, error) {
	base = strings.TrimSuffix(base, "/")
	return func(ctx context.Context, path string) ([]byte, error) {
		req, err := http.NewRequestWithContext(ctx, "GET", base+path, nil)
		if err != nil {
			return nil, err
		}
		maps.Copy(req.Header, header)
		resp, err := client.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusOK:
		case http.StatusNotFound, http.StatusGone:
			return nil, fmt.Errorf("GET %s: %s: %w", base+path, resp.Status, fs.ErrNotExist)
		default:
			msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			return nil, fmt.Errorf("GET %s: %s: %s", base+path, resp.Status, strings.TrimSpace(string(msg)))
		}
		data, err := io.ReadAll(io.LimitReader(resp.Body, maxFetch+1))
		if err == nil && len(data) > maxFetch {
			err = fmt.Errorf("GET %s: more than %d bytes", base+path, maxFetch)
		}
		return data, err
	}
}
