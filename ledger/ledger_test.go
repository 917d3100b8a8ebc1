package ledger

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

const (
	hashA = "h1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
	hashB = "h1:BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB="
)

func open(t *testing.T, path string) *Ledger {
	t.Helper()
	l, err := Open(path, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func TestCheck(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger")
	l := open(t, path)
	steps := []struct {
		mod, vers, hash string
		wantFirst       bool
		wantMismatch    bool
	}{
		{"corp.example/m", "v1.0.0", hashA, true, false},
		{"corp.example/m", "v1.0.0/go.mod", hashB, true, false},
		{"corp.example/m", "v1.0.0", hashA, false, false},
		{"corp.example/m", "v1.0.0", hashB, false, true},
		{"corp.example/m", "v1.0.0/go.mod", hashA, false, true},
		{"corp.example/m/v2", "v2.0.0", hashB, true, false},
	}
	for _, s := range steps {
		first, err := l.Check(t.Context(), s.mod, s.vers, s.hash)
		var me *MismatchError
		if first != s.wantFirst || errors.As(err, &me) != s.wantMismatch || (err != nil && !s.wantMismatch) {
			t.Errorf("Check(%s %s %s) = %v, %v; want first %v, mismatch %v", s.mod, s.vers, s.hash, first, err, s.wantFirst, s.wantMismatch)
		}
	}
	for _, bad := range [][3]string{
		{"Corp.example/m", "v1.0.0", hashA},
		{"corp.example/m", "v1.0", hashA},
		{"corp.example/m", "v2.0.0", hashA},
		{"corp.example/m", "v1.0.0", "sha256:x"},
		{"corp.example/m", "v1.0.0", "h1:short"},
	} {
		if _, err := l.Check(t.Context(), bad[0], bad[1], bad[2]); err == nil {
			t.Errorf("Check(%q) accepted a malformed entry", bad)
		}
	}

	// It survives a restart, and mismatches are still refused.
	l.Close()
	l2 := open(t, path)
	if first, err := l2.Check(t.Context(), "corp.example/m", "v1.0.0", hashA); first || err != nil {
		t.Errorf("after restart: Check(recorded hash) = %v, %v", first, err)
	}
	var me *MismatchError
	if _, err := l2.Check(t.Context(), "corp.example/m", "v1.0.0", hashB); !errors.As(err, &me) || me.Recorded != hashA {
		t.Errorf("after restart: Check(other hash) = %v, want a mismatch against %s", err, hashA)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if entries, err := Read(f); err != nil || len(entries) != 3 {
		t.Errorf("Read = %d entries, %v; want 3 and no error", len(entries), err)
	}
}

func TestConcurrentFirstUse(t *testing.T) {
	l := open(t, filepath.Join(t.TempDir(), "ledger"))
	var mu sync.Mutex
	firsts := 0
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			first, err := l.Check(t.Context(), "corp.example/m", "v1.0.0", hashA)
			if err != nil {
				t.Error(err)
			}
			if first {
				mu.Lock()
				firsts++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if firsts != 1 {
		t.Errorf("%d callers recorded the hash first, want 1", firsts)
	}
}

// ledgerText returns a valid three-line ledger.
func ledgerText(t *testing.T) []string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ledger")
	l := open(t, path)
	for _, v := range []string{"v1.0.0", "v1.1.0", "v1.2.0"} {
		if _, err := l.Check(t.Context(), "corp.example/m", v, hashA); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(data), "\n")
	return lines[:len(lines)-1] // each with its newline
}

func TestReadDetectsTampering(t *testing.T) {
	lines := ledgerText(t)
	tests := []struct {
		name     string
		edit     func([]string) []string
		wantLine int
	}{
		{"edited hash", func(l []string) []string {
			l[1] = strings.Replace(l[1], hashA, hashB, 1)
			return l
		}, 2},
		{"edited version", func(l []string) []string {
			l[0] = strings.Replace(l[0], "v1.0.0", "v1.0.1", 1)
			return l
		}, 1},
		{"deleted line", func(l []string) []string { return append(l[:1], l[2:]...) }, 2},
		{"reordered", func(l []string) []string {
			l[0], l[1] = l[1], l[0]
			return l
		}, 1},
		{"junk line", func(l []string) []string { return append(l[:1:1], append([]string{"junk\n"}, l[1:]...)...) }, 2},
	}
	for _, tt := range tests {
		text := strings.Join(tt.edit(append([]string(nil), lines...)), "")
		_, err := Read(strings.NewReader(text))
		var ce *ChainError
		if !errors.As(err, &ce) || ce.Line != tt.wantLine {
			t.Errorf("%s: Read = %v, want a chain error at line %d", tt.name, err, tt.wantLine)
		}
		// A tampered ledger is refused at open.
		path := filepath.Join(t.TempDir(), "ledger")
		os.WriteFile(path, []byte(text), 0o640)
		if l, err := Open(path, slog.New(slog.DiscardHandler)); err == nil {
			l.Close()
			t.Errorf("%s: Open accepted a tampered ledger", tt.name)
		}
	}
}

func TestTornFinalLine(t *testing.T) {
	lines := ledgerText(t)
	path := filepath.Join(t.TempDir(), "ledger")
	torn := strings.Join(lines[:2], "") + lines[2][:20] // no newline: a crash mid-append
	if err := os.WriteFile(path, []byte(torn), 0o640); err != nil {
		t.Fatal(err)
	}
	l := open(t, path)
	if first, err := l.Check(t.Context(), "corp.example/m", "v1.2.0", hashB); !first || err != nil {
		t.Errorf("Check of the torn entry's version = %v, %v; want recorded afresh", first, err)
	}
	if first, err := l.Check(t.Context(), "corp.example/m", "v1.1.0", hashA); first || err != nil {
		t.Errorf("Check of an intact entry = %v, %v", first, err)
	}
}

func TestRecorded(t *testing.T) {
	l := open(t, filepath.Join(t.TempDir(), "ledger"))
	if _, err := l.Check(t.Context(), "corp.example/m", "v1.0.0", hashA); err != nil {
		t.Fatal(err)
	}
	if h, ok, err := l.Recorded(t.Context(), "corp.example/m", "v1.0.0"); h != hashA || !ok || err != nil {
		t.Errorf("Recorded(recorded) = %q, %v, %v", h, ok, err)
	}
	if _, ok, err := l.Recorded(t.Context(), "corp.example/m", "v1.0.0/go.mod"); ok || err != nil {
		t.Errorf("Recorded(not recorded) = %v, %v", ok, err)
	}
}
