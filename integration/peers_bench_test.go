package integration

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"golang.org/x/tools/txtar"

	"github.com/modgate/modgate/goproxy"
	"github.com/modgate/modgate/integration/helperbin"
	"github.com/modgate/modgate/integration/testproxy"
)

// BenchmarkVsPeers measures modgate against the Go module proxies people
// deploy instead of it, Athens and goproxy (built from their Go modules by
// integration/peers/build.sh), with nginx serving the same tree from disk
// as the floor. Each server's only upstream is one testproxy on 127.0.0.1
// serving 63 module versions (21 modules of 3 versions, zips of 100 KB to
// 1.1 MB) and their checksum database.
//
// Each server starts empty and is filled once, the 189 artifacts (.info,
// .mod, .zip of every version) requested one at a time over one kept-open
// connection: the cold fill, timed. Then the @v/list of every module once,
// and every server is warm. wrk then loads the servers in turn, 3 rounds,
// each round in a different order, medians kept:
//
//   - meta16, meta64: the 126 .info and .mod paths, cycled, at 16 and 64
//     connections;
//   - zip16: the 63 zips, cycled, at 16 connections;
//   - list16: the 21 @v/list paths, cycled, at 16 connections;
//
// each with requests per second and the server's CPU per request (wrk
// shares the 2 CPUs: a server that takes less leaves wrk more), and the
// peak resident memory of each server over the whole run. It
// reports every figure with b.ReportMetric and logs a Markdown table. It
// needs wrk and nginx (make bench-deps) and skips a peer whose binary is
// missing; it runs once whatever b.N is (run it with -benchtime=1x).
// BENCH_DURATION and BENCH_ROUNDS change the length of a wrk run (3s) and
// the number of rounds (3).
func BenchmarkVsPeers(b *testing.B) {
	nginxBin, wrkBin, duration, rounds := loadTools(b)
	bins := peerBinaries(b)
	if bins["athens"] == "" && bins["goproxy"] == "" {
		b.Skip("no peer binary: run 'bash integration/peers/build.sh' to build Athens and goproxy")
	}

	mods := peerModules(b)
	smallest, largest := len(mods[0].Zip), len(mods[0].Zip)
	for _, m := range mods {
		smallest, largest = min(smallest, len(m.Zip)), max(largest, len(m.Zip))
	}
	up := testproxy.Start(b, mods)
	docroot := b.TempDir()
	writePeerTree(b, docroot, mods)
	arts := peerArtifacts(b, mods)

	var servers []*peerServer
	starts := []struct {
		name  string
		start func() *peerServer
	}{
		{"nginx", func() *peerServer {
			url := startNginx(b, nginxBin, docroot)
			return &peerServer{name: "nginx", url: url, pids: peerNginxPIDs(b)}
		}},
		{"athens", func() *peerServer { return startAthens(b, bins["athens"], up) }},
		{"goproxy", func() *peerServer { return startGoproxy(b, bins["goproxy"], up) }},
		{"modgate", func() *peerServer {
			// As deployed: default settings, logging at info.
			g := startModgate(b, fmt.Sprintf("upstreams:\n  - name: public\n    url: %s\nsumdb: [%s]\nsumdb_key: %s\n", up.URL, up.SumDB, up.VerifierKey), "--log-level", "info")
			return &peerServer{name: "modgate", url: g.URL, pids: []int{g.cmd.Process.Pid}}
		}},
	}
	fills := map[string]time.Duration{}
	var notes strings.Builder
	fmt.Fprintf(&notes, "- %d module versions of %d modules; zips of %d to %d bytes.\n", len(mods), len(arts.lists), smallest, largest)
	for _, s := range starts {
		if s.name != "nginx" && s.name != "modgate" && bins[s.name] == "" {
			continue
		}
		srv := s.start()
		before := len(up.Requests())
		fills[srv.name] = peerColdFill(b, srv, arts)
		if srv.name != "nginx" {
			// What the fill cost upstream, and whether the server
			// checked the checksum database at all.
			reqs := up.Requests()[before:]
			sumdb := 0
			for _, r := range reqs {
				if strings.HasPrefix(r, "/sumdb/") {
					sumdb++
				}
			}
			fmt.Fprintf(&notes, "- %s's cold fill sent the upstream %d requests, %d of them to the checksum database.\n", srv.name, len(reqs), sumdb)
		}
		for _, list := range arts.lists {
			if status, _ := getBody(b, srv.url+list); status != http.StatusOK {
				b.Fatalf("%s: warming %s: status %d", srv.name, list, status)
			}
		}
		servers = append(servers, srv)
	}

	res := peerResults{
		servers: map[string]bool{},
		loads: []peerLoad{
			{"meta16", "`.info`/`.mod`, 16 connections", arts.meta, 16},
			{"meta64", "`.info`/`.mod`, 64 connections", arts.meta, 64},
			{"zip16", "zips 100 KB–1.1 MB, 16 connections", arts.zips, 16},
			{"list16", "`@v/list`, 16 connections", arts.lists, 16},
		},
		got:   map[string]map[string]peerFigures{},
		rss:   map[string]float64{},
		fills: fills,
		notes: notes.String(),
	}
	scripts := b.TempDir()
	for _, l := range res.loads {
		script := writeWrkScript(b, filepath.Join(scripts, l.key+".lua"), l.paths)
		runs := map[string][]wrkResult{}
		cpu := map[string]time.Duration{}
		reqs := map[string]int64{}
		errs := map[string]int64{}
		for r := range rounds {
			// Rotate the order each round, so that drift in the machine's
			// load and each server's place after another hit all alike.
			for i := range servers {
				s := servers[(i+r)%len(servers)]
				w, c := runWrkPaths(b, wrkBin, s, script, l.conc, duration)
				runs[s.name] = append(runs[s.name], w.wrkResult)
				cpu[s.name] += c
				reqs[s.name] += w.requests
				errs[s.name] += w.errors
			}
		}
		res.got[l.key] = map[string]peerFigures{}
		for _, s := range servers {
			res.got[l.key][s.name] = peerFigures{
				rps:    median(runs[s.name]).rps,
				cpu:    float64(cpu[s.name].Microseconds()) / float64(max(1, reqs[s.name])),
				errors: errs[s.name],
			}
		}
	}
	for _, s := range servers {
		var hwm int64
		for _, pid := range s.pids {
			hwm += procHWM(b, pid)
		}
		res.rss[s.name] = float64(hwm) / (1 << 20)
		res.servers[s.name] = true
	}
	res.report(b)
	report := fmt.Sprintf("%d rounds of %v per server and workload, medians:\n%s", rounds, duration, res.table())
	b.Log(report)
	if !testing.Verbose() {
		// Go keeps only the first 10 lines of a benchmark's log without -v.
		fmt.Print("BenchmarkVsPeers: " + report)
	}
}

// A peerLoad is one wrk workload of BenchmarkVsPeers.
type peerLoad struct {
	key   string   // in metric units, e.g. "meta16"
	label string   // in the table
	paths []string // cycled through
	conc  int      // connections
}

// peerFigures are one server's figures under one load.
type peerFigures struct {
	rps    float64 // median requests per second
	cpu    float64 // CPU µs per request over all rounds' measured runs
	errors int64   // failed requests over all rounds
}

// peerResults are BenchmarkVsPeers's figures.
type peerResults struct {
	servers map[string]bool                   // the servers measured
	loads   []peerLoad                        // the workloads, in order
	got     map[string]map[string]peerFigures // load key → server → figures
	rss     map[string]float64                // server → peak RSS in MiB
	fills   map[string]time.Duration          // server → cold fill time
	notes   string                            // Markdown list items
}

// peerNames are the servers in the tables' order.
var peerNames = []string{"nginx", "athens", "goproxy", "modgate"}

// report reports every figure as a metric of b.
func (res *peerResults) report(b *testing.B) {
	for _, l := range res.loads {
		for _, n := range peerNames {
			if !res.servers[n] {
				continue
			}
			f := res.got[l.key][n]
			b.ReportMetric(f.rps, n+"-"+l.key+"-req/s")
			b.ReportMetric(f.cpu, n+"-"+l.key+"-cpu-µs/req")
			if f.errors > 0 {
				b.ReportMetric(float64(f.errors), n+"-"+l.key+"-errors")
			}
			if n != "modgate" && f.rps > 0 {
				b.ReportMetric(res.got[l.key]["modgate"].rps/f.rps, "ratio-"+l.key+"-vs-"+n)
			}
		}
	}
	for _, n := range peerNames {
		if res.servers[n] {
			b.ReportMetric(res.rss[n], n+"-peak-rss-MiB")
			b.ReportMetric(res.fills[n].Seconds(), n+"-coldfill-s")
		}
	}
}

// table returns the figures as Markdown: one table of the figures, one of
// modgate's ratios to the others, then the notes.
func (res *peerResults) table() string {
	var t strings.Builder
	t.WriteString("| warm workload | nginx | Athens | goproxy | modgate |\n|---|---|---|---|---|\n")
	row := func(label string, value func(n string) string) {
		t.WriteString("| " + label)
		for _, n := range peerNames {
			v := "—"
			if res.servers[n] {
				v = value(n)
			}
			t.WriteString(" | " + v)
		}
		t.WriteString(" |\n")
	}
	for _, l := range res.loads {
		row(l.label+", req/s", func(n string) string {
			f := res.got[l.key][n]
			s := peerThousands(f.rps)
			if f.errors > 0 {
				s += fmt.Sprintf(" (%d failed)", f.errors)
			}
			return s
		})
	}
	for _, l := range res.loads {
		row(l.label+", server CPU per request", func(n string) string { return fmt.Sprintf("%.0f µs", res.got[l.key][n].cpu) })
	}
	row("peak RSS over the run", func(n string) string { return fmt.Sprintf("%.0f MiB", res.rss[n]) })
	row("cold fill: 189 artifacts, one at a time", func(n string) string { return fmt.Sprintf("%.2f s", res.fills[n].Seconds()) })

	t.WriteString("\n| modgate ÷ | nginx | Athens | goproxy |\n|---|---|---|---|\n")
	for _, l := range res.loads {
		t.WriteString("| " + l.label)
		for _, n := range peerNames[:3] {
			v := "—"
			if f := res.got[l.key][n]; res.servers[n] && f.rps > 0 {
				v = fmt.Sprintf("%.2f", res.got[l.key]["modgate"].rps/f.rps)
			}
			t.WriteString(" | " + v)
		}
		t.WriteString(" |\n")
	}
	return t.String() + "\n" + res.notes
}

// peerBinaries returns the path of each peer's binary, "" for a peer
// that integration/peers/build.sh has not built (the benchmark skips it).
func peerBinaries(tb testing.TB) map[string]string {
	tb.Helper()
	dir := os.Getenv("MODGATE_PEERS_DIR")
	if dir == "" {
		dir = helperbin.Dir()
	}
	bins := map[string]string{}
	for _, name := range []string{"athens", "goproxy"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err != nil || fi.Mode()&0o111 == 0 {
			tb.Logf("skipping %s: no executable %s: run 'bash integration/peers/build.sh'", name, p)
			continue
		}
		bins[name] = p
	}
	if bins["athens"] != "" {
		if _, err := exec.LookPath("go"); err != nil {
			tb.Logf("skipping athens: it fetches with the go command, which is not in PATH: %v", err)
			delete(bins, "athens")
		}
	}
	return bins
}

// peerModules makes the 63 module versions of the upstream tree:
// example.com/peerNN for NN from 00 to 20, each at v1.0.0, v1.1.0 and
// v1.2.0, whose zips grow evenly from about 105 KB to 1.09 MB. Each holds
// one file of random hex digits, as bigModule's, sized so that its zip
// has the size wanted; it fails tb if a zip falls outside 100 KB–1.1 MB.
func peerModules(tb testing.TB) []*testproxy.Module {
	tb.Helper()
	const n, lo, hi = 63, 105_000, 1_090_000
	build := func(fsys fstest.MapFS) []*testproxy.Module {
		mods, err := testproxy.Load(fsys)
		if err != nil {
			tb.Fatalf("building the peers' modules: %v", err)
		}
		return mods
	}
	file := func(i, size int) *fstest.MapFile {
		path, version := fmt.Sprintf("example.com/peer%02d", i/3), fmt.Sprintf("v1.%d.0", i%3)
		data := make([]byte, size)
		rand.NewChaCha8([32]byte{byte(i), byte(i >> 8), 'p'}).Read(data)
		const digits = "0123456789abcdef"
		for j, c := range data {
			data[j] = digits[c&0xf]
		}
		ar := &txtar.Archive{
			Comment: []byte("module " + path + "\nversion " + version + "\n"),
			Files: []txtar.File{
				{Name: "go.mod", Data: []byte("module " + path + "\n\ngo 1.21\n")},
				{Name: "blob.txt", Data: data},
			},
		}
		return &fstest.MapFile{Data: txtar.Format(ar)}
	}
	// Deflate shrinks random hex digits by a steady ratio: measure it once.
	const probe = 256 << 10
	sample := build(fstest.MapFS{"probe.txtar": file(0, probe)})[0]
	ratio := float64(len(sample.Zip)) / probe

	fsys := fstest.MapFS{}
	for i := range n {
		want := lo + (hi-lo)*i/(n-1)
		fsys[fmt.Sprintf("peer%02d.txtar", i)] = file(i, int(float64(want)/ratio))
	}
	mods := build(fsys)
	for _, m := range mods {
		if len(m.Zip) < 100_000 || len(m.Zip) > 1_100_000 {
			tb.Fatalf("%s@%s: zip of %d bytes, want 100 KB–1.1 MB", m.Path, m.Version, len(m.Zip))
		}
	}
	if len(mods) != n {
		tb.Fatalf("built %d module versions, want %d", len(mods), n)
	}
	return mods
}

// peerTree is the upstream tree as request paths.
type peerTree struct {
	fill  []peerArtifact // .info, .mod, .zip of every version, in that order
	meta  []string       // the .info and .mod paths
	zips  []string       // the .zip paths
	lists []string       // the @v/list paths, one per module
}

// A peerArtifact is one path of the cold fill and, for a .mod or a .zip,
// the bytes a server must answer with (nil for a .info, which a server
// may re-encode).
type peerArtifact struct {
	path string
	want []byte
}

// peerArtifacts lists the request paths of mods.
func peerArtifacts(tb testing.TB, mods []*testproxy.Module) peerTree {
	tb.Helper()
	var t peerTree
	seen := map[string]bool{}
	for _, m := range mods {
		info, mod, zip := m.Target(goproxy.KindInfo), m.Target(goproxy.KindMod), m.Target(goproxy.KindZip)
		t.fill = append(t.fill, peerArtifact{info, nil}, peerArtifact{mod, m.Mod}, peerArtifact{zip, m.Zip})
		t.meta = append(t.meta, info, mod)
		t.zips = append(t.zips, zip)
		if list := m.Target(goproxy.KindList); !seen[list] {
			seen[list] = true
			t.lists = append(t.lists, list)
		}
	}
	return t
}

// writePeerTree writes the files a GOPROXY server answers for mods below
// docroot, for nginx: <escaped path>/@v/list, and <escaped
// version>.info, .mod and .zip.
func writePeerTree(tb testing.TB, docroot string, mods []*testproxy.Module) {
	tb.Helper()
	// The files are named as nginx looks for them: the path decoded, a
	// "%21" of the canonical path a "!".
	file := func(target string) string {
		return filepath.Join(docroot, filepath.FromSlash(strings.ReplaceAll(target, "%21", "!")))
	}
	lists := map[string]string{}
	for _, m := range mods {
		for kind, data := range map[goproxy.Kind][]byte{goproxy.KindInfo: m.Info, goproxy.KindMod: m.Mod, goproxy.KindZip: m.Zip} {
			f := file(m.Target(kind))
			if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
				tb.Fatal(err)
			}
			if err := os.WriteFile(f, data, 0o644); err != nil {
				tb.Fatal(err)
			}
		}
		lists[file(m.Target(goproxy.KindList))] += m.Version + "\n" // mods come in semver order per module
	}
	for f, list := range lists {
		if err := os.WriteFile(f, []byte(list), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
}

// writeWrkScript writes a wrk script that requests paths in turn, and
// returns its file name.
func writeWrkScript(tb testing.TB, file string, paths []string) string {
	tb.Helper()
	var s strings.Builder
	s.WriteString("local paths = {\n")
	for _, p := range paths {
		s.WriteString("\t" + strconv.Quote(p) + ",\n")
	}
	s.WriteString("}\nlocal i = 0\nrequest = function()\n\ti = i % #paths + 1\n\treturn wrk.format(\"GET\", paths[i])\nend\n")
	if err := os.WriteFile(file, []byte(s.String()), 0o644); err != nil {
		tb.Fatal(err)
	}
	return file
}

// A peerWrkResult is a wrk run with the requests that failed: non-2xx
// answers and socket errors (a timeout is 10s).
type peerWrkResult struct {
	wrkResult
	errors int64
}

var (
	wrkNon2xx  = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
	wrkSockErr = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
)

// runWrkPaths loads s with wrk running script at conc connections for d,
// after a one-second warm-up, and returns the result and the CPU time the
// server's processes used during the measured run.
func runWrkPaths(tb testing.TB, bin string, s *peerServer, script string, conc int, d time.Duration) (peerWrkResult, time.Duration) {
	tb.Helper()
	run := func(d time.Duration) string {
		secs := strconv.Itoa(max(1, int(d/time.Second)))
		out, err := exec.Command(bin, "-t2", "-c"+strconv.Itoa(conc), "-d"+secs+"s", "--timeout", "10s", "--latency", "-s", script, s.url).CombinedOutput()
		if err != nil {
			tb.Fatalf("wrk %s %s: %v\n%s", s.name, script, err, out)
		}
		return string(out)
	}
	cpu := func() time.Duration {
		var sum time.Duration
		for _, pid := range s.pids {
			sum += procCPU(tb, pid)
		}
		return sum
	}
	run(time.Second)
	cpu0 := cpu()
	out := run(d)
	used := cpu() - cpu0

	var r peerWrkResult
	m := wrkRPS.FindStringSubmatch(out)
	n := wrkRequests.FindStringSubmatch(out)
	if m == nil || n == nil {
		tb.Fatalf("cannot read wrk output:\n%s", out)
	}
	r.rps, _ = strconv.ParseFloat(m[1], 64)
	r.requests, _ = strconv.ParseInt(n[1], 10, 64)
	for _, p := range wrkPct.FindAllStringSubmatch(out, -1) {
		v, _ := strconv.ParseFloat(p[2], 64)
		unit := map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second}[p[3]]
		if p[1] == "50" {
			r.p50 = time.Duration(v * float64(unit))
		} else {
			r.p99 = time.Duration(v * float64(unit))
		}
	}
	if e := wrkNon2xx.FindStringSubmatch(out); e != nil {
		v, _ := strconv.ParseInt(e[1], 10, 64)
		r.errors += v
	}
	if e := wrkSockErr.FindStringSubmatch(out); e != nil {
		for _, x := range e[1:] {
			v, _ := strconv.ParseInt(x, 10, 64)
			r.errors += v
		}
	}
	if r.errors > 0 {
		tb.Logf("%s, %s, %d connections: %d of %d requests failed:\n%s", s.name, filepath.Base(script), conc, r.errors, r.requests, out)
	}
	return r, used
}

// peerThousands formats a rate with a thousands separator, as the
// README's tables do (one decimal below 100).
func peerThousands(v float64) string {
	if v < 100 {
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	s := strconv.FormatInt(int64(v+0.5), 10)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
