package integration

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCacheVerify flips a byte of a cached zip on disk: modgate cache
// verify finds it, quarantines it (audited, counted), and the next request
// fetches and verifies the zip anew instead of serving the rotten bytes.
func TestCacheVerify(t *testing.T) {
	public, private := upstreams(t)
	cacheDir := t.TempDir()
	g := startModgate(t, gatewayConfig(public, private), "--cache-dir", cacheDir)
	const zip = "/example.com/a/@v/v1.0.0.zip"
	status, want := get(t, g.URL+zip)
	if status != 200 {
		t.Fatalf("warming: %d", status)
	}
	get(t, g.URL+"/example.com/a/@v/v1.0.0.mod")

	// Bit rot in the zip's blob, named by its entry, which is written
	// moments after the zip is served.
	var data []byte
	waitFor(t, 5*time.Second, func() bool {
		var err error
		data, err = os.ReadFile(entryFile(cacheDir, zip))
		return err == nil
	}, "the zip's entry file")
	var entry struct{ SHA256 string }
	if err := json.Unmarshal(data, &entry); err != nil {
		t.Fatal(err)
	}
	if _, err := hex.DecodeString(entry.SHA256); err != nil || len(entry.SHA256) != 64 {
		t.Fatalf("entry %s", data)
	}
	blob := filepath.Join(cacheDir, "blobs", entry.SHA256[:2], entry.SHA256)
	rotten, err := os.ReadFile(blob)
	if err != nil {
		t.Fatal(err)
	}
	rotten[len(rotten)/2] ^= 1
	if err := os.WriteFile(blob, rotten, 0o640); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(modgateBin, "cache", "verify", "--admin", strings.TrimPrefix(g.Admin, "http://"), "--admin-token-file", g.AdminTokenFile)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), "quarantined "+zip) || !strings.Contains(string(out), "verified 2 ") {
		t.Fatalf("modgate cache verify = %v:\n%s", err, out)
	}

	resp, err := http.Get(g.URL + zip)
	if err != nil {
		t.Fatal(err)
	}
	body := readAll(t, resp.Body)
	if resp.StatusCode != 200 || resp.Header.Get("X-Modgate-Cache") != "miss" || !bytes.Equal([]byte(body), []byte(want)) {
		t.Errorf("after the quarantine: %d, cache %q, %d bytes; want a miss serving the verified zip again", resp.StatusCode, resp.Header.Get("X-Modgate-Cache"), len(body))
	}
	if n := public.Count(zip); n != 2 {
		t.Errorf("the upstream was asked %d times for the zip, want 2", n)
	}
	found := false
	for _, ev := range g.waitEvents(t, 4) {
		if ev.Event.Action == "cache-quarantine" && ev.Modgate.Module == "example.com/a" {
			found = true
		}
	}
	if !found {
		t.Errorf("no cache-quarantine audit event")
	}
	_, metrics := get(t, g.Admin+"/metrics")
	if !strings.Contains(metrics, "modgate_cache_quarantined_total 1") {
		t.Errorf("/metrics lacks modgate_cache_quarantined_total 1")
	}
	// Clean now: exit 0.
	cmd = exec.Command(modgateBin, "cache", "verify", "--admin", strings.TrimPrefix(g.Admin, "http://"), "--admin-token-file", g.AdminTokenFile)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "0 quarantined") {
		t.Errorf("second modgate cache verify = %v:\n%s", err, out)
	}
	t.Run("offline", func(t *testing.T) {
		// A go.mod rewritten with its entry to match: only the checksum
		// database's record, held in the cache directory, tells.
		const mod = "/example.com/a/@v/v1.0.0.mod"
		stopModgate(t, g)
		evil := []byte("module example.com/a\n\ngo 1.21\n\nrequire example.com/evil v1.0.0\n")
		sum := sha256.Sum256(evil)
		hexSum := hex.EncodeToString(sum[:])
		if err := os.MkdirAll(filepath.Join(cacheDir, "blobs", hexSum[:2]), 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(cacheDir, "blobs", hexSum[:2], hexSum), evil, 0o640); err != nil {
			t.Fatal(err)
		}
		var e map[string]any
		data, err := os.ReadFile(entryFile(cacheDir, mod))
		if err != nil {
			t.Fatal(err)
		}
		json.Unmarshal(data, &e)
		e["sha256"], e["size"] = hexSum, len(evil)
		data, _ = json.Marshal(e)
		if err := os.WriteFile(entryFile(cacheDir, mod), data, 0o640); err != nil {
			t.Fatal(err)
		}
		cfg := filepath.Join(t.TempDir(), "modgate.yaml")
		os.WriteFile(cfg, []byte(gatewayConfig(public, private)), 0o644)
		cmd := exec.Command(modgateBin, "cache", "verify", "--offline", "--config", cfg, "--cache-dir", cacheDir)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "GOENV=off"}
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), "quarantined "+mod) || !strings.Contains(string(out), "checksum database") {
			t.Errorf("modgate cache verify --offline = %v:\n%s", err, out)
		}
	})
}
