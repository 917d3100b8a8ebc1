// Package helperbin finds the helper binaries that make test builds once
// from their Go modules (the S3 server, Toxiproxy, the benchmarks' peers)
// and reuses from run to run, and starts them so that they die with the
// test process.
package helperbin

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
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

// LogTail returns the end of a helper's log file, headed with name, to
// append to a failure message; "" if it cannot be read.
func LogTail(file, name string) string {
	data, err := os.ReadFile(file)
	if err != nil {
		return ""
	}
	const max = 4000
	if len(data) > max {
		data = data[len(data)-max:]
	}
	return "\n--- " + name + " log (end) ---\n" + string(data)
}

// FreePort returns a port free on 127.0.0.1 and not in taken, chosen at
// random from [15000, 32768): not Linux's ephemeral ports (32768-60999),
// which an outgoing connection could take while a helper is stopped or a
// proxy disabled. It adds the port to taken, if taken is not nil.
func FreePort(taken map[int]bool) (int, error) {
	const low, high = 15000, 32768
	for range 1000 {
		p := low + rand.IntN(high-low)
		if taken[p] {
			continue
		}
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue
		}
		ln.Close()
		if taken != nil {
			taken[p] = true
		}
		return p, nil
	}
	return 0, fmt.Errorf("no free port in [%d, %d)", low, high)
}
