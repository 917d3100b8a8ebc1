package testproxy_test

import (
	"archive/zip"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"golang.org/x/mod/sumdb/dirhash"
	"golang.org/x/mod/sumdb/note"

	"github.com/modgate/modgate/integration/testproxy"
)

// find returns the module path@version of mods, failing t if it is missing.
func find(t *testing.T, mods []*testproxy.Module, path, version string) *testproxy.Module {
	t.Helper()
	for _, m := range mods {
		if m.Path == path && m.Version == version {
			return m
		}
	}
	t.Fatalf("no module %s@%s", path, version)
	return nil
}

// only returns the modules of mods whose path is in paths.
func only(mods []*testproxy.Module, paths ...string) []*testproxy.Module {
	var out []*testproxy.Module
	for _, m := range mods {
		if slices.Contains(paths, m.Path) {
			out = append(out, m)
		}
	}
	return out
}

// get fetches path from s and returns the status, Content-Type and body.
func get(t *testing.T, method, url string) (int, string, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(body)
}

func TestFixtures(t *testing.T) {
	mods := testproxy.Fixtures(t)
	want := []string{
		"corp.example/private@v1.0.0",
		"example.com/Upper/m@v1.0.0",
		"example.com/a@v1.0.0",
		"example.com/a@v1.1.0",
		"example.com/a@v1.2.0-rc.1",
		"example.com/b@v1.0.0",
		"example.com/c/v2@v2.0.0",
		"example.com/pseudo@v0.0.0-20240101000000-abcdefabcdef",
	}
	var got []string
	for _, m := range mods {
		got = append(got, m.Path+"@"+m.Version)
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("fixtures:\n got %q\nwant %q", got, want)
	}

	b := find(t, mods, "example.com/b", "v1.0.0")
	if !strings.Contains(string(b.Mod), "require example.com/a v1.1.0") {
		t.Errorf("b go.mod = %q, want a requirement on example.com/a v1.1.0", b.Mod)
	}
	var info struct {
		Version string
		Time    time.Time
	}
	if err := json.Unmarshal(b.Info, &info); err != nil {
		t.Fatal(err)
	}
	wantTime := time.Date(2024, time.February, 15, 0, 0, 0, 0, time.UTC)
	if info.Version != "v1.0.0" || !info.Time.Equal(wantTime) || !b.Time.Equal(wantTime) {
		t.Errorf("b info = %s, Time %v; want v1.0.0 at %v", b.Info, b.Time, wantTime)
	}

	zr, err := zip.NewReader(bytes.NewReader(b.Zip), int64(len(b.Zip)))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range zr.File {
		names = append(names, f.Name)
	}
	slices.Sort(names)
	if want := []string{"example.com/b@v1.0.0/b.go", "example.com/b@v1.0.0/go.mod"}; !slices.Equal(names, want) {
		t.Errorf("b zip files = %q, want %q", names, want)
	}
}

func TestGoSumMatchesDirhash(t *testing.T) {
	m := find(t, testproxy.Fixtures(t), "example.com/a", "v1.0.0")
	zipFile := filepath.Join(t.TempDir(), "a.zip")
	if err := os.WriteFile(zipFile, m.Zip, 0o666); err != nil {
		t.Fatal(err)
	}
	zipHash, err := dirhash.HashZip(zipFile, dirhash.Hash1)
	if err != nil {
		t.Fatal(err)
	}
	modDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(modDir, "go.mod"), m.Mod, 0o666); err != nil {
		t.Fatal(err)
	}
	modHash, err := dirhash.HashDir(modDir, "", dirhash.Hash1)
	if err != nil {
		t.Fatal(err)
	}
	want := "example.com/a v1.0.0 " + zipHash + "\nexample.com/a v1.0.0/go.mod " + modHash + "\n"
	got, err := m.GoSum()
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("GoSum:\n got %q\nwant %q", got, want)
	}
}

func TestLoadErrors(t *testing.T) {
	const goMod = "-- go.mod --\nmodule example.com/x\n"
	tests := []struct {
		name, fixture, want string
	}{
		{"no-module", "version v1.0.0\n" + goMod, "missing module or version"},
		{"no-version", "module example.com/x\n" + goMod, "missing module or version"},
		{"unknown-key", "module example.com/x\nversion v1.0.0\ncolor blue\n" + goMod, `line 3: unknown key "color"`},
		{"bad-time", "module example.com/x\nversion v1.0.0\ntime yesterday\n" + goMod, "line 3"},
		{"not-canonical", "module example.com/x\nversion v1.0\n" + goMod, "not canonical"},
		{"bad-major", "module example.com/x\nversion v2.0.0\n" + goMod, "example.com/x"},
		{"no-go-mod", "module example.com/x\nversion v1.0.0\n-- x.go --\npackage x\n", "no go.mod"},
		{"wrong-go-mod", "module example.com/y\nversion v1.0.0\n" + goMod, `go.mod declares module "example.com/x"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := testproxy.Load(fstest.MapFS{"dir/x.txtar": {Data: []byte(tt.fixture)}})
			if err == nil || !strings.Contains(err.Error(), "load dir/x.txtar: ") || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Load error = %v, want one about dir/x.txtar containing %q", err, tt.want)
			}
		})
	}

	fixture := []byte("module example.com/x\nversion v1.0.0\n" + goMod)
	_, err := testproxy.Load(fstest.MapFS{"a.txtar": {Data: fixture}, "b/c.txtar": {Data: fixture}})
	if err == nil || !strings.Contains(err.Error(), "already defined by a.txtar") {
		t.Errorf("Load of a duplicate: error = %v, want one about a.txtar", err)
	}
}

func TestProtocol(t *testing.T) {
	mods := testproxy.Fixtures(t)
	s := testproxy.Start(t, mods)
	a10 := find(t, mods, "example.com/a", "v1.0.0")
	upper := find(t, mods, "example.com/Upper/m", "v1.0.0")
	pseudo := find(t, mods, "example.com/pseudo", "v0.0.0-20240101000000-abcdefabcdef")
	c := find(t, mods, "example.com/c/v2", "v2.0.0")
	a11 := find(t, mods, "example.com/a", "v1.1.0")

	const (
		text = "text/plain; charset=utf-8"
		js   = "application/json"
	)
	tests := []struct {
		path        string
		status      int
		contentType string
		body        string // for 404s, a prefix
	}{
		{"/example.com/a/@v/list", 200, text, "v1.0.0\nv1.1.0\nv1.2.0-rc.1\n"},
		{"/example.com/a/@latest", 200, js, string(a11.Info)},
		{"/example.com/a/@v/v1.0.0.info", 200, js, string(a10.Info)},
		{"/example.com/a/@v/v1.0.0.mod", 200, text, string(a10.Mod)},
		{"/example.com/a/@v/v1.0.0.zip", 200, "application/zip", string(a10.Zip)},
		{"/example.com/%21upper/m/@v/list", 200, text, "v1.0.0\n"},
		{"/example.com/!upper/m/@v/v1.0.0.mod", 200, text, string(upper.Mod)},
		{"/example.com/%21upper/m/@v/v1.0.0.zip", 200, "application/zip", string(upper.Zip)},
		{"/example.com/%21upper/m/@latest", 200, js, string(upper.Info)},
		{"/example.com/c/v2/@v/v2.0.0.info", 200, js, string(c.Info)},
		{"/example.com/pseudo/@v/list", 200, text, ""},
		{"/example.com/pseudo/@latest", 200, js, string(pseudo.Info)},
		{"/example.com/pseudo/@v/v0.0.0-20240101000000-abcdefabcdef.mod", 200, text, string(pseudo.Mod)},
		{"/sumdb/sum.modgate.test/supported", 200, "", ""},

		{"/example.com/Upper/m/@v/list", 404, text, "not found: "},
		{"/example.com/nope/@v/list", 404, text, "not found: module example.com/nope"},
		{"/example.com/nope/@latest", 404, text, "not found: "},
		{"/example.com/a/@v/v9.9.9.info", 404, text, "not found: example.com/a@v9.9.9"},
		{"/example.com/a/@v/v1.0.0.txt", 404, text, "not found: "},
		{"/example.com/a/@v/master.zip", 404, text, "not found: "},
		{"/", 404, text, "not found: "},
		{"/sumdb/sum.golang.org/supported", 404, text, "not found: "},
		{"/sumdb/sum.modgate.test/lookup/example.com/nope@v1.0.0", 404, text, ""},
	}
	for _, tt := range tests {
		status, ctype, body := get(t, "GET", s.URL+tt.path)
		if status != tt.status || ctype != tt.contentType {
			t.Errorf("GET %s: %d %q, want %d %q", tt.path, status, ctype, tt.status, tt.contentType)
		}
		if tt.status == 200 && body != tt.body || tt.status != 200 && !strings.HasPrefix(body, tt.body) {
			t.Errorf("GET %s: body %q, want %q", tt.path, body, tt.body)
		}
	}

	status, ctype, body := get(t, "HEAD", s.URL+"/example.com/a/@v/v1.0.0.zip")
	if status != 200 || ctype != "application/zip" || body != "" {
		t.Errorf("HEAD zip: %d %q %q, want 200 application/zip and no body", status, ctype, body)
	}
	if status, _, _ := get(t, "POST", s.URL+"/example.com/a/@v/list"); status != http.StatusMethodNotAllowed {
		t.Errorf("POST list: %d, want %d", status, http.StatusMethodNotAllowed)
	}
}

func TestSumDB(t *testing.T) {
	mods := testproxy.Fixtures(t)
	s := testproxy.Start(t, mods)
	verifier, err := note.NewVerifier(s.VerifierKey)
	if err != nil {
		t.Fatal(err)
	}
	if verifier.Name() != testproxy.DefaultSumDB || s.SumDB != testproxy.DefaultSumDB {
		t.Errorf("database name %q, SumDB %q; want %q", verifier.Name(), s.SumDB, testproxy.DefaultSumDB)
	}

	status, _, body := get(t, "GET", s.URL+"/sumdb/sum.modgate.test/lookup/example.com/%21upper/m@v1.0.0")
	if status != 200 {
		t.Fatalf("lookup: %d %s", status, body)
	}
	sum, err := find(t, mods, "example.com/Upper/m", "v1.0.0").GoSum()
	if err != nil {
		t.Fatal(err)
	}
	// The record is "<id>\n<go.sum lines>\n" followed by the signed tree.
	record, signed, _ := strings.Cut(body, "\n\n")
	if _, lines, _ := strings.Cut(record+"\n", "\n"); lines != sum {
		t.Errorf("lookup record %q, want go.sum lines %q", record, sum)
	}
	if _, err := note.Open([]byte(signed), note.VerifierList(verifier)); err != nil {
		t.Errorf("lookup: signed tree does not verify: %v\n%s", err, signed)
	}
	status, _, body = get(t, "GET", s.URL+"/sumdb/sum.modgate.test/latest")
	if _, err := note.Open([]byte(body), note.VerifierList(verifier)); status != 200 || err != nil {
		t.Errorf("latest: %d, %v\n%s", status, err, body)
	}
}

func TestFaultReplaceRequests(t *testing.T) {
	mods := testproxy.Fixtures(t)
	s := testproxy.Start(t, only(mods, "example.com/a"))
	const (
		list = "/example.com/a/@v/list"
		mod  = "/example.com/a/@v/v1.0.0.mod"
	)

	s.Fault(func(path string) int {
		if path == list {
			return http.StatusInternalServerError
		}
		return 0
	})
	if status, _, body := get(t, "GET", s.URL+list); status != 500 || !strings.Contains(body, "fault") {
		t.Errorf("faulted list: %d %q, want 500", status, body)
	}
	if status, _, _ := get(t, "GET", s.URL+mod); status != 200 {
		t.Errorf("mod with a fault on list: %d, want 200", status)
	}
	s.Fault(nil)
	if status, _, _ := get(t, "GET", s.URL+list); status != 200 {
		t.Errorf("list after Fault(nil): %d, want 200", status)
	}

	s.Replace(mod, []byte("module evil.example\n"))
	if status, ctype, body := get(t, "GET", s.URL+mod); status != 200 || ctype != "text/plain; charset=utf-8" || body != "module evil.example\n" {
		t.Errorf("replaced mod: %d %q %q", status, ctype, body)
	}
	s.Replace(mod, nil)
	if _, _, body := get(t, "GET", s.URL+mod); body != string(find(t, mods, "example.com/a", "v1.0.0").Mod) {
		t.Errorf("mod after Replace(nil): %q", body)
	}
	// Only the served subset is known.
	if status, _, _ := get(t, "GET", s.URL+"/example.com/b/@v/list"); status != 404 {
		t.Errorf("list of a module not served: %d, want 404", status)
	}

	want := []string{list, mod, list, mod, mod, "/example.com/b/@v/list"}
	if got := s.Requests(); !slices.Equal(got, want) {
		t.Errorf("Requests() = %q, want %q", got, want)
	}
	if n := s.Count(mod); n != 3 {
		t.Errorf("Count(%s) = %d, want 3", mod, n)
	}
	if n := s.Count("/nothing"); n != 0 {
		t.Errorf("Count(/nothing) = %d, want 0", n)
	}
}

func TestDelay(t *testing.T) {
	s := testproxy.Start(t, testproxy.Fixtures(t))
	s.Delay(func(string) time.Duration { return 200 * time.Millisecond })
	start := time.Now()
	if status, _, _ := get(t, "GET", s.URL+"/example.com/a/@v/list"); status != 200 {
		t.Errorf("delayed list: %d, want 200", status)
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Errorf("delayed list answered after %v, want at least 200ms", d)
	}
	s.Delay(nil)
}

func TestClose(t *testing.T) {
	s := testproxy.Start(t, nil)
	if status, _, _ := get(t, "GET", s.URL+"/example.com/a/@v/list"); status != 404 {
		t.Errorf("empty server list: %d, want 404", status)
	}
	s.Close()
	s.Close()
	client := &http.Client{Transport: &http.Transport{}} // no pooled connections
	if resp, err := client.Get(s.URL + "/example.com/a/@v/list"); err == nil {
		resp.Body.Close()
		t.Fatalf("GET after Close succeeded: %s", resp.Status)
	}
}

// TestGoCommand runs the real go command against the server.
func TestGoCommand(t *testing.T) {
	s := testproxy.Start(t, testproxy.Fixtures(t))
	env := testproxy.GoEnv(t, s.URL, s.VerifierKey)

	args := []string{
		"example.com/b@v1.0.0",
		"example.com/Upper/m@v1.0.0",
		"example.com/c/v2@v2.0.0",
		"example.com/pseudo@v0.0.0-20240101000000-abcdefabcdef",
	}
	stdout, stderr, err := testproxy.RunGo(t, t.TempDir(), env, append([]string{"mod", "download", "-json"}, args...)...)
	if err != nil {
		t.Fatalf("%v\n%s%s", err, stdout, stderr)
	}
	dec := json.NewDecoder(strings.NewReader(stdout))
	var got []string
	for dec.More() {
		var m struct{ Path, Version, Error, Sum, GoModSum, Zip string }
		if err := dec.Decode(&m); err != nil {
			t.Fatalf("decode go mod download output: %v\n%s", err, stdout)
		}
		if m.Error != "" || m.Sum == "" || m.GoModSum == "" || m.Zip == "" {
			t.Errorf("go mod download: %+v", m)
		}
		got = append(got, m.Path+"@"+m.Version)
	}
	if !slices.Equal(got, args) {
		t.Errorf("downloaded %q, want %q", got, args)
	}

	lookup := "/sumdb/" + s.SumDB + "/lookup/"
	if !slices.ContainsFunc(s.Requests(), func(p string) bool { return strings.HasPrefix(p, lookup) }) {
		t.Errorf("no %s request; requests:\n%s", lookup, strings.Join(s.Requests(), "\n"))
	}
	if n := s.Count("/example.com/%21upper/m/@v/v1.0.0.zip"); n != 1 {
		t.Errorf("escaped upper-case zip fetched %d times, want 1", n)
	}

	stdout, stderr, err = testproxy.RunGo(t, t.TempDir(), env, "list", "-m", "-versions", "example.com/a")
	if err != nil {
		t.Fatalf("%v\n%s%s", err, stdout, stderr)
	}
	// -versions lists prereleases too; @latest prefers the highest release.
	if got, want := strings.TrimSpace(stdout), "example.com/a v1.0.0 v1.1.0 v1.2.0-rc.1"; got != want {
		t.Errorf("go list -m -versions: %q, want %q", got, want)
	}
	stdout, stderr, err = testproxy.RunGo(t, t.TempDir(), env, "list", "-m", "example.com/a@latest")
	if err != nil {
		t.Fatalf("%v\n%s%s", err, stdout, stderr)
	}
	if got, want := strings.TrimSpace(stdout), "example.com/a v1.1.0"; got != want {
		t.Errorf("go list -m example.com/a@latest: %q, want %q", got, want)
	}
}

// TestGoCommandTwoServers runs the go command against a public and a
// private server, each serving a subset of the fixtures.
func TestGoCommandTwoServers(t *testing.T) {
	mods := testproxy.Fixtures(t)
	private := testproxy.Start(t, only(mods, "corp.example/private"))
	public := testproxy.Start(t, slices.DeleteFunc(slices.Clone(mods), func(m *testproxy.Module) bool {
		return m.Path == "corp.example/private"
	}))

	// The public server does not know the private module.
	env := testproxy.GoEnv(t, public.URL, public.VerifierKey)
	_, stderr, err := testproxy.RunGo(t, t.TempDir(), env, "mod", "download", "corp.example/private@v1.0.0")
	if err == nil || !strings.Contains(stderr, "404 Not Found") {
		t.Errorf("private module from the public server: err %v, stderr %s; want a 404", err, stderr)
	}

	// The private server serves it, without a checksum database.
	env = testproxy.GoEnv(t, private.URL, "")
	if stdout, stderr, err := testproxy.RunGo(t, t.TempDir(), env, "mod", "download", "corp.example/private@v1.0.0"); err != nil {
		t.Errorf("%v\n%s%s", err, stdout, stderr)
	}
	for _, p := range private.Requests() {
		if strings.HasPrefix(p, "/sumdb/") {
			t.Errorf("request %s with GOSUMDB=off", p)
		}
	}
}

// TestGoCommandDetectsTampering checks that the checksum database holds the
// hashes the go command verifies: a zip other than the one served at Start
// is refused.
func TestGoCommandDetectsTampering(t *testing.T) {
	s := testproxy.Start(t, testproxy.Fixtures(t))
	evil, err := testproxy.Load(fstest.MapFS{"evil.txtar": {Data: []byte(
		"module example.com/a\nversion v1.0.0\n-- go.mod --\nmodule example.com/a\n-- a.go --\npackage a // evil\n")}})
	if err != nil {
		t.Fatal(err)
	}
	s.Replace("/example.com/a/@v/v1.0.0.zip", evil[0].Zip)

	env := testproxy.GoEnv(t, s.URL, s.VerifierKey)
	_, stderr, err := testproxy.RunGo(t, t.TempDir(), env, "mod", "download", "example.com/a@v1.0.0")
	if err == nil || !strings.Contains(stderr, "checksum mismatch") {
		t.Errorf("download of a tampered zip: err %v, stderr %s; want a checksum mismatch", err, stderr)
	}
}
