package repocheck

import (
	"archive/zip"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/modfile"
	"golang.org/x/mod/module"
	modzip "golang.org/x/mod/zip"
	"golang.org/x/tools/txtar"
)

// vendorFixture is a repository vendored by go mod vendor, and the files
// of its modules' zips under zip/PATH@VERSION/.
const vendorFixture = "testdata/vendor/repo.txtar"

// An edit replaces the one occurrence of old in a fixture file by new.
type edit struct {
	file, old, new string
}

// A vendorRepo is what a test case changes in the fixture.
type vendorRepo struct {
	edits  []edit
	add    map[string]string // files written over the fixture
	remove []string          // files (or directories) removed
	setup  func(t testing.TB, dir string)
	// serve makes Zips serve a zip for another module version with the
	// files of one of the fixture: path@version → path@version.
	serve map[string]string
	// raw makes Zips serve the zip file of another module version of the
	// fixture as it is: path@version → path@version.
	raw map[string]string
	// fail makes Zips fail for a module version: path@version → error.
	fail map[string]error
}

// vendorZips is the Zips of a test: module zips in files.
type vendorZips struct {
	files map[string]string // path@version → zip file
	fail  map[string]error
}

func (z vendorZips) Zip(ctx context.Context, path, version string) (string, error) {
	key := path + "@" + version
	if err := z.fail[key]; err != nil {
		return "", fmt.Errorf("zip %s: %w", key, err)
	}
	if f, ok := z.files[key]; ok {
		return f, nil
	}
	return "", fmt.Errorf("zip %s: %w", key, fs.ErrNotExist)
}

// memFile is a file of a module zip that golang.org/x/mod/zip.Create
// reads from memory.
type memFile struct {
	name string
	data []byte
}

func (f memFile) Path() string                 { return f.name }
func (f memFile) Lstat() (os.FileInfo, error)  { return memInfo{f}, nil }
func (f memFile) Open() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(f.data)), nil }

type memInfo struct{ f memFile }

func (i memInfo) Name() string       { return filepath.Base(i.f.name) }
func (i memInfo) Size() int64        { return int64(len(i.f.data)) }
func (i memInfo) Mode() fs.FileMode  { return 0o644 }
func (i memInfo) ModTime() time.Time { return time.Time{} }
func (i memInfo) IsDir() bool        { return false }
func (i memInfo) Sys() any           { return nil }

// makeVendorRepo writes the fixture, changed by r, into a new directory,
// and the zips of its modules into another.
func makeVendorRepo(t testing.TB, r vendorRepo) (dir string, zips vendorZips) {
	t.Helper()
	ar, err := txtar.ParseFile(vendorFixture)
	if err != nil {
		t.Fatal(err)
	}
	dir, zipDir := t.TempDir(), t.TempDir()
	repo := make(map[string]string)
	zipFiles := make(map[string][]modzip.File) // path@version → files
	var zipOrder []string
	for _, f := range ar.Files {
		rest, ok := strings.CutPrefix(f.Name, "zip/")
		if !ok {
			repo[f.Name] = string(f.Data)
			continue
		}
		path, rest, _ := strings.Cut(rest, "@")
		vers, name, _ := strings.Cut(rest, "/")
		mv := path + "@" + vers
		if _, ok := zipFiles[mv]; !ok {
			zipOrder = append(zipOrder, mv)
		}
		zipFiles[mv] = append(zipFiles[mv], memFile{name: name, data: f.Data})
	}
	for _, e := range r.edits {
		data, ok := repo[e.file]
		if !ok || strings.Count(data, e.old) != 1 {
			t.Fatalf("edit %s: %q is not in it once", e.file, e.old)
		}
		repo[e.file] = strings.Replace(data, e.old, e.new, 1)
	}
	for name, data := range r.add {
		repo[name] = data
	}
	for name, data := range repo {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o777); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o666); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range r.remove {
		if err := os.RemoveAll(filepath.Join(dir, filepath.FromSlash(name))); err != nil {
			t.Fatal(err)
		}
	}
	if r.setup != nil {
		r.setup(t, dir)
	}

	for mv, other := range r.serve {
		zipOrder = append(zipOrder, mv)
		zipFiles[mv] = zipFiles[other]
	}
	zips = vendorZips{files: make(map[string]string), fail: r.fail}
	for _, mv := range zipOrder {
		path, vers, _ := strings.Cut(mv, "@")
		var buf bytes.Buffer
		if err := modzip.Create(&buf, module.Version{Path: path, Version: vers}, zipFiles[mv]); err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(zipDir, strings.ReplaceAll(mv, "/", "_")+".zip")
		if err := os.WriteFile(file, buf.Bytes(), 0o666); err != nil {
			t.Fatal(err)
		}
		zips.files[mv] = file
	}
	for mv, other := range r.raw {
		zips.files[mv] = zips.files[other]
	}
	return dir, zips
}

// brief is what the tests compare of a Finding.
func brief(f Finding) string {
	return fmt.Sprintf("%s %s:%d", f.Kind, f.File, f.Line)
}

// symlink makes a symbolic link, or skips the test where it cannot.
func symlink(t testing.TB, target, name string) {
	t.Helper()
	if err := os.Symlink(target, name); err != nil {
		t.Skipf("no symbolic links here: %v", err)
	}
}

func TestCheckVendor(t *testing.T) {
	const mtxt = "vendor/modules.txt"
	tests := []struct {
		name string
		repo vendorRepo
		want []string // brief of each finding, in order
		// mention is in the message of every finding.
		mention string
	}{
		{
			name: "clean",
		},
		{
			name: "a vendored test that is in the zip",
			repo: vendorRepo{add: map[string]string{
				"vendor/example.com/m/m_test.go":  "package m\n",
				"vendor/example.com/m/other/o.go": "package other\n",
			}},
		},
		{
			name: "a workspace: modules.txt not compared, files are",
			repo: vendorRepo{
				add:   map[string]string{"go.work": "go 1.22\n\nuse .\n"},
				edits: []edit{{"vendor/example.com/m/m.go", `"example.com/dep"`, `"example.com/deq"`}},
			},
			want: []string{"vendor-modified vendor/example.com/m/m.go:0", "unverifiable vendor/modules.txt:0"},
		},
		{
			name: "a byte edited",
			repo: vendorRepo{edits: []edit{{"vendor/example.com/m/m.go", `"example.com/dep"`, `"example.com/deq"`}}},
			want: []string{"vendor-modified vendor/example.com/m/m.go:0"},
		},
		{
			name: "a byte appended",
			repo: vendorRepo{edits: []edit{{"vendor/example.com/m/internal/x/x.go", "package x\n", "package x\n\n"}}},
			want: []string{"vendor-modified vendor/example.com/m/internal/x/x.go:0"},
		},
		{
			name: "a byte removed",
			repo: vendorRepo{edits: []edit{{"vendor/example.com/m/sub/sub.go", "package sub\n", "package sub"}}},
			want: []string{"vendor-modified vendor/example.com/m/sub/sub.go:0"},
		},
		{
			name: "a replaced module's file edited",
			repo: vendorRepo{edits: []edit{{"vendor/example.com/r/r.go", "package r", "package R"}}},
			want: []string{"vendor-modified vendor/example.com/r/r.go:0"},
		},
		{
			name:    "a file added",
			repo:    vendorRepo{add: map[string]string{"vendor/example.com/m/evil.go": "package m\n"}},
			want:    []string{"vendor-extra vendor/example.com/m/evil.go:0"},
			mention: "not in the zip of example.com/m@v1.0.0",
		},
		{
			name:    "a file added to the nested module",
			repo:    vendorRepo{add: map[string]string{"vendor/example.com/m/sub/evil.go": "package sub\n"}},
			want:    []string{"vendor-extra vendor/example.com/m/sub/evil.go:0"},
			mention: "example.com/m/sub@v1.1.0",
		},
		{
			name: "files in no module",
			repo: vendorRepo{add: map[string]string{
				"vendor/example.com/other/o.go":  "package other\n",
				"vendor/README":                  "hi\n",
				"vendor/example.com/unused/u.go": "package unused\n",
			}},
			want: []string{
				"vendor-extra vendor/README:0",
				"vendor-extra vendor/example.com/other/o.go:0",
				"vendor-extra vendor/example.com/unused/u.go:0",
			},
			mention: "no module",
		},
		{
			name: "a symbolic link to a file",
			repo: vendorRepo{setup: func(t testing.TB, dir string) {
				symlink(t, "../../../go.mod", filepath.Join(dir, "vendor/example.com/m/link.go"))
			}},
			want:    []string{"vendor-extra vendor/example.com/m/link.go:0"},
			mention: "symbolic link",
		},
		{
			name: "a symbolic link to a directory",
			repo: vendorRepo{setup: func(t testing.TB, dir string) {
				symlink(t, "../../..", filepath.Join(dir, "vendor/example.com/m/up"))
			}},
			want:    []string{"vendor-extra vendor/example.com/m/up:0"},
			mention: "symbolic link",
		},
		{
			name: "a direct requirement not explicit",
			repo: vendorRepo{edits: []edit{{mtxt, "## explicit\nexample.com/nogo", "example.com/nogo"}}},
			want: []string{"modules-txt vendor/modules.txt:11"},
		},
		{
			name: "an indirect requirement not explicit",
			repo: vendorRepo{edits: []edit{{mtxt, "## explicit; go 1.21\nexample.com/dep\n", "## go 1.21\nexample.com/dep\n"}}},
			want: []string{"modules-txt vendor/modules.txt:1"},
		},
		{
			name: "a requirement not listed",
			repo: vendorRepo{edits: []edit{{"go.mod", "example.com/r v1.2.0\n)", "example.com/r v1.2.0\n\texample.com/more v1.0.0\n)"}}},
			want: []string{"modules-txt vendor/modules.txt:0"},
		},
		{
			name:    "explicit but not required",
			repo:    vendorRepo{edits: []edit{{mtxt, "# example.com/unused", "# example.com/extra v1.0.0\n## explicit\n# example.com/unused"}}},
			want:    []string{"modules-txt vendor/modules.txt:17"},
			mention: "example.com/extra@v1.0.0",
		},
		{
			name:    "another version in go.mod",
			repo:    vendorRepo{edits: []edit{{"go.mod", "example.com/m v1.0.0", "example.com/m v1.0.1"}}},
			want:    []string{"modules-txt vendor/modules.txt:4"},
			mention: "v1.0.1",
		},
		{
			name: "another version in vendor/modules.txt",
			repo: vendorRepo{
				edits: []edit{{mtxt, "# example.com/m v1.0.0", "# example.com/m v1.0.1"}},
				serve: map[string]string{"example.com/m@v1.0.1": "example.com/m@v1.0.0"},
			},
			want: []string{"modules-txt vendor/modules.txt:4"},
		},
		{
			name:    "another replacement in go.mod",
			repo:    vendorRepo{edits: []edit{{"go.mod", "=> example.com/fork v1.2.1", "=> example.com/fork v1.2.2"}}},
			want:    []string{"modules-txt vendor/modules.txt:14"},
			mention: "example.com/fork@v1.2.2",
		},
		{
			name: "replaced in vendor/modules.txt only",
			repo: vendorRepo{edits: []edit{{mtxt, "# example.com/dep v0.3.0", "# example.com/dep v0.3.0 => example.com/dep v0.3.0"}}},
			want: []string{"modules-txt vendor/modules.txt:1"},
		},
		{
			name: "replaced in go.mod only",
			repo: vendorRepo{edits: []edit{{"go.mod", "replace example.com/r v1.2.0", "replace example.com/dep v0.3.0 => example.com/dep v0.3.0\n\nreplace example.com/r v1.2.0"}}},
			want: []string{"modules-txt vendor/modules.txt:1"},
		},
		{
			name: "a replacement of all versions not recorded",
			repo: vendorRepo{edits: []edit{{mtxt, "# example.com/unused => example.com/unused2 v1.0.0\n", ""}}},
			want: []string{"modules-txt vendor/modules.txt:0"},
		},
		{
			name:    "another go annotation",
			repo:    vendorRepo{edits: []edit{{mtxt, "## explicit; go 1.21\nexample.com/m\n", "## explicit; go 1.22\nexample.com/m\n"}}},
			want:    []string{"modules-txt vendor/modules.txt:5"},
			mention: "go 1.21",
		},
		{
			name: "a go annotation missing",
			repo: vendorRepo{edits: []edit{{mtxt, "## explicit; go 1.20", "## explicit"}}},
			want: []string{"modules-txt vendor/modules.txt:8"},
		},
		{
			name: "a go annotation whose go.mod has none",
			repo: vendorRepo{edits: []edit{{mtxt, "## explicit\nexample.com/nogo", "## explicit; go 1.22\nexample.com/nogo"}}},
			want: []string{"modules-txt vendor/modules.txt:12"},
		},
		{
			name: "a module listed twice",
			repo: vendorRepo{edits: []edit{{mtxt, "# example.com/unused", "# example.com/nogo v1.0.0\n# example.com/unused"}}},
			want: []string{"modules-txt vendor/modules.txt:17"},
		},
		{
			name: "a package outside its module",
			repo: vendorRepo{edits: []edit{{mtxt, "example.com/m/internal/x\n", "example.com/m/internal/x\nexample.com/elsewhere\n"}}},
			want: []string{"modules-txt vendor/modules.txt:8"},
		},
		{
			name: "a module line go mod vendor does not write",
			repo: vendorRepo{edits: []edit{{mtxt, "# example.com/unused", "# example.com/stray v1.0.0\n# example.com/unused"}}},
			want: []string{"modules-txt vendor/modules.txt:17"},
		},
		{
			name: "replaced by a local directory",
			repo: vendorRepo{
				edits: []edit{
					{"go.mod", "require example.com/dep v0.3.0 // indirect\n", "require example.com/dep v0.3.0 // indirect\n\nrequire example.com/dep2 v0.0.0\n\nreplace example.com/dep2 => ./local/dep2\n"},
					{mtxt, "# example.com/m v1.0.0", "# example.com/dep2 v0.0.0 => ./local/dep2\n## explicit; go 1.20\nexample.com/dep2\n# example.com/m v1.0.0"},
					{mtxt, "# example.com/unused => example.com/unused2 v1.0.0\n", "# example.com/unused => example.com/unused2 v1.0.0\n# example.com/dep2 => ./local/dep2\n"},
				},
				add: map[string]string{
					"vendor/example.com/dep2/d.go": "package dep2\n",
					"local/dep2/go.mod":            "module example.com/dep2\n\ngo 1.20\n",
					"local/dep2/d.go":              "package dep2\n",
				},
			},
			want:    []string{"unverifiable vendor/modules.txt:4"},
			mention: "local directory ./local/dep2",
		},
		{
			name:    "no zip for a version",
			repo:    vendorRepo{fail: map[string]error{"example.com/m/sub@v1.1.0": fs.ErrNotExist}},
			want:    []string{"unverifiable vendor/modules.txt:8"},
			mention: "no zip",
		},
		{
			name: "no zip for a version, files edited",
			repo: vendorRepo{
				fail:  map[string]error{"example.com/fork@v1.2.1": fs.ErrNotExist},
				edits: []edit{{"vendor/example.com/r/r.go", "package r", "package R"}},
			},
			want: []string{"unverifiable vendor/modules.txt:14"},
		},
		{
			name: "go 1.13: no explicit, no replacement lines",
			repo: vendorRepo{edits: []edit{
				{"go.mod", "go 1.22", "go 1.13"},
				{mtxt, "## explicit\nexample.com/nogo", "example.com/nogo"},
				{mtxt, "# example.com/unused => example.com/unused2 v1.0.0\n", ""},
			}},
		},
		{
			name: "go 1.13: another version",
			repo: vendorRepo{edits: []edit{
				{"go.mod", "go 1.22", "go 1.13"},
				{"go.mod", "example.com/m v1.0.0", "example.com/m v1.0.1"},
			}},
			want: []string{"modules-txt vendor/modules.txt:4"},
		},
		{
			name: "go 1.16: no go annotations",
			repo: vendorRepo{edits: []edit{
				{"go.mod", "go 1.22", "go 1.16"},
				{mtxt, "## explicit; go 1.21\nexample.com/dep\n", "## explicit\nexample.com/dep\n"},
				{mtxt, "## explicit; go 1.21\nexample.com/m\n", "## explicit\nexample.com/m\n"},
				{mtxt, "## explicit; go 1.20", "## explicit"},
				{mtxt, "## explicit; go 1.22", "## explicit"},
			}},
		},
		{
			name: "no vendor/",
			repo: vendorRepo{remove: []string{"vendor"}},
		},
		{
			name: "no vendor/modules.txt",
			repo: vendorRepo{remove: []string{mtxt}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir, zips := makeVendorRepo(t, tt.repo)
			findings, err := CheckVendor(t.Context(), dir, zips)
			if err != nil {
				t.Fatalf("CheckVendor = %v, want no error", err)
			}
			var got []string
			for _, f := range findings {
				got = append(got, brief(f))
				if !strings.Contains(f.Message, tt.mention) {
					t.Errorf("CheckVendor: %v, want a message mentioning %q", f, tt.mention)
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("CheckVendor = %q, want %q\n%s", got, tt.want, findingLines(findings))
			}
			if len(tt.want) == 0 && findings != nil {
				t.Errorf("CheckVendor = %#v, want nil", findings)
			}
		})
	}
}

func findingLines(fs []Finding) string {
	var b strings.Builder
	for _, f := range fs {
		fmt.Fprintf(&b, "\t%v\n", f)
	}
	return b.String()
}

func TestCheckVendorErrors(t *testing.T) {
	const mtxt = "vendor/modules.txt"
	tests := []struct {
		name string
		repo vendorRepo
		want string // in the error
	}{
		{
			name: "malformed vendor/modules.txt",
			repo: vendorRepo{edits: []edit{{mtxt, "# example.com/nogo v1.0.0", "# example.com/nogo 1.0.0"}}},
			want: "vendor/modules.txt:11:",
		},
		{
			name: "malformed go.mod",
			repo: vendorRepo{edits: []edit{{"go.mod", "go 1.22\n", "go 1.22\nbogus\n"}}},
			want: "go.mod:4:",
		},
		{
			name: "no go.mod",
			repo: vendorRepo{remove: []string{"go.mod"}},
			want: "go.mod",
		},
		{
			name: "vendor/modules.txt a symbolic link",
			repo: vendorRepo{setup: func(t testing.TB, dir string) {
				name := filepath.Join(dir, "vendor/modules.txt")
				if err := os.Rename(name, filepath.Join(dir, "modules.txt")); err != nil {
					t.Fatal(err)
				}
				symlink(t, "../modules.txt", name)
			}},
			want: "vendor/modules.txt: not a regular file",
		},
		{
			name: "vendor a symbolic link",
			repo: vendorRepo{setup: func(t testing.TB, dir string) {
				if err := os.Rename(filepath.Join(dir, "vendor"), filepath.Join(dir, "elsewhere")); err != nil {
					t.Fatal(err)
				}
				symlink(t, "elsewhere", filepath.Join(dir, "vendor"))
			}},
			want: "vendor is a symbolic link",
		},
		{
			name: "zips fails",
			repo: vendorRepo{fail: map[string]error{"example.com/m@v1.0.0": errors.New("upstream down")}},
			want: "upstream down",
		},
		{
			name: "the zip of another module",
			repo: vendorRepo{raw: map[string]string{"example.com/m@v1.0.0": "example.com/dep@v0.3.0"}},
			want: "check zip of example.com/m@v1.0.0",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir, zips := makeVendorRepo(t, tt.repo)
			findings, err := CheckVendor(t.Context(), dir, zips)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("CheckVendor = %v, %v, want an error with %q", findings, err, tt.want)
			}
		})
	}
}

func TestCheckVendorCanceled(t *testing.T) {
	dir, zips := makeVendorRepo(t, vendorRepo{})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := CheckVendor(ctx, dir, zips); !errors.Is(err, context.Canceled) {
		t.Errorf("CheckVendor(canceled) = %v, want context.Canceled", err)
	}
}

// TestCheckVendorZipLimits serves zips that golang.org/x/mod/zip.Create
// would not make.
func TestCheckVendorZipLimits(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]int // name in the zip of example.com/m@v1.0.0 → size
		want  string
	}{
		{
			name:  "a go.mod too large",
			files: map[string]int{"go.mod": modzip.MaxGoMod + 1, "m.go": 3},
			want:  "go.mod file too large",
		},
		{
			name:  "a LICENSE too large",
			files: map[string]int{"LICENSE": modzip.MaxLICENSE + 1},
			want:  "LICENSE file too large",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, zips := makeVendorRepo(t, vendorRepo{})
			file := filepath.Join(t.TempDir(), "m.zip")
			var buf bytes.Buffer
			zw := zip.NewWriter(&buf)
			for name, size := range tt.files {
				w, err := zw.Create("example.com/m@v1.0.0/" + name)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := w.Write(bytes.Repeat([]byte{'\n'}, size)); err != nil {
					t.Fatal(err)
				}
			}
			if err := zw.Close(); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(file, buf.Bytes(), 0o666); err != nil {
				t.Fatal(err)
			}
			zips.files["example.com/m@v1.0.0"] = file
			findings, err := CheckVendor(t.Context(), dir, zips)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("CheckVendor = %v, %v, want an error with %q", findings, err, tt.want)
			}
		})
	}
}

func TestVendoredModules(t *testing.T) {
	tests := []struct {
		name string
		repo vendorRepo
		want []module.Version
	}{
		{
			name: "replaced, nested",
			want: []module.Version{
				{Path: "example.com/dep", Version: "v0.3.0"},
				{Path: "example.com/m", Version: "v1.0.0"},
				{Path: "example.com/m/sub", Version: "v1.1.0"},
				{Path: "example.com/nogo", Version: "v1.0.0"},
				{Path: "example.com/fork", Version: "v1.2.1"},
			},
		},
		{
			name: "two modules replaced by one, one by a directory",
			repo: vendorRepo{edits: []edit{
				{"vendor/modules.txt", "# example.com/dep v0.3.0", "# example.com/dep v0.3.0 => example.com/fork v1.2.1"},
				{"vendor/modules.txt", "# example.com/nogo v1.0.0", "# example.com/nogo v1.0.0 => ../nogo"},
			}},
			want: []module.Version{
				{Path: "example.com/fork", Version: "v1.2.1"},
				{Path: "example.com/m", Version: "v1.0.0"},
				{Path: "example.com/m/sub", Version: "v1.1.0"},
			},
		},
		{
			name: "no vendor/",
			repo: vendorRepo{remove: []string{"vendor"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, _ := makeVendorRepo(t, tt.repo)
			got, err := VendoredModules(dir)
			if err != nil || !slices.Equal(got, tt.want) {
				t.Errorf("VendoredModules = %v, %v, want %v", got, err, tt.want)
			}
		})
	}
}

// parseTests are modules.txt files, and the seeds of FuzzModulesTxt.
var parseTests = []struct {
	name    string
	in      string
	want    string // modules, packages and annotations, as summary says
	wantErr string
}{
	{
		name: "as go mod vendor writes it",
		in:   "# a.com/m v1.0.0\n## explicit; go 1.21\na.com/m\na.com/m/p\n# b.com/r v1.2.0 => c.com/f v1.2.1\n## explicit\nb.com/r\n# d.com/x => ../x\n",
		want: "a.com/m@v1.0.0 explicit go1.21 [a.com/m a.com/m/p]; b.com/r@v1.2.0=>c.com/f@v1.2.1 explicit [b.com/r]; d.com/x=>../x",
	},
	{
		name: "go work vendor",
		in:   "## workspace\n# a.com/m v1.0.0\n## explicit\n",
		want: "a.com/m@v1.0.0 explicit",
	},
	{
		name: "CRLF, blank lines, annotations split and reserved",
		in:   "# a.com/m v1.0.0\r\n## explicit\r\n## go 1.22; future thing\r\n\r\na.com/m\r\n",
		want: "a.com/m@v1.0.0 explicit go1.22 [a.com/m]",
	},
	{
		name: "local path without a dot",
		in:   "# mylib v0.0.0 => ./mylib\nmylib\n",
		want: "mylib@v0.0.0=>./mylib [mylib]",
	},
	{name: "empty", in: ""},
	{name: "no version", in: "# a.com/m\n", wantErr: ":1:"},
	{name: "not canonical", in: "# a.com/m v1.0\n", wantErr: ":1:"},
	{name: "not a version", in: "# a.com/m 1.0.0\n", wantErr: ":1:"},
	{name: "replacement without version not a directory", in: "# a.com/m v1.0.0 => b.com/m\n", wantErr: ":1:"},
	{name: "directory with a version", in: "# a.com/m v1.0.0 => ../m v1.0.0\n", wantErr: ":1:"},
	{name: "too many fields", in: "# a.com/m v1.0.0 => b.com/m v1.0.0 x\n", wantErr: ":1:"},
	{name: "arrow without replacement", in: "# a.com/m v1.0.0 =>\n", wantErr: ":1:"},
	{name: "bad path", in: "# a.com/../m v1.0.0\n", wantErr: ":1:"},
	{name: "hash without space", in: "# a.com/m v1.0.0\n#a.com/m\n", wantErr: ":2:"},
	{name: "package before module", in: "a.com/m\n", wantErr: ":1:"},
	{name: "package under a replacement of all versions", in: "# a.com/m => ../m\na.com/m\n", wantErr: ":2:"},
	{name: "two packages on a line", in: "# a.com/m v1.0.0\na.com/m a.com/m/p\n", wantErr: ":2:"},
	{name: "bad package", in: "# a.com/m v1.0.0\na.com/m/../p\n", wantErr: ":2:"},
}

// summary describes what parseModulesTxt read.
func summary(mods []*vendoredModule) string {
	var parts []string
	for _, m := range mods {
		s := describe(m.mod)
		if m.replacement.Path != "" {
			s += "=>" + describe(m.replacement)
		}
		if m.explicit {
			s += " explicit"
		}
		if m.goVersion != "" {
			s += " go" + m.goVersion
		}
		if len(m.packages) > 0 {
			s += fmt.Sprint(" ", m.packages)
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "; ")
}

func TestParseModulesTxt(t *testing.T) {
	for _, tt := range parseTests {
		t.Run(tt.name, func(t *testing.T) {
			mods, err := parseModulesTxt([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), modulesTxtFile+tt.wantErr) {
					t.Fatalf("parseModulesTxt(%q) = %s, %v, want an error at %q", tt.in, summary(mods), err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseModulesTxt(%q) = %v", tt.in, err)
			}
			if got := summary(mods); got != tt.want {
				t.Errorf("parseModulesTxt(%q) = %s, want %s", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseModulesTxtLimit(t *testing.T) {
	in := bytes.Repeat([]byte("\n"), maxModulesTxt+1)
	if _, err := parseModulesTxt(in); err == nil {
		t.Errorf("parseModulesTxt(%d bytes) = nil error, want one", len(in))
	}
}

// fuzzGoMod is the go.mod FuzzModulesTxt checks modules.txt files against.
const fuzzGoMod = `module a.com/main

go 1.22

require (
	a.com/m v1.0.0
	b.com/r v1.2.0 // indirect
)

replace b.com/r v1.2.0 => c.com/f v1.2.1

replace d.com/x => ../x
`

func FuzzModulesTxt(f *testing.F) {
	for _, tt := range parseTests {
		f.Add([]byte(tt.in))
	}
	if ar, err := txtar.ParseFile(vendorFixture); err == nil {
		for _, file := range ar.Files {
			if file.Name == modulesTxtFile {
				f.Add(file.Data)
			}
		}
	}
	gomod, err := modfile.Parse("go.mod", []byte(fuzzGoMod), nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		mods, err := parseModulesTxt(data)
		if err != nil {
			return
		}
		lines := bytes.Count(data, []byte("\n")) + 1
		packages := 0
		for _, m := range mods {
			if m.line < 1 || m.line > lines || m.goLine > lines {
				t.Fatalf("module %v on line %d (go on %d) of %d", m.mod, m.line, m.goLine, lines)
			}
			if len(m.packages) != len(m.packageLine) {
				t.Fatalf("module %v: %d packages on %d lines", m.mod, len(m.packages), len(m.packageLine))
			}
			if len(m.packages) > 0 && m.mod.Version == "" {
				t.Fatalf("module %v without a version has packages", m.mod)
			}
			if m.mod.Version == "" && m.replacement.Path == "" {
				t.Fatalf("module %v has neither a version nor a replacement", m.mod)
			}
			packages += len(m.packages)
		}
		// One line, one module or one package at most.
		if len(mods)+packages > lines {
			t.Fatalf("%d modules and %d packages from %d lines", len(mods), packages, lines)
		}
		for _, fd := range checkModulesTxt(mods, gomod) {
			if fd.Kind != KindModulesTxt || fd.File != modulesTxtFile || fd.Line < 0 || fd.Line > lines {
				t.Fatalf("checkModulesTxt: %v", fd)
			}
		}
		for _, g := range zipGroups(mods) {
			if len(g.mods) == 0 || g.zip.Path == "" {
				t.Fatalf("zipGroups: %+v", g)
			}
		}
	})
}
