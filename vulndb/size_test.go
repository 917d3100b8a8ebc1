//go:build unix

package vulndb

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// writeSynthetic writes a database of n entries, each a realistic size,
// over n/2 modules, to a new directory.
func writeSynthetic(tb testing.TB, n int) string {
	tb.Helper()
	dir := tb.TempDir()
	for _, d := range []string{"index", "ID"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			tb.Fatal(err)
		}
	}
	mods := make(map[string][]map[string]string)
	for i := range n {
		id := fmt.Sprintf("GO-%d-%04d", 2020+i/1000, i%1000+1000)
		path := fmt.Sprintf("github.com/owner%d/module%d", i%97, i/2)
		m := dbModified.Add(-time.Duration(n-i) * time.Minute)
		o := map[string]any{
			"schema_version": "1.3.1", "id": id, "modified": m.Format(time.RFC3339), "published": m.Format(time.RFC3339),
			"aliases": []string{fmt.Sprintf("CVE-2024-%05d", i), fmt.Sprintf("GHSA-xxxx-yyyy-%04d", i)},
			"summary": fmt.Sprintf("Improper input validation in %s leads to denial of service", path),
			"details": fmt.Sprintf("A crafted request to %s can make the server use unbounded memory. %0300d", path, i),
			"affected": []any{map[string]any{
				"package": map[string]string{"name": path, "ecosystem": "Go"},
				"ranges": []any{map[string]any{"type": "SEMVER", "events": []map[string]string{
					{"introduced": "0"}, {"fixed": "1.2.3"}, {"introduced": "2.0.0"}, {"fixed": "2.4.1"}}}},
				"ecosystem_specific": map[string]any{"imports": []any{map[string]any{"path": path + "/server", "symbols": []string{"Serve", "Handler.ServeHTTP", "parse"}}}},
			}},
			"references":        []any{map[string]string{"type": "FIX", "url": "https://" + path + "/commit/0123456789abcdef"}, map[string]string{"type": "REPORT", "url": "https://" + path + "/issues/1"}},
			"database_specific": map[string]string{"url": "https://example.com/vuln/" + id, "review_status": "REVIEWED"},
		}
		writeJSON(tb, filepath.Join(dir, "ID", id+".json"), o)
		mods[path] = append(mods[path], map[string]string{"id": id, "modified": m.Format(time.RFC3339), "fixed": "2.4.1"})
	}
	var ix []any
	for p, v := range mods {
		ix = append(ix, map[string]any{"path": p, "vulns": v})
	}
	writeJSON(tb, filepath.Join(dir, "index", "modules.json"), ix)
	setModified(tb, dir, dbModified)
	return dir
}

// diskUsage returns the bytes of the files under dir, and of the blocks
// they take.
func diskUsage(tb testing.TB, dir string) (size, blocks int64) {
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			blocks += st.Blocks * 512
		}
		if !d.IsDir() {
			size += fi.Size()
		}
		return nil
	})
	return size, blocks
}

func heapInUse() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// BenchmarkLoad5000 measures the cost of holding 5,000 entries: heap
// after Load, and disk under Dir. Run with -benchtime=1x.
func BenchmarkLoad5000(b *testing.B) {
	const n = 5000
	src := writeSynthetic(b, n)
	srcSize, _ := diskUsage(b, src)
	for b.Loop() {
		before := heapInUse()
		state := b.TempDir()
		s, err := Open(b.Context(), Options{Config: Config{URL: fileURL(b, src)}, Dir: state, Logger: discard})
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		if err := s.Refresh(b.Context()); err != nil {
			b.Fatal(err)
		}
		load := time.Since(start)
		heap := heapInUse() - before
		size, blocks := diskUsage(b, state)
		b.ReportMetric(float64(heap), "heap-bytes")
		b.ReportMetric(float64(size), "disk-bytes")
		b.ReportMetric(float64(blocks), "disk-block-bytes")
		b.ReportMetric(float64(srcSize), "json-bytes")
		b.ReportMetric(load.Seconds(), "refresh-s")
		runtime.KeepAlive(s)
	}
}

func BenchmarkVulns(b *testing.B) {
	db, err := Load(b.Context(), Source{URL: fileURL(b, writeSynthetic(b, 5000))})
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		db.Vulns("github.com/owner60/module1000", "v2.1.0")
	}
}
