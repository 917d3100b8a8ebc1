package vcs

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestEvict fills the cache and checks that eviction removes the least
// recently used module versions first, spares held modules, and removes
// clones only while no child runs.
func TestEvict(t *testing.T) {
	f := newFixture(t, Config{})
	o := f.o
	d := f.git.Domain
	fetchZip := func(mod, v string) {
		t.Helper()
		if resp := get(t, "GET", f.url, "/"+mod+"/@v/"+v+".zip"); resp.status != 200 {
			t.Fatalf("GET %s@%s.zip = %d %q", mod, v, resp.status, resp.body)
		}
		time.Sleep(10 * time.Millisecond) // distinct times of use
	}
	fetchZip(d+"/lib", "v1.0.0")
	fetchZip(d+"/old", "v1.0.0")
	fetchZip(d+"/lib", "v1.1.0")

	zipOf := func(mod, v string) string { return o.downloadFile(mod, v, ".zip") }
	for _, z := range []string{zipOf(d+"/lib", "v1.0.0"), zipOf(d+"/old", "v1.0.0"), zipOf(d+"/lib", "v1.1.0")} {
		if !exists(z) {
			t.Fatalf("%s missing after download", z)
		}
	}
	if dirs, _ := filepath.Glob(filepath.Join(o.modcache, d, "*@*")); len(dirs) != 0 {
		t.Errorf("extracted trees left behind: %v", dirs)
	}

	_, units := o.scan()
	var clones int
	for _, u := range units {
		if u.clone {
			clones++
		}
	}
	if clones != 2 {
		t.Fatalf("%d clones in the cache, want 2", clones)
	}

	// While a child runs, clones stay; a held module stays.
	o.running.RLock()
	o.hold(d + "/old")
	o.evict(1)
	o.release(d + "/old")
	o.running.RUnlock()
	_, units = o.scan()
	clones = 0
	for _, u := range units {
		if u.clone {
			clones++
		}
	}
	if clones != 2 || !exists(zipOf(d+"/old", "v1.0.0")) || exists(zipOf(d+"/lib", "v1.0.0")) {
		t.Errorf("evict with a child running and old held: %d clones (want 2), old zip kept %v (want true), lib zip kept %v (want false)",
			clones, exists(zipOf(d+"/old", "v1.0.0")), exists(zipOf(d+"/lib", "v1.0.0")))
	}

	// Least recently used first: what goes is a prefix of the units in
	// order of last use.
	fetchZip(d+"/lib", "v1.0.0")
	fetchZip(d+"/lib", "v1.1.0")
	total, units := o.scan()
	slices.SortStableFunc(units, func(a, b unit) int { return a.used.Compare(b.used) })
	if left := o.evict(total / 2); left > total/2 {
		t.Errorf("evict to %d bytes left %d", total/2, left)
	}
	_, after := o.scan()
	kept := make(map[string]bool)
	for _, u := range after {
		kept[u.key] = true
	}
	var order []string
	for i, u := range units {
		order = append(order, fmt.Sprintf("%s kept=%v", u.key, kept[u.key]))
		if i > 0 && kept[units[i-1].key] && !kept[u.key] {
			t.Errorf("evicted %s but kept %s, used earlier", u.key, units[i-1].key)
		}
	}
	if kept[units[0].key] || !kept[units[len(units)-1].key] {
		t.Errorf("evicting half: want the oldest unit gone and the newest kept:\n%s", strings.Join(order, "\n"))
	}

	// Everything goes when nothing is in use, and comes back on demand.
	if left := o.evict(1); left > 64<<10 {
		t.Errorf("evict to 1 byte left %d bytes", left)
	}
	if entries, _ := os.ReadDir(filepath.Join(o.modcache, "cache", "vcs")); len(entries) != 0 {
		t.Errorf("clones left after evicting everything: %d entries", len(entries))
	}
	fetchZip(d+"/lib", "v1.0.0")
}

// TestEvictInBackground checks that the sweeper keeps CacheDir under
// MaxCacheBytes on its own.
func TestEvictInBackground(t *testing.T) {
	const max = 32 << 10
	f := newFixture(t, Config{MaxCacheBytes: max})
	d := f.git.Domain
	for _, v := range []string{"v1.0.0", "v1.1.0", "v1.2.0"} {
		if resp := get(t, "GET", f.url, "/"+d+"/lib/@v/"+v+".zip"); resp.status != 200 {
			t.Fatalf("GET %s.zip = %d %q", v, resp.status, resp.body)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		total, _ := f.o.scan()
		if total <= max {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("CacheDir holds %d bytes after 10s, want at most %d", total, max)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestMovedTag moves a tag, as a force push would: the origin keeps
// serving what it fetched first, as the go command's module cache does,
// until the version is evicted; then it serves the new commit, which
// modgate's ledger in front of it refuses.
func TestMovedTag(t *testing.T) {
	f := newFixture(t, Config{})
	lib := f.git.Domain + "/lib"
	before := get(t, "GET", f.url, "/"+lib+"/@v/v1.0.0.zip")
	beforeInfo := get(t, "GET", f.url, "/"+lib+"/@v/v1.0.0.info")
	f.std.Lib.MoveTag(t, "v1.0.0", f.std.Main)

	after := get(t, "GET", f.url, "/"+lib+"/@v/v1.0.0.zip")
	afterInfo := get(t, "GET", f.url, "/"+lib+"/@v/v1.0.0.info")
	if after.body != before.body || afterInfo.body != beforeInfo.body {
		t.Errorf("after moving the tag, the cached v1.0.0 changed")
	}

	f.o.evict(1)
	moved := get(t, "GET", f.url, "/"+lib+"/@v/v1.0.0.zip")
	if moved.status != 200 || moved.body == before.body {
		t.Errorf("after eviction, v1.0.0.zip = %d, same bytes %v; want 200 with the moved tag's content", moved.status, moved.body == before.body)
	}
}
