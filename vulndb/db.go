// Package vulndb refuses, or warns about, module versions that the Go
// vulnerability database lists as affected (policy.vulnerabilities), and
// keeps a checked, durable and honestly dated copy of that database
// (vulndb).
//
// The database is read in its OSV "v1" layout (index/db.json,
// index/modules.json, ID/GO-YYYY-NNNN.json) over https or from a file://
// directory. Every entry is parsed and checked before a new snapshot
// replaces the old: IDs GO-YYYY-NNNN, ecosystem Go, SEMVER ranges whose
// events alternate introduced and fixed (or last_affected) in increasing
// order, versions valid once "v" is put before them, package names valid
// module paths or the pseudo-modules stdlib and toolchain. One bad file
// refuses the whole update, as does an index/db.json older than the data
// held; the old data stays in memory and on disk. A refresh reads only
// index/db.json while its modified time is unchanged, and then only the
// entries that index/modules.json shows as new or changed.
//
// Matching is by module, not by package or symbol as govulncheck does: a
// version is affected if any entry lists its module at that version
// (OSV SEMVER semantics under golang.org/x/mod/semver, so a
// pseudo-version v1.2.4-0.2023… is before v1.2.4, and +incompatible is
// ignored in comparisons). Withdrawn entries are ignored. The standard
// library and the go command are not modules; their entries gate the
// toolchains the go command downloads as golang.org/toolchain
// (v0.0.1-go1.21.5.linux-amd64 is checked as Go 1.21.5 against both
// stdlib and toolchain entries), since a toolchain holds the standard
// library it compiles into programs. Exempt golang.org/toolchain to serve
// every toolchain.
//
// Freshness: Store.Age counts from the later of the database's modified
// time and, for an https source, the last refresh at which the source
// confirmed the data is current. Beyond vulndb.max_staleness the data is
// stale, and a deny policy with on_stale closed refuses every version it
// checks.
//
// Limits: index files at most 32 MiB, entries at most 1 MiB, at most
// 100,000 entries.
package vulndb

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/mod/semver"

	"github.com/modgate/modgate/internal/files"
)

// toolchainModule is the module the go command downloads Go toolchains
// as: golang.org/toolchain@v0.0.1-go1.21.5.linux-amd64.
const toolchainModule = "golang.org/toolchain"

// platformPattern is the end of a golang.org/toolchain version:
// .GOOS-GOARCH.
var platformPattern = regexp.MustCompile(`^\.[a-z0-9]+-[a-z0-9]+$`)

// fetchWorkers bounds the entries fetched at once.
const fetchWorkers = 8

// A Vuln is one vulnerability of a module version.
type Vuln struct {
	ID      string
	Summary string
	// Fixed is the lowest version above the one asked about that the
	// entry says fixes it, with "v"; "" if none is known. For
	// golang.org/toolchain it is a toolchain version for the same GOOS
	// and GOARCH.
	Fixed   string
	Aliases []string
}

// A DB is an immutable snapshot of the Go vulnerability database, every
// entry of it checked. It is safe for concurrent use.
type DB struct {
	modified time.Time
	fetched  time.Time
	entries  map[string]*entry      // by ID, withdrawn ones too
	byModule map[string][]moduleRef // by module path; withdrawn entries left out
	indexes  int64                  // bytes of the index files
}

// moduleRef is an entry's spans for one module.
type moduleRef struct {
	e     *entry
	spans []span // all versions if empty
}

func newDB(modified, fetched time.Time, entries map[string]*entry, indexBytes int64) *DB {
	db := &DB{modified: modified, fetched: fetched, entries: entries, byModule: make(map[string][]moduleRef), indexes: indexBytes}
	for _, e := range entries {
		if e.withdrawn {
			continue
		}
		for _, a := range e.affects {
			refs := db.byModule[a.path]
			if i := slices.IndexFunc(refs, func(r moduleRef) bool { return r.e == e }); i >= 0 {
				// Two affected blocks for one module: the union of their
				// spans; one with no ranges affects every version.
				if len(refs[i].spans) > 0 && len(a.spans) > 0 {
					refs[i].spans = append(slices.Clip(refs[i].spans), a.spans...)
				} else {
					refs[i].spans = nil
				}
				continue
			}
			db.byModule[a.path] = append(refs, moduleRef{e: e, spans: a.spans})
		}
	}
	return db
}

// Modified is the database's own modified time, from index/db.json.
func (db *DB) Modified() time.Time { return db.modified }

// Fetched is when modgate read this data from its source.
func (db *DB) Fetched() time.Time { return db.fetched }

// Len is the number of entries, withdrawn ones included.
func (db *DB) Len() int { return len(db.entries) }

// Size is the bytes of JSON the snapshot was read from: the two indexes
// and every entry.
func (db *DB) Size() int64 {
	n := db.indexes
	for _, e := range db.entries {
		n += e.size
	}
	return n
}

// IDs returns the IDs of the entries, sorted.
func (db *DB) IDs() []string {
	ids := make([]string, 0, len(db.entries))
	for id := range db.entries {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// Vulns returns the vulnerabilities, sorted by ID, that affect the module
// version path@version: any valid semantic version, pseudo-versions,
// prereleases and +incompatible included. Withdrawn entries are ignored.
// Matching is by module: an entry that affects some package of the module
// affects the module.
//
// Versions of golang.org/toolchain (v0.0.1-go1.21.5.linux-amd64) are
// matched against the entries of both stdlib and toolchain at that Go
// version: a toolchain holds the standard library it compiles into
// programs, and the go command. An invalid version matches nothing.
func (db *DB) Vulns(path, version string) []Vuln {
	if path == toolchainModule {
		gov, suffix, ok := parseToolchainVersion(version)
		if !ok {
			return nil
		}
		vs := append(db.match(stdlibPath, gov), db.match(toolchainPath, gov)...)
		for i := range vs {
			if vs[i].Fixed != "" {
				vs[i].Fixed = toolchainVersion(vs[i].Fixed, suffix)
			}
		}
		return sortVulns(vs)
	}
	return sortVulns(db.match(path, version))
}

func (db *DB) match(path, version string) []Vuln {
	if !semver.IsValid(version) {
		return nil
	}
	var vs []Vuln
	for _, r := range db.byModule[path] {
		fixed, ok := affected(r.spans, version)
		if !ok {
			continue
		}
		vs = append(vs, Vuln{ID: r.e.id, Summary: r.e.summary, Fixed: fixed, Aliases: slices.Clone(r.e.aliases)})
	}
	return vs
}

// affected reports whether v is in one of the spans (every version if
// there are none), and the fix that takes it out of all of them: the
// highest fix of the spans holding it, "" if one of them has none.
func affected(spans []span, v string) (fixed string, ok bool) {
	if len(spans) == 0 {
		return "", true
	}
	open := false
	for _, s := range spans {
		if !s.contains(v) {
			continue
		}
		ok = true
		if s.fixed == "" {
			open = true
		} else if fixed == "" || semver.Compare(s.fixed, fixed) > 0 {
			fixed = s.fixed
		}
	}
	if open {
		fixed = ""
	}
	return fixed, ok
}

// sortVulns sorts vs by ID, merging duplicates (an entry of both stdlib
// and toolchain): the merged Fixed is the higher one, or none.
func sortVulns(vs []Vuln) []Vuln {
	slices.SortFunc(vs, func(a, b Vuln) int { return strings.Compare(a.ID, b.ID) })
	out := vs[:0]
	for _, v := range vs {
		if n := len(out); n > 0 && out[n-1].ID == v.ID {
			if out[n-1].Fixed != "" && (v.Fixed == "" || semver.Compare(v.Fixed, out[n-1].Fixed) > 0) {
				out[n-1].Fixed = v.Fixed
			}
			continue
		}
		out = append(out, v)
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// parseToolchainVersion splits a golang.org/toolchain version,
// v0.0.1-go1.21.5.linux-amd64, into the Go version as a semantic version
// (v1.21.5) and the suffix (.linux-amd64).
func parseToolchainVersion(v string) (gov, suffix string, ok bool) {
	rest, ok := strings.CutPrefix(v, "v0.0.1-go")
	if !ok {
		return "", "", false
	}
	i := strings.LastIndexByte(rest, '.')
	if i < 0 || !platformPattern.MatchString(rest[i:]) {
		return "", "", false
	}
	gov, ok = goToSemver(rest[:i])
	if !ok {
		return "", "", false
	}
	return gov, rest[i:], true
}

// goToSemver turns a Go release number without "go" (1.21.5, 1.21,
// 1.22rc1, 1.21beta2) into a semantic version (v1.21.5, v1.21.0,
// v1.22.0-rc.1, v1.21.0-beta.2), as the database writes them.
func goToSemver(s string) (string, bool) {
	num, pre := s, ""
	for _, kind := range []string{"rc", "beta", "alpha"} {
		if i := strings.Index(s, kind); i >= 0 {
			n := s[i+len(kind):]
			if n == "" || strings.TrimLeft(n, "0123456789") != "" {
				return "", false
			}
			num, pre = s[:i], "-"+kind+"."+n
			break
		}
	}
	parts := strings.Split(num, ".")
	for _, p := range parts {
		if p == "" || strings.TrimLeft(p, "0123456789") != "" {
			return "", false
		}
	}
	switch len(parts) {
	case 2:
		num += ".0"
	case 3:
	default:
		return "", false
	}
	v := "v" + num + pre
	if !semver.IsValid(v) || semver.Canonical(v) != v {
		return "", false
	}
	return v, true
}

// toolchainVersion is the golang.org/toolchain version of the Go release
// with semantic version v (v1.21.6, v1.22.0-rc.1) for suffix
// (.linux-amd64).
func toolchainVersion(v, suffix string) string {
	num, pre, _ := strings.Cut(strings.TrimPrefix(v, "v"), "-")
	if pre != "" {
		// v1.22.0-rc.1 is go1.22rc1.
		num = strings.TrimSuffix(num, ".0")
		pre = strings.Replace(pre, ".", "", 1)
	}
	return "v0.0.1-go" + num + pre + suffix
}

// A Source is where Load reads the database.
type Source struct {
	// URL is the base URL: https, http on loopback, or file:///dir.
	URL string
	// Get reads a URL under the base, returning the body. A missing file
	// is an error that errors.Is fs.ErrNotExist. Default: an HTTP GET, or
	// a file read for file://, that refuses index files over 32 MiB and
	// entries over 1 MiB. Whatever Get returns, Load refuses files over
	// those limits.
	Get func(ctx context.Context, url string) ([]byte, error)
}

// Load reads and checks the whole database at src. It fails, returning
// no DB, if any file is missing, too large or malformed.
func Load(ctx context.Context, src Source) (*DB, error) {
	l, err := load(ctx, src, nil, time.Now())
	if err != nil {
		return nil, err
	}
	return l.db, nil
}

// loaded is the result of load: the DB and the files read for it.
type loaded struct {
	db      *DB
	dbJSON  []byte
	modJSON []byte
	fresh   map[string][]byte // ID → entry JSON, for entries fetched (not reused)
}

// load reads the database at src. Entries of prev whose modified time the
// modules index repeats are reused, not fetched again.
func load(ctx context.Context, src Source, prev *DB, now time.Time) (*loaded, error) {
	f, err := newFetcher(src)
	if err != nil {
		return nil, err
	}
	dbJSON, err := f.fetch(ctx, "index/db.json", maxIndexBytes)
	if err != nil {
		return nil, err
	}
	modified, err := parseDBIndex(dbJSON)
	if err != nil {
		return nil, err
	}
	return loadEntries(ctx, f, prev, modified, dbJSON, now)
}

// loadEntries reads index/modules.json and the entries it lists, for a
// database modified at modified.
func loadEntries(ctx context.Context, f fetcher, prev *DB, modified time.Time, dbJSON []byte, now time.Time) (*loaded, error) {
	modJSON, err := f.fetch(ctx, "index/modules.json", maxIndexBytes)
	if err != nil {
		return nil, err
	}
	ids, err := parseModulesIndex(modJSON)
	if err != nil {
		return nil, err
	}
	entries := make(map[string]*entry, len(ids))
	var need []string
	for id, m := range ids {
		if m.After(modified) {
			return nil, fmt.Errorf("index/modules.json: %s modified at %v, after the database (%v)", id, m, modified)
		}
		if prev != nil {
			if e, ok := prev.entries[id]; ok && e.modified.Equal(m) {
				entries[id] = e
				continue
			}
		}
		need = append(need, id)
	}
	slices.Sort(need)
	fresh, err := fetchEntries(ctx, f, need, ids, entries)
	if err != nil {
		return nil, err
	}
	db := newDB(modified, now, entries, int64(len(dbJSON)+len(modJSON)))
	return &loaded{db: db, dbJSON: dbJSON, modJSON: modJSON, fresh: fresh}, nil
}

// fetchEntries fetches and parses the entries need, adding them to
// entries, fetchWorkers at a time. The first error stops it.
func fetchEntries(ctx context.Context, f fetcher, need []string, ids map[string]time.Time, entries map[string]*entry) (map[string][]byte, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg    sync.WaitGroup
		next  = make(chan string)
		mu    sync.Mutex // guards fresh, entries, first
		fresh = make(map[string][]byte, len(need))
		first error
	)
	fail := func(err error) {
		mu.Lock()
		if first == nil {
			first = err
			cancel()
		}
		mu.Unlock()
	}
	for range min(fetchWorkers, len(need)) {
		wg.Go(func() {
			for id := range next {
				data, err := f.fetch(ctx, "ID/"+id+".json", maxEntryBytes)
				if err != nil {
					fail(err)
					continue
				}
				e, err := parseEntry(id, data)
				if err != nil {
					fail(err)
					continue
				}
				if !e.modified.Equal(ids[id]) {
					fail(fmt.Errorf("ID/%s.json: modified %v, index/modules.json says %v", id, e.modified, ids[id]))
					continue
				}
				mu.Lock()
				fresh[id] = data
				entries[id] = e
				mu.Unlock()
			}
		})
	}
feed:
	for _, id := range need {
		select {
		case next <- id:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if first != nil {
		return nil, first
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return fresh, nil
}

// fetcher reads the files of one source.
type fetcher struct {
	base string
	get  func(ctx context.Context, url string) ([]byte, error)
}

func newFetcher(src Source) (fetcher, error) {
	base, err := parseSourceURL(src.URL)
	if err != nil {
		return fetcher{}, fmt.Errorf("vulndb source: %w", err)
	}
	get := src.Get
	if get == nil {
		get = defaultGet(http.DefaultClient)
	}
	return fetcher{base: base, get: get}, nil
}

// fetch reads the file rel under the base, refusing more than max bytes.
func (f fetcher) fetch(ctx context.Context, rel string, max int64) ([]byte, error) {
	data, err := f.get(ctx, f.base+"/"+rel)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", rel, err)
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("get %s: longer than %d bytes", rel, max)
	}
	return data, nil
}

// limitFor is the most bytes the default Get reads from a URL.
func limitFor(u string) int64 {
	if strings.Contains(u, "/index/") {
		return maxIndexBytes
	}
	return maxEntryBytes
}

// defaultGet reads file:// URLs from disk and others with client, with
// the limits of limitFor.
func defaultGet(client *http.Client) func(ctx context.Context, u string) ([]byte, error) {
	return func(ctx context.Context, u string) ([]byte, error) {
		max := limitFor(u)
		pu, err := url.Parse(u)
		if err != nil {
			return nil, err
		}
		if pu.Scheme == "file" {
			return files.ReadMax(pu.Path, max)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return nil, err
		}
		resp, err := client.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		switch {
		case resp.StatusCode == http.StatusNotFound:
			return nil, fmt.Errorf("GET %s: %s: %w", pu.Redacted(), resp.Status, fs.ErrNotExist)
		case resp.StatusCode != http.StatusOK:
			return nil, fmt.Errorf("GET %s: %s", pu.Redacted(), resp.Status)
		}
		data, err := io.ReadAll(io.LimitReader(resp.Body, max+1))
		if err != nil {
			return nil, fmt.Errorf("GET %s: %w", pu.Redacted(), err)
		}
		if int64(len(data)) > max {
			return nil, fmt.Errorf("GET %s: longer than %d bytes", pu.Redacted(), max)
		}
		return data, nil
	}
}

// errRollback is a source whose database is older than the one held.
var errRollback = errors.New("the database's modified time went backwards")
