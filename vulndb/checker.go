package vulndb

import (
	"fmt"
	"strings"
	"time"

	"golang.org/x/mod/module"
	"golang.org/x/mod/semver"
)

// Rule names the vulnerability gate in denials and audit events.
const Rule = "vulnerabilities"

// Limits on a Reason.
const (
	maxReasonVulns   = 5  // vulnerabilities listed one a line
	maxReasonSummary = 80 // runes of a summary shown
	maxFixSteps      = 8  // rounds of looking for a version free of all
)

// A Verdict is the gate's answer for one module version.
type Verdict struct {
	// Action is "allow", "warn" (serve, with Warning) or "deny" (403).
	Action string
	// IDs are the vulnerabilities, sorted, that the database lists for the
	// version, whatever the Action: also those accepted or only warned
	// about. For the audit's vulnerability.id.
	IDs []string
	// Reason, when Action is "deny", is the 403 body: 1 to 8 lines of
	// plain text without a final newline.
	Reason string
	// Warning, when not empty, is the value of an HTTP Warning header for
	// the response: one or more warning-values `299 modgate "…"`.
	Warning string
}

// A Checker applies a Policy to the data of a Store. A nil *Checker allows
// everything. It is safe for concurrent use.
type Checker struct {
	p     compiled
	store *Store
}

// NewChecker returns a Checker for p over store. store may be nil only if
// p's action is off.
func NewChecker(p Policy, store *Store) (*Checker, error) {
	c, err := p.compile()
	if err != nil {
		return nil, err
	}
	if c.action != ActionOff && store == nil {
		return nil, fmt.Errorf("policy.vulnerabilities.action: %s needs the vulnerability database (vulndb)", c.action)
	}
	return &Checker{p: c, store: store}, nil
}

// Check decides whether to serve the module version path@version at now.
// It is for the requests that fetch a version: .info, .mod and .zip. It
// reads memory only.
//
// Exempt modules, and every module when the action is off, are allowed
// unchecked. Otherwise, when the Store's data is stale (or absent), a
// deny policy with on_stale closed refuses the version, saying so; with
// on_stale open, and for a warn policy, the version is checked against
// the data held and a warning added. A version the data lists as affected
// is refused (deny) or served with a Warning (warn), unless every
// vulnerability of it is accepted for the module at now.
func (c *Checker) Check(path, version string, now time.Time) Verdict {
	if c == nil || c.p.action == ActionOff {
		return Verdict{Action: ActionAllow}
	}
	if c.p.exempt != "" && module.MatchPrefixPatterns(c.p.exempt, path) {
		return Verdict{Action: ActionAllow}
	}
	what := path + " " + version
	db := c.store.Current()
	var warnings []string
	if age := c.store.ageAt(now); db == nil || age > c.store.cfg.MaxStaleness {
		why := fmt.Sprintf("the vulnerability database is %s old (max_staleness %s)", fmtAge(age), fmtDuration(c.store.cfg.MaxStaleness))
		if db == nil {
			why = "modgate has not loaded the vulnerability database yet"
		}
		if c.p.action == ActionDeny && c.store.cfg.OnStale == OnStaleClosed {
			return Verdict{
				Action: ActionDeny,
				Reason: fmt.Sprintf("%s: %s: refusing versions it cannot vouch for\n%s", what, why, "modgate checks module versions against the Go vulnerability database (vulndb.on_stale: closed); try again later or ask the gateway's administrators"),
			}
		}
		warnings = append(warnings, warning(why+": versions are not fully checked"))
		if db == nil {
			return Verdict{Action: ActionAllow, Warning: strings.Join(warnings, ", ")}
		}
	}
	vulns := db.Vulns(path, version)
	if len(vulns) == 0 {
		return Verdict{Action: ActionAllow, Warning: strings.Join(warnings, ", ")}
	}
	v := Verdict{Action: ActionAllow}
	var open []Vuln // not accepted
	for _, vu := range vulns {
		v.IDs = append(v.IDs, vu.ID)
		if a, ok := c.accepted(vu.ID, path, now); ok {
			warnings = append(warnings, warning(vu.ID+": accepted until "+a.label))
			continue
		}
		open = append(open, vu)
	}
	if len(open) > 0 {
		fix := fixedAll(db, path, open)
		switch c.p.action {
		case ActionWarn:
			v.Action = ActionWarn
			warnings = append(warnings, warning(joinIDs(open)+": "+fixText(fix)))
		case ActionDeny:
			v.Action = ActionDeny
			v.Reason = reason(what, open, fix)
		}
	}
	v.Warning = strings.Join(warnings, ", ")
	return v
}

// accepted returns the acceptance of id for path in force at now.
func (c *Checker) accepted(id, path string, now time.Time) (accept, bool) {
	for _, a := range c.p.accept {
		if a.id == id && now.Before(a.until) && (a.modules == "" || module.MatchPrefixPatterns(a.modules, path)) {
			return a, true
		}
	}
	return accept{}, false
}

// Filter returns, in a new slice and in their order, the versions of
// path's list without those Check denies because of known
// vulnerabilities, for @v/list and @latest. Versions refused only because
// the data is stale stay: Check refuses their .zip with a message that
// says why, where a version missing from a list only gets "no matching
// versions".
func (c *Checker) Filter(path string, versions []string, now time.Time) []string {
	out := make([]string, 0, len(versions))
	for _, v := range versions {
		if vd := c.Check(path, v, now); vd.Action == ActionDeny && len(vd.IDs) > 0 {
			continue
		}
		out = append(out, v)
	}
	return out
}

// fixedAll returns the lowest version above the one the vulns were found
// for that the database lists for none of them, following the fixes; ""
// if one of them has no fix. The version it returns may have other
// vulnerabilities if following the fixes takes more than maxFixSteps.
func fixedAll(db *DB, path string, vulns []Vuln) string {
	fix := ""
	for range maxFixSteps {
		for _, v := range vulns {
			if v.Fixed == "" {
				return ""
			}
			if fix == "" || semver.Compare(v.Fixed, fix) > 0 {
				fix = v.Fixed
			}
		}
		if vulns = db.Vulns(path, fix); len(vulns) == 0 {
			break
		}
	}
	return fix
}

// reason is the 403 body for what, with vulnerabilities vulns (sorted)
// and fix.
func reason(what string, vulns []Vuln, fix string) string {
	var b strings.Builder
	if len(vulns) == 1 {
		fmt.Fprintf(&b, "%s has known vulnerabilities: %s; %s", what, describe(vulns[0]), fixAdvice(fix))
	} else {
		fmt.Fprintf(&b, "%s has %d known vulnerabilities; %s", what, len(vulns), fixAdvice(fix))
		for i, v := range vulns {
			if i == maxReasonVulns {
				fmt.Fprintf(&b, "\n  and %d more", len(vulns)-i)
				break
			}
			b.WriteString("\n  " + describe(v))
		}
	}
	b.WriteString("\nmodgate refuses module versions with known vulnerabilities (policy.vulnerabilities); ask the gateway's administrators to accept one if you must use it")
	return b.String()
}

// describe is "GO-2026-0001 (Summary…)".
func describe(v Vuln) string {
	s := v.Summary
	if r := []rune(s); len(r) > maxReasonSummary {
		s = string(r[:maxReasonSummary-1]) + "…"
	}
	if s == "" {
		return v.ID
	}
	return v.ID + " (" + s + ")"
}

func fixAdvice(fix string) string {
	if fix == "" {
		return "no fixed version is known"
	}
	return fmt.Sprintf("fixed in %s: use %s or later", fix, fix)
}

func fixText(fix string) string {
	if fix == "" {
		return "no fixed version"
	}
	return "fixed in " + fix
}

func joinIDs(vulns []Vuln) string {
	ids := make([]string, len(vulns))
	for i, v := range vulns {
		ids[i] = v.ID
	}
	return strings.Join(ids, ", ")
}

// warning is an HTTP warning-value with code 299 and agent modgate: text
// as a quoted-string, in printable ASCII.
func warning(text string) string {
	var b strings.Builder
	b.WriteString(`299 modgate "`)
	for _, r := range text {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r >= 0x20 && r < 0x7f:
			b.WriteRune(r)
		default:
			b.WriteByte('?')
		}
	}
	b.WriteByte('"')
	return b.String()
}

// fmtAge formats an age of a Reason: "80 hours", "45 minutes".
func fmtAge(d time.Duration) string {
	if d >= 2*time.Hour {
		return fmt.Sprintf("%d hours", d/time.Hour)
	}
	return fmt.Sprintf("%d minutes", d/time.Minute)
}

// fmtDuration formats a setting of a Reason: "72h", "90m", "1m30s".
func fmtDuration(d time.Duration) string {
	switch {
	case d%time.Hour == 0:
		return fmt.Sprintf("%dh", d/time.Hour)
	case d%time.Minute == 0:
		return fmt.Sprintf("%dm", d/time.Minute)
	}
	return d.String()
}
