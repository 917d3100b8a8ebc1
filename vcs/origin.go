// Package vcs is modgate's origin for private modules that live in Git:
// an http.Handler that speaks the GOPROXY protocol and answers every
// request by running the go command, the authority on modules, with
// GOPROXY=direct.
//
// The handler serves
//
//	/$module/@v/list            go list -m -versions -retracted -json $module
//	/$module/@v/$query.info     go list -m -json $module@$query (a canonical version is
//	                            served from the go command's cache when it is there)
//	/$module/@v/$version.mod    the GoMod file of go list -m -json $module@$version
//	/$module/@v/$version.zip    the Zip file of go mod download -json $module@$version,
//	                            checked with golang.org/x/mod/zip.CheckZip, streamed
//	/$module/@latest            go list -m -json $module@latest (skips retracted versions)
//
// for GET and HEAD; targets are parsed by goproxy.Parse, and checksum
// database targets are answered 404. The list includes retracted
// versions, as the public module proxy's does: a client learns about retractions
// from the go.mod of the latest version and applies them itself, and
// "go list -m -retracted -versions" through modgate keeps working.
//
// # Status codes
//
//	200  the artifact
//	400  a target goproxy.Parse refuses, or a version or query that could
//	     be misread by git (see checkQuery)
//	404  the repository or version does not exist, as the go command reports
//	     it positively (unknown revision, no matching versions, a go-get or git
//	     404, a go.mod declaring another path); plain text "not found: ..."
//	405  a method other than GET or HEAD
//	502  the Git host refused the credentials ("the Git host refused
//	     modgate's credentials for $module"), or any other failure, with
//	     the go command's first error line
//	503  the origin is closed
//	504  the fetch took longer than Config.Timeout, or the requester gave up
//
// Error bodies are one line of plain text with credentials removed.
// Every answer for which the repository host is known carries it in the
// X-Modgate-VCS-Host header.
//
// # The child
//
// Each go command runs with an environment built from nothing: PATH, a
// private HOME (with an empty git config, telemetry off, and .netrc as a
// symbolic link to Config.Netrc, because git reads only $HOME/.netrc),
// NETRC, GOMODCACHE, GOPATH, GOCACHE and TMPDIR under CacheDir,
// GOPROXY=direct, GOSUMDB=off (private paths never reach a public checksum
// database; modgate's ledger verifies private artifacts), GOTOOLCHAIN=local,
// GOFLAGS=-mod=mod -modcacherw, GOENV=off, GOWORK=off, LC_ALL=C,
// GIT_TERMINAL_PROMPT=0, GIT_CONFIG_NOSYSTEM=1, and, unless Config.Env
// sets them, GOVCS=*:git and GIT_ALLOW_PROTOCOL=https (no ssh, which
// would read the host user's ~/.ssh whatever HOME says; no file:// or
// ext::). Config.Env comes last. It runs in an empty directory under
// CacheDir (CacheDir must not be inside a module), in a process group of
// its own that is killed whole when the fetch times out and when the go
// command exits, with no shell, at most Config.MaxConcurrent at once, and
// with at most 1 MiB of its standard output and of its standard error read.
// Concurrent requests that need the same run (same module, version or
// query, and kind of run) share one child.
//
// # Disk
//
// The go command's module cache under CacheDir is kept below
// Config.MaxCacheBytes by a background sweeper that removes the least
// recently used module versions (their cache/download files) and Git
// clones (cache/vcs), never those of a module with a request in progress,
// and clones only while no child runs. The extracted module trees that
// go mod download leaves are removed at once.
package vcs

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"
)

// Config configures an [Origin]. The zero value of every field but
// CacheDir works.
type Config struct {
	// Go is the go command. Default: "go", looked up in PATH by New.
	Go string
	// CacheDir holds everything the go command writes: its module cache,
	// GOPATH, build cache, HOME and temporary files. Required. It must not
	// be inside a module (a go.mod in it or a parent directory).
	CacheDir string
	// MaxCacheBytes bounds the size of CacheDir. Default 10 GiB.
	MaxCacheBytes int64
	// Netrc is a netrc file of credentials for HTTPS and HTTP Git hosts.
	// Its passwords are removed from every log line and error body.
	// Default "": none.
	Netrc string
	// Env holds extra KEY=VALUE settings for the go command, such as
	// GIT_SSH_COMMAND, GOVCS, GOINSECURE, GOPRIVATE, HTTPS_PROXY, NO_PROXY,
	// GIT_ALLOW_PROTOCOL or GIT_CONFIG_COUNT/KEY_n/VALUE_n. PATH replaces
	// modgate's PATH. Settings the origin owns (HOME, GOPROXY, GOSUMDB,
	// GOFLAGS, GOMODCACHE, ...) are refused. Default: none.
	Env []string
	// Timeout bounds one run of the go command; on expiry its whole
	// process group is killed. Default 10 minutes.
	Timeout time.Duration
	// MaxConcurrent bounds the go commands running at once. Default 4.
	MaxConcurrent int
	// Logger receives the origin's log. Default slog.Default().
	Logger *slog.Logger
}

// Defaults of Config.
const (
	DefaultMaxCacheBytes = 10 << 30
	DefaultTimeout       = 10 * time.Minute
	DefaultMaxConcurrent = 4
)

// HostHeader is the response header naming the Git host an answer came
// from (host and port, no credentials).
const HostHeader = "X-Modgate-VCS-Host"

// An Origin answers GOPROXY requests from Git through the go command.
// It is safe for concurrent use. Close stops it.
type Origin struct {
	goCmd    string        // the go command, an absolute path
	root     string        // CacheDir, absolute
	modcache string        // GOMODCACHE
	work     string        // the child's working directory, empty
	netrc    string        // Config.Netrc, absolute, or ""
	secrets  []string      // secrets of Config.Env, for the redactor
	env      []string      // the child's complete environment
	timeout  time.Duration // Config.Timeout
	maxBytes int64         // Config.MaxCacheBytes
	log      *slog.Logger
	slots    chan struct{} // one token per running child
	kick     chan struct{} // wakes the sweeper
	stop     chan struct{} // closed by Close
	wg       sync.WaitGroup
	once     sync.Once

	// running is read-held by every running child; the sweeper
	// write-locks it (TryLock, never waiting) to remove Git clones.
	running sync.RWMutex

	mu      sync.Mutex
	closed  bool
	flights map[string]*flight   // runs in progress, by key
	held    map[string]int       // module path → requests in progress
	used    map[string]time.Time // cache unit → last use, see disk.go
	hosts   map[string]string    // module path → its Git host, as last seen
	started func(pgid int)       // if not nil, called with every child's process group (tests)
}

// maxHosts bounds Origin.hosts; the map starts afresh when full.
const maxHosts = 4096

// ownedEnv lists the environment variables the origin sets and Config.Env
// must not.
var ownedEnv = []string{
	"HOME", "XDG_CONFIG_HOME", "TMPDIR", "LC_ALL", "NETRC",
	"GOPROXY", "GOSUMDB", "GONOSUMDB", "GONOPROXY", "GOFLAGS", "GOTOOLCHAIN",
	"GOMODCACHE", "GOPATH", "GOCACHE", "GOENV", "GOWORK", "GO111MODULE",
	"GIT_TERMINAL_PROMPT", "GIT_CONFIG_NOSYSTEM",
}

// envKeyRE matches an environment variable name.
var envKeyRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// New checks cfg and returns an Origin. It creates CacheDir and the
// directories and files of the child's environment below it.
func New(cfg Config) (*Origin, error) {
	o := &Origin{
		root:     cfg.CacheDir,
		timeout:  cfg.Timeout,
		maxBytes: cfg.MaxCacheBytes,
		log:      cfg.Logger,
		kick:     make(chan struct{}, 1),
		stop:     make(chan struct{}),
		flights:  make(map[string]*flight),
		held:     make(map[string]int),
		used:     make(map[string]time.Time),
		hosts:    make(map[string]string),
	}
	switch {
	case cfg.CacheDir == "":
		return nil, errors.New("vcs: CacheDir is required")
	case cfg.MaxCacheBytes < 0:
		return nil, fmt.Errorf("vcs: MaxCacheBytes %d is negative", cfg.MaxCacheBytes)
	case cfg.Timeout < 0:
		return nil, fmt.Errorf("vcs: Timeout %v is negative", cfg.Timeout)
	case cfg.MaxConcurrent < 0:
		return nil, fmt.Errorf("vcs: MaxConcurrent %d is negative", cfg.MaxConcurrent)
	}
	if o.timeout == 0 {
		o.timeout = DefaultTimeout
	}
	if o.maxBytes == 0 {
		o.maxBytes = DefaultMaxCacheBytes
	}
	n := cfg.MaxConcurrent
	if n == 0 {
		n = DefaultMaxConcurrent
	}
	o.slots = make(chan struct{}, n)
	if o.log == nil {
		o.log = slog.Default()
	}

	goCmd := cfg.Go
	if goCmd == "" {
		goCmd = "go"
	}
	path, err := exec.LookPath(goCmd)
	if err != nil {
		return nil, fmt.Errorf("vcs: Go: %w", err)
	}
	if o.goCmd, err = filepath.Abs(path); err != nil {
		return nil, fmt.Errorf("vcs: Go: %w", err)
	}

	if o.root, err = filepath.Abs(cfg.CacheDir); err != nil {
		return nil, fmt.Errorf("vcs: CacheDir: %w", err)
	}
	if mod := enclosingModule(o.root); mod != "" {
		return nil, fmt.Errorf("vcs: CacheDir %s is inside the module of %s: the go command would run in that module", o.root, mod)
	}
	if cfg.Netrc != "" {
		if o.netrc, err = filepath.Abs(cfg.Netrc); err != nil {
			return nil, fmt.Errorf("vcs: Netrc: %w", err)
		}
		if fi, err := os.Stat(o.netrc); err != nil {
			return nil, fmt.Errorf("vcs: Netrc: %w", err)
		} else if !fi.Mode().IsRegular() {
			return nil, fmt.Errorf("vcs: Netrc: %s is not a regular file", o.netrc)
		}
	}
	secrets, err := checkEnv(cfg.Env)
	if err != nil {
		return nil, fmt.Errorf("vcs: Env: %w", err)
	}
	if err := o.setup(cfg.Env, secrets); err != nil {
		return nil, fmt.Errorf("vcs: CacheDir: %w", err)
	}
	o.wg.Add(1)
	go o.sweeper()
	o.kickSweeper() // a cache from an earlier run may be over the bound
	return o, nil
}

// enclosingModule returns the go.mod file in dir or the closest parent
// directory that has one, or "".
func enclosingModule(dir string) string {
	for {
		if fi, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil && !fi.IsDir() {
			return filepath.Join(dir, "go.mod")
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}

// checkEnv checks Config.Env and returns its entries with the secrets
// they hold: the userinfo passwords of URLs and the values of git extra
// headers.
func checkEnv(env []string) (secrets []string, err error) {
	seen := make(map[string]bool)
	keys := make(map[string]string) // GIT_CONFIG_KEY_n → key
	for _, kv := range env {
		k, v, ok := strings.Cut(kv, "=")
		switch {
		case !ok:
			return nil, fmt.Errorf("%q is not KEY=VALUE", k)
		case !envKeyRE.MatchString(k):
			return nil, fmt.Errorf("invalid variable name %q", k)
		case strings.ContainsRune(v, 0):
			return nil, fmt.Errorf("value of %s contains a NUL byte", k)
		case seen[k]:
			return nil, fmt.Errorf("%s given twice", k)
		case slices.Contains(ownedEnv, k):
			return nil, fmt.Errorf("%s is set by the origin and cannot be changed", k)
		}
		seen[k] = true
		if n, ok := strings.CutPrefix(k, "GIT_CONFIG_KEY_"); ok {
			keys[n] = strings.ToLower(v)
		}
		for _, m := range userinfoRE.FindAllString(v, -1) {
			info := strings.TrimSuffix(m[strings.Index(m, "://")+3:], "@")
			if _, pass, ok := strings.Cut(info, ":"); ok && pass != "" {
				secrets = append(secrets, pass)
			}
		}
	}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		if n, ok := strings.CutPrefix(k, "GIT_CONFIG_VALUE_"); ok && strings.HasSuffix(keys[n], ".extraheader") {
			secrets = append(secrets, v)
			// "Authorization: Bearer TOKEN": the value, and the token alone.
			if _, val, ok := strings.Cut(v, ":"); ok && strings.TrimSpace(val) != "" {
				fields := strings.Fields(val)
				secrets = append(secrets, strings.TrimSpace(val), fields[len(fields)-1])
			}
		}
	}
	return secrets, nil
}

// setup creates the directories under CacheDir and builds the child's
// environment, ending with extra, the checked Config.Env, whose secrets
// the redactor removes.
func (o *Origin) setup(extra, secrets []string) error {
	home := filepath.Join(o.root, "home")
	o.modcache = filepath.Join(o.root, "mod")
	o.work = filepath.Join(o.root, "work")
	gopath := filepath.Join(o.root, "gopath")
	gocache := filepath.Join(o.root, "gocache")
	tmp := filepath.Join(o.root, "tmp")
	config := filepath.Join(home, ".config")
	for _, d := range []string{o.root, home, o.modcache, o.work, gopath, gocache, tmp, filepath.Join(config, "go", "telemetry")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	gitconfig := filepath.Join(home, ".gitconfig")
	for file, data := range map[string]string{
		gitconfig: "",
		filepath.Join(config, "go", "telemetry", "mode"): "off",
	} {
		if err := os.WriteFile(file, []byte(data), 0o600); err != nil {
			return err
		}
	}
	// git (libcurl) reads only $HOME/.netrc: link it to Config.Netrc
	// rather than copy the credentials, so that they are not duplicated
	// and a changed netrc takes effect at once.
	link := filepath.Join(home, ".netrc")
	if err := os.Remove(link); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if o.netrc != "" {
		if err := os.Symlink(o.netrc, link); err != nil {
			return err
		}
	}
	o.secrets = secrets

	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + home,
		"XDG_CONFIG_HOME=" + config,
		"TMPDIR=" + tmp,
		"LC_ALL=C",
		"GOPROXY=direct",
		"GOSUMDB=off",
		"GONOSUMDB=",
		"GONOPROXY=",
		"GOFLAGS=-mod=mod -modcacherw",
		"GOTOOLCHAIN=local",
		"GOMODCACHE=" + o.modcache,
		"GOPATH=" + gopath,
		"GOCACHE=" + gocache,
		"GOENV=off",
		"GOWORK=off",
		"GO111MODULE=on",
		"GOVCS=*:git",
		"GIT_ALLOW_PROTOCOL=https",
		"GIT_TERMINAL_PROMPT=0",
		"GIT_CONFIG_NOSYSTEM=1",
		"GIT_CONFIG_GLOBAL=" + gitconfig,
	}
	if o.netrc != "" {
		env = append(env, "NETRC="+o.netrc)
	}
	o.env = withEnv(env, extra)
	return nil
}

// withEnv returns the child's environment with Config.Env applied.
func withEnv(base, extra []string) []string {
	env := slices.Clone(base)
	for _, kv := range extra {
		k, _, _ := strings.Cut(kv, "=")
		i := slices.IndexFunc(env, func(e string) bool { return strings.HasPrefix(e, k+"=") })
		if i >= 0 {
			env[i] = kv
		} else {
			env = append(env, kv)
		}
	}
	return env
}

// Close stops the origin: running go commands are killed, the requests
// waiting for them and all later requests fail with 503, and Close waits
// for the go commands and the sweeper. A response already being written
// (a zip streamed from the module cache) completes. Close returns nil;
// it is safe to call more than once.
func (o *Origin) Close() error {
	o.once.Do(func() {
		o.mu.Lock()
		o.closed = true
		for _, f := range o.flights {
			f.cancel()
		}
		o.mu.Unlock()
		close(o.stop)
		o.wg.Wait()
	})
	return nil
}
