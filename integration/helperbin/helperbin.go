// Package helperbin finds the helper binaries that make test builds once
// from their Go modules (the S3 server, Toxiproxy, the benchmarks' peers)
// and reuses from run to run, and starts them so that they die with the
// test process.
package helperbin

import (
	"os"
	"path/filepath"
)

// Dir is the directory the build scripts put the helper binaries in:
// $XDG_CACHE_HOME/modgate-test/bin, or ~/.cache/modgate-test/bin.
func Dir() string {
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache")
	}
	return filepath.Join(cache, "modgate-test", "bin")
}

// Path returns the binary named name in Dir, or the value of the
// environment variable env if it is set (a binary built elsewhere).
func Path(env, name string) string {
	if bin := os.Getenv(env); bin != "" {
		return bin
	}
	return filepath.Join(Dir(), name)
}
