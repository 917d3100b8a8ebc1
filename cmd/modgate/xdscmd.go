package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/modgate/modgate/audit"
	"github.com/modgate/modgate/health"
	"github.com/modgate/modgate/metrics"
	"github.com/modgate/modgate/upstream"
	"github.com/modgate/modgate/xds"
)

const xdsUsage = `Usage: modgate xds [flags]

Runs the control plane alone: an ADS server that publishes to the gateway
Envoy (node id modgate-gateway by default) the clusters its bootstrap routes
to — upstream_public (the first healthy public upstream), upstream_private
(EDS, draining endpoints marked, removed ones gone), modgate_blob — from the
upstreams in the configuration (default: go env GOPROXY) and their health.
It probes every upstream (health.interval, default 5s); 3 failures in a row
drain one, 2 successes bring it back, and a drained one is removed after
health.drain_period. SIGHUP reloads the upstream list from --config; a bad
file is refused and the running list kept. Health changes are audited, and
so is a snapshot version a client rejects (NACKs): that client is not sent
the version again, only the next one.

With mesh_tls in the config file, the ADS listener serves mutual TLS and
admits only mesh_tls.allowed_clients. With xds.blob_tls, the published
modgate_blob cluster reaches the blob listener over mutual TLS (the
gateway's client certificate, the CA, and the listener's SAN).

Flags:
`

// xdsCmd runs `modgate xds`.
func xdsCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var f serveFlags
	fs := newFlagSet("xds", xdsUsage, stderr)
	fs.StringVar(&f.xdsListen, "listen", "", "ADS listener `address` (default 127.0.0.1:18000)")
	fs.StringVar(&f.config, "config", "", "YAML config `file` (modgate.yaml); none: defaults from go env")
	fs.StringVar(&f.audit, "audit", "", "audit `file` for health changes and rejected snapshots, JSON lines appended (default stdout)")
	fs.StringVar(&f.logLevel, "log-level", "info", "log `level`: debug, info, warn or error (logs go to stderr)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("xds: unexpected argument %q", fs.Arg(0))}
	}
	cfg, env, log, err := prepare(ctx, "xds", &f, stderr)
	if err != nil {
		return err
	}
	if cfg.XDSListen == "off" {
		return usageError{"xds: the listener cannot be off"}
	}
	set, err := cfg.upstreams(env)
	if err != nil {
		return err
	}

	g := &standalone{cfg: cfg, cfgPath: f.config, env: env, log: log}
	if err := g.openAudit(stdout); err != nil {
		return err
	}
	defer g.close()
	g.client = upstream.NewClient(upstream.ClientOptions{HeaderTimeout: cfg.Limits.UpstreamHeaderTimeout})
	g.metrics = metrics.New()
	g.health = newRegistry(cfg, set, g.audit, g.metrics, time.Now, log)
	if g.xds, err = g.newXDS(ctx); err != nil {
		return err
	}
	tc, err := cfg.meshTLS()
	if err != nil {
		return err
	}

	l, err := listen("xds", cfg.XDSListen, tc, false, log)
	if err != nil {
		return err
	}
	srv := newGRPCServer(g.xds.Register, tc)
	var wg sync.WaitGroup
	errc := make(chan error, 1)
	wg.Go(func() { errc <- srv.Serve(l) })
	loops, stop := context.WithCancel(ctx)
	pc := health.ProbeConfig{Client: g.client, Path: cfg.Health.ProbePath, Interval: cfg.Health.Interval, Timeout: cfg.Health.Timeout}
	wg.Go(func() { g.health.RunProber(loops, pc) })
	wg.Go(func() { g.xds.Run(loops) })
	wg.Go(func() { g.reloadOnHUP(loops) })
	log.Info("ready")

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	stop()
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		log.Warn("shutdown", "err", err)
	}
	wg.Wait()
	if errors.Is(runErr, context.Canceled) {
		runErr = nil
	}
	return runErr
}

// xdsOptions is the control plane's configuration: node id, blob
// address, and mutual TLS to the blob listener (xds.blob_tls, whose san
// defaults to the host of xds.blob_addr).
func (c *fileConfig) xdsOptions(reg *health.Registry, log *slog.Logger) xds.Options {
	o := xds.Options{NodeID: c.XDS.NodeID, Health: reg, BlobAddr: c.XDS.BlobAddr, Logger: log}
	if c.VCS != nil {
		o.VCSAddr = c.VCS.Advertise
	}
	if b := c.XDS.BlobTLS; b.Cert != "" {
		o.BlobTLS = &xds.BlobTLS{Cert: b.Cert, Key: b.Key, CA: b.CA, SAN: b.SAN}
		if b.SAN == "" {
			o.BlobTLS.SAN = blobHost(c.XDS.BlobAddr)
		}
	}
	return o
}

// newXDS is the control plane of g's configuration and health registry,
// whose NACKs are audited and counted.
func (g *standalone) newXDS(ctx context.Context) (*xds.Server, error) {
	o := g.cfg.xdsOptions(g.health, g.log)
	o.Auditor, o.Observer = g.audit, g.metrics
	return xds.New(ctx, o)
}

// blobHost is the host of xds.blob_addr (default xds.DefaultBlobAddr), ""
// if it has none.
func blobHost(addr string) string {
	if addr == "" {
		addr = xds.DefaultBlobAddr
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return ""
	}
	return host
}

// newRegistry is the health registry of set, whose changes are audited.
func newRegistry(cfg *fileConfig, set *upstream.Set, aw *audit.Writer, m *metrics.Metrics, now func() time.Time, log *slog.Logger) *health.Registry {
	h := cfg.Health
	for _, u := range append(set.Public, set.Private...) {
		m.UpstreamState(u.Name, health.Healthy.String())
	}
	return health.New(set, health.Config{
		FailThreshold: h.FailThreshold, RecoverThreshold: h.RecoverThreshold, DrainPeriod: h.DrainPeriod, Logger: log, Now: now,
		OnChange: func(name string, from, to health.State) {
			m.UpstreamState(name, to.String())
			ev := &audit.Event{
				Timestamp: now().UTC(),
				Event:     audit.EventFields{Action: "upstream-health", Outcome: audit.OutcomeSuccess, Reason: fmt.Sprintf("%s -> %s", from, to)},
				Modgate:   audit.ModgateGroup{Upstream: name},
			}
			if to != health.Healthy {
				ev.Event.Outcome = audit.OutcomeFailure
			}
			if err := aw.Record(ev); err != nil {
				log.Error("audit event not recorded", "err", err)
			}
		},
	})
}
