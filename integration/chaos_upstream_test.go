package integration

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"golang.org/x/tools/txtar"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/modgate/modgate/goproxy"
	"github.com/modgate/modgate/integration/testproxy"
	"github.com/modgate/modgate/integration/toxiproxy"
)

// The fault matrix's upstream rows (TestChaosUpstream) and control-plane
// rows (TestChaosControlPlane). Each row starts a gateway of its own (its
// own cache and audit log) whose public upstream, checksum database or
// xDS client is reached through Toxiproxy (integration/toxiproxy), warms
// the public fixtures, then injects one fault while clients load it:
// cached hits, cold misses (modules this gateway was never asked for:
// .info, .mod and .zip, as the go command asks), and the real go command
// downloading one more cold module. Then it removes the fault and
// measures the recovery: the time until a cold miss is served again.
//
// Checked in every row: every 200 carries the upstream's very bytes
// (asked of the upstream directly, never through the fault) and is read
// whole; every cached hit is a 200; a miss is a 200 or a 502/503/504,
// never a 404 or 410 (DESIGN invariant 4), with a plain-text body of at
// most 8 lines (invariant 8); every .mod and .zip filled is audited as
// verified (invariant 1); every answer has exactly one audit event
// (invariant 5) and the audit chain verifies; after the recovery, the
// modules refused during the fault are served, and the go command
// succeeds: a fault leaves nothing behind.

// toxBlobBytes is the size of the random file in each cold module:
// about 13 KiB zipped, so that a 32 KB/s link takes a good part of a
// second for a zip.
const toxBlobBytes = 24 << 10

// toxHealth is the health section of the rows' gateways: probes often
// enough that a dead upstream drains, and a healed one recovers, within a
// second or so, with time enough for the latency row's 600ms round trip
// on a loaded machine; and upstream headers awaited 2s, not 30s.
const toxHealth = `
health: {probe_path: /example.com/a/@v/list, interval: 200ms, timeout: 2s, fail_threshold: 3, recover_threshold: 2}
limits: {upstream_header_timeout: 2s}
`

// toxFault and toxPace are how long a row's fault lasts under load, and
// how long a cold-miss client waits between two modules.
var (
	toxFault = chaosDuration(2*time.Second, 50*time.Second)
	toxPace  = chaosDuration(100*time.Millisecond, 250*time.Millisecond)
)

// A toxWorld is what the rows of one test share: the upstream and the
// Toxiproxy server. Every row has its own gateway, so for each row the
// pool's modules are cold.
type toxWorld struct {
	origin   *testproxy.Server   // the public fixtures, the pool and the go command's module
	tox      *toxiproxy.Server   // one server; proxies per row
	fixtures []*testproxy.Module // the public fixtures: warmed, then hits
	pool     []*testproxy.Module // cold modules
	gocmd    *testproxy.Module   // the module the go command downloads

	mu   sync.Mutex
	want map[string][]byte // request path → the upstream's bytes
}

// newToxWorld starts the upstream with the public fixtures, a pool of
// cold modules (enough for two clients at toxPace during toxFault, and
// the recoveries) and the go command's module, and a Toxiproxy server.
func newToxWorld(t *testing.T) *toxWorld {
	t.Helper()
	tox := toxiproxy.Start(t)
	w := &toxWorld{tox: tox, want: map[string][]byte{}}
	w.fixtures, _ = fixtures(t)
	n := 2*int(toxFault/toxPace) + 40
	mods := toxModules(t, n+1)
	w.pool, w.gocmd = mods[:n], mods[n]
	w.origin = testproxy.Start(t, slices.Concat(w.fixtures, mods))
	return w
}

// toxModules builds n modules example.com/chaos/mNNNN v1.0.0, each with
// the same file of toxBlobBytes random hex digits (the same from run to
// run): each zip is compressed alone, so about 13 KiB.
func toxModules(t *testing.T, n int) []*testproxy.Module {
	t.Helper()
	raw := make([]byte, toxBlobBytes/2)
	rand.NewChaCha8([32]byte{'c', 'h', 'a', 'o', 's'}).Read(raw)
	blob := []byte(hex.EncodeToString(raw))
	fsys := fstest.MapFS{}
	for i := range n {
		path := fmt.Sprintf("example.com/chaos/m%04d", i)
		ar := &txtar.Archive{
			Comment: []byte("module " + path + "\nversion v1.0.0\n"),
			Files: []txtar.File{
				{Name: "go.mod", Data: []byte("module " + path + "\n\ngo 1.21\n")},
				{Name: "blob.txt", Data: blob},
			},
		}
		fsys[fmt.Sprintf("m%04d.txtar", i)] = &fstest.MapFile{Data: txtar.Format(ar)}
	}
	mods, err := testproxy.Load(fsys)
	if err != nil || len(mods) != n {
		t.Fatalf("building %d cold modules: %d, %v", n, len(mods), err)
	}
	return mods
}

// expected returns the upstream's bytes for a request path, asked of the
// upstream directly (never through a fault) once.
func (w *toxWorld) expected(t *testing.T, path string) ([]byte, error) {
	w.mu.Lock()
	b, ok := w.want[path]
	w.mu.Unlock()
	if ok {
		return b, nil
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, w.origin.URL+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err = io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s from the upstream: %d %v", path, resp.StatusCode, err)
	}
	w.mu.Lock()
	w.want[path] = b
	w.mu.Unlock()
	return b, nil
}

// gatewayFor returns the rows' gateway configuration for a public
// upstream at url, with extra YAML appended.
func (w *toxWorld) gatewayFor(url, extra string) string {
	// gatewayConfig reads the server's URL, SumDB and VerifierKey only.
	up := &testproxy.Server{URL: url, SumDB: w.origin.SumDB, VerifierKey: w.origin.VerifierKey}
	return gatewayConfig(up, nil) + toxHealth + extra
}

// A toxRig is one row: its gateway, and the proxy its fault is injected
// into.
type toxRig struct {
	w      *toxWorld
	g      *gatewayProc
	proxy  *toxiproxy.Proxy
	hits   []string     // paths warmed before the fault
	next   atomic.Int64 // index in w.pool of the next cold module
	client *http.Client
}

// newRig starts a row's gateway with config, and warms every public
// fixture's .info, .mod and .zip through it: the hits of the row.
func (w *toxWorld) newRig(t *testing.T, proxy *toxiproxy.Proxy, config string) *toxRig {
	t.Helper()
	r := &toxRig{
		w:      w,
		g:      startModgate(t, config),
		proxy:  proxy,
		client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}, Timeout: 30 * time.Second},
	}
	t.Cleanup(r.client.CloseIdleConnections)
	for _, m := range w.fixtures {
		for _, k := range []goproxy.Kind{goproxy.KindInfo, goproxy.KindMod, goproxy.KindZip} {
			p := m.Target(k)
			want, err := w.expected(t, p)
			if err != nil {
				t.Fatal(err)
			}
			a := r.get(t, p)
			if a.status != http.StatusOK || a.err != nil || !bytes.Equal(a.body, want) {
				t.Fatalf("warming GET %s = %d (%d bytes, %v), want the upstream's 200 (%d bytes); log:\n%s", p, a.status, len(a.body), a.err, len(want), r.g.logText())
			}
			r.hits = append(r.hits, p)
		}
	}
	return r
}

// coldModule returns the next module of the pool, or nil if the row has
// used them all.
func (r *toxRig) coldModule() *testproxy.Module {
	i := r.next.Add(1) - 1
	if int(i) >= len(r.w.pool) {
		return nil
	}
	return r.w.pool[i]
}

// A toxAnswer is what the gateway answered a GET.
type toxAnswer struct {
	status int
	id     string // X-Request-Id
	ctype  string // Content-Type
	body   []byte
	err    error // the request's, or reading the body's
}

// toxMaxBody bounds what a client reads of an answer.
const toxMaxBody = 64 << 20

// get asks the gateway for path, and reads the whole answer.
func (r *toxRig) get(t *testing.T, path string) toxAnswer {
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, r.g.URL+path, nil)
	if err != nil {
		return toxAnswer{err: err}
	}
	resp, err := r.client.Do(req)
	if err != nil {
		return toxAnswer{err: err}
	}
	defer resp.Body.Close()
	a := toxAnswer{status: resp.StatusCode, id: resp.Header.Get("X-Request-Id"), ctype: resp.Header.Get("Content-Type")}
	a.body, a.err = io.ReadAll(io.LimitReader(resp.Body, toxMaxBody))
	return a
}

// A toxLoad records what the clients of a row saw.
type toxLoad struct {
	// sumdbDown: the checksum database is unreachable, so a cold .mod or
	// .zip served 200 was not verified.
	sumdbDown bool

	mu         sync.Mutex
	saw        map[string]int // "hit 200", "miss 502", "miss conn-error" → count
	ids        []string       // X-Request-Id of every answer
	unverified int            // bodies not the upstream's, 200s cut short, unverifiable 200s
	outage404  int            // 404s and 410s: every path asked exists upstream
	badRefusal int            // refusals whose body is not plain text of at most 8 lines
	refusal    string         // the first refusal of a .mod or .zip miss: status and first line
	problems   []string       // the first few of the above, for the log
	refused    []*testproxy.Module
	coldAsked  int
}

func newToxLoad() *toxLoad { return &toxLoad{saw: map[string]int{}} }

// problem records a line for the log, the first 10 only. l.mu is held.
func (l *toxLoad) problem(format string, args ...any) {
	if len(l.problems) < 10 {
		l.problems = append(l.problems, fmt.Sprintf(format, args...))
	}
}

// ask GETs path as a hit, a miss or another role, and records what it
// got; it reports whether the gateway served the upstream's bytes.
func (r *toxRig) ask(t *testing.T, l *toxLoad, role, path string) bool {
	ok, _ := r.askFor(t, l, role, path)
	return ok
}

// askFor is ask, which also returns the answer.
func (r *toxRig) askFor(t *testing.T, l *toxLoad, role, path string) (bool, toxAnswer) {
	a := r.get(t, path)
	return r.record(t, l, role, path, a), a
}

// record records a, the answer to path, and reports whether it is the
// upstream's bytes.
func (r *toxRig) record(t *testing.T, l *toxLoad, role, path string, a toxAnswer) bool {
	want, werr := r.w.expected(t, path)
	l.mu.Lock()
	defer l.mu.Unlock()
	if a.id != "" {
		l.ids = append(l.ids, a.id)
	}
	if a.status == 0 {
		l.saw[role+" conn-error"]++
		l.problem("%s GET %s: %v", role, path, a.err)
		return false
	}
	l.saw[fmt.Sprintf("%s %d", role, a.status)]++
	if a.status >= 400 {
		if l.refusal == "" && role == "miss" && !strings.HasSuffix(path, ".info") {
			l.refusal = fmt.Sprintf("%d %s", a.status, toxLocalPort.ReplaceAllString(toxFirstLine(string(a.body)), "127.0.0.1:PORT"))
		}
		if !strings.HasPrefix(a.ctype, "text/plain") || bytes.Count(bytes.TrimRight(a.body, "\n"), []byte("\n")) >= 8 {
			l.badRefusal++
			l.problem("%s GET %s: %d with a %q body of %d lines (DESIGN invariant 8: plain text, at most 8)", role, path, a.status, a.ctype, bytes.Count(a.body, []byte("\n")))
		}
	}
	switch {
	case werr != nil:
		t.Errorf("the upstream's own answer, to compare: %v", werr)
		return false
	case a.status == http.StatusOK && a.err != nil:
		l.unverified++
		l.problem("%s GET %s: 200 cut short after %d bytes: %v", role, path, len(a.body), a.err)
		return false
	case a.status == http.StatusOK && !bytes.Equal(a.body, want):
		l.unverified++
		l.problem("%s GET %s: 200 with %d bytes that are not the upstream's %d", role, path, len(a.body), len(want))
		return false
	case a.status == http.StatusOK && l.sumdbDown && role == "miss" && !strings.HasSuffix(path, ".info"):
		l.unverified++
		l.problem("%s GET %s: 200 while the checksum database is unreachable", role, path)
		return false
	case a.status == http.StatusNotFound || a.status == http.StatusGone:
		l.outage404++
		l.problem("%s GET %s: %d %q: an outage answered as not found", role, path, a.status, toxFirstLine(string(a.body)))
		return false
	}
	return a.status == http.StatusOK
}

// load runs clients against the gateway until ctx ends: two asking for
// the warmed paths in turn, two asking for cold modules (.info, .mod,
// .zip, as the go command does), one module every toxPace. It returns
// the group to wait for them with.
func (r *toxRig) load(ctx context.Context, t *testing.T, l *toxLoad) *sync.WaitGroup {
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Go(func() {
			for i := 0; i < 1_000_000 && ctx.Err() == nil; i++ {
				r.ask(t, l, "hit", r.hits[(w*7+i)%len(r.hits)])
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
	for range 2 {
		wg.Go(func() {
			for ctx.Err() == nil {
				m := r.coldModule()
				if m == nil {
					return
				}
				ok := true
				for _, k := range []goproxy.Kind{goproxy.KindInfo, goproxy.KindMod, goproxy.KindZip} {
					ok = r.ask(t, l, "miss", m.Target(k)) && ok
				}
				l.mu.Lock()
				l.coldAsked++
				if !ok {
					l.refused = append(l.refused, m)
				}
				l.mu.Unlock()
				select {
				case <-ctx.Done():
				case <-time.After(toxPace):
				}
			}
		})
	}
	return &wg
}

// count returns how many answers to role had status.
func (l *toxLoad) count(role string, status int) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.saw[fmt.Sprintf("%s %d", role, status)]
}

// other returns how many answers to role had none of the statuses ok
// (connection errors included).
func (l *toxLoad) other(role string, ok ...int) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for k, v := range l.saw {
		r, what, _ := strings.Cut(k, " ")
		if r == role && !slices.ContainsFunc(ok, func(s int) bool { return fmt.Sprint(s) == what }) {
			n += v
		}
	}
	return n
}

// summary is what the clients saw, for the matrix: counts by role and
// status.
func (l *toxLoad) summary() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	keys := make([]string, 0, len(l.saw))
	for k := range l.saw {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, role := range []struct{ key, name string }{{"hit", "hits"}, {"miss", "misses"}} {
		var s []string
		for _, k := range keys {
			if r, what, _ := strings.Cut(k, " "); r == role.key {
				s = append(s, fmt.Sprintf("%s×%d", what, l.saw[k]))
			}
		}
		if len(s) > 0 {
			parts = append(parts, role.name+" "+strings.Join(s, " "))
		}
	}
	return strings.Join(parts, "; ") + fmt.Sprintf(" (%d cold modules)", l.coldAsked)
}

// A toxGoRun is the go command's download of one module.
type toxGoRun struct {
	ok   bool
	msg  string // the go command's error, first line
	took time.Duration
}

func (g toxGoRun) String() string {
	if g.ok {
		return fmt.Sprintf("ok in %v", g.took.Round(100*time.Millisecond))
	}
	return "failed: " + g.msg
}

// toxLocalURL matches the gateway's URL in the go command's messages;
// toxLocalPort any address on 127.0.0.1, whose port changes from run to
// run.
var (
	toxLocalURL  = regexp.MustCompile(`http://127\.0\.0\.1:\d+`)
	toxLocalPort = regexp.MustCompile(`127\.0\.0\.1:\d+`)
)

// goDownload runs `go mod download -json` of m through the gateway in
// dir, with env from testproxy.GoEnv, and checks what it got: a download
// that succeeded must hold the upstream's bytes (unverified is set if
// not); a failure must not say 404 or 410 (outage404 is set if it does).
func (r *toxRig) goDownload(t *testing.T, dir string, env []string, m *testproxy.Module) (run toxGoRun, unverified, outage404 bool) {
	start := time.Now()
	out, stderr, err := testproxy.RunGo(t, dir, env, "mod", "download", "-json", m.Path+"@"+m.Version)
	run.took = time.Since(start)
	var res struct{ Error, Zip, GoMod string }
	jerr := json.Unmarshal([]byte(out), &res)
	if err == nil && jerr == nil && res.Error == "" {
		run.ok = true
		for file, p := range map[string]string{res.Zip: m.Target(goproxy.KindZip), res.GoMod: m.Target(goproxy.KindMod)} {
			got, rerr := os.ReadFile(file)
			want, werr := r.w.expected(t, p)
			if rerr != nil || werr != nil || !bytes.Equal(got, want) {
				unverified = true
			}
		}
		return run, unverified, false
	}
	msg := res.Error
	if msg == "" {
		msg = strings.TrimSpace(stderr)
	}
	if msg == "" && err != nil {
		msg = err.Error()
	}
	run.msg = toxLocalURL.ReplaceAllString(toxFirstLine(msg), "$$GOPROXY")
	all := res.Error + "\n" + stderr
	outage404 = strings.Contains(all, "404 Not Found") || strings.Contains(all, "410 Gone")
	return run, false, outage404
}

// toxFirstLine returns s's first non-empty line, trimmed, and at most 200
// bytes of it.
func toxFirstLine(s string) string {
	for line := range strings.Lines(s) {
		if line = strings.TrimSpace(line); line != "" {
			if len(line) > 200 {
				line = line[:200] + "…"
			}
			return line
		}
	}
	return ""
}

// recovery asks for the .zip of a cold module until it is served whole:
// the gateway fetched and verified it through the healed path. It
// returns the time that took, or -1 if it was not served within limit.
func (r *toxRig) recovery(t *testing.T, l *toxLoad, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	m := r.coldModule()
	if m == nil {
		t.Errorf("recovery: the pool of cold modules is used up")
		return -1
	}
	for i := 0; i < 10_000 && time.Since(start) < limit; i++ {
		if r.ask(t, l, "recovery", m.Target(goproxy.KindZip)) {
			return time.Since(start)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Errorf("recovery: no cold miss served within %v of the fault's removal; log (end):\n%s", limit, toxLogTail(r.g.logText(), 40))
	return -1
}

// leftBehind asks again, after the recovery, for the files of the last
// modules refused during the fault (20, 200 in the long run), and returns
// how many were asked and what was still refused ("path: status first
// line of the body").
func (r *toxRig) leftBehind(t *testing.T, l *toxLoad) (asked int, still []string) {
	t.Helper()
	l.mu.Lock()
	refused := slices.Clone(l.refused)
	l.mu.Unlock()
	n := 20
	if chaosLong() {
		n = 200
	}
	if len(refused) > n {
		refused = refused[len(refused)-n:]
	}
	for _, m := range refused {
		asked++
		for _, k := range []goproxy.Kind{goproxy.KindInfo, goproxy.KindMod, goproxy.KindZip} {
			p := m.Target(k)
			if ok, a := r.askFor(t, l, "after", p); !ok {
				still = append(still, fmt.Sprintf("%s: %d %s", p, a.status, toxFirstLine(string(a.body))))
			}
		}
	}
	return asked, still
}

// checkAudit waits until every answer's request id is in the audit log
// and reports errors unless each is there exactly once; it counts, into
// l.unverified, the .mod and .zip answers filled from upstream with a 200
// that the audit does not record as verified.
func (r *toxRig) checkAudit(t *testing.T, l *toxLoad) {
	t.Helper()
	l.mu.Lock()
	ids := slices.Clone(l.ids)
	l.mu.Unlock()
	var (
		count   map[string]int
		suspect []string // 200s of fills not audited as verified
	)
	deadline := time.Now().Add(10 * time.Second)
	for {
		count, suspect = map[string]int{}, nil
		for _, e := range r.g.events(t) {
			if e.HTTP != nil && e.HTTP.Request.ID != "" {
				count[e.HTTP.Request.ID]++
			}
			if e.HTTP == nil || e.URL == nil || e.HTTP.Response.StatusCode != http.StatusOK {
				continue
			}
			if k := e.Modgate.Kind; (k == "mod" || k == "zip") && e.Modgate.Cache != "hit" && e.Modgate.Verification != "verified" {
				suspect = append(suspect, fmt.Sprintf("audit: %s served 200 (cache %q) with verification %q", e.URL.Path, e.Modgate.Cache, e.Modgate.Verification))
			}
		}
		missing := 0
		for _, id := range ids {
			if count[id] == 0 {
				missing++
			}
		}
		if missing == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	l.mu.Lock()
	l.unverified += len(suspect)
	for _, p := range suspect {
		l.problem("%s", p)
	}
	l.mu.Unlock()
	bad := 0
	for _, id := range ids {
		if n := count[id]; n != 1 {
			if bad++; bad <= 5 {
				t.Errorf("audit: request %s has %d events, want exactly 1 (DESIGN invariant 5)", id, n)
			}
		}
	}
	for id, n := range count {
		if n > 1 && !slices.Contains(ids, id) {
			t.Errorf("audit: request %s has %d events, want exactly 1 (DESIGN invariant 5)", id, n)
		}
	}
}

// toxLogTail returns the last n lines of log.
func toxLogTail(log string, n int) string {
	lines := strings.Split(strings.TrimRight(log, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// toxLogTime returns the time of the first line of log, at or after
// since, that contains substr.
func toxLogTime(log, substr string, since time.Time) (time.Time, bool) {
	for line := range strings.Lines(log) {
		if !strings.Contains(line, substr) {
			continue
		}
		ts, _, _ := strings.Cut(strings.TrimPrefix(line, "time="), " ")
		at, err := time.Parse(time.RFC3339Nano, ts)
		if err == nil && !at.Before(since) {
			return at, true
		}
	}
	return time.Time{}, false
}

// A toxRow is one row of the matrix that loads a gateway through a fault.
type toxRow struct {
	group, name string
	note        string // what is expected, for the matrix
	// slowOnly says the fault slows the upstream down without breaking
	// it: every miss and the go command must succeed during it.
	slowOnly bool
	// sumdbDown says the checksum database is unreachable during the
	// fault: a cold .mod or .zip must not be served.
	sumdbDown bool
	// start starts the row's gateway, warmed. Default: its public
	// upstream is the world's, through a proxy of its own.
	start func(t *testing.T, w *toxWorld, name string) *toxRig
	// inject and remove the fault.
	inject, remove func(t *testing.T, r *toxRig)
	// during, if set, runs while the clients load the gateway, and
	// returns a note for the matrix.
	during func(ctx context.Context, t *testing.T, r *toxRig, l *toxLoad) string
	// after, if set, runs after the recovery (removed is when the fault
	// was removed), and returns a note for the matrix.
	after func(t *testing.T, r *toxRig, l *toxLoad, removed time.Time) string
}

// startThroughProxy is toxRow.start's default.
func startThroughProxy(t *testing.T, w *toxWorld, name string) *toxRig {
	t.Helper()
	proxy := w.tox.Proxy(t, name, strings.TrimPrefix(w.origin.URL, "http://"))
	return w.newRig(t, proxy, w.gatewayFor("http://"+proxy.Listen, ""))
}

// run runs one row: the gateway warmed, the fault injected under load
// (and the go command), removed, the recovery measured, and everything
// checked; then the row is recorded in the matrix.
func (w *toxWorld) run(t *testing.T, name string, row toxRow) {
	start := row.start
	if start == nil {
		start = startThroughProxy
	}
	r := start(t, w, name)
	l := newToxLoad()
	l.sumdbDown = row.sumdbDown
	env := testproxy.GoEnv(t, r.g.URL, w.origin.VerifierKey)
	afterEnv := testproxy.GoEnv(t, r.g.URL, w.origin.VerifierKey)

	dir := t.TempDir()

	row.inject(t, r)
	ctx, stop := context.WithTimeout(t.Context(), toxFault)
	wg := r.load(ctx, t, l)
	t.Cleanup(wg.Wait) // if the test ends early; its context is done by then
	var (
		during              toxGoRun
		goUnverified, go404 bool
		notes               []string
	)
	if row.note != "" {
		notes = append(notes, row.note)
	}
	wg.Go(func() { during, goUnverified, go404 = r.goDownload(t, dir, env, w.gocmd) })
	if row.during != nil {
		if n := row.during(ctx, t, r, l); n != "" {
			notes = append(notes, n)
		}
	}
	<-ctx.Done()
	stop()
	wg.Wait()
	row.remove(t, r)
	removed := time.Now()

	recovered := r.recovery(t, l, chaosDuration(30*time.Second, 2*time.Minute))
	if row.after != nil {
		if n := row.after(t, r, l, removed); n != "" {
			notes = append(notes, n)
		}
	}
	asked, still := r.leftBehind(t, l)
	after, afterUnverified, after404 := r.goDownload(t, t.TempDir(), afterEnv, w.gocmd)
	r.checkAudit(t, l)

	for _, p := range l.problems {
		t.Log(p)
	}
	if go404 || after404 || l.outage404 > 0 {
		t.Errorf("an outage was answered 404 or 410 (DESIGN invariant 4): %d by the gateway; go command during the fault %q, after %q", l.outage404, during.msg, after.msg)
	}
	if l.badRefusal > 0 {
		t.Errorf("%d refusals were not plain text of at most 8 lines (DESIGN invariant 8)", l.badRefusal)
	}
	if l.count("hit", http.StatusOK) == 0 || l.other("hit", http.StatusOK) > 0 {
		t.Errorf("cached hits during the fault: %s; want every one a 200", l.summary())
	}
	if n := l.other("miss", http.StatusOK, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout); n > 0 {
		t.Errorf("%d misses answered neither 200 nor 502/503/504: %s", n, l.summary())
	}
	if row.slowOnly && (!during.ok || l.other("miss", http.StatusOK) > 0) {
		t.Errorf("%s only slows the upstream down, but: %s; go command %s", row.name, l.summary(), during)
	}
	for i, s := range still {
		if i == 10 {
			t.Errorf("… and %d more", len(still)-i)
			break
		}
		t.Errorf("after the recovery, still refused (refused during the fault): %s", s)
	}
	if !after.ok {
		t.Errorf("go mod download after the recovery: %s", after)
	}
	if l.refusal != "" {
		notes = append(notes, "a miss refused: "+l.refusal)
	}
	notes = append(notes, fmt.Sprintf("after recovery %d modules refused during the fault asked again, %d files still refused", asked, len(still)))
	unverified := l.unverified
	if goUnverified || afterUnverified {
		unverified++
	}
	recordChaos(t, chaosRow{
		Group:      row.group,
		Fault:      row.name,
		ClientSaw:  fmt.Sprintf("%s; go mod download during the fault: %s, after: %s", l.summary(), during, after),
		Unverified: unverified,
		ChainOK:    chainVerifies(t, r.g),
		Recovery:   recovered,
		Note:       strings.Join(notes, "; "),
	})
}

// TestChaosUpstream: faults between the gateway and its only upstream,
// injected with Toxiproxy under load. What is cached stays served; what
// is not is served whole and verified, or refused with a 5xx, never a
// 404; and it is served again as soon as the fault ends.
func TestChaosUpstream(t *testing.T) {
	w := newToxWorld(t)
	garbage := startToxGarbage(t)
	portal := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) {
		rw.Header().Set("Content-Type", "text/html")
		io.WriteString(rw, "<html><body>Sign in to the guest network to continue.</body></html>\n")
	}))
	t.Cleanup(portal.Close)

	toxic := func(xs ...toxiproxy.Toxic) func(t *testing.T, r *toxRig) {
		return func(t *testing.T, r *toxRig) {
			for _, x := range xs {
				r.proxy.AddToxic(t, x)
			}
		}
	}
	untoxic := func(names ...string) func(t *testing.T, r *toxRig) {
		return func(t *testing.T, r *toxRig) {
			for _, n := range names {
				r.proxy.RemoveToxic(t, n)
			}
		}
	}
	upstreamTo := func(addr string) func(t *testing.T, r *toxRig) {
		return func(t *testing.T, r *toxRig) { r.proxy.SetUpstream(t, addr) }
	}
	origin := strings.TrimPrefix(w.origin.URL, "http://")
	rows := []toxRow{
		{
			name:     "latency 300ms ±50ms each way",
			note:     "every miss slower, none refused",
			slowOnly: true,
			inject: toxic(
				toxiproxy.Toxic{Name: "down", Type: "latency", Attributes: map[string]any{"latency": 300, "jitter": 50}},
				toxiproxy.Toxic{Name: "up", Type: "latency", Stream: "upstream", Attributes: map[string]any{"latency": 300, "jitter": 50}}),
			remove: untoxic("down", "up"),
		},
		{
			name:     "bandwidth 32 KB/s (a zip ≈13 KiB)",
			note:     "a zip takes about 0.4s to arrive; none refused",
			slowOnly: true,
			inject:   toxic(toxiproxy.Toxic{Name: "bw", Type: "bandwidth", Attributes: map[string]any{"rate": 32}}),
			remove:   untoxic("bw"),
		},
		{
			name: "connection reset mid-body (limit_data 2 KiB + reset_peer)",
			note: "each upstream connection cut after 2 KiB of answers (with an RST if opened during the fault, else a FIN): zips always cut, small files when the connection is fresh; cut bodies never stored",
			// A reset_peer that never fires (Spare 1) makes toxiproxy close the
			// connections opened from now on with a reset, not a FIN: so
			// limit_data's cut is an RST.
			inject: toxic(
				toxiproxy.Toxic{Name: "rst", Type: "reset_peer", Spare: 1, Attributes: map[string]any{"timeout": 0}},
				toxiproxy.Toxic{Name: "cut", Type: "limit_data", Attributes: map[string]any{"bytes": 2048}}),
			remove: untoxic("cut", "rst"),
		},
		{
			name:   "upstream never answers (timeout toxic, timeout 0)",
			note:   "a miss waits upstream_header_timeout (2s) for its 504, until the probes' timeouts drain the upstream; then 503 at once",
			inject: toxic(toxiproxy.Toxic{Name: "hang", Type: "timeout", Attributes: map[string]any{"timeout": 0}}),
			remove: untoxic("hang"),
		},
		{
			name:     "slow close (slow_close 2s, both ways)",
			note:     "the upstream keeps its connections alive, so hardly any close happens during a request: no effect expected",
			slowOnly: true,
			inject: toxic(
				toxiproxy.Toxic{Name: "down", Type: "slow_close", Attributes: map[string]any{"delay": 2000}},
				toxiproxy.Toxic{Name: "up", Type: "slow_close", Stream: "upstream", Attributes: map[string]any{"delay": 2000}}),
			remove: untoxic("down", "up"),
		},
		{
			name:   "garbage bytes (upstream replaced by a TCP server answering junk)",
			note:   "answers in turn: random bytes, a bad status line, a bad header, a 200 cut short; each refused 502 and never stored; the probes drain the upstream",
			inject: upstreamTo(garbage),
			remove: upstreamTo(origin),
		},
		{
			name:   "upstream answers 200 with an HTML page to everything (a captive portal)",
			note:   "every .info, .mod, .zip and checksum database answer refused 502 (not JSON, hash mismatch, not signed), and none kept; the probes see 200s, so the upstream stays healthy",
			inject: upstreamTo(strings.TrimPrefix(portal.URL, "http://")),
			remove: upstreamTo(origin),
		},
	}
	for i, row := range rows {
		row.group = "upstream"
		t.Run(row.name, func(t *testing.T) { w.run(t, fmt.Sprintf("upstream%d", i), row) })
	}
}

// startToxGarbage serves junk on 127.0.0.1 until the test ends, and
// returns its address: every connection, once it has sent something, is
// answered with the next of a cycle of garbage answers and closed.
func startToxGarbage(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	answers := []func(rng *rand.Rand) []byte{
		// Random bytes, no HTTP at all.
		func(rng *rand.Rand) []byte { return toxRandomBytes(rng, 512+rng.IntN(4096)) },
		// A status line that is not one.
		func(rng *rand.Rand) []byte {
			return append([]byte("HTTP/1.1 2O0 OK\r\nContent-Length: 16\r\n\r\n"), toxRandomBytes(rng, 16)...)
		},
		// A header that cannot be parsed.
		func(rng *rand.Rand) []byte {
			return append([]byte("HTTP/1.1 200 OK\r\nContent-Length: 16\r\n\x01\x02: \xff\r\n\r\n"), toxRandomBytes(rng, 16)...)
		},
		// A 200 that announces more than it sends.
		func(rng *rand.Rand) []byte {
			return append([]byte("HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n"), toxRandomBytes(rng, 1000)...)
		},
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = map[net.Conn]bool{}
		n     int
	)
	wg.Go(func() {
		for range 1_000_000 {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			answer := answers[n%len(answers)]
			rng := rand.New(rand.NewPCG(uint64(n), 7))
			n++
			mu.Unlock()
			wg.Go(func() {
				defer func() {
					mu.Lock()
					delete(conns, c)
					mu.Unlock()
					c.Close()
				}()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				buf := make([]byte, 4096)
				if _, err := c.Read(buf); err != nil {
					return
				}
				c.Write(answer(rng))
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

func toxRandomBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// TestChaosControlPlane: faults of what the gateway depends on besides a
// healthy upstream: every upstream drained, the checksum database out of
// reach, and the xDS client's connection cut.
func TestChaosControlPlane(t *testing.T) {
	w := newToxWorld(t)
	rows := []toxRow{
		{
			name:   "every upstream drained (the only upstream's route refused)",
			note:   "hits served throughout; misses 502 until the probes and failed fills drain the upstream, then 503",
			inject: func(t *testing.T, r *toxRig) { r.proxy.Disable(t) },
			remove: func(t *testing.T, r *toxRig) { r.proxy.Enable(t) },
			during: func(ctx context.Context, t *testing.T, r *toxRig, l *toxLoad) string {
				start := time.Now()
				for i := 0; i < 100_000 && ctx.Err() == nil; i++ {
					if sum(scrape(t, r.g.Admin), `^modgate_upstream_state\{state="draining",upstream="public"\}$`) == 1 {
						return fmt.Sprintf("drained %v after the route was refused", time.Since(start).Round(10*time.Millisecond))
					}
					time.Sleep(20 * time.Millisecond)
				}
				t.Errorf("the upstream was not drained within %v of its route being refused; log (end):\n%s", toxFault, toxLogTail(r.g.logText(), 30))
				return ""
			},
			after: func(t *testing.T, r *toxRig, l *toxLoad, removed time.Time) string {
				if l.count("miss", http.StatusServiceUnavailable) == 0 {
					t.Errorf("no miss was answered 503 once the upstream was drained: %s", l.summary())
				}
				at, ok := toxLogTime(r.g.logText(), "upstream=public from=draining to=healthy", removed.Add(-10*time.Millisecond))
				if !ok {
					t.Errorf("the upstream is not healthy again after the recovery; log (end):\n%s", toxLogTail(r.g.logText(), 30))
					return ""
				}
				return fmt.Sprintf("healthy again %v after the route was restored", at.Sub(removed).Round(10*time.Millisecond))
			},
		},
		{
			name:      "checksum database unreachable (sumdb_url's route refused)",
			note:      "hits (verified before) served; a cold .info is served (it has no hash to check), a cold .mod or .zip refused 502, never served unverified",
			sumdbDown: true,
			start: func(t *testing.T, w *toxWorld, name string) *toxRig {
				proxy := w.tox.Proxy(t, name, strings.TrimPrefix(w.origin.URL, "http://"))
				return w.newRig(t, proxy, w.gatewayFor(w.origin.URL, fmt.Sprintf("sumdb_url: http://%s/sumdb/%s\n", proxy.Listen, w.origin.SumDB)))
			},
			inject: func(t *testing.T, r *toxRig) { r.proxy.Disable(t) },
			remove: func(t *testing.T, r *toxRig) { r.proxy.Enable(t) },
			after: func(t *testing.T, r *toxRig, l *toxLoad, _ time.Time) string {
				if l.refusal == "" || !strings.Contains(l.refusal, "checksum database") {
					t.Errorf("no cold .mod or .zip was refused with a word about the checksum database: first refusal %q; %s", l.refusal, l.summary())
				}
				return ""
			},
		},
	}
	for i, row := range rows {
		row.group = "control plane"
		t.Run(row.name, func(t *testing.T) { w.run(t, fmt.Sprintf("control%d", i), row) })
	}
	t.Run("xDS client cut and reconnected", func(t *testing.T) { w.xdsRow(t) })
}

// An adsView is what a raw ADS client got on one stream: the first
// CDS answer, which it ACKed.
type adsView struct {
	version  string
	clusters []*clusterv3.Cluster // sorted by name
	ended    chan struct{}        // closed when the stream has ended
	err      error                // why it ended, once ended is closed
}

// adsSubscribe opens an ADS stream on conn as node, subscribes to every
// cluster (a wildcard CDS request, as Envoy sends), and returns the first
// answer once ACKed, or an error if none came within wait. The stream
// stays open, read and discarded, until ctx ends or it is cut; the test's
// cleanup waits for it.
func adsSubscribe(ctx context.Context, t *testing.T, conn *grpc.ClientConn, node string, wait time.Duration) (*adsView, error) {
	sctx, cancel := context.WithCancel(ctx)
	timer := time.AfterFunc(wait, cancel)
	defer timer.Stop()
	stream, err := discoverygrpc.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(sctx, grpc.WaitForReady(true))
	if err != nil {
		cancel()
		return nil, err
	}
	n := &corev3.Node{Id: node}
	if err := stream.Send(&discoverygrpc.DiscoveryRequest{Node: n, TypeUrl: resource.ClusterType}); err != nil {
		cancel()
		return nil, err
	}
	resp, err := stream.Recv()
	if err != nil {
		cancel()
		return nil, err
	}
	if !timer.Stop() {
		cancel()
		return nil, fmt.Errorf("no CDS answer within %v", wait)
	}
	v := &adsView{version: resp.VersionInfo, ended: make(chan struct{})}
	for _, a := range resp.Resources {
		c := new(clusterv3.Cluster)
		if err := a.UnmarshalTo(c); err != nil {
			cancel()
			return nil, fmt.Errorf("CDS resource %s: %w", a.TypeUrl, err)
		}
		v.clusters = append(v.clusters, c)
	}
	slices.SortFunc(v.clusters, func(a, b *clusterv3.Cluster) int { return strings.Compare(a.Name, b.Name) })
	if err := stream.Send(&discoverygrpc.DiscoveryRequest{Node: n, TypeUrl: resource.ClusterType, VersionInfo: resp.VersionInfo, ResponseNonce: resp.Nonce}); err != nil {
		cancel()
		return nil, err
	}
	go func() {
		defer close(v.ended)
		defer cancel()
		for range maxADSResponses {
			if _, err := stream.Recv(); err != nil {
				v.err = err
				return
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-v.ended
	})
	return v, nil
}

// sameSnapshot reports whether a and b hold the same version and clusters.
func (a *adsView) sameSnapshot(b *adsView) bool {
	return a.version == b.version && slices.EqualFunc(a.clusters, b.clusters, func(x, y *clusterv3.Cluster) bool { return proto.Equal(x, y) })
}

func (a *adsView) String() string {
	names := make([]string, len(a.clusters))
	for i, c := range a.clusters {
		names[i] = c.Name
	}
	return fmt.Sprintf("version %s, clusters %s", a.version, strings.Join(names, " "))
}

// xdsRow: a raw ADS client (as Envoy's gateway is one) reaches the
// gateway's xDS listener through Toxiproxy. Its connection is cut (the
// proxy disabled), and for the fault's length every reconnection is reset
// as it sends its first bytes (reset_peer on the client's stream), while
// clients load the data plane. Then the client reconnects: it must get
// the same snapshot (version and clusters) as before, and the gateway
// must not have logged errors, published snapshots, counted NACKs or kept
// goroutines for the cut connections.
func (w *toxWorld) xdsRow(t *testing.T) {
	const node = "modgate-gateway" // the default xds.node_id
	r := w.newRig(t, nil, w.gatewayFor(w.origin.URL, ""))
	px := w.tox.Proxy(t, "xds", r.g.XDS)
	// Envoy's own reconnect backoff starts at 500ms; this client's is
	// shorter, so that the recovery measured is the gateway's.
	conn, err := grpc.NewClient(px.Listen,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 500 * time.Millisecond},
			MinConnectTimeout: 2 * time.Second,
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	before, err := adsSubscribe(ctx, t, conn, node, 10*time.Second)
	if err != nil {
		t.Fatalf("ADS through toxiproxy: %v; log (end):\n%s", err, toxLogTail(r.g.logText(), 30))
	}
	r.client.CloseIdleConnections()
	goroutines := sum(scrape(t, r.g.Admin), `^go_goroutines$`)
	nacks := sum(scrape(t, r.g.Admin), `^modgate_xds_nacks_total`)
	mark := len(r.g.logText())

	// The fault, under load.
	l := newToxLoad()
	lctx, stop := context.WithTimeout(t.Context(), toxFault)
	wg := r.load(lctx, t, l)
	t.Cleanup(wg.Wait) // if the test ends early; its context is done by then
	px.Disable(t)
	cut := time.Now()
	select {
	case <-before.ended:
	case <-time.After(10 * time.Second):
		t.Fatalf("the ADS stream was not cut within 10s of its proxy's disabling")
	}
	cutAfter := time.Since(cut)
	px.AddToxic(t, toxiproxy.Toxic{Name: "rst", Type: "reset_peer", Stream: "upstream", Attributes: map[string]any{"timeout": 0}})
	px.Enable(t)
	attempts, got := 0, 0
	for lctx.Err() == nil && attempts < 10_000 {
		attempts++
		if _, err := adsSubscribe(lctx, t, conn, node, 500*time.Millisecond); err == nil {
			got++
		}
		time.Sleep(100 * time.Millisecond)
	}
	stop()
	wg.Wait()
	if got > 0 {
		t.Fatalf("%d of %d ADS reconnections got through the reset_peer toxic: the fault was not injected", got, attempts)
	}

	// The recovery.
	px.RemoveToxic(t, "rst")
	removed := time.Now()
	limit := chaosDuration(30*time.Second, 2*time.Minute)
	var again *adsView
	for i := 0; i < 10_000 && time.Since(removed) < limit; i++ {
		if again, err = adsSubscribe(ctx, t, conn, node, 2*time.Second); err == nil {
			break
		}
	}
	recovered := time.Duration(-1)
	switch {
	case again == nil:
		t.Errorf("the ADS client got no snapshot within %v of the fault's removal: %v", limit, err)
	case !again.sameSnapshot(before):
		t.Errorf("after reconnecting, the ADS client got %s, want the snapshot it had before: %s", again, before)
	default:
		recovered = time.Since(removed)
	}

	// No trace of an error loop, nor of the cut streams.
	r.client.CloseIdleConnections()
	time.Sleep(200 * time.Millisecond)
	var logged []string
	for line := range strings.Lines(r.g.logText()[mark:]) {
		logged = append(logged, line)
	}
	errs, published, xdsLines := 0, 0, 0
	for _, line := range logged {
		if strings.Contains(line, "level=ERROR") {
			errs++
			t.Errorf("logged during the fault: %s", strings.TrimSpace(line))
		}
		if strings.Contains(line, "xds: snapshot published") {
			published++
		}
		// go-control-plane's lines name the resource types; modgate's own
		// start with "xds:".
		if strings.Contains(line, "type.googleapis.com/envoy") || strings.Contains(line, "xds") {
			xdsLines++
		}
	}
	if published > 0 {
		t.Errorf("%d snapshots were published during the fault, though no upstream changed", published)
	}
	// The recovered stream's answer and watch take a few lines; a loop
	// over the cut streams or the reset connections would take hundreds.
	if xdsLines > 20 {
		t.Errorf("the gateway logged %d lines about xDS during the fault and the recovery (%d reconnection attempts): an error loop?\n%s", xdsLines, attempts, toxLogTail(r.g.logText()[mark:], 30))
	}
	if n := sum(scrape(t, r.g.Admin), `^modgate_xds_nacks_total`); n != nacks {
		t.Errorf("modgate_xds_nacks_total went from %v to %v", nacks, n)
	}
	var now float64
	deadline := time.Now().Add(5 * time.Second)
	for {
		now = sum(scrape(t, r.g.Admin), `^go_goroutines$`)
		if now <= goroutines+10 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if now > goroutines+10 {
		t.Errorf("go_goroutines went from %v before the fault to %v after it: the cut streams left goroutines behind", goroutines, now)
	}
	if l.count("hit", http.StatusOK) == 0 || l.other("hit", http.StatusOK) > 0 || l.other("miss", http.StatusOK) > 0 {
		t.Errorf("the data plane, during the xDS fault: %s; want every answer a 200", l.summary())
	}
	r.checkAudit(t, l)
	for _, p := range l.problems {
		t.Log(p)
	}
	recordChaos(t, chaosRow{
		Group: "control plane",
		Fault: "xDS client's connection cut, reconnections reset (reset_peer) for the fault's length",
		ClientSaw: fmt.Sprintf("ADS stream ended %v after the cut (%v); %d reconnection attempts failed; after: %s, the same as before; data plane: %s",
			cutAfter.Round(100*time.Microsecond), before.err, attempts, again, l.summary()),
		Unverified: l.unverified,
		ChainOK:    chainVerifies(t, r.g),
		Recovery:   recovered,
		Note: fmt.Sprintf("the gateway logged %d lines during the fault and the recovery (%d about xDS, %d errors); no snapshot published, no NACK counted; goroutines %v before, %v after; the client's reconnect backoff is at most 500ms",
			len(logged), xdsLines, errs, goroutines, now),
	})
}
