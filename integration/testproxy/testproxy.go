// Package testproxy provides a hermetic upstream for tests: a real HTTP
// server on 127.0.0.1 that speaks the GOPROXY protocol for a fixed set of
// modules, together with a checksum database for exactly those modules.
//
// Modules are described by txtar fixtures (see [Load]); the package embeds
// a standard set, returned by [Fixtures]. [Start] serves any subset of
// modules, so a test can run several servers with different contents, for
// example a public one and a private one:
//
//	mods := testproxy.Fixtures(t)
//	public := testproxy.Start(t, mods) // or a filtered subset
//	env := testproxy.GoEnv(t, public.URL, public.VerifierKey)
//	_, stderr, err := testproxy.RunGo(t, t.TempDir(), env, "mod", "download", "example.com/a@v1.0.0")
//
// The server answers
//
//	/<module>/@v/list                 known versions, one a line, without pseudo-versions
//	/<module>/@v/<version>.info       JSON {"Version", "Time"}
//	/<module>/@v/<version>.mod        the go.mod file
//	/<module>/@v/<version>.zip        the module zip
//	/<module>/@latest                 .info of the highest release, else of the highest version
//	/sumdb/<name>/supported           200, so the go command proxies the checksum database
//	/sumdb/<name>/{latest,lookup/,tile/}  the checksum database
//
// for GET and HEAD, with module paths and versions escaped as the go command
// escapes them (upper-case letters as "!" plus lower-case, "!" sent as %21).
// Anything unknown is a 404 with a plain-text "not found: ..." body.
// Tests can record requests ([Server.Requests], [Server.Count]), inject
// failures ([Server.Fault], [Server.Delay]) and tamper with answers
// ([Server.Replace]). Nothing touches the network beyond 127.0.0.1.
package testproxy

import (
	"archive/zip"
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"
	"testing"
	"time"

	"github.com/modgate/modgate/goproxy"
	"golang.org/x/mod/modfile"
	"golang.org/x/mod/module"
	"golang.org/x/mod/semver"
	"golang.org/x/mod/sumdb/dirhash"
	modzip "golang.org/x/mod/zip"
	"golang.org/x/tools/txtar"
)

// A Module is one version of a module, ready to be served.
// Modules must not be modified once passed to [Start]; use
// [Server.Replace] to serve different bytes.
type Module struct {
	Path    string    // module path, e.g. "example.com/a"
	Version string    // canonical version, e.g. "v1.0.0"
	Time    time.Time // reported in .info
	Mod     []byte    // go.mod contents
	Zip     []byte    // module zip made with golang.org/x/mod/zip.Create
	Info    []byte    // JSON {"Version":..,"Time":..}
}

// Target returns the request path of m's file of kind (goproxy.KindInfo,
// KindMod or KindZip), or of its module's list (KindList), as the go
// command sends it: goproxy.Request.Path's canonical form.
func (m *Module) Target(kind goproxy.Kind) string {
	return goproxy.Request{Kind: kind, Module: m.Path, Version: m.Version}.Path()
}

// GoSum returns the two go.sum lines of m, for its zip and its go.mod,
// exactly as the go command would record them and as the checksum
// database of [Start] reports them.
func (m *Module) GoSum() (string, error) {
	zipHash, err := hashZip(m.Zip)
	if err != nil {
		return "", fmt.Errorf("hash zip of %s@%s: %w", m.Path, m.Version, err)
	}
	modHash, err := dirhash.Hash1([]string{"go.mod"}, func(string) (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(m.Mod)), nil
	})
	if err != nil {
		return "", fmt.Errorf("hash go.mod of %s@%s: %w", m.Path, m.Version, err)
	}
	return fmt.Sprintf("%s %s %s\n%s %s/go.mod %s\n",
		m.Path, m.Version, zipHash, m.Path, m.Version, modHash), nil
}

// hashZip is dirhash.HashZip for a zip held in memory.
func hashZip(data []byte) (string, error) {
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return "", err
	}
	var names []string
	files := make(map[string]*zip.File)
	for _, f := range zr.File {
		names = append(names, f.Name)
		files[f.Name] = f
	}
	return dirhash.Hash1(names, func(name string) (io.ReadCloser, error) {
		return files[name].Open()
	})
}

//go:embed testdata/*.txtar
var fixtures embed.FS

// Fixtures returns the modules built from the fixtures embedded from
// testdata/*.txtar, failing t if they do not load.
func Fixtures(t testing.TB) []*Module {
	t.Helper()
	mods, err := Load(fixtures)
	if err != nil {
		t.Fatalf("testproxy: %v", err)
	}
	return mods
}

// Load reads every file named *.txtar in fsys, searching directories
// recursively in lexical order, and builds one module version from each.
//
// The comment section of a fixture holds lines of the form "key value":
//
//	module example.com/a          (required) the module path
//	version v1.0.0                (required) the canonical version
//	time 2024-01-01T00:00:00Z     (optional, RFC 3339) the .info time, default 2024-01-01T00:00:00Z
//
// Blank lines and lines starting with "#" are ignored. The files section
// holds the module's files, which must include a go.mod declaring the same
// module path; all of them go into the module zip under <path>@<version>/.
// Two fixtures for the same module version are an error.
func Load(fsys fs.FS) ([]*Module, error) {
	var mods []*Module
	seen := make(map[module.Version]string) // module version → fixture name
	err := fs.WalkDir(fsys, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || path.Ext(name) != ".txtar" {
			return nil
		}
		data, err := fs.ReadFile(fsys, name)
		if err != nil {
			return err
		}
		m, err := parseFixture(txtar.Parse(data))
		if err != nil {
			return fmt.Errorf("load %s: %w", name, err)
		}
		mv := module.Version{Path: m.Path, Version: m.Version}
		if prev, ok := seen[mv]; ok {
			return fmt.Errorf("load %s: %s already defined by %s", name, mv, prev)
		}
		seen[mv] = name
		mods = append(mods, m)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return mods, nil
}

// parseFixture builds the module described by ar.
func parseFixture(ar *txtar.Archive) (*Module, error) {
	m := &Module{Time: time.Date(2024, time.January, 1, 0, 0, 0, 0, time.UTC)}
	for i, line := range strings.Split(string(ar.Comment), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, value, _ := strings.Cut(line, " ")
		value = strings.TrimSpace(value)
		switch key {
		case "module":
			m.Path = value
		case "version":
			m.Version = value
		case "time":
			t, err := time.Parse(time.RFC3339, value)
			if err != nil {
				return nil, fmt.Errorf("line %d: %w", i+1, err)
			}
			m.Time = t.UTC()
		default:
			return nil, fmt.Errorf("line %d: unknown key %q", i+1, key)
		}
	}
	if m.Path == "" || m.Version == "" {
		return nil, fmt.Errorf("missing module or version line")
	}
	if semver.Canonical(m.Version) != m.Version {
		return nil, fmt.Errorf("version %q is not canonical", m.Version)
	}
	mv := module.Version{Path: m.Path, Version: m.Version}
	if err := module.Check(m.Path, m.Version); err != nil {
		return nil, err
	}

	var files []modzip.File
	for _, f := range ar.Files {
		if f.Name == "go.mod" {
			m.Mod = f.Data
		}
		files = append(files, memFile{path: f.Name, data: f.Data})
	}
	if m.Mod == nil {
		return nil, fmt.Errorf("%s: no go.mod file", mv)
	}
	if got := modfile.ModulePath(m.Mod); got != m.Path {
		return nil, fmt.Errorf("%s: go.mod declares module %q", mv, got)
	}

	var zipBuf bytes.Buffer
	if err := modzip.Create(&zipBuf, mv, files); err != nil {
		return nil, fmt.Errorf("%s: %w", mv, err)
	}
	m.Zip = zipBuf.Bytes()

	info, err := json.Marshal(struct {
		Version string
		Time    time.Time
	}{m.Version, m.Time})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", mv, err)
	}
	m.Info = info
	return m, nil
}

// A memFile is a regular file held in memory. It is both the
// golang.org/x/mod/zip.File and the fs.FileInfo describing it.
type memFile struct {
	path string
	data []byte
}

func (f memFile) Path() string                 { return f.path }
func (f memFile) Lstat() (fs.FileInfo, error)  { return f, nil }
func (f memFile) Open() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(f.data)), nil }
func (f memFile) Name() string                 { return path.Base(f.path) }
func (f memFile) Size() int64                  { return int64(len(f.data)) }
func (f memFile) Mode() fs.FileMode            { return 0o644 }
func (f memFile) ModTime() time.Time           { return time.Time{} }
func (f memFile) IsDir() bool                  { return false }
func (f memFile) Sys() any                     { return nil }
