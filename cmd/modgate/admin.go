package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"golang.org/x/mod/module"

	"github.com/modgate/modgate/audit"
	"github.com/modgate/modgate/cache"
)

// adminHandler serves the admin listener: health, readiness, metrics,
// profiles, and the cache operations behind `modgate cache`.
func (g *standalone) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !g.ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ready\n")
	})
	mux.HandleFunc("GET /cache/stats", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(g.cache.Stats())
	})
	mux.HandleFunc("POST /cache/purge", g.purge)
	mux.Handle("GET /metrics", g.metrics.Handler())
	// Profiles, for operators: the admin listener is loopback-only by default.
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	return mux
}

// purgeTarget is a module path, and optionally a version, to purge.
type purgeTarget struct {
	path, version string
}

// parsePurgeTarget checks MODULE[@VERSION] with golang.org/x/mod.
func parsePurgeTarget(s string) (purgeTarget, error) {
	path, version, _ := strings.Cut(s, "@")
	if err := module.CheckPath(path); err != nil {
		return purgeTarget{}, err
	}
	if version != "" {
		if err := module.Check(path, version); err != nil {
			return purgeTarget{}, err
		}
		if module.CanonicalVersion(version) != version {
			return purgeTarget{}, fmt.Errorf("version %q is not canonical (%s)", version, module.CanonicalVersion(version))
		}
	}
	return purgeTarget{path, version}, nil
}

// purge removes a module's (or a version's) entries from the cache. It is
// audited like a request.
func (g *standalone) purge(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	target := r.URL.Query().Get("module")
	ev := &audit.Event{
		Timestamp: start.UTC(),
		Event:     audit.EventFields{Action: "cache-purge"},
		URL:       &audit.URL{Path: r.URL.Path},
		HTTP:      &audit.HTTP{Request: audit.HTTPRequest{Method: r.Method}},
	}
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		ev.Source = &audit.Source{IP: ap.Addr().Unmap().String(), Port: ap.Port()}
	}
	reply := func(status int, body string) {
		ev.Event.Duration = time.Since(start).Nanoseconds()
		ev.HTTP.Response.StatusCode = status
		ev.HTTP.Response.Bytes = int64(len(body))
		if err := g.audit.Record(ev); err != nil {
			g.log.Error("audit event not recorded", "err", err)
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(status)
		io.WriteString(w, body)
	}

	t, err := parsePurgeTarget(target)
	if err != nil {
		ev.Event.Outcome, ev.Event.Reason = audit.OutcomeFailure, err.Error()
		reply(http.StatusBadRequest, fmt.Sprintf("purge %q: %v\n", target, err))
		return
	}
	ev.Modgate.Module, ev.Modgate.Version = t.path, t.version
	escPath, _ := module.EscapePath(t.path) // checked above
	escVersion := ""
	if t.version != "" {
		escVersion, _ = module.EscapeVersion(t.version)
	}
	n := g.cache.Purge(cache.ModuleKeys(escPath, escVersion))
	g.log.Info("cache purged", "module", t.path, "version", t.version, "entries", n)
	ev.Event.Outcome = audit.OutcomeSuccess
	ev.Event.Reason = fmt.Sprintf("purged %d entries", n)
	reply(http.StatusOK, fmt.Sprintf("purged %d entries\n", n))
}

const cacheUsage = `Usage:

	modgate cache stats [--admin ADDR]
	modgate cache purge [--admin ADDR] MODULE[@VERSION]

Talks to a running 'modgate serve' on its admin listener.

stats prints the entries, bytes and counters of both cache tiers.

purge removes MODULE@VERSION's .info, .mod and .zip from both tiers, or,
without a version, everything cached for MODULE (its versions, list,
@latest and negative entries). The purge is audited by the server.

Flags:
`

// cacheCmd runs `modgate cache`.
func cacheCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("cache", cacheUsage, stderr)
	admin := fs.String("admin", "127.0.0.1:9100", "admin listener `address` of the running modgate serve")
	sub, err := parseSub(fs, args, "stats", "purge")
	if err != nil {
		return err
	}
	base := "http://" + *admin
	client := &http.Client{Timeout: 30 * time.Second}
	var req *http.Request
	switch sub {
	case "stats":
		if fs.NArg() != 0 {
			return usageError{"cache stats: takes no arguments"}
		}
		req, err = http.NewRequestWithContext(ctx, http.MethodGet, base+"/cache/stats", nil)
	case "purge":
		if fs.NArg() != 1 {
			return usageError{"cache purge: want exactly one MODULE[@VERSION]"}
		}
		if _, perr := parsePurgeTarget(fs.Arg(0)); perr != nil {
			return usageError{fmt.Sprintf("cache purge: %v", perr)}
		}
		req, err = http.NewRequestWithContext(ctx, http.MethodPost, base+"/cache/purge?module="+url.QueryEscape(fs.Arg(0)), nil)
	}
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		var oe *net.OpError
		if errors.As(err, &oe) {
			return fmt.Errorf("cache %s: no modgate admin listener at %s (is 'modgate serve' running, and is --admin right?): %w", sub, *admin, err)
		}
		return fmt.Errorf("cache %s: %w", sub, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("cache %s: %w", sub, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("cache %s: %s: %s", sub, resp.Status, strings.TrimSpace(string(body)))
	}
	if sub == "purge" {
		fmt.Fprint(stdout, string(body))
		return nil
	}
	var st cache.Stats
	if err := json.Unmarshal(body, &st); err != nil {
		return fmt.Errorf("cache stats: %w", err)
	}
	fmt.Fprintf(stdout, "hot tier:  %d entries, limit %d bytes (entries up to %d bytes), %d hits, %d misses, %d evictions, %d expired\n",
		st.Hot.Entries, st.Hot.Limit, st.Hot.MaxEntry, st.Hot.Hits, st.Hot.Misses, st.Hot.Evictions, st.Hot.Expired)
	fmt.Fprintf(stdout, "disk tier: %d entries, %d blobs, %d of %d bytes, %d evictions\n",
		st.Disk.Entries, st.Disk.Blobs, st.Disk.Bytes, st.Disk.Limit, st.Disk.Evictions)
	return nil
}
