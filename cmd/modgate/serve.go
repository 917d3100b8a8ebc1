package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/mod/module"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	grpchealth "google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/modgate/modgate/audit"
	"github.com/modgate/modgate/auth"
	"github.com/modgate/modgate/cache"
	"github.com/modgate/modgate/capability"
	"github.com/modgate/modgate/console"
	"github.com/modgate/modgate/console/history"
	"github.com/modgate/modgate/cooldown"
	"github.com/modgate/modgate/coord"
	"github.com/modgate/modgate/extproc"
	"github.com/modgate/modgate/gate"
	"github.com/modgate/modgate/gateway"
	"github.com/modgate/modgate/goproxy"
	"github.com/modgate/modgate/health"
	"github.com/modgate/modgate/inventory"
	"github.com/modgate/modgate/ledger"
	"github.com/modgate/modgate/metrics"
	"github.com/modgate/modgate/policy"
	"github.com/modgate/modgate/s3store"
	"github.com/modgate/modgate/upstream"
	"github.com/modgate/modgate/vcs"
	"github.com/modgate/modgate/verify"
	"github.com/modgate/modgate/vulndb"
	"github.com/modgate/modgate/xds"
)

const serveUsage = `Usage: modgate serve [flags]

Runs the standalone gateway: a GOPROXY-protocol server (module list, .info,
.mod, .zip, @latest, and the /sumdb/ proxy endpoints) that checks every
request, serves what it has cached (a memory hot tier and a disk tier
under --cache-dir), fetches misses from the configured upstreams once
however many clients ask at the same time, and writes one audit event per
request as a JSON line.

With no config file it works from 'go env': upstreams from GOPROXY, the
checksum database from GOSUMDB, private module patterns from GOPRIVATE,
GONOPROXY and GONOSUMDB. Point clients at it with
	GOPROXY=http://127.0.0.1:8080

Every listener takes host:port; port 0 picks a free port (logged at start),
"off" disables the listener. Flags override the config file.

The mesh listeners (--extproc-listen, --blob-listen) trust whoever connects:
the ext_proc client writes client identities into the audit log, and the
blob listener sends cached modules. modgate refuses to start with either on
an address other than loopback unless mesh_tls is set in the config file
(cert, key, client_ca, allowed_clients: mutual TLS that admits only the
gateway Envoy's identity, on the xDS listener too) or, knowingly,
insecure_mesh_listeners: true. The blob listener also requires the
capability token the ext_proc server puts on each request it routes there.

The admin listener's POST /cache/purge and /debug/pprof/ require
"Authorization: Bearer TOKEN": the token is read from admin_token_file, or
else made at every start and written to admin-token (mode 0600) in the
cache directory, where 'modgate cache' finds it. The admin listener also
serves the web console at /ui/ (read-only: overview, modules, refusals,
audit, policy), for the admin token's holders and, with console.groups,
the identities in those groups; admin_tls makes it HTTPS.

Every public .mod and .zip is verified against the checksum database,
fetched from /sumdb/NAME on the public upstreams, or, with sumdb_url in the
config file, from that base URL only (an egress proxy, say).

Several replicas act as one gateway with a store: section in the config
file (an S3-compatible bucket, credentials from the AWS SDK's standard
chain: what one replica fetched and verified, all serve; one private
ledger) and a coordination: section (NATS JetStream: a cold miss asked of
every replica reaches the upstream once). See the README's "Running
several replicas".

Flags:
`

// serveFlags are serve's command-line flags; empty means "not given".
type serveFlags struct {
	config, listen, admin, audit string
	extprocListen, blobListen    string
	xdsListen, transparent       string
	cacheDir                     string
	tlsCert, tlsKey, tlsClientCA string
	logLevel                     string
}

func serve(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var f serveFlags
	fs := newFlagSet("serve", serveUsage, stderr)
	fs.StringVar(&f.listen, "listen", "", "GOPROXY listener `address` (default 127.0.0.1:8080)")
	fs.StringVar(&f.admin, "admin", "", "admin listener `address` for /healthz and /readyz (default 127.0.0.1:9100)")
	fs.StringVar(&f.extprocListen, "extproc-listen", "", "ext_proc gRPC listener `address` for Envoy (default 127.0.0.1:9002)")
	fs.StringVar(&f.blobListen, "blob-listen", "", "blob listener `address`: large cache hits Envoy is routed to (default 127.0.0.1:9003)")
	fs.StringVar(&f.xdsListen, "xds-listen", "", "xDS (ADS) listener `address` for the gateway Envoy (default 127.0.0.1:18000)")
	fs.StringVar(&f.transparent, "transparent", "", "transparent listener `address` for connections the eBPF redirect hands over (default off; needs CAP_NET_ADMIN)")
	f.common(fs)
	fs.StringVar(&f.tlsCert, "tls-cert", "", "serve HTTPS with this PEM certificate chain `file`")
	fs.StringVar(&f.tlsKey, "tls-key", "", "PEM private key `file` for --tls-cert")
	fs.StringVar(&f.tlsClientCA, "tls-client-ca", "", "require client certificates signed by the CAs in this PEM `file`")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("serve: unexpected argument %q", fs.Arg(0))}
	}
	return runGateway(ctx, "serve", &f, stdout, stderr)
}

const extprocUsage = `Usage: modgate extproc [flags]

Runs the mesh sidecar: the envoy.service.ext_proc.v3.ExternalProcessor gRPC
server that the gateway Envoy streams every request to (path checks, policy,
cache lookups, verification of fetched artifacts, one audit event per
request), and the blob listener that Envoy is routed to for cache hits too
large for an immediate response. It runs the same processor, cache and
configuration as 'modgate serve', without the standalone GOPROXY listener.

Whoever reaches these listeners is trusted, so modgate refuses to start
with --listen or --blob-listen on an address other than loopback unless
mesh_tls is set in the config file (mutual TLS admitting only the gateway
Envoy's identity in mesh_tls.allowed_clients) or, knowingly,
insecure_mesh_listeners: true. The admin listener's POST /cache/purge and
/debug/pprof/ require the bearer token in admin_token_file, or else in
admin-token in the cache directory (made at every start); so does its web
console at /ui/.

Flags:
`

// extprocCmd runs `modgate extproc`.
func extprocCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var f serveFlags
	fs := newFlagSet("extproc", extprocUsage, stderr)
	fs.StringVar(&f.extprocListen, "listen", "", "ext_proc gRPC listener `address` (default 127.0.0.1:9002)")
	fs.StringVar(&f.blobListen, "blob-listen", "", "blob listener `address` (default 127.0.0.1:9003)")
	fs.StringVar(&f.admin, "admin", "", "admin listener `address` for /healthz, /readyz and the cache commands (default 127.0.0.1:9100)")
	f.common(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("extproc: unexpected argument %q", fs.Arg(0))}
	}
	f.listen = "off"
	return runGateway(ctx, "extproc", &f, stdout, stderr)
}

// common declares the flags every gateway command has.
func (f *serveFlags) common(fs *flag.FlagSet) {
	fs.StringVar(&f.config, "config", "", "YAML config `file` (modgate.yaml); none: defaults from go env")
	fs.StringVar(&f.audit, "audit", "", "audit `file`, JSON lines appended (default stdout)")
	fs.StringVar(&f.cacheDir, "cache-dir", "", "cache `directory` for the disk tier (default: modgate/ in the user cache directory)")
	fs.StringVar(&f.logLevel, "log-level", "info", "log `level`: debug, info, warn or error (logs go to stderr)")
}

// runGateway loads the configuration, applies the flags, and runs the
// gateway's listeners until ctx ends.
func runGateway(ctx context.Context, cmd string, f *serveFlags, stdout, stderr io.Writer) error {
	cfg, env, log, err := prepare(ctx, cmd, f, stderr)
	if err != nil {
		return err
	}
	extprocFlag := "--extproc-listen"
	if cmd == "extproc" {
		extprocFlag = "--listen"
	}
	warnings, err := cfg.checkMeshListeners(extprocFlag)
	if err != nil {
		return err
	}
	for _, w := range warnings {
		log.Warn(w)
	}
	if err := f.checkTransparent(cfg); err != nil {
		return err
	}
	g, err := newGateway(ctx, cfg, f.config, env, stdout, log)
	if err != nil {
		return err
	}
	defer g.close()
	return g.run(ctx)
}

// prepare does what every long-running command does first: the logger at
// --log-level, the config file with the flags applied and checked, and
// what go env reports.
func prepare(ctx context.Context, cmd string, f *serveFlags, stderr io.Writer) (*fileConfig, goEnv, *slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return nil, goEnv{}, nil, usageError{fmt.Sprintf("%s: --log-level: %v", cmd, err)}
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	cfg, err := loadConfig(f.config)
	if err != nil {
		return nil, goEnv{}, nil, err
	}
	f.apply(cfg)
	if err := cfg.check(); err != nil {
		return nil, goEnv{}, nil, fmt.Errorf("flags: %w", err)
	}
	env, err := readGoEnv(ctx)
	if err != nil {
		return nil, goEnv{}, nil, err
	}
	return cfg, env, log, nil
}

// apply overrides cfg with the flags that were given.
func (f *serveFlags) apply(cfg *fileConfig) {
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	set(&cfg.Listen, f.listen)
	set(&cfg.Admin, f.admin)
	set(&cfg.Audit, f.audit)
	set(&cfg.ExtProcListen, f.extprocListen)
	set(&cfg.BlobListen, f.blobListen)
	set(&cfg.XDSListen, f.xdsListen)
	set(&cfg.TransparentListen, f.transparent)
	set(&cfg.CacheDir, f.cacheDir)
	set(&cfg.TLS.Cert, f.tlsCert)
	set(&cfg.TLS.Key, f.tlsKey)
	set(&cfg.TLS.ClientCA, f.tlsClientCA)
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:8080"
	}
	if cfg.Admin == "" {
		cfg.Admin = "127.0.0.1:9100"
	}
	if cfg.ExtProcListen == "" {
		cfg.ExtProcListen = "127.0.0.1:9002"
	}
	if cfg.BlobListen == "" {
		cfg.BlobListen = "127.0.0.1:9003"
	}
	if cfg.XDSListen == "" {
		cfg.XDSListen = "127.0.0.1:18000"
	}
	if cfg.TransparentListen == "" {
		cfg.TransparentListen = "off"
	}
	if cfg.TransparentListen != "off" && cfg.UpstreamMark == 0 {
		cfg.UpstreamMark = 0x539
	}
}

// standalone is a running standalone gateway: its servers and what they share.
type standalone struct {
	cfg      *fileConfig
	cfgPath  string // the file to reload on SIGHUP, "" if none
	memLimit int64  // the memory the process may use, 0 if unknown (sizeMemory)
	env      goEnv
	client   *upstream.Client
	health   *health.Registry
	metrics  *metrics.Metrics
	tracing  *sdktrace.TracerProvider // nil when tracing is off
	xds      *xds.Server
	log      *slog.Logger
	handler  *gateway.Handler
	extproc  *extproc.Server
	cache    *cache.Cache
	ledger   *ledger.Ledger
	// store is the tier replicas share, leases their fill coordination;
	// nil without store: or coordination:.
	store    *s3store.Store
	leases   *coord.Leases
	verifier *verify.Verifier
	audit    *audit.Writer
	// caps makes the ext_proc server's blob-route tokens and checks them
	// on the blob listener: one key per process.
	caps *capability.Key
	// meshTLS is the mesh listeners' server TLS, nil when mesh_tls is off.
	meshTLS *tls.Config
	proc    *gate.Processor
	policy  *policy.Policy
	// quarantined counts the cache entries the scrub took out of service.
	quarantined atomic.Int64
	auth        *auth.Authenticator // nil without an auth section
	cooldown    *cooldown.Checker   // nil without policy.cooldown
	// vulnStore and vulnCheck hold the vulnerability data and decide on
	// it; nil unless policy.vulnerabilities is on.
	vulnStore *vulndb.Store
	vulnCheck *vulndb.Checker
	// inventory keeps who fetched what, from the audit events.
	inventory *inventory.Inventory
	// vcs is the VCS origin's handler (guarded by its patterns), nil
	// without a vcs section; vcsOrigin is the origin itself.
	vcs       http.Handler
	vcsOrigin *vcs.Origin
	// adminToken is what the admin listener's guarded endpoints require.
	adminToken string
	// console is the web console, nil when it is off; history and
	// auditIndex are what it reads (auditIndex nil without an audit
	// file). policyNow is the policy in force, for it.
	console    *console.Console
	history    *history.Sampler
	auditIndex *lazyIndex
	policyNow  atomic.Pointer[policyInForce]
	// clock is the one clock of every part that keeps time; faultClock
	// lets the admin listener step it (MODGATE_FAULT_CLOCK=1).
	clock      *wallClock
	faultClock bool
	ready      atomic.Bool
}

func newGateway(ctx context.Context, cfg *fileConfig, cfgPath string, env goEnv, stdout io.Writer, log *slog.Logger) (*standalone, error) {
	set, err := cfg.upstreams(env)
	if err != nil {
		return nil, err
	}
	pol, err := policy.New(policy.Config{Private: cfg.privatePatterns(env), SumDBs: cfg.sumDBs(env)})
	if err != nil {
		return nil, err
	}
	meshTLS, err := cfg.meshTLS()
	if err != nil {
		return nil, err
	}
	g := &standalone{cfg: cfg, cfgPath: cfgPath, clock: new(wallClock), faultClock: os.Getenv(faultClockEnv) == "1", log: log, meshTLS: meshTLS, caps: capability.NewKey(0, nil)}
	if err := g.openAudit(stdout); err != nil {
		return nil, err
	}
	cc, err := cfg.cacheConfig()
	if err != nil {
		g.close()
		return nil, err
	}
	cc.Logger = log
	cc.HotBytes, g.memLimit = sizeMemory(cc.HotBytes, log)
	if err := g.openStore(ctx); err != nil {
		g.close()
		return nil, err
	}
	if g.store != nil {
		cc.Shared = g.store
	}
	cc.Now = g.clock.Now
	if g.cache, err = cache.Open(cc); err != nil {
		g.close()
		return nil, err
	}
	if cfg.Admin != "off" {
		if g.adminToken, err = adminToken(cfg.AdminTokenFile, cc.Dir, log); err != nil {
			g.close()
			return nil, err
		}
	}
	bud, err := cfg.budget(g.clock.Now)
	if err != nil {
		g.close()
		return nil, err
	}
	co := upstream.ClientOptions{HeaderTimeout: cfg.Limits.UpstreamHeaderTimeout, Mark: cfg.UpstreamMark}
	if cfg.VCS != nil {
		if err := g.openVCS(cfg, env, cc.Dir); err != nil {
			g.close()
			return nil, err
		}
		co.InProcess = map[string]http.Handler{upstream.InProcessHost: g.vcs}
	}
	client := upstream.NewClient(co)
	g.client, g.env = client, env
	if g.tracing, err = newTracerProvider(ctx, cfg.Tracing, log); err != nil {
		g.close()
		return nil, err
	}
	g.metrics = metrics.New()
	g.metrics.Register(metrics.CacheCollector(g.cache.Stats))
	g.metrics.Register(metrics.AuditCollector(g.audit.Stats))
	g.health = newRegistry(cfg, set, g.audit, g.metrics, g.clock.Now, log)
	if g.xds, err = g.newXDS(ctx); err != nil {
		g.close()
		return nil, err
	}
	if err := g.openVerifier(ctx, cfg, env, cc.Dir, g.health, client); err != nil {
		g.close()
		return nil, err
	}
	refusePrivNotFound, _ := cfg.refusePrivateNotFound() // checked with the config
	rules, err := policy.NewRules(cfg.Policy)
	if err != nil {
		g.close()
		return nil, err
	}
	authn, err := g.openAuth(cfg)
	if err != nil {
		g.close()
		return nil, err
	}
	opts := gate.Options{
		Rules:                 rules,
		Policy:                pol,
		Upstreams:             g.health,
		Health:                g.health,
		Cache:                 g.cache,
		Verifier:              g.verifier,
		Observer:              g.metrics,
		Tracer:                g.tracer(),
		Audit:                 g.auditor(),
		MaxTarget:             cfg.Limits.MaxTargetBytes,
		RefusePrivateNotFound: refusePrivNotFound,
		Logger:                log,
		Now:                   g.clock.Now,
	}
	if bud != nil {
		opts.Budget = bud // a nil *budget.Budget would be a non-nil interface
	}
	if err := g.openCoordination(ctx); err != nil {
		g.close()
		return nil, err
	}
	if g.leases != nil {
		if err := g.leases.OnPurge(g.purgeForPeer); err != nil {
			g.close()
			return nil, err
		}
		opts.Leases = gateLeases{g.leases}
		opts.FollowTimeout = cfg.Coordination.FollowTimeout
		g.metrics.Register(metrics.GaugeFunc("modgate_coordination_up",
			"1 while the fill coordination (NATS) is reachable; 0 while each replica fills alone",
			func() float64 {
				if ok, _ := g.leases.Status(); ok {
					return 1
				}
				return 0
			}))
	}
	if authn != nil {
		opts.Authenticator = gateAuth{authn}
	}
	if err := g.openVulnDB(ctx, cfg, cc.Dir); err != nil {
		g.close()
		return nil, err
	}
	if g.inventory, err = inventory.Open(inventory.Options{Dir: filepath.Join(cc.Dir, "inventory"), MaxKeys: cfg.Inventory.MaxKeys, Logger: log, Now: g.clock.Now}); err != nil {
		g.close()
		return nil, fmt.Errorf("inventory: %w", err)
	}
	opts.Audit = g.auditor()
	if g.vulnCheck != nil {
		opts.Vulnerabilities = gateVulns{g.vulnCheck, g.clock.Now}
		g.metrics.Register(metrics.GaugeFunc("modgate_vulndb_age_seconds",
			"Age of the vulnerability data held (see vulndb.Store.Age); over vulndb.max_staleness it is stale",
			func() float64 { return g.vulnStore.Age().Seconds() }))
	}
	if g.cooldown != nil {
		opts.Cooldown = gateCooldown{g.cooldown}
		g.metrics.Register(metrics.GaugeFunc("modgate_cooldown_anchor_age_seconds",
			"Age of the newest signed tree head old enough to prove a version's age (0: none, so every checked version is refused)",
			func() float64 { return g.cooldown.AnchorAge().Seconds() }))
	}
	proc, err := gate.New(opts)
	if err != nil {
		g.close()
		return nil, err
	}
	g.proc, g.auth, g.policy = proc, authn, pol
	g.policyNow.Store(&policyInForce{rules: rules, cfg: cfg, source: g.cfgPath, loaded: g.clock.Now()})
	if err := g.openConsole(cfg); err != nil {
		g.close()
		return nil, err
	}
	g.metrics.Register(metrics.CounterFunc("modgate_cache_quarantined_total",
		"Cache entries that cache verify found changed on disk or no longer verifying, and took out of service",
		func() float64 { return float64(g.quarantined.Load()) }))
	g.extproc = extproc.NewServer(proc, extproc.ServerOptions{MaxImmediateBytes: int64(cfg.ImmediateMaxBytes), Capability: g.caps, Logger: log, Observer: g.metrics})
	g.handler, err = gateway.New(gateway.Options{
		Processor:    proc,
		Client:       client,
		FetchTimeout: cfg.Limits.FetchTimeout,
		Logger:       log,
	})
	if err != nil {
		g.close()
		return nil, err
	}
	for _, u := range set.Public {
		log.Info("upstream", "name", u.Name, "url", u.URL.Redacted(), "route", "public")
	}
	for _, u := range set.Private {
		log.Info("upstream", "name", u.Name, "url", u.URL.Redacted(), "route", "private")
	}
	log.Info("policy", "private", cfg.privatePatterns(env), "sumdb", cfg.sumDBs(env))
	return g, nil
}

// openAudit opens the audit sink: the configured file, or stdout.
func (g *standalone) openAudit(stdout io.Writer) error {
	a := g.cfg.AuditLog
	wo := audit.WriterOptions{MaxPending: int(a.QueueBytes), BlockFor: a.BlockFor}
	if a.Overflow == "drop" {
		wo.Overflow = audit.Drop
	}
	if g.cfg.Audit == "" {
		w, err := audit.New(stdout, wo)
		if err != nil {
			return fmt.Errorf("audit_log: %w", err)
		}
		g.audit = w
		return nil
	}
	w, err := audit.OpenFile(g.cfg.Audit, audit.FileOptions{MaxBytes: int64(a.MaxBytes), Keep: a.Keep, WriterOptions: wo})
	if err != nil {
		return err
	}
	g.audit = w
	return nil
}

// sumDBStoreTimeout bounds caching one verified record or tile, which
// the shared tier may make a network write on the verifying request's
// path.
const sumDBStoreTimeout = 5 * time.Second

// openVerifier opens the private ledger and the checksum database state
// under the cache directory, and the Verifier over them.
func (g *standalone) openVerifier(ctx context.Context, cfg *fileConfig, env goEnv, cacheDir string, ups gate.Upstreams, client *upstream.Client) error {
	key, err := cfg.sumDBKey(env)
	if err != nil {
		return err
	}
	if g.ledger, err = ledger.Open(filepath.Join(cacheDir, "ledger"), g.log); err != nil {
		return err
	}
	if g.store != nil {
		g.ledger.Share(g.store) // one ledger for every replica
	}
	vc := verify.Config{Key: key, Ledger: g.ledger, Logger: g.log}
	if key == "" {
		g.log.Warn("no checksum database (GOSUMDB=off or sumdb_key: off): public modules are NOT verified before they are cached and served")
	} else {
		name, _, _ := strings.Cut(key, "+")
		vc.Dir = filepath.Join(cacheDir, "sumdb")
		vc.Fetch = func(ctx context.Context, p string) ([]byte, error) {
			return client.Get(ctx, ups.Candidates(false), "/sumdb/"+name+p, gate.MaxSumDBBytes)
		}
		if cfg.SumDBURL != "" {
			// The database's own endpoints: no /sumdb/NAME prefix.
			db, err := upstream.Parse("sumdb_url", cfg.SumDBURL, false)
			if err != nil {
				return fmt.Errorf("sumdb_url: %w", err)
			}
			vc.Fetch = func(ctx context.Context, p string) ([]byte, error) {
				return client.Get(ctx, []*upstream.Upstream{db}, p, gate.MaxSumDBBytes)
			}
			g.log.Info("checksum database fetched from sumdb_url", "url", db.URL.Redacted())
		}
		vc.Fetch = g.cache.SumDBFetch(name, vc.Fetch)
		vc.OnVerified = func(file string, data []byte) {
			ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), sumDBStoreTimeout)
			defer cancel()
			g.cache.StoreSumDB(ctx, file, data)
		}
		vc.OnSecurityError = func(msg string) {
			ev := &audit.Event{
				Timestamp: g.clock.Now().UTC(),
				Event:     audit.EventFields{Action: "sumdb-security-error", Outcome: audit.OutcomeFailure, Reason: msg},
				Modgate:   audit.ModgateGroup{SumDB: name, Verification: "failed"},
			}
			if err := g.audit.Record(ev); err != nil {
				g.log.Error("audit event not recorded", "err", err)
			}
		}
	}
	if cd := cfg.Policy.Cooldown; cd.MinAge > 0 {
		if key == "" {
			return errors.New("policy.cooldown.min_age: needs the checksum database, whose log proves ages (sumdb_key is off)")
		}
		c, err := cooldown.New(ctx, cooldown.Options{Config: cd, Dir: filepath.Join(cacheDir, "cooldown"), Fetch: vc.Fetch, VerifierKey: key, Logger: g.log, Now: g.clock.Now})
		if err != nil {
			return err
		}
		g.cooldown = c
		// Every signed tree head the verifier accepts is an anchor: the
		// log had that many records by now.
		vc.OnTree = func(n []byte) {
			if err := c.ObserveTree(context.WithoutCancel(ctx), n); err != nil {
				g.log.Warn("cooldown: tree head not recorded", "err", err)
			}
		}
		g.log.Info("cooldown", "min_age", cd.MinAge, "exempt", cd.Exempt, "index", cd.IndexURL)
	}
	// Not ctx, which SIGTERM cancels: fills still draining must verify
	// what they fetched (each fetch has its own timeout).
	if g.verifier, err = verify.New(context.WithoutCancel(ctx), vc); err != nil {
		return err
	}
	g.log.Info("verification", "sumdb", g.verifier.Name(), "ledger", filepath.Join(cacheDir, "ledger"))
	return nil
}

// tracer is the processor's tracer: nil (no tracing) without a provider.
func (g *standalone) tracer() trace.Tracer {
	if g.tracing == nil {
		return nil
	}
	return g.tracing.Tracer("github.com/modgate/modgate")
}

// openAuth makes the authenticator of the auth section, nil if there is
// none: the tokens file must load.
func (g *standalone) openAuth(cfg *fileConfig) (*auth.Authenticator, error) {
	a := cfg.Auth
	if a.Tokens == "" && !a.Required && len(a.Identities) == 0 {
		return nil, nil
	}
	c := auth.Config{Required: a.Required, Identities: a.Identities, Failures: auth.FailureLimit{Max: a.Failures.Max, Window: a.Failures.Window}, Now: g.clock.Now}
	if a.Tokens != "" {
		t, err := auth.Load(a.Tokens)
		if err != nil {
			return nil, fmt.Errorf("auth.tokens: %w", err)
		}
		c.Tokens = t
	}
	authn, err := auth.New(c)
	if err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	if a.Required && cfg.TLS.Cert == "" && cfg.Listen != "off" && !isLoopback(cfg.Listen) {
		g.log.Warn("auth.required on a plain-HTTP listener that is not loopback: the go command sends credentials only over HTTPS, so its requests here will all be refused (set tls.cert and tls.key)", "listen", cfg.Listen)
	}
	g.log.Info("authentication", "tokens", c.Tokens.Len(), "required", a.Required, "identities", len(a.Identities))
	return authn, nil
}

// auditor is where the processor's audit events go: the audit writer;
// the inventory, which keeps who fetched what from the same events; and
// the refusals metric, counted from them.
func (g *standalone) auditor() gate.Auditor {
	return eventTee{g.inventory, g.metrics, g.audit}
}

// eventTee feeds every event to the inventory (if any) and counts
// refusals, then records it.
type eventTee struct {
	inv *inventory.Inventory
	m   *metrics.Metrics
	w   *audit.Writer
}

func (t eventTee) Record(e *audit.Event) error {
	if t.inv != nil {
		t.inv.Add(e)
	}
	if e.Event.Action == audit.ActionRequest && (e.Modgate.Decision == "deny" || e.Modgate.Decision == "reject") {
		t.m.Refusal(e.Modgate.Rule)
	}
	return t.w.Record(e)
}

// openVulnDB opens the vulnerability database and its checker when the
// vulnerabilities policy is on: the copy held under the cache directory
// at once, the source (vulndb.url, else GOVULNDB) refreshed by the loops.
func (g *standalone) openVulnDB(ctx context.Context, cfg *fileConfig, cacheDir string) error {
	pol := cfg.Policy.Vulnerabilities
	if pol.Action == "" || pol.Action == vulndb.ActionOff {
		return nil
	}
	vc := cfg.VulnDB
	if vc.URL == "" {
		vc.URL = os.Getenv("GOVULNDB")
	}
	if vc.URL == "" {
		return errors.New("vulndb.url: not set, and no GOVULNDB in the environment: the vulnerabilities policy needs a database (https://… or file:///dir)")
	}
	store, err := vulndb.Open(ctx, vulndb.Options{Config: vc, Dir: filepath.Join(cacheDir, "vulndb"), Logger: g.log, Now: g.clock.Now})
	if err != nil {
		return fmt.Errorf("vulndb: %w", err)
	}
	check, err := vulndb.NewChecker(pol, store)
	if err != nil {
		return fmt.Errorf("policy.vulnerabilities: %w", err)
	}
	g.vulnStore, g.vulnCheck = store, check
	// A first refresh before serving, so a fresh install gates with data;
	// failing it leaves the copy held (if any), and the loops retry.
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := store.Refresh(rctx); err != nil {
		g.log.Warn("vulndb: first refresh failed; serving with the copy held", "err", err)
	}
	entries := 0
	if db := store.Current(); db != nil {
		entries = db.Len()
	}
	g.log.Info("vulnerabilities", "action", pol.Action, "db", vc.URL, "entries", entries, "age", store.Age())
	return nil
}

// gateVulns is the vulnerability checker as the processor declares it.
type gateVulns struct {
	c   *vulndb.Checker
	now func() time.Time
}

func (g gateVulns) Check(path, version string) ([]string, bool, string, string) {
	v := g.c.Check(path, version, g.now())
	return v.IDs, v.Action == vulndb.ActionDeny, v.Reason, v.Warning
}

func (g gateVulns) Filter(path string, versions []string) []string {
	return g.c.Filter(path, versions, g.now())
}

// gateCooldown is the cooldown as the processor declares it.
type gateCooldown struct{ c *cooldown.Checker }

func (g gateCooldown) Admit(ctx context.Context, path, version string, private bool) (bool, string, string) {
	v := g.c.Check(ctx, path, version, private)
	return v.Allow, v.Rule, v.Reason
}

func (g gateCooldown) Filter(ctx context.Context, path string, versions []string, private bool) []string {
	return g.c.Filter(ctx, path, versions, private)
}

// gateAuth is the authenticator as the processor declares it.
type gateAuth struct{ a *auth.Authenticator }

func (g gateAuth) Authenticate(ctx context.Context, h http.Header, c gate.Client) (gate.Identity, error) {
	id, err := g.a.Authenticate(ctx, h, auth.Peer{Addr: c.Addr, Subject: c.Subject, URISANs: c.URISANs, CertSHA256: c.CertSHA256})
	if errors.Is(err, auth.ErrUnauthenticated) {
		err = fmt.Errorf("%w: %w", gate.ErrUnauthenticated, err)
	}
	return gate.Identity(id), err
}

// openVCS starts the VCS origin: the go command fetching private modules
// from their repositories, behind a guard that refuses every module its
// patterns do not name.
func (g *standalone) openVCS(cfg *fileConfig, env goEnv, cacheDir string) error {
	patterns, err := cfg.vcsPatterns(env)
	if err != nil {
		return err
	}
	v := cfg.VCS
	dir := v.CacheDir
	if dir == "" {
		dir = filepath.Join(cacheDir, "vcs")
	}
	o, err := vcs.New(vcs.Config{
		Go: v.Go, CacheDir: dir, MaxCacheBytes: int64(v.MaxCacheBytes), Netrc: v.Netrc, Env: v.Env,
		Timeout: v.Timeout, MaxConcurrent: v.MaxConcurrent, Logger: g.log.With("origin", VCSUpstream),
	})
	if err != nil {
		return fmt.Errorf("vcs: %w", err)
	}
	g.vcsOrigin = o
	g.vcs = vcsGuard(patterns, o)
	g.log.Info("VCS origin", "patterns", patterns, "cache_dir", dir)
	return nil
}

func (g *standalone) close() {
	if g.leases != nil {
		if err := g.leases.Close(); err != nil {
			g.log.Warn("closing the fill coordination", "err", err)
		}
	}
	if g.cooldown != nil {
		if err := g.cooldown.Close(); err != nil {
			g.log.Warn("closing the cooldown", "err", err)
		}
	}
	if g.vcsOrigin != nil {
		if err := g.vcsOrigin.Close(); err != nil {
			g.log.Warn("closing the VCS origin", "err", err)
		}
	}
	if g.tracing != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := g.tracing.Shutdown(ctx); err != nil {
			g.log.Warn("flushing traces", "err", err)
		}
		cancel()
	}
	if g.verifier != nil {
		g.verifier.Close()
	}
	if g.ledger != nil {
		if err := g.ledger.Close(); err != nil {
			g.log.Error("closing ledger", "err", err)
		}
	}
	if g.cache != nil {
		if err := g.cache.Close(); err != nil {
			g.log.Error("closing cache", "err", err)
		}
	}
	if g.audit != nil {
		if err := g.audit.Close(); err != nil {
			g.log.Error("audit events may be lost", "err", err)
		}
	}
	if g.auditIndex != nil {
		if err := g.auditIndex.Close(); err != nil {
			g.log.Error("closing the console's audit index", "err", err)
		}
	}
	if g.inventory != nil {
		if err := g.inventory.Close(); err != nil {
			g.log.Error("closing the inventory", "err", err)
		}
	}
}

// A server is one listener's server: an *http.Server, or the gRPC one.
type server interface {
	Serve(net.Listener) error
	Shutdown(context.Context) error
}

// run serves until ctx is done, then shuts down gracefully.
func (g *standalone) run(ctx context.Context) error {
	go paceMemory(ctx, g.cache.Stats().Hot.Limit, g.memLimit, time.Second)
	var servers []server
	var listeners []net.Listener
	closeAll := func() {
		for _, l := range listeners {
			l.Close()
		}
	}
	add := func(name, addr string, tc *tls.Config, srv server) error {
		if addr == "off" {
			return nil
		}
		// A gRPC server does its own TLS handshakes.
		_, grpcTLS := srv.(*grpcServer)
		l, err := listen(name, addr, tc, !grpcTLS, g.log)
		if err != nil {
			closeAll()
			return err
		}
		listeners, servers = append(listeners, l), append(servers, srv)
		return nil
	}

	proxyTLS, err := g.tlsConfig()
	if err != nil {
		return err
	}
	// A client certificate on the admin listener is an identity for the
	// console, not a requirement: tokens work without one.
	adminTLS, err := serverTLS("admin_tls", g.cfg.AdminTLS, tls.VerifyClientCertIfGiven)
	if err != nil {
		return err
	}
	// /vulndb/ and /ledger/ are no module paths (no dot in their first
	// element), so they cannot shadow a module.
	var mirror http.Handler
	if g.vulnStore != nil && g.cfg.VulnDB.Mirror {
		mirror = g.audited(g.vulnStore.Handler())
	}
	ledgerLookup := g.audited(http.HandlerFunc(g.ledgerLookup))
	front := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case mirror != nil && strings.HasPrefix(r.URL.Path, "/vulndb/"):
			mirror.ServeHTTP(w, r)
		case r.URL.Path == "/ledger/lookup":
			ledgerLookup.ServeHTTP(w, r)
		default:
			g.handler.ServeHTTP(w, r)
		}
	})
	proxy := g.server(front)
	proxy.ConnContext = gateway.ConnContext
	blob := g.server(gateway.NewBlobHandler(g.cache, g.caps, g.log))
	blob.ConnContext = gateway.ConnContext
	var blobTLS *tls.Config
	if g.meshTLS != nil {
		blobTLS = g.meshTLS.Clone()
		blobTLS.NextProtos = []string{"h2", "http/1.1"}
	}
	for _, l := range []struct {
		name, addr string
		tc         *tls.Config
		srv        server
	}{
		{"goproxy", g.cfg.Listen, proxyTLS, proxy},
		{"extproc", g.cfg.ExtProcListen, g.meshTLS, newGRPCServer(g.extproc.Register, g.meshTLS)},
		{"xds", g.cfg.XDSListen, g.meshTLS, newGRPCServer(g.xds.Register, g.meshTLS)},
		{"blob", g.cfg.BlobListen, blobTLS, blob},
		{"admin", g.cfg.Admin, adminTLS, g.server(g.adminHandler())},
		{"vcs", g.vcsListen(), blobTLS, g.server(g.vcs)},
	} {
		if err := add(l.name, l.addr, l.tc, l.srv); err != nil {
			return err
		}
	}
	if addr := g.cfg.TransparentListen; addr != "off" {
		l, err := listenTransparent(addr)
		if err != nil {
			closeAll()
			return err
		}
		g.log.Info("listening", "listener", "transparent", "addr", l.Addr().String(), "scheme", "http")
		srv := g.server(g.handler)
		srv.ConnContext = gateway.TransparentConnContext
		listeners = append(listeners, gateway.RefuseTLS(l, g.refuseTLS))
		servers = append(servers, srv)
	}
	if len(servers) == 0 {
		return errors.New("every listener is off")
	}

	errc := make(chan error, len(servers))
	var wg sync.WaitGroup
	for i, srv := range servers {
		wg.Go(func() {
			if err := srv.Serve(listeners[i]); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, grpc.ErrServerStopped) {
				errc <- err
			}
		})
	}
	// The prober, the snapshot publisher and the config reloader run while
	// the listeners do.
	loops, stopLoops := context.WithCancel(ctx)
	var lw sync.WaitGroup
	pc := health.ProbeConfig{Client: g.client, Path: g.cfg.Health.ProbePath, Interval: g.cfg.Health.Interval, Timeout: g.cfg.Health.Timeout}
	lw.Go(func() { g.health.RunProber(loops, pc) })
	lw.Go(func() { g.xds.Run(loops) })
	if g.history != nil {
		lw.Go(func() { g.history.Run(loops) })
	}
	lw.Go(func() { g.reloadOnHUP(loops) })
	if g.vulnStore != nil {
		lw.Go(func() { g.vulnStore.Run(loops) })
	}
	if iv := g.cfg.Cache.VerifyInterval; iv > 0 {
		lw.Go(func() { g.scrubEvery(loops, iv) })
	}
	defer func() {
		stopLoops()
		lw.Wait()
	}()
	g.ready.Store(true)
	g.log.Info("ready")

	var runErr error
	select {
	case <-ctx.Done():
		g.log.Info("shutting down")
	case runErr = <-errc:
		g.log.Error("server failed", "err", runErr)
	}
	g.ready.Store(false)
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	for _, srv := range servers {
		if err := srv.Shutdown(shutdownCtx); err != nil {
			g.log.Warn("shutdown", "err", err)
		}
	}
	wg.Wait()
	// Fills may still run for requests whose clients left.
	if err := g.handler.Wait(shutdownCtx); err != nil {
		g.log.Warn("shutdown", "err", err)
	}
	return runErr
}

// vcsListen is the VCS origin's own listener address, "off" unless the
// vcs section asks for one (mesh mode).
func (g *standalone) vcsListen() string {
	if g.vcs == nil || g.cfg.VCS.Listen == "" {
		return "off"
	}
	return g.cfg.VCS.Listen
}

// vcsGuard serves the module requests whose path matches patterns with h,
// and refuses every other (403): a public path is never fetched from VCS,
// whoever asks (the prober, a misrouted request, anyone reaching the mesh
// listener).
func vcsGuard(patterns []string, h http.Handler) http.Handler {
	list := strings.Join(patterns, ",")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req, err := goproxy.Parse(r.Method, r.URL.RequestURI(), 0)
		if err != nil || req.Module == "" || !module.MatchPrefixPatterns(list, req.Module) {
			http.Error(w, "not a module the VCS origin serves", http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// grpcServer is the ext_proc gRPC server with its health service.
type grpcServer struct {
	srv    *grpc.Server
	health *grpchealth.Server
}

// newGRPCServer serves what register registers (the ExternalProcessor, or
// ADS), over TLS with tc if it is not nil. Its keepalive policy accepts
// Envoy's pings (grpc-go's default would end the connection with
// too_many_pings), and it serves the gRPC health service.
func newGRPCServer(register func(*grpc.Server), tc *tls.Config) *grpcServer {
	opts := []grpc.ServerOption{
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.MaxRecvMsgSize(4 << 20),
	}
	if tc != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(tc)))
	}
	srv := grpc.NewServer(opts...)
	register(srv)
	h := grpchealth.NewServer()
	healthpb.RegisterHealthServer(srv, h)
	h.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	return &grpcServer{srv: srv, health: h}
}

func (s *grpcServer) Serve(l net.Listener) error { return s.srv.Serve(l) }

// Shutdown reports NOT_SERVING, lets streams in flight finish until ctx
// ends, then stops hard.
func (s *grpcServer) Shutdown(ctx context.Context) error {
	s.health.Shutdown()
	done := make(chan struct{})
	go func() {
		s.srv.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.srv.Stop()
		<-done
		return fmt.Errorf("ext_proc streams cut at shutdown: %w", ctx.Err())
	}
}

func (g *standalone) server(h http.Handler) *http.Server {
	maxHeader := g.cfg.Limits.MaxHeaderBytes
	if maxHeader == 0 {
		maxHeader = 32 << 10
	}
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    maxHeader,
		ErrorLog:          slog.NewLogLogger(g.log.Handler(), slog.LevelDebug),
	}
}

// tlsConfig returns the GOPROXY listener's TLS config, or nil for plain HTTP.
func (g *standalone) tlsConfig() (*tls.Config, error) {
	return serverTLS("tls", g.cfg.TLS, tls.RequireAndVerifyClientCert)
}

// serverTLS is a listener's TLS from its config section (named in
// errors), nil if it has no cert; with a client_ca, client certificates
// are checked as clientAuth says.
func serverTLS(section string, t tlsConfig, clientAuth tls.ClientAuthType) (*tls.Config, error) {
	if t.Cert == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(t.Cert, t.Key)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", section, err)
	}
	c := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		NextProtos:   []string{"h2", "http/1.1"},
	}
	if t.ClientCA != "" {
		pem, err := os.ReadFile(t.ClientCA)
		if err != nil {
			return nil, fmt.Errorf("%s.client_ca: %w", section, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s.client_ca: no PEM certificate in %s", section, t.ClientCA)
		}
		c.ClientCAs = pool
		c.ClientAuth = clientAuth
	}
	return c, nil
}

// listen opens a listener and logs the address it got. With tc, the
// scheme logged is https, and wrap makes it a TLS listener (a gRPC server
// with TLS credentials does the handshakes itself).
func listen(name, addr string, tc *tls.Config, wrap bool, log *slog.Logger) (net.Listener, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s listener: %w", name, err)
	}
	scheme := "http"
	if tc != nil {
		if wrap {
			l = tls.NewListener(l, tc)
		}
		scheme = "https"
	}
	log.Info("listening", "listener", name, "addr", l.Addr().String(), "scheme", scheme)
	return l, nil
}

// reloadOnHUP re-reads the config file on SIGHUP and applies a changed
// upstream list (the health registry keeps the state of upstreams that
// stay, and a new xDS snapshot follows). A file that does not load, or
// whose upstreams are wrong, is refused and the running configuration
// kept. Other fields take effect at the next start.
func (g *standalone) reloadOnHUP(ctx context.Context) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		if g.cfgPath == "" {
			g.log.Warn("SIGHUP: no config file to reload")
			continue
		}
		if err := g.reload(); err != nil {
			g.log.Error("config reload refused; the running configuration stays", "file", g.cfgPath, "err", err)
		}
	}
}

// reload applies what SIGHUP reloads: the upstream list, the policy
// rules and the tokens file. Everything is checked before anything
// changes; a file that does not load changes nothing.
func (g *standalone) reload() error {
	cfg, err := loadConfig(g.cfgPath)
	if err != nil {
		return err
	}
	set, err := cfg.upstreams(g.env)
	if err != nil {
		return err
	}
	rules, err := policy.NewRules(cfg.Policy)
	if err != nil {
		return err
	}
	if g.auth != nil && g.cfg.Auth.Tokens != "" {
		if err := g.auth.Reload(g.cfg.Auth.Tokens); err != nil {
			return fmt.Errorf("auth.tokens: %w", err)
		}
	}
	g.health.Configure(set)
	g.proc.SetRules(rules)
	g.policyNow.Store(&policyInForce{rules: rules, cfg: cfg, source: g.cfgPath, loaded: g.clock.Now()})
	if g.vulnStore != nil {
		// SIGHUP also asks the vulnerability database now, not at the next
		// refresh; failing that keeps the data held.
		rctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if err := g.vulnStore.Refresh(rctx); err != nil {
			g.log.Warn("vulndb: refresh on SIGHUP failed; the data held stays", "err", err)
		}
		cancel()
	}
	g.log.Info("config reloaded", "file", g.cfgPath, "public", len(set.Public), "private", len(set.Private), "rules", len(cfg.Policy.Rules))
	return nil
}

// refuseTLS audits a captured connection that started a TLS handshake,
// which the transparent listener does not serve yet.
func (g *standalone) refuseTLS(c net.Conn) {
	ev := &audit.Event{
		Timestamp: g.clock.Now().UTC(),
		Event:     audit.EventFields{Action: "transparent-tls-refused", Outcome: audit.OutcomeFailure, Reason: "TLS on a captured connection is not served yet: connection closed"},
		Modgate:   audit.ModgateGroup{OriginalDestination: c.LocalAddr().String()},
	}
	if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
		ev.Source = &audit.Source{IP: ap.Addr().Unmap().String(), Port: ap.Port()}
	}
	if err := g.audit.Record(ev); err != nil {
		g.log.Error("audit event not recorded", "err", err)
	}
}
