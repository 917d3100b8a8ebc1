package repocheck_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/modgate/modgate/repocheck"
)

// gateFunc is a Gate: the gateway's answers, as the test gives them.
type gateFunc func(path, version string) (bool, string, error)

func (f gateFunc) Admits(_ context.Context, path, version string) (bool, string, error) {
	return f(path, version)
}

func TestCheckGate(t *testing.T) {
	dir := t.TempDir()
	sum := "example.com/a v1.0.0 h1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n" +
		"example.com/a v1.0.0/go.mod h1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n" +
		"example.com/b v1.0.0/go.mod h1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n" +
		"example.com/c v1.0.0 h1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"
	os.WriteFile(filepath.Join(dir, "go.sum"), []byte(sum), 0o644)
	var asked []string
	g := gateFunc(func(path, version string) (bool, string, error) {
		asked = append(asked, path+"@"+version)
		if path == "example.com/c" {
			return false, "held back by the cooldown until 2026-12-10", nil
		}
		return true, "", nil
	})
	findings, err := repocheck.CheckGate(t.Context(), dir, g, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(asked) != 2 || strings.Contains(strings.Join(asked, " "), "example.com/b") {
		t.Errorf("asked about %q, want the two versions whose zips go.sum records", asked)
	}
	if len(findings) != 1 || findings[0].Kind != repocheck.KindRefused || findings[0].Line != 4 || !strings.Contains(findings[0].Message, "cooldown until 2026-12-10") {
		t.Errorf("findings %+v, want one refusal on go.sum:4 with the gateway's reason", findings)
	}
	down := gateFunc(func(string, string) (bool, string, error) { return false, "", errors.New("connection refused") })
	if _, err := repocheck.CheckGate(t.Context(), dir, down, 4); err == nil {
		t.Errorf("a gateway that cannot be asked: nil error")
	}
}
