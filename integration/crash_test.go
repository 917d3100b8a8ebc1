package integration

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/modgate/modgate/goproxy"
	"github.com/modgate/modgate/integration/testproxy"
)

// TestKillAfterServing kills modgate with SIGKILL right after it has
// served a burst of cold artifacts, while the entries that make them
// survive a restart are still being written behind the answers (the
// cache makes an artifact durable after it serves it). A modgate
// restarted on the same cache directory serves every artifact with the
// upstream's exact bytes: from its cache if the entry was persisted,
// fetched and verified again if not; never a partial or mismatched body.
func TestKillAfterServing(t *testing.T) {
	if testing.Short() {
		t.Skip("starts modgate twice")
	}
	var mods []*testproxy.Module
	for _, m := range testproxy.Fixtures(t) {
		if !strings.HasPrefix(m.Path, "corp.example/") {
			mods = append(mods, m)
		}
	}
	for i := range 4 {
		mods = append(mods, bigModule(t, fmt.Sprintf("example.com/crash%d", i), 256<<10*(i+1)))
	}
	up := testproxy.Start(t, mods)
	config := fmt.Sprintf("upstreams:\n  - name: public\n    url: %s\nsumdb: [%s]\nsumdb_key: %s\n", up.URL, up.SumDB, up.VerifierKey)
	cacheDir := t.TempDir()

	type artifact struct {
		path string
		want []byte
	}
	var arts []artifact
	for _, m := range mods {
		arts = append(arts, artifact{m.Target(goproxy.KindInfo), m.Info}, artifact{m.Target(goproxy.KindMod), m.Mod}, artifact{m.Target(goproxy.KindZip), m.Zip})
	}

	a := startModgate(t, config, "--cache-dir", cacheDir)
	var wg sync.WaitGroup
	for _, art := range arts {
		wg.Go(func() {
			status, body := getBody(t, a.URL+art.path)
			if status != 200 || !bytes.Equal(body, art.want) {
				t.Errorf("before the crash, %s: %d, %d bytes; want 200 with the upstream's %d", art.path, status, len(body), len(art.want))
			}
		})
	}
	wg.Wait()
	a.kill(t) // at once: entries may still be being persisted
	fetched := len(up.Requests())

	b := startModgate(t, config, "--cache-dir", cacheDir)
	hits := 0
	for _, art := range arts {
		resp, err := http.Get(b.URL + art.path)
		if err != nil {
			t.Fatal(err)
		}
		body := []byte(readAll(t, resp.Body))
		if resp.StatusCode != 200 || !bytes.Equal(body, art.want) {
			t.Errorf("after the crash, %s: %d, %d bytes; want 200 with the upstream's %d", art.path, resp.StatusCode, len(body), len(art.want))
		}
		if resp.Header.Get("X-Modgate-Cache") == "hit" {
			hits++
		}
	}
	if tmp, _ := os.ReadDir(filepath.Join(cacheDir, "tmp")); len(tmp) != 0 {
		t.Errorf("tmp holds %d files after the restart, want none", len(tmp))
	}
	t.Logf("%d of %d artifacts survived the SIGKILL in the cache; the others were fetched again (%d upstream requests before the crash, %d after)",
		hits, len(arts), fetched, len(up.Requests())-fetched)
}
