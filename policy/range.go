package policy

import (
	"fmt"
	"strings"

	"golang.org/x/mod/semver"
)

// A Range is a set of module versions written as comparators that must all
// hold, separated by white space:
//
//	<v1.4.2             below v1.4.2
//	>=v2.0.0 <v2.3.0    from v2.0.0, below v2.3.0
//	=v1.0.0             exactly v1.0.0
//	v1.0.0              exactly v1.0.0
//
// The operators are <, <=, >, >= and = (or none, for =). Each bound is a
// canonical semantic version (v1.2.0, not v1.2) without build metadata;
// the operator and its bound are written without a space between them.
//
// Versions compare as golang.org/x/mod/semver says, and nothing more:
//
//   - a prerelease sorts before its release, so "<v1.2.4" holds for
//     v1.2.4-rc.1 and ">=v2.0.0" does not hold for v2.0.0-beta.1;
//   - build metadata is ignored, so v2.0.0+incompatible is in ">=v2.0.0"
//     and in "=v2.0.0" (a module path has either the one or the other);
//   - an invalid version is in no range.
//
// The zero Range has no comparators and holds every valid version.
// A Range is immutable and safe for concurrent use.
type Range struct {
	cmps []comparator
}

// A comparator is one operator and its bound.
type comparator struct {
	op      string // "<", "<=", ">", ">=", "=", or "" (exact, as "=")
	version string // canonical, no build metadata
}

// ops are the comparison operators, longest first so that "<=" is not
// read as "<" followed by "=v1.0.0".
var ops = []string{"<=", ">=", "<", ">", "="}

// ParseRange parses a range in the syntax described at [Range]. The error
// quotes the range and says what to write instead.
func ParseRange(s string) (Range, error) {
	fields := strings.Fields(s)
	if len(fields) == 0 {
		return Range{}, fmt.Errorf("range %q: empty: want comparators such as \"<v1.4.2\" or \">=v2.0.0 <v2.3.0\"", s)
	}
	r := Range{cmps: make([]comparator, 0, len(fields))}
	for _, f := range fields {
		var c comparator
		for _, op := range ops {
			if v, ok := strings.CutPrefix(f, op); ok {
				c = comparator{op: op, version: v}
				break
			}
		}
		if c.op == "" {
			c.version = f
		}
		if err := checkBound(c); err != nil {
			return Range{}, fmt.Errorf("range %q: %v", s, err)
		}
		r.cmps = append(r.cmps, c)
	}
	return r, nil
}

// checkBound checks that c's bound is a canonical version without build
// metadata.
func checkBound(c comparator) error {
	v := c.version
	switch {
	case v == "":
		return fmt.Errorf("operator %q without a version: write it as %q, with no space", c.op, c.op+"v1.2.3")
	case !semver.IsValid(v):
		return fmt.Errorf("%q is not a semantic version such as v1.2.3", v)
	case semver.Build(v) != "":
		return fmt.Errorf("%q has build metadata, which comparisons ignore: write %q", v, semver.Canonical(v))
	case semver.Canonical(v) != v:
		return fmt.Errorf("%q is not canonical: write %q", v, semver.Canonical(v))
	}
	return nil
}

// Contains reports whether v is a valid semantic version for which every
// comparator of r holds.
func (r Range) Contains(v string) bool {
	if !semver.IsValid(v) {
		return false
	}
	for _, c := range r.cmps {
		cmp := semver.Compare(v, c.version)
		var ok bool
		switch c.op {
		case "<":
			ok = cmp < 0
		case "<=":
			ok = cmp <= 0
		case ">":
			ok = cmp > 0
		case ">=":
			ok = cmp >= 0
		default: // "=" or ""
			ok = cmp == 0
		}
		if !ok {
			return false
		}
	}
	return true
}

// String returns r as ParseRange accepts it: its comparators as written,
// separated by one space. ParseRange(r.String()) is r again.
func (r Range) String() string {
	parts := make([]string, len(r.cmps))
	for i, c := range r.cmps {
		parts[i] = c.op + c.version
	}
	return strings.Join(parts, " ")
}
