package main

import (
	"fmt"
	"log/slog"
	"math"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// Bounds of the hot tier's size when modgate picks it.
const (
	minAutoHot     = 16 << 20
	maxAutoHot     = 256 << 20
	unknownHot     = 32 << 20 // with no memory size to go by
	hotShare       = 8        // the hot tier takes 1/hotShare of the memory limit
	heapHeadroom   = 48 << 20 // the soft memory limit: the hot tier plus this
	cgroupV2Limit  = "/sys/fs/cgroup/memory.max"
	cgroupV1Limit  = "/sys/fs/cgroup/memory/memory.limit_in_bytes"
	maxCgroupBytes = 1 << 62 // cgroup v1's "no limit" is a huge number
)

// sizeMemory picks the hot tier's size, unless cache.hot_bytes gives it,
// and the Go runtime's soft memory limit, unless GOMEMLIMIT does.
//
// The hot tier is one allocation the collector never frees; its pages
// become resident only as entries fill them. Sized to the deployment, it
// is an eighth of the memory the process may use (GOMEMLIMIT, else the
// cgroup's limit, as a container has, else the machine's memory), between
// 16 and 256 MiB. Small answers that do not fit are read from the disk
// tier, where the kernel's page cache keeps the warm ones.
//
// The soft limit is the hot tier plus 48 MiB of heap: the collector's
// goal would otherwise be twice the live heap, arena included, and
// garbage could grow to the hot tier's size. Under load that headroom,
// not the arena, is what decides resident memory until the hot tier fills.
func sizeMemory(hotBytes int64, log *slog.Logger) int64 {
	limit, source := memoryLimit()
	hot, why := hotBytes, "cache.hot_bytes"
	if hot == 0 {
		hot = autoHot(limit)
		why = fmt.Sprintf("1/%d of the %s memory of %d MiB, between %d and %d MiB", hotShare, source, limit>>20, minAutoHot>>20, maxAutoHot>>20)
		if limit <= 0 {
			why = "no memory size to go by (GOMEMLIMIT, cgroup, /proc/meminfo)"
		}
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		soft := softLimit(hot, limit)
		debug.SetMemoryLimit(soft)
		log.Info("memory", "hot_tier_bytes", hot, "sized_by", why, "soft_limit_bytes", soft)
	} else {
		log.Info("memory", "hot_tier_bytes", hot, "sized_by", why, "soft_limit", "GOMEMLIMIT")
	}
	return hot
}

// softLimit is the Go runtime's soft memory limit for a hot tier of hot
// bytes in a process that may use limit bytes (0: unknown).
func softLimit(hot, limit int64) int64 {
	soft := hot + heapHeadroom
	if limit > 0 {
		// Never above what the cgroup allows: leave it a tenth for
		// what the Go runtime does not count (stacks are, cgo is not).
		soft = min(soft, limit-limit/10)
	}
	return soft
}

// autoHot is the hot tier's size for a process that may use limit bytes
// (0: unknown).
func autoHot(limit int64) int64 {
	if limit <= 0 {
		return unknownHot
	}
	return min(max(limit/hotShare, minAutoHot), maxAutoHot)
}

// memoryLimit returns the memory the process may use, and where that
// comes from: GOMEMLIMIT, else the cgroup's limit; 0 if there is none.
func memoryLimit() (int64, string) {
	if os.Getenv("GOMEMLIMIT") != "" {
		if l := debug.SetMemoryLimit(-1); l > 0 && l < math.MaxInt64 {
			return l, "GOMEMLIMIT"
		}
	}
	for _, file := range []string{cgroupV2Limit, cgroupV1Limit} {
		if l, ok := readLimit(file); ok {
			return l, "cgroup"
		}
	}
	if l, ok := memTotal(); ok {
		return l, "machine"
	}
	return 0, ""
}

// memTotal reads the machine's memory from /proc/meminfo.
func memTotal() (int64, bool) {
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, false
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		rest, ok := strings.CutPrefix(line, "MemTotal:")
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		if err != nil || kb <= 0 {
			return 0, false
		}
		return kb << 10, true
	}
	return 0, false
}

// readLimit reads a cgroup memory limit file: a number of bytes, or "max"
// (none).
func readLimit(file string) (int64, bool) {
	data, err := os.ReadFile(file)
	if err != nil || len(data) > 64 {
		return 0, false
	}
	s := strings.TrimSpace(string(data))
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 || n >= maxCgroupBytes {
		return 0, false
	}
	return n, true
}
