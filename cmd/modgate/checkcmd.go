package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/mod/module"
	"golang.org/x/mod/sumdb/dirhash"

	"github.com/modgate/modgate/gate"
	"github.com/modgate/modgate/repocheck"
)

const checkUsage = `Usage: modgate check [DIR] [flags]

Proves that the repository in DIR (default: the current directory) holds
what the world published:

  - every h1 line of go.sum (go.work.sum and the workspace's go.sum files
    in a workspace) of a public module is the checksum database's record
    of that version, verified against its signed tree: a line that
    differs is forged or stale, a version the database does not know is
    reported as such;
  - every file under vendor/MODULE/ is byte for byte the file of that
    module's zip (files go mod vendor leaves out are fine), and
    vendor/modules.txt agrees with go.mod;
  - with a gateway, every module version whose zip go.sum records would
    be served to you: the versions it would refuse are listed with its
    reason (a deny rule, the cooldown and when it clears, vulnerability
    IDs).

The checksum database (GOSUMDB, or --sumdb) is read through the gateway's
/sumdb/NAME/ endpoint (--gateway, or the first URL in GOPROXY), or, with
neither, directly. Zips come from the module cache (GOMODCACHE), checked
against the database, or else through the gateway, which verified them.
Private modules' lines (GOPRIVATE, GONOSUMDB) are checked against the
gateway's private ledger; without a gateway they, and modules replaced by
local directories, are listed as unverifiable, not failed.

Output (--format): text (default), grouped by kind with counts; json; or
sarif (SARIF 2.1.0, for code scanning). Progress goes to stderr.

Exit status: 0 clean, 1 findings, 2 could not check (network, parse, usage).

Credentials for the gateway: a token in the file --token-file, or in
MODGATE_TOKEN, sent as Authorization: Bearer.

Flags:
`

// exitError ends a command with a given exit status; err, if set, is
// printed first.
type exitError struct {
	code int
	err  error
}

func (e exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func (e exitError) Unwrap() error { return e.err }

func checkCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("check", checkUsage, stderr)
	gateway := fs.String("gateway", "", "the modgate gateway's `URL` (default: the first URL in GOPROXY)")
	format := fs.String("format", "text", "output `format`: text, json or sarif")
	sumdbFlag := fs.String("sumdb", "", "checksum database: a known `name` or name+hash+keydata (default: GOSUMDB)")
	tokenFile := fs.String("token-file", "", "`file` holding the token for the gateway (default: $MODGATE_TOKEN)")
	timeout := fs.Duration("timeout", 10*time.Minute, "give up after this long")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return exitError{2, usageError{err.Error()}}
	}
	pos, err := interspersed(fs)
	if err != nil {
		return exitError{2, err}
	}
	if len(pos) > 1 {
		return exitError{2, usageError{"check: at most one directory"}}
	}
	if !slices.Contains([]string{"text", "json", "sarif"}, *format) {
		return exitError{2, usageError{fmt.Sprintf("check: --format %q: want text, json or sarif", *format)}}
	}
	dir := "."
	if len(pos) == 1 {
		dir = pos[0]
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	r, err := runCheck(ctx, dir, checkOptions{gateway: *gateway, sumdb: *sumdbFlag, tokenFile: *tokenFile, progress: stderr})
	if err != nil {
		return exitError{2, err}
	}
	switch *format {
	case "json":
		err = r.writeJSON(stdout)
	case "sarif":
		err = r.writeSARIF(stdout)
	default:
		r.writeText(stdout)
	}
	if err != nil {
		return exitError{2, err}
	}
	if r.failed() {
		return exitError{code: 1}
	}
	return nil
}

type checkOptions struct {
	gateway, sumdb, tokenFile string
	progress                  io.Writer
}

// checkReport is what modgate check found.
type checkReport struct {
	Dir      string              `json:"dir"`
	Modules  int                 `json:"modules"`  // module versions named by the go.sum files
	Vendored int                 `json:"vendored"` // modules under vendor/
	Findings []repocheck.Finding `json:"findings"`
	Counts   map[string]int      `json:"counts"`
	Database string              `json:"database,omitempty"`
	Gateway  string              `json:"gateway,omitempty"`
}

// failed reports whether anything but unverifiable was found.
func (r *checkReport) failed() bool {
	for k, n := range r.Counts {
		if k != repocheck.KindUnverifiable && n > 0 {
			return true
		}
	}
	return false
}

func runCheck(ctx context.Context, dir string, o checkOptions) (*checkReport, error) {
	if _, err := os.Stat(filepath.Join(dir, "go.mod")); err != nil {
		if _, werr := os.Stat(filepath.Join(dir, "go.work")); werr != nil {
			return nil, fmt.Errorf("check: %s has no go.mod or go.work", dir)
		}
	}
	env, err := readGoEnv(ctx)
	if err != nil {
		return nil, err
	}
	header := http.Header{"User-Agent": {"modgate-check"}}
	tok := os.Getenv("MODGATE_TOKEN")
	if o.tokenFile != "" {
		if tok, err = readSecret(o.tokenFile, maxSecret); err != nil {
			return nil, fmt.Errorf("check: --token-file: %w", err)
		}
	}
	if tok = strings.TrimSpace(tok); tok != "" {
		header.Set("Authorization", "Bearer "+tok)
	}
	gw := o.gateway
	if gw == "" {
		gw = firstProxyURL(env.GOPROXY)
	}
	if gw != "" {
		u, err := url.Parse(gw)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("check: gateway %q: want an http(s) URL", gw)
		}
		gw = strings.TrimSuffix(u.String(), "/")
	}
	r := &checkReport{Dir: dir, Gateway: gw, Counts: map[string]int{}}

	gosumdb := env.GOSUMDB
	if o.sumdb != "" {
		gosumdb = o.sumdb
	}
	name, key := parseGOSUMDB(gosumdb)
	if name != "" && key == "" {
		return nil, fmt.Errorf("check: no verifier key known for checksum database %q: give --sumdb name+hash+keydata", name)
	}
	client := &http.Client{Timeout: 2 * time.Minute}
	var db *repocheck.Database
	if key != "" {
		base := gw + "/sumdb/" + name
		if gw == "" {
			base = "https://" + name // the database itself, as the go command's direct mode
			if f := strings.Fields(gosumdb); len(f) > 1 {
				base = f[1]
			}
		}
		state, err := checkStateDir(name)
		if err != nil {
			return nil, err
		}
		if db, err = repocheck.OpenDatabase(ctx, key, state, repocheck.HTTPFetch(client, base, header)); err != nil {
			return nil, fmt.Errorf("check: %w", err)
		}
		defer db.Close()
		r.Database = name
	}
	patterns := env.GONOSUMDB
	if env.GOPRIVATE != "" {
		patterns = strings.Trim(env.GOPRIVATE+","+patterns, ",")
	}
	private := func(path string) bool { return patterns != "" && module.MatchPrefixPatterns(patterns, path) }

	cfg := repocheck.SumsConfig{Private: private, Progress: progress(o.progress, "checksum database")}
	if db != nil {
		cfg.DB = db
	}
	var gc *gatewayClient
	if gw != "" {
		gc = &gatewayClient{client: client, gateway: gw, header: header}
		cfg.Ledger = httpLedger{gc}
	}
	sums, n, err := repocheck.CheckSums(ctx, dir, cfg)
	if err != nil {
		return nil, err
	}
	r.Modules = n
	r.Findings = append(r.Findings, sums...)

	vendored, err := repocheck.VendoredModules(dir)
	if err != nil {
		return nil, err
	}
	r.Vendored = len(vendored)
	if len(vendored) >= 20 && o.progress != nil {
		fmt.Fprintf(o.progress, "modgate check: comparing vendor/ with %d module zips\n", len(vendored))
	}
	if len(vendored) > 0 {
		zips := &checkZips{gw: gc, db: db, private: private}
		if env.GOMODCACHE != "" {
			zips.modcache = filepath.Join(env.GOMODCACHE, "cache", "download")
		}
		defer zips.cleanup()
		vf, err := repocheck.CheckVendor(ctx, dir, zips)
		if err != nil {
			return nil, err
		}
		r.Findings = append(r.Findings, vf...)
	}
	if gc != nil {
		refused, err := repocheck.CheckGate(ctx, dir, httpGate{gc}, 8)
		if err != nil {
			return nil, err
		}
		r.Findings = append(r.Findings, refused...)
	}
	for _, f := range r.Findings {
		r.Counts[f.Kind]++
	}
	return r, nil
}

// httpLedger reads a modgate gateway's private ledger (GET
// /ledger/lookup), for private modules' go.sum lines.
type httpLedger struct{ *gatewayClient }

func (l httpLedger) Lookup(ctx context.Context, path, version string) ([]string, error) {
	u := l.gateway + "/ledger/lookup?module=" + url.QueryEscape(path) + "&version=" + url.QueryEscape(version)
	status, body, err := l.ask(ctx, "GET", u)
	switch {
	case err != nil:
		return nil, err
	case status == http.StatusNotFound && strings.HasPrefix(body, "ledger lookup:"):
		return nil, fmt.Errorf("%s@%s: %w", path, version, fs.ErrNotExist)
	case status != http.StatusOK:
		return nil, fmt.Errorf("GET %s: %d: %s (is the gateway modgate?)", u, status, strings.TrimSpace(body))
	}
	return strings.Split(strings.TrimSpace(body), "\n"), nil
}

// httpGate asks a gateway whether it would serve a version's zip: a HEAD
// with the caller's credentials, and, for a refusal, a GET for its words
// (a HEAD answer has no body).
type httpGate struct{ *gatewayClient }

// gatewayClient sends modgate check's requests to the gateway, with the
// caller's credentials.
type gatewayClient struct {
	client  *http.Client
	gateway string // base URL
	header  http.Header
}

// do sends one request for u; a 401 is an error saying where credentials
// come from. The caller closes the body.
func (g *gatewayClient) do(ctx context.Context, method, u string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return nil, err
	}
	for k, v := range g.header {
		req.Header[k] = v
	}
	resp, err := g.client.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusUnauthorized {
		resp.Body.Close()
		return nil, fmt.Errorf("%s %s: 401: the gateway wants credentials (--token-file, MODGATE_TOKEN)", method, u)
	}
	return resp, nil
}

// ask sends one request and returns its status and the start of its
// body.
func (g *gatewayClient) ask(ctx context.Context, method, u string) (int, string, error) {
	resp, err := g.do(ctx, method, u)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, string(body), nil
}

func (g httpGate) Admits(ctx context.Context, path, version string) (bool, string, error) {
	ep, err := module.EscapePath(path)
	if err != nil {
		return false, "", err
	}
	ev, err := module.EscapeVersion(version)
	if err != nil {
		return false, "", err
	}
	u := g.gateway + "/" + ep + "/@v/" + ev + ".zip"
	status, _, err := g.ask(ctx, "HEAD", u)
	if err != nil {
		return false, "", err
	}
	switch {
	case status == http.StatusOK:
		return true, "", nil
	case status == http.StatusNotFound || status == http.StatusGone:
		return false, "the gateway has no such version", nil
	case status != http.StatusForbidden:
		return false, "", fmt.Errorf("HEAD %s: %d %s", u, status, http.StatusText(status))
	}
	// A refused zip is never sent: the GET costs the refusal's few lines.
	status, body, err := g.ask(ctx, "GET", u)
	switch {
	case err != nil:
		return false, "", err
	case status == http.StatusOK:
		return true, "", nil // allowed meanwhile (the rules were reloaded)
	}
	reason, _, _ := strings.Cut(strings.TrimSpace(body), "\n")
	if reason == "" {
		reason = fmt.Sprintf("%d %s", status, http.StatusText(status))
	}
	return false, reason, nil
}

// firstProxyURL returns GOPROXY's first entry if it is an http(s) URL;
// "" if it is direct or off (no gateway) or GOPROXY is empty.
func firstProxyURL(goproxy string) string {
	first, _, _ := strings.Cut(goproxy, ",")
	first, _, _ = strings.Cut(first, "|")
	if strings.HasPrefix(first, "http://") || strings.HasPrefix(first, "https://") {
		return first
	}
	return ""
}

// checkStateDir is where modgate check keeps the checksum database's
// verified state between runs, as the go command keeps its own.
func checkStateDir(name string) (string, error) {
	base, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("check: %w", err)
	}
	return filepath.Join(base, "modgate", "check-sumdb", name), nil
}

// progress returns a progress callback writing to w at most once a
// second and at the end, or nil for small runs.
func progress(w io.Writer, what string) func(done, total int) {
	if w == nil {
		return nil
	}
	var last time.Time
	return func(done, total int) {
		if total < 20 || (done < total && time.Since(last) < time.Second) {
			return
		}
		last = time.Now()
		fmt.Fprintf(w, "modgate check: %s: %d/%d\n", what, done, total)
	}
}

// checkZips gets module zips for the vendor check: from the module cache,
// checked against the checksum database, or else through the gateway,
// which verified them (against the database, or its ledger for private
// modules).
type checkZips struct {
	gw       *gatewayClient // nil: no gateway
	db       *repocheck.Database
	private  func(string) bool
	modcache string

	mu  sync.Mutex
	tmp []string
}

func (z *checkZips) Zip(ctx context.Context, path, version string) (string, error) {
	ep, err := module.EscapePath(path)
	if err != nil {
		return "", err
	}
	ev, err := module.EscapeVersion(version)
	if err != nil {
		return "", err
	}
	if z.modcache != "" {
		file := filepath.Join(z.modcache, ep, "@v", ev+".zip")
		if _, err := os.Stat(file); err == nil {
			if err := z.verify(path, version, file); err != nil {
				return "", err
			}
			return file, nil
		}
	}
	if z.gw == nil {
		return "", fmt.Errorf("%s@%s: not in the module cache, and no gateway: %w", path, version, fs.ErrNotExist)
	}
	file, err := z.download(ctx, z.gw.gateway+"/"+ep+"/@v/"+ev+".zip")
	if err != nil {
		return "", err
	}
	// The gateway verified it; checking again costs a hash.
	if err := z.verify(path, version, file); err != nil {
		return "", err
	}
	return file, nil
}

// verify checks a public module's zip against the checksum database.
func (z *checkZips) verify(path, version, file string) error {
	if z.db == nil || z.private(path) {
		return nil
	}
	h, err := dirhash.HashZip(file, dirhash.Hash1)
	if err != nil {
		return fmt.Errorf("%s@%s: %w", path, version, err)
	}
	lines, err := z.db.Lookup(context.Background(), path, version)
	if err != nil {
		return fmt.Errorf("%s@%s: %w", path, version, err)
	}
	if !slices.Contains(lines, path+" "+version+" "+h) {
		return fmt.Errorf("%s@%s: the zip's hash %s is not the checksum database's: refusing to compare vendor/ with it", path, version, h)
	}
	return nil
}

func (z *checkZips) download(ctx context.Context, u string) (string, error) {
	resp, err := z.gw.do(ctx, "GET", u)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound, http.StatusGone:
		return "", fmt.Errorf("GET %s: %s: %w", u, resp.Status, fs.ErrNotExist)
	default:
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return "", fmt.Errorf("GET %s: %s: %s", u, resp.Status, strings.TrimSpace(string(msg)))
	}
	f, err := os.CreateTemp("", "modgate-check-*.zip")
	if err != nil {
		return "", err
	}
	z.mu.Lock()
	z.tmp = append(z.tmp, f.Name())
	z.mu.Unlock()
	n, err := io.Copy(f, io.LimitReader(resp.Body, gate.MaxZipBytes+1))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && n > gate.MaxZipBytes {
		err = fmt.Errorf("GET %s: more than %d bytes", u, gate.MaxZipBytes)
	}
	return f.Name(), err
}

func (z *checkZips) cleanup() {
	z.mu.Lock()
	defer z.mu.Unlock()
	for _, f := range z.tmp {
		os.Remove(f)
	}
}

// writeText prints the findings grouped by kind, with counts.
func (r *checkReport) writeText(w io.Writer) {
	fmt.Fprintf(w, "modgate check %s: %d module versions in go.sum", r.Dir, r.Modules)
	if r.Database != "" {
		fmt.Fprintf(w, " (checksum database %s)", r.Database)
	}
	fmt.Fprintf(w, ", %d vendored modules\n", r.Vendored)
	kinds := make([]string, 0, len(r.Counts))
	for k := range r.Counts {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	for _, k := range kinds {
		fmt.Fprintf(w, "\n%s (%d):\n", k, r.Counts[k])
		for _, f := range r.Findings {
			if f.Kind == k {
				fmt.Fprintf(w, "  %s\n", f)
			}
		}
	}
	switch {
	case r.failed():
		fmt.Fprintf(w, "\nFAIL: %s\n", r.summary())
	case len(r.Findings) > 0:
		fmt.Fprintf(w, "\nok: nothing wrong found; %s\n", r.summary())
	default:
		fmt.Fprintln(w, "\nok: every line and file checked")
	}
}

func (r *checkReport) summary() string {
	var parts []string
	for k, n := range r.Counts {
		parts = append(parts, fmt.Sprintf("%d %s", n, k))
	}
	slices.Sort(parts)
	return strings.Join(parts, ", ")
}

func (r *checkReport) writeJSON(w io.Writer) error {
	if r.Findings == nil {
		r.Findings = []repocheck.Finding{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(struct {
		*checkReport
		Clean bool `json:"clean"`
	}{r, !r.failed()})
}
