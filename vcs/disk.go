package vcs

import (
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/mod/module"

	"github.com/modgate/modgate/internal/files"
)

// A unit is what the sweeper removes at once: one module version of the
// download cache (its .info, .mod, .zip, .ziphash and .lock files), an
// extracted module tree, a Git clone of cache/vcs with its .info and
// .lock files, or a stray file.
type unit struct {
	key    string    // "v:"+escaped module@version, "x:", "c:"+repository URL or hash, "f:"+file
	module string    // the module path whose holds protect it; "" for clones
	clone  bool      // a Git clone: removed only while no child runs
	paths  []string  // files and directories to remove
	size   int64     // bytes
	used   time.Time // last use: Origin.used, else the newest modification time
}

// versionSuffixes are the files of a module version in the download cache.
var versionSuffixes = []string{".info", ".mod", ".zip", ".ziphash", ".lock", ".partial"}

// kickSweeper asks the sweeper to check the cache size.
func (o *Origin) kickSweeper() {
	select {
	case o.kick <- struct{}{}:
	default:
	}
}

// sweepInterval is the least time between two scans of CacheDir, which
// walk all of it.
const sweepInterval = time.Second

// sweeper evicts whenever kicked, at most once per sweepInterval, until
// Close.
func (o *Origin) sweeper() {
	defer o.wg.Done()
	for {
		select {
		case <-o.stop:
			return
		case <-o.kick:
			o.evict(o.maxBytes)
		}
		select {
		case <-o.stop:
			return
		case <-time.After(sweepInterval):
		}
	}
}

// touchVersion records a use of mod@version.
func (o *Origin) touchVersion(mod, version string) {
	em, err1 := module.EscapePath(mod)
	ev, err2 := module.EscapeVersion(version)
	if err1 != nil || err2 != nil {
		return
	}
	o.touch("v:" + em + "@" + ev)
}

// touchClone records a use of the clone of the repository at url.
func (o *Origin) touchClone(url string) {
	if url != "" {
		o.touch("c:" + url)
	}
}

// touch records a use of the unit key.
func (o *Origin) touch(key string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.used[key] = time.Now()
}

// evict removes the least recently used units until CacheDir is no
// larger than max bytes, skipping units of modules with a request in
// progress, and clones while a child runs. It reports how many bytes
// remain.
func (o *Origin) evict(max int64) int64 {
	total, units := o.scan()
	if total <= max {
		return total
	}
	slices.SortStableFunc(units, func(a, b unit) int { return a.used.Compare(b.used) })
	clones := o.running.TryLock()
	if clones {
		defer o.running.Unlock()
	}
	removed := 0
	for _, u := range units {
		if total <= max {
			break
		}
		if (u.clone && !clones) || !o.removeUnit(u) {
			continue
		}
		total -= u.size
		removed++
	}
	if total > max {
		o.log.Warn("vcs: module cache over its bound: the rest is in use", "evicted", removed, "bytes", total, "max", max, "clones", clones)
	} else {
		o.log.Info("vcs: evicted from the module cache", "evicted", removed, "bytes", total, "max", max)
	}
	return total
}

// removeUnit removes u unless its module is held, and reports whether it
// did. It holds Origin.mu, so no request for the module can start while
// its files go.
func (o *Origin) removeUnit(u unit) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if u.module != "" && o.held[u.module] > 0 {
		return false
	}
	for _, p := range u.paths {
		o.removeTree(p)
	}
	delete(o.used, u.key)
	return true
}

// scan returns the size of CacheDir and the units of the module cache.
func (o *Origin) scan() (int64, []unit) {
	var total int64
	filepath.WalkDir(o.root, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				total += fi.Size()
			}
		}
		return nil
	})

	o.mu.Lock()
	used := maps.Clone(o.used)
	o.mu.Unlock()

	var units []unit
	units = append(units, o.scanDownloads(used)...)
	units = append(units, o.scanExtracted()...)
	units = append(units, o.scanClones(used)...)

	// Forget uses of units that are gone.
	seen := make(map[string]bool, len(units))
	for _, u := range units {
		seen[u.key] = true
	}
	o.mu.Lock()
	for k := range o.used {
		if !seen[k] {
			delete(o.used, k)
		}
	}
	o.mu.Unlock()
	return total, units
}

// scanDownloads returns the module versions (and stray files) of the
// download cache, cache/download/$module/@v/$version.*.
func (o *Origin) scanDownloads(used map[string]time.Time) []unit {
	root := filepath.Join(o.modcache, "cache", "download")
	byKey := make(map[string]*unit)
	var keys []string
	filepath.WalkDir(root, func(dir string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() || d.Name() != "@v" {
			return nil
		}
		rel, err := filepath.Rel(root, filepath.Dir(dir))
		if err != nil {
			return fs.SkipDir
		}
		em := filepath.ToSlash(rel)
		mod, err := module.UnescapePath(em)
		if err != nil {
			mod = "" // not a module's: nobody holds it
		}
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			file := filepath.Join(dir, e.Name())
			key := "f:" + file
			for _, suf := range versionSuffixes {
				if ev, ok := strings.CutSuffix(e.Name(), suf); ok && ev != "" {
					key = "v:" + em + "@" + ev
					break
				}
			}
			u := byKey[key]
			if u == nil {
				u = &unit{key: key, module: mod, used: used[key]}
				byKey[key] = u
				keys = append(keys, key)
			}
			u.paths = append(u.paths, file)
			size, mtime := treeSize(file)
			u.size += size
			if _, ok := used[key]; !ok && mtime.After(u.used) {
				u.used = mtime
			}
		}
		return fs.SkipDir
	})
	units := make([]unit, 0, len(keys))
	for _, k := range keys {
		units = append(units, *byKey[k])
	}
	return units
}

// scanExtracted returns the extracted module trees, $module@$version,
// outside cache/; normally there are none, because goDownload removes them.
func (o *Origin) scanExtracted() []unit {
	var units []unit
	filepath.WalkDir(o.modcache, func(dir string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() || dir == o.modcache {
			return nil
		}
		if dir == filepath.Join(o.modcache, "cache") {
			return fs.SkipDir
		}
		if !strings.Contains(d.Name(), "@") {
			return nil
		}
		rel, _ := filepath.Rel(o.modcache, dir)
		em, _, _ := strings.Cut(filepath.ToSlash(rel), "@")
		mod, err := module.UnescapePath(em)
		if err != nil {
			mod = ""
		}
		size, mtime := treeSize(dir)
		units = append(units, unit{key: "x:" + rel, module: mod, paths: []string{dir}, size: size, used: mtime})
		return fs.SkipDir
	})
	return units
}

// scanClones returns the Git clones of cache/vcs: $hash, $hash.info
// (which holds "git3:$url") and $hash.lock.
func (o *Origin) scanClones(used map[string]time.Time) []unit {
	root := filepath.Join(o.modcache, "cache", "vcs")
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil
	}
	var units []unit
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		dir := filepath.Join(root, e.Name())
		u := unit{key: "c:" + e.Name(), clone: true, paths: []string{dir, dir + ".info", dir + ".lock"}}
		if data, err := files.ReadMax(dir+".info", 4096); err == nil {
			if _, url, ok := strings.Cut(strings.TrimSpace(string(data)), ":"); ok {
				u.key = "c:" + url
			}
		}
		var mtime time.Time
		for _, p := range u.paths {
			size, m := treeSize(p)
			u.size += size
			if m.After(mtime) {
				mtime = m
			}
		}
		if t, ok := used[u.key]; ok {
			u.used = t
		} else {
			u.used = mtime
		}
		units = append(units, u)
	}
	return units
}

// treeSize returns the total size of the regular files at or below p,
// and the newest modification time among them and their directories.
func treeSize(p string) (int64, time.Time) {
	var size int64
	var mtime time.Time
	filepath.WalkDir(p, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		if fi.Mode().IsRegular() {
			size += fi.Size()
		}
		if fi.ModTime().After(mtime) {
			mtime = fi.ModTime()
		}
		return nil
	})
	return size, mtime
}

// removeTree removes p and everything below it, making read-only
// directories writable if it must (the go command's module cache is
// read-only unless built with -modcacherw).
func (o *Origin) removeTree(p string) {
	if err := os.RemoveAll(p); err == nil {
		return
	}
	filepath.WalkDir(p, func(q string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			os.Chmod(q, 0o700)
		}
		return nil
	})
	if err := os.RemoveAll(p); err != nil {
		o.log.Warn("vcs: cannot remove from the module cache", "path", o.relative(p), "err", o.relative(err.Error()))
	}
}
