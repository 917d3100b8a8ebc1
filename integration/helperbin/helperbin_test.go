package helperbin

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestFreePort: ten ports in a row are distinct (taken keeps them), in
// [15000, 32768), and free.
func TestFreePort(t *testing.T) {
	taken := map[int]bool{}
	for range 10 {
		p, err := FreePort(taken)
		if err != nil {
			t.Fatal(err)
		}
		if p < 15000 || p >= 32768 {
			t.Errorf("FreePort = %d, out of [15000, 32768)", p)
		}
	}
	if len(taken) != 10 {
		t.Errorf("10 FreePort calls took %d distinct ports: %v", len(taken), taken)
	}
}

func TestLogTail(t *testing.T) {
	file := filepath.Join(t.TempDir(), "log")
	if got := LogTail(file, "x"); got != "" {
		t.Errorf("LogTail of a missing file = %q, want \"\"", got)
	}
	if err := os.WriteFile(file, []byte(strings.Repeat("a", 5000)+"the end\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got := LogTail(file, "x")
	if !strings.HasPrefix(got, "\n--- x log (end) ---\n") || !strings.HasSuffix(got, "the end\n") || len(got) > 4100 {
		t.Errorf("LogTail = %d bytes %.60q…, want the last 4000 bytes under a heading", len(got), got)
	}
}
