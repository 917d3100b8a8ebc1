// Package policy decides, for a parsed request, whether modgate may serve
// it and which class of upstream may see it.
//
// The rules, in order:
//
//   - A checksum-database request names a database that is not allow-listed:
//     deny. (The go command treats a 403 on /sumdb/NAME/supported as "database
//     unavailable" and fails closed; a 404 would send it to the database
//     directly, around the gateway.)
//   - A checksum-database lookup for a private module path: deny. Private
//     paths never reach a public database, not even as a lookup.
//   - /sumdb/NAME/supported for an allow-listed name: answered locally.
//   - Any other checksum-database request: the public route.
//   - A module request whose path matches the private patterns: the private
//     route; otherwise the public route.
//
// Denials are never "not found": a 404 or 410 makes the go command fall back
// to the next entry of its GOPROXY list, which may leak the path.
//
// A Policy is immutable and safe for concurrent use.
package policy

import (
	"fmt"
	"path"
	"slices"
	"strings"

	"golang.org/x/mod/module"

	"github.com/modgate/modgate/goproxy"
)

// Route is where an allowed request may go.
type Route uint8

const (
	// Public requests go to the public upstreams.
	Public Route = iota + 1
	// Private requests go to the private upstreams only.
	Private
	// Local requests are answered by modgate itself.
	Local
)

func (r Route) String() string {
	switch r {
	case Public:
		return "public"
	case Private:
		return "private"
	case Local:
		return "local"
	}
	return fmt.Sprintf("Route(%d)", r)
}

// Rule identifiers, as they appear in Verdict.Rule and in audit events.
const (
	RuleSumDBAllowList = "sumdb-allowlist"
	RulePrivateSumDB   = "private-sumdb"
)

// A Verdict is the policy's answer for one request.
type Verdict struct {
	Allow  bool
	Route  Route  // set when Allow
	Rule   string // the rule that denied, when !Allow
	Reason string // one line for the client, when !Allow
}

// Config configures a Policy. Its zero value works: no private paths and
// no checksum database allowed.
type Config struct {
	// Private lists module path patterns in GOPRIVATE syntax (globs matched
	// against path prefixes by module.MatchPrefixPatterns). Each entry may
	// itself be a comma-separated list. Default: none.
	Private []string
	// SumDBs lists the checksum database names clients may reach through
	// modgate. Default: none.
	SumDBs []string
}

// A Policy applies Config to requests.
type Policy struct {
	private string // comma-separated patterns, as MatchPrefixPatterns wants
	sumdbs  []string
}

// New checks cfg and returns its Policy.
func New(cfg Config) (*Policy, error) {
	var patterns []string
	for _, entry := range cfg.Private {
		for p := range strings.SplitSeq(entry, ",") {
			p = strings.TrimSpace(p)
			if p == "" {
				continue
			}
			// MatchPrefixPatterns silently ignores malformed globs; refuse them
			// here so a typo never turns a private path public.
			if _, err := path.Match(p, ""); err != nil {
				return nil, fmt.Errorf("private: bad pattern %q: %w", p, err)
			}
			patterns = append(patterns, p)
		}
	}
	for _, name := range cfg.SumDBs {
		if err := module.CheckPath(name); err != nil || strings.Contains(name, "/") {
			return nil, fmt.Errorf("sumdb: bad checksum database name %q: want a host name", name)
		}
	}
	return &Policy{
		private: strings.Join(patterns, ","),
		sumdbs:  slices.Clone(cfg.SumDBs),
	}, nil
}

// IsPrivate reports whether modulePath matches the private patterns.
func (p *Policy) IsPrivate(modulePath string) bool {
	return p.private != "" && module.MatchPrefixPatterns(p.private, modulePath)
}

// Decide applies the rules in the package comment to r.
func (p *Policy) Decide(r goproxy.Request) Verdict {
	if !r.Kind.IsSumDB() {
		if p.IsPrivate(r.Module) {
			return Verdict{Allow: true, Route: Private}
		}
		return Verdict{Allow: true, Route: Public}
	}
	if !slices.Contains(p.sumdbs, r.SumDB) {
		return Verdict{
			Rule:   RuleSumDBAllowList,
			Reason: fmt.Sprintf("checksum database %s is not served by this gateway", r.SumDB),
		}
	}
	switch r.Kind {
	case goproxy.KindSumDBLookup:
		if p.IsPrivate(r.Module) {
			return Verdict{
				Rule:   RulePrivateSumDB,
				Reason: fmt.Sprintf("%s is a private module: it is never looked up in a public checksum database", r.Module),
			}
		}
	case goproxy.KindSumDBSupported:
		return Verdict{Allow: true, Route: Local}
	}
	return Verdict{Allow: true, Route: Public}
}
