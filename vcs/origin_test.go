package vcs

import (
	"archive/zip"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/module"
	modzip "golang.org/x/mod/zip"

	"github.com/modgate/modgate/integration/gitserver"
)

// A fixture is an origin in front of a Git server with the standard
// repositories.
type fixture struct {
	o    *Origin
	url  string // the origin's test server
	git  *gitserver.Server
	std  *gitserver.Standard
	logs *syncBuffer // the origin's log, as text
}

// syncBuffer is a bytes.Buffer safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// newFixture starts a Git server with the standard repositories and an
// origin configured by cfg, whose CacheDir, Netrc, Env and Logger it
// fills in unless set.
func newFixture(t testing.TB, cfg Config) *fixture {
	t.Helper()
	git := gitserver.Start(t, gitserver.Options{})
	f := &fixture{git: git, std: git.Standard(t), logs: &syncBuffer{}}
	if cfg.CacheDir == "" {
		cfg.CacheDir = t.TempDir()
	}
	if cfg.Netrc == "" {
		cfg.Netrc = git.Netrc(t, "")
	}
	if cfg.Env == nil {
		cfg.Env = git.Env()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = time.Minute
	}
	o, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { o.Close() })
	srv := httptest.NewServer(o)
	t.Cleanup(srv.Close)
	f.o, f.url = o, srv.URL
	return f
}

// A response is what get received.
type response struct {
	status int
	header http.Header
	body   string
}

// get sends method target to the server at base.
func get(t testing.TB, method, base, target string) response {
	t.Helper()
	resp, err := fetch(method, base+target)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// fetch sends method url and returns the response.
func fetch(method, url string) (response, error) {
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		return response{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return response{}, fmt.Errorf("%s %s: %w", method, url, err)
	}
	return response{resp.StatusCode, resp.Header, string(body)}, nil
}

// infoJSON returns the .info body for version v at time tm.
func infoJSON(t testing.TB, v string, tm time.Time) string {
	t.Helper()
	b, err := json.Marshal(info{Version: v, Time: tm})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// zipFiles checks the module zip body for mod@v with CheckZip and
// returns its file names.
func zipFiles(t testing.TB, mod, v, body string) []string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "m.zip")
	if err := os.WriteFile(file, []byte(body), 0o666); err != nil {
		t.Fatal(err)
	}
	if _, err := modzip.CheckZip(module.Version{Path: mod, Version: v}, file); err != nil {
		t.Fatalf("CheckZip(%s@%s) = %v", mod, v, err)
	}
	zr, err := zip.NewReader(strings.NewReader(body), int64(len(body)))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range zr.File {
		names = append(names, f.Name)
	}
	slices.Sort(names)
	return names
}

func TestOrigin(t *testing.T) {
	f := newFixture(t, Config{})
	d := f.git.Domain
	std := f.std
	lib := d + "/lib"
	mainVersion := "v1.1.1-0." + std.MainTime.Format("20060102150405") + "-" + std.Main[:12]
	tests := []struct {
		name   string
		target string
		status int
		body   string                                 // the exact body, if check is nil
		check  func(t *testing.T, body string) string // returns a complaint, "" if fine
	}{
		{"list", "/" + lib + "/@v/list", 200, "v1.0.0\nv1.1.0\nv1.2.0\nv1.2.1\n", nil},
		{"list v2", "/" + lib + "/v2/@v/list", 200, "v2.0.0\n", nil},
		{"list nested", "/" + lib + "/sub/@v/list", 200, "v1.0.0\n", nil},
		{"list incompatible", "/" + d + "/old/@v/list", 200, "v1.0.0\nv3.0.0+incompatible\n", nil},
		{"info", "/" + lib + "/@v/v1.0.0.info", 200, infoJSON(t, "v1.0.0", std.Times["lib@v1.0.0"]), nil},
		{"info retracted", "/" + lib + "/@v/v1.2.0.info", 200, infoJSON(t, "v1.2.0", std.Times["lib@v1.2.0"]), nil},
		{"info branch", "/" + lib + "/@v/main.info", 200, infoJSON(t, mainVersion, std.MainTime), nil},
		{"info hash", "/" + lib + "/@v/" + std.Main[:12] + ".info", 200, infoJSON(t, mainVersion, std.MainTime), nil},
		{"info semver prefix", "/" + lib + "/@v/v1.0.info", 200, infoJSON(t, "v1.0.0", std.Times["lib@v1.0.0"]), nil},
		{"info nested", "/" + lib + "/sub/@v/v1.0.0.info", 200, infoJSON(t, "v1.0.0", std.Times["lib@sub/v1.0.0"]), nil},
		{"info incompatible", "/" + d + "/old/@v/v3.0.0+incompatible.info", 200, infoJSON(t, "v3.0.0+incompatible", std.Times["old@v3.0.0"]), nil},
		{"latest skips retracted", "/" + lib + "/@latest", 200, infoJSON(t, "v1.1.0", std.Times["lib@v1.1.0"]), nil},
		{"latest v2", "/" + lib + "/v2/@latest", 200, infoJSON(t, "v2.0.0", std.Times["lib@v2.0.0"]), nil},
		{"latest incompatible", "/" + d + "/old/@latest", 200, infoJSON(t, "v3.0.0+incompatible", std.Times["old@v3.0.0"]), nil},
		{"mod", "/" + lib + "/@v/v1.0.0.mod", 200, gitserver.GoMod(lib), nil},
		{"mod retracting", "/" + lib + "/@v/v1.2.1.mod", 200, gitserver.GoMod(lib, "// v1.2.0 is broken.\nretract [v1.2.0, v1.2.1]"), nil},
		{"mod v2", "/" + lib + "/v2/@v/v2.0.0.mod", 200, gitserver.GoMod(lib + "/v2"), nil},
		{"mod incompatible", "/" + d + "/old/@v/v3.0.0+incompatible.mod", 200, "module " + d + "/old\n", nil},
		{"mod pseudo-version", "/" + lib + "/@v/" + mainVersion + ".mod", 200, gitserver.GoMod(lib, "// v1.2.0 is broken.\nretract [v1.2.0, v1.2.1]"), nil},
		{"zip", "/" + lib + "/@v/v1.0.0.zip", 200, "", func(t *testing.T, body string) string {
			got := zipFiles(t, lib, "v1.0.0", body)
			if want := []string{lib + "@v1.0.0/go.mod", lib + "@v1.0.0/lib.go"}; !slices.Equal(got, want) {
				return "files " + strings.Join(got, " ")
			}
			return ""
		}},
		{"zip without nested modules", "/" + lib + "/@v/" + mainVersion + ".zip", 200, "", func(t *testing.T, body string) string {
			got := zipFiles(t, lib, mainVersion, body)
			if want := []string{lib + "@" + mainVersion + "/go.mod", lib + "@" + mainVersion + "/lib.go"}; !slices.Equal(got, want) {
				return "files " + strings.Join(got, " ")
			}
			return ""
		}},
		{"zip v2", "/" + lib + "/v2/@v/v2.0.0.zip", 200, "", func(t *testing.T, body string) string {
			got := zipFiles(t, lib+"/v2", "v2.0.0", body)
			if want := []string{lib + "/v2@v2.0.0/go.mod", lib + "/v2@v2.0.0/lib.go"}; !slices.Equal(got, want) {
				return "files " + strings.Join(got, " ")
			}
			return ""
		}},
		{"zip nested", "/" + lib + "/sub/@v/v1.0.0.zip", 200, "", func(t *testing.T, body string) string {
			got := zipFiles(t, lib+"/sub", "v1.0.0", body)
			if want := []string{lib + "/sub@v1.0.0/go.mod", lib + "/sub@v1.0.0/sub.go"}; !slices.Equal(got, want) {
				return "files " + strings.Join(got, " ")
			}
			return ""
		}},
		{"zip incompatible", "/" + d + "/old/@v/v3.0.0+incompatible.zip", 200, "", func(t *testing.T, body string) string {
			got := zipFiles(t, d+"/old", "v3.0.0+incompatible", body)
			if want := []string{d + "/old@v3.0.0+incompatible/old.go"}; !slices.Equal(got, want) {
				return "files " + strings.Join(got, " ")
			}
			return ""
		}},

		{"no repository list", "/" + d + "/nope/@v/list", 404, "", notFound},
		{"no repository latest", "/" + d + "/nope/@latest", 404, "", notFound},
		{"no repository zip", "/" + d + "/nope/@v/v1.0.0.zip", 404, "", notFound},
		{"no version info", "/" + lib + "/@v/v1.9.9.info", 404, "", notFound},
		{"no version mod", "/" + lib + "/@v/v1.9.9.mod", 404, "", notFound},
		{"no version zip", "/" + lib + "/@v/v1.9.9.zip", 404, "", notFound},
		{"no branch", "/" + lib + "/@v/nobranch.info", 404, "", notFound},
		{"v2 tag for v1 path", "/" + lib + "/@v/v2.0.0+incompatible.info", 404, "", notFound},
		{"checksum database", "/sumdb/sum.golang.org/supported", 404, "", notFound},

		{"option as query", "/" + lib + "/@v/-x.info", 400, "version \"-x\" may not begin with \"-\" or contain \"..\"\n", nil},
		{"option as version", "/" + lib + "/@v/--upload-pack=x.info", 400, "version \"--upload-pack=x\" may not begin with \"-\" or contain \"..\"\n", nil},
		{"dot dot", "/" + lib + "/@v/v1.0.0/../x.info", 400, "", nil},
		{"revision syntax", "/" + lib + "/@v/main~1.info", 400, "", nil},
		{"not canonical", "/" + lib + "/@v/v1.0.mod", 400, "", nil},
	}
	t.Run("group", func(t *testing.T) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				t.Parallel()
				resp := get(t, "GET", f.url, tt.target)
				if resp.status != tt.status {
					t.Fatalf("GET %s = %d %q, want %d", tt.target, resp.status, resp.body, tt.status)
				}
				switch {
				case tt.check != nil:
					if msg := tt.check(t, resp.body); msg != "" {
						t.Errorf("GET %s: %s", tt.target, msg)
					}
				case tt.body != "":
					if resp.body != tt.body {
						t.Errorf("GET %s = %q, want %q", tt.target, resp.body, tt.body)
					}
				}
				if ct := resp.header.Get("Content-Type"); resp.status != 200 && ct != "text/plain; charset=utf-8" {
					t.Errorf("GET %s: Content-Type %q, want text/plain", tt.target, ct)
				}
				if n := strings.Count(strings.TrimSpace(resp.body), "\n"); resp.status != 200 && n >= 8 {
					t.Errorf("GET %s: error body of %d lines", tt.target, n+1)
				}
				host := resp.header.Get(HostHeader)
				strictHost := resp.status == 200 && !strings.HasSuffix(tt.target, "/list")
				if (strictHost || host != "") && host != f.git.Host {
					t.Errorf("GET %s: %s = %q, want %q", tt.target, HostHeader, host, f.git.Host)
				}
			})
		}
	})

	// The go command reached nothing but the Git server: no checksum
	// database, no proxy, no toolchain download.
	for _, key := range f.git.Requests() {
		if !strings.HasPrefix(key, "/") && key != "CONNECT "+d+":443" && !strings.HasPrefix(key, "http://"+d+"/") {
			t.Errorf("the go command asked for %s", key)
		}
	}
}

// notFound checks a 404 body.
func notFound(t *testing.T, body string) string {
	if !strings.HasPrefix(body, "not found: ") || strings.Count(body, "\n") != 1 {
		return "body " + body
	}
	return ""
}

func TestHead(t *testing.T) {
	f := newFixture(t, Config{})
	lib := f.git.Domain + "/lib"
	for _, target := range []string{"/" + lib + "/@v/list", "/" + lib + "/@v/v1.0.0.info", "/" + lib + "/@v/v1.0.0.mod", "/" + lib + "/@v/v1.0.0.zip"} {
		head := get(t, "HEAD", f.url, target)
		full := get(t, "GET", f.url, target)
		if head.status != 200 || head.body != "" || head.header.Get("Content-Length") != full.header.Get("Content-Length") {
			t.Errorf("HEAD %s = %d, %d bytes, Content-Length %q; GET has Content-Length %q",
				target, head.status, len(head.body), head.header.Get("Content-Length"), full.header.Get("Content-Length"))
		}
	}
	if resp := get(t, "POST", f.url, "/"+lib+"/@v/list"); resp.status != 405 {
		t.Errorf("POST = %d, want 405", resp.status)
	}
}

// TestAuthRefused fetches with a wrong password and with none: the
// answer is 502 with a fixed message, and no password appears in a body,
// the log or an error.
func TestAuthRefused(t *testing.T) {
	const wrong = "Wrong-Pa55word-xyz"
	git := gitserver.Start(t, gitserver.Options{})
	git.Standard(t)
	lib := git.Domain + "/lib"
	for _, netrc := range []string{git.Netrc(t, wrong), ""} {
		logs := &syncBuffer{}
		o, err := New(Config{
			CacheDir: t.TempDir(),
			Netrc:    netrc,
			Env:      git.Env(),
			Logger:   slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		})
		if err != nil {
			t.Fatal(err)
		}
		defer o.Close()
		srv := httptest.NewServer(o)
		defer srv.Close()
		for _, target := range []string{"/" + lib + "/@v/list", "/" + lib + "/@v/v1.0.0.info", "/" + lib + "/@v/v1.0.0.zip", "/" + lib + "/@latest"} {
			resp := get(t, "GET", srv.URL, target)
			want := "the Git host refused modgate's credentials for " + lib + "\n"
			if resp.status != 502 || resp.body != want {
				t.Errorf("netrc %q: GET %s = %d %q, want 502 %q", netrc, target, resp.status, resp.body, want)
			}
			if h := resp.header.Get(HostHeader); h != git.Host {
				t.Errorf("netrc %q: GET %s: %s = %q, want %q", netrc, target, HostHeader, h, git.Host)
			}
		}
		_, err = o.goQuery(t.Context(), lib, "v1.0.0")
		for what, text := range map[string]string{"log": logs.String(), "error": fmt.Sprint(err)} {
			for _, secret := range []string{wrong, git.Password} {
				if strings.Contains(text, secret) {
					t.Errorf("netrc %q: password %q in the %s:\n%s", netrc, secret, what, text)
				}
			}
		}
		if !errors.Is(err, errAuth) {
			t.Errorf("goQuery with netrc %q = %v, want errAuth", netrc, err)
		}
	}
}
