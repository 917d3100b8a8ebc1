//go:build unix

package vcs

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// fakeGo writes a shell script standing in for the go command and
// returns its path. It skips t if there is no /bin/sh.
func fakeGo(t testing.TB, script string) string {
	t.Helper()
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skipf("no /bin/sh: %v", err)
	}
	file := filepath.Join(t.TempDir(), "go")
	if err := os.WriteFile(file, []byte("#!/bin/sh\n"+script), 0o755); err != nil {
		t.Fatal(err)
	}
	return file
}

// newOrigin returns an origin for cfg, with a temporary CacheDir unless
// set and the log captured in logs, closed at t's cleanup.
func newOrigin(t testing.TB, cfg Config) (*Origin, *syncBuffer) {
	t.Helper()
	if cfg.CacheDir == "" {
		cfg.CacheDir = t.TempDir()
	}
	logs := &syncBuffer{}
	cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	o, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { o.Close() })
	return o, logs
}

// serve sends method target to h in process, with ctx, and returns the
// recorded response.
func serve(ctx context.Context, h http.Handler, method, target string) *httptest.ResponseRecorder {
	req := httptest.NewRequestWithContext(ctx, method, target, nil)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// groupGone reports whether no live process of the process group pgid
// is left within a few seconds: killed processes take a moment to die,
// and orphans to be reaped, so zombies count as gone.
func groupGone(pgid int) bool {
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if syscall.Kill(-pgid, 0) == syscall.ESRCH || onlyZombies(pgid) {
			return true
		}
	}
	return false
}

// onlyZombies reports whether every process of the group pgid listed in
// /proc is a zombie (false without /proc).
func onlyZombies(pgid int) bool {
	stats, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil || len(stats) == 0 {
		return false
	}
	for _, file := range stats {
		data, err := os.ReadFile(file)
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...; comm may contain spaces.
		i := strings.LastIndexByte(string(data), ')')
		if i < 0 {
			continue
		}
		fields := strings.Fields(string(data[i+1:]))
		if len(fields) > 2 && fields[2] == strconv.Itoa(pgid) && fields[0] != "Z" {
			return false
		}
	}
	return true
}

// recordGroups makes o record the process group of every child it starts.
func recordGroups(o *Origin) func() []int {
	var mu sync.Mutex
	var pgids []int
	o.mu.Lock()
	o.started = func(pgid int) {
		mu.Lock()
		defer mu.Unlock()
		pgids = append(pgids, pgid)
	}
	o.mu.Unlock()
	return func() []int {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(pgids)
	}
}

// TestEnvIsolation proves that nothing of modgate's environment reaches
// the child but PATH: a wrapper around the real go command dumps its
// environment and working directory, then runs the real go command.
func TestEnvIsolation(t *testing.T) {
	realGo, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("no go command: %v", err)
	}
	t.Setenv("MODGATE_SENTINEL", "leaked-sentinel")
	t.Setenv("GOFLAGS", "-mod=vendor")
	t.Setenv("GOPROXY", "http://127.0.0.1:1/leak")
	t.Setenv("GIT_SSH_COMMAND", "leak")
	t.Setenv("NETRC", "/leak/netrc")

	f := newFixture(t, Config{})
	dump := filepath.Join(t.TempDir(), "env")
	wrapper := fakeGo(t, fmt.Sprintf("env > %s\npwd >> %s\nexec %s \"$@\"\n", dump, dump, realGo))
	netrc := f.git.Netrc(t, "")
	cacheDir := t.TempDir()
	o, _ := newOrigin(t, Config{Go: wrapper, CacheDir: cacheDir, Netrc: netrc, Env: append(f.git.Env(), "GOPRIVATE=corp.example.com")})
	lib := f.git.Domain + "/lib"
	if rec := serve(t.Context(), o, "GET", "/"+lib+"/@v/list"); rec.Code != 200 || rec.Body.String() != "v1.0.0\nv1.1.0\nv1.2.0\nv1.2.1\n" {
		t.Fatalf("GET list = %d %q", rec.Code, rec.Body)
	}
	data, err := os.ReadFile(dump)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	pwd, lines := lines[len(lines)-1], lines[:len(lines)-1]
	got := make(map[string]string)
	for _, kv := range lines {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "PWD", "OLDPWD", "SHLVL", "_": // set by the shell
		default:
			got[k] = v
		}
	}
	home := filepath.Join(cacheDir, "home")
	want := map[string]string{
		"PATH":                os.Getenv("PATH"),
		"HOME":                home,
		"XDG_CONFIG_HOME":     filepath.Join(home, ".config"),
		"TMPDIR":              filepath.Join(cacheDir, "tmp"),
		"LC_ALL":              "C",
		"NETRC":               netrc,
		"GOPROXY":             "direct",
		"GOSUMDB":             "off",
		"GONOSUMDB":           "",
		"GONOPROXY":           "",
		"GOFLAGS":             "-mod=mod -modcacherw",
		"GOTOOLCHAIN":         "local",
		"GOMODCACHE":          filepath.Join(cacheDir, "mod"),
		"GOPATH":              filepath.Join(cacheDir, "gopath"),
		"GOCACHE":             filepath.Join(cacheDir, "gocache"),
		"GOENV":               "off",
		"GOWORK":              "off",
		"GO111MODULE":         "on",
		"GOVCS":               "*:git",
		"GIT_TERMINAL_PROMPT": "0",
		"GIT_CONFIG_NOSYSTEM": "1",
		"GIT_CONFIG_GLOBAL":   filepath.Join(home, ".gitconfig"),
		"GOPRIVATE":           "corp.example.com",
	}
	for _, kv := range f.git.Env() { // overrides GIT_ALLOW_PROTOCOL=https
		k, v, _ := strings.Cut(kv, "=")
		want[k] = v
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("child's %s = %q, want %q", k, got[k], v)
		}
	}
	for k, v := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("child has %s=%q, which the origin does not set", k, v)
		}
	}
	if strings.Contains(string(data), "leak") {
		t.Errorf("modgate's environment leaked into the child:\n%s", data)
	}
	if want := filepath.Join(cacheDir, "work"); pwd != want {
		t.Errorf("child's working directory = %q, want %q", pwd, want)
	}
	if target, err := os.Readlink(filepath.Join(home, ".netrc")); err != nil || target != netrc {
		t.Errorf("$HOME/.netrc links to %q (%v), want %q", target, err, netrc)
	}
	if data, err := os.ReadFile(filepath.Join(home, ".gitconfig")); err != nil || len(data) != 0 {
		t.Errorf("$HOME/.gitconfig = %q, %v; want empty", data, err)
	}
}

// TestChildOutput checks what becomes of a go command's output: errors
// are cleaned and redacted, and output beyond the bound is discarded.
func TestChildOutput(t *testing.T) {
	netrc := filepath.Join(t.TempDir(), "netrc")
	const password = "s3cret-Pa55word"
	if err := os.WriteFile(netrc, []byte("machine git.corp.example.com login bot password "+password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const token = "tok-123456789"
	env := []string{
		"GIT_CONFIG_COUNT=1",
		"GIT_CONFIG_KEY_0=http.https://git.corp.example.com/.extraheader",
		"GIT_CONFIG_VALUE_0=Authorization: Bearer " + token,
		"HTTPS_PROXY=http://proxyuser:proxy-Pass-42@proxy.corp.example.com:3128",
	}
	tests := []struct {
		name   string
		script string
		status int
		body   string
	}{
		{
			name: "credentials in git's message",
			script: `echo "go: corp.example.com/lib@v1.0.0: git fetch -f https://bot:` + password + `@git.corp.example.com/lib.git in /x: exit status 128:" >&2
printf "\tfatal: unable to access 'https://bot:` + password + `@git.corp.example.com/lib.git/': token ` + token + `, proxy-Pass-42, \001 control\n" >&2
exit 1
`,
			status: 502,
			body:   "corp.example.com/lib@v1.0.0: git fetch -f https://REDACTED@git.corp.example.com/lib.git in /x: exit status 128: fatal: unable to access 'https://REDACTED@git.corp.example.com/lib.git/': token REDACTED, REDACTED,  control\n",
		},
		{
			name:   "authentication",
			script: "echo \"go: corp.example.com/lib@v1.0.0: fatal: Authentication failed for 'https://git.corp.example.com/lib.git/' ` + password + `\" >&2\nexit 1\n",
			status: 502,
			body:   "the Git host refused modgate's credentials for corp.example.com/lib\n",
		},
		{
			name:   "long stdout",
			script: "head -c 3000000 /dev/zero\nexit 0\n",
			status: 502,
			body:   "the go command printed more than 1 MiB\n",
		},
		{
			name:   "long stderr",
			script: "head -c 3000000 /dev/zero | tr '\\0' x >&2\nexit 1\n",
			status: 502,
			body:   strings.Repeat("x", maxLine) + "\n",
		},
		{
			name:   "silent failure",
			script: "exit 3\n",
			status: 502,
			body:   "the go command failed without a message\n",
		},
		{
			name:   "garbage",
			script: "echo '{\"Version\": 1'\n",
			status: 502,
			body:   "unreadable output from the go command: unexpected end of JSON input\n",
		},
		{
			name:   "invalid version from the go command",
			script: "echo '{\"Version\": \"v2.0.0\", \"Time\": \"2024-01-01T00:00:00Z\"}'\n",
			status: 502,
			body:   "the go command resolved corp.example.com/lib to an invalid version \"v2.0.0\"\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, logs := newOrigin(t, Config{Go: fakeGo(t, tt.script), Netrc: netrc, Env: env})
			rec := serve(t.Context(), o, "GET", "/corp.example.com/lib/@v/main.info")
			if rec.Code != tt.status || rec.Body.String() != tt.body {
				t.Errorf("GET = %d %q, want %d %q", rec.Code, rec.Body, tt.status, tt.body)
			}
			for _, secret := range []string{password, token, "proxy-Pass-42"} {
				if strings.Contains(rec.Body.String(), secret) || strings.Contains(logs.String(), secret) {
					t.Errorf("secret %q in body %q or log:\n%s", secret, rec.Body, logs)
				}
			}
		})
	}
}

// TestConcurrencyBound runs more distinct fetches than MaxConcurrent at
// once and checks that no more children ran at a time, and that a
// request waiting for a slot gives up when its context ends.
func TestConcurrencyBound(t *testing.T) {
	dir := t.TempDir()
	running := filepath.Join(dir, "running")
	if err := os.Mkdir(running, 0o777); err != nil {
		t.Fatal(err)
	}
	log := filepath.Join(dir, "log")
	script := fmt.Sprintf(`mkdir %[1]s/$$
echo "$(ls %[1]s | wc -l) $*" >> %[2]s
sleep 0.3
rmdir %[1]s/$$
echo '{"Version": "v1.0.0", "Time": "2024-01-01T00:00:00Z"}'
`, running, log)
	const bound = 2
	o, _ := newOrigin(t, Config{Go: fakeGo(t, script), MaxConcurrent: bound})

	var wg sync.WaitGroup
	for i := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			target := fmt.Sprintf("/corp.example.com/m%d/@latest", i)
			if rec := serve(t.Context(), o, "GET", target); rec.Code != 200 {
				t.Errorf("GET %s = %d %q", target, rec.Code, rec.Body)
			}
		}()
	}
	wg.Wait()
	data, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	peak := 0
	for _, line := range lines {
		n, err := strconv.Atoi(strings.Fields(line)[0])
		if err != nil {
			t.Fatalf("log line %q", line)
		}
		peak = max(peak, n)
	}
	if len(lines) != 6 || peak > bound {
		t.Errorf("%d children, at most %d at once; want 6, at most %d:\n%s", len(lines), peak, bound, data)
	}

	// One slot, taken; a second request gives up while it waits.
	o1, _ := newOrigin(t, Config{Go: fakeGo(t, script), MaxConcurrent: 1})
	done := make(chan int)
	go func() { done <- serve(t.Context(), o1, "GET", "/corp.example.com/slow/@latest").Code }()
	for o1.runningChildren() == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	rec := serve(ctx, o1, "GET", "/corp.example.com/waiting/@latest")
	if rec.Code != 504 || time.Since(start) > 2*time.Second {
		t.Errorf("waiting request = %d %q after %v, want 504 after 50ms", rec.Code, rec.Body, time.Since(start))
	}
	if code := <-done; code != 200 {
		t.Errorf("request holding the slot = %d, want 200", code)
	}
	if data, _ := os.ReadFile(log); strings.Contains(string(data), "waiting") {
		t.Errorf("the request that gave up still ran a child:\n%s", data)
	}
}

// runningChildren returns how many slots are taken.
func (o *Origin) runningChildren() int {
	return len(o.slots)
}

// TestCoalesce sends 50 concurrent requests for one cold zip and checks
// that they started one go command, which asked the Git server once.
func TestCoalesce(t *testing.T) {
	f := newFixture(t, Config{})
	pgids := recordGroups(f.o)
	lib := f.git.Domain + "/lib"
	discovery := "http://" + f.git.Domain + "/lib"
	release := f.git.Hang(func(key string) bool { return key == discovery })
	defer release()

	const n = 50
	var wg sync.WaitGroup
	bodies := make([]string, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := fetch("GET", f.url+"/"+lib+"/@v/v1.0.0.zip")
			if err != nil || resp.status != 200 {
				t.Errorf("GET zip = %d %q, %v", resp.status, resp.body, err)
			}
			bodies[i] = resp.body
		}()
	}
	// Hold the one go command at discovery until all n requests wait for it.
	deadline := time.Now().Add(20 * time.Second)
	for f.o.waiters("download "+lib+"@v1.0.0") < n && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	release()
	wg.Wait()
	for i := range bodies {
		if bodies[i] != bodies[0] {
			t.Fatalf("response %d differs from response 0", i)
		}
	}
	if got := len(pgids()); got != 1 {
		t.Errorf("%d requests started %d go commands, want 1", n, got)
	}
	if got := f.git.Count(discovery); got != 1 {
		t.Errorf("the Git server got %d discovery requests, want 1", got)
	}
	if got := f.git.Count("/lib.git/info/refs"); got == 0 {
		t.Errorf("the Git server got no /lib.git/info/refs")
	}
}

// waiters returns how many requests wait for the run under key.
func (o *Origin) waiters(key string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	if f := o.flights[key]; f != nil {
		return f.waiters
	}
	return 0
}

// TestTimeout makes the Git server hang and checks that the request
// fails with 504 soon after the timeout and that no process of the
// child's group is left.
func TestTimeout(t *testing.T) {
	const timeout = time.Second
	f := newFixture(t, Config{Timeout: timeout})
	pgids := recordGroups(f.o)
	f.git.Hang(func(key string) bool { return strings.HasPrefix(key, "/lib.git/") })
	lib := f.git.Domain + "/lib"

	start := time.Now()
	resp := get(t, "GET", f.url, "/"+lib+"/@v/list")
	elapsed := time.Since(start)
	if resp.status != 504 || elapsed > timeout+3*time.Second {
		t.Errorf("GET list with a hung server = %d %q after %v, want 504 after %v", resp.status, resp.body, elapsed, timeout)
	}
	if want := "timed out after 1s fetching " + lib + "\n"; resp.body != want {
		t.Errorf("body %q, want %q", resp.body, want)
	}
	if got := pgids(); len(got) != 1 || !groupGone(got[0]) {
		t.Errorf("process groups %v: want one, gone", got)
	}
}

// TestClose closes the origin while a fetch hangs.
func TestClose(t *testing.T) {
	f := newFixture(t, Config{})
	pgids := recordGroups(f.o)
	f.git.Hang(func(key string) bool { return strings.HasPrefix(key, "/lib.git/") })
	lib := f.git.Domain + "/lib"
	done := make(chan response)
	go func() {
		resp, err := fetch("GET", f.url+"/"+lib+"/@latest")
		if err != nil {
			t.Error(err)
		}
		done <- resp
	}()
	for len(pgids()) == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	if err := f.o.Close(); err != nil {
		t.Errorf("Close = %v", err)
	}
	if resp := <-done; resp.status != 503 {
		t.Errorf("request during Close = %d %q, want 503", resp.status, resp.body)
	}
	if !groupGone(pgids()[0]) {
		t.Errorf("a child outlived Close")
	}
	if resp := get(t, "GET", f.url, "/"+lib+"/@v/list"); resp.status != 503 {
		t.Errorf("request after Close = %d %q, want 503", resp.status, resp.body)
	}
	if err := f.o.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
}
