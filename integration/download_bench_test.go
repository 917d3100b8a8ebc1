package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modgate/modgate/integration/testproxy"
)

// BenchmarkColdDownload measures what a fresh CI job waits for: the real
// go command running `go mod download` of every module version of the
// peers' corpus (63 versions of 21 modules, zips of 100 KB to 1.1 MB; the
// 63 path@version given as arguments, outside any module), with an empty
// module cache each time, from three servers:
//
//   - static: nginx serving the same GOPROXY tree from disk, the floor;
//     the go command checks the checksum database of the testproxy
//     directly (GOSUMDB with its URL: a static server has no /sumdb/);
//   - modgate-cold: a fresh modgate with an empty cache, whose only
//     upstream is one testproxy on 127.0.0.1, verifying every .mod and
//     .zip against that testproxy's checksum database before it serves
//     them; the go command reaches the database through modgate, as the
//     other integration tests do (GOSUMDB is the verifier key alone);
//   - modgate-warm: the same modgate again, everything now in its cache.
//
// modgate runs as deployed (log at info) and is started, and stopped,
// outside the timed download. Each round runs static and modgate-cold in
// turn (their order alternating from round to round, so drift in the
// machine's load hits both alike), then modgate-warm; BENCH_ROUNDS rounds
// (3), medians kept. It reports static-s, modgate-cold-s, modgate-warm-s
// and ratio-cold-vs-static (the goal is at most 1.1), and logs every
// round with the CPU time modgate used and the requests it sent the
// upstream. It needs nginx (and wrk, as loadTools does; make bench-deps
// installs both) and skips without them; it runs once whatever b.N is
// (run it with -benchtime=1x).
func BenchmarkColdDownload(b *testing.B) {
	nginxBin, _, _, rounds := loadTools(b)

	mods := peerModules(b)
	up := testproxy.Start(b, mods)
	docroot := b.TempDir()
	writePeerTree(b, docroot, mods)
	static := startNginx(b, nginxBin, docroot)
	config := fmt.Sprintf("upstreams:\n  - name: public\n    url: %s\nsumdb: [%s]\nsumdb_key: %s\n", up.URL, up.SumDB, up.VerifierKey)
	args := []string{"mod", "download"}
	for _, m := range mods {
		args = append(args, m.Path+"@"+m.Version)
	}

	// download runs the go command with an empty module cache against
	// proxy and the checksum database sumdb (a GOSUMDB value), and returns
	// how long it took.
	download := func(what, proxy, sumdb string) time.Duration {
		b.Helper()
		modcache := b.TempDir()
		defer os.RemoveAll(modcache)
		env := append(testproxy.GoEnv(b, proxy, sumdb), "GOMODCACHE="+modcache)
		start := time.Now()
		out, stderr, err := testproxy.RunGo(b, b.TempDir(), env, args...)
		took := time.Since(start)
		if err != nil {
			b.Fatalf("%s: %v\n%s%s", what, err, out, stderr)
		}
		zips, _ := filepath.Glob(filepath.Join(modcache, "cache", "download", "example.com", "*", "@v", "*.zip"))
		if len(zips) != len(mods) {
			b.Fatalf("%s: %d zips in the module cache, want %d", what, len(zips), len(mods))
		}
		return took
	}
	directSumDB := up.VerifierKey + " " + up.URL + "/sumdb/" + up.SumDB

	var statics, colds, warms []time.Duration
	var log strings.Builder
	for r := range rounds {
		var coldUp, warmUp []string
		var coldCPU, warmCPU time.Duration
		measure := []func(){
			func() { statics = append(statics, download("static", static, directSumDB)) },
			func() {
				g := startModgate(b, config, "--log-level", "info")
				pid := g.cmd.Process.Pid
				before, cpu0 := len(up.Requests()), procCPU(b, pid)
				colds = append(colds, download("modgate cold", g.URL, up.VerifierKey))
				mid, cpu1 := len(up.Requests()), procCPU(b, pid)
				warms = append(warms, download("modgate warm", g.URL, up.VerifierKey))
				reqs := up.Requests()
				coldUp, warmUp = reqs[before:mid], reqs[mid:]
				coldCPU, warmCPU = cpu1-cpu0, procCPU(b, pid)-cpu1
				g.stop(b)
			},
		}
		if r%2 == 1 {
			slices.Reverse(measure)
		}
		for _, m := range measure {
			m()
		}
		fmt.Fprintf(&log, "round %d: static %.2fs; modgate cold %.2fs (modgate CPU %.2fs; upstream: %s); warm %.2fs (modgate CPU %.2fs; upstream: %s)\n",
			r+1, statics[r].Seconds(), colds[r].Seconds(), coldCPU.Seconds(), upstreamCounts(coldUp),
			warms[r].Seconds(), warmCPU.Seconds(), upstreamCounts(warmUp))
	}
	med := func(ds []time.Duration) float64 {
		ds = slices.Clone(ds)
		slices.Sort(ds)
		return ds[len(ds)/2].Seconds()
	}
	s, c, w := med(statics), med(colds), med(warms)
	b.ReportMetric(s, "static-s")
	b.ReportMetric(c, "modgate-cold-s")
	b.ReportMetric(w, "modgate-warm-s")
	b.ReportMetric(c/s, "ratio-cold-vs-static")
	fmt.Fprintf(&log, "medians of %d rounds: static %.2fs, modgate cold %.2fs (%.2f× static), warm %.2fs (%.2f× static)\n", rounds, s, c, c/s, w, w/s)
	b.Log(log.String())
	if !testing.Verbose() {
		// Go keeps only the first 10 lines of a benchmark's log without -v.
		fmt.Print("BenchmarkColdDownload: " + log.String())
	}
}

// upstreamCounts summarises request paths sent to a testproxy: how many,
// and how many of them went to the checksum database.
func upstreamCounts(reqs []string) string {
	sumdb := 0
	for _, r := range reqs {
		if strings.HasPrefix(r, "/sumdb/") {
			sumdb++
		}
	}
	return fmt.Sprintf("%d requests, %d to the checksum database", len(reqs), sumdb)
}
