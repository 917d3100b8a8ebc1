package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/mod/module"

	"github.com/modgate/modgate/auditindex"
	"github.com/modgate/modgate/auth"
	"github.com/modgate/modgate/console"
	"github.com/modgate/modgate/console/history"
	"github.com/modgate/modgate/cooldown"
	"github.com/modgate/modgate/gateway"
	"github.com/modgate/modgate/goproxy"
	"github.com/modgate/modgate/health"
	"github.com/modgate/modgate/policy"
)

// policyInForce is the policy the gateway decides with, and where it came
// from, for the console; replaced whole on a reload.
type policyInForce struct {
	rules  *policy.Rules
	cfg    *fileConfig
	source string
	loaded time.Time
}

// openConsole makes the console and what it reads: the metrics history
// and, when the audit log is a file, the index of its events. Its loops
// run in run.
func (g *standalone) openConsole(cfg *fileConfig) error {
	if cfg.Console.Disabled || cfg.Admin == "off" {
		return nil
	}
	g.history = history.New(g.metrics.Gatherer(), history.Options{Interval: cfg.Console.SampleInterval, Logger: g.log, Now: g.clock.Now})
	cc := console.Config{
		Token:             g.adminToken,
		AnonymousLoopback: cfg.Console.AnonymousLoopback,
		Groups:            cfg.Console.Groups,
		History:           g.history,
		Gateway:           consoleGateway{g},
		Logger:            g.log,
		Now:               g.clock.Now,
	}
	if g.inventory != nil {
		cc.Inventory = g.inventory
	}
	if len(cc.Groups) > 0 {
		if g.auth == nil {
			return errors.New("console.groups: needs an auth section (auth.tokens or auth.identities) to know identities and their groups")
		}
		cc.Identifier = consoleIdentifier{g.auth}
	}
	if cfg.Audit != "" {
		g.auditIndex = &lazyIndex{opts: auditindex.Options{Path: cfg.Audit, MaxEvents: cfg.Console.AuditEvents, Logger: g.log}}
		cc.Audit = g.auditIndex
	} else {
		cc.AuditNote = "it goes to standard output"
	}
	c, err := console.New(cc)
	if err != nil {
		return err
	}
	g.console = c
	return nil
}

// firstReadWait bounds how long the first audit page waits for the files.
const firstReadWait = time.Second

// A lazyIndex is the console's audit index, opened when a page first
// needs it: until someone looks, the gateway spends no memory on it (about
// 70 bytes an event, up to console.audit_events).
type lazyIndex struct {
	opts auditindex.Options

	mu sync.Mutex
	ix *auditindex.Index // nil until opened; a failed open is tried again at the next query
}

func (l *lazyIndex) Query(ctx context.Context, q auditindex.Query) (auditindex.Page, error) {
	ix, err := l.open(ctx)
	if err != nil {
		return auditindex.Page{}, fmt.Errorf("audit index: %w", err)
	}
	return ix.Query(ctx, q)
}

// open opens the index if it is not open yet. The first page waits for
// the files to be read, up to firstReadWait (a million events take a few
// seconds); after that it shows what is read so far, and says the log is
// still being read.
func (l *lazyIndex) open(ctx context.Context) (*auditindex.Index, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ix != nil {
		return l.ix, nil
	}
	ix, err := auditindex.Open(l.opts)
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, firstReadWait)
	defer cancel()
	if err := ix.Refresh(rctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		l.opts.Logger.Warn("console: reading the audit files", "err", err)
	}
	l.ix = ix
	return ix, nil
}

// Close closes the index if it was opened.
func (l *lazyIndex) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ix == nil {
		return nil
	}
	return l.ix.Close()
}

// consoleIdentifier identifies the console's users as the gateway does
// its clients: a client token, or a verified client certificate on an
// HTTPS admin listener (admin_tls), with auth.identities' groups.
type consoleIdentifier struct{ a *auth.Authenticator }

func (ci consoleIdentifier) Identify(ctx context.Context, r *http.Request, token string) (string, []string, bool) {
	c := gateway.ClientOf(r)
	peer := auth.Peer{Addr: c.Addr, Subject: c.Subject, URISANs: c.URISANs, CertSHA256: c.CertSHA256}
	h := http.Header{}
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	} else if peer.Subject == "" && len(peer.URISANs) == 0 {
		return "", nil, false
	}
	id, err := ci.a.Authenticate(ctx, h, peer)
	if err != nil || id.Name == "" {
		return "", nil, false
	}
	return id.Name, id.Groups, true
}

// consoleGateway is what the console asks the running gateway.
type consoleGateway struct{ g *standalone }

func (cg consoleGateway) Upstreams() []health.Status { return cg.g.health.Status() }

func (cg consoleGateway) Cached(mod, version string) console.Cached {
	var c console.Cached
	for _, k := range []struct {
		kind goproxy.Kind
		set  *bool
	}{{goproxy.KindInfo, &c.Info}, {goproxy.KindMod, &c.Mod}, {goproxy.KindZip, &c.Zip}} {
		_, *k.set = cg.g.cache.Peek(goproxy.Request{Kind: k.kind, Module: mod, Version: version}.Path())
	}
	return c
}

func (cg consoleGateway) Vulnerabilities(mod, version string) []string {
	if cg.g.vulnCheck == nil {
		return nil
	}
	return cg.g.vulnCheck.Check(mod, version, cg.g.clock.Now()).IDs
}

// Check decides as `modgate policy check` does (decideZip), with the
// gateway's own rules, tokens and cooldown (which records nothing for a
// question: cooldown.Checker.Preview).
func (cg consoleGateway) Check(ctx context.Context, mod, version, name string) (console.Decision, error) {
	mod, version, err := parseModuleVersion(mod + "@" + version)
	if err != nil {
		return console.Decision{}, err
	}
	p := cg.g.policyNow.Load()
	var groups []string
	if name != "" {
		groups, _ = groupsOf(p.cfg, name)
	}
	var cool func(context.Context) (cooldown.Verdict, error)
	if c := cg.g.cooldown; c != nil {
		private := module.MatchPrefixPatterns(strings.Join(p.cfg.privatePatterns(cg.g.env), ","), mod)
		cool = func(ctx context.Context) (cooldown.Verdict, error) { return c.Preview(ctx, mod, version, private), nil }
	}
	v, err := decideZip(ctx, p.rules, policy.Subject{Name: name, Groups: groups}, mod, version, cool)
	if err != nil {
		return console.Decision{}, err
	}
	d := console.Decision{Allow: v.Allow, Line: checkLine(mod+"@"+version, v), Rule: v.Rule, Reason: v.Reason, Groups: groups}
	if vc := cg.g.vulnCheck; vc != nil {
		vv := vc.Check(mod, version, cg.g.clock.Now())
		d.Vulnerabilities, d.VulnAction = vv.IDs, vv.Action
	}
	return d, nil
}

func (cg consoleGateway) Policy() console.Policy {
	p := cg.g.policyNow.Load()
	pc := p.cfg.Policy
	out := console.Policy{
		Source:          p.source,
		Loaded:          p.loaded,
		Default:         pc.Default,
		Private:         p.cfg.privatePatterns(cg.g.env),
		SumDBs:          p.cfg.sumDBs(cg.g.env),
		Cooldown:        "off",
		Vulnerabilities: "off",
	}
	if out.Default == "" {
		out.Default = "allow"
	}
	if out.Source != "" {
		if abs, err := filepath.Abs(out.Source); err == nil {
			out.Source = abs
		}
	}
	for i, r := range pc.Rules {
		name := r.Name
		if name == "" {
			name = fmt.Sprintf("rule %d", i+1)
		}
		out.Rules = append(out.Rules, console.Rule{Name: name, Match: r.Match, Versions: r.Versions, Action: r.Action, Reason: r.Reason, Groups: r.Groups, BlockMod: r.BlockMod})
	}
	if c := pc.Cooldown; c.MinAge > 0 {
		out.Cooldown = fmt.Sprintf("versions must have been public for %s (proven from the checksum database)", c.MinAge)
		if len(c.Exempt) > 0 {
			out.Cooldown += "; exempt: " + strings.Join(c.Exempt, ",")
		}
	}
	if v := pc.Vulnerabilities; v.Action != "" && v.Action != "off" {
		out.Vulnerabilities = v.Action + " versions the vulnerability database lists as affected"
		if len(v.Accept) > 0 {
			out.Vulnerabilities += fmt.Sprintf("; %d accepted", len(v.Accept))
		}
		if len(v.Exempt) > 0 {
			out.Vulnerabilities += "; exempt: " + strings.Join(v.Exempt, ",")
		}
	}
	return out
}
