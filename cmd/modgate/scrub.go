package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"sync"
	"time"

	"github.com/modgate/modgate/audit"
	"github.com/modgate/modgate/cache"
	"github.com/modgate/modgate/gate"
	"github.com/modgate/modgate/goproxy"
	"github.com/modgate/modgate/internal/files"
	"github.com/modgate/modgate/ledger"
	"github.com/modgate/modgate/policy"
	"github.com/modgate/modgate/verify"
)

// scrubMu lets one scrub run at a time: the periodic one or an operator's.
var scrubMu sync.Mutex

// scrubCheck re-verifies a stored .mod or .zip: public ones against the
// checksum database state the verifier holds, private ones against the
// ledger. A mismatch is bad; any other failure leaves the entry alone.
func (g *standalone) scrubCheck(ctx context.Context, m cache.Meta, file string) (string, error) {
	req, err := goproxy.Parse("GET", m.Key, 0)
	if err != nil {
		return "", fmt.Errorf("not a module request: %w", err)
	}
	private := g.policy != nil && g.policy.Decide(req).Route == policy.Private
	switch req.Kind {
	case goproxy.KindMod:
		data, err := files.ReadMax(file, gate.MaxModBytes)
		if err != nil {
			return "", err
		}
		_, err = g.verifier.Mod(ctx, req.Module, req.Version, data, private)
		return judgeScrub(err)
	case goproxy.KindZip:
		_, err := g.verifier.Zip(ctx, req.Module, req.Version, file, private)
		return judgeScrub(err)
	}
	return "", nil
}

// judgeScrub turns a verification error into a reason to quarantine (a
// mismatch, a zip that is not a valid module zip) or a failure to check.
func judgeScrub(err error) (string, error) {
	var me *verify.MismatchError
	var ze *verify.InvalidZipError
	switch {
	case err == nil:
		return "", nil
	case errors.As(err, &me), errors.As(err, &ze):
		return err.Error(), nil
	}
	return "", err
}

// scrub runs one scrub of the cache and audits each quarantine.
func (g *standalone) scrub(ctx context.Context) (cache.ScrubReport, error) {
	scrubMu.Lock()
	defer scrubMu.Unlock()
	return g.cache.Scrub(ctx, g.scrubCheck, cache.ScrubOptions{
		BytesPerSecond: int64(g.cfg.Cache.VerifyRate),
		OnQuarantine: func(m cache.Meta, reason string) {
			g.quarantined.Add(1)
			ev := &audit.Event{
				Timestamp: g.clock.Now().UTC(),
				Event:     audit.EventFields{Action: "cache-quarantine", Outcome: audit.OutcomeSuccess, Reason: reason},
				URL:       &audit.URL{Path: m.Key},
			}
			if req, err := goproxy.Parse("GET", m.Key, 0); err == nil {
				ev.Modgate.Module, ev.Modgate.Version = req.Module, req.Version
			}
			if err := g.audit.Record(ev); err != nil {
				g.log.Error("audit event not recorded", "err", err)
			}
		},
	})
}

// verifyCache is POST /cache/verify: a scrub, answered with its report.
func (g *standalone) verifyCache(w http.ResponseWriter, r *http.Request) {
	rep, err := g.scrub(r.Context())
	if err != nil {
		http.Error(w, "cache verify: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(rep)
}

// scrubEvery runs a scrub every interval until ctx ends.
func (g *standalone) scrubEvery(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		start := g.clock.Now()
		rep, err := g.scrub(ctx)
		if err != nil && ctx.Err() == nil {
			g.log.Error("cache verify failed", "err", err)
			continue
		}
		g.log.Info("cache verified", "checked", rep.Checked, "bytes", rep.Bytes, "quarantined", len(rep.Quarantined), "unchecked", len(rep.Unchecked), "took", g.clock.Since(start).Round(time.Millisecond))
	}
}

// verifyCacheOffline is `modgate cache verify --offline`: the scrub of a
// cache directory no gateway is running on, against the checksum-database
// state and the ledger kept there. Nothing is fetched: what the state
// cannot answer is reported as not checked. Quarantines are audited to
// the configured audit file (standard error if there is none).
func verifyCacheOffline(ctx context.Context, cfg *fileConfig, stderr io.Writer) (cache.ScrubReport, error) {
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	env, err := readGoEnv(ctx)
	if err != nil {
		return cache.ScrubReport{}, err
	}
	cc, err := cfg.cacheConfig()
	if err != nil {
		return cache.ScrubReport{}, err
	}
	cc.Logger = log
	g := &standalone{cfg: cfg, log: log}
	defer g.close()
	if err := g.openAudit(stderr); err != nil {
		return cache.ScrubReport{}, err
	}
	if g.cache, err = cache.Open(cc); err != nil {
		return cache.ScrubReport{}, fmt.Errorf("%w (is modgate serve running on it? then leave out --offline)", err)
	}
	if g.policy, err = policy.New(policy.Config{Private: cfg.privatePatterns(env), SumDBs: cfg.sumDBs(env)}); err != nil {
		return cache.ScrubReport{}, err
	}
	key, err := cfg.sumDBKey(env)
	if err != nil {
		return cache.ScrubReport{}, err
	}
	if g.ledger, err = ledger.Open(filepath.Join(cc.Dir, "ledger"), log); err != nil {
		return cache.ScrubReport{}, err
	}
	vc := verify.Config{Key: key, Ledger: g.ledger, Logger: log}
	if key != "" {
		vc.Dir = filepath.Join(cc.Dir, "sumdb")
		vc.Fetch = func(context.Context, string) ([]byte, error) {
			return nil, errors.New("offline: not in the checksum database state held in the cache directory")
		}
	}
	if g.verifier, err = verify.New(ctx, vc); err != nil {
		return cache.ScrubReport{}, err
	}
	return g.scrub(ctx)
}
