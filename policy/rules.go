package policy

import (
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/mod/module"
	"golang.org/x/mod/semver"

	"github.com/modgate/modgate/cooldown"
	"github.com/modgate/modgate/goproxy"
	"github.com/modgate/modgate/vulndb"
)

// RuleDefault is RuleVerdict.Rule when no rule applies and the policy's
// default decides. No rule may take this name.
const RuleDefault = "default"

// Limits on the text of a rule, which reaches clients in 403 bodies.
const (
	maxNameLen    = 64
	maxReasonLen  = 512
	maxReasonLine = 8 // the go command shows at most 8 lines of an error body
)

// RulesConfig is the policy section of the config file: who may fetch
// which module versions. Its zero value allows everything.
type RulesConfig struct {
	// Default is what happens to a request no rule applies to: "allow" or
	// "deny". Default "allow".
	Default string `yaml:"default"`
	// Rules are tried in order; the first that applies decides.
	// Default: none.
	Rules []RuleConfig `yaml:"rules"`
	// Cooldown holds back versions whose age the checksum database does
	// not prove to be at least min_age (package cooldown). Default: off.
	Cooldown cooldown.Config `yaml:"cooldown"`
	// Vulnerabilities refuses or warns about versions with known
	// vulnerabilities (package vulndb; the data is the vulndb section).
	// Default: off.
	Vulnerabilities vulndb.Policy `yaml:"vulnerabilities"`
}

// RuleConfig is one rule of RulesConfig.
type RuleConfig struct {
	// Name names the rule in denials and in the audit log: at most 64
	// printable ASCII characters without '"' or '\'; unique; not
	// "default", "sumdb-allowlist" or "private-sumdb". Default "rule N",
	// N counting rules from 1.
	Name string `yaml:"name"`
	// Match is the module paths the rule applies to, in GOPRIVATE syntax:
	// comma-separated globs matched against path prefixes by
	// module.MatchPrefixPatterns, so "github.com/x/y" also matches
	// github.com/x/y/v2. Required.
	Match string `yaml:"match"`
	// Versions, if set, limits the rule to the versions in this range (see
	// ParseRange). Default: every version.
	Versions string `yaml:"versions"`
	// Groups, if set, limits the rule to subjects in at least one of these
	// groups. Default: every subject, anonymous ones included.
	Groups []string `yaml:"groups"`
	// Action is "allow" or "deny". Required.
	Action string `yaml:"action"`
	// Reason is told to the developer whose request the rule denies: what
	// to do instead. Plain text of at most 8 lines and 512 bytes, with no
	// blank line. Default: none.
	Reason string `yaml:"reason"`
	// BlockMod makes a deny rule refuse the .mod files of the versions it
	// denies, too. Default false: a version's go.mod stays servable (the go
	// command reads go.mod files of many versions it never builds) unless
	// the whole module is denied.
	BlockMod bool `yaml:"block_mod"`
}

// A Subject is who asks: an identity's name and groups. The zero Subject
// is an anonymous client, in no group.
type Subject struct {
	Name   string // not used by rules; for messages and audit
	Groups []string
}

// A RuleVerdict is the rules' answer for one request.
type RuleVerdict struct {
	Allow bool
	// Rule names the rule that decided, RuleDefault when the default did,
	// or "" for a request rules do not apply to (checksum database kinds).
	Rule string
	// Reason, when !Allow, is what the developer sees in the 403 body: one
	// to eight lines of plain text, without a final newline, that say what
	// was denied and what to do.
	Reason string
	// RuleReason is the deciding rule's own reason as configured, or "".
	RuleReason string
}

// Rules decide who may fetch which module versions. Rules are tried in
// order and the first that applies to a request decides; when none does,
// the default decides.
//
// A rule applies to a subject if it has no groups or the subject is in
// one of them, and to a module if its match patterns match the module
// path. A rule with versions is a version gate: it applies to a version
// in its range. A rule without versions applies to every version and to
// the module as a whole.
//
// Each kind of request is decided as follows:
//
//   - .zip, and .info of a canonical version: the version decision, the
//     first rule that applies to the subject, the module and the version.
//   - .mod: refused if the module decision denies, or the version decision
//     denies by a rule with block_mod; otherwise served, even for a denied
//     version: the go command reads go.mod files of versions it never
//     builds. (Rule then names the deny rule that spared it.)
//   - @v/list, @latest, and .info of a query (a branch, "latest", a
//     non-canonical version): the module decision, below. Version gates
//     never refuse them; the server filters list with Filter and answers
//     @latest with Latest instead.
//   - checksum database kinds: always allowed, with Rule "" (package
//     policy's Policy decides them).
//   - any other kind: as a .zip.
//
// The module decision walks the rules that apply to the subject and the
// module, in order: a deny rule with versions is passed over (it only
// gates versions); an allow rule with versions allows (some versions may
// be fetched); a rule without versions decides. When the walk ends, the
// default decides. So a rule without versions that denies a module, with
// no allow rule for it above, denies every kind for it: list, @latest,
// .info, .mod and .zip. Whenever the module decision denies, every version
// decision denies too.
//
// A nil *Rules allows everything. Rules are immutable and safe for
// concurrent use.
type Rules struct {
	denyByDefault bool
	rules         []rule
}

// AllowsAll reports whether r allows every version to everyone: no rule,
// default allow (or r is nil). A caller may then skip deciding at all.
func (r *Rules) AllowsAll() bool {
	return r == nil || (len(r.rules) == 0 && !r.denyByDefault)
}

// A rule is a checked RuleConfig.
type rule struct {
	name     string
	patterns string // comma-separated, as module.MatchPrefixPatterns wants
	versions *Range // nil: every version
	groups   []string
	allow    bool
	reason   string
	blockMod bool
}

// NewRules checks cfg and returns its Rules. Errors name the field, as in
// "policy.rules[2].versions: ..." (rules counted from 0).
func NewRules(cfg RulesConfig) (*Rules, error) {
	r := new(Rules)
	switch cfg.Default {
	case "", "allow":
	case "deny":
		r.denyByDefault = true
	default:
		return nil, fmt.Errorf("policy.default: %q: want allow or deny", cfg.Default)
	}
	names := make(map[string]int)
	for i, rc := range cfg.Rules {
		field := fmt.Sprintf("policy.rules[%d]", i)
		ru, err := newRule(i, rc)
		if err != nil {
			return nil, fmt.Errorf("%s.%w", field, err)
		}
		if j, dup := names[ru.name]; dup {
			return nil, fmt.Errorf("%s.name: %q is also the name of policy.rules[%d]", field, ru.name, j)
		}
		names[ru.name] = i
		r.rules = append(r.rules, ru)
	}
	return r, nil
}

// newRule checks rc, the rule at index i. Its errors begin with the field
// name, without the "policy.rules[i]." before it.
func newRule(i int, rc RuleConfig) (rule, error) {
	ru := rule{name: rc.Name, reason: strings.TrimSpace(rc.Reason), blockMod: rc.BlockMod}
	if ru.name == "" {
		ru.name = fmt.Sprintf("rule %d", i+1)
	}
	if err := checkName(ru.name); err != nil {
		return rule{}, fmt.Errorf("name: %w", err)
	}

	if strings.TrimSpace(rc.Match) == "" {
		return rule{}, errors.New("match: missing: want module path patterns such as github.com/x/y or *.corp.example")
	}
	var patterns []string
	for p := range strings.SplitSeq(rc.Match, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			return rule{}, fmt.Errorf("match: empty pattern in %q", rc.Match)
		}
		// MatchPrefixPatterns silently ignores malformed globs: refuse them,
		// and patterns no module path can match, so that a typo never
		// turns a rule off.
		if _, err := path.Match(p, ""); err != nil {
			return rule{}, fmt.Errorf("match: bad pattern %q: %w", p, err)
		}
		if strings.Contains(p, "@") {
			return rule{}, fmt.Errorf("match: bad pattern %q: a module path has no \"@\" (versions go in versions)", p)
		}
		patterns = append(patterns, p)
	}
	ru.patterns = strings.Join(patterns, ",")

	if rc.Versions != "" {
		vr, err := ParseRange(rc.Versions)
		if err != nil {
			return rule{}, fmt.Errorf("versions: %w", err)
		}
		ru.versions = &vr
	}

	for j, g := range rc.Groups {
		if err := CheckGroup(g); err != nil {
			return rule{}, fmt.Errorf("groups[%d]: %w", j, err)
		}
	}
	ru.groups = slices.Clone(rc.Groups)

	switch rc.Action {
	case "allow":
		ru.allow = true
	case "deny":
	case "":
		return rule{}, errors.New("action: missing: want allow or deny")
	default:
		return rule{}, fmt.Errorf("action: %q: want allow or deny", rc.Action)
	}
	if ru.allow && ru.blockMod {
		return rule{}, errors.New("block_mod: only a deny rule can refuse .mod files")
	}

	if err := checkReason(ru.reason); err != nil {
		return rule{}, fmt.Errorf("reason: %w", err)
	}
	return ru, nil
}

// CheckGroup reports whether g is a valid group name: 1 to 64 of the
// characters a-z A-Z 0-9 . _ @ -, the groups an identity can be in. A rule
// naming any other group could never apply.
func CheckGroup(g string) error {
	if g == "" || len(g) > maxNameLen {
		return fmt.Errorf("%q: want a group name of 1 to %d characters", g, maxNameLen)
	}
	for i := 0; i < len(g); i++ {
		if c := g[i]; !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '@' || c == '-') {
			return fmt.Errorf("%q: want a group name of only a-z A-Z 0-9 . _ @ -", g)
		}
	}
	return nil
}

// checkName checks a rule name: short printable ASCII that %q leaves as
// it is, and not a name the policy uses itself.
func checkName(name string) error {
	if len(name) > maxNameLen {
		return fmt.Errorf("%q: longer than %d bytes", name, maxNameLen)
	}
	for i := 0; i < len(name); i++ {
		if b := name[i]; b < 0x20 || b >= 0x7f || b == '"' || b == '\\' {
			return fmt.Errorf("%q: want printable ASCII, without '\"' or '\\'", name)
		}
	}
	if name != strings.TrimSpace(name) {
		return fmt.Errorf("%q: leading or trailing space", name)
	}
	if name == RuleDefault || name == RuleSumDBAllowList || name == RulePrivateSumDB || name == cooldown.Rule {
		return fmt.Errorf("%q is reserved for the policy's own decisions", name)
	}
	return nil
}

// checkReason checks a rule's reason, already trimmed, against what the go
// command shows of an error body: valid UTF-8, graphic characters and
// spaces only, at most eight lines, up to the first blank line.
func checkReason(reason string) error {
	if len(reason) > maxReasonLen {
		return fmt.Errorf("longer than %d bytes", maxReasonLen)
	}
	if !utf8.ValidString(reason) {
		return errors.New("not valid UTF-8")
	}
	for _, c := range reason {
		if c != '\n' && c != ' ' && !unicode.IsGraphic(c) {
			return fmt.Errorf("character %U: want plain text (the go command shows no error body with control characters)", c)
		}
	}
	if reason == "" {
		return nil
	}
	lines := strings.Split(reason, "\n")
	if len(lines) > maxReasonLine {
		return fmt.Errorf("%d lines: want at most %d (the go command shows no more)", len(lines), maxReasonLine)
	}
	for i, l := range lines {
		if strings.TrimSpace(l) == "" {
			return fmt.Errorf("line %d is blank: the go command stops showing an error body at its first blank line", i+1)
		}
	}
	return nil
}

// appliesTo reports whether ru applies to the subject and the module,
// whatever the version.
func (ru *rule) appliesTo(who Subject, modulePath string) bool {
	if len(ru.groups) > 0 && !slices.ContainsFunc(ru.groups, func(g string) bool { return slices.Contains(who.Groups, g) }) {
		return false
	}
	return module.MatchPrefixPatterns(ru.patterns, modulePath)
}

// Decide decides whether who may fetch the kind of file of module at
// version, as the Rules doc comment describes. version is ignored for the
// kinds that have none. The module path and version are those of a request
// goproxy.Parse returned.
func (r *Rules) Decide(who Subject, modulePath, version string, kind goproxy.Kind) RuleVerdict {
	if r == nil {
		r = &Rules{}
	}
	switch {
	case kind.IsSumDB():
		return RuleVerdict{Allow: true}
	case kind == goproxy.KindList || kind == goproxy.KindLatest:
		return r.moduleVerdict(who, modulePath)
	case kind == goproxy.KindInfo && !isCanonical(version):
		return r.moduleVerdict(who, modulePath)
	case kind == goproxy.KindMod:
		if mv := r.moduleVerdict(who, modulePath); !mv.Allow {
			return mv
		}
		vv, ru := r.versionVerdict(who, modulePath, version)
		if !vv.Allow && (ru == nil || !ru.blockMod) {
			return RuleVerdict{Allow: true, Rule: vv.Rule, RuleReason: vv.RuleReason}
		}
		return vv
	default:
		vv, _ := r.versionVerdict(who, modulePath, version)
		return vv
	}
}

// isCanonical reports whether v is an explicit version, not a query, as
// goproxy.Parse tells them apart for .info.
func isCanonical(v string) bool {
	return semver.IsValid(v) && module.CanonicalVersion(v) == v
}

// moduleVerdict is the module decision described at Rules.
func (r *Rules) moduleVerdict(who Subject, modulePath string) RuleVerdict {
	for i := range r.rules {
		ru := &r.rules[i]
		if !ru.appliesTo(who, modulePath) || (ru.versions != nil && !ru.allow) {
			continue
		}
		return r.verdict(ru, modulePath, "")
	}
	return r.verdict(nil, modulePath, "")
}

// versionVerdict is the version decision described at Rules, and the rule
// that made it (nil for the default).
func (r *Rules) versionVerdict(who Subject, modulePath, version string) (RuleVerdict, *rule) {
	for i := range r.rules {
		ru := &r.rules[i]
		if !ru.appliesTo(who, modulePath) || (ru.versions != nil && !ru.versions.Contains(version)) {
			continue
		}
		return r.verdict(ru, modulePath, version), ru
	}
	return r.verdict(nil, modulePath, version), nil
}

// verdict is the verdict of ru (nil: the default) on module, or on module
// at version if version is not "".
func (r *Rules) verdict(ru *rule, modulePath, version string) RuleVerdict {
	what := modulePath
	if version != "" {
		what += " " + version
	}
	if ru == nil {
		if !r.denyByDefault {
			return RuleVerdict{Allow: true, Rule: RuleDefault}
		}
		return RuleVerdict{Rule: RuleDefault, Reason: fmt.Sprintf(
			"%s is not allowed: no rule of the gateway's policy allows it (default deny); ask the gateway's administrators if you need it", what)}
	}
	v := RuleVerdict{Allow: ru.allow, Rule: ru.name, RuleReason: ru.reason}
	switch {
	case ru.allow:
	case ru.reason != "":
		v.Reason = fmt.Sprintf("%s is denied by rule %q: %s", what, ru.name, ru.reason)
	default:
		v.Reason = fmt.Sprintf("%s is denied by rule %q of the gateway's policy; ask the gateway's administrators if you need it", what, ru.name)
	}
	return v
}

// Filter returns, in a new slice and in their order, the versions who may
// fetch: those whose .zip Decide allows. It filters the versions of an
// @v/list answer (their first fields).
func (r *Rules) Filter(who Subject, modulePath string, versions []string) []string {
	out := make([]string, 0, len(versions))
	for _, v := range versions {
		if r.allowed(who, modulePath, v) {
			out = append(out, v)
		}
	}
	return out
}

// allowed reports whether who may fetch the .zip of module at version.
func (r *Rules) allowed(who Subject, modulePath, version string) bool {
	if r == nil {
		return true
	}
	vv, _ := r.versionVerdict(who, modulePath, version)
	return vv.Allow
}

// Latest returns the version an @latest answer may name for who: of the
// valid versions among versions that Filter keeps, the highest release by
// semver, else the highest prerelease, else the newest pseudo-version (by
// the time it encodes), as the go command chooses from a list. It returns
// false if there is none. Latest does not drop +incompatible versions, as
// the go command may.
func (r *Rules) Latest(who Subject, modulePath string, versions []string) (string, bool) {
	var release, prerelease, pseudo string
	var pseudoTime time.Time
	for _, v := range versions {
		if !semver.IsValid(v) || !r.allowed(who, modulePath, v) {
			continue
		}
		switch {
		case module.IsPseudoVersion(v):
			t, err := module.PseudoVersionTime(v)
			if err != nil {
				continue
			}
			if pseudo == "" || t.After(pseudoTime) || (t.Equal(pseudoTime) && semver.Compare(v, pseudo) > 0) {
				pseudo, pseudoTime = v, t
			}
		case semver.Prerelease(v) != "":
			if prerelease == "" || semver.Compare(v, prerelease) > 0 {
				prerelease = v
			}
		default:
			if release == "" || semver.Compare(v, release) > 0 {
				release = v
			}
		}
	}
	for _, v := range []string{release, prerelease, pseudo} {
		if v != "" {
			return v, true
		}
	}
	return "", false
}
