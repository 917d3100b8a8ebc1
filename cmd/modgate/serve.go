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
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modgate/modgate/audit"
	"github.com/modgate/modgate/cache"
	"github.com/modgate/modgate/extproc"
	"github.com/modgate/modgate/gateway"
	"github.com/modgate/modgate/ledger"
	"github.com/modgate/modgate/policy"
	"github.com/modgate/modgate/upstream"
	"github.com/modgate/modgate/verify"
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

Flags:
`

// serveFlags are serve's command-line flags; empty means "not given".
type serveFlags struct {
	config, listen, admin, audit string
	cacheDir                     string
	tlsCert, tlsKey, tlsClientCA string
	logLevel                     string
}

func serve(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var f serveFlags
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), serveUsage)
		fs.PrintDefaults()
	}
	fs.StringVar(&f.config, "config", "", "YAML config `file` (modgate.yaml); none: defaults from go env")
	fs.StringVar(&f.listen, "listen", "", "GOPROXY listener `address` (default 127.0.0.1:8080)")
	fs.StringVar(&f.admin, "admin", "", "admin listener `address` for /healthz and /readyz (default 127.0.0.1:9100)")
	fs.StringVar(&f.audit, "audit", "", "audit `file`, JSON lines appended (default stdout)")
	fs.StringVar(&f.cacheDir, "cache-dir", "", "cache `directory` for the disk tier (default: modgate/ in the user cache directory)")
	fs.StringVar(&f.tlsCert, "tls-cert", "", "serve HTTPS with this PEM certificate chain `file`")
	fs.StringVar(&f.tlsKey, "tls-key", "", "PEM private key `file` for --tls-cert")
	fs.StringVar(&f.tlsClientCA, "tls-client-ca", "", "require client certificates signed by the CAs in this PEM `file`")
	fs.StringVar(&f.logLevel, "log-level", "info", "log `level`: debug, info, warn or error (logs go to stderr)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("serve: unexpected argument %q", fs.Arg(0))}
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return usageError{fmt.Sprintf("serve: --log-level: %v", err)}
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	cfg, err := loadConfig(f.config)
	if err != nil {
		return err
	}
	f.apply(cfg)
	if err := cfg.check(); err != nil {
		return fmt.Errorf("flags: %w", err)
	}
	env, err := readGoEnv(ctx)
	if err != nil {
		return err
	}

	g, err := newGateway(ctx, cfg, env, stdout, log)
	if err != nil {
		return err
	}
	defer g.close()
	return g.run(ctx)
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
}

// standalone is a running standalone gateway: its servers and what they share.
type standalone struct {
	cfg       *fileConfig
	log       *slog.Logger
	handler   *gateway.Handler
	cache     *cache.Cache
	ledger    *ledger.Ledger
	verifier  *verify.Verifier
	audit     *audit.Writer
	auditFile *os.File // nil when auditing to stdout
	ready     atomic.Bool
}

func newGateway(ctx context.Context, cfg *fileConfig, env goEnv, stdout io.Writer, log *slog.Logger) (*standalone, error) {
	set, err := cfg.upstreams(env)
	if err != nil {
		return nil, err
	}
	pol, err := policy.New(policy.Config{Private: cfg.privatePatterns(env), SumDBs: cfg.sumDBs(env)})
	if err != nil {
		return nil, err
	}
	g := &standalone{cfg: cfg, log: log}
	var auditOut io.Writer = stdout
	if cfg.Audit != "" {
		g.auditFile, err = os.OpenFile(cfg.Audit, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
		if err != nil {
			return nil, fmt.Errorf("audit: %w", err)
		}
		auditOut = g.auditFile
	}
	g.audit = audit.NewWriter(auditOut)
	cc, err := cfg.cacheConfig()
	if err != nil {
		g.close()
		return nil, err
	}
	cc.Logger = log
	if g.cache, err = cache.Open(cc); err != nil {
		g.close()
		return nil, err
	}
	bud, err := cfg.budget()
	if err != nil {
		g.close()
		return nil, err
	}
	client := upstream.NewClient(upstream.ClientOptions{HeaderTimeout: cfg.Limits.UpstreamHeaderTimeout})
	if err := g.openVerifier(ctx, cfg, env, cc.Dir, set, client); err != nil {
		g.close()
		return nil, err
	}
	opts := extproc.Options{
		Policy:              pol,
		Upstreams:           set,
		Cache:               g.cache,
		Verifier:            g.verifier,
		Audit:               g.audit,
		MaxTarget:           cfg.Limits.MaxTargetBytes,
		PassPrivateNotFound: cfg.PassPrivateNotFound,
		Logger:              log,
	}
	if bud != nil {
		opts.Budget = bud // a nil *budget.Budget would be a non-nil interface
	}
	proc, err := extproc.New(opts)
	if err != nil {
		g.close()
		return nil, err
	}
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

// openVerifier opens the private ledger and the checksum database state
// under the cache directory, and the Verifier over them.
func (g *standalone) openVerifier(ctx context.Context, cfg *fileConfig, env goEnv, cacheDir string, set *upstream.Set, client *upstream.Client) error {
	key, err := cfg.sumDBKey(env)
	if err != nil {
		return err
	}
	if g.ledger, err = ledger.Open(filepath.Join(cacheDir, "ledger"), g.log); err != nil {
		return err
	}
	vc := verify.Config{Key: key, Ledger: g.ledger, Logger: g.log}
	if key == "" {
		g.log.Warn("no checksum database (GOSUMDB=off or sumdb_key: off): public modules are NOT verified before they are cached and served")
	} else {
		name, _, _ := strings.Cut(key, "+")
		vc.Dir = filepath.Join(cacheDir, "sumdb")
		vc.Fetch = func(ctx context.Context, p string) ([]byte, error) {
			return client.Get(ctx, set.Candidates(false), "/sumdb/"+name+p, extproc.MaxSumDBBytes)
		}
		vc.OnSecurityError = func(msg string) {
			ev := &audit.Event{
				Timestamp: time.Now().UTC(),
				Event:     audit.EventFields{Action: "sumdb-security-error", Outcome: audit.OutcomeFailure, Reason: msg},
				Modgate:   audit.ModgateGroup{SumDB: name, Verification: "failed"},
			}
			if err := g.audit.Record(ev); err != nil {
				g.log.Error("audit event not recorded", "err", err)
			}
		}
	}
	if g.verifier, err = verify.New(ctx, vc); err != nil {
		return err
	}
	g.log.Info("verification", "sumdb", g.verifier.Name(), "ledger", filepath.Join(cacheDir, "ledger"))
	return nil
}

func (g *standalone) close() {
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
	if g.auditFile != nil {
		if err := g.auditFile.Close(); err != nil {
			g.log.Error("closing audit file", "err", err)
		}
	}
}

// run serves until ctx is done, then shuts down gracefully.
func (g *standalone) run(ctx context.Context) error {
	var servers []*http.Server
	var listeners []net.Listener
	closeAll := func() {
		for _, l := range listeners {
			l.Close()
		}
	}

	proxyTLS, err := g.tlsConfig()
	if err != nil {
		return err
	}
	if g.cfg.Listen != "off" {
		l, err := listen("goproxy", g.cfg.Listen, proxyTLS, g.log)
		if err != nil {
			closeAll()
			return err
		}
		listeners = append(listeners, l)
		srv := g.server(g.handler)
		srv.ConnContext = gateway.ConnContext
		servers = append(servers, srv)
	}
	if g.cfg.Admin != "off" {
		l, err := listen("admin", g.cfg.Admin, nil, g.log)
		if err != nil {
			closeAll()
			return err
		}
		listeners = append(listeners, l)
		servers = append(servers, g.server(g.adminHandler()))
	}
	if len(servers) == 0 {
		return errors.New("every listener is off")
	}

	errc := make(chan error, len(servers))
	var wg sync.WaitGroup
	for i, srv := range servers {
		wg.Go(func() {
			if err := srv.Serve(listeners[i]); !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		})
	}
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
			srv.Close()
		}
	}
	wg.Wait()
	// Fills may still run for requests whose clients left.
	if err := g.handler.Wait(shutdownCtx); err != nil {
		g.log.Warn("shutdown", "err", err)
	}
	return runErr
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
	t := g.cfg.TLS
	if t.Cert == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(t.Cert, t.Key)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	c := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		NextProtos:   []string{"h2", "http/1.1"},
	}
	if t.ClientCA != "" {
		pem, err := os.ReadFile(t.ClientCA)
		if err != nil {
			return nil, fmt.Errorf("tls.client_ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls.client_ca: no PEM certificate in %s", t.ClientCA)
		}
		c.ClientCAs = pool
		c.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return c, nil
}

// listen opens a listener and logs the address it got.
func listen(name, addr string, tc *tls.Config, log *slog.Logger) (net.Listener, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s listener: %w", name, err)
	}
	scheme := "http"
	if tc != nil {
		l = tls.NewListener(l, tc)
		scheme = "https"
	}
	log.Info("listening", "listener", name, "addr", l.Addr().String(), "scheme", scheme)
	return l, nil
}
