package inventory

import (
	"bytes"
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/modgate/modgate/policy"
)

// A Fetch is what the inventory knows of one identity's fetches of one
// module version.
type Fetch struct {
	Module   string    `json:"module"`
	Version  string    `json:"version"`
	Identity string    `json:"identity"`
	First    time.Time `json:"first"` // UTC
	Last     time.Time `json:"last"`  // UTC
	Count    int64     `json:"count"`
	// Kinds are the kinds fetched (goproxy's names: info, mod, zip,
	// sumdb-lookup…; "other" for a kind it does not name), in goproxy's
	// order. The slice is shared between answers: do not modify it.
	Kinds []string `json:"kinds"`
}

// A ModuleCount is how often a module was fetched.
type ModuleCount struct {
	Module     string `json:"module"`
	Count      int64  `json:"count"`      // fetches of all its versions
	Versions   int    `json:"versions"`   // versions fetched
	Identities int    `json:"identities"` // distinct identities that fetched it
}

// A VersionMatch selects versions: the empty string (every version), an
// exact version (v1.2.3, matched as written), or a range that
// policy.ParseRange accepts (<v1.2.4, >=v1.0.0 <v1.2.0, =v1.0.0).
type VersionMatch struct {
	exact string
	rng   *policy.Range
}

// ParseVersionMatch parses s as a VersionMatch: a range if it holds an
// operator or a space, else an exact version.
func ParseVersionMatch(s string) (VersionMatch, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return VersionMatch{}, nil
	}
	if !strings.ContainsAny(s, "<>= \t") {
		return VersionMatch{exact: s}, nil
	}
	r, err := policy.ParseRange(s)
	if err != nil {
		return VersionMatch{}, err
	}
	return VersionMatch{rng: &r}, nil
}

// Contains reports whether m selects version v.
func (m VersionMatch) Contains(v string) bool {
	switch {
	case m.rng != nil:
		return m.rng.Contains(v)
	case m.exact != "":
		return v == m.exact
	}
	return true
}

// Who returns who fetched the versions of module that versionOrRange
// selects (see ParseVersionMatch), sorted by version (semver order) and
// identity. The error is for a malformed range.
func (inv *Inventory) Who(module, versionOrRange string) ([]Fetch, error) {
	m, err := ParseVersionMatch(versionOrRange)
	if err != nil {
		return nil, fmt.Errorf("who %s: %w", module, err)
	}
	return inv.Affected(module, m.Contains), nil
}

// Affected returns who fetched the versions of module for which contains
// reports true (the ranges of a vulnerability, say), with when first and
// last, sorted like Who. contains is called once per version, with
// inv's read lock held: it must not call inv.
func (inv *Inventory) Affected(module string, contains func(version string) bool) []Fetch {
	inv.mu.RLock()
	defer inv.mu.RUnlock()
	m := inv.modules[module]
	if m == nil {
		return nil
	}
	// Sort the few versions, then the identities of each: far cheaper
	// than comparing every pair of fetches by semver.
	var versions []string
	n := 0
	for ver, ids := range m.versions {
		if contains(ver) {
			versions = append(versions, ver)
			n += len(ids)
		}
	}
	slices.SortFunc(versions, versionCompare)
	out := make([]Fetch, 0, n)
	ids := make([]string, 0)
	for _, ver := range versions {
		stats := m.versions[ver]
		ids = ids[:0]
		for id := range stats {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		for _, id := range ids {
			st := stats[id]
			out = append(out, Fetch{
				Module:   module,
				Version:  ver,
				Identity: id,
				First:    time.Unix(0, st.first).UTC(),
				Last:     time.Unix(0, st.last).UTC(),
				Count:    st.count,
				Kinds:    st.kinds.names(),
			})
		}
	}
	return out
}

// Top returns the n most fetched modules, most first (ties by path). n
// <= 0 returns none.
func (inv *Inventory) Top(n int) []ModuleCount {
	return inv.Search("", n)
}

// Search returns the n most fetched modules whose path contains substr,
// compared case-insensitively, most fetched first (ties by path); every
// module if substr is "", none if it holds a newline. n <= 0 returns none.
func (inv *Inventory) Search(substr string, n int) []ModuleCount {
	if n <= 0 || strings.Contains(substr, "\n") {
		return nil
	}
	inv.mu.RLock()
	defer inv.mu.RUnlock()
	best := topN{n: n}
	if substr == "" {
		for i, m := range inv.pathEntries {
			best.offer(inv.pathMods[i], m)
		}
	} else {
		needle := []byte(strings.ToLower(substr))
		for from := 0; from < len(inv.paths); {
			i := bytes.Index(inv.paths[from:], needle)
			if i < 0 {
				break
			}
			line, _ := slices.BinarySearch(inv.pathEnds, from+i)
			best.offer(inv.pathMods[line], inv.pathEntries[line])
			from = inv.pathEnds[line] + 1
		}
	}
	all := best.sorted()
	out := make([]ModuleCount, len(all))
	for i, c := range all {
		ids := make(map[string]struct{})
		for _, vids := range c.m.versions {
			for id := range vids {
				ids[id] = struct{}{}
			}
		}
		out[i] = ModuleCount{Module: c.module, Count: c.m.count, Versions: len(c.m.versions), Identities: len(ids)}
	}
	return out
}

// moduleRef is a module and its entry.
type moduleRef struct {
	module string
	m      *moduleEntry
}

// before orders modules most fetched first, ties by path.
func (a moduleRef) before(b moduleRef) bool {
	return cmp.Or(cmp.Compare(b.m.count, a.m.count), strings.Compare(a.module, b.module)) < 0
}

// topN keeps the n modules offered that come first: a heap whose root is
// the last of them, so that most offers cost one comparison.
type topN struct {
	n    int
	heap []moduleRef
}

func (t *topN) offer(module string, m *moduleEntry) {
	r := moduleRef{module, m}
	h := t.heap
	if len(h) < t.n {
		h = append(h, r)
		for i := len(h) - 1; i > 0; { // up
			parent := (i - 1) / 2
			if !h[parent].before(h[i]) {
				break
			}
			h[parent], h[i] = h[i], h[parent]
			i = parent
		}
		t.heap = h
		return
	}
	if !r.before(h[0]) {
		return
	}
	h[0] = r
	for i := 0; ; { // down
		last, l, rt := i, 2*i+1, 2*i+2
		if l < len(h) && h[last].before(h[l]) {
			last = l
		}
		if rt < len(h) && h[last].before(h[rt]) {
			last = rt
		}
		if last == i {
			break
		}
		h[i], h[last] = h[last], h[i]
		i = last
	}
}

// sorted returns the modules kept, first first.
func (t *topN) sorted() []moduleRef {
	slices.SortFunc(t.heap, func(a, b moduleRef) int {
		if a.before(b) {
			return -1
		}
		return 1
	})
	return t.heap
}
