package files

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadMax(t *testing.T) {
	name := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(name, []byte("12345"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		max  int64
		want string
		err  bool
	}{{5, "12345", false}, {10, "12345", false}, {4, "", true}}
	for _, tt := range tests {
		got, err := ReadMax(name, tt.max)
		if string(got) != tt.want || (err != nil) != tt.err {
			t.Errorf("ReadMax(%d) = %q, %v; want %q, error %v", tt.max, got, err, tt.want, tt.err)
		}
	}
	if _, err := ReadMax(filepath.Join(t.TempDir(), "missing"), 1); !os.IsNotExist(err) {
		t.Errorf("ReadMax of a missing file = %v, want not exist", err)
	}
}

func TestWriteAtomic(t *testing.T) {
	dir := t.TempDir()
	name := filepath.Join(dir, "state")
	for _, data := range []string{"one", "two, longer"} {
		if err := WriteAtomic(name, []byte(data)); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(name)
		if err != nil || string(got) != data {
			t.Errorf("after WriteAtomic(%q): %q, %v", data, got, err)
		}
		if fi, err := os.Stat(name); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("mode = %v, %v; want 0600", fi.Mode(), err)
		}
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Errorf("temporary file %s left behind", e.Name())
		}
	}
	if err := WriteAtomic(filepath.Join(dir, "no", "such", "dir", "f"), nil); err == nil {
		t.Error("WriteAtomic into a missing directory succeeded")
	}
}
