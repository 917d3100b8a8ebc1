package integration

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/modgate/modgate/integration/testproxy"
)

// A peerServer is one server under load.
type peerServer struct {
	name string // "nginx", "athens", "goproxy" or "modgate"
	url  string // base URL, http://127.0.0.1:PORT
	pids []int  // its processes, whose CPU time and memory count
}

// peerColdFill requests every artifact of the fill from s, one at a time
// over one kept-open connection, and returns the time it took. It fails tb
// if an answer is not a 200 with the bytes the upstream serves.
func peerColdFill(tb testing.TB, s *peerServer, t peerTree) time.Duration {
	tb.Helper()
	tr := &http.Transport{MaxIdleConnsPerHost: 1, MaxConnsPerHost: 1, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	start := time.Now()
	for _, a := range t.fill {
		resp, err := client.Get(s.url + a.path)
		if err != nil {
			tb.Fatalf("%s: cold fill: %v", s.name, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			tb.Fatalf("%s: cold fill: GET %s: %v %s\n%.300s", s.name, a.path, err, resp.Status, body)
		}
		if a.want != nil && !bytes.Equal(body, a.want) {
			tb.Fatalf("%s: cold fill: GET %s: %d bytes that differ from the upstream's %d", s.name, a.path, len(body), len(a.want))
		}
	}
	return time.Since(start)
}

// startGoproxy runs goproxy's server command on a free loopback port, its
// cache in a temporary directory, fetching from up only (GOPROXY) and
// verifying what it fetches against up's checksum database (GOSUMDB, which
// it reaches through up, as the go command would).
func startGoproxy(tb testing.TB, bin string, up *testproxy.Server) *peerServer {
	tb.Helper()
	dir := tb.TempDir()
	addr := peerFreeAddr(tb)
	env := append(peerGoEnv(tb, dir),
		"GOPROXY="+up.URL,
		"GOSUMDB="+up.VerifierKey,
	)
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o755); err != nil {
		tb.Fatal(err)
	}
	cmd := startPeerProc(tb, "goproxy", dir, env, bin, "server",
		"--address", addr,
		"--cacher-dir", filepath.Join(dir, "cache"),
		"--temp-dir", filepath.Join(dir, "tmp"),
	)
	url := "http://" + addr
	waitPeer(tb, "goproxy", url+"/healthz", dir)
	return &peerServer{name: "goproxy", url: url, pids: []int{cmd.Process.Pid}}
}

// startAthens runs Athens's proxy on a free loopback port with its disk
// storage in a temporary directory. Athens fills a miss by running
// `go mod download` (and answers @v/list by `go list -m -versions`: its
// default "strict" network mode) with GOPROXY set to up and GOSUMDB to
// up's checksum database; the rest is Athens's defaults (config.dev.toml),
// but for the log at info (one line per request, into a file), no proxied
// checksum database (SumDBs, unused here) and a 10s shutdown.
func startAthens(tb testing.TB, bin string, up *testproxy.Server) *peerServer {
	tb.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		tb.Fatal(err)
	}
	dir := tb.TempDir()
	addr := peerFreeAddr(tb)
	for _, d := range []string{"storage", "goget"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			tb.Fatal(err)
		}
	}
	goEnv := []string{
		"GOPROXY=" + up.URL,
		"GOSUMDB=" + up.VerifierKey,
		"GONOSUMDB=", "GOPRIVATE=", "GONOPROXY=", "GOINSECURE=",
		"GOFLAGS=-modcacherw", // so that Athens can remove its GOPATHs
		"GOTOOLCHAIN=local",
		"GOENV=off",
	}
	quoted := make([]string, len(goEnv))
	for i, e := range goEnv {
		quoted[i] = strconv.Quote(e)
	}
	conf := fmt.Sprintf(`GoBinary = %q
GoEnv = "development"
GoBinaryEnvVars = [%s]
GoGetWorkers = 10
GoGetDir = %q
ProtocolWorkers = 30
LogLevel = "info"
LogFormat = "plain"
CloudRuntime = "none"
Port = %q
StorageType = "disk"
GlobalEndpoint = %q
SumDBs = []
NoSumPatterns = []
DownloadMode = "sync"
NetworkMode = "strict"
SingleFlightType = "memory"
IndexType = "none"
StatsExporter = "prometheus"
TraceExporter = ""
Timeout = 300
StashTimeout = 600
ShutdownTimeout = 10
RobotsFile = "robots.txt"
HomeTemplatePath = %q

[Storage]
  [Storage.Disk]
    RootPath = %q
`, goBin, strings.Join(quoted, ", "), filepath.Join(dir, "goget"), addr, up.URL,
		filepath.Join(dir, "home.html"), filepath.Join(dir, "storage"))
	confFile := filepath.Join(dir, "athens.toml")
	if err := os.WriteFile(confFile, []byte(conf), 0o600); err != nil {
		tb.Fatal(err)
	}
	cmd := startPeerProc(tb, "athens", dir, peerGoEnv(tb, dir), bin, "-config_file", confFile)
	url := "http://" + addr
	waitPeer(tb, "athens", url+"/healthz", dir)
	return &peerServer{name: "athens", url: url, pids: []int{cmd.Process.Pid}}
}

// peerGoEnv returns the environment of a peer: PATH, and a HOME in dir
// with the go command's telemetry off (otherwise the go command a peer
// runs leaves a process behind that writes below HOME), with nothing of
// this machine's Go configuration.
func peerGoEnv(tb testing.TB, dir string) []string {
	tb.Helper()
	home := filepath.Join(dir, "home")
	mode := filepath.Join(home, ".config", "go", "telemetry", "mode")
	if err := os.MkdirAll(filepath.Dir(mode), 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(mode, []byte("off"), 0o644); err != nil {
		tb.Fatal(err)
	}
	return []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + home,
		"GOENV=off",
		"GOFLAGS=-modcacherw",
		"GOTOOLCHAIN=local",
		"GOPATH=" + filepath.Join(dir, "gopath"),
		"GOMODCACHE=" + filepath.Join(dir, "gopath", "pkg", "mod"),
		"GOCACHE=" + filepath.Join(dir, "gocache"),
		"GONOSUMDB=", "GOPRIVATE=", "GONOPROXY=", "GOINSECURE=",
	}
}

// startPeerProc starts bin with args in dir, its output in dir/log, and
// stops it at the end of the benchmark: SIGTERM, then SIGKILL after 15s.
func startPeerProc(tb testing.TB, name, dir string, env []string, bin string, args ...string) *exec.Cmd {
	tb.Helper()
	logFile, err := os.Create(filepath.Join(dir, "log"))
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = env
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	if err := cmd.Start(); err != nil {
		logFile.Close()
		tb.Fatalf("starting %s: %v", name, err)
	}
	tb.Cleanup(func() {
		defer logFile.Close()
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			tb.Errorf("%s did not stop within 15s of SIGTERM; killing it", name)
			cmd.Process.Kill()
			<-done
		}
	})
	return cmd
}

// waitPeer waits up to 30s for url to answer 200, failing tb with the
// server's log otherwise.
func waitPeer(tb testing.TB, name, url, dir string) {
	tb.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusNoContent {
				return
			}
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "log"))
			tb.Fatalf("%s not ready at %s after 30s: %v; log:\n%s", name, url, err, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// peerFreeAddr returns a loopback address with a port free a moment ago,
// for a server that cannot be told to pick one.
func peerFreeAddr(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// peerNginxPIDs returns the processes of the nginx that startNginx just
// started: the nginx child of this process (the master) and its children
// (the workers), once the workers are up.
func peerNginxPIDs(tb testing.TB) []int {
	tb.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		for _, master := range peerChildPIDs(tb, os.Getpid(), "nginx") {
			if workers := peerChildPIDs(tb, master, "nginx"); len(workers) > 0 {
				return append([]int{master}, workers...)
			}
		}
	}
	tb.Fatal("cannot find nginx's master and worker processes")
	return nil
}

// peerChildPIDs returns the processes whose parent is ppid and whose
// command name is comm.
func peerChildPIDs(tb testing.TB, ppid int, comm string) []int {
	tb.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		tb.Fatal(err)
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // gone
		}
		s := string(data)
		open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || end < open || end+2 > len(s) {
			continue
		}
		f := strings.Fields(s[end+2:]) // state, ppid, ...
		if len(f) > 1 && s[open+1:end] == comm && f[1] == strconv.Itoa(ppid) {
			pids = append(pids, pid)
		}
	}
	return pids
}
