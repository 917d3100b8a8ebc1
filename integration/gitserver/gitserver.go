// Package gitserver provides a hermetic Git server for tests: `git
// http-backend` behind Go's net/http/cgi on 127.0.0.1, with basic
// authentication, go-get discovery for module paths under a chosen domain
// (by default corp.example.com), and a forward-proxy face that makes that
// domain reachable without changing the machine.
//
// # How corp.example.com reaches 127.0.0.1
//
// The go command resolves a module path such as corp.example.com/lib in
// GOPROXY=direct mode by fetching https://corp.example.com/lib?go-get=1 and
// reading its go-import meta tag. No DNS name, /etc/hosts entry or network
// namespace is involved here; instead the client's environment ([Server.Env])
// points HTTPS_PROXY and HTTP_PROXY at this server:
//
//   - The https attempt becomes "CONNECT corp.example.com:443", which the
//     server refuses (403), so nothing leaves the machine, not even a DNS query.
//   - GOINSECURE=corp.example.com lets the go command fall back to plain
//     http for the discovery request, which now goes to the proxy as
//     "GET http://corp.example.com/lib?go-get=1"; the server answers
//     <meta name="go-import" content="corp.example.com/lib git http://127.0.0.1:PORT/lib.git">.
//     Requests for any other host are refused (403), never forwarded.
//   - git then talks to http://127.0.0.1:PORT/lib.git directly: Go never
//     proxies loopback addresses and NO_PROXY=127.0.0.1 keeps libcurl from
//     doing so. GIT_ALLOW_PROTOCOL=http admits the plain-http transport,
//     both for git and for the go command's check of the repository URL.
//
// The Git smart-HTTP endpoints (/NAME.git/...) demand basic authentication
// with [Server.User] and [Server.Password]; anything else is a 401. git
// reads credentials from $HOME/.netrc only (libcurl ignores NETRC);
// [Server.Netrc] writes such a file, for "machine 127.0.0.1" without the
// port, which is what libcurl matches.
// The go-get answers need no credentials: the go command sends none over
// plain http anyway.
//
// A GOPROXY=direct client (the real go command, e.g. in a benchmark) needs
// [Server.ClientEnv]: a complete environment built from nothing, with a
// private HOME holding the netrc.
//
// Repositories are built with the real git, by fast-import straight into
// the served bare repositories ([Server.NewRepo], [Repo.Commit],
// [Repo.Tag], [Repo.MoveTag]), with fixed author and committer dates, so
// commit hashes and pseudo-versions are deterministic. [Server.Standard] builds the standard set (see there).
// Tests can count requests ([Server.Count]) and make requests hang
// ([Server.Hang]). Every process and directory is removed at t's cleanup.
package gitserver

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"html"
	"net"
	"net/http"
	"net/http/cgi"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// DefaultDomain is the domain whose module paths the server answers by default.
const DefaultDomain = "corp.example.com"

// Options configures [Start]. The zero value works.
type Options struct {
	Domain   string // module path domain served by go-get; default DefaultDomain
	User     string // basic-auth user; default "modgate"
	Password string // basic-auth password; default a random hex string
}

// A Server is a running Git server; see [Start].
type Server struct {
	URL      string // "http://127.0.0.1:PORT", the Git and proxy base URL
	Host     string // "127.0.0.1:PORT"
	Domain   string // the go-get domain, e.g. "corp.example.com"
	User     string // the basic-auth user
	Password string // the basic-auth password
	Root     string // GIT_PROJECT_ROOT: the bare repositories, NAME.git

	git      string        // the git binary
	backend  http.Handler  // git http-backend as a CGI
	srv      *http.Server  // the HTTP server
	done     chan struct{} // closed when srv.Serve has returned
	inflight sync.WaitGroup
	once     sync.Once

	mu       sync.Mutex
	requests []string              // request keys in arrival order, see Count
	hang     func(key string) bool // see Hang
	gate     chan struct{}         // closed by Hang's release: hung requests proceed
	release  chan struct{}         // closed by Close: hung requests fail
}

// Start starts a server on 127.0.0.1 that lives until t's cleanup or
// [Server.Close]. It skips t if git is not installed.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	git, err := exec.LookPath("git")
	if err != nil {
		t.Skipf("gitserver: no git command: %v", err)
	}
	if opts.Domain == "" {
		opts.Domain = DefaultDomain
	}
	if opts.User == "" {
		opts.User = "modgate"
	}
	if opts.Password == "" {
		b := make([]byte, 12)
		rand.Read(b)
		opts.Password = hex.EncodeToString(b)
	}
	s := &Server{
		Domain:   opts.Domain,
		User:     opts.User,
		Password: opts.Password,
		Root:     t.TempDir(),
		git:      git,
		done:     make(chan struct{}),
		release:  make(chan struct{}),
	}
	home := t.TempDir()
	s.backend = &cgi.Handler{
		Path: git,
		Args: []string{"http-backend"},
		Dir:  s.Root,
		Env: []string{
			"GIT_PROJECT_ROOT=" + s.Root,
			"GIT_HTTP_EXPORT_ALL=1",
			"HOME=" + home,
			"GIT_CONFIG_NOSYSTEM=1",
			"GIT_CONFIG_GLOBAL=" + os.DevNull,
		},
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("gitserver: %v", err)
	}
	s.Host = ln.Addr().String()
	s.URL = "http://" + s.Host
	s.srv = &http.Server{Handler: http.HandlerFunc(s.handle), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		defer close(s.done)
		s.srv.Serve(ln) // http.ErrServerClosed after Close
	}()
	t.Cleanup(s.Close)
	return s
}

// Close stops the server, releases hung requests and waits for every
// handler, including the git processes they run. It is safe to call more
// than once.
func (s *Server) Close() {
	s.once.Do(func() {
		s.mu.Lock()
		close(s.release)
		s.mu.Unlock()
		s.srv.Close()
		<-s.done
		s.inflight.Wait()
	})
}

// RepoURL returns the URL git fetches the repository name from.
func (s *Server) RepoURL(name string) string {
	return s.URL + "/" + name + ".git"
}

// Env returns what a go command (or the modgate VCS origin, via its
// Config.Env) needs in its environment to reach the server's domain: the
// proxy variables, GOINSECURE for the domain, NO_PROXY for 127.0.0.1 and
// GIT_ALLOW_PROTOCOL=http. Credentials are not included; see [Server.Netrc].
func (s *Server) Env() []string {
	return []string{
		"HTTP_PROXY=" + s.URL,
		"HTTPS_PROXY=" + s.URL,
		"NO_PROXY=127.0.0.1",
		"no_proxy=127.0.0.1",
		"GOINSECURE=" + s.Domain,
		"GIT_ALLOW_PROTOCOL=http",
	}
}

// Netrc writes a netrc file with the server's credentials, or with
// password instead if it is not "", into a temporary directory of t
// and returns its path. The machine is "127.0.0.1", without the port, as
// libcurl (git) matches it.
func (s *Server) Netrc(t testing.TB, password string) string {
	t.Helper()
	if password == "" {
		password = s.Password
	}
	file := filepath.Join(t.TempDir(), "netrc")
	text := fmt.Sprintf("machine 127.0.0.1\nlogin %s\npassword %s\n", s.User, password)
	if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
		t.Fatalf("gitserver: %v", err)
	}
	return file
}

// ClientEnv returns a complete environment for the real go command as a
// GOPROXY=direct client of the server: PATH is inherited and nothing
// else; HOME is a fresh directory holding .netrc with the server's
// credentials and an empty git config; GOMODCACHE, GOPATH and GOCACHE
// are fresh; GOSUMDB is off; telemetry is off; and [Server.Env] is added.
func (s *Server) ClientEnv(t testing.TB) []string {
	t.Helper()
	home := t.TempDir()
	netrc := filepath.Join(home, ".netrc")
	text := fmt.Sprintf("machine 127.0.0.1\nlogin %s\npassword %s\n", s.User, s.Password)
	gitconfig := filepath.Join(home, ".gitconfig")
	modeFile := filepath.Join(home, ".config", "go", "telemetry", "mode")
	for file, data := range map[string]string{netrc: text, gitconfig: "", modeFile: "off"} {
		if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
			t.Fatalf("gitserver: %v", err)
		}
		if err := os.WriteFile(file, []byte(data), 0o600); err != nil {
			t.Fatalf("gitserver: %v", err)
		}
	}
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + home,
		"XDG_CONFIG_HOME=" + filepath.Join(home, ".config"),
		"NETRC=" + netrc,
		"GIT_CONFIG_NOSYSTEM=1",
		"GIT_CONFIG_GLOBAL=" + gitconfig,
		"GIT_TERMINAL_PROMPT=0",
		"GOPROXY=direct",
		"GOSUMDB=off",
		"GONOSUMDB=",
		"GOPRIVATE=",
		"GONOPROXY=",
		"GOVCS=*:git",
		"GOMODCACHE=" + t.TempDir(),
		"GOPATH=" + t.TempDir(),
		"GOCACHE=" + t.TempDir(),
		"GOTOOLCHAIN=local",
		"GOFLAGS=-modcacherw",
		"GOENV=off",
		"GOWORK=off",
		"GO111MODULE=on",
	}
	return append(env, s.Env()...)
}

// Hang makes every later request for which match returns true (called
// with the request's key, see [Server.Count]) wait until the returned
// release function is called, when it is served normally, or until the
// client goes away or the server is closed, when it fails. A later call
// of Hang replaces match; Hang(nil) stops holding new requests.
func (s *Server) Hang(match func(key string) bool) (release func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	gate := make(chan struct{})
	s.hang, s.gate = match, gate
	var once sync.Once
	return func() { once.Do(func() { close(gate) }) }
}

// Count returns how many requests with the given key the server has
// received. The key of a request to the server itself is its path, e.g.
// "/lib.git/info/refs" or "/lib.git/git-upload-pack"; the key of a proxy
// request is the absolute URL without the query, e.g.
// "http://corp.example.com/lib", or "CONNECT corp.example.com:443".
func (s *Server) Count(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, k := range s.requests {
		if k == key {
			n++
		}
	}
	return n
}

// Requests returns the keys of every request received, in arrival order.
func (s *Server) Requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// handle serves one request: the proxy face, go-get discovery or git.
func (s *Server) handle(w http.ResponseWriter, r *http.Request) {
	s.inflight.Add(1)
	defer s.inflight.Done()

	key := r.URL.Path
	switch {
	case r.Method == http.MethodConnect:
		key = "CONNECT " + r.Host
	case r.URL.IsAbs():
		key = "http://" + r.URL.Host + r.URL.Path
	}
	s.mu.Lock()
	s.requests = append(s.requests, key)
	hang, gate, release := s.hang, s.gate, s.release
	s.mu.Unlock()
	if hang != nil && hang(key) {
		select {
		case <-gate:
		case <-r.Context().Done():
			return
		case <-release:
			http.Error(w, "gitserver: closed", http.StatusServiceUnavailable)
			return
		}
	}

	host := r.Host
	if r.URL.IsAbs() {
		host = r.URL.Host
	}
	switch {
	case r.Method == http.MethodConnect:
		http.Error(w, "gitserver: no TLS here", http.StatusForbidden)
	case r.URL.Query().Get("go-get") == "1" && (host == s.Domain || host == s.Host):
		s.goGet(w, r)
	case r.URL.IsAbs():
		http.Error(w, "gitserver: not forwarding to "+r.URL.Host, http.StatusForbidden)
	case strings.Contains(r.URL.Path, ".git/"):
		user, pass, ok := r.BasicAuth()
		if !ok || user != s.User || pass != s.Password {
			w.Header().Set("WWW-Authenticate", `Basic realm="gitserver"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		s.backend.ServeHTTP(w, r)
	default:
		http.NotFound(w, r)
	}
}

// goGet answers a go-get discovery request for DOMAIN/NAME[/...] with the
// go-import meta tag of the repository NAME, or 404 if there is none.
func (s *Server) goGet(w http.ResponseWriter, r *http.Request) {
	name, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	if name == "" || strings.HasPrefix(name, ".") {
		http.NotFound(w, r)
		return
	}
	if fi, err := os.Stat(filepath.Join(s.Root, name+".git")); err != nil || !fi.IsDir() {
		http.NotFound(w, r)
		return
	}
	content := s.Domain + "/" + name + " git " + s.RepoURL(name)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	fmt.Fprintf(w, "<!DOCTYPE html>\n<html><head><meta name=\"go-import\" content=\"%s\"></head><body></body></html>\n",
		html.EscapeString(content))
}
