package cache

import (
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/modgate/modgate/goproxy"
)

func TestClassOf(t *testing.T) {
	const mod = "example.com/a"
	tests := []struct {
		name      string
		req       goproxy.Request
		want      Class
		cacheable bool
	}{
		{"release zip", goproxy.Request{Kind: goproxy.KindZip, Module: mod, Version: "v1.2.3"}, Release, true},
		{"release mod", goproxy.Request{Kind: goproxy.KindMod, Module: mod, Version: "v1.2.3"}, Release, true},
		{"release info", goproxy.Request{Kind: goproxy.KindInfo, Module: mod, Version: "v1.2.3"}, Release, true},
		{"release incompatible", goproxy.Request{Kind: goproxy.KindZip, Module: mod, Version: "v2.0.0+incompatible"}, Release, true},
		{"prerelease zip", goproxy.Request{Kind: goproxy.KindZip, Module: mod, Version: "v1.2.3-rc.1"}, Prerelease, true},
		{"prerelease info", goproxy.Request{Kind: goproxy.KindInfo, Module: mod, Version: "v1.2.3-rc.1"}, Prerelease, true},
		{"pseudo v0.0.0", goproxy.Request{Kind: goproxy.KindMod, Module: mod, Version: "v0.0.0-20240101000000-abcdefabcdef"}, Pseudo, true},
		{"pseudo after release", goproxy.Request{Kind: goproxy.KindZip, Module: mod, Version: "v1.2.4-0.20240101000000-abcdefabcdef"}, Pseudo, true},
		{"pseudo after prerelease", goproxy.Request{Kind: goproxy.KindInfo, Module: mod, Version: "v1.2.4-rc.1.0.20240101000000-abcdefabcdef"}, Pseudo, true},
		{"list", goproxy.Request{Kind: goproxy.KindList, Module: mod}, Query, true},
		{"latest", goproxy.Request{Kind: goproxy.KindLatest, Module: mod}, Query, true},
		{"info of branch", goproxy.Request{Kind: goproxy.KindInfo, Module: mod, Version: "master"}, Query, true},
		{"info of non-canonical version", goproxy.Request{Kind: goproxy.KindInfo, Module: mod, Version: "v1.2"}, Query, true},
		{"sumdb lookup", goproxy.Request{Kind: goproxy.KindSumDBLookup, Module: mod, Version: "v1.2.3", SumDB: "sum.golang.org"}, SumDB, true},
		{"sumdb tile", goproxy.Request{Kind: goproxy.KindSumDBTile, SumDB: "sum.golang.org", Tile: tlog.Tile{H: 8, L: 0, N: 1, W: 256}}, SumDB, true},
		{"sumdb data tile", goproxy.Request{Kind: goproxy.KindSumDBTile, SumDB: "sum.golang.org", Tile: tlog.Tile{H: 8, L: -1, N: 1, W: 256}}, SumDB, true},
		{"sumdb latest", goproxy.Request{Kind: goproxy.KindSumDBLatest, SumDB: "sum.golang.org"}, SumDBLatest, true},
		{"sumdb supported", goproxy.Request{Kind: goproxy.KindSumDBSupported, SumDB: "sum.golang.org"}, 0, false},
		{"zero kind", goproxy.Request{}, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := ClassOf(tt.req)
			if got != tt.want || ok != tt.cacheable {
				t.Errorf("ClassOf(%+v) = %v, %v, want %v, %v", tt.req, got, ok, tt.want, tt.cacheable)
			}
		})
	}
}

func TestClassImmutableAndNames(t *testing.T) {
	tests := []struct {
		class     Class
		name      string
		immutable bool
	}{
		{Release, "release", true},
		{Prerelease, "prerelease", true},
		{Pseudo, "pseudo", true},
		{Query, "query", false},
		{Negative, "negative", false},
		{SumDB, "sumdb", true},
		{SumDBLatest, "sumdb-latest", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.class.String(); got != tt.name {
				t.Errorf("Class(%d).String() = %q, want %q", uint8(tt.class), got, tt.name)
			}
			if got := tt.class.Immutable(); got != tt.immutable {
				t.Errorf("%v.Immutable() = %v, want %v", tt.class, got, tt.immutable)
			}
			if got, ok := parseClass(tt.name); got != tt.class || !ok {
				t.Errorf("parseClass(%q) = %v, %v, want %v, true", tt.name, got, ok, tt.class)
			}
		})
	}
	if got, ok := parseClass("bogus"); ok {
		t.Errorf("parseClass(%q) = %v, true, want false", "bogus", got)
	}
	if got := Class(99).String(); got != "Class(99)" {
		t.Errorf("Class(99).String() = %q, want %q", got, "Class(99)")
	}
}

func TestTTLDefaults(t *testing.T) {
	got, err := TTLs{Query: 5 * time.Second}.withDefaults()
	if err != nil {
		t.Fatalf("withDefaults: %v", err)
	}
	want := DefaultTTLs
	want.Query = 5 * time.Second
	if got != want {
		t.Errorf("withDefaults() = %+v, want %+v", got, want)
	}
	for c := Release; c <= SumDBLatest; c++ {
		if got.of(c) <= 0 {
			t.Errorf("of(%v) = %v, want > 0", c, got.of(c))
		}
	}
}

func TestOpenConfigErrors(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"no dir", Config{}, "dir is required"},
		{"small hot tier", Config{HotBytes: 1 << 10}, "hot_bytes"},
		{"negative disk", Config{DiskBytes: -1}, "disk_bytes"},
		{"negative stale", Config{StaleIfError: -time.Second}, "stale_if_error"},
		{"negative ttl", Config{TTL: TTLs{Negative: -time.Second}}, "ttl.negative"},
		{"sub-second ttl", Config{TTL: TTLs{Query: time.Millisecond}}, "ttl.query"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.name != "no dir" {
				tt.cfg.Dir = t.TempDir()
			}
			c, err := Open(tt.cfg)
			if err == nil {
				c.Close()
				t.Fatalf("Open(%+v) succeeded, want an error mentioning %q", tt.cfg, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Open(%+v) = %v, want an error mentioning %q", tt.cfg, err, tt.wantErr)
			}
		})
	}
}
