package gitserver_test

import (
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/modgate/modgate/integration/gitserver"
	"github.com/modgate/modgate/integration/testproxy"
)

// send sends method rawURL to s, through s as a proxy if proxy is set,
// with basic auth if user is not "", and returns status, a header and body.
func send(t *testing.T, s *gitserver.Server, proxy bool, method, rawURL, user, pass string) (int, http.Header, string) {
	t.Helper()
	tr := &http.Transport{}
	if proxy {
		u, _ := url.Parse(s.URL)
		tr.Proxy = http.ProxyURL(u)
	}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequest(method, rawURL, nil)
	if err != nil {
		return 0, nil, err.Error()
	}
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return 0, nil, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(body)
}

func TestServer(t *testing.T) {
	s := gitserver.Start(t, gitserver.Options{User: "u", Password: "p"})
	s.Standard(t)
	meta := `<meta name="go-import" content="corp.example.com/lib git ` + s.URL + `/lib.git">`
	tests := []struct {
		name       string
		proxy      bool
		method     string
		url        string
		user, pass string
		status     int
		body       string // a substring of the body
	}{
		{"go-get through the proxy", true, "GET", "http://corp.example.com/lib?go-get=1", "", "", 200, meta},
		{"go-get of a nested path", true, "GET", "http://corp.example.com/lib/sub/x?go-get=1", "", "", 200, meta},
		{"go-get of the v2 path", true, "GET", "http://corp.example.com/lib/v2?go-get=1", "", "", 200, meta},
		{"go-get directly", false, "GET", s.URL + "/lib?go-get=1", "", "", 200, meta},
		{"go-get of no repository", true, "GET", "http://corp.example.com/nope?go-get=1", "", "", 404, ""},
		{"another host", true, "GET", "http://example.org/lib?go-get=1", "", "", 403, "not forwarding"},
		{"https through the proxy", true, "GET", "https://corp.example.com/lib?go-get=1", "", "", 0, "Forbidden"},
		{"git without credentials", false, "GET", s.URL + "/lib.git/info/refs?service=git-upload-pack", "", "", 401, ""},
		{"git with a wrong password", false, "GET", s.URL + "/lib.git/info/refs?service=git-upload-pack", "u", "wrong", 401, ""},
		{"git", false, "GET", s.URL + "/lib.git/info/refs?service=git-upload-pack", "u", "p", 200, "refs/tags/v1.0.0"},
		{"git of no repository", false, "GET", s.URL + "/nope.git/info/refs?service=git-upload-pack", "u", "p", 404, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, header, body := send(t, s, tt.proxy, tt.method, tt.url, tt.user, tt.pass)
			if status != tt.status || !strings.Contains(body, tt.body) {
				t.Errorf("%s %s = %d %q, want %d with %q", tt.method, tt.url, status, body, tt.status, tt.body)
			}
			if status == 401 && header.Get("WWW-Authenticate") == "" {
				t.Errorf("401 without WWW-Authenticate")
			}
		})
	}
	if n := s.Count("http://corp.example.com/lib"); n != 1 {
		t.Errorf("Count(http://corp.example.com/lib) = %d, want 1", n)
	}
	if n := s.Count("/lib.git/info/refs"); n != 3 {
		t.Errorf("Count(/lib.git/info/refs) = %d, want 3", n)
	}
}

// TestStandard builds the standard repositories twice: the commits are
// the same, so tests can rely on hashes and pseudo-versions.
func TestStandard(t *testing.T) {
	a := gitserver.Start(t, gitserver.Options{}).Standard(t)
	b := gitserver.Start(t, gitserver.Options{}).Standard(t)
	if !maps.Equal(a.Commits, b.Commits) || a.Main != b.Main {
		t.Errorf("two builds differ:\n%v %s\n%v %s", a.Commits, a.Main, b.Commits, b.Main)
	}
	if want := gitserver.BaseTime.Add(5 * time.Hour); !a.MainTime.Equal(want) {
		t.Errorf("MainTime = %v, want %v", a.MainTime, want)
	}
	if a.Commits["lib@v2.0.0"] != a.Commits["lib@sub/v1.0.0"] {
		t.Errorf("v2.0.0 and sub/v1.0.0 tag different commits")
	}
}

// TestDirectClient runs the real go command as a GOPROXY=direct client of
// the server, as a benchmark would.
func TestDirectClient(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skipf("no go command: %v", err)
	}
	s := gitserver.Start(t, gitserver.Options{})
	st := s.Standard(t)
	env := s.ClientEnv(t)
	dir := t.TempDir()

	stdout, stderr, err := testproxy.RunGo(t, dir, env, "mod", "download", "-json", "corp.example.com/lib@v1.0.0")
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	var dl struct{ Version, Zip, Error string }
	if err := json.Unmarshal([]byte(stdout), &dl); err != nil || dl.Version != "v1.0.0" || dl.Zip == "" {
		t.Errorf("go mod download = %s (%v)", stdout, err)
	}
	stdout, stderr, err = testproxy.RunGo(t, dir, env, "list", "-m", "-json", "corp.example.com/lib@main")
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	if !strings.Contains(stdout, st.Main[:12]) {
		t.Errorf("go list -m lib@main = %s, want a pseudo-version of %s", stdout, st.Main[:12])
	}

	// A moved tag is what a new client sees.
	st.Lib.MoveTag(t, "v1.1.0", st.Main)
	stdout, stderr, err = testproxy.RunGo(t, dir, s.ClientEnv(t), "list", "-m", "-json", "corp.example.com/lib@v1.1.0")
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	if !strings.Contains(stdout, st.Main) {
		t.Errorf("after MoveTag, go list -m lib@v1.1.0 = %s, want commit %s", stdout, st.Main)
	}
}

// TestHang holds requests until released.
func TestHang(t *testing.T) {
	s := gitserver.Start(t, gitserver.Options{User: "u", Password: "p"})
	s.Standard(t)
	release := s.Hang(func(key string) bool { return key == "/lib.git/info/refs" })
	done := make(chan int, 1)
	go func() {
		status, _, _ := send(t, s, false, "GET", s.URL+"/lib.git/info/refs?service=git-upload-pack", "u", "p")
		done <- status
	}()
	select {
	case status := <-done:
		t.Fatalf("hung request returned %d before release", status)
	case <-time.After(100 * time.Millisecond):
	}
	release()
	if status := <-done; status != 200 {
		t.Errorf("released request = %d, want 200", status)
	}
	s.Hang(nil)
	if status, _, _ := send(t, s, false, "GET", s.URL+"/lib.git/info/refs?service=git-upload-pack", "u", "p"); status != 200 {
		t.Errorf("request after Hang(nil) = %d, want 200", status)
	}
}
