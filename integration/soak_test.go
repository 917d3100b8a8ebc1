package integration

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/fstest"
	"time"

	"golang.org/x/tools/txtar"

	"github.com/modgate/modgate/goproxy"
	"github.com/modgate/modgate/integration/testproxy"
)

// TestSoak holds a mixed load on the real modgate binary for $SOAK (a Go
// duration, at least 2m; make soak sets 10m) and checks that nothing
// grows, leaks or goes missing. Without $SOAK it skips: it is never part
// of make test. It needs wrk (make soak installs it).
//
// modgate runs as deployed (log at info) with a public and a private
// testproxy upstream on 127.0.0.1, client tokens (soak-corp, in group
// corp), policy rules (corp.example for group corp only; example.com/a
// before v1.1.0 denied), and its audit log in a file rotated by size:
// max_bytes is sized so that the run rotates it a few times, keep so that
// no rotated file is deleted (the test checks that the chain starts at
// seq 1, and counts any deleted lines as lost). Four things grow to a
// bound by design, and the soak makes the bounds small so that they are
// reached within the warm-up and the flatness checks see only what is
// left: the hot tier, an arena whose pages become resident as its ring
// advances (cache.hot_bytes 16 MiB, not up to 256 MiB); the console's
// index of audit events (console.audit_events 100,000, not 1,000,000:
// about 60 bytes each); the disk tier's index, about 300 bytes an entry
// (cache.disk_bytes 24 MiB, which the cold versions fill in about a
// minute and a half, not 10 GiB); and the inventory, about 400 bytes a
// module version (inventory.max_keys 1,000, not 2,000,000). At the
// defaults none of them fills in a run of this length, and RSS climbs
// with them: a 2m run at the defaults grew 26 MiB in its last minute,
// at 60 bytes per event audited; a 30m run grew 47 MiB after its
// warm-up, 12 MB of it the disk tier's index of 39,259 new entries and
// 4.6 MB the inventory.
//
// First a 10 s wrk run of warm hits at 256 connections measures capacity
// (req/s). Then, for $SOAK, all at once and continuously:
//
//   - wrk, in consecutive 10 s runs, cycling through warm hits (.info,
//     .mod, .zip of 60 generated module versions and two fixtures) and
//     their @v/list, each connection waiting 10 ms between requests; the
//     connection count is tuned during the warm-up to land near 70% of
//     capacity (offering at most 1.5× that), then held;
//   - go mod download of 4 cold versions at a time, each run with an
//     empty GOMODCACHE, from a generated set of 8 versions per second of
//     SOAK (none repeats unless the go command downloads faster), and go
//     list -m -versions of those modules, one go command after another;
//   - private-module fetches with soak-corp's token, 20 a second;
//   - requests a deny rule refuses (403), 10 a second;
//   - hostile requests, each of 9 every second over raw TCP: traversal,
//     percent-encoding, a query, a 1.1 KiB and a 40 KiB target, bad
//     escapes.
//
// Every interval (one wrk run, 10 s) it records, halfway through,
// modgate's RSS (VmRSS) and Go heap in use, goroutines (go_goroutines),
// open fds (/proc/PID/fd), the disk tier's entries, and the disk use of
// the cache and the audit files (allocated blocks); and at its end the requests modgate counted (modgate_requests_total), the
// audit events it wrote, dropped or failed (modgate_audit_events_total),
// the responses the clients counted (wrk's and the test's own; the go
// commands count none), 5xx on both sides, modgate's req/s over the
// interval, and wrk's p50/p99 of the interval. The series goes to
// $MODGATE_SOAK_OUT/soak.csv (a temporary directory if unset), drawn by
// integration/soakplot into soak.png beside it, and a summary is logged.
//
// It passes if, at the end:
//
//   - RSS and goroutines are flat after the warm-up: over the samples
//     after it (the warm-up is the first 20% of the run, at least 2
//     minutes, at most half the run), the least-squares line's growth
//     across that window is at most max(10% of the window's mean, 3× the
//     residual standard deviation of the fit). The residual SD is the
//     sample-to-sample noise around the line: growth smaller than it
//     cannot be told from noise, and a leak (a ramp) does not inflate it.
//   - open fds are flat by the stricter max(2.5% of the mean, 2× the
//     residual SD).
//   - no audit event is lost: the request events in the audit files
//     (event.action "request", all files, rotated ones included) equal
//     modgate_requests_total summed over its labels, scraped once the
//     load has stopped and the audit queue is empty; no event was dropped
//     or failed (modgate_audit_events_total, and chain.dropped on every
//     line). Each of modgate's requests has exactly one of both. Then
//     from the client side, the events are split by who sent them (wrk's
//     paths; soak-corp's user; the denied paths; the hostile targets;
//     the rest is the go commands', which count no requests of their own)
//     and each must match the client's count: exactly for the test's own
//     clients, and for wrk at least its completed requests and at most
//     that plus its connections per run (requests in flight when a run
//     ended, which modgate saw but wrk did not count). Hostile requests
//     that Go's HTTP server refuses before modgate's handler (a bad
//     escape, a 40 KiB target: no X-Request-Id) are not modgate's
//     requests and have no event; they are reported apart.
//   - there is no 5xx, in modgate's counters, in the audit events or as
//     seen by any client (no fault is injected), and no client saw an
//     error or a status it did not expect;
//   - the audit chain verifies over every file (modgate audit verify).
func TestSoak(t *testing.T) {
	soak := os.Getenv("SOAK")
	if soak == "" {
		t.Skip("set SOAK=10m (make soak)")
	}
	dur, err := time.ParseDuration(soak)
	if err != nil || dur < 2*time.Minute {
		t.Fatalf("SOAK=%q: want a Go duration of at least 2m", soak)
	}
	wrkBin, err := exec.LookPath("wrk")
	if err != nil {
		t.Fatal("TestSoak needs wrk: make soak installs it (make bench-deps)")
	}
	outDir := os.Getenv("MODGATE_SOAK_OUT")
	if outDir == "" {
		outDir = t.TempDir()
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		t.Fatal(err)
	}
	warmup := soakWarmup(dur)

	rig := startSoakRig(t, dur)
	g := rig.g
	load := &soakLoad{rig: rig, client: &http.Client{Timeout: time.Minute}}
	scripts := t.TempDir()

	// Warm the cache with wrk's paths, and measure capacity.
	for _, p := range rig.wrkPaths {
		load.get(t.Context(), p, "", http.StatusOK, &load.warm)
	}
	if n := load.warm.problems(); n > 0 {
		t.Fatalf("warming the cache: %d problems: %s", n, load.warm.first())
	}
	full := writeSoakScript(t, filepath.Join(scripts, "full.lua"), rig.wrkPaths, 0)
	warmRun, err := runSoakWrk(t, wrkBin, g.URL, full, 256, 2*time.Second, nil) // warm-up
	if err != nil {
		t.Fatal(err)
	}
	load.addWrk(warmRun)
	capRun, err := runSoakWrk(t, wrkBin, g.URL, full, 256, 10*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	load.addWrk(capRun)
	capacity := capRun.rate()
	target := 0.7 * capacity
	t.Logf("capacity: %.0f req/s of warm hits at 256 connections (p50 %v, p99 %v); soak target %.0f req/s for %v, warm-up %v",
		capacity, capRun.quantile(50), capRun.quantile(99), target, dur, warmup)

	csvFile := filepath.Join(outDir, "soak.csv")
	csv, err := newSoakCSV(csvFile)
	if err != nil {
		t.Fatal(err)
	}
	defer csv.close()

	paced := writeSoakScript(t, filepath.Join(scripts, "paced.lua"), rig.wrkPaths, soakDelay)
	// Each connection offers at most 1000/soakDelay requests a second;
	// never offer more than 1.5× the target, so that a machine that cannot
	// keep up shows a lower rate rather than latency of wrk's own queueing.
	conns := max(2, int(math.Ceil(target*float64(soakDelay)/1000*1.1)))
	maxConns := max(2, int(math.Ceil(target*float64(soakDelay)/1000*1.5)))
	probe := soakProbe{pid: g.cmd.Process.Pid, admin: g.Admin, cacheDir: filepath.Join(filepath.Dir(g.audit), "cache"), audit: g.audit}
	before, err := probe.counters()
	if err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	ctx, cancel := context.WithDeadline(t.Context(), start.Add(dur))
	defer cancel()
	var wg sync.WaitGroup
	for _, loop := range []func(context.Context, *testing.T){load.goDownloads, load.goLists, load.privateFetches, load.denied, load.hostile} {
		wg.Go(func() { loop(ctx, t) })
	}

	var (
		samples []soakSample
		chunks  []soakChunk
		last    = before // counters at the end of the previous interval
		lastAt  time.Duration
		// Heap profiles at the warm-up's end and the load's, for the
		// summary to tell what grew.
		heapStart, heapEnd string
	)
	for {
		left := time.Until(start.Add(dur))
		if left < time.Second {
			break
		}
		d := min(soakInterval, left.Truncate(time.Second))
		var (
			s        soakSample
			probeErr error
		)
		chunk, err := runSoakWrk(t, wrkBin, g.URL, paced, conns, d, func() {
			s, probeErr = probe.take(time.Since(start))
		})
		if err = cmp.Or(err, probeErr); err != nil {
			t.Errorf("interval at %v: %v", time.Since(start).Round(time.Second), err)
			break
		}
		// The counters at the interval's end, the clients' and modgate's
		// together.
		load.addWrk(chunk)
		end, err := probe.counters()
		if err != nil {
			t.Errorf("interval at %v: %v", time.Since(start).Round(time.Second), err)
			break
		}
		endAt := time.Since(start)
		s.soakFinal = end
		s.clientRequests = load.clientRequests()
		s.client5xx = load.client5xx()
		s.goRuns = load.goRuns.Load()
		s.rate = float64(end.requests-last.requests) / (endAt - lastAt).Seconds()
		last, lastAt = end, endAt
		s.conns = conns
		s.wrkRate = chunk.rate()
		s.p50, s.p99 = chunk.quantile(50), chunk.quantile(99)
		chunks = append(chunks, chunk)
		samples = append(samples, s)
		if heapStart == "" && s.at >= warmup {
			heapStart = saveHeap(t, g, "heap-start.pprof")
		}
		if err := csv.write(s); err != nil {
			t.Fatal(err)
		}
		// Tune the connections toward the target during the warm-up but
		// for its last 20 s; hold them after, so that the window measured
		// sees one steady load. A step at most halves or doubles them.
		if endAt < warmup-2*soakInterval && s.wrkRate > 0 {
			f := min(2, max(0.5, target/s.wrkRate))
			conns = min(maxConns, max(2, int(math.Round(float64(conns)*f))))
		}
	}
	cancel()
	wg.Wait()
	elapsed := time.Since(start)
	heapEnd = saveHeap(t, g, "heap-end.pprof")

	// The load has stopped: let the audit queue empty, take modgate's
	// final counts, stop it, and read every audit file.
	final, err := probe.drained(t)
	if err != nil {
		t.Fatal(err)
	}
	stopModgate(t, g)
	files, err := readSoakAudit(g.audit, rig.classify)
	if err != nil {
		t.Fatal(err)
	}
	chainOK := chainVerifies(t, g)

	// The figures.
	steady := slices.DeleteFunc(slices.Clone(samples), func(s soakSample) bool { return s.at < warmup })
	rss := fitSoakTrend(steady, func(s soakSample) float64 { return float64(s.rss) })
	gor := fitSoakTrend(steady, func(s soakSample) float64 { return s.goroutines })
	fds := fitSoakTrend(steady, func(s soakSample) float64 { return float64(s.fds) })
	var rssMin, rssMax int64 = math.MaxInt64, 0
	var p99Max time.Duration
	var rateSum float64
	for _, s := range samples {
		rssMin, rssMax = min(rssMin, s.rss), max(rssMax, s.rss)
		p99Max = max(p99Max, s.p99)
	}
	for _, s := range steady {
		rateSum += s.rate
	}
	var lastSample soakSample
	if len(samples) > 0 {
		lastSample = samples[len(samples)-1]
	}
	serverRequests := final.requests
	// Lines deleted by rotation count as lost: they are not in the files.
	lost := serverRequests - files.requests
	summary := fmt.Sprintf(`soak: %v (%d intervals, warm-up %v), capacity %.0f req/s, target %.0f req/s
  requests: %d counted by modgate (%.0f req/s after warm-up, wrk %d connections), %d audit request events; lost %d; dropped %d, failed %d
  by client: wrk %d completed / %d audited (+%d in flight at a run's end, at most %d); go commands: %d runs, %d failed, %d requests audited (%d cold versions downloaded);
             private with token %d / %d audited; denied %d / %d audited; hostile %d handled by modgate / %d audited, %d refused by Go's HTTP server before it
  RSS %.1f–%.1f MiB; after warm-up: RSS %s; goroutines %s; fds %s
  latency (wrk): p99 max of intervals %v, overall p99 %v, overall p50 %v
  5xx: modgate %d, in the audit %d, seen by clients %d; client problems %d
  audit: %d files (%d rotated, %d lines deleted by rotation), %.1f MiB; cache %.1f MiB (%d disk entries); chain verifies: %v
  open fds after warm-up, kinds that changed from the first sample to the last: %s
  series: %s
  Go heap, live at the warm-up's end to the load's end (go tool pprof -top -base):
%s`,
		elapsed.Round(time.Second), len(samples), warmup, capacity, target,
		serverRequests, rateSum/float64(max(1, len(steady))), conns, files.requests, lost, final.dropped, final.failed,
		load.wrkCompleted+load.warm.responses.Load(), files.byClass[classWrk], files.byClass[classWrk]-load.wrkCompleted-load.warm.responses.Load(), load.wrkConnRuns,
		load.goRuns.Load(), load.goFails.Load(), files.byClass[classGo], load.coldFetched.Load(),
		load.private.responses.Load(), files.byClass[classPrivate], load.deny.responses.Load(), files.byClass[classDenied],
		load.hostileHandled.Load(), files.byClass[classHostile], load.hostileRefused.Load(),
		mib(rssMin), mib(rssMax), rss.describe(1<<20, " MiB"), gor.describe(1, ""), fds.describe(1, ""),
		p99Max, pooledSoakQuantile(chunks, 99), pooledSoakQuantile(chunks, 50),
		final.fiveXX, files.fiveXX, load.client5xx(), load.problemCount(),
		files.files, files.files-1, files.deleted, mib(lastSample.auditBytes), mib(lastSample.cacheBytes), lastSample.cacheEntries, chainOK,
		fdChange(steady), csvFile, heapDiff(heapStart, heapEnd))
	t.Log(summary)
	if err := csv.close(); err != nil {
		t.Error(err)
	}
	plotSoak(t, csvFile, filepath.Join(outDir, "soak.png"), warmup, fmt.Sprintf("modgate soak, %v: %d requests, %.0f req/s", elapsed.Round(time.Second), serverRequests, rateSum/float64(max(1, len(steady)))))

	// The criteria.
	if len(steady) < 5 {
		t.Errorf("%d samples after the warm-up, want at least 5 to fit a trend", len(steady))
	}
	if tol, ok := rss.flat(0.10, 3); !ok {
		// What the disk tier gained meanwhile: cold fills add entries, and
		// their index, for the whole run.
		var entries int64
		if len(steady) > 0 {
			entries = lastSample.cacheEntries - steady[0].cacheEntries
		}
		t.Errorf("RSS grows after the warm-up: %s, tolerance %.1f MiB; meanwhile the disk tier gained %d entries (%.1f KiB of RSS growth per entry); see the heap difference above",
			rss.describe(1<<20, " MiB"), tol/(1<<20), entries, rss.growth/1024/float64(max(1, entries)))
	}
	if tol, ok := gor.flat(0.10, 3); !ok {
		t.Errorf("goroutines grow after the warm-up: %s, tolerance %.1f", gor.describe(1, ""), tol)
	}
	if tol, ok := fds.flat(0.025, 2); !ok {
		t.Errorf("open fds grow after the warm-up: %s, tolerance %.1f", fds.describe(1, ""), tol)
	}
	if lost != 0 || final.dropped != 0 || final.failed != 0 || files.dropped != 0 {
		t.Errorf("audit events lost: modgate counted %d requests, the files hold %d request events (%d lines deleted by rotation); %d dropped, %d failed (chain.dropped total %d)",
			serverRequests, files.requests, files.deleted, final.dropped, final.failed, files.dropped)
	}
	if final.written > files.lines {
		t.Errorf("modgate wrote %d audit events, the files hold %d lines", final.written, files.lines)
	}
	if files.deleted != 0 {
		t.Errorf("rotation deleted %d audit lines: keep too small for the run", files.deleted)
	}
	// wrk's paths were also fetched once each to warm the cache.
	wrkAudited, wrkSent := files.byClass[classWrk], load.wrkCompleted+load.warm.responses.Load()
	if wrkAudited < wrkSent || wrkAudited > wrkSent+load.wrkConnRuns {
		t.Errorf("wrk completed %d requests to its paths (and the warm-up %d), the audit holds %d events of them: want between %d and %d",
			load.wrkCompleted, load.warm.responses.Load(), wrkAudited, wrkSent, wrkSent+load.wrkConnRuns)
	}
	for _, c := range []struct {
		name    string
		sent    int64
		audited int64
	}{
		{"private fetches with the token", load.private.responses.Load(), files.byClass[classPrivate]},
		{"denied requests", load.deny.responses.Load(), files.byClass[classDenied]},
		{"hostile requests modgate handled", load.hostileHandled.Load(), files.byClass[classHostile]},
	} {
		if c.sent != c.audited {
			t.Errorf("%s: the client got %d responses, the audit holds %d events", c.name, c.sent, c.audited)
		}
	}
	if files.byClass[classGo] == 0 || load.goRuns.Load() == 0 {
		t.Errorf("go commands: %d runs, %d requests audited; want some of both", load.goRuns.Load(), files.byClass[classGo])
	}
	if final.fiveXX != 0 || files.fiveXX != 0 || load.client5xx() != 0 {
		t.Errorf("5xx with no fault injected: modgate counted %d, the audit holds %d (%s), clients saw %d", final.fiveXX, files.fiveXX, files.first5xx, load.client5xx())
	}
	if n := load.problemCount(); n > 0 {
		t.Errorf("%d client problems (errors, unexpected statuses, failed go commands); first: %s", n, load.firstProblems())
	}
	if !chainOK {
		t.Errorf("the audit chain does not verify over the %d files", files.files)
	}
}

const (
	soakInterval = 10 * time.Second // one wrk run, one sample
	soakDelay    = 10               // ms each wrk connection waits between requests
)

// soakWarmup is the part of a run of d that the flatness checks skip: 20%
// of it, at least 2 minutes, at most half.
func soakWarmup(d time.Duration) time.Duration {
	return min(d/2, max(d/5, 2*time.Minute))
}

// A soakRig is modgate and its upstreams, with the paths each kind of
// client asks for.
type soakRig struct {
	g      *gatewayProc
	public *testproxy.Server
	token  string // soak-corp's, in group corp
	// wrkPaths are warm hits and lists; cold are the versions the go
	// commands download, each once while they last; private are fetched
	// with the token (200); denied are refused by a rule (403).
	wrkPaths, private, denied []string
	cold                      []*testproxy.Module
	// wrkSet and deniedSet are the same paths as sets, hostileSet the
	// hostile targets modgate handles.
	wrkSet, deniedSet, hostileSet map[string]bool
}

// soakHostile are the hostile request targets, sent raw every second.
// The last two Go's HTTP server refuses itself, before modgate's handler.
var soakHostile = []string{
	"/x/../y",
	"/example.com/a/@v/../../../etc/passwd",
	"/Example.com/%3Cscript%3E/@v/list",
	"/example.com/a/@v/v1.0.0.zip%00",
	"*",
	"/example.com/a/@v/list?x=%",
	"/" + strings.Repeat("a", 1100) + "/@v/list",   // over modgate's 1 KiB
	"/example.com/%zz/@v/list",                     // a bad escape
	"/" + strings.Repeat("b", 40<<10) + "/@v/list", // over the 32 KiB of headers
}

// startSoakRig generates the module sets, starts the upstreams and
// modgate, and lists the paths of each client.
func startSoakRig(t *testing.T, dur time.Duration) *soakRig {
	t.Helper()
	pub, priv := fixtures(t)
	warm := soakModules(t, "example.com/soak/w", 20, 3)
	// Enough cold versions for two go mod downloads of 4 every second.
	coldModules := max(100, int(dur.Seconds()*8/10)+1)
	cold := soakModules(t, "example.com/soak/c", coldModules, 10)
	// Interleave the modules, so that a batch of 4 is 4 modules.
	slices.SortStableFunc(cold, func(a, b *testproxy.Module) int { return strings.Compare(a.Version, b.Version) })
	public := testproxy.Start(t, slices.Concat(pub, warm, cold))
	private := testproxy.Start(t, priv)

	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	token := newToken(t, tokens, "soak-corp", "corp")
	// Size the audit file so that a run at 5,000 req/s, of about 500
	// bytes an event, rotates it 4 times; keep holds a run 20 times
	// faster.
	maxBytes := max(16<<20, int64(dur.Seconds()*5000*500/4))
	config := gatewayConfig(public, private) + fmt.Sprintf(`
auth:
  tokens: %s
policy:
  rules:
    - name: corp-members
      match: corp.example
      groups: [corp]
      action: allow
    - name: corp-others
      match: corp.example
      action: deny
      reason: private modules need a corp token
    - name: old-a
      match: example.com/a
      versions: "<v1.1.0"
      action: deny
      reason: use v1.1.0 or later
audit_log:
  max_bytes: %d
  keep: 100
cache:
  hot_bytes: 16MiB
  disk_bytes: 24MiB
console:
  audit_events: 100000
inventory:
  max_keys: 1000
`, tokens, maxBytes)
	g := startModgate(t, config, "--log-level", "info")

	r := &soakRig{g: g, public: public, token: token, cold: cold,
		wrkSet: map[string]bool{}, deniedSet: map[string]bool{}, hostileSet: map[string]bool{}}
	for _, m := range warm {
		r.wrkPaths = append(r.wrkPaths, m.Target(goproxy.KindInfo), m.Target(goproxy.KindMod), m.Target(goproxy.KindZip))
		if m.Version == "v1.0.0" {
			r.wrkPaths = append(r.wrkPaths, m.Target(goproxy.KindList))
		}
	}
	r.wrkPaths = append(r.wrkPaths,
		"/example.com/a/@v/v1.1.0.info", "/example.com/a/@v/v1.1.0.zip", "/example.com/a/@v/list",
		"/example.com/!upper/m/@v/v1.0.0.mod", "/example.com/!upper/m/@v/v1.0.0.zip")
	r.private = []string{
		"/corp.example/private/@v/list", "/corp.example/private/@v/v1.0.0.info",
		"/corp.example/private/@v/v1.0.0.mod", "/corp.example/private/@v/v1.0.0.zip",
	}
	r.denied = []string{
		"/example.com/a/@v/v1.0.0.info", "/example.com/a/@v/v1.0.0.zip", // old-a
		"/corp.example/private/@v/v1.0.0.zip", // corp-others, anonymous
	}
	for _, p := range r.wrkPaths {
		r.wrkSet[p] = true
	}
	for _, p := range r.denied {
		r.deniedSet[p] = true
	}
	for _, p := range soakHostile {
		r.hostileSet[p] = true
	}
	return r
}

// soakModules makes modules × versions small module versions,
// prefixNNNN at v1.0.0, v1.1.0, …, each holding a go.mod and 2–8 KiB of
// random hex digits (as bigModule's), different for every version.
func soakModules(tb testing.TB, prefix string, modules, versions int) []*testproxy.Module {
	tb.Helper()
	fsys := fstest.MapFS{}
	for i := range modules {
		path := fmt.Sprintf("%s%04d", prefix, i)
		for v := range versions {
			rng := rand.NewChaCha8([32]byte{byte(i), byte(i >> 8), byte(v), 's', prefix[len(prefix)-1]})
			data := make([]byte, 2<<10+rng.Uint64()%(6<<10))
			rng.Read(data)
			const digits = "0123456789abcdef"
			for j, c := range data {
				data[j] = digits[c&0xf]
			}
			version := fmt.Sprintf("v1.%d.0", v)
			ar := &txtar.Archive{
				Comment: []byte("module " + path + "\nversion " + version + "\n"),
				Files: []txtar.File{
					{Name: "go.mod", Data: []byte("module " + path + "\n\ngo 1.21\n")},
					{Name: "blob.txt", Data: data},
				},
			}
			fsys[fmt.Sprintf("%04d-%02d.txtar", i, v)] = &fstest.MapFile{Data: txtar.Format(ar)}
		}
	}
	mods, err := testproxy.Load(fsys)
	if err != nil {
		tb.Fatalf("building the soak's modules: %v", err)
	}
	return mods
}

// Who sent an audited request, as classify tells from its event.
const (
	classWrk     = "wrk"
	classPrivate = "private"
	classDenied  = "denied"
	classHostile = "hostile"
	classGo      = "go" // the go commands: everything else
)

// classify names the client of a request event by its target and user.
func (r *soakRig) classify(target, user string) string {
	switch {
	case user == "soak-corp":
		return classPrivate
	case r.wrkSet[target]:
		return classWrk
	case r.deniedSet[target]:
		return classDenied
	case r.hostileSet[target]:
		return classHostile
	}
	return classGo
}

// A soakTally counts what one kind of client got. Safe for concurrent use.
type soakTally struct {
	responses atomic.Int64 // answers received, whatever their status
	fiveXX    atomic.Int64

	mu      sync.Mutex
	n       int      // problems: errors and unexpected statuses
	samples []string // the first few
}

func (c *soakTally) problem(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n++
	if len(c.samples) < 3 {
		c.samples = append(c.samples, fmt.Sprintf(format, args...))
	}
}

func (c *soakTally) problems() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

func (c *soakTally) first() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.Join(c.samples, "; ")
}

// soakLoad is the clients besides wrk, and the counts of all of them.
type soakLoad struct {
	rig    *soakRig
	client *http.Client

	warm, private, deny, hostileT, goT soakTally
	hostileHandled, hostileRefused     atomic.Int64 // with and without X-Request-Id
	goRuns, goFails, coldFetched       atomic.Int64

	// wrk's figures, added by the test goroutine, read by any.
	wrkMu                             sync.Mutex
	wrkCompleted, wrk5xx, wrkConnRuns int64
	wrkProblems                       []string
}

// addWrk counts a wrk run: its completed requests, its 5xx, and its
// connections (at most that many requests in flight when it stopped).
func (l *soakLoad) addWrk(c soakChunk) {
	l.wrkMu.Lock()
	defer l.wrkMu.Unlock()
	l.wrkCompleted += c.requests
	l.wrk5xx += c.status[3]
	l.wrkConnRuns += int64(c.conns)
	if bad := c.requests - c.status[0]; bad > 0 || c.sockErrs > 0 {
		l.wrkProblems = append(l.wrkProblems, fmt.Sprintf("wrk run of %d connections: %d of %d requests not 2xx (%v), %d socket errors", c.conns, bad, c.requests, c.status, c.sockErrs))
	}
}

func (l *soakLoad) clientRequests() int64 {
	l.wrkMu.Lock()
	defer l.wrkMu.Unlock()
	return l.wrkCompleted + l.warm.responses.Load() + l.private.responses.Load() + l.deny.responses.Load() + l.hostileHandled.Load()
}

func (l *soakLoad) client5xx() int64 {
	l.wrkMu.Lock()
	defer l.wrkMu.Unlock()
	return l.wrk5xx + l.warm.fiveXX.Load() + l.private.fiveXX.Load() + l.deny.fiveXX.Load() + l.hostileT.fiveXX.Load()
}

func (l *soakLoad) problemCount() int {
	l.wrkMu.Lock()
	defer l.wrkMu.Unlock()
	return len(l.wrkProblems) + l.warm.problems() + l.private.problems() + l.deny.problems() + l.hostileT.problems() + l.goT.problems()
}

func (l *soakLoad) firstProblems() string {
	l.wrkMu.Lock()
	defer l.wrkMu.Unlock()
	var all []string
	if len(l.wrkProblems) > 0 {
		all = append(all, l.wrkProblems[0])
	}
	for _, c := range []*soakTally{&l.warm, &l.private, &l.deny, &l.hostileT, &l.goT} {
		if s := c.first(); s != "" {
			all = append(all, s)
		}
	}
	return strings.Join(all, "; ")
}

// get fetches path with token (if any) and counts the answer in c; a
// status other than want, or an error, is a problem. The request is not
// bound to the soak's deadline: once sent, it completes.
func (l *soakLoad) get(ctx context.Context, path, token string, want int, c *soakTally) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, l.rig.g.URL+path, nil)
	if err != nil {
		c.problem("GET %s: %v", path, err)
		return
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := l.client.Do(req)
	if err != nil {
		c.problem("GET %s: %v", path, err)
		return
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	c.responses.Add(1)
	if resp.StatusCode >= 500 {
		c.fiveXX.Add(1)
	}
	if resp.StatusCode != want || err != nil {
		c.problem("GET %s: %s (want %d), body read: %v", path, resp.Status, want, err)
	}
}

// every runs f every period until ctx ends.
func every(ctx context.Context, period time.Duration, f func()) {
	tick := time.NewTicker(period)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			f()
		}
	}
}

// privateFetches fetches the private module with soak-corp's token, 20
// requests a second.
func (l *soakLoad) privateFetches(ctx context.Context, t *testing.T) {
	i := 0
	every(ctx, 50*time.Millisecond, func() {
		l.get(t.Context(), l.rig.private[i%len(l.rig.private)], l.rig.token, http.StatusOK, &l.private)
		i++
	})
}

// denied sends requests that a deny rule refuses, 10 a second.
func (l *soakLoad) denied(ctx context.Context, t *testing.T) {
	i := 0
	every(ctx, 100*time.Millisecond, func() {
		l.get(t.Context(), l.rig.denied[i%len(l.rig.denied)], "", http.StatusForbidden, &l.deny)
		i++
	})
}

// hostile sends every hostile target once a second, each on a connection
// of its own, as raw HTTP/1.1: a 4xx is the only right answer.
func (l *soakLoad) hostile(ctx context.Context, t *testing.T) {
	addr := strings.TrimPrefix(l.rig.g.URL, "http://")
	every(ctx, time.Second, func() {
		for _, target := range soakHostile {
			status, handled, err := rawGet(addr, target)
			if err != nil {
				l.hostileT.problem("hostile %.40s: %v", target, err)
				continue
			}
			if handled {
				l.hostileHandled.Add(1)
			} else {
				l.hostileRefused.Add(1)
			}
			if status >= 500 {
				l.hostileT.fiveXX.Add(1)
			}
			if status < 400 || status >= 500 {
				l.hostileT.problem("hostile %.40s: status %d, want a 4xx", target, status)
			}
		}
	})
}

// rawGet sends GET target to addr on a new connection and returns the
// response's status, and whether modgate's handler answered it (its
// responses carry X-Request-Id; Go's HTTP server's own refusals do not).
func rawGet(addr, target string) (status int, handled bool, err error) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return 0, false, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", target, addr); err != nil {
		return 0, false, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, false, err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20)); err != nil {
		return 0, false, err
	}
	return resp.StatusCode, resp.Header.Get("X-Request-Id") != "", nil
}

// goDownloads runs go mod download of 4 cold versions at a time, one run
// after another, each with an empty module cache. Past the end of the
// cold set it starts again (modgate has those versions by then).
func (l *soakLoad) goDownloads(ctx context.Context, t *testing.T) {
	env := testproxy.GoEnv(t, l.rig.g.URL, l.rig.public.VerifierKey)
	scratch := t.TempDir()
	modcache := filepath.Join(scratch, "modcache")
	next := 0
	for ctx.Err() == nil {
		args := []string{"mod", "download", "-json"}
		for range 4 {
			m := l.rig.cold[next%len(l.rig.cold)]
			args = append(args, m.Path+"@"+m.Version)
			next++
		}
		out, stderr, err := testproxy.RunGo(t, scratch, append(env, "GOMODCACHE="+modcache), args...)
		l.goRuns.Add(1)
		if err != nil || strings.Contains(out, `"Error"`) {
			l.goFails.Add(1)
			l.goT.problem("go %s: %v\n%.500s%.500s", strings.Join(args, " "), err, out, stderr)
		} else if next <= len(l.rig.cold) {
			l.coldFetched.Add(4)
		}
		if err := os.RemoveAll(modcache); err != nil {
			l.goT.problem("removing the module cache: %v", err)
		}
	}
}

// goLists runs go list -m -versions of the cold modules in turn.
func (l *soakLoad) goLists(ctx context.Context, t *testing.T) {
	env := testproxy.GoEnv(t, l.rig.g.URL, l.rig.public.VerifierKey)
	dir := t.TempDir()
	for i := 0; ctx.Err() == nil; i++ {
		m := l.rig.cold[i%len(l.rig.cold)]
		out, stderr, err := testproxy.RunGo(t, dir, env, "list", "-m", "-versions", m.Path)
		l.goRuns.Add(1)
		if err != nil || !strings.HasPrefix(out, m.Path+" v1.0.0 ") {
			l.goFails.Add(1)
			l.goT.problem("go list -m -versions %s = %q, %v\n%.500s", m.Path, out, err, stderr)
		}
	}
}

// writeSoakScript writes a wrk script cycling through paths (each thread
// from its own offset), waiting delayMS between a connection's requests
// if it is not 0, and printing in done the lines parseSoakWrk reads: the
// completed requests, the statuses by class, the socket errors, and the
// latency percentiles of soakGrid.
func writeSoakScript(tb testing.TB, file string, paths []string, delayMS int) string {
	tb.Helper()
	var s strings.Builder
	s.WriteString("local paths = {\n")
	for _, p := range paths {
		s.WriteString("\t" + strconv.Quote(p) + ",\n")
	}
	s.WriteString("}\nlocal grid = {")
	for i, p := range soakGrid() {
		if i > 0 {
			s.WriteString(", ")
		}
		s.WriteString(strconv.FormatFloat(p, 'f', -1, 64))
	}
	s.WriteString(`}
local threads = {}
function setup(thread)
	thread:set("i", #threads * 7)
	table.insert(threads, thread)
end
function init(args)
	s2, s3, s4, s5 = 0, 0, 0, 0
end
function request()
	i = i % #paths + 1
	return wrk.format("GET", paths[i])
end
function response(status, headers, body)
	if status >= 500 then s5 = s5 + 1
	elseif status >= 400 then s4 = s4 + 1
	elseif status >= 300 then s3 = s3 + 1
	else s2 = s2 + 1 end
end
`)
	if delayMS > 0 {
		fmt.Fprintf(&s, "function delay()\n\treturn %d\nend\n", delayMS)
	}
	s.WriteString(`function done(summary, latency, requests)
	local c = {0, 0, 0, 0}
	for _, t in ipairs(threads) do
		c[1] = c[1] + t:get("s2")
		c[2] = c[2] + t:get("s3")
		c[3] = c[3] + t:get("s4")
		c[4] = c[4] + t:get("s5")
	end
	local e = summary.errors
	io.write(string.format("soak requests %d %d\n", summary.requests, summary.duration))
	io.write(string.format("soak status %d %d %d %d\n", c[1], c[2], c[3], c[4]))
	io.write(string.format("soak errors %d\n", e.connect + e.read + e.write + e.timeout))
	for _, p in ipairs(grid) do
		io.write(string.format("soak pct %s %d\n", tostring(p), latency:percentile(p)))
	end
end
`)
	if err := os.WriteFile(file, []byte(s.String()), 0o644); err != nil {
		tb.Fatal(err)
	}
	return file
}

// soakGrid is the percentiles each wrk run reports: every 1 from 50 to
// 90, every 0.1 to 99, every 0.01 to 100 (the maximum).
func soakGrid() []float64 {
	var g []float64
	for p := 50; p < 90; p++ {
		g = append(g, float64(p))
	}
	for p := 900; p < 990; p++ {
		g = append(g, float64(p)/10)
	}
	for p := 9900; p <= 10000; p++ {
		g = append(g, float64(p)/100)
	}
	return g
}

// A soakChunk is one wrk run's figures.
type soakChunk struct {
	conns    int
	requests int64         // completed
	took     time.Duration // as wrk measured it
	status   [4]int64      // 2xx, 3xx, 4xx, 5xx
	sockErrs int64         // connect, read, write errors and timeouts
	pcts     []soakPct     // on soakGrid
}

// A soakPct is a latency percentile.
type soakPct struct {
	p float64
	d time.Duration
}

func (c soakChunk) rate() float64 {
	if c.took <= 0 {
		return 0
	}
	return float64(c.requests) / c.took.Seconds()
}

// quantile returns the latency at percentile p of the grid, 0 if absent.
func (c soakChunk) quantile(p float64) time.Duration {
	for _, q := range c.pcts {
		if math.Abs(q.p-p) < 1e-9 {
			return q.d
		}
	}
	return 0
}

// runSoakWrk runs wrk with script against url at conns connections (2
// threads, 10 s timeout) for d, calls during (if not nil) halfway
// through, and returns the run's figures.
func runSoakWrk(tb testing.TB, bin, url, script string, conns int, d time.Duration, during func()) (soakChunk, error) {
	tb.Helper()
	secs := strconv.Itoa(max(1, int(d/time.Second)))
	var out bytes.Buffer
	cmd := exec.Command(bin, "-t2", "-c"+strconv.Itoa(conns), "-d"+secs+"s", "--timeout", "10s", "-s", script, url)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return soakChunk{}, fmt.Errorf("wrk: %w", err)
	}
	if during != nil {
		time.Sleep(d / 2)
		during()
	}
	if err := cmd.Wait(); err != nil {
		return soakChunk{}, fmt.Errorf("wrk: %w\n%s", err, out.String())
	}
	c, err := parseSoakWrk(out.String())
	if err != nil {
		return soakChunk{}, fmt.Errorf("wrk: %w\n%s", err, out.String())
	}
	c.conns = conns
	return c, nil
}

// parseSoakWrk reads the lines the soak script's done function prints.
func parseSoakWrk(out string) (soakChunk, error) {
	var c soakChunk
	seen := 0
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "soak" {
			continue
		}
		nums := make([]float64, len(f)-2)
		for i, s := range f[2:] {
			v, err := strconv.ParseFloat(s, 64)
			if err != nil {
				return c, fmt.Errorf("line %q: %v", strings.TrimSpace(line), err)
			}
			nums[i] = v
		}
		switch {
		case f[1] == "requests" && len(nums) == 2:
			c.requests, c.took = int64(nums[0]), time.Duration(nums[1])*time.Microsecond
			seen |= 1
		case f[1] == "status" && len(nums) == 4:
			for i, v := range nums {
				c.status[i] = int64(v)
			}
			seen |= 2
		case f[1] == "errors" && len(nums) == 1:
			c.sockErrs = int64(nums[0])
			seen |= 4
		case f[1] == "pct" && len(nums) == 2:
			c.pcts = append(c.pcts, soakPct{nums[0], time.Duration(nums[1]) * time.Microsecond})
		default:
			return c, fmt.Errorf("line %q: unknown", strings.TrimSpace(line))
		}
	}
	if seen != 7 || len(c.pcts) != len(soakGrid()) {
		return c, errors.New("the soak script's summary is missing")
	}
	return c, nil
}

// pooledSoakQuantile estimates the latency at percentile p of all the
// runs' requests together. Each run's percentile curve is taken as a
// distribution: the mass between two grid points at the upper one, and
// everything below the median at the median, weighted by the run's
// completed requests; the pooled masses are sorted and cumulated. The
// estimate errs high by at most one grid step (0.01 percentile at p99).
func pooledSoakQuantile(chunks []soakChunk, p float64) time.Duration {
	type mass struct {
		d time.Duration
		w float64
	}
	var ms []mass
	total := 0.0
	for _, c := range chunks {
		prev := 0.0
		for _, q := range c.pcts {
			w := float64(c.requests) * (q.p - prev) / 100
			ms = append(ms, mass{q.d, w})
			total += w
			prev = q.p
		}
	}
	slices.SortFunc(ms, func(a, b mass) int { return int(a.d - b.d) })
	acc := 0.0
	for _, m := range ms {
		acc += m.w
		if acc >= total*p/100-1e-9 {
			return m.d
		}
	}
	return 0
}

// A soakSample is one row of the series.
type soakSample struct {
	at             time.Duration  // since the load started
	rss            int64          // VmRSS, bytes
	heap           int64          // go_memstats_heap_inuse_bytes
	goroutines     float64        // go_goroutines
	fds            int            // entries of /proc/PID/fd
	fdKinds        map[string]int // the same by kind (fdKinds)
	cacheBytes     int64          // allocated below the cache directory
	cacheEntries   int64          // modgate_cache_entries{tier="disk"}
	auditBytes     int64          // allocated by the audit files
	soakFinal                     // modgate's counters at the interval's end
	rate           float64        // modgate's requests per second in the interval
	wrkRate        float64        // wrk's completed requests per second in the interval
	conns          int            // wrk's connections
	p50, p99       time.Duration  // wrk's, in the interval
	clientRequests int64          // responses the clients counted: wrk, the test's own
	client5xx      int64
	goRuns         int64 // go commands run
}

// soakCSV writes the series, a row at a time, so that a run cut short
// still leaves what it measured.
type soakCSV struct {
	f *os.File
	w *bufio.Writer
}

const soakCSVHeader = "t_s,rss_bytes,heap_bytes,goroutines,fds,cache_bytes,cache_entries,audit_bytes,req_per_s,wrk_req_per_s,wrk_conns,p50_ms,p99_ms,client_requests,modgate_requests,audit_written,audit_lost,server_5xx,client_5xx,go_runs\n"

func newSoakCSV(name string) (*soakCSV, error) {
	f, err := os.Create(name)
	if err != nil {
		return nil, err
	}
	c := &soakCSV{f: f, w: bufio.NewWriter(f)}
	c.w.WriteString(soakCSVHeader)
	return c, nil
}

func (c *soakCSV) write(s soakSample) error {
	ms := func(d time.Duration) string { return strconv.FormatFloat(float64(d)/1e6, 'f', 3, 64) }
	fmt.Fprintf(c.w, "%.1f,%d,%d,%.0f,%d,%d,%d,%d,%.1f,%.1f,%d,%s,%s,%d,%d,%d,%d,%d,%d,%d\n",
		s.at.Seconds(), s.rss, s.heap, s.goroutines, s.fds, s.cacheBytes, s.cacheEntries, s.auditBytes, s.rate, s.wrkRate, s.conns,
		ms(s.p50), ms(s.p99), s.clientRequests, s.requests, s.written, s.dropped+s.failed, s.fiveXX, s.client5xx, s.goRuns)
	return c.w.Flush()
}

// close closes the file; it may be called more than once.
func (c *soakCSV) close() error {
	if c.f == nil {
		return nil
	}
	err := c.w.Flush()
	if cerr := c.f.Close(); err == nil {
		err = cerr
	}
	c.f = nil
	return err
}

// soakProbe reads modgate's resources and counters.
type soakProbe struct {
	pid      int
	admin    string
	cacheDir string
	audit    string // the audit file; rotated ones are beside it
}

// soakFinal are modgate's counters: requests (modgate_requests_total
// summed over its labels, and those of a 5xx status), and audit events
// written, dropped and failed (modgate_audit_events_total).
type soakFinal struct {
	requests, written, dropped, failed, fiveXX int64
}

// take samples modgate's resources at time at since the load started;
// the other fields are the caller's to fill.
func (p soakProbe) take(at time.Duration) (soakSample, error) {
	s := soakSample{at: at}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.pid))
	if err != nil {
		return s, err
	}
	for line := range strings.Lines(string(status)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				return s, fmt.Errorf("VmRSS: %w", err)
			}
			s.rss = kb << 10
		}
	}
	if s.fdKinds, err = fdKinds(p.pid, filepath.Dir(p.audit)); err != nil {
		return s, err
	}
	for _, n := range s.fdKinds {
		s.fds += n
	}
	if s.cacheBytes, err = diskUse(p.cacheDir, nil); err != nil {
		return s, err
	}
	base := filepath.Base(p.audit)
	if s.auditBytes, err = diskUse(filepath.Dir(p.audit), func(name string) bool { return strings.HasPrefix(name, base) }); err != nil {
		return s, err
	}
	m, err := scrapeSoak(p.admin)
	if err != nil {
		return s, err
	}
	s.goroutines = m["go_goroutines"]
	s.heap = int64(m["go_memstats_heap_inuse_bytes"])
	s.cacheEntries = int64(m[`modgate_cache_entries{tier="disk"}`])
	return s, nil
}

// counters scrapes modgate's counters.
func (p soakProbe) counters() (soakFinal, error) {
	m, err := scrapeSoak(p.admin)
	if err != nil {
		return soakFinal{}, err
	}
	var f soakFinal
	f.from(m)
	return f, nil
}

func (f *soakFinal) from(m map[string]float64) {
	for k, v := range m {
		switch {
		case strings.HasPrefix(k, "modgate_requests_total{"):
			f.requests += int64(v)
			if strings.Contains(k, `status="5`) {
				f.fiveXX += int64(v)
			}
		case k == `modgate_audit_events_total{fate="written"}`:
			f.written = int64(v)
		case k == `modgate_audit_events_total{fate="dropped"}`:
			f.dropped = int64(v)
		case k == `modgate_audit_events_total{fate="failed"}`:
			f.failed = int64(v)
		}
	}
}

// drained waits, once the load has stopped, until the audit queue is
// empty and the request count holds still, and returns the counters.
func (p soakProbe) drained(t *testing.T) (soakFinal, error) {
	t.Helper()
	var prev soakFinal
	for deadline := time.Now().Add(time.Minute); ; {
		m, err := scrapeSoak(p.admin)
		if err != nil {
			return prev, err
		}
		var f soakFinal
		f.from(m)
		if m["modgate_audit_queue_events"] == 0 && f == prev {
			return f, nil
		}
		if time.Now().After(deadline) {
			return f, fmt.Errorf("the audit queue did not drain within a minute of the load's end: %v events queued", m["modgate_audit_queue_events"])
		}
		prev = f
		time.Sleep(500 * time.Millisecond)
	}
}

// scrapeSoak reads modgate's /metrics into samples keyed by name and
// labels as written.
func scrapeSoak(admin string) (map[string]float64, error) {
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get(admin + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	const limit = 16 << 20
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("GET /metrics: %w", err)
	}
	if len(body) > limit {
		return nil, fmt.Errorf("GET /metrics: larger than %d bytes", limit)
	}
	out := map[string]float64{}
	for line := range strings.Lines(string(body)) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out, nil
}

// diskUse returns the bytes allocated to the regular files below root
// whose names keep accepts (all if keep is nil), as du counts them.
func diskUse(root string, keep func(name string) bool) (int64, error) {
	var total int64
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed while we walked
			}
			return err
		}
		if !d.Type().IsRegular() || (keep != nil && !keep(d.Name())) {
			return nil
		}
		info, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			total += st.Blocks * 512
		} else {
			total += info.Size()
		}
		return nil
	})
	return total, err
}

// soakAudit is what the audit files hold.
type soakAudit struct {
	files    int              // the current file and the rotated ones
	lines    int64            // every line
	requests int64            // lines of event.action "request"
	byClass  map[string]int64 // request events by classify's answer
	fiveXX   int64            // request events with a 5xx status
	first5xx string           // the first of them
	dropped  int64            // chain.dropped, summed
	deleted  int64            // lines before the oldest file's first: deleted by rotation
}

// readSoakAudit reads the audit file at path and its rotated files, and
// counts their lines, request events by classify, 5xx events and drops.
func readSoakAudit(path string, classify func(target, user string) string) (soakAudit, error) {
	a := soakAudit{byClass: map[string]int64{}}
	names := []string{path}
	for i := 1; ; i++ {
		name := fmt.Sprintf("%s.%d", path, i)
		if _, err := os.Stat(name); err != nil {
			break
		}
		names = append(names, name)
	}
	a.files = len(names)
	var ev struct {
		Event struct {
			Action string `json:"action"`
		} `json:"event"`
		User *struct {
			Name string `json:"name"`
		} `json:"user"`
		URL *struct {
			Path string `json:"path"`
		} `json:"url"`
		HTTP *struct {
			Response struct {
				StatusCode int `json:"status_code"`
			} `json:"response"`
		} `json:"http"`
		Chain *struct {
			Seq     int64 `json:"seq"`
			Dropped int64 `json:"dropped"`
		} `json:"chain"`
	}
	for i, name := range names {
		f, err := os.Open(name)
		if err != nil {
			return a, err
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 2<<20)
		first := true
		for sc.Scan() {
			ev.User, ev.URL, ev.HTTP, ev.Chain = nil, nil, nil, nil
			ev.Event.Action = ""
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				f.Close()
				return a, fmt.Errorf("%s: line %d: %w", name, a.lines+1, err)
			}
			a.lines++
			if ev.Chain != nil {
				a.dropped += ev.Chain.Dropped
				if first && i == len(names)-1 {
					a.deleted = ev.Chain.Seq - 1
				}
			}
			first = false
			if ev.Event.Action != "request" {
				continue
			}
			a.requests++
			var target, user string
			if ev.URL != nil {
				target = ev.URL.Path
			}
			if ev.User != nil {
				user = ev.User.Name
			}
			a.byClass[classify(target, user)]++
			if ev.HTTP != nil && ev.HTTP.Response.StatusCode >= 500 {
				a.fiveXX++
				if a.first5xx == "" {
					a.first5xx = sc.Text()
				}
			}
		}
		err = sc.Err()
		f.Close()
		if err != nil {
			return a, fmt.Errorf("%s: %w", name, err)
		}
	}
	return a, nil
}

// A soakTrend is the least-squares line through one series' samples
// after the warm-up.
type soakTrend struct {
	n      int
	mean   float64
	growth float64 // the slope times the window's span: growth over the window
	resid  float64 // residual standard deviation around the line
	span   time.Duration
}

// fitSoakTrend fits value over the samples' times.
func fitSoakTrend(samples []soakSample, value func(soakSample) float64) soakTrend {
	xs := make([]float64, len(samples))
	ys := make([]float64, len(samples))
	for i, s := range samples {
		xs[i], ys[i] = s.at.Seconds(), value(s)
	}
	tr := fitTrend(xs, ys)
	if len(samples) > 1 {
		tr.span = samples[len(samples)-1].at - samples[0].at
	}
	return tr
}

// fitTrend fits y = a + b·x by least squares.
func fitTrend(xs, ys []float64) soakTrend {
	n := float64(len(xs))
	tr := soakTrend{n: len(xs)}
	if len(xs) < 3 {
		return tr
	}
	var mx, my float64
	for i := range xs {
		mx += xs[i]
		my += ys[i]
	}
	mx, my = mx/n, my/n
	var sxx, sxy float64
	for i := range xs {
		sxx += (xs[i] - mx) * (xs[i] - mx)
		sxy += (xs[i] - mx) * (ys[i] - my)
	}
	b := sxy / sxx
	var ssr float64
	for i := range xs {
		r := ys[i] - (my + b*(xs[i]-mx))
		ssr += r * r
	}
	tr.mean = my
	tr.growth = b * (xs[len(xs)-1] - xs[0])
	tr.resid = math.Sqrt(ssr / (n - 2))
	return tr
}

// flat reports whether the growth is at most max(frac of the mean, k
// residual standard deviations), and that tolerance.
func (tr soakTrend) flat(frac, k float64) (tol float64, ok bool) {
	tol = max(frac*tr.mean, k*tr.resid)
	return tol, tr.n >= 3 && tr.growth <= tol
}

// describe says the trend in words, values divided by scale and
// followed by unit.
func (tr soakTrend) describe(scale float64, unit string) string {
	return fmt.Sprintf("mean %.1f%s, growth %+.1f%s over %v (residual SD %.1f%s, %d samples)",
		tr.mean/scale, unit, tr.growth/scale, unit, tr.span.Round(time.Second), tr.resid/scale, unit, tr.n)
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// fdKinds counts process pid's open fds by what they point at: "socket",
// "pipe", "anon_inode:[…]", or a file by its directory, relative to base
// when it is below it (e.g. "cache/entries/ab").
func fdKinds(pid int, base string) (map[string]int, error) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	kinds := map[string]int{}
	for _, e := range entries {
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if errors.Is(err, fs.ErrNotExist) {
			continue // closed while we looked
		}
		if err != nil {
			return nil, err
		}
		var kind string
		switch rel, err := filepath.Rel(base, filepath.Dir(target)); {
		case strings.HasPrefix(target, "socket:"), strings.HasPrefix(target, "pipe:"):
			kind, _, _ = strings.Cut(target, ":")
		case !strings.HasPrefix(target, "/"):
			kind = target // anon_inode:[eventpoll] and the like
		case err == nil && !strings.HasPrefix(rel, ".."):
			kind = rel
		default:
			kind = filepath.Dir(target)
		}
		kinds[kind]++
	}
	return kinds, nil
}

// fdChange lists the kinds of open fds (fdKinds) whose count differs
// between the first and the last sample.
func fdChange(samples []soakSample) string {
	if len(samples) < 2 {
		return "n/a"
	}
	first, last := samples[0].fdKinds, samples[len(samples)-1].fdKinds
	var kinds []string
	for k := range first {
		kinds = append(kinds, k)
	}
	for k := range last {
		if _, ok := first[k]; !ok {
			kinds = append(kinds, k)
		}
	}
	slices.Sort(kinds)
	var out []string
	for _, k := range kinds {
		if first[k] != last[k] {
			out = append(out, fmt.Sprintf("%s %d→%d", k, first[k], last[k]))
		}
	}
	if len(out) == 0 {
		return "no kind changed"
	}
	return strings.Join(out, ", ")
}

// saveHeap saves a heap profile of g, after a collection, in a
// temporary file and returns its name ("" if it failed, which is logged).
func saveHeap(t *testing.T, g *gatewayProc, name string) string {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, g.Admin+"/debug/pprof/heap?gc=1", nil)
	if err != nil {
		t.Logf("heap profile: %v", err)
		return ""
	}
	req.Header.Set("Authorization", "Bearer "+g.adminToken(t))
	resp, err := (&http.Client{Timeout: time.Minute}).Do(req)
	if err != nil {
		t.Logf("heap profile: %v", err)
		return ""
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Logf("heap profile: %v %s", err, resp.Status)
		return ""
	}
	file := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Logf("heap profile: %v", err)
		return ""
	}
	return file
}

// heapDiff is the top of go tool pprof's difference between two heap
// profiles (live bytes), indented.
func heapDiff(base, profile string) string {
	if base == "" || profile == "" {
		return "    n/a"
	}
	out, err := exec.Command("go", "tool", "pprof", "-sample_index=inuse_space", "-top", "-nodecount=12", "-base", base, profile).CombinedOutput()
	if err != nil {
		return fmt.Sprintf("    go tool pprof: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	for i, l := range lines {
		lines[i] = "    " + l
	}
	return strings.Join(lines, "\n")
}

// plotSoak draws the series with integration/soakplot.
func plotSoak(t *testing.T, csvFile, png string, warmup time.Duration, title string) {
	t.Helper()
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Errorf("go env GOMOD: %v", err)
		return
	}
	cmd := exec.Command("go", "run", "./integration/soakplot", "-in", csvFile, "-out", png,
		"-warmup", strconv.FormatFloat(warmup.Minutes(), 'f', 2, 64), "-title", title)
	cmd.Dir = filepath.Dir(strings.TrimSpace(string(gomod)))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("plotting: %v\n%s", err, out)
		return
	}
	t.Logf("plot: %s", png)
}

// TestSoakTrend pins TestSoak's flatness rule on made-up series.
func TestSoakTrend(t *testing.T) {
	noise := []float64{3, -2, 4, -5, 1, 0, -3, 5, -1, 2, -4, 0}
	tests := []struct {
		name string
		y    func(i int) float64
		want bool
	}{
		{"flat", func(i int) float64 { return 100 }, true},
		{"flat with noise", func(i int) float64 { return 100 + noise[i] }, true},
		{"shrinking", func(i int) float64 { return 100 - 2*float64(i) }, true},
		{"ramp within 10%", func(i int) float64 { return 100 + 0.8*float64(i) }, true},
		{"ramp of 20%", func(i int) float64 { return 100 + 2*float64(i) }, false},
		{"ramp of 20% under noise", func(i int) float64 { return 100 + 2*float64(i) + noise[i] }, false},
		{"a step of 30% halfway", func(i int) float64 { return 100 + 30*float64(i/6) }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var samples []soakSample
			for i := range len(noise) {
				samples = append(samples, soakSample{at: time.Duration(i) * soakInterval, goroutines: tt.y(i)})
			}
			tr := fitSoakTrend(samples, func(s soakSample) float64 { return s.goroutines })
			if tol, ok := tr.flat(0.10, 3); ok != tt.want {
				t.Errorf("flat(%s) = %v (tolerance %.1f), want %v", tr.describe(1, ""), ok, tol, tt.want)
			}
		})
	}
}

// TestPooledSoakQuantile: pooling runs weights each by its requests.
func TestPooledSoakQuantile(t *testing.T) {
	run := func(n int64, base time.Duration) soakChunk {
		c := soakChunk{requests: n}
		for _, p := range soakGrid() {
			c.pcts = append(c.pcts, soakPct{p, base + time.Duration(p*float64(time.Microsecond))})
		}
		return c
	}
	fast, slow := run(99_000, 0), run(1_000, time.Second)
	tests := []struct {
		name   string
		chunks []soakChunk
		p      float64
		want   time.Duration
	}{
		{"one run", []soakChunk{fast}, 99, 99 * time.Microsecond},
		{"one run, median", []soakChunk{fast}, 50, 50 * time.Microsecond},
		{"1% slow: p99 is the fast runs' maximum", []soakChunk{fast, slow}, 99, 100 * time.Microsecond},
		{"1% slow: p99.5 is slow", []soakChunk{fast, slow}, 99.5, time.Second + 50*time.Microsecond},
	}
	for _, tt := range tests {
		if got := pooledSoakQuantile(tt.chunks, tt.p); got != tt.want {
			t.Errorf("%s: pooledSoakQuantile(p%v) = %v, want %v", tt.name, tt.p, got, tt.want)
		}
	}
}

func TestParseSoakWrk(t *testing.T) {
	var good strings.Builder
	good.WriteString("Running 10s test @ http://127.0.0.1:1\nsoak requests 1000 10000000\nsoak status 990 0 10 0\nsoak errors 2\n")
	for _, p := range soakGrid() {
		fmt.Fprintf(&good, "soak pct %s %d\n", strconv.FormatFloat(p, 'f', -1, 64), int(p*10))
	}
	c, err := parseSoakWrk(good.String())
	if err != nil {
		t.Fatalf("parseSoakWrk = %v", err)
	}
	if c.requests != 1000 || c.rate() != 100 || c.status != [4]int64{990, 0, 10, 0} || c.sockErrs != 2 || c.quantile(99) != 990*time.Microsecond {
		t.Errorf("parseSoakWrk = %+v", c)
	}
	for _, bad := range []string{
		"",
		"soak requests 1000 10000000\nsoak status 990 0 10 0\nsoak errors 2\n", // no percentiles
		strings.Replace(good.String(), "soak errors 2", "soak errors x", 1),
		strings.Replace(good.String(), "soak status 990 0 10 0", "soak status 990", 1),
		good.String() + "soak what 1\n",
	} {
		if _, err := parseSoakWrk(bad); err == nil {
			t.Errorf("parseSoakWrk(%.60q) succeeded, want an error", bad)
		}
	}
}
