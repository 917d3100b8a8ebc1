package vulndb

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path"
	"regexp"
	"strings"
	"time"
)

// Defaults of Config.
const (
	DefaultRefresh      = time.Hour
	DefaultMaxStaleness = 72 * time.Hour
)

// Actions of Policy.Action, and of Verdict.Action.
const (
	ActionOff   = "off"
	ActionWarn  = "warn"
	ActionDeny  = "deny"
	ActionAllow = "allow" // Verdict.Action only
)

// Values of Config.OnStale.
const (
	OnStaleClosed = "closed"
	OnStaleOpen   = "open"
)

// Config is the vulndb section of the config file: where the Go
// vulnerability database comes from and how fresh it must be. Its zero
// value works once the server has filled in URL.
type Config struct {
	// URL is the database's base URL: https (http only on a loopback
	// host), or file:///dir for an air-gapped copy in the same layout.
	// Default: none here; the server takes the GOVULNDB environment
	// variable (govulncheck's) when the field is empty.
	URL string `yaml:"url"`
	// Refresh is how often the Store asks whether the database changed.
	// Default 1h; at least 1m.
	Refresh time.Duration `yaml:"refresh"`
	// MaxStaleness is the Age beyond which the data is stale (see
	// Store.Age). Default 72h; more than Refresh.
	MaxStaleness time.Duration `yaml:"max_staleness"`
	// OnStale says what a deny policy does with stale data: "closed"
	// refuses every version it checks, "open" checks against the data held
	// and adds a warning. Default "closed".
	OnStale string `yaml:"on_stale"`
	// Mirror serves the copy held at /vulndb/ on the GOPROXY listener, for
	// govulncheck on machines that reach only the gateway
	// (GOVULNDB=https://gateway/vulndb). Default false.
	Mirror bool `yaml:"mirror"`
}

// withDefaults returns c with its defaults filled in.
func (c Config) withDefaults() Config {
	if c.Refresh == 0 {
		c.Refresh = DefaultRefresh
	}
	if c.MaxStaleness == 0 {
		c.MaxStaleness = DefaultMaxStaleness
	}
	if c.OnStale == "" {
		c.OnStale = OnStaleClosed
	}
	return c
}

// Check reports the first problem of c, naming the field as
// "vulndb.on_stale: ...". An empty URL is not a problem: the server
// fills it in.
func (c Config) Check() error {
	if c.URL != "" {
		if _, err := parseSourceURL(c.URL); err != nil {
			return fmt.Errorf("vulndb.url: %w", err)
		}
	}
	if c.Refresh != 0 && c.Refresh < time.Minute {
		return fmt.Errorf("vulndb.refresh: %v: want at least 1m, or 0 for the default 1h", c.Refresh)
	}
	if c.MaxStaleness < 0 {
		return fmt.Errorf("vulndb.max_staleness: %v: want a positive duration, or 0 for the default 72h", c.MaxStaleness)
	}
	d := c.withDefaults()
	if d.MaxStaleness <= d.Refresh {
		return fmt.Errorf("vulndb.max_staleness: %v: want more than vulndb.refresh (%v), or every refresh makes the data stale", d.MaxStaleness, d.Refresh)
	}
	switch c.OnStale {
	case "", OnStaleClosed, OnStaleOpen:
	default:
		return fmt.Errorf("vulndb.on_stale: %q: want closed or open", c.OnStale)
	}
	return nil
}

// parseSourceURL checks a database URL: https, http on a loopback host,
// or file:// with an absolute path; no credentials, query or fragment.
// It returns the URL without a final slash.
func parseSourceURL(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil {
		return "", err
	}
	if u.User != nil {
		return "", errors.New("credentials in the URL are not supported")
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("%q: want a base URL without a query or fragment", u.Redacted())
	}
	switch u.Scheme {
	case "file":
		if u.Host != "" && u.Host != "localhost" {
			return "", fmt.Errorf("%q: want file:///absolute/dir", s)
		}
		if !path.IsAbs(u.Path) {
			return "", fmt.Errorf("%q: want file:///absolute/dir", s)
		}
	case "https":
		if u.Host == "" {
			return "", fmt.Errorf("%q: no host", s)
		}
	case "http":
		ip := net.ParseIP(u.Hostname())
		if u.Hostname() != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return "", fmt.Errorf("%q: want https: the database decides what modgate refuses, so its answers must not be open to the network", u.Redacted())
		}
	default:
		return "", fmt.Errorf("%q: want an https or file:// URL", s)
	}
	return strings.TrimSuffix(u.String(), "/"), nil
}

// Policy is the policy.vulnerabilities section of the config file: what
// modgate does with module versions the database lists as affected. Its
// zero value is off: modgate checks nothing and the server need not open
// a Store.
type Policy struct {
	// Action is what happens to an affected version: "deny" refuses it
	// (403), "warn" serves it with an HTTP Warning, "off" checks nothing.
	// Default "off": turning the gate on is a decision, since with the
	// default on_stale closed an unreachable database refuses every
	// version.
	Action string `yaml:"action"`
	// Accept lets named vulnerabilities through, for some modules, until
	// a date. Default: none.
	Accept []Accept `yaml:"accept"`
	// Exempt lists module path patterns in GOPRIVATE syntax (globs matched
	// against path prefixes; an entry may be a comma-separated list) whose
	// versions are never checked. Default: none.
	Exempt []string `yaml:"exempt"`
}

// Accept is one entry of policy.vulnerabilities.accept.
type Accept struct {
	// ID is the vulnerability's Go ID, GO-YYYY-NNNN. Required.
	ID string `yaml:"id"`
	// Modules lists the module path patterns (GOPRIVATE syntax) the
	// acceptance covers. Default: every module the vulnerability affects.
	Modules []string `yaml:"modules"`
	// Until is when the acceptance ends: a date YYYY-MM-DD (through the
	// end of that day, UTC) or an RFC 3339 time. Required: an acceptance
	// without an end is how exceptions become permanent.
	Until string `yaml:"until"`
	// Reason says why, for the audit and the next reviewer. Required.
	Reason string `yaml:"reason"`
}

// idPattern is the form of a Go vulnerability ID.
var idPattern = regexp.MustCompile(`^GO-[0-9]{4}-[0-9]{4,}$`)

// Check reports the first problem of p, naming the field as
// "policy.vulnerabilities.accept[1].until: ...".
func (p Policy) Check() error {
	_, err := p.compile()
	return err
}

// accept is a checked Accept.
type accept struct {
	id      string
	modules string // patterns for module.MatchPrefixPatterns; "" for all
	until   time.Time
	label   string // Until as written, for warnings
}

// compiled is a checked Policy.
type compiled struct {
	action string
	accept []accept
	exempt string // patterns for module.MatchPrefixPatterns
}

func (p Policy) compile() (compiled, error) {
	const field = "policy.vulnerabilities"
	var c compiled
	switch p.Action {
	case "", ActionOff:
		c.action = ActionOff
	case ActionWarn, ActionDeny:
		c.action = p.Action
	default:
		return c, fmt.Errorf("%s.action: %q: want deny, warn or off", field, p.Action)
	}
	for i, a := range p.Accept {
		f := fmt.Sprintf("%s.accept[%d]", field, i)
		if !idPattern.MatchString(a.ID) {
			return c, fmt.Errorf("%s.id: %q: want a Go vulnerability ID such as GO-2026-0001", f, a.ID)
		}
		mods, err := patterns(f+".modules", a.Modules)
		if err != nil {
			return c, err
		}
		until, err := parseUntil(a.Until)
		if err != nil {
			return c, fmt.Errorf("%s.until: %w", f, err)
		}
		if strings.TrimSpace(a.Reason) == "" {
			return c, fmt.Errorf("%s.reason: missing: say why %s is accepted", f, a.ID)
		}
		c.accept = append(c.accept, accept{id: a.ID, modules: mods, until: until, label: a.Until})
	}
	ex, err := patterns(field+".exempt", p.Exempt)
	if err != nil {
		return c, err
	}
	c.exempt = ex
	return c, nil
}

// parseUntil parses an acceptance's end: YYYY-MM-DD is the end of that
// day in UTC, or an RFC 3339 time.
func parseUntil(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, errors.New("missing: want a date such as 2026-12-31 or an RFC 3339 time")
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t.AddDate(0, 0, 1), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q: want a date such as 2026-12-31 or an RFC 3339 time", s)
	}
	return t, nil
}

// patterns checks module path patterns and joins them as
// module.MatchPrefixPatterns wants them.
func patterns(field string, entries []string) (string, error) {
	var out []string
	for i, entry := range entries {
		for p := range strings.SplitSeq(entry, ",") {
			p = strings.TrimSpace(p)
			if p == "" {
				continue
			}
			// MatchPrefixPatterns silently ignores malformed globs: refuse
			// them, so that a typo is not a rule that never applies.
			if _, err := path.Match(p, ""); err != nil {
				return "", fmt.Errorf("%s[%d]: bad pattern %q: %w", field, i, p, err)
			}
			if strings.Contains(p, "@") {
				return "", fmt.Errorf("%s[%d]: bad pattern %q: a module path has no \"@\"", field, i, p)
			}
			out = append(out, p)
		}
	}
	return strings.Join(out, ","), nil
}
