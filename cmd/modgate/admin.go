package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/mod/module"

	"github.com/modgate/modgate/audit"
	"github.com/modgate/modgate/cache"
)

// adminHandler serves the admin listener: health, readiness, metrics,
// profiles, the cache operations behind `modgate cache`, and the web
// console.
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
		// Stale vulnerability data and unreachable fill coordination are
		// reasons, not failures: pulling every replica out at once would
		// help nobody, and without coordination a replica stays correct.
		io.WriteString(w, "ready\n")
		if s := g.vulnStore; s != nil && s.Stale() {
			fmt.Fprintf(w, "vulndb: stale: the data is %s old (max_staleness %s)\n", s.Age().Round(time.Minute), g.cfg.VulnDB.MaxStaleness)
		}
		if g.leases != nil {
			if ok, detail := g.leases.Status(); !ok {
				fmt.Fprintf(w, "coordination: unavailable, filling alone: %s\n", detail)
			}
		}
	})
	mux.HandleFunc("GET /cache/stats", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(g.cache.Stats())
	})
	mux.Handle("POST /cache/purge", g.guard(http.HandlerFunc(g.purge)))
	mux.Handle("POST /cache/verify", g.guard(http.HandlerFunc(g.verifyCache)))
	mux.Handle("GET /metrics", g.metrics.Handler())
	if g.inventory != nil {
		// Who fetched what: identities, not secrets; as open as /metrics.
		mux.Handle("GET /inventory/", g.inventory.Handler())
	}
	if g.console != nil {
		// The console does its own authentication: the admin token, or a
		// session its login form made from it.
		mux.Handle("/ui/", g.console.Handler())
		mux.Handle("GET /ui", http.RedirectHandler("/ui/", http.StatusMovedPermanently))
	}
	if g.faultClock {
		mux.Handle("POST /debug/clock", g.guard(http.HandlerFunc(g.stepClock)))
	}
	// Profiles, for operators: they show memory, and so may show secrets.
	mux.Handle("GET /debug/pprof/", g.guard(http.HandlerFunc(pprof.Index)))
	mux.Handle("GET /debug/pprof/profile", g.guard(http.HandlerFunc(pprof.Profile)))
	mux.Handle("GET /debug/pprof/trace", g.guard(http.HandlerFunc(pprof.Trace)))
	return mux
}

// adminTokenName is the file, in the cache directory, that holds the
// admin token made at start when admin_token_file is not set.
const adminTokenName = "admin-token"

// Bounds of an admin token read from a file.
const (
	minAdminToken = 16
	maxAdminToken = 4 << 10
)

// adminToken returns the admin listener's bearer token: the content of
// file (admin_token_file), or, if file is "", a fresh random token
// written to admin-token in cacheDir with mode 0600 (its path is logged,
// never the token).
func adminToken(file, cacheDir string, log *slog.Logger) (string, error) {
	if file != "" {
		tok, err := readAdminToken(file)
		if err != nil {
			return "", fmt.Errorf("admin_token_file: %w", err)
		}
		log.Info("admin token", "file", file)
		return tok, nil
	}
	var b [32]byte
	rand.Read(b[:]) // never fails (crypto/rand)
	tok := hex.EncodeToString(b[:])
	path := filepath.Join(cacheDir, adminTokenName)
	tmp, err := os.CreateTemp(cacheDir, adminTokenName+"-*")
	if err != nil {
		return "", fmt.Errorf("admin token: %w", err)
	}
	_, err = tmp.WriteString(tok + "\n")
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o600) // CreateTemp's mode already; umask-proof
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return "", fmt.Errorf("admin token: %w", err)
	}
	log.Info("admin token", "file", path)
	return tok, nil
}

// readAdminToken reads a token file: its content without surrounding
// white space, between minAdminToken and maxAdminToken bytes.
func readAdminToken(file string) (string, error) {
	tok, err := readSecret(file, maxAdminToken)
	if err != nil {
		return "", err
	}
	if len(tok) < minAdminToken {
		return "", fmt.Errorf("%s: the token is %d bytes, want at least %d", file, len(tok), minAdminToken)
	}
	return tok, nil
}

// guard lets a request through to h only with "Authorization: Bearer
// TOKEN" for the admin token; others get a plain-text 401.
func (g *standalone) guard(h http.Handler) http.Handler {
	want := sha256.Sum256([]byte(g.adminToken))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		// Hashing first makes the comparison's time independent of the
		// token's length too.
		got := sha256.Sum256([]byte(tok))
		if !ok || g.adminToken == "" || subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
			g.log.Warn("admin: request without a valid token refused", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr)
			w.Header().Set("WWW-Authenticate", `Bearer realm="modgate-admin"`)
			http.Error(w, "unauthorized: this endpoint needs Authorization: Bearer TOKEN (the admin token; see admin_token_file)", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// purgeTarget is a module path, and optionally a version, to purge, and
// their escaped forms, as cache keys hold them.
type purgeTarget struct {
	path, version       string
	escPath, escVersion string
}

// keys matches the cache keys of the target.
func (t purgeTarget) keys() func(key string) bool {
	return cache.ModuleKeys(t.escPath, t.escVersion)
}

// parsePurgeTarget checks MODULE[@VERSION] with golang.org/x/mod.
func parsePurgeTarget(s string) (purgeTarget, error) {
	path, version, _ := strings.Cut(s, "@")
	if err := module.CheckPath(path); err != nil {
		return purgeTarget{}, err
	}
	t := purgeTarget{path: path, version: version}
	t.escPath, _ = module.EscapePath(path) // checked above
	if version != "" {
		if err := module.Check(path, version); err != nil {
			return purgeTarget{}, err
		}
		if module.CanonicalVersion(version) != version {
			return purgeTarget{}, fmt.Errorf("version %q is not canonical (%s)", version, module.CanonicalVersion(version))
		}
		t.escVersion, _ = module.EscapeVersion(version)
	}
	return t, nil
}

// purge removes a module's (or a version's) entries from the cache. It is
// audited like a request.
func (g *standalone) purge(w http.ResponseWriter, r *http.Request) {
	start := g.clock.Now()
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
		ev.Event.Duration = g.clock.Since(start).Nanoseconds()
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
	// The shared store first: a replica must not read the purged entries
	// back from it after its own purge.
	shared, err := g.purgeShared(r.Context(), t)
	if err != nil {
		ev.Event.Outcome, ev.Event.Reason = audit.OutcomeFailure, err.Error()
		reply(http.StatusServiceUnavailable, fmt.Sprintf("purge %s: %v; nothing purged here, try again\n", target, err))
		return
	}
	n := g.cache.Purge(t.keys())
	g.log.Info("cache purged", "module", t.path, "version", t.version, "entries", n, "shared_entries", shared)
	msg := fmt.Sprintf("purged %d entries", n)
	if g.store != nil {
		msg += fmt.Sprintf(" here and %d in the shared store", shared)
	}
	if g.leases != nil {
		if err := g.leases.PublishPurge(r.Context(), t.path, t.version); err != nil {
			msg += fmt.Sprintf("; the other replicas were NOT told (%v): purge each of them", err)
		} else {
			msg += "; the other replicas were told to purge theirs"
		}
	}
	ev.Event.Outcome = audit.OutcomeSuccess
	ev.Event.Reason = msg
	reply(http.StatusOK, msg+"\n")
}

const cacheUsage = `Usage:

	modgate cache stats [--admin ADDR]
	modgate cache purge [--admin ADDR] [--admin-token-file F] MODULE[@VERSION]
	modgate cache verify [--admin ADDR] [--admin-token-file F]
	modgate cache verify --offline [--config F] [--cache-dir D]

Talks to a running 'modgate serve' on its admin listener.

stats prints the entries, bytes and counters of both cache tiers.

verify re-verifies every stored .mod and .zip, offline: its bytes against
the SHA-256 recorded when it was stored, then public ones against the
checksum database state the server holds and private ones against the
ledger. What fails is quarantined: never served again (the next request
fetches and verifies it anew), its bytes kept in quarantine/ in the cache
directory, each audited. Exit status 1 if anything was quarantined. With
--offline it scrubs a cache directory no gateway runs on, fetching
nothing: what the database state held there cannot answer is reported as
not checked.

purge removes MODULE@VERSION's .info, .mod and .zip from both tiers, or,
without a version, everything cached for MODULE (its versions, list,
@latest and negative entries). With replicas (store: and coordination:),
it removes them from the shared store too and tells the other replicas to
purge theirs. The purge is audited by the server. It
needs the server's admin token: from --admin-token-file if given, else
from the environment variable MODGATE_ADMIN_TOKEN if set, else from
admin-token in the default cache directory, where a server without
admin_token_file and --cache-dir writes it at start.

Flags:
`

// cacheCmd runs `modgate cache`.
func cacheCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("cache", cacheUsage, stderr)
	admin := fs.String("admin", "127.0.0.1:9100", "admin listener `address` of the running modgate serve, or its URL (https://HOST:PORT with admin_tls; the CA from SSL_CERT_FILE or the system's)")
	defaultTokenFile := ""
	if dir, err := new(fileConfig).cacheConfig(); err == nil {
		defaultTokenFile = filepath.Join(dir.Dir, adminTokenName)
	}
	tokenFile := fs.String("admin-token-file", "", "`file` with the server's admin token (default: $MODGATE_ADMIN_TOKEN if set, else "+defaultTokenFile+")")
	offline := fs.Bool("offline", false, "verify: scrub the cache directory itself, with no gateway running on it")
	config := fs.String("config", "", "verify --offline: the modgate.yaml `file` whose cache_dir, sumdb_key, private and audit to use")
	cacheDir := fs.String("cache-dir", "", "verify --offline: the cache `directory` (default: as modgate serve's)")
	var req *http.Request
	sub, err := parseSub(fs, args, "stats", "purge", "verify")
	if err != nil {
		return err
	}
	base := "http://" + *admin
	if strings.Contains(*admin, "://") { // an HTTPS admin listener (admin_tls)
		base = strings.TrimSuffix(*admin, "/")
	}
	client := &http.Client{Timeout: 30 * time.Second}
	if sub == "verify" && *offline {
		if fs.NArg() != 0 {
			return usageError{"cache verify: takes no arguments"}
		}
		cfg, err := loadConfig(*config)
		if err != nil {
			return err
		}
		if *cacheDir != "" {
			cfg.CacheDir = *cacheDir
		}
		r, err := verifyCacheOffline(ctx, cfg, stderr)
		if err != nil {
			return fmt.Errorf("cache verify: %w", err)
		}
		return printScrub(stdout, r)
	}
	if sub == "verify" {
		if fs.NArg() != 0 {
			return usageError{"cache verify: takes no arguments"}
		}
		client.Timeout = 0 // a scrub reads the whole disk tier; ctx bounds it
		req, err = http.NewRequestWithContext(ctx, http.MethodPost, base+"/cache/verify", nil)
		if err != nil {
			return err
		}
		tok, terr := clientAdminToken(*tokenFile, defaultTokenFile)
		if terr != nil {
			return fmt.Errorf("cache verify: %w", terr)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
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
		if err != nil {
			return err
		}
		tok, terr := clientAdminToken(*tokenFile, defaultTokenFile)
		if terr != nil {
			return fmt.Errorf("cache purge: %w", terr)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
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
	if sub == "verify" {
		var r cache.ScrubReport
		if err := json.Unmarshal(body, &r); err != nil {
			return fmt.Errorf("cache verify: %w", err)
		}
		return printScrub(stdout, r)
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

// clientAdminToken finds the admin token for `modgate cache`: the file
// given with --admin-token-file, else $MODGATE_ADMIN_TOKEN, else the
// default file.
func clientAdminToken(flagFile, defaultFile string) (string, error) {
	if flagFile != "" {
		tok, err := readAdminToken(flagFile)
		if err != nil {
			return "", fmt.Errorf("--admin-token-file: %w", err)
		}
		return tok, nil
	}
	if tok := strings.TrimSpace(os.Getenv("MODGATE_ADMIN_TOKEN")); tok != "" {
		return tok, nil
	}
	if defaultFile == "" {
		return "", errors.New("no admin token: give --admin-token-file or set MODGATE_ADMIN_TOKEN")
	}
	tok, err := readAdminToken(defaultFile)
	if err != nil {
		return "", fmt.Errorf("no admin token (give --admin-token-file, e.g. CACHE_DIR/%s of the server, or set MODGATE_ADMIN_TOKEN): %w", adminTokenName, err)
	}
	return tok, nil
}

// printScrub prints a scrub's report; a quarantine is exit status 1.
func printScrub(w io.Writer, r cache.ScrubReport) error {
	fmt.Fprintf(w, "verified %d .mod and .zip entries (%d bytes): %d quarantined, %d not checkable\n", r.Checked, r.Bytes, len(r.Quarantined), len(r.Unchecked))
	for _, q := range r.Quarantined {
		fmt.Fprintf(w, "quarantined %s: %s (bytes kept in %s)\n", q.Key, q.Reason, q.File)
	}
	for _, u := range r.Unchecked {
		fmt.Fprintf(w, "not checked: %s\n", u)
	}
	if len(r.Quarantined) > 0 {
		return exitError{code: 1}
	}
	return nil
}
