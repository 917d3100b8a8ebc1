package vulndb

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func loadTestdata(t testing.TB) *DB {
	t.Helper()
	db, err := Load(t.Context(), Source{URL: fileURL(t, "testdata/db")})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return db
}

func TestVulns(t *testing.T) {
	db := loadTestdata(t)
	type want struct{ id, fixed string }
	tests := []struct {
		name, path, version string
		want                []want
	}{
		{"before the fix", "example.com/vuln", "v1.0.0", []want{{"GO-2026-0001", "v1.0.1"}}},
		{"introduced 0 covers v0", "example.com/vuln", "v0.0.1", []want{{"GO-2026-0001", "v1.0.1"}}},
		{"the fix", "example.com/vuln", "v1.0.1", nil},
		{"after the fix", "example.com/vuln", "v1.5.0", nil},
		{"pseudo-version before the fix", "example.com/vuln", "v1.0.1-0.20260101000000-abcdefabcdef", []want{{"GO-2026-0001", "v1.0.1"}}},
		{"pseudo-version after the fix", "example.com/vuln", "v1.0.2-0.20260101000000-abcdefabcdef", nil},
		{"prerelease of the fix", "example.com/vuln", "v1.0.1-rc.1", []want{{"GO-2026-0001", "v1.0.1"}}},
		{"build metadata ignored", "example.com/vuln", "v1.0.0+meta", []want{{"GO-2026-0001", "v1.0.1"}}},
		{"not canonical", "example.com/vuln", "v1.0", []want{{"GO-2026-0001", "v1.0.1"}}},
		{"invalid version", "example.com/vuln", "1.0.0", nil},
		{"other module", "example.com/vuln/v2", "v2.0.0", nil},
		{"no fix: before", "example.com/nofix", "v0.9.9", nil},
		{"no fix: introduced", "example.com/nofix", "v1.0.0", []want{{"GO-2026-0002", ""}}},
		{"no fix: later", "example.com/nofix", "v9.0.0", []want{{"GO-2026-0002", ""}}},
		{"no fix: prerelease before", "example.com/nofix", "v1.0.0-rc.1", nil},
		{"introduced 0 only", "example.com/always", "v0.0.0-20190101000000-abcdefabcdef", []want{{"GO-2026-0003", ""}}},
		{"withdrawn", "example.com/withdrawn", "v1.0.0", nil},
		{"two ranges: first", "example.com/multi", "v1.2.3", []want{{"GO-2026-0007", "v1.2.4"}}},
		{"two ranges: between", "example.com/multi", "v1.9.0", nil},
		{"two ranges: second", "example.com/multi", "v2.0.5", []want{{"GO-2026-0007", "v2.1.0"}}},
		{"two ranges: after", "example.com/multi", "v2.1.0", nil},
		{"two ranges: before", "example.com/multi", "v0.9.0", nil},
		{"two entries: first", "example.com/two", "v1.0.0", []want{{"GO-2026-0007", "v1.1.0"}}},
		{"two entries: second", "example.com/two", "v1.1.0", []want{{"GO-2026-0008", "v1.2.0"}}},
		{"+incompatible", "example.com/incompat", "v4.0.0+incompatible", []want{{"GO-2026-0008", "v4.0.1+incompatible"}}},
		{"+incompatible fixed", "example.com/incompat", "v4.0.1+incompatible", nil},
		{"stdlib itself", "stdlib", "v1.21.5", []want{{"GO-2026-0005", "v1.21.6"}}},
		{"toolchain: stdlib and toolchain", "golang.org/toolchain", "v0.0.1-go1.21.3.linux-amd64",
			[]want{{"GO-2026-0005", "v0.0.1-go1.21.6.linux-amd64"}, {"GO-2026-0006", "v0.0.1-go1.21.4.linux-amd64"}}},
		{"toolchain: stdlib only", "golang.org/toolchain", "v0.0.1-go1.21.5.windows-arm64",
			[]want{{"GO-2026-0005", "v0.0.1-go1.21.6.windows-arm64"}}},
		{"toolchain: fixed", "golang.org/toolchain", "v0.0.1-go1.21.6.linux-amd64", nil},
		{"toolchain: release candidate", "golang.org/toolchain", "v0.0.1-go1.22rc1.darwin-arm64",
			[]want{{"GO-2026-0005", "v0.0.1-go1.22.1.darwin-arm64"}}},
		{"toolchain: go1.21 is go1.21.0", "golang.org/toolchain", "v0.0.1-go1.21.linux-386",
			[]want{{"GO-2026-0005", "v0.0.1-go1.21.6.linux-386"}, {"GO-2026-0006", "v0.0.1-go1.21.4.linux-386"}}},
		{"toolchain: not a toolchain version", "golang.org/toolchain", "v1.0.0", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []want
			for _, v := range db.Vulns(tt.path, tt.version) {
				got = append(got, want{v.ID, v.Fixed})
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("Vulns(%s, %s) = %v, want %v", tt.path, tt.version, got, tt.want)
			}
		})
	}
	if got := db.Vulns("example.com/vuln", "v1.0.0")[0]; got.Summary != "Remote code execution in example.com/vuln" || !slices.Equal(got.Aliases, []string{"CVE-2026-1001"}) {
		t.Errorf("Vulns(example.com/vuln, v1.0.0)[0] = %+v, want its summary and alias", got)
	}
}

func TestLoad(t *testing.T) {
	up := newUpstream(t, "testdata/db")
	for _, src := range []Source{
		{URL: fileURL(t, "testdata/db")},
		{URL: fileURL(t, "testdata/db") + "/"},
		{URL: up.srv.URL},
	} {
		db, err := Load(t.Context(), src)
		if err != nil {
			t.Fatalf("Load(%s): %v", src.URL, err)
		}
		if db.Len() != 8 || !db.Modified().Equal(dbModified) {
			t.Errorf("Load(%s) = %d entries modified %v, want 8 modified %v", src.URL, db.Len(), db.Modified(), dbModified)
		}
		if db.Size() < 1000 {
			t.Errorf("Load(%s).Size() = %d, want the bytes of the files", src.URL, db.Size())
		}
		if want := []string{"GO-2026-0001", "GO-2026-0002", "GO-2026-0003", "GO-2026-0004", "GO-2026-0005", "GO-2026-0006", "GO-2026-0007", "GO-2026-0008"}; !slices.Equal(db.IDs(), want) {
			t.Errorf("Load(%s).IDs() = %v, want %v", src.URL, db.IDs(), want)
		}
	}
	if got := up.count("/ID/"); got != 8 {
		t.Errorf("Load over HTTP fetched %d entries, want 8", got)
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name   string
		change func(t *testing.T, dir string)
		want   string
	}{
		{"missing entry", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, "ID", "GO-2026-0003.json"))
		}, "GO-2026-0003"},
		{"no db.json", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, "index", "db.json"))
		}, "index/db.json"},
		{"entry too large", func(t *testing.T, dir string) {
			data := osvJSON("GO-2026-0003", "example.com/always", time.Date(2026, 10, 3, 12, 0, 0, 0, time.UTC), [2]string{"introduced", "0"})
			data = append(data[:len(data)-1], []byte(`,"details":"`+strings.Repeat("x", maxEntryBytes)+`"}`)...)
			os.WriteFile(filepath.Join(dir, "ID", "GO-2026-0003.json"), data, 0o644)
		}, "larger than"},
		{"entry modified differs from the index", func(t *testing.T, dir string) {
			data := osvJSON("GO-2026-0003", "example.com/always", time.Date(2026, 10, 4, 0, 0, 0, 0, time.UTC), [2]string{"introduced", "0"})
			os.WriteFile(filepath.Join(dir, "ID", "GO-2026-0003.json"), data, 0o644)
		}, "index/modules.json says"},
		{"index lists an entry newer than the database", func(t *testing.T, dir string) {
			setModified(t, dir, time.Date(2026, 10, 2, 0, 0, 0, 0, time.UTC))
		}, "after the database"},
		{"bad ID in the index", func(t *testing.T, dir string) {
			writeJSON(t, filepath.Join(dir, "index", "modules.json"), []any{map[string]any{"path": "example.com/x", "vulns": []any{map[string]string{"id": "../../etc/passwd", "modified": "2026-10-01T00:00:00Z"}}}})
		}, "bad vulnerability ID"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := copyDB(t)
			tt.change(t, dir)
			_, err := Load(t.Context(), Source{URL: fileURL(t, dir)})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Load = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestDefaultGetLimits(t *testing.T) {
	dir := copyDB(t)
	big := make([]byte, maxEntryBytes+1)
	os.WriteFile(filepath.Join(dir, "ID", "GO-2026-0009.json"), big, 0o644)
	get := defaultGet(nil)
	if _, err := get(t.Context(), fileURL(t, dir)+"/ID/GO-2026-0009.json"); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("get(oversized entry) = %v, want longer than", err)
	}
	up := newUpstream(t, dir)
	getHTTP := defaultGet(up.srv.Client())
	if _, err := getHTTP(t.Context(), up.srv.URL+"/ID/GO-2026-0009.json"); err == nil || !strings.Contains(err.Error(), "longer than") {
		t.Errorf("GET(oversized entry) = %v, want longer than", err)
	}
	if _, err := getHTTP(t.Context(), up.srv.URL+"/ID/GO-2026-9999.json"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("GET(missing entry) = %v, want fs.ErrNotExist", err)
	}
	if _, err := getHTTP(t.Context(), up.srv.URL+"/index/modules.json"); err != nil {
		t.Errorf("GET(index/modules.json) = %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := getHTTP(ctx, up.srv.URL+"/index/db.json"); !errors.Is(err, context.Canceled) {
		t.Errorf("GET with a canceled context = %v, want context.Canceled", err)
	}
}

func TestToolchainVersions(t *testing.T) {
	tests := []struct {
		in          string
		gov, suffix string
		ok          bool
	}{
		{"v0.0.1-go1.21.5.linux-amd64", "v1.21.5", ".linux-amd64", true},
		{"v0.0.1-go1.21.linux-amd64", "v1.21.0", ".linux-amd64", true},
		{"v0.0.1-go1.22rc1.linux-amd64", "v1.22.0-rc.1", ".linux-amd64", true},
		{"v0.0.1-go1.21.0rc2.windows-386", "v1.21.0-rc.2", ".windows-386", true},
		{"v0.0.1-go1.21beta1.linux-amd64", "v1.21.0-beta.1", ".linux-amd64", true},
		{"v0.0.1-go1.21.5", "", "", false},
		{"v0.0.1-go1.21.5.linuxamd64", "", "", false},
		{"v0.0.1-go1.linux-amd64", "", "", false},
		{"v0.0.1-go1.021.0.linux-amd64", "", "", false},
		{"v0.0.1-go1.21rc.linux-amd64", "", "", false},
		{"v0.0.2-go1.21.5.linux-amd64", "", "", false},
	}
	for _, tt := range tests {
		gov, suffix, ok := parseToolchainVersion(tt.in)
		if gov != tt.gov || suffix != tt.suffix || ok != tt.ok {
			t.Errorf("parseToolchainVersion(%q) = %q, %q, %v, want %q, %q, %v", tt.in, gov, suffix, ok, tt.gov, tt.suffix, tt.ok)
		}
	}
	for _, tt := range []struct{ v, want string }{
		{"v1.21.6", "v0.0.1-go1.21.6.linux-amd64"},
		{"v1.22.0-rc.1", "v0.0.1-go1.22rc1.linux-amd64"},
		{"v1.21.1-rc.1", "v0.0.1-go1.21.1rc1.linux-amd64"},
	} {
		if got := toolchainVersion(tt.v, ".linux-amd64"); got != tt.want {
			t.Errorf("toolchainVersion(%q) = %q, want %q", tt.v, got, tt.want)
		}
	}
}

func FuzzToolchainVersion(f *testing.F) {
	for _, s := range []string{"v0.0.1-go1.21.5.linux-amd64", "v0.0.1-go1.22rc1.linux-amd64", "v0.0.1-go1.21.linux-386", "v0.0.1-go1.21.0beta1.a-b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		gov, suffix, ok := parseToolchainVersion(s)
		if !ok {
			return
		}
		back := toolchainVersion(gov, suffix)
		gov2, suffix2, ok := parseToolchainVersion(back)
		if !ok || gov2 != gov || suffix2 != suffix {
			t.Errorf("parseToolchainVersion(%q) = %q, %q; toolchainVersion = %q, which parses as %q, %q, %v", s, gov, suffix, back, gov2, suffix2, ok)
		}
	})
}
