package policy

import (
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/modgate/modgate/goproxy"
)

// allowByDefault is a default-allow policy with version gates, group
// scopes, a banned module and block_mod.
var allowByDefault = RulesConfig{
	Rules: []RuleConfig{
		{Name: "ci-may-use-old-yaml", Match: "gopkg.in/yaml.v2", Versions: "<v2.4.0", Groups: []string{"ci"}, Action: "allow"},
		{Name: "no-old-yaml", Match: "gopkg.in/yaml.v2", Versions: "<v2.4.0", Action: "deny", Reason: "use v2.4.0 or later"},
		{Name: "bad-release", Match: "github.com/x/y", Versions: "=v1.3.0", Action: "deny", BlockMod: true},
		{Name: "banned", Match: "github.com/evil", Action: "deny", Reason: "see go/banned"},
		{Match: "github.com/x/y", Versions: ">=v2.0.0 <v2.3.0", Action: "deny"}, // "rule 5"
		{Name: "release-only", Match: "*.corp.example", Groups: []string{"release"}, Action: "allow"},
		{Name: "corp-private", Match: "*.corp.example", Action: "deny", Reason: "build releases in the release pipeline"},
	},
}

// denyByDefault is a default-deny policy: an allow-list with a version
// floor and a group that may fetch anything.
var denyByDefault = RulesConfig{
	Default: "deny",
	Rules: []RuleConfig{
		{Name: "new-x", Match: "github.com/x/y", Versions: ">=v1.5.0", Action: "allow"},
		{Name: "old-x", Match: "github.com/x/y", Action: "deny", Reason: "use v1.5.0 or later"},
		{Name: "x-repos", Match: "golang.org/x", Action: "allow"},
		{Name: "ci-anything", Match: "*", Groups: []string{"ci"}, Action: "allow"},
	},
}

var (
	anon    = Subject{}
	ci      = Subject{Name: "ci-bot", Groups: []string{"ci"}}
	release = Subject{Name: "rel", Groups: []string{"dev", "release"}}
)

func TestRulesDecide(t *testing.T) {
	const (
		list   = goproxy.KindList
		latest = goproxy.KindLatest
		info   = goproxy.KindInfo
		mod    = goproxy.KindMod
		zip    = goproxy.KindZip
	)
	tests := []struct {
		name    string
		cfg     RulesConfig
		who     Subject
		module  string
		version string
		kind    goproxy.Kind
		allow   bool
		rule    string
	}{
		// First match wins; group-scoped rules apply to their groups only.
		{"version gate denies zip", allowByDefault, anon, "gopkg.in/yaml.v2", "v2.3.0", zip, false, "no-old-yaml"},
		{"group rule first", allowByDefault, ci, "gopkg.in/yaml.v2", "v2.3.0", zip, true, "ci-may-use-old-yaml"},
		{"other group", allowByDefault, release, "gopkg.in/yaml.v2", "v2.3.0", zip, false, "no-old-yaml"},
		{"above the gate", allowByDefault, anon, "gopkg.in/yaml.v2", "v2.4.0", zip, true, RuleDefault},
		{"prerelease of the bound", allowByDefault, anon, "gopkg.in/yaml.v2", "v2.4.0-rc.1", zip, false, "no-old-yaml"},
		{"pseudo-version below", allowByDefault, anon, "gopkg.in/yaml.v2", "v2.3.1-0.20200101000000-abcdefabcdef", zip, false, "no-old-yaml"},
		{"version gate denies info", allowByDefault, anon, "gopkg.in/yaml.v2", "v2.3.0", info, false, "no-old-yaml"},
		{"version gate spares mod", allowByDefault, anon, "gopkg.in/yaml.v2", "v2.3.0", mod, true, "no-old-yaml"},
		{"version gate spares list", allowByDefault, anon, "gopkg.in/yaml.v2", "", list, true, RuleDefault},
		{"version gate spares latest", allowByDefault, anon, "gopkg.in/yaml.v2", "", latest, true, RuleDefault},
		{"version gate spares info query", allowByDefault, anon, "gopkg.in/yaml.v2", "master", info, true, RuleDefault},
		{"non-canonical info is a query", allowByDefault, anon, "gopkg.in/yaml.v2", "v2.3", info, true, RuleDefault},
		{"exact version zip", allowByDefault, anon, "github.com/x/y", "v1.3.0", zip, false, "bad-release"},
		{"exact version block_mod", allowByDefault, anon, "github.com/x/y", "v1.3.0", mod, false, "bad-release"},
		{"exact version, next one", allowByDefault, anon, "github.com/x/y", "v1.3.1", zip, true, RuleDefault},
		{"exact version, its prerelease", allowByDefault, anon, "github.com/x/y", "v1.3.0-rc.1", zip, true, RuleDefault},
		{"incompatible in range", allowByDefault, anon, "github.com/x/y", "v2.1.0+incompatible", zip, false, "rule 5"},
		{"incompatible above range", allowByDefault, anon, "github.com/x/y", "v2.3.0+incompatible", zip, true, RuleDefault},
		{"major version suffix matches prefix", allowByDefault, anon, "github.com/x/y/v2", "v2.1.0", zip, false, "rule 5"},
		{"invalid version matches no range", allowByDefault, anon, "gopkg.in/yaml.v2", "bogus", zip, true, RuleDefault},
		// A rule without versions denies every kind.
		{"banned list", allowByDefault, anon, "github.com/evil/lib", "", list, false, "banned"},
		{"banned latest", allowByDefault, anon, "github.com/evil/lib", "", latest, false, "banned"},
		{"banned info query", allowByDefault, anon, "github.com/evil/lib", "main", info, false, "banned"},
		{"banned info", allowByDefault, anon, "github.com/evil/lib", "v1.0.0", info, false, "banned"},
		{"banned mod", allowByDefault, anon, "github.com/evil/lib", "v1.0.0", mod, false, "banned"},
		{"banned zip", allowByDefault, anon, "github.com/evil/lib", "v1.0.0", zip, false, "banned"},
		{"banned for groups too", allowByDefault, ci, "github.com/evil/lib", "v1.0.0", zip, false, "banned"},
		{"pattern matches path elements", allowByDefault, anon, "github.com/evilcorp/lib", "v1.0.0", zip, true, RuleDefault},
		{"glob, group allowed", allowByDefault, release, "git.corp.example/a/b", "v1.0.0", zip, true, "release-only"},
		{"glob, group allowed list", allowByDefault, release, "git.corp.example/a/b", "", list, true, "release-only"},
		{"glob, anonymous zip", allowByDefault, anon, "git.corp.example/a/b", "v1.0.0", zip, false, "corp-private"},
		{"glob, anonymous mod", allowByDefault, anon, "git.corp.example/a/b", "v1.0.0", mod, false, "corp-private"},
		{"glob, anonymous list", allowByDefault, anon, "git.corp.example/a/b", "", list, false, "corp-private"},
		// Checksum database kinds are out of scope.
		{"sumdb lookup", allowByDefault, anon, "github.com/evil/lib", "v1.0.0", goproxy.KindSumDBLookup, true, ""},
		{"sumdb tile", allowByDefault, anon, "", "", goproxy.KindSumDBTile, true, ""},
		{"sumdb supported", denyByDefault, anon, "", "", goproxy.KindSumDBSupported, true, ""},
		{"sumdb latest", denyByDefault, anon, "", "", goproxy.KindSumDBLatest, true, ""},
		// Default deny.
		{"allowed version", denyByDefault, anon, "github.com/x/y", "v1.5.0", zip, true, "new-x"},
		{"allowed prerelease", denyByDefault, anon, "github.com/x/y", "v1.6.0-rc.1", zip, true, "new-x"},
		{"prerelease below floor", denyByDefault, anon, "github.com/x/y", "v1.5.0-rc.1", zip, false, "old-x"},
		{"version below floor", denyByDefault, anon, "github.com/x/y", "v1.4.0", zip, false, "old-x"},
		{"version below floor info", denyByDefault, anon, "github.com/x/y", "v1.4.0", info, false, "old-x"},
		{"mod below floor served", denyByDefault, anon, "github.com/x/y", "v1.4.0", mod, true, "old-x"},
		{"list of partly allowed module", denyByDefault, anon, "github.com/x/y", "", list, true, "new-x"},
		{"latest of partly allowed module", denyByDefault, anon, "github.com/x/y", "", latest, true, "new-x"},
		{"info query of partly allowed module", denyByDefault, anon, "github.com/x/y", "main", info, true, "new-x"},
		{"allowed module", denyByDefault, anon, "golang.org/x/mod", "v0.42.0", zip, true, "x-repos"},
		{"default zip", denyByDefault, anon, "example.com/a", "v1.0.0", zip, false, RuleDefault},
		{"default mod", denyByDefault, anon, "example.com/a", "v1.0.0", mod, false, RuleDefault},
		{"default list", denyByDefault, anon, "example.com/a", "", list, false, RuleDefault},
		{"default latest", denyByDefault, anon, "example.com/a", "", latest, false, RuleDefault},
		{"group may fetch anything", denyByDefault, ci, "example.com/a", "v1.0.0", zip, true, "ci-anything"},
		{"group may list anything", denyByDefault, ci, "example.com/a", "", list, true, "ci-anything"},
		{"group, rule above still first", denyByDefault, ci, "github.com/x/y", "v1.4.0", zip, false, "old-x"},
		{"unknown kind decided as zip", denyByDefault, anon, "github.com/x/y", "v1.4.0", goproxy.Kind(0), false, "old-x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := mustRules(t, tt.cfg)
			got := r.Decide(tt.who, tt.module, tt.version, tt.kind)
			if got.Allow != tt.allow || got.Rule != tt.rule {
				t.Errorf("Decide(%v, %s, %q, %v) = %+v, want allow %v by %q", tt.who, tt.module, tt.version, tt.kind, got, tt.allow, tt.rule)
			}
			if got.Allow != (got.Reason == "") {
				t.Errorf("Decide(%v, %s, %q, %v) = %+v: want a reason exactly when denied", tt.who, tt.module, tt.version, tt.kind, got)
			}
		})
	}
}

func TestRulesDecideReason(t *testing.T) {
	multi := RulesConfig{Rules: []RuleConfig{{
		Name: "multi", Match: "example.com/m", Action: "deny",
		Reason: "this module moved.\nuse example.com/n instead:\n  go get example.com/n@latest\n",
	}}}
	tests := []struct {
		cfg     RulesConfig
		module  string
		version string
		kind    goproxy.Kind
		want    string
	}{
		{allowByDefault, "gopkg.in/yaml.v2", "v2.3.0", goproxy.KindZip,
			`gopkg.in/yaml.v2 v2.3.0 is denied by rule "no-old-yaml": use v2.4.0 or later`},
		{allowByDefault, "github.com/evil/lib", "", goproxy.KindList,
			`github.com/evil/lib is denied by rule "banned": see go/banned`},
		{allowByDefault, "github.com/evil/lib", "v1.0.0", goproxy.KindMod,
			`github.com/evil/lib is denied by rule "banned": see go/banned`},
		{allowByDefault, "github.com/x/y", "v2.1.0+incompatible", goproxy.KindZip,
			`github.com/x/y v2.1.0+incompatible is denied by rule "rule 5" of the gateway's policy; ask the gateway's administrators if you need it`},
		{denyByDefault, "example.com/a", "v1.0.0", goproxy.KindZip,
			`example.com/a v1.0.0 is not allowed: no rule of the gateway's policy allows it (default deny); ask the gateway's administrators if you need it`},
		{denyByDefault, "example.com/a", "", goproxy.KindLatest,
			`example.com/a is not allowed: no rule of the gateway's policy allows it (default deny); ask the gateway's administrators if you need it`},
		{multi, "example.com/m", "v1.0.0", goproxy.KindZip,
			"example.com/m v1.0.0 is denied by rule \"multi\": this module moved.\nuse example.com/n instead:\n  go get example.com/n@latest"},
	}
	for _, tt := range tests {
		got := mustRules(t, tt.cfg).Decide(anon, tt.module, tt.version, tt.kind)
		if got.Reason != tt.want {
			t.Errorf("Decide(%s, %q, %v).Reason = %q, want %q", tt.module, tt.version, tt.kind, got.Reason, tt.want)
		}
	}
}

func TestRulesDecideRuleReason(t *testing.T) {
	r := mustRules(t, allowByDefault)
	if got := r.Decide(anon, "gopkg.in/yaml.v2", "v2.3.0", goproxy.KindZip).RuleReason; got != "use v2.4.0 or later" {
		t.Errorf("Decide(old yaml).RuleReason = %q, want %q", got, "use v2.4.0 or later")
	}
	if got := r.Decide(anon, "gopkg.in/yaml.v2", "v2.4.0", goproxy.KindZip).RuleReason; got != "" {
		t.Errorf("Decide(default).RuleReason = %q, want \"\"", got)
	}
}

func TestZeroRules(t *testing.T) {
	for name, r := range map[string]*Rules{"NewRules(zero)": mustRules(t, RulesConfig{}), "nil": nil} {
		for _, kind := range []goproxy.Kind{goproxy.KindList, goproxy.KindLatest, goproxy.KindInfo, goproxy.KindMod, goproxy.KindZip} {
			if v := r.Decide(anon, "example.com/a", "v1.0.0", kind); !v.Allow || v.Rule != RuleDefault {
				t.Errorf("%s: Decide(%v) = %+v, want allow by default", name, kind, v)
			}
		}
		if got := r.Filter(anon, "example.com/a", []string{"v1.0.0", "v1.1.0"}); !slices.Equal(got, []string{"v1.0.0", "v1.1.0"}) {
			t.Errorf("%s: Filter = %q, want all", name, got)
		}
		if got, ok := r.Latest(anon, "example.com/a", []string{"v1.0.0", "v1.1.0"}); got != "v1.1.0" || !ok {
			t.Errorf("%s: Latest = %q, %v, want v1.1.0, true", name, got, ok)
		}
	}
}

func TestNewRulesErrors(t *testing.T) {
	ok := RuleConfig{Match: "example.com/a", Action: "deny"}
	with := func(f func(*RuleConfig)) RulesConfig {
		rc := ok
		f(&rc)
		return RulesConfig{Rules: []RuleConfig{ok, ok, rc}}
	}
	tests := []struct {
		name string
		cfg  RulesConfig
		want string
	}{
		{"bad default", RulesConfig{Default: "block"}, `policy.default: "block": want allow or deny`},
		{"upper-case default", RulesConfig{Default: "Deny"}, `policy.default: "Deny": want allow or deny`},
		{"no match", with(func(r *RuleConfig) { r.Match = "" }), `policy.rules[2].match: missing: want module path patterns such as github.com/x/y or *.corp.example`},
		{"blank match", with(func(r *RuleConfig) { r.Match = "  " }), `policy.rules[2].match: missing`},
		{"bad pattern", with(func(r *RuleConfig) { r.Match = "github.com/x/[" }), `policy.rules[2].match: bad pattern "github.com/x/[": syntax error in pattern`},
		{"bad pattern in list", with(func(r *RuleConfig) { r.Match = "a.example, b.example/[" }), `policy.rules[2].match: bad pattern "b.example/["`},
		{"version in pattern", with(func(r *RuleConfig) { r.Match = "github.com/x/y@v1.2.3" }), `policy.rules[2].match: bad pattern "github.com/x/y@v1.2.3": a module path has no "@" (versions go in versions)`},
		{"empty pattern in list", with(func(r *RuleConfig) { r.Match = "a.example,,b.example" }), `policy.rules[2].match: empty pattern in "a.example,,b.example"`},
		{"bad range", with(func(r *RuleConfig) { r.Versions = "<v1.2" }), `policy.rules[2].versions: range "<v1.2": "v1.2" is not canonical: write "v1.2.0"`},
		{"blank range", with(func(r *RuleConfig) { r.Versions = " " }), `policy.rules[2].versions: range " ": empty`},
		{"range with space", with(func(r *RuleConfig) { r.Versions = ">= v2.0.0" }), `policy.rules[2].versions: range ">= v2.0.0": operator ">=" without a version`},
		{"no action", with(func(r *RuleConfig) { r.Action = "" }), `policy.rules[2].action: missing: want allow or deny`},
		{"unknown action", with(func(r *RuleConfig) { r.Action = "block" }), `policy.rules[2].action: "block": want allow or deny`},
		{"block_mod on allow", with(func(r *RuleConfig) { r.Action, r.BlockMod = "allow", true }), `policy.rules[2].block_mod: only a deny rule can refuse .mod files`},
		{"empty group", with(func(r *RuleConfig) { r.Groups = []string{"ci", ""} }), `policy.rules[2].groups[1]: "": want a group name of 1 to 64 characters`},
		{"spaced group", with(func(r *RuleConfig) { r.Groups = []string{" ci"} }), `policy.rules[2].groups[0]: " ci": want a group name of only a-z A-Z 0-9 . _ @ -`},
		{"comma in group", with(func(r *RuleConfig) { r.Groups = []string{"ci,release"} }), `policy.rules[2].groups[0]: "ci,release": want a group name of only`},
		{"long group", with(func(r *RuleConfig) { r.Groups = []string{strings.Repeat("g", 65)} }), `policy.rules[2].groups[0]: "ggg`},
		{"reserved name", with(func(r *RuleConfig) { r.Name = "default" }), `policy.rules[2].name: "default" is reserved`},
		{"reserved sumdb name", with(func(r *RuleConfig) { r.Name = RulePrivateSumDB }), `policy.rules[2].name: "private-sumdb" is reserved`},
		{"quote in name", with(func(r *RuleConfig) { r.Name = `a"b` }), `policy.rules[2].name: "a\"b": want printable ASCII`},
		{"non-ASCII name", with(func(r *RuleConfig) { r.Name = "règle" }), `policy.rules[2].name: "règle": want printable ASCII`},
		{"long name", with(func(r *RuleConfig) { r.Name = strings.Repeat("n", 65) }), `longer than 64 bytes`},
		{"spaced name", with(func(r *RuleConfig) { r.Name = "x " }), `policy.rules[2].name: "x ": leading or trailing space`},
		{"duplicate name", with(func(r *RuleConfig) { r.Name = "rule 2" }), `policy.rules[2].name: "rule 2" is also the name of policy.rules[1]`},
		{"control in reason", with(func(r *RuleConfig) { r.Reason = "a\x1b[31mb" }), `policy.rules[2].reason: character U+001B: want plain text`},
		{"tab in reason", with(func(r *RuleConfig) { r.Reason = "a\tb" }), `policy.rules[2].reason: character U+0009`},
		{"invalid UTF-8 reason", with(func(r *RuleConfig) { r.Reason = "a\xffb" }), `policy.rules[2].reason: not valid UTF-8`},
		{"blank line in reason", with(func(r *RuleConfig) { r.Reason = "a\n\nb" }), `policy.rules[2].reason: line 2 is blank`},
		{"too many lines", with(func(r *RuleConfig) { r.Reason = strings.Repeat("x\n", 9) }), `policy.rules[2].reason: 9 lines: want at most 8`},
		{"long reason", with(func(r *RuleConfig) { r.Reason = strings.Repeat("x", 513) }), `policy.rules[2].reason: longer than 512 bytes`},
	}
	for _, tt := range tests {
		r, err := NewRules(tt.cfg)
		if err == nil {
			t.Errorf("NewRules(%s) = %v, nil; want error %q", tt.name, r, tt.want)
			continue
		}
		if !strings.Contains(err.Error(), tt.want) {
			t.Errorf("NewRules(%s) error = %q, want it to contain %q", tt.name, err, tt.want)
		}
	}
}

func TestNewRulesAccepts(t *testing.T) {
	tests := []struct {
		name string
		rc   RuleConfig
		rule string // the rule's name in verdicts
	}{
		{"default name", RuleConfig{Match: "example.com/a", Action: "deny"}, "rule 1"},
		{"pattern list", RuleConfig{Name: "l", Match: "example.org, example.com/a/", Action: "deny"}, "l"},
		{"block_mod without versions", RuleConfig{Name: "b", Match: "example.com/a", Action: "deny", BlockMod: true}, "b"},
		{"eight-line reason with final newline", RuleConfig{Name: "r", Match: "example.com/a", Action: "deny", Reason: strings.Repeat("do this\n", 8)}, "r"},
		{"unicode reason", RuleConfig{Name: "u", Match: "example.com/a", Action: "deny", Reason: "utilisez v1.2.4 ou plus récent"}, "u"},
	}
	for _, tt := range tests {
		r, err := NewRules(RulesConfig{Rules: []RuleConfig{tt.rc}})
		if err != nil {
			t.Errorf("NewRules(%s): %v", tt.name, err)
			continue
		}
		if v := r.Decide(anon, "example.com/a", "v1.0.0", goproxy.KindZip); v.Allow || v.Rule != tt.rule {
			t.Errorf("NewRules(%s).Decide(example.com/a) = %+v, want deny by %q", tt.name, v, tt.rule)
		}
	}
}

func TestRulesImmutable(t *testing.T) {
	cfg := RulesConfig{Rules: []RuleConfig{{Match: "example.com/a", Groups: []string{"ci"}, Action: "deny"}}}
	r := mustRules(t, cfg)
	cfg.Rules[0].Groups[0] = "dev"
	cfg.Rules[0].Match = "example.com/b"
	if v := r.Decide(Subject{Groups: []string{"ci"}}, "example.com/a", "v1.0.0", goproxy.KindZip); v.Allow {
		t.Errorf("after changing the config: Decide(ci, example.com/a) = %+v, want deny", v)
	}
}

func TestFilter(t *testing.T) {
	versions := []string{"v1.6.0", "v1.4.0", "v1.5.0-rc.1", "v1.5.0", "v1.6.0-rc.1", "bogus", "v2.0.0+incompatible"}
	tests := []struct {
		name string
		cfg  RulesConfig
		who  Subject
		want []string
	}{
		{"default deny, floor", denyByDefault, anon, []string{"v1.6.0", "v1.5.0", "v1.6.0-rc.1", "v2.0.0+incompatible"}},
		{"group rule below", denyByDefault, ci, []string{"v1.6.0", "v1.5.0", "v1.6.0-rc.1", "v2.0.0+incompatible"}},
		{"default allow, exact and range", allowByDefault, anon, []string{"v1.6.0", "v1.4.0", "v1.5.0-rc.1", "v1.5.0", "v1.6.0-rc.1", "bogus"}},
		{"banned module", RulesConfig{Rules: []RuleConfig{{Match: "github.com/x", Action: "deny"}}}, anon, []string{}},
	}
	for _, tt := range tests {
		got := mustRules(t, tt.cfg).Filter(tt.who, "github.com/x/y", versions)
		if !slices.Equal(got, tt.want) {
			t.Errorf("%s: Filter(%q) = %q, want %q", tt.name, versions, got, tt.want)
		}
	}
	// Filter keeps exactly the versions whose .zip Decide allows.
	r := mustRules(t, allowByDefault)
	for _, v := range []string{"v2.3.0", "v2.4.0", "v2.4.0-rc.1"} {
		kept := len(r.Filter(anon, "gopkg.in/yaml.v2", []string{v})) == 1
		if allow := r.Decide(anon, "gopkg.in/yaml.v2", v, goproxy.KindZip).Allow; kept != allow {
			t.Errorf("Filter keeps %s: %v, but Decide(zip).Allow = %v", v, kept, allow)
		}
	}
}

func TestLatest(t *testing.T) {
	floor := RulesConfig{Rules: []RuleConfig{{Match: "example.com/a", Versions: ">=v1.3.0", Action: "deny"}}}
	tests := []struct {
		name     string
		cfg      RulesConfig
		versions []string
		want     string
		ok       bool
	}{
		{"highest release", RulesConfig{}, []string{"v1.2.0", "v1.10.0", "v1.9.0"}, "v1.10.0", true},
		{"release over higher prerelease", RulesConfig{}, []string{"v1.2.0", "v1.3.0-rc.1"}, "v1.2.0", true},
		{"highest prerelease", RulesConfig{}, []string{"v1.3.0-alpha", "v1.3.0-rc.1", "v1.3.0-beta"}, "v1.3.0-rc.1", true},
		{"prerelease over pseudo", RulesConfig{}, []string{"v0.0.0-20990101000000-abcdefabcdef", "v0.1.0-rc.1"}, "v0.1.0-rc.1", true},
		{"newest pseudo by time", RulesConfig{}, []string{"v0.0.0-20200101000000-abcdefabcdef", "v0.0.0-20210101000000-abcdefabcdef", "v0.0.0-20190101000000-abcdefabcdef"}, "v0.0.0-20210101000000-abcdefabcdef", true},
		{"invalid versions skipped", RulesConfig{}, []string{"bogus", "", "v1.0.0", "1.2.0"}, "v1.0.0", true},
		{"incompatible", RulesConfig{}, []string{"v1.0.0", "v2.0.0+incompatible"}, "v2.0.0+incompatible", true},
		{"denied releases skipped", floor, []string{"v1.2.0", "v1.3.0", "v1.4.0"}, "v1.2.0", true},
		{"denied releases, allowed prerelease", floor, []string{"v1.3.0", "v1.2.1-rc.1"}, "v1.2.1-rc.1", true},
		{"all denied", floor, []string{"v1.3.0", "v1.4.0"}, "", false},
		{"empty list", RulesConfig{}, nil, "", false},
	}
	for _, tt := range tests {
		got, ok := mustRules(t, tt.cfg).Latest(anon, "example.com/a", tt.versions)
		if got != tt.want || ok != tt.ok {
			t.Errorf("%s: Latest(%q) = %q, %v, want %q, %v", tt.name, tt.versions, got, ok, tt.want, tt.ok)
		}
	}
}

func TestRulesConfigYAML(t *testing.T) {
	const doc = `
default: deny
rules:
  - name: no-yaml-v2
    match: github.com/x/y
    versions: "<v1.2.4"
    groups: [ci, release]
    action: deny
    reason: "use v1.2.4 or later"
    block_mod: true
  - match: "*.corp.example"
    versions: ">=v2.0.0 <v2.3.0"
    action: allow
`
	dec := yaml.NewDecoder(strings.NewReader(doc))
	dec.KnownFields(true)
	var cfg RulesConfig
	if err := dec.Decode(&cfg); err != nil {
		t.Fatal(err)
	}
	want := RulesConfig{Default: "deny", Rules: []RuleConfig{
		{Name: "no-yaml-v2", Match: "github.com/x/y", Versions: "<v1.2.4", Groups: []string{"ci", "release"}, Action: "deny", Reason: "use v1.2.4 or later", BlockMod: true},
		{Match: "*.corp.example", Versions: ">=v2.0.0 <v2.3.0", Action: "allow"},
	}}
	if cfg.Default != want.Default || len(cfg.Rules) != len(want.Rules) {
		t.Fatalf("decoded %+v, want %+v", cfg, want)
	}
	for i := range want.Rules {
		g, w := cfg.Rules[i], want.Rules[i]
		if g.Name != w.Name || g.Match != w.Match || g.Versions != w.Versions || !slices.Equal(g.Groups, w.Groups) || g.Action != w.Action || g.Reason != w.Reason || g.BlockMod != w.BlockMod {
			t.Errorf("rules[%d] = %+v, want %+v", i, g, w)
		}
	}
	if _, err := NewRules(cfg); err != nil {
		t.Errorf("NewRules(decoded): %v", err)
	}
}

func FuzzRulesDecide(f *testing.F) {
	f.Add("gopkg.in/yaml.v2", "v2.3.0", uint8(goproxy.KindZip), "ci")
	f.Add("github.com/x/y/v2", "v2.1.0+incompatible", uint8(goproxy.KindMod), "")
	f.Add("git.corp.example/a", "master", uint8(goproxy.KindInfo), "release")
	f.Add("github.com/evil/lib", "", uint8(goproxy.KindLatest), "")
	f.Add("", "v1.0.0", uint8(200), "ci")
	rules := []*Rules{mustRules(f, allowByDefault), mustRules(f, denyByDefault)}
	f.Fuzz(func(t *testing.T, mod, version string, kind uint8, group string) {
		who := Subject{Groups: []string{group}}
		for _, r := range rules {
			v := r.Decide(who, mod, version, goproxy.Kind(kind))
			if v.Allow != (v.Reason == "") {
				t.Fatalf("Decide(%q, %q, %q, %d) = %+v: want a reason exactly when denied", group, mod, version, kind, v)
			}
			zip := r.Decide(who, mod, version, goproxy.KindZip)
			if kept := len(r.Filter(who, mod, []string{version})) == 1; kept != zip.Allow {
				t.Fatalf("Filter(%q, %q, [%q]) keeps it: %v, but Decide(zip).Allow = %v", group, mod, version, kept, zip.Allow)
			}
			if latest, ok := r.Latest(who, mod, []string{version}); ok && (latest != version || !zip.Allow) {
				t.Fatalf("Latest(%q, %q, [%q]) = %q, but Decide(zip) = %+v", group, mod, version, latest, zip)
			}
			if mv := r.Decide(who, mod, "", goproxy.KindList); !mv.Allow && zip.Allow {
				t.Fatalf("Decide(%q, %q, list) denies the module, but Decide(zip %q) = %+v", group, mod, version, zip)
			}
		}
	})
}

func mustRules(t testing.TB, cfg RulesConfig) *Rules {
	t.Helper()
	r, err := NewRules(cfg)
	if err != nil {
		t.Fatalf("NewRules: %v", err)
	}
	return r
}

func TestAllowsAll(t *testing.T) {
	for _, tt := range []struct {
		cfg  RulesConfig
		want bool
	}{
		{RulesConfig{}, true},
		{RulesConfig{Default: "allow"}, true},
		{RulesConfig{Default: "deny"}, false},
		{RulesConfig{Rules: []RuleConfig{{Match: "example.com/a", Action: "allow"}}}, false},
	} {
		r, err := NewRules(tt.cfg)
		if err != nil {
			t.Fatal(err)
		}
		if got := r.AllowsAll(); got != tt.want {
			t.Errorf("NewRules(%+v).AllowsAll() = %v, want %v", tt.cfg, got, tt.want)
		}
	}
	if !(*Rules)(nil).AllowsAll() {
		t.Error("a nil *Rules does not allow all")
	}
}
