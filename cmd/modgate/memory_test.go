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

func TestPaceLimit(t *testing.T) {
	const mib = 1 << 20
	for _, tt := range []struct {
		name       string
		m          memStats
		hot, limit int64
		want       int64
	}{
		{"little live besides the arena: the least headroom",
			memStats{live: 260 * mib, total: 300 * mib, objects: 270 * mib, free: 20 * mib}, 256 * mib, 0,
			(260*mib+8*mib)*100/97 + 10*mib},
		{"much live besides the arena: as much again",
			memStats{live: 356 * mib, total: 400 * mib, objects: 370 * mib}, 256 * mib, 0,
			(356*mib+100*mib)*100/97 + 30*mib},
		{"released and free memory are not overheads",
			memStats{live: 260 * mib, total: 400 * mib, released: 100 * mib, objects: 270 * mib, free: 20 * mib}, 256 * mib, 0,
			(260*mib+8*mib)*100/97 + 10*mib},
		{"before the first collection: every object live",
			memStats{total: 300 * mib, objects: 280 * mib}, 256 * mib, 0,
			(280*mib+24*mib)*100/97 + 20*mib},
		{"nothing allocated yet: the arena's size at least",
			memStats{total: 10 * mib, objects: 2 * mib}, 64 * mib, 0,
			(64*mib+8*mib)*100/97 + 8*mib},
		{"never above 90 % of the limit",
			memStats{live: 266 * mib, total: 300 * mib, objects: 270 * mib}, 256 * mib, 300 * mib,
			300*mib - 30*mib},
	} {
		if got := paceLimit(tt.m, tt.hot, tt.limit); got != tt.want {
			t.Errorf("%s: paceLimit = %d MiB, want %d MiB", tt.name, got/mib, tt.want/mib)
		}
	}
}
