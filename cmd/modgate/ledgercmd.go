package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/mod/module"

	"github.com/modgate/modgate/auth"
	"github.com/modgate/modgate/ledger"
)

const ledgerUsage = `Usage:

	modgate ledger list [--cache-dir D | --config F]
	modgate ledger verify [--cache-dir D | --config F]

The private-module ledger records, on first fetch, the h1: hashes of every
private module version modgate serves (no public checksum database may be
asked about them); a later fetch with other bytes is refused. It is the
file "ledger" in the cache directory, append-only and hash-chained.

list prints one line per hash: module, version (with /go.mod for a go.mod
hash), hash. verify checks every line and the chain, and fails naming the
first line that was edited, removed, moved or recorded twice. Both only
read the file, so they may run beside 'modgate serve'.

Flags:
`

// ledgerCmd runs `modgate ledger`.
func ledgerCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("ledger", ledgerUsage, stderr)
	cacheDir := fs.String("cache-dir", "", "cache `directory` holding the ledger (default: as modgate serve's)")
	config := fs.String("config", "", "read cache_dir from this modgate.yaml `file`")
	sub, err := parseSub(fs, args, "list", "verify")
	if err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usageError{fmt.Sprintf("ledger %s: takes no arguments", sub)}
	}
	cfg, err := loadConfig(*config)
	if err != nil {
		return err
	}
	if *cacheDir != "" {
		cfg.CacheDir = *cacheDir
	}
	cc, err := cfg.cacheConfig()
	if err != nil {
		return err
	}
	path := filepath.Join(cc.Dir, "ledger")
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(stderr, "no ledger at %s: no private module has been fetched\n", path)
		return nil
	}
	if err != nil {
		return fmt.Errorf("ledger: %w", err)
	}
	defer f.Close()
	entries, err := ledger.Read(f)
	if sub == "list" {
		for _, e := range entries {
			fmt.Fprintf(stdout, "%s %s %s\n", e.Module, e.Version, e.Hash)
		}
	}
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if sub == "verify" {
		fmt.Fprintf(stdout, "%s: %d hashes, chain intact\n", path, len(entries))
	}
	return nil
}

// ledgerLookup is GET /ledger/lookup?module=M&version=V on the GOPROXY
// listener: the private ledger's records of a private module version, in
// go.sum's form, for modgate check. It authenticates like every request
// (tokens, when auth is on), refuses (403) a module that is not private,
// and answers 404 if the ledger has no record. Served through audited.
func (g *standalone) ledgerLookup(w http.ResponseWriter, r *http.Request) {
	aw, _ := w.(*auditWriter)
	if aw == nil {
		aw = new(auditWriter) // not audited: nowhere to note
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if g.auth != nil {
		peer := auth.Peer{}
		if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
			peer.Addr = ap
		}
		id, err := g.auth.Authenticate(r.Context(), r.Header, peer)
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Basic realm="modgate"`)
			http.Error(w, "ledger lookup: "+err.Error(), http.StatusUnauthorized)
			return
		}
		aw.user = id.Name
	}
	path, version := r.URL.Query().Get("module"), r.URL.Query().Get("version")
	if err := module.Check(path, version); err != nil || module.CanonicalVersion(version) != version {
		http.Error(w, "ledger lookup: want module=PATH&version=CANONICAL-VERSION", http.StatusBadRequest)
		return
	}
	aw.module, aw.version = path, version
	if !module.MatchPrefixPatterns(strings.Join(g.cfg.privatePatterns(g.env), ","), path) {
		// A refusal, as every denial is.
		http.Error(w, "ledger lookup: "+path+" is not a private module: ask the checksum database", http.StatusForbidden)
		return
	}
	var b strings.Builder
	for _, v := range []string{version, version + "/go.mod"} {
		hash, ok, err := g.ledger.Recorded(r.Context(), path, v)
		if err != nil {
			http.Error(w, "ledger lookup: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		if ok {
			fmt.Fprintf(&b, "%s %s %s\n", path, v, hash)
		}
	}
	if b.Len() == 0 {
		http.Error(w, "ledger lookup: no record of "+path+" "+version, http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(w, b.String())
}
