package integration

import (
	"bufio"
	"cmp"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"golang.org/x/tools/txtar"

	"github.com/modgate/modgate/integration/testproxy"
)

// BenchmarkVsNginx measures warm cache hits of the real modgate binary
// against nginx serving the same bytes from disk (with an access log, as
// modgate writes an audit event per request), both loaded by wrk on this
// machine. It reports modgate's requests per second, latency percentiles,
// CPU time per request and peak resident memory, and nginx's requests per
// second with the ratio. It needs nginx and wrk (make bench installs them);
// it runs once per target and concurrency whatever b.N is.
func BenchmarkVsNginx(b *testing.B) {
	nginxBin, wrkBin, duration, rounds := loadTools(b)

	mods := append(testproxy.Fixtures(b), bigModule(b, "example.com/big100k", 100<<10), bigModule(b, "example.com/big1m", 1<<20))
	up := testproxy.Start(b, mods)
	g := startModgate(b, fmt.Sprintf("upstreams:\n  - url: %s\nsumdb: []\nsumdb_key: %s\nbudget:\n  off: true\n", up.URL, up.VerifierKey))
	targets := []struct{ name, path string }{
		{"info", "/example.com/a/@v/v1.0.0.info"},
		{"mod", "/example.com/a/@v/v1.0.0.mod"},
		{"zip-100KiB", "/example.com/big100k/@v/v1.0.0.zip"},
		{"zip-1MiB", "/example.com/big1m/@v/v1.0.0.zip"},
	}
	docroot := b.TempDir()
	for _, tg := range targets {
		// Warm the cache, and give nginx exactly the bytes modgate serves.
		resp, err := http.Get(g.URL + tg.path)
		if err != nil {
			b.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			b.Fatalf("warming %s: %v %s", tg.path, err, resp.Status)
		}
		file := filepath.Join(docroot, filepath.FromSlash(tg.path))
		if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(file, body, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	nginxURL := startNginx(b, nginxBin, docroot)
	pid := g.cmd.Process.Pid

	for _, tg := range targets {
		for _, conc := range []int{16, 64} {
			b.Run(fmt.Sprintf("%s/c=%d", tg.name, conc), func(b *testing.B) {
				// Alternate the two servers round by round, so drift in the
				// machine's load hits both alike; report the median rounds.
				var ngs, mgs []wrkResult
				var cpu time.Duration
				var requests int64
				for r := range rounds {
					ngs = append(ngs, runWrk(b, wrkBin, nginxURL+tg.path, conc, duration))
					cpu0 := procCPU(b, pid)
					wait := func() {}
					if r == 0 {
						wait = profile(b, g.Admin, g.adminToken(b), fmt.Sprintf("%s-c%d", tg.name, conc), duration)
					}
					mg := runWrk(b, wrkBin, g.URL+tg.path, conc, duration)
					wait()
					cpu += procCPU(b, pid) - cpu0
					requests += mg.requests
					mgs = append(mgs, mg)
				}
				ng, mg := median(ngs), median(mgs)
				b.ReportMetric(mg.rps, "req/s")
				b.ReportMetric(float64(mg.p50.Microseconds()), "p50-µs")
				b.ReportMetric(float64(mg.p99.Microseconds()), "p99-µs")
				b.ReportMetric(float64(cpu.Microseconds())/float64(requests), "cpu-µs/req")
				b.ReportMetric(ng.rps, "nginx-req/s")
				b.ReportMetric(mg.rps/ng.rps, "x-nginx")
				b.ReportMetric(float64(procHWM(b, pid))/(1<<20), "peak-rss-MiB")
			})
		}
	}
}

// loadTools finds nginx and wrk, skipping b without them, and returns
// the length of a wrk run (BENCH_DURATION, default 3s) and the number of
// rounds (BENCH_ROUNDS, default 3).
func loadTools(b *testing.B) (nginxBin, wrkBin string, duration time.Duration, rounds int) {
	nginxBin, err1 := exec.LookPath("nginx")
	if err1 != nil {
		if _, err := os.Stat("/usr/sbin/nginx"); err == nil {
			nginxBin, err1 = "/usr/sbin/nginx", nil
		}
	}
	wrkBin, err2 := exec.LookPath("wrk")
	if err1 != nil || err2 != nil {
		b.Skip("needs nginx and wrk: run 'make bench', which installs them")
	}
	duration, rounds = 3*time.Second, 3
	if d, err := time.ParseDuration(os.Getenv("BENCH_DURATION")); err == nil {
		duration = d
	}
	if n, err := strconv.Atoi(os.Getenv("BENCH_ROUNDS")); err == nil && n > 0 {
		rounds = n
	}
	return nginxBin, wrkBin, duration, rounds
}

// bigModule makes a module with one incompressible file of size bytes, so
// its zip is about that size.
func bigModule(tb testing.TB, path string, size int) *testproxy.Module {
	tb.Helper()
	data := make([]byte, size)
	rng := rand.NewChaCha8([32]byte{})
	rng.Read(data)
	// Keep the file text-safe for txtar: hex-like bytes from the random ones.
	const digits = "0123456789abcdef"
	for i, c := range data {
		data[i] = digits[c&0xf]
	}
	ar := &txtar.Archive{
		Comment: []byte("module " + path + "\nversion v1.0.0\n"),
		Files: []txtar.File{
			{Name: "go.mod", Data: []byte("module " + path + "\n\ngo 1.21\n")},
			{Name: "blob.txt", Data: data},
		},
	}
	mods, err := testproxy.Load(fstest.MapFS{"m.txtar": {Data: txtar.Format(ar)}})
	if err != nil || len(mods) != 1 {
		tb.Fatalf("building %s: %v", path, err)
	}
	return mods[0]
}

// startNginx serves docroot on a free loopback port until the end of the
// benchmark and returns its base URL.
func startNginx(tb testing.TB, bin, docroot string) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	prefix := tb.TempDir()
	conf := fmt.Sprintf(`
user root;
worker_processes auto;
daemon off;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 1024; }
http {
	default_type application/octet-stream;
	access_log %[1]s/access.log;
	sendfile on;
	tcp_nopush on;
	keepalive_requests 1000000;
	client_body_temp_path %[1]s/tmp;
	proxy_temp_path %[1]s/tmp;
	fastcgi_temp_path %[1]s/tmp;
	uwsgi_temp_path %[1]s/tmp;
	scgi_temp_path %[1]s/tmp;
	server {
		listen %[2]s;
		root %[3]s;
	}
}
`, prefix, addr, docroot)
	confFile := filepath.Join(prefix, "nginx.conf")
	if err := os.WriteFile(confFile, []byte(conf), 0o644); err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(bin, "-p", prefix, "-c", confFile)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt) // nginx: fast shutdown
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	url := "http://" + addr
	for deadline := time.Now().Add(10 * time.Second); ; {
		resp, err := http.Get(url + "/")
		if err == nil {
			resp.Body.Close()
			return url
		}
		if time.Now().After(deadline) {
			tb.Fatalf("nginx not answering on %s: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// median returns the result with the median requests per second.
func median(rs []wrkResult) wrkResult {
	rs = slices.Clone(rs)
	slices.SortFunc(rs, func(a, b wrkResult) int { return cmp.Compare(a.rps, b.rps) })
	return rs[len(rs)/2]
}

type wrkResult struct {
	rps      float64
	requests int64
	p50, p99 time.Duration
}

var (
	wrkRPS      = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	wrkRequests = regexp.MustCompile(`(\d+) requests in`)
	wrkPct      = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([0-9.]+)(us|ms|s)\s*$`)
)

// runWrk loads url with conc connections for d after a one-second warm-up.
func runWrk(tb testing.TB, bin, url string, conc int, d time.Duration) wrkResult {
	tb.Helper()
	run := func(d time.Duration) string {
		secs := strconv.Itoa(max(1, int(d/time.Second)))
		out, err := exec.Command(bin, "-t2", "-c"+strconv.Itoa(conc), "-d"+secs+"s", "--latency", url).CombinedOutput()
		if err != nil {
			tb.Fatalf("wrk %s: %v\n%s", url, err, out)
		}
		if strings.Contains(string(out), "Non-2xx") || strings.Contains(string(out), "Socket errors") {
			tb.Fatalf("wrk %s saw errors:\n%s", url, out)
		}
		return string(out)
	}
	run(time.Second)
	out := run(d)
	var r wrkResult
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
	return r
}

// procCPU returns the user and system CPU time process pid has used.
func procCPU(tb testing.TB, pid int) time.Duration {
	tb.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		tb.Fatal(err)
	}
	// Fields after the parenthesised command name; utime and stime are the
	// 14th and 15th fields of the whole line, in clock ticks (100 a second).
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// procHWM returns process pid's peak resident memory in bytes.
func procHWM(tb testing.TB, pid int) int64 {
	tb.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// profile saves a CPU profile of modgate, taken while wrk runs, under the
// directory BENCH_PROFILE names, if it names one.
func profile(tb testing.TB, admin, token, name string, d time.Duration) (wait func()) {
	dir := os.Getenv("BENCH_PROFILE")
	if dir == "" {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Skip wrk's warm-up second.
		time.Sleep(time.Second)
		secs := max(1, int(d/time.Second)-1)
		req, err := http.NewRequest(http.MethodGet, fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", admin, secs), nil)
		if err != nil {
			tb.Errorf("profile: %v", err)
			return
		}
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			tb.Errorf("profile: %v", err)
			return
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		os.WriteFile(filepath.Join(dir, name+".pprof"), data, 0o644)
	}()
	return func() { <-done }
}
