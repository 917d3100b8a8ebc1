package vcs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestNewErrors(t *testing.T) {
	module := t.TempDir()
	if err := os.WriteFile(filepath.Join(module, "go.mod"), []byte("module m\n"), 0o666); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	tests := []struct {
		name string
		cfg  Config
		want string // in the error
	}{
		{"no cache dir", Config{}, "CacheDir"},
		{"cache dir in a module", Config{CacheDir: filepath.Join(module, "cache")}, "CacheDir"},
		{"negative bytes", Config{CacheDir: dir, MaxCacheBytes: -1}, "MaxCacheBytes"},
		{"negative timeout", Config{CacheDir: dir, Timeout: -1}, "Timeout"},
		{"negative concurrency", Config{CacheDir: dir, MaxConcurrent: -1}, "MaxConcurrent"},
		{"no go command", Config{CacheDir: dir, Go: filepath.Join(dir, "no-such-go")}, "Go"},
		{"no netrc", Config{CacheDir: dir, Netrc: filepath.Join(dir, "no-such-netrc")}, "Netrc"},
		{"netrc is a directory", Config{CacheDir: dir, Netrc: dir}, "Netrc"},
		{"env without =", Config{CacheDir: dir, Env: []string{"GOINSECURE"}}, "Env"},
		{"env bad name", Config{CacheDir: dir, Env: []string{"1X=y"}}, "Env"},
		{"env NUL", Config{CacheDir: dir, Env: []string{"X=a\x00b"}}, "Env"},
		{"env twice", Config{CacheDir: dir, Env: []string{"X=a", "X=b"}}, "Env"},
		{"env owned HOME", Config{CacheDir: dir, Env: []string{"HOME=/root"}}, "Env: HOME"},
		{"env owned GOPROXY", Config{CacheDir: dir, Env: []string{"GOPROXY=https://proxy.example.test"}}, "Env: GOPROXY"},
		{"env owned GOSUMDB", Config{CacheDir: dir, Env: []string{"GOSUMDB=sum.golang.org"}}, "Env: GOSUMDB"},
		{"env owned GOFLAGS", Config{CacheDir: dir, Env: []string{"GOFLAGS=-insecure"}}, "Env: GOFLAGS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := New(tt.cfg)
			if err == nil {
				o.Close()
				t.Fatalf("New(%+v) = nil error, want one naming %s", tt.cfg, tt.want)
			}
			if !strings.HasPrefix(err.Error(), "vcs: "+tt.want) {
				t.Errorf("New(%+v) = %v, want an error beginning %q", tt.cfg, err, "vcs: "+tt.want)
			}
		})
	}
}

func TestNewDefaults(t *testing.T) {
	o, _ := newOrigin(t, Config{Env: []string{"GOVCS=corp.example.com:git", "PATH=/usr/bin:/bin"}})
	if o.timeout != DefaultTimeout || o.maxBytes != DefaultMaxCacheBytes || cap(o.slots) != DefaultMaxConcurrent {
		t.Errorf("defaults: timeout %v, max bytes %d, slots %d", o.timeout, o.maxBytes, cap(o.slots))
	}
	if !filepath.IsAbs(o.goCmd) {
		t.Errorf("go command %q is not absolute", o.goCmd)
	}
	for _, want := range []string{"GOVCS=corp.example.com:git", "PATH=/usr/bin:/bin", "GIT_ALLOW_PROTOCOL=https"} {
		n := 0
		for _, kv := range o.env {
			k, _, _ := strings.Cut(want, "=")
			if strings.HasPrefix(kv, k+"=") {
				n++
				if kv != want {
					t.Errorf("env has %q, want %q", kv, want)
				}
			}
		}
		if n != 1 {
			t.Errorf("env has %d entries for %q, want 1", n, want)
		}
	}
}
