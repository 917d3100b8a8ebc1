package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/modgate/modgate/integration/testproxy"
)

// indexServer is a Go module index on 127.0.0.1: GET /index?since=&limit=
// answers the entries at or after since, as JSON lines, in time order.
func indexServer(t *testing.T, entries ...indexEntry) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		since, _ := time.Parse(time.RFC3339, r.URL.Query().Get("since"))
		limit, err := strconv.Atoi(r.URL.Query().Get("limit"))
		if err != nil || limit <= 0 {
			limit = 2000
		}
		enc := json.NewEncoder(w)
		for _, e := range entries {
			if limit == 0 {
				break
			}
			if !e.Timestamp.Before(since) {
				enc.Encode(e)
				limit--
			}
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/index"
}

type indexEntry struct {
	Path, Version string
	Timestamp     time.Time
}

// TestCooldown: a version's age comes from the checksum database's log,
// not from its .info. On a fresh install the module index gives modgate an
// old anchor; a version whose record is below it is served, one recorded
// after it is refused (whatever its .info's Time claims, 2024 here), and
// filtered out of the list and @latest; with no index to learn from, every
// checked version is refused (fail closed).
func TestCooldown(t *testing.T) {
	public, private := upstreams(t)
	// The database records a@v1.0.0 first (record 0); everything else
	// that modgate looks up later gets a later record.
	lookup := func(mv string) {
		t.Helper()
		resp, err := http.Get(public.URL + "/sumdb/" + public.SumDB + "/lookup/" + mv)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	lookup("example.com/a@v1.0.0")
	now := time.Now()
	index := indexServer(t,
		indexEntry{"example.com/a", "v1.0.0", now.Add(-100 * time.Hour)},
		indexEntry{"example.com/a", "v1.1.0", now.Add(-time.Hour)},
	)
	cooldown := func(url string) string {
		return fmt.Sprintf("policy:\n  cooldown:\n    min_age: 72h\n    index_url: %s\n", url)
	}
	get := func(g *gatewayProc, path string) (int, string) {
		t.Helper()
		resp, err := http.Get(g.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	g := startModgate(t, gatewayConfig(public, private)+cooldown(index))
	if code, body := get(g, "/example.com/a/@v/v1.0.0.zip"); code != 200 {
		t.Errorf("a version below the index's old anchor = %d %q, want 200", code, body)
	}
	code, body := get(g, "/example.com/a/@v/v1.1.0.zip")
	if code != http.StatusForbidden || !strings.Contains(body, "available after") {
		t.Errorf("a version recorded now (its .info says 2024) = %d %q, want 403 saying when it is available", code, body)
	}
	if code, body := get(g, "/example.com/a/@v/list"); code != 200 || strings.Contains(body, "v1.1.0") || !strings.Contains(body, "v1.0.0") {
		t.Errorf("list = %d %q, want v1.0.0 and not v1.1.0", code, body)
	}
	if code, body := get(g, "/example.com/a/@latest"); code != 200 || !strings.Contains(body, `"v1.0.0"`) {
		t.Errorf("@latest = %d %q, want v1.0.0", code, body)
	}
	env := testproxy.GoEnv(t, g.URL, public.VerifierKey)
	if out, stderr, err := testproxy.RunGo(t, t.TempDir(), env, "list", "-m", "example.com/a@latest"); err != nil || strings.TrimSpace(out) != "example.com/a v1.0.0" {
		t.Errorf("go list -m example.com/a@latest = %q, %v\n%s; want v1.0.0", out, err, stderr)
	}
	if _, stderr, err := testproxy.RunGo(t, t.TempDir(), env, "mod", "download", "example.com/a@v1.1.0"); err == nil || !strings.Contains(stderr, "available after") {
		t.Errorf("go mod download of a too-new version: %v\n%s\nwant the cooldown's refusal", err, stderr)
	}
	evs := g.waitEvents(t, 5)
	found := false
	for _, e := range evs {
		found = found || (e.Modgate.Rule == "cooldown" && e.Modgate.Decision == "deny")
	}
	if !found {
		t.Errorf("no audit event of a cooldown denial")
	}

	// modgate policy check agrees, from a copy of the gateway's anchors.
	cfgFile := filepath.Join(t.TempDir(), "modgate.yaml")
	if err := os.WriteFile(cfgFile, []byte(gatewayConfig(public, private)+cooldown(index)+"cache_dir: "+filepath.Join(filepath.Dir(g.audit), "cache")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for mv, want := range map[string]int{"example.com/a@v1.0.0": 0, "example.com/a@v1.1.0": 1} {
		cmd := exec.Command(modgateBin, "policy", "check", mv, "--config", cfgFile)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "GOENV=off"}
		out, _ := cmd.CombinedOutput()
		if got := cmd.ProcessState.ExitCode(); got != want {
			t.Errorf("modgate policy check %s = exit %d (%s), want %d as the gateway decided", mv, got, out, want)
		}
	}

	// A fresh install that cannot reach the index proves nothing: it
	// refuses (fail closed), and says so.
	closed := indexServer(t)
	closedURL := strings.Replace(closed, "/index", "/nowhere", 1)
	g2 := startModgate(t, gatewayConfig(public, private)+cooldown(closedURL))
	if code, body := get(g2, "/example.com/b/@v/v1.0.0.zip"); code != http.StatusForbidden || !strings.Contains(body, "cannot be proven") {
		t.Errorf("with no index on a fresh install = %d %q, want 403: its age cannot be proven", code, body)
	}
}
