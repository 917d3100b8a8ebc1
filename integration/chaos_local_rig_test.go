package integration

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modgate/modgate/goproxy"
	"github.com/modgate/modgate/integration/testproxy"
)

// The rig of the local fault rows (chaos_local_test.go): modules large
// enough to fill a small filesystem, a slow upstream, a gateway on a
// chosen cache directory and audit file, tmpfs mounts, and a load whose
// every answer is checked against the upstream's bytes.

// chaosModule builds path@v1.0.0 with a file of size random bytes. The
// zip stores its files without compression, so it is about size bytes
// and costs no CPU to build: a module zip need not be deflated.
func chaosModule(tb testing.TB, path string, size int) *testproxy.Module {
	tb.Helper()
	var seed [32]byte
	copy(seed[:], path)
	rng := rand.NewChaCha8(seed)
	data := make([]byte, size)
	rng.Read(data)
	m := &testproxy.Module{
		Path:    path,
		Version: "v1.0.0",
		Time:    time.Date(2024, time.January, 1, 0, 0, 0, 0, time.UTC),
		Mod:     []byte("module " + path + "\n\ngo 1.21\n"),
	}
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, f := range []struct {
		name string
		data []byte
	}{{"go.mod", m.Mod}, {"blob.bin", data}} {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: path + "@v1.0.0/" + f.name, Method: zip.Store})
		if err != nil {
			tb.Fatal(err)
		}
		if _, err := w.Write(f.data); err != nil {
			tb.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		tb.Fatal(err)
	}
	m.Zip = buf.Bytes()
	info, err := json.Marshal(struct {
		Version string
		Time    time.Time
	}{m.Version, m.Time})
	if err != nil {
		tb.Fatal(err)
	}
	m.Info = info
	return m
}

// chaosModules builds n modules example.com/chaos/<name>NN of size bytes each.
func chaosModules(tb testing.TB, name string, n, size int) []*testproxy.Module {
	tb.Helper()
	mods := make([]*testproxy.Module, n)
	for i := range mods {
		mods[i] = chaosModule(tb, fmt.Sprintf("example.com/chaos/%s%02d", name, i), size)
	}
	return mods
}

// A chaosArtifact is one request path and the upstream's bytes for it.
type chaosArtifact struct {
	path string
	want []byte
}

// chaosZips returns the zips of mods; chaosArtifacts returns their .info, .mod
// and .zip.
func chaosZips(mods []*testproxy.Module) []chaosArtifact {
	var arts []chaosArtifact
	for _, m := range mods {
		arts = append(arts, chaosArtifact{m.Target(goproxy.KindZip), m.Zip})
	}
	return arts
}

func chaosArtifacts(mods []*testproxy.Module) []chaosArtifact {
	var arts []chaosArtifact
	for _, m := range mods {
		arts = append(arts,
			chaosArtifact{m.Target(goproxy.KindInfo), m.Info},
			chaosArtifact{m.Target(goproxy.KindMod), m.Mod},
			chaosArtifact{m.Target(goproxy.KindZip), m.Zip})
	}
	return arts
}

// A slowUpstream is a testproxy behind a reverse proxy that can send
// zips slowly, so that a fill is still in flight when a fault strikes.
type slowUpstream struct {
	*testproxy.Server
	URL string // the slow front's base URL, for the gateway's config

	pause    atomic.Int64 // nanoseconds before each chunk of a zip; 0: full speed
	zipBytes atomic.Int64 // zip bytes sent so far
}

// slowChunk is what a slow zip is sent in.
const slowChunk = 32 << 10

// startSlowUpstream serves mods; zips go at slowChunk bytes per pause.
func startSlowUpstream(t *testing.T, mods []*testproxy.Module, pause time.Duration) *slowUpstream {
	t.Helper()
	s := &slowUpstream{Server: testproxy.Start(t, mods)}
	s.pause.Store(int64(pause))
	target, err := url.Parse(s.Server.URL)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.FlushInterval = -1
	rp.ErrorLog = log.New(io.Discard, "", 0)
	rp.ModifyResponse = func(resp *http.Response) error {
		if strings.HasSuffix(resp.Request.URL.Path, ".zip") && resp.StatusCode == http.StatusOK {
			resp.Body = &slowBody{r: resp.Body, u: s}
		}
		return nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: rp, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	s.URL = "http://" + ln.Addr().String()
	return s
}

// setPause changes how slowly zips go from now on.
func (s *slowUpstream) setPause(d time.Duration) { s.pause.Store(int64(d)) }

type slowBody struct {
	r io.ReadCloser
	u *slowUpstream
}

func (b *slowBody) Read(p []byte) (int, error) {
	if d := time.Duration(b.u.pause.Load()); d > 0 {
		time.Sleep(d)
		p = p[:min(len(p), slowChunk)]
	}
	n, err := b.r.Read(p)
	b.u.zipBytes.Add(int64(n))
	return n, err
}

func (b *slowBody) Close() error { return b.r.Close() }

// chaosConfig is the gateway config for the upstream at base (up, or a
// slow front of it), with extra YAML appended.
func chaosConfig(base string, up *testproxy.Server, extra string) string {
	return fmt.Sprintf("upstreams:\n  - name: public\n    url: %s\nsumdb: [%s]\nsumdb_key: %s\n%s", base, up.SumDB, up.VerifierKey, extra)
}

// startChaosGateway starts modgate serve on cacheDir with its audit log
// at auditPath, so that a restart finds both again.
func startChaosGateway(t *testing.T, config, cacheDir, auditPath string) *gatewayProc {
	t.Helper()
	g := startModgate(t, config, "--cache-dir", cacheDir, "--audit", auditPath)
	g.audit = auditPath
	return g
}

// needRootToMount skips t unless it runs as root, which mounting needs; in CI
// (which runs as root) it fails instead, so the rows cannot silently go.
func needRootToMount(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatal("this fault needs root to mount a tmpfs, and CI runs as root: it must not be skipped there")
	}
	t.Skip("needs root to mount a tmpfs (CI runs it as root)")
}

// mountTmpfs mounts a tmpfs of size (e.g. "16m") on dir, creating dir.
// The cleanup, registered now so that it runs after the cleanups of
// whatever is started later on it (a gateway), unmounts it: lazily if it
// is still busy.
func mountTmpfs(t *testing.T, dir, size string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0755", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount -t tmpfs on %s: %v\n%s", dir, err, out)
	}
	t.Cleanup(func() {
		out, err := exec.Command("umount", dir).CombinedOutput()
		if err == nil {
			return
		}
		t.Logf("umount %s: %v: %s; unmounting lazily", dir, err, bytes.TrimSpace(out))
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Errorf("umount -l %s: %v\n%s", dir, err, out)
		}
	})
}

// remountFS changes the mount options of the filesystem on dir ("ro",
// "rw", "size=64m"). Linux refuses to make a filesystem read-only while
// a file on it is open for writing (EBUSY): under load, a fill may have
// one open for a moment, so remountFS tries again until within.
func remountFS(t *testing.T, dir, opts string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		out, err := exec.Command("mount", "-o", "remount,"+opts, dir).CombinedOutput()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("mount -o remount,%s %s: %v\n%s", opts, dir, err, out)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A chaosTally counts what the clients of a load saw.
type chaosTally struct {
	mu   sync.Mutex
	seen map[string]int // "200", "502", "timeout", "error", "200 cut short"
	// bad is the number of 200 answers read whole whose bytes differ from
	// the upstream's: unverified or partial bytes served as whole.
	bad      int
	evidence []string          // of bad answers, and the first of each status
	reasons  map[string]string // status → the first line of its first body
	good     int               // 200 answers with the upstream's bytes
	total    int               // requests made
	answered int               // requests answered: a status came back
}

func newChaosTally() *chaosTally {
	return &chaosTally{seen: map[string]int{}, reasons: map[string]string{}}
}

// get asks for a and records the outcome; it reports whether the answer
// was a 200 with the upstream's bytes, and the X-Modgate-Cache header.
func (tl *chaosTally) get(ctx context.Context, client *http.Client, base string, a chaosArtifact) (ok bool, cache string) {
	tl.mu.Lock()
	tl.total++
	tl.mu.Unlock()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+a.path, nil)
	if err != nil {
		tl.note("error")
		return false, ""
	}
	resp, err := client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return false, "" // the load ended: not something a client saw
		}
		tl.note(chaosErrorKind(err))
		return false, ""
	}
	defer resp.Body.Close()
	tl.mu.Lock()
	tl.answered++
	tl.mu.Unlock()
	cache = resp.Header.Get("X-Modgate-Cache")
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		code := strconv.Itoa(resp.StatusCode)
		if resp.StatusCode == http.StatusTooManyRequests && bytes.Contains(body, []byte("too many cache misses")) {
			// The miss budget: clients that keep missing are rationed, a
			// fault or not. Not an answer about the module.
			code = chaosBudget
		}
		tl.mu.Lock()
		if tl.seen[code] == 0 {
			tl.reasons[code] = chaosFirstLine(body)
			tl.evidence = append(tl.evidence, fmt.Sprintf("first %s: %s: %q", resp.Status, a.path, chaosFirstLine(body)))
		}
		tl.seen[code]++
		tl.mu.Unlock()
		return false, cache
	}
	body, err := io.ReadAll(resp.Body)
	switch {
	case err != nil && ctx.Err() != nil:
		return false, cache
	case err != nil && chaosErrorKind(err) == "timeout":
		tl.note("200, then timeout") // the client's own timeout, mid-body
		return false, cache
	case err != nil:
		// The client knows the body is not whole: not served as whole.
		tl.note("200 cut short")
		return false, cache
	case !bytes.Equal(body, a.want):
		tl.mu.Lock()
		tl.bad++
		tl.evidence = append(tl.evidence, fmt.Sprintf("%s: 200 with %d bytes (cache %q) that differ from the upstream's %d", a.path, len(body), cache, len(a.want)))
		tl.mu.Unlock()
		return false, cache
	}
	tl.mu.Lock()
	tl.good++
	tl.seen["200"]++
	tl.mu.Unlock()
	return true, cache
}

// getRationed is get for a client that heeds the miss budget: asked again
// a second later while the budget refuses it, up to 10 times. After a
// fault, the clients that kept missing through it may have spent their
// budget; the artifacts must still come whole once it refills.
func (tl *chaosTally) getRationed(ctx context.Context, client *http.Client, base string, a chaosArtifact) (ok bool, cache string) {
	for range 10 {
		refused := tl.count(chaosBudget)
		if ok, cache = tl.get(ctx, client, base, a); ok || tl.count(chaosBudget) == refused {
			return ok, cache
		}
		select {
		case <-ctx.Done():
			return false, cache
		case <-time.After(time.Second):
		}
	}
	return false, cache
}

func (tl *chaosTally) note(what string) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	tl.seen[what]++
}

// reason returns the first line of the first answer with status code.
func (tl *chaosTally) reason(code string) string {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	return tl.reasons[code]
}

// count returns how many answers of kind were seen.
func (tl *chaosTally) count(kind string) int {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	return tl.seen[kind]
}

// chaosBudget is the kind of a 429 from the miss budget.
const chaosBudget = "429 budget"

// clientErrors4xx counts the 4xx answers other than the miss budget's:
// an outage must never be one.
func (tl *chaosTally) clientErrors4xx() int {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	n := 0
	for k, v := range tl.seen {
		if len(k) == 3 && k[0] == '4' {
			n += v
		}
	}
	return n
}

// String is what the clients saw, e.g. "200×812, 502×40, timeout×3".
func (tl *chaosTally) String() string {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	var keys []string
	for k := range tl.seen {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s×%d", k, tl.seen[k]))
	}
	if tl.bad > 0 {
		parts = append(parts, fmt.Sprintf("WRONG BYTES×%d", tl.bad))
	}
	if len(parts) == 0 {
		return "nothing"
	}
	return strings.Join(parts, ", ")
}

func (tl *chaosTally) log(t *testing.T) {
	t.Helper()
	tl.mu.Lock()
	defer tl.mu.Unlock()
	for _, e := range tl.evidence {
		t.Log(e)
	}
}

func chaosErrorKind(err error) string {
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() {
		return "timeout"
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || strings.Contains(err.Error(), "connection reset") {
		return "connection lost"
	}
	if strings.Contains(err.Error(), "connection refused") {
		return "connection refused"
	}
	return "error"
}

func chaosFirstLine(b []byte) string {
	s, _, _ := strings.Cut(string(b), "\n")
	return s
}

// runChaosLoad runs workers clients against base until stop is closed or each
// has made maxEach requests, each asking for arts in turn from its own
// offset. Stop is only looked at between requests, so every request made
// is answered or fails on its own. It returns at once; wait waits for
// the clients.
func runChaosLoad(ctx context.Context, stop <-chan struct{}, tl *chaosTally, client *http.Client, base func() string, workers, maxEach int, arts []chaosArtifact) (wait func()) {
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range maxEach {
				select {
				case <-stop:
					return
				default:
				}
				if ctx.Err() != nil {
					return
				}
				tl.get(ctx, client, base(), arts[(w*7+i)%len(arts)])
			}
		})
	}
	return wg.Wait
}

// chaosClient is an HTTP client for a load of n workers, with timeout.
func chaosClient(n int, timeout time.Duration) *http.Client {
	return &http.Client{
		Transport: &http.Transport{MaxIdleConnsPerHost: n, DisableCompression: true},
		Timeout:   timeout,
	}
}

// firstGood asks for a until it gets the upstream's bytes, at most for
// within, and returns how long that took from since; it fails t if it
// never does.
func firstGood(t *testing.T, tl *chaosTally, client *http.Client, base string, a chaosArtifact, since time.Time, within time.Duration) time.Duration {
	t.Helper()
	deadline := since.Add(within)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		ok, _ := tl.get(ctx, client, base, a)
		cancel()
		if ok {
			return time.Since(since)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no good answer for %s within %s of the fault's removal; clients saw %s", a.path, within, tl)
	return 0
}

// fillFS writes a file at name until its filesystem is full and
// returns how many bytes it took.
func fillFS(t *testing.T, name string) int64 {
	t.Helper()
	f, err := os.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	var n int64
	for range 1 << 16 { // bounded: 4 GiB
		m, err := f.Write(buf)
		n += int64(m)
		if err != nil {
			break
		}
	}
	return n
}

// cacheTmpFiles lists what is left in a cache directory's tmp/.
func cacheTmpFiles(t *testing.T, cacheDir string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(cacheDir, "tmp"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}
