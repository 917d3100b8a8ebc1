package integration

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"golang.org/x/mod/module"
	"golang.org/x/tools/txtar"

	"github.com/modgate/modgate/audit"
	"github.com/modgate/modgate/integration/testproxy"
)

// module returns the fixture module path@version.
func fixture(t *testing.T, path, version string) *testproxy.Module {
	t.Helper()
	for _, m := range testproxy.Fixtures(t) {
		if m.Path == path && m.Version == version {
			return m
		}
	}
	t.Fatalf("no fixture %s@%s", path, version)
	return nil
}

// rebuilt returns a well-formed module path@version whose one Go file says
// something else: a valid zip with another hash.
func rebuilt(t *testing.T, path, version string) *testproxy.Module {
	t.Helper()
	ar := &txtar.Archive{
		Comment: []byte("module " + path + "\nversion " + version + "\n"),
		Files: []txtar.File{
			{Name: "go.mod", Data: []byte("module " + path + "\n\ngo 1.21\n")},
			{Name: "evil.go", Data: []byte("package a\n\nfunc init() { panic(\"pwned\") }\n")},
		},
	}
	mods, err := testproxy.Load(fstest.MapFS{"m.txtar": {Data: txtar.Format(ar)}})
	if err != nil {
		t.Fatal(err)
	}
	return mods[0]
}

// entryFile is where the disk tier would keep key's entry.
func entryFile(cacheDir, key string) string {
	sum := sha256.Sum256([]byte(key))
	h := hex.EncodeToString(sum[:])
	return filepath.Join(cacheDir, "entries", h[:2], h)
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, readAll(t, resp.Body)
}

func TestTamperedArtifactsAreRefused(t *testing.T) {
	a100 := fixture(t, "example.com/a", "v1.0.0")
	a110 := fixture(t, "example.com/a", "v1.1.0")
	flipped := slices.Clone(a100.Zip)
	flipped[len(flipped)/2] ^= 0x01

	tests := []struct {
		name     string
		path     string // request path served tampered
		body     []byte
		download string // module@version the go command fails to download
		want     string // in the 502 body
	}{
		{"zip with one byte changed", "/example.com/a/@v/v1.0.0.zip", flipped, "example.com/a@v1.0.0", "example.com/a@v1.0.0"},
		{"zip with other contents", "/example.com/a/@v/v1.0.0.zip", rebuilt(t, "example.com/a", "v1.0.0").Zip, "example.com/a@v1.0.0", "zip hash"},
		{"go.mod with an extra require", "/example.com/a/@v/v1.0.0.mod", append(slices.Clone(a100.Mod), "\nrequire example.com/evil v1.0.0\n"...), "example.com/a@v1.0.0", "go.mod hash"},
		{"zip of another version", "/example.com/a/@v/v1.0.0.zip", a110.Zip, "example.com/a@v1.0.0", "example.com/a@v1.0.0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			public, private := upstreams(t)
			public.Replace(tt.path, tt.body)
			cacheDir := t.TempDir()
			g := startModgate(t, gatewayConfig(public, private), "--cache-dir", cacheDir)

			for i := range 2 {
				code, body := get(t, g.URL+tt.path)
				if code != http.StatusBadGateway || !strings.Contains(body, tt.want) || strings.Count(body, "\n") > 8 {
					t.Errorf("GET %s #%d = %d %q, want 502 naming %q", tt.path, i, code, body, tt.want)
				}
			}
			// Nothing was cached: each request went upstream again.
			if n := public.Count(tt.path); n != 2 {
				t.Errorf("upstream saw %d requests for %s, want 2 (nothing cached)", n, tt.path)
			}
			if _, err := os.Stat(entryFile(cacheDir, tt.path)); !os.IsNotExist(err) {
				t.Errorf("cache entry for %s: %v, want none", tt.path, err)
			}

			// The go command, with its own checks off, cannot be fed it.
			env := testproxy.GoEnv(t, g.URL, "") // GOSUMDB=off
			out, stderr, err := testproxy.RunGo(t, t.TempDir(), env, "mod", "download", "-json", tt.download)
			if err == nil {
				t.Fatalf("go mod download %s with GOSUMDB=off succeeded through modgate:\n%s", tt.download, out)
			}
			if !strings.Contains(out+stderr, "502 Bad Gateway") {
				t.Errorf("go mod download failed, but not with the 502:\n%s%s", out, stderr)
			}

			evs := g.waitEvents(t, 3)
			i := slices.IndexFunc(evs, func(e audit.Event) bool { return e.Modgate.Verification == "mismatch" })
			if i < 0 || evs[i].Modgate.Rule != "verify-mismatch" || evs[i].HTTP.Response.StatusCode != 502 {
				t.Errorf("no audit event with verification=mismatch, rule verify-mismatch and status 502: %+v", evs)
			}
		})
	}
}

func TestForkedChecksumDatabase(t *testing.T) {
	pub, priv := fixtures(t)
	key := testproxy.NewKey(t)
	cacheDir := t.TempDir()

	// modgate sees the honest database's tree and keeps its head.
	honest := testproxy.StartWith(t, pub, testproxy.Options{Key: key})
	private := testproxy.Start(t, priv)
	g1 := startModgate(t, gatewayConfig(honest, private), "--cache-dir", cacheDir)
	if out, err := download(t, g1.URL, "", "example.com/a@v1.0.0"); err != nil {
		t.Fatalf("download from the honest database: %v\n%s", err, out)
	}
	stopModgate(t, g1)

	// Restarted, it meets a database signed by the same key whose tree
	// forked: it says something else about example.com/a@v1.0.0.
	a := fixture(t, "example.com/a", "v1.0.0")
	forged := fmt.Sprintf("example.com/a v1.0.0 h1:%s\nexample.com/a v1.0.0/go.mod h1:%s\n",
		strings.Repeat("A", 43)+"=", strings.Repeat("B", 43)+"=")
	forked := testproxy.StartWith(t, pub, testproxy.Options{Key: key, Sums: map[module.Version]string{{Path: a.Path, Version: a.Version}: forged}})
	g2 := startModgate(t, gatewayConfig(forked, private), "--cache-dir", cacheDir)

	code, body := get(t, g2.URL+"/example.com/b/@v/v1.0.0.mod")
	if code != http.StatusBadGateway || !strings.Contains(body, "security error") || !strings.Contains(body, "example.com/b@v1.0.0") {
		t.Errorf("GET through a forked database = %d %q, want 502 naming the security error", code, body)
	}
	// Fail closed from then on, for other modules too.
	code, body = get(t, g2.URL+"/example.com/c/v2/@v/v2.0.0.mod")
	if code != http.StatusBadGateway || !strings.Contains(body, "misbehaved") {
		t.Errorf("GET after the security error = %d %q, want 502", code, body)
	}
	if out, err := download(t, g2.URL, "", "example.com/b@v1.0.0"); err == nil {
		t.Errorf("go mod download (GOSUMDB=off) through a forked database succeeded:\n%s", out)
	}
	if _, err := os.Stat(entryFile(cacheDir, "/example.com/b/@v/v1.0.0.mod")); !os.IsNotExist(err) {
		t.Errorf("cache entry after the security error: %v, want none", err)
	}

	evs := g2.waitEvents(t, 3)
	if !slices.ContainsFunc(evs, func(e audit.Event) bool { return e.Event.Action == "sumdb-security-error" }) {
		t.Errorf("no sumdb-security-error audit event: %+v", evs)
	}
	// The very request that met the fork, and those after it.
	for _, p := range []string{"/example.com/b/@v/v1.0.0.mod", "/example.com/c/v2/@v/v2.0.0.mod"} {
		if !slices.ContainsFunc(evs, func(e audit.Event) bool {
			return e.URL != nil && e.URL.Path == p && e.Modgate.Rule == "sumdb-security" && e.HTTP.Response.StatusCode == 502
		}) {
			t.Errorf("GET %s not audited with rule sumdb-security and status 502: %+v", p, evs)
		}
	}
	if !strings.Contains(g2.logText(), "SECURITY ERROR") {
		t.Errorf("no SECURITY ERROR in the log")
	}
}

func TestVerifiedArtifactsServedWithoutTheDatabase(t *testing.T) {
	public, private := upstreams(t)
	g := startModgate(t, gatewayConfig(public, private))
	if out, err := download(t, g.URL, "", warmModules...); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	lookups := func() int {
		n := 0
		for _, r := range public.Requests() {
			if strings.Contains(r, "/sumdb/") {
				n++
			}
		}
		return n
	}
	before := lookups()
	if before == 0 {
		t.Fatal("modgate verified the modules without asking the checksum database")
	}
	if out, err := download(t, g.URL, "", warmModules...); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if after := lookups(); after != before {
		t.Errorf("serving cached, verified modules asked the checksum database %d more times", after-before)
	}
	evs := g.waitEvents(t, 1)
	for _, e := range evs {
		if e.Modgate.Cache == "miss" && (e.Modgate.Kind == "zip" || e.Modgate.Kind == "mod") && e.Modgate.Verification != "verified" {
			t.Errorf("fetched %s %s@%s audited with verification %q, want verified", e.Modgate.Kind, e.Modgate.Module, e.Modgate.Version, e.Modgate.Verification)
		}
	}
}

func TestPrivateLedger(t *testing.T) {
	public, private := upstreams(t)
	cacheDir := t.TempDir()
	cfg := gatewayConfig(public, private)
	g := startModgate(t, cfg, "--cache-dir", cacheDir)
	const zip = "/corp.example/private/@v/v1.0.0.zip"
	const mod = "/corp.example/private/@v/v1.0.0.mod"
	for _, p := range []string{mod, zip} {
		if code, body := get(t, g.URL+p); code != 200 {
			t.Fatalf("first GET %s = %d %q", p, code, body)
		}
	}
	out, err := exec.Command(modgateBin, "ledger", "list", "--cache-dir", cacheDir).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "corp.example/private v1.0.0 h1:") || !strings.Contains(string(out), "corp.example/private v1.0.0/go.mod h1:") {
		t.Fatalf("modgate ledger list: %v\n%s", err, out)
	}

	// The private upstream now serves other bytes for the same version.
	private.Replace(zip, rebuilt(t, "corp.example/private", "v1.0.0").Zip)
	admin := strings.TrimPrefix(g.Admin, "http://")
	if out, err := exec.Command(modgateBin, "cache", "purge", "--admin", admin, "--admin-token-file", g.AdminTokenFile, "corp.example/private@v1.0.0").CombinedOutput(); err != nil {
		t.Fatalf("purge: %v\n%s", err, out)
	}
	code, body := get(t, g.URL+zip)
	if code != http.StatusBadGateway || !strings.Contains(body, "private ledger") {
		t.Errorf("GET of changed private bytes = %d %q, want 502 naming the private ledger", code, body)
	}

	// After a restart the ledger still refuses them.
	stopModgate(t, g)
	g2 := startModgate(t, cfg, "--cache-dir", cacheDir)
	if code, body := get(t, g2.URL+zip); code != http.StatusBadGateway || !strings.Contains(body, "private ledger") {
		t.Errorf("after restart: GET of changed private bytes = %d %q, want 502", code, body)
	}
	if code, _ := get(t, g2.URL+mod); code != 200 {
		t.Errorf("after restart: GET of the unchanged go.mod = %d, want 200", code)
	}
	env := append(testproxy.GoEnv(t, g2.URL, ""), "GOPRIVATE=", "GONOSUMDB=corp.example")
	if out, stderr, err := testproxy.RunGo(t, t.TempDir(), env, "mod", "download", "corp.example/private@v1.0.0"); err == nil {
		t.Errorf("go mod download of changed private bytes succeeded:\n%s%s", out, stderr)
	}
	for _, r := range public.Requests() {
		if strings.Contains(r, "corp.example") {
			t.Errorf("public upstream or database saw the private path: %s", r)
		}
	}
	out, err = exec.Command(modgateBin, "ledger", "verify", "--cache-dir", cacheDir).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "2 hashes, chain intact") {
		t.Errorf("modgate ledger verify: %v\n%s", err, out)
	}

	// An edited ledger is caught, and refused at start.
	stopModgate(t, g2)
	ledgerFile := filepath.Join(cacheDir, "ledger")
	data, err := os.ReadFile(ledgerFile)
	if err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(string(data), "h1:", "h1:X", 1)
	if err := os.WriteFile(ledgerFile, []byte(edited), 0o640); err != nil {
		t.Fatal(err)
	}
	out, err = exec.Command(modgateBin, "ledger", "verify", "--cache-dir", cacheDir).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "line 1") {
		t.Errorf("modgate ledger verify of an edited ledger: %v\n%s; want a failure at line 1", err, out)
	}
	cmd := exec.Command(modgateBin, "serve", "--listen", "127.0.0.1:0", "--admin", "off", "--cache-dir", cacheDir, "--config", writeConfigFile(t, cfg))
	done := make(chan error, 1)
	var outb strings.Builder
	cmd.Stdout, cmd.Stderr = &outb, &outb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(outb.String(), "ledger") {
			t.Errorf("modgate serve with an edited ledger: %v\n%s; want a refusal naming the ledger", err, outb.String())
		}
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Errorf("modgate serve started with an edited ledger")
	}
}

// TestSumDBURL checks where the verifier fetches the checksum database
// from: by default /sumdb/NAME on the public upstream; with sumdb_url, only
// there (an egress proxy, say), and never from the upstream, so an egress
// policy that lets the sidecar reach nothing but that URL still verifies.
func TestSumDBURL(t *testing.T) {
	var pub []*testproxy.Module
	for _, m := range testproxy.Fixtures(t) {
		if !strings.HasPrefix(m.Path, "corp.example/") {
			pub = append(pub, m)
		}
	}
	sumdbRequests := func(s *testproxy.Server) []string {
		var rs []string
		for _, r := range s.Requests() {
			if strings.HasPrefix(r, "/sumdb/") {
				rs = append(rs, r)
			}
		}
		return rs
	}
	const lookup = "/sumdb/" + testproxy.DefaultSumDB + "/lookup/example.com/a@v1.0.0"
	tests := []struct {
		name      string
		sumdbURL  bool // point sumdb_url at the separate database
		wantProxy bool // the upstream answers the verifier's fetches
	}{
		{"default: the public upstream", false, true},
		{"sumdb_url", true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := testproxy.NewKey(t)
			public := testproxy.StartWith(t, pub, testproxy.Options{Key: key})
			db := testproxy.StartWith(t, pub, testproxy.Options{Key: key}) // the same database, elsewhere
			cfg := gatewayConfig(public, nil)
			if tt.sumdbURL {
				cfg += "sumdb_url: " + db.URL + "/sumdb/" + testproxy.DefaultSumDB + "\n"
			}
			g := startModgate(t, cfg)
			for _, p := range []string{"/example.com/a/@v/v1.0.0.mod", "/example.com/a/@v/v1.0.0.zip"} {
				if code, body := get(t, g.URL+p); code != http.StatusOK {
					t.Fatalf("GET %s = %d %q, want 200 (verified)", p, code, body)
				}
			}
			fromProxy, fromDB := sumdbRequests(public), sumdbRequests(db)
			if tt.wantProxy {
				if !slices.Contains(fromProxy, lookup) || len(fromDB) != 0 {
					t.Errorf("checksum database requests: upstream %q, sumdb_url server %q; want the lookup from the upstream only", fromProxy, fromDB)
				}
				return
			}
			if len(fromProxy) != 0 || !slices.Contains(fromDB, lookup) {
				t.Errorf("checksum database requests: upstream %q, sumdb_url server %q; want the lookup from sumdb_url only", fromProxy, fromDB)
			}
			evs := g.waitEvents(t, 2)
			for _, e := range evs {
				if e.URL != nil && strings.HasPrefix(e.URL.Path, "/example.com/a/@v/v1.0.0.") && e.Modgate.Verification != "verified" {
					t.Errorf("GET %s audited with verification %q, want verified", e.URL.Path, e.Modgate.Verification)
				}
			}
		})
	}
}
