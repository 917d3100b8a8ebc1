package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/mod/module"
	"golang.org/x/mod/semver"

	"github.com/modgate/modgate/auth"
	"github.com/modgate/modgate/cooldown"
	"github.com/modgate/modgate/gate"
	"github.com/modgate/modgate/goproxy"
	"github.com/modgate/modgate/policy"
	"github.com/modgate/modgate/upstream"
)

const policyUsage = `Usage:

	modgate policy check MODULE@VERSION [--as NAME] [--group G]... [--config F]
	modgate policy validate [--config F]

The policy section of the config file says who may fetch which module
versions. Rules are tried in order; the first that applies decides:

	policy:
	  default: allow              # or deny; default allow
	  rules:
	    - name: no-old-yaml       # in denials and the audit; default "rule N"
	      match: gopkg.in/yaml.v2 # GOPRIVATE glob syntax; required
	      versions: "<v2.4.0"     # optional; quote it: YAML reads > as a block
	      groups: [ci, release]   # optional: only identities in these groups
	      action: deny            # allow or deny; required
	      reason: use v2.4.0 or later
	      block_mod: false        # also refuse the .mod of denied versions

A range is comparators that must all hold: "<v1.4.2", ">=v2.0.0 <v2.3.0",
"=v1.0.0" or "v1.0.0"; versions compare as semver says (a prerelease
sorts before its release). A denied version's .zip and .info are refused;
its .mod is still served unless block_mod is set or the whole module is
denied. Lists are filtered and @latest names an allowed version.

check decides for the .zip of MODULE@VERSION, as a request by NAME (--as),
or by an anonymous client without --as, and prints the decision and the
rule. The groups of NAME come from --group, or else from its token in
auth.tokens. Exit status: 0 allow, 1 deny,
2 bad usage.

validate checks the policy section and prints "ok: N rules", or fails
naming the field in error.

Without --config, modgate.yaml in the current directory is read if it
exists; without either, the policy is empty and allows everything.

Flags:
`

// policyDefaultConfig is the config file policy reads without --config.
const policyDefaultConfig = "modgate.yaml"

// policyCmd runs `modgate policy`.
func policyCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var (
		configPath, as string
		groups         []string
	)
	flags := newFlagSet("policy", policyUsage, stderr)
	flags.StringVar(&configPath, "config", "", "the gateway's YAML config `file` (default: ./"+policyDefaultConfig+" if it exists)")
	flags.StringVar(&as, "as", "", "check: decide for the identity `NAME` (default: an anonymous client)")
	flags.Func("group", "check: a `group` of the --as identity; repeat for more", func(g string) error {
		groups = append(groups, g)
		return nil
	})
	sub, err := parseSub(flags, args, "check", "validate")
	if err != nil {
		return flagError("policy", err)
	}
	pos, err := interspersed(flags)
	if err != nil {
		return flagError("policy", err)
	}

	if sub == "validate" {
		if len(pos) > 0 {
			return usageError{fmt.Sprintf("policy validate: unexpected argument %q", pos[0])}
		}
		if as != "" || len(groups) > 0 {
			return usageError{"policy validate: --as and --group are flags of check"}
		}
		cfg, _, err := loadPolicy(configPath)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "ok: %d rules\n", len(cfg.Policy.Rules))
		return nil
	}

	if len(pos) != 1 {
		return usageError{"policy check: want one MODULE@VERSION"}
	}
	mod, version, err := parseModuleVersion(pos[0])
	if err != nil {
		return usageError{"policy check: " + err.Error()}
	}
	if len(groups) > 0 && as == "" {
		return usageError{"policy check: --group needs --as NAME: an anonymous client is in no group"}
	}
	for _, g := range groups {
		if err := policy.CheckGroup(g); err != nil {
			return usageError{"policy check: --group " + err.Error()}
		}
	}
	cfg, rules, err := loadPolicy(configPath)
	if err != nil {
		return err
	}
	if len(groups) == 0 {
		groups, _ = groupsOf(cfg, as) // the token's groups, as the server sees them
	}
	var cool func(context.Context) (cooldown.Verdict, error)
	if cfg.Policy.Cooldown.MinAge > 0 {
		cool = func(ctx context.Context) (cooldown.Verdict, error) { return checkCooldown(ctx, cfg, mod, version) }
	}
	v, err := decideZip(ctx, rules, policy.Subject{Name: as, Groups: groups}, mod, version, cool)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, checkLine(mod+"@"+version, v))
	if !v.Allow {
		return fmt.Errorf("policy check: denied; a go command would be told: %s", v.Reason)
	}
	return nil
}

// decideZip decides for the .zip of mod@version as subj: the policy
// rules, then, if they allow it, the cooldown (cool; nil when it is off).
// It is `modgate policy check`'s decision and the console's.
func decideZip(ctx context.Context, rules *policy.Rules, subj policy.Subject, mod, version string, cool func(context.Context) (cooldown.Verdict, error)) (policy.RuleVerdict, error) {
	v := rules.Decide(subj, mod, version, goproxy.KindZip)
	if !v.Allow || cool == nil {
		return v, nil
	}
	cv, err := cool(ctx)
	if err != nil {
		return policy.RuleVerdict{}, err
	}
	if !cv.Allow {
		v = policy.RuleVerdict{Rule: cv.Rule, Reason: cv.Reason, RuleReason: cv.Reason}
	}
	return v, nil
}

// checkLine is the line `policy check` prints for the verdict v on
// target (MODULE@VERSION): `allow|deny TARGET (default)`, or
// `allow|deny TARGET by rule "NAME"`, followed by ": REASON" if the rule
// has a reason.
func checkLine(target string, v policy.RuleVerdict) string {
	decision := "deny"
	if v.Allow {
		decision = "allow"
	}
	if v.Rule == policy.RuleDefault {
		return fmt.Sprintf("%s %s (default)", decision, target)
	}
	line := fmt.Sprintf("%s %s by rule %q", decision, target, v.Rule)
	if v.RuleReason != "" {
		line += ": " + v.RuleReason
	}
	return line
}

// parseModuleVersion splits and checks MODULE@VERSION, which must name a
// module path and a canonical version of it, as a .zip request does.
func parseModuleVersion(arg string) (mod, version string, err error) {
	mod, version, ok := strings.Cut(arg, "@")
	if !ok || mod == "" || version == "" {
		return "", "", fmt.Errorf("%q: want MODULE@VERSION, such as golang.org/x/mod@v0.20.0", arg)
	}
	if err := module.CheckPath(mod); err != nil {
		return "", "", err
	}
	if !semver.IsValid(version) {
		return "", "", fmt.Errorf("%q is not a version: check decides for an explicit version, such as v1.2.3", version)
	}
	if cv := module.CanonicalVersion(version); cv != version {
		return "", "", fmt.Errorf("version %q is not canonical: use %q", version, cv)
	}
	if err := module.Check(mod, version); err != nil {
		return "", "", err
	}
	return mod, version, nil
}

// loadPolicy reads the policy section of the config file at path, or of
// ./modgate.yaml if path is "" and that file exists, and checks it.
func loadPolicy(path string) (*fileConfig, *policy.Rules, error) {
	if path == "" {
		if _, err := os.Stat(policyDefaultConfig); err == nil {
			path = policyDefaultConfig
		}
	}
	// The gateway's own loader: what passes here is what serve accepts.
	cfg, err := loadConfig(path)
	if err != nil {
		return nil, nil, err
	}
	rules, err := policy.NewRules(cfg.Policy)
	if err != nil {
		return nil, nil, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, rules, nil
}

// groupsOf returns the groups of the token named name in the config's
// tokens file, if it has one and the name is there.
func groupsOf(cfg *fileConfig, name string) ([]string, bool) {
	if cfg.Auth.Tokens == "" || name == "" {
		return nil, false
	}
	recs, err := auth.List(cfg.Auth.Tokens)
	if err != nil {
		return nil, false
	}
	for _, r := range recs {
		if r.Name == name {
			return r.Groups, true
		}
	}
	return nil, false
}

// checkCooldown decides for mod@version as the gateway's cooldown would:
// with a copy of the anchors the gateway recorded under its cache
// directory (the gateway's own files are not touched), the same checksum
// database through the same upstreams, and the module index.
func checkCooldown(ctx context.Context, cfg *fileConfig, mod, version string) (cooldown.Verdict, error) {
	env, err := readGoEnv(ctx)
	if err != nil {
		return cooldown.Verdict{}, err
	}
	key, err := cfg.sumDBKey(env)
	if err != nil {
		return cooldown.Verdict{}, err
	}
	if key == "" {
		return cooldown.Verdict{}, errors.New("policy.cooldown.min_age: needs the checksum database, whose log proves ages (sumdb_key is off)")
	}
	set, err := cfg.upstreams(env)
	if err != nil {
		return cooldown.Verdict{}, err
	}
	cc, err := cfg.cacheConfig()
	if err != nil {
		return cooldown.Verdict{}, err
	}
	dir, err := os.MkdirTemp("", "modgate-policy-check-")
	if err != nil {
		return cooldown.Verdict{}, err
	}
	defer os.RemoveAll(dir)
	if data, err := os.ReadFile(filepath.Join(cc.Dir, "cooldown", "anchors")); err == nil {
		if err := os.WriteFile(filepath.Join(dir, "anchors"), data, 0o600); err != nil {
			return cooldown.Verdict{}, err
		}
	}
	name, _, _ := strings.Cut(key, "+")
	client := upstream.NewClient(upstream.ClientOptions{})
	fetch := func(ctx context.Context, p string) ([]byte, error) {
		return client.Get(ctx, set.Candidates(false), "/sumdb/"+name+p, gate.MaxSumDBBytes)
	}
	if cfg.SumDBURL != "" {
		db, err := upstream.Parse("sumdb_url", cfg.SumDBURL, false)
		if err != nil {
			return cooldown.Verdict{}, fmt.Errorf("sumdb_url: %w", err)
		}
		fetch = func(ctx context.Context, p string) ([]byte, error) {
			return client.Get(ctx, []*upstream.Upstream{db}, p, gate.MaxSumDBBytes)
		}
	}
	c, err := cooldown.New(ctx, cooldown.Options{Config: cfg.Policy.Cooldown, Dir: dir, Fetch: fetch, VerifierKey: key, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return cooldown.Verdict{}, err
	}
	defer c.Close()
	private := module.MatchPrefixPatterns(strings.Join(cfg.privatePatterns(env), ","), mod)
	return c.Check(ctx, mod, version, private), nil
}
