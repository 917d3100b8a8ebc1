package main

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"time"
)

// Bounds of the hot tier's size when modgate picks it.
const (
	minAutoHot     = 16 << 20
	maxAutoHot     = 256 << 20
	unknownHot     = 32 << 20 // with no memory size to go by
	hotShare       = 8        // the hot tier takes 1/hotShare of the memory limit
	heapHeadroom   = 48 << 20 // the first soft memory limit: the hot tier plus this
	minHeadroom    = 8 << 20  // paceMemory's least room for garbage
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
// The hot tier's arena is live heap to the collector, which would let
// garbage grow to the arena's size before it collects (GOGC=100: twice
// the live heap). So, unless GOMEMLIMIT is set, modgate paces the
// collector with the runtime's soft memory limit instead (paceMemory):
// the arena, plus the rest of the live heap twice over (at least
// minHeadroom of garbage), plus what the runtime holds besides the heap.
// That is GOGC=100 for everything but the arena. Under load that
// headroom, not the arena, decides resident memory until the hot tier
// fills. sizeMemory sets a first limit, the hot tier plus 48 MiB, for
// the moments before paceMemory runs.
//
// It returns the hot tier's size and the memory the process may use (0:
// unknown), for paceMemory.
func sizeMemory(hotBytes int64, log *slog.Logger) (hot, limit int64) {
	limit, source := memoryLimit()
	why := "cache.hot_bytes"
	hot = hotBytes
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
	return hot, limit
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

// paceMemory keeps the runtime's soft memory limit at paceLimit for a hot
// tier of hot bytes, re-reading the runtime's memory every interval until
// ctx ends. It does nothing if GOMEMLIMIT is set: then the operator paces
// the collector. limit is what the process may use (0: unknown).
func paceMemory(ctx context.Context, hot, limit int64, interval time.Duration) {
	if os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	samples := []metrics.Sample{
		{Name: "/gc/heap/live:bytes"},
		{Name: "/memory/classes/total:bytes"},
		{Name: "/memory/classes/heap/released:bytes"},
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/heap/free:bytes"},
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		metrics.Read(samples)
		var m memStats
		for i, v := range []*uint64{&m.live, &m.total, &m.released, &m.objects, &m.free} {
			if samples[i].Value.Kind() == metrics.KindUint64 {
				*v = samples[i].Value.Uint64()
			}
		}
		debug.SetMemoryLimit(paceLimit(m, hot, limit))
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// memStats are the runtime's figures paceLimit needs, in bytes.
type memStats struct {
	live     uint64 // live heap at the last collection, the arena included
	total    uint64 // all the runtime has mapped
	released uint64 // of which returned to the OS
	objects  uint64 // heap objects, live or not yet swept
	free     uint64 // heap free and not returned: the runtime's pool
}

// paceLimit is the soft memory limit for a process with a hot tier of hot
// bytes, whose runtime reports m, such that the runtime's heap goal (its
// pacer's memoryLimitHeapGoal) is what is live (the arena among it) plus
// as much again of garbage as is live besides the arena, but at least
// minHeadroom. The runtime takes from the limit all it holds that neither
// is a heap object nor is free heap (stacks, its own structures, spans
// not yet used), and keeps 3 % of the goal as a margin, 8 MiB of a
// 256 MiB arena: the limit adds both back. Before the first collection
// every object counts as live. It never exceeds softLimit's bound under
// limit.
func paceLimit(m memStats, hot, limit int64) int64 {
	live := int64(m.live)
	if live == 0 {
		live = int64(m.objects)
	}
	goal := max(live, hot) + max(live-hot, minHeadroom)
	nonHeap := max(int64(m.total)-int64(m.released)-int64(m.free)-int64(m.objects), 0)
	l := goal*100/97 + nonHeap
	if limit > 0 {
		l = min(l, limit-limit/10)
	}
	return l
}
