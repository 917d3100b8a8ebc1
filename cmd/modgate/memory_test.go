package main

import (
	"os"
	"path/filepath"
	"testing"
)

func TestAutoHot(t *testing.T) {
	for _, tt := range []struct {
		limit, hot, soft int64
	}{
		{0, 32 << 20, 80 << 20},                    // nothing known
		{64 << 20, 16 << 20, 64<<20 - (64<<20)/10}, // a small container: at least 16 MiB, soft limit under 90 % of it
		{512 << 20, 64 << 20, 112 << 20},           // an eighth
		{24 << 30, 256 << 20, 304 << 20},           // a large machine: at most 256 MiB
	} {
		if hot := autoHot(tt.limit); hot != tt.hot {
			t.Errorf("autoHot(%d MiB) = %d MiB, want %d MiB", tt.limit>>20, hot>>20, tt.hot>>20)
		}
		if soft := softLimit(tt.hot, tt.limit); soft != tt.soft {
			t.Errorf("softLimit(%d MiB, %d MiB) = %d, want %d", tt.hot>>20, tt.limit>>20, soft, tt.soft)
		}
	}
}

func TestReadLimit(t *testing.T) {
	for _, tt := range []struct {
		content string
		want    int64
		ok      bool
	}{
		{"536870912\n", 512 << 20, true},
		{"max\n", 0, false},
		{"9223372036854771712\n", 0, false}, // cgroup v1's "none"
		{"-1", 0, false},
		{"lots", 0, false},
	} {
		f := filepath.Join(t.TempDir(), "memory.max")
		os.WriteFile(f, []byte(tt.content), 0o644)
		if got, ok := readLimit(f); got != tt.want || ok != tt.ok {
			t.Errorf("readLimit(%q) = %d, %v; want %d, %v", tt.content, got, ok, tt.want, tt.ok)
		}
	}
	if _, ok := readLimit(filepath.Join(t.TempDir(), "absent")); ok {
		t.Errorf("readLimit of a missing file: ok")
	}
}
