package testproxy

import (
	"crypto/rand"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/module"
	"golang.org/x/mod/semver"
	"golang.org/x/mod/sumdb"
	"golang.org/x/mod/sumdb/note"
)

// DefaultSumDB is the name of the checksum database of every [Server].
const DefaultSumDB = "sum.modgate.test"

// A Server is a running module proxy and checksum database; see [Start].
type Server struct {
	URL         string // base URL, "http://127.0.0.1:PORT", for GOPROXY
	SumDB       string // name of the checksum database, DefaultSumDB
	VerifierKey string // note verifier key of the checksum database, for GOSUMDB

	versions  map[string][]string        // module path → versions, semver-sorted
	modules   map[module.Version]*Module // served modules
	gosum     map[module.Version][]byte  // go.sum lines, the checksum database records
	sumdb     http.Handler               // checksum database, below /sumdb/<SumDB>
	srv       *http.Server               // the HTTP server
	done      chan struct{}              // closed when srv.Serve has returned
	closeOnce sync.Once                  // guards srv.Close

	mu       sync.Mutex
	requests []string                        // raw request paths, in arrival order
	headers  []http.Header                   // their headers, in the same order
	queries  []string                        // their raw queries, in the same order
	fault    func(path string) int           // see Fault
	delay    func(path string) time.Duration // see Delay
	replace  map[string][]byte               // raw path → body, see Replace
}

// Start serves modules, which may be any subset of [Fixtures] or other
// modules from [Load], on 127.0.0.1 until t's cleanup or [Server.Close].
// The checksum database under /sumdb/<SumDB>/ is signed by a fresh key
// and knows exactly the served module versions, with the hashes the go
// command expects ([Module.GoSum]). Start fails t if two modules share a
// module version or a module cannot be hashed.
func Start(t testing.TB, modules []*Module) *Server {
	t.Helper()
	return StartWith(t, modules, Options{})
}

// A Key is a checksum database's note signing key pair.
type Key struct {
	Signer   string // note signer key, secret
	Verifier string // note verifier key, the GOSUMDB value
}

// NewKey generates a key for a checksum database named DefaultSumDB.
func NewKey(t testing.TB) Key {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, DefaultSumDB)
	if err != nil {
		t.Fatalf("testproxy: generate key: %v", err)
	}
	return Key{Signer: skey, Verifier: vkey}
}

// Options changes what StartWith serves.
type Options struct {
	// Key signs the checksum database. Default: a fresh key. Two servers
	// with one key and different Sums are a forked database.
	Key Key
	// Sums replaces the go.sum lines the checksum database records for some
	// module versions (both lines, "path version h1:…\npath version/go.mod
	// h1:…\n"), e.g. to make it disagree with what the proxy serves.
	Sums map[module.Version]string
}

// StartWith is Start with options.
func StartWith(t testing.TB, modules []*Module, opts Options) *Server {
	t.Helper()
	if opts.Key == (Key{}) {
		opts.Key = NewKey(t)
	}
	skey, vkey := opts.Key.Signer, opts.Key.Verifier
	s := &Server{
		SumDB:       DefaultSumDB,
		VerifierKey: vkey,
		versions:    make(map[string][]string),
		modules:     make(map[module.Version]*Module),
		gosum:       make(map[module.Version][]byte),
		done:        make(chan struct{}),
		replace:     make(map[string][]byte),
	}
	for _, m := range modules {
		mv := module.Version{Path: m.Path, Version: m.Version}
		if _, ok := s.modules[mv]; ok {
			t.Fatalf("testproxy: %s given twice", mv)
		}
		sum, err := m.GoSum()
		if err != nil {
			t.Fatalf("testproxy: %v", err)
		}
		s.modules[mv] = m
		if override, ok := opts.Sums[mv]; ok {
			sum = override
		}
		s.gosum[mv] = []byte(sum)
		s.versions[m.Path] = append(s.versions[m.Path], m.Version)
	}
	for _, vs := range s.versions {
		semver.Sort(vs)
	}
	db := sumdb.NewServer(sumdb.NewTestServer(skey, s.lookup))
	s.sumdb = http.StripPrefix("/sumdb/"+s.SumDB, db)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testproxy: %v", err)
	}
	s.URL = "http://" + ln.Addr().String()
	s.srv = &http.Server{
		Handler:           http.HandlerFunc(s.handle),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() {
		defer close(s.done)
		s.srv.Serve(ln) // returns http.ErrServerClosed after Close
	}()
	t.Cleanup(s.Close)
	return s
}

// lookup returns the checksum database record for a module version.
func (s *Server) lookup(path, version string) ([]byte, error) {
	sum, ok := s.gosum[module.Version{Path: path, Version: version}]
	if !ok {
		// A *fs.PathError, so that the sumdb server answers 404.
		return nil, &fs.PathError{Op: "lookup", Path: path + "@" + version, Err: fs.ErrNotExist}
	}
	return sum, nil
}

// Close stops the server: connections are refused afterwards and open ones
// are closed. It is safe to call more than once.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		s.srv.Close()
		<-s.done
	})
}

// Requests returns the path of every request received, as sent (escaped,
// without query), in arrival order.
func (s *Server) Requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// A Received is one request the server received.
type Received struct {
	Path   string      // as sent, escaped, without query
	Query  string      // the raw query, "" if none
	Header http.Header // as received (Go's server drops Host into the request)
}

// Received returns every request received, in arrival order.
func (s *Server) Received() []Received {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Received, len(s.requests))
	for i, p := range s.requests {
		out[i] = Received{Path: p, Query: s.queries[i], Header: s.headers[i].Clone()}
	}
	return out
}

// Count returns how many requests have been received for the path p,
// which is compared with the path as sent, e.g. "/example.com/%21upper/m/@v/list".
func (s *Server) Count(p string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, r := range s.requests {
		if r == p {
			n++
		}
	}
	return n
}

// Fault installs f, which is called with the path of every request, as sent.
// When it returns a non-zero status, the server answers with that status
// and a short plain-text body instead of serving the request.
// Fault(nil) removes it. Requests are recorded either way.
func (s *Server) Fault(f func(path string) (status int)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fault = f
}

// Delay installs f, which is called with the path of every request, as sent,
// before anything else is done with it; the server waits for the duration
// it returns, or until the client goes away. Delay(nil) removes it.
func (s *Server) Delay(f func(path string) time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delay = f
}

// Replace makes the server answer requests for path, as sent, with a 200
// and body instead of what it would serve, keeping the usual Content-Type.
// Replace(path, nil) restores the real answer.
func (s *Server) Replace(path string, body []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if body == nil {
		delete(s.replace, path)
		return
	}
	s.replace[path] = slices.Clone(body)
}

func (s *Server) handle(w http.ResponseWriter, r *http.Request) {
	raw := r.URL.EscapedPath()
	s.mu.Lock()
	s.requests = append(s.requests, raw)
	s.headers = append(s.headers, r.Header.Clone())
	s.queries = append(s.queries, r.URL.RawQuery)
	delay := s.delay
	s.mu.Unlock()

	if delay != nil {
		if d := delay(raw); d > 0 {
			timer := time.NewTimer(d)
			select {
			case <-timer.C:
			case <-r.Context().Done():
				timer.Stop()
				return
			}
		}
	}

	s.mu.Lock()
	fault := s.fault
	body, replaced := s.replace[raw]
	s.mu.Unlock()

	if fault != nil {
		if status := fault(raw); status != 0 {
			http.Error(w, fmt.Sprintf("testproxy: injected fault for %s", raw), status)
			return
		}
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if replaced {
		write(w, contentType(r.URL.Path), body)
		return
	}
	s.serve(w, r)
}

// serve answers a GOPROXY or checksum database request.
func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path // already unescaped once, as url.PathUnescape does
	if rest, ok := strings.CutPrefix(p, "/sumdb/"); ok {
		switch {
		case rest == s.SumDB+"/supported":
			w.WriteHeader(http.StatusOK)
		case strings.HasPrefix(rest, s.SumDB+"/"):
			s.sumdb.ServeHTTP(w, r)
		default:
			notFound(w, "checksum database %s", rest)
		}
		return
	}

	if escPath, ok := strings.CutSuffix(p, "/@latest"); ok {
		path, err := module.UnescapePath(strings.TrimPrefix(escPath, "/"))
		if err != nil {
			notFound(w, "%v", err)
			return
		}
		vs := s.versions[path]
		if len(vs) == 0 {
			notFound(w, "module %s", path)
			return
		}
		latest := vs[len(vs)-1]
		for _, v := range vs {
			if semver.Prerelease(v) == "" {
				latest = v // the last release wins, since vs is sorted
			}
		}
		m := s.modules[module.Version{Path: path, Version: latest}]
		write(w, "application/json", m.Info)
		return
	}

	escPath, file, ok := strings.Cut(p, "/@v/")
	if !ok {
		notFound(w, "%s", p)
		return
	}
	path, err := module.UnescapePath(strings.TrimPrefix(escPath, "/"))
	if err != nil {
		notFound(w, "%v", err)
		return
	}
	vs, ok := s.versions[path]
	if !ok {
		notFound(w, "module %s", path)
		return
	}
	if file == "list" {
		var b strings.Builder
		for _, v := range vs {
			if !module.IsPseudoVersion(v) {
				b.WriteString(v + "\n")
			}
		}
		write(w, "text/plain; charset=utf-8", []byte(b.String()))
		return
	}

	i := strings.LastIndex(file, ".")
	if i < 0 {
		notFound(w, "%s", p)
		return
	}
	version, err := module.UnescapeVersion(file[:i])
	if err != nil {
		notFound(w, "%v", err)
		return
	}
	m, ok := s.modules[module.Version{Path: path, Version: version}]
	if !ok {
		notFound(w, "%s@%s", path, version)
		return
	}
	switch ext := file[i:]; ext {
	case ".info":
		write(w, contentType(ext), m.Info)
	case ".mod":
		write(w, contentType(ext), m.Mod)
	case ".zip":
		write(w, contentType(ext), m.Zip)
	default:
		notFound(w, "%s", p)
	}
}

// contentType returns the Content-Type for the GOPROXY file named by p.
func contentType(p string) string {
	switch {
	case strings.HasSuffix(p, ".info"), strings.HasSuffix(p, "/@latest"):
		return "application/json"
	case strings.HasSuffix(p, ".zip"):
		return "application/zip"
	default:
		return "text/plain; charset=utf-8"
	}
}

// write answers 200 with body. For HEAD requests the server drops the body.
func write(w http.ResponseWriter, contentType string, body []byte) {
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	w.Write(body)
}

// notFound answers 404 with a plain-text "not found: ..." body.
func notFound(w http.ResponseWriter, format string, args ...any) {
	http.Error(w, "not found: "+fmt.Sprintf(format, args...), http.StatusNotFound)
}
