package cooldown

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path"
	"strings"
	"time"
)

// Config is the policy.cooldown section of the config file. Its zero value
// turns the cooldown off.
type Config struct {
	// MinAge is how long a module version must have been public before
	// modgate serves it, e.g. 72h. Default 0: no cooldown.
	MinAge time.Duration `yaml:"min_age"`
	// Exempt lists module path patterns in GOPRIVATE syntax (globs matched
	// against path prefixes by module.MatchPrefixPatterns; an entry may be
	// a comma-separated list) whose versions are served at any age.
	// Default: none.
	Exempt []string `yaml:"exempt"`
	// IndexURL is the full endpoint of a Go module index, such as
	// https://index.golang.org/index, asked as
	// IndexURL?since=RFC3339&limit=N. On a fresh install it dates the
	// first anchor (see the package documentation). It must be https,
	// except on a loopback host. Default: none; until modgate's own
	// observations are MinAge old, every public version is refused.
	IndexURL string `yaml:"index_url"`
}

// Check reports the first problem of c, naming the field as
// "policy.cooldown.min_age: ...".
func (c Config) Check() error {
	if c.MinAge < 0 {
		return fmt.Errorf("policy.cooldown.min_age: %v: want a duration of zero (off) or more, such as 72h", c.MinAge)
	}
	if _, err := exemptPatterns(c.Exempt); err != nil {
		return err
	}
	if c.IndexURL != "" {
		if _, err := parseIndexURL(c.IndexURL); err != nil {
			return fmt.Errorf("policy.cooldown.index_url: %w", err)
		}
	}
	return nil
}

// exemptPatterns checks the exempt patterns and joins them as
// module.MatchPrefixPatterns wants them.
func exemptPatterns(entries []string) (string, error) {
	var patterns []string
	for i, entry := range entries {
		for p := range strings.SplitSeq(entry, ",") {
			p = strings.TrimSpace(p)
			if p == "" {
				continue
			}
			// MatchPrefixPatterns silently ignores malformed globs: refuse
			// them, so that a typo is not an exemption that never applies.
			if _, err := path.Match(p, ""); err != nil {
				return "", fmt.Errorf("policy.cooldown.exempt[%d]: bad pattern %q: %w", i, p, err)
			}
			if strings.Contains(p, "@") {
				return "", fmt.Errorf("policy.cooldown.exempt[%d]: bad pattern %q: a module path has no \"@\"", i, p)
			}
			patterns = append(patterns, p)
		}
	}
	return strings.Join(patterns, ","), nil
}

// parseIndexURL checks the index endpoint: absolute, https unless the
// host is a loopback address, no fragment, no credentials.
func parseIndexURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, err
	}
	if u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return nil, fmt.Errorf("%q: want an absolute https URL, such as https://index.golang.org/index", s)
	}
	if u.Scheme == "http" {
		ip := net.ParseIP(u.Hostname())
		if u.Hostname() != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return nil, fmt.Errorf("%q: want https: the index dates modgate's first anchor, so its answers must not be open to the network", u.Redacted())
		}
	}
	if u.User != nil {
		return nil, errors.New("credentials in the URL are not supported")
	}
	if u.Fragment != "" {
		return nil, fmt.Errorf("%q: a fragment is meaningless here", u.Redacted())
	}
	return u, nil
}
