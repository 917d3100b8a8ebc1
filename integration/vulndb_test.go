package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/modgate/modgate/audit"
	"github.com/modgate/modgate/integration/testproxy"
)

// writeVulnDB writes a Go vulnerability database (the OSV v1 layout) into
// dir: GO-2026-0101 affects example.com/a before v1.1.0.
func writeVulnDB(t *testing.T, dir string, modified time.Time) {
	t.Helper()
	mod := modified.UTC().Format(time.RFC3339)
	files := map[string]any{
		"index/db.json": map[string]string{"modified": mod},
		"index/modules.json": []any{map[string]any{
			"path":  "example.com/a",
			"vulns": []any{map[string]string{"id": "GO-2026-0101", "modified": mod, "fixed": "1.1.0"}},
		}},
		"ID/GO-2026-0101.json": map[string]any{
			"schema_version": "1.3.1",
			"id":             "GO-2026-0101",
			"modified":       mod,
			"published":      mod,
			"summary":        "Remote code execution in example.com/a",
			"details":        "A test vulnerability.",
			"affected": []any{map[string]any{
				"package": map[string]string{"name": "example.com/a", "ecosystem": "Go"},
				"ranges": []any{map[string]any{"type": "SEMVER", "events": []any{
					map[string]string{"introduced": "0"}, map[string]string{"fixed": "1.1.0"},
				}}},
			}},
		},
	}
	for name, v := range files {
		data, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(file, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// addVuln adds an entry for module before fixed to the database in dir,
// as published now.
func addVuln(t *testing.T, dir, id, module, fixed string) {
	t.Helper()
	mod := time.Now().UTC().Format(time.RFC3339)
	var mods []map[string]any
	if err := json.Unmarshal([]byte(readFile(t, filepath.Join(dir, "index/modules.json"))), &mods); err != nil {
		t.Fatal(err)
	}
	mods = append(mods, map[string]any{"path": module, "vulns": []any{map[string]string{"id": id, "modified": mod, "fixed": fixed}}})
	entry := map[string]any{
		"schema_version": "1.3.1", "id": id, "modified": mod, "published": mod,
		"summary": "A new vulnerability in " + module,
		"affected": []any{map[string]any{
			"package": map[string]string{"name": module, "ecosystem": "Go"},
			"ranges":  []any{map[string]any{"type": "SEMVER", "events": []any{map[string]string{"introduced": "0"}, map[string]string{"fixed": fixed}}}},
		}},
	}
	for name, v := range map[string]any{"index/modules.json": mods, "ID/" + id + ".json": entry} {
		data, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestVulnerabilities: with a local vulnerability database (file://), the
// real go command cannot fetch an affected version (the ID and the fix in
// its output), go get @latest lands on the fixed version, a build whose
// graph only mentions the affected version succeeds, warn mode serves
// with a Warning header, and every touched response names the ID in its
// audit event; the mirror serves the database.
func TestVulnerabilities(t *testing.T) {
	public, private := upstreams(t)
	db := t.TempDir()
	writeVulnDB(t, db, time.Now().Add(-time.Hour))
	config := func(action string) string {
		return gatewayConfig(public, private) + fmt.Sprintf("vulndb:\n  url: file://%s\n  mirror: true\npolicy:\n  vulnerabilities:\n    action: %s\n", db, action)
	}
	g := startModgate(t, config("deny"))
	env := testproxy.GoEnv(t, g.URL, public.VerifierKey)
	run := func(dir string, args ...string) (string, string, error) {
		t.Helper()
		return testproxy.RunGo(t, dir, append(env, "GOMODCACHE="+t.TempDir()), args...)
	}

	t.Run("affected version refused", func(t *testing.T) {
		_, stderr, err := run(t.TempDir(), "mod", "download", "example.com/a@v1.0.0")
		if err == nil || !strings.Contains(stderr, "GO-2026-0101") || !strings.Contains(stderr, "v1.1.0") {
			t.Errorf("go mod download of an affected version: %v\n%s\nwant the ID and the fixed version", err, stderr)
		}
	})
	t.Run("go get latest lands on the fix", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module example.net/client\n\ngo 1.21\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, stderr, err := run(dir, "get", "example.com/a@latest"); err != nil {
			t.Fatalf("go get example.com/a@latest: %v\n%s\n%s", err, out, stderr)
		}
		if gomod := readFile(t, filepath.Join(dir, "go.mod")); !strings.Contains(gomod, "example.com/a v1.1.0") {
			t.Errorf("go.mod after go get @latest:\n%s", gomod)
		}
	})
	t.Run("a graph that only mentions the affected version", func(t *testing.T) {
		dir := t.TempDir()
		gomod := "module example.net/client\n\ngo 1.21\n\nrequire (\n\texample.com/a v1.0.0\n\texample.com/b v1.0.0\n)\n"
		if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte(gomod), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, stderr, err := run(dir, "list", "-mod=mod", "-m", "all"); err != nil || !strings.Contains(out, "example.com/a v1.1.0") {
			t.Errorf("go list -m all = %q, %v\n%s; want a v1.1.0 selected", out, err, stderr)
		}
	})
	t.Run("mirror", func(t *testing.T) {
		resp, err := http.Get(g.URL + "/vulndb/ID/GO-2026-0101.json")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), "Remote code execution") {
			t.Errorf("GET /vulndb/ID/GO-2026-0101.json = %d %q", resp.StatusCode, body)
		}
	})
	t.Run("audit", func(t *testing.T) {
		evs := g.events(t)
		if !slices.ContainsFunc(evs, func(e audit.Event) bool {
			return e.Vulnerability != nil && slices.Contains(e.Vulnerability.ID, "GO-2026-0101") && e.Modgate.Decision == "deny"
		}) {
			t.Errorf("no audit event of the refusal naming GO-2026-0101")
		}
	})

	t.Run("a new entry blocks what was served a minute ago, and the inventory says who fetched it", func(t *testing.T) {
		if out, stderr, err := run(t.TempDir(), "mod", "download", "example.com/b@v1.0.0"); err != nil {
			t.Fatalf("go mod download example.com/b@v1.0.0 before the entry: %v\n%s\n%s", err, out, stderr)
		}
		// GO-2026-0102 is published for example.com/b; SIGHUP refreshes.
		writeVulnDB(t, db, time.Now())
		addVuln(t, db, "GO-2026-0102", "example.com/b", "1.0.1")
		if err := g.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(g.logText(), "config reloaded") && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if _, stderr, err := run(t.TempDir(), "mod", "download", "example.com/b@v1.0.0"); err == nil || !strings.Contains(stderr, "GO-2026-0102") {
			t.Errorf("go mod download example.com/b@v1.0.0 after the entry: %v\n%s\nwant GO-2026-0102", err, stderr)
		}
		resp, err := http.Get(g.Admin + "/inventory/who?module=example.com/b&version=v1.0.0")
		if err != nil {
			t.Fatal(err)
		}
		var fetches []struct{ Identity string }
		err = json.NewDecoder(resp.Body).Decode(&fetches)
		resp.Body.Close()
		if err != nil || len(fetches) == 0 || fetches[0].Identity != "127.0.0.1" {
			t.Errorf("inventory who example.com/b@v1.0.0 = %+v, %v; want the client that fetched it (127.0.0.1)", fetches, err)
		}
		// The CLI answers from the store on disk (flushed every second).
		invDir := filepath.Join(filepath.Dir(g.audit), "cache", "inventory")
		for _, args := range [][]string{{"GO-2026-0102"}, {"--all"}} {
			var out []byte
			deadline := time.Now().Add(5 * time.Second)
			for {
				cmd := exec.Command(modgateBin, append([]string{"inventory", "affected"}, append(args, "--vulndb", "file://"+db, "--dir", invDir)...)...)
				out, err = cmd.CombinedOutput()
				if (err == nil && strings.Contains(string(out), "example.com/b")) || time.Now().After(deadline) {
					break
				}
				time.Sleep(200 * time.Millisecond)
			}
			if err != nil || !strings.Contains(string(out), "example.com/b") || !strings.Contains(string(out), "127.0.0.1") {
				t.Errorf("modgate inventory affected %s = %v\n%s\nwant example.com/b v1.0.0 fetched by 127.0.0.1", args[0], err, out)
			}
		}
	})

	warn := startModgate(t, config("warn"))
	resp, err := http.Get(warn.URL + "/example.com/a/@v/v1.0.0.zip")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Warning"), "GO-2026-0101") {
		t.Errorf("warn mode = %d, Warning %q; want 200 with a Warning naming GO-2026-0101", resp.StatusCode, resp.Header.Get("Warning"))
	}
}
