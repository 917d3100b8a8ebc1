package repocheck_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/mod/module"

	"github.com/modgate/modgate/integration/testproxy"
	"github.com/modgate/modgate/repocheck"
)

// database opens the hermetic upstream's checksum database, as modgate
// check reads it through a gateway's /sumdb/NAME.
func database(t *testing.T) (*repocheck.Database, []*testproxy.Module) {
	t.Helper()
	mods := testproxy.Fixtures(t)
	var public []*testproxy.Module
	for _, m := range mods {
		if !strings.HasPrefix(m.Path, "corp.example/") {
			public = append(public, m)
		}
	}
	p := testproxy.Start(t, public)
	db, err := repocheck.OpenDatabase(t.Context(), p.VerifierKey, t.TempDir(), repocheck.HTTPFetch(http.DefaultClient, p.URL+"/sumdb/"+p.SumDB, nil))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db, mods
}

func goSum(t *testing.T, mods []*testproxy.Module) string {
	t.Helper()
	var b strings.Builder
	for _, m := range mods {
		s, err := m.GoSum()
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString(s)
	}
	return b.String()
}

func TestCheckSums(t *testing.T) {
	db, mods := database(t)
	clean := goSum(t, mods)
	private := func(path string) bool { return module.MatchPrefixPatterns("corp.example", path) }
	flip := func(s, line string) string {
		i := strings.Index(s, line)
		j := i + strings.Index(s[i:], "h1:") + 3
		c := byte('A')
		if s[j] == 'A' {
			c = 'B'
		}
		return s[:j] + string(c) + s[j+1:]
	}
	tests := []struct {
		name  string
		sum   string
		kinds []string // of the findings, in order
		line  int      // of the first finding
	}{
		{"clean", clean, []string{repocheck.KindUnverifiable, repocheck.KindUnverifiable}, 1}, // the private module's two lines
		{"forged zip hash", flip(clean, "example.com/a v1.0.0 "), []string{repocheck.KindUnverifiable, repocheck.KindUnverifiable, repocheck.KindForgedSum}, 1},
		{"unknown version", clean + "example.com/a v1.9.9 h1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n", []string{repocheck.KindUnverifiable, repocheck.KindUnverifiable, repocheck.KindUnknownVersion}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "go.sum"), []byte(tt.sum), 0o644); err != nil {
				t.Fatal(err)
			}
			findings, n, err := repocheck.CheckSums(t.Context(), dir, repocheck.SumsConfig{DB: db, Private: private})
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]bool{}
			for _, line := range strings.Split(strings.TrimSpace(tt.sum), "\n") {
				f := strings.Fields(line)
				want[f[0]+"@"+strings.TrimSuffix(f[1], "/go.mod")] = true
			}
			if n != len(want) {
				t.Errorf("counted %d module versions, want %d", n, len(want))
			}
			var kinds []string
			for _, f := range findings {
				kinds = append(kinds, f.Kind)
			}
			if strings.Join(kinds, ",") != strings.Join(tt.kinds, ",") {
				t.Fatalf("findings %v, want kinds %v", findings, tt.kinds)
			}
			for _, f := range findings {
				if f.File != "go.sum" || f.Line == 0 || f.Message == "" {
					t.Errorf("finding without a place or a message: %+v", f)
				}
			}
			last := findings[len(findings)-1]
			if lines := strings.Split(tt.sum, "\n"); last.Kind != repocheck.KindUnverifiable && !strings.HasPrefix(lines[last.Line-1], last.Module+" "+last.Version+" ") {
				t.Errorf("finding %+v points at line %q", last, lines[last.Line-1])
			}
		})
	}
}

func TestCheckSumsErrors(t *testing.T) {
	db, _ := database(t)
	for _, sum := range []string{
		"example.com/a v1.0.0\n",
		"example.com/a not-a-version h1:x\n",
		"../evil v1.0.0 h1:x\n",
	} {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "go.sum"), []byte(sum), 0o644)
		if _, _, err := repocheck.CheckSums(t.Context(), dir, repocheck.SumsConfig{DB: db}); err == nil || !strings.Contains(err.Error(), "go.sum:1") {
			t.Errorf("go.sum %q: %v, want an error naming go.sum:1", sum, err)
		}
	}
	// A database that cannot be reached: not a finding, an error.
	down, err := repocheck.OpenDatabase(t.Context(), testproxy.NewKey(t).Verifier, t.TempDir(), func(context.Context, string) ([]byte, error) {
		return nil, os.ErrDeadlineExceeded
	})
	if err != nil {
		t.Fatal(err)
	}
	defer down.Close()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "go.sum"), []byte("example.com/a v1.0.0 h1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"), 0o644)
	if _, _, err := repocheck.CheckSums(t.Context(), dir, repocheck.SumsConfig{DB: down}); err == nil {
		t.Errorf("an unreachable database: nil error")
	}
}
