package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/modgate/modgate/integration/testproxy"
)

// BenchmarkCheck times modgate check of a repository with 300
// dependencies, each vendored (a package of two files), through a gateway
// with the hermetic checksum database:
//
//   - cold: the gateway's cache, the check's checksum-database state and
//     the module cache all empty (every zip comes through the gateway,
//     which fetches and verifies it);
//   - warm: the same check again.
//
// It runs its own fixed rounds (run it with -benchtime=1x).
func BenchmarkCheck(b *testing.B) {
	mods, fsys := syntheticModules(b, 300)
	public := testproxy.Start(b, mods)
	g := startModgate(b, fmt.Sprintf("upstreams:\n  - name: public\n    url: %s\nsumdb: [%s]\nsumdb_key: %s\n", public.URL, public.SumDB, public.VerifierKey))

	dir := b.TempDir()
	var gomod, sum, txt strings.Builder
	gomod.WriteString("module example.net/big\n\ngo 1.22\n\nrequire (\n")
	for _, m := range mods {
		s, err := m.GoSum()
		if err != nil {
			b.Fatal(err)
		}
		sum.WriteString(s)
		fmt.Fprintf(&gomod, "\t%s %s\n", m.Path, m.Version)
		fmt.Fprintf(&txt, "# %s %s\n## explicit; go 1.21\n%s\n", m.Path, m.Version, m.Path)
		vdir := filepath.Join(dir, "vendor", filepath.FromSlash(m.Path))
		if err := os.MkdirAll(vdir, 0o755); err != nil {
			b.Fatal(err)
		}
		for _, f := range []string{"dep.go", "util.go"} {
			data := fsys[strings.TrimPrefix(m.Path, "example.com/")+".txtar"].Data
			_, body, _ := strings.Cut(string(data), "-- "+f+" --\n")
			body, _, _ = strings.Cut(body, "-- ")
			if err := os.WriteFile(filepath.Join(vdir, f), []byte(body), 0o644); err != nil {
				b.Fatal(err)
			}
		}
	}
	gomod.WriteString(")\n")
	for name, data := range map[string]string{"go.mod": gomod.String(), "go.sum": sum.String(), "vendor/modules.txt": txt.String()} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	env := testproxy.GoEnv(b, g.URL, public.VerifierKey)
	run := func() time.Duration {
		start := time.Now()
		out, stderr, code := runCheckTB(b, env, dir)
		if code != 0 {
			b.Fatalf("modgate check = %d\n%s%s", code, out, stderr)
		}
		return time.Since(start)
	}
	for range b.N {
		cold := run()
		warm := run()
		b.ReportMetric(cold.Seconds(), "cold-s")
		b.ReportMetric(warm.Seconds(), "warm-s")
	}
}

// syntheticModules makes n small modules, example.com/depNNN v1.0.0, each
// a package of two files and a test, and returns them with the fixtures
// they were loaded from.
func syntheticModules(tb testing.TB, n int) ([]*testproxy.Module, fstest.MapFS) {
	tb.Helper()
	fsys := fstest.MapFS{}
	for i := range n {
		path := fmt.Sprintf("example.com/dep%03d", i)
		fsys[fmt.Sprintf("dep%03d.txtar", i)] = &fstest.MapFile{Data: []byte(fmt.Sprintf(
			"module %[1]s\nversion v1.0.0\n-- go.mod --\nmodule %[1]s\n\ngo 1.21\n-- dep.go --\npackage dep%03[2]d\n\nconst N = %[2]d\n-- util.go --\npackage dep%03[2]d\n\nfunc Twice() int { return 2 * N }\n-- dep_test.go --\npackage dep%03[2]d\n", path, i))}
	}
	mods, err := testproxy.Load(fsys)
	if err != nil {
		tb.Fatal(err)
	}
	return mods, fsys
}
