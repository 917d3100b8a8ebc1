package auditindex

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/modgate/modgate/audit"
)

// writeBigLog writes a log of n events in files files (path.files-1 …
// path.1, path), one chain across them, as the Writer would, with
// thousands of modules and identities; it returns the bytes written.
func writeBigLog(tb testing.TB, path string, n, files int) int64 {
	tb.Helper()
	rnd := rand.New(rand.NewPCG(7, 7))
	kinds := []string{"info", "mod", "zip", "list", "sumdb-lookup", "latest"}
	prev := audit.GenesisPrev
	var total int64
	perFile := n / files
	for f := files - 1; f >= 0; f-- {
		name := path
		if f > 0 {
			name = fmt.Sprintf("%s.%d", path, f)
		}
		out, err := os.Create(name)
		if err != nil {
			tb.Fatal(err)
		}
		w := bufio.NewWriterSize(out, 1<<20)
		from := (files - 1 - f) * perFile
		to := from + perFile
		if f == 0 {
			to = n
		}
		for i := from; i < to; i++ {
			m := rnd.IntN(5000)
			r := audit.Request{
				Start:    time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(i) * 3 * time.Millisecond),
				Duration: time.Duration(rnd.IntN(50_000_000)),
				ID:       fmt.Sprintf("%016x", i),
				Method:   "GET",
				Status:   200,
				Bytes:    int64(rnd.IntN(1 << 20)),
				Modgate: audit.ModgateGroup{
					Module:   fmt.Sprintf("github.com/org%d/module-%d", m%700, m),
					Version:  fmt.Sprintf("v1.%d.%d", m%9, rnd.IntN(20)),
					Kind:     kinds[rnd.IntN(len(kinds))],
					Decision: "serve",
					Upstream: "proxy",
					Cache:    "hit",
				},
			}
			if i%2 == 0 {
				r.Modgate.TraceID = fmt.Sprintf("%032x", rnd.Uint64())
			}
			r.Target = "/" + r.Modgate.Module + "/@v/" + r.Modgate.Version + "." + r.Modgate.Kind
			switch d := rnd.IntN(100); {
			case d < 20:
				r.Modgate.Decision, r.Modgate.Cache = "forward", "miss"
			case d < 27:
				r.Modgate.Decision, r.Status = "deny", 403
				r.Modgate.Rule = fmt.Sprintf("policy-rule-%d", rnd.IntN(20))
				r.Reason = "denied by policy rule " + r.Modgate.Rule + ": the module is not on the allow list"
			case d < 30:
				r.Modgate.Decision, r.Status, r.Modgate.Rule = "reject", 400, "grammar"
				r.Reason = "malformed module path"
			}
			if rnd.IntN(10) < 3 {
				r.Modgate.Verification = "verified"
			}
			id := rnd.IntN(9000)
			switch id % 3 {
			case 0:
				r.Client.User = fmt.Sprintf("user-%d@example.com", id)
			case 1:
				r.Client.URISANs = []string{fmt.Sprintf("spiffe://example.org/ns/ci/sa/builder-%d", id)}
				r.Client.Subject = fmt.Sprintf("CN=builder-%d,O=Example", id)
			}
			r.Client.Addr = netipAddr(id)
			e := audit.NewRequest(r)
			e.Chain = &audit.Chain{Seq: uint64(i + 1), Prev: prev}
			line, err := json.Marshal(e)
			if err != nil {
				tb.Fatal(err)
			}
			sum := sha256.Sum256(line)
			prev = hex.EncodeToString(sum[:])
			w.Write(line)
			w.WriteByte('\n')
			total += int64(len(line) + 1)
		}
		if err := w.Flush(); err != nil {
			tb.Fatal(err)
		}
		if err := out.Close(); err != nil {
			tb.Fatal(err)
		}
	}
	return total
}

// BenchmarkQuery1M times queries over an index of a million events, and
// logs the time and heap it takes to build. It writes a log of about
// 600 MB (lines of about 600 bytes) in a temporary directory; -short
// skips it.
func BenchmarkQuery1M(b *testing.B) {
	if testing.Short() {
		b.Skip("writes a log of a million events")
	}
	const n = 1_000_000
	path := filepath.Join(b.TempDir(), "audit.jsonl")
	start := time.Now()
	size := writeBigLog(b, path, n, 5)
	b.Logf("wrote %d events, %d MB, %d bytes a line, in %v", n, size>>20, size/n, time.Since(start).Round(time.Millisecond))

	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	start = time.Now()
	ix, err := Open(Options{Path: path, Interval: time.Hour, Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	defer ix.Close()
	refresh(b, ix)
	build := time.Since(start)
	runtime.GC()
	runtime.ReadMemStats(&m1)
	heap := float64(m1.HeapAlloc-m0.HeapAlloc) / n
	st := ix.Stats()
	if st.Events != n {
		b.Fatalf("Stats = %+v, want %d events", st, n)
	}
	b.Logf("built in %v (%.2f µs an event), %.1f heap bytes an event; %+v", build.Round(time.Millisecond), float64(build.Microseconds())/n, heap, st)

	ctx := context.Background()
	for _, bq := range []struct {
		name string
		q    Query
	}{
		{"newest", Query{}},
		{"module+deny", Query{Module: "github.com/org17/module-717", Decisions: []string{"deny"}}},
		{"identity-substring", Query{IdentityLike: "BUILDER-12"}},
		{"deep-page", Query{Before: 1000}},
		{"deep-page-filtered", Query{Before: 100_000, Decisions: []string{"deny", "reject"}, Kinds: []string{"zip"}}},
		{"time-range", Query{Since: time.Date(2026, 1, 1, 0, 30, 0, 0, time.UTC), Until: time.Date(2026, 1, 1, 0, 31, 0, 0, time.UTC)}},
	} {
		b.Run(bq.name, func(b *testing.B) {
			var p Page
			for b.Loop() {
				if p, err = ix.Query(ctx, bq.q); err != nil {
					b.Fatal(err)
				}
			}
			if len(p.Events) == 0 || p.Chain.Problem != nil || !p.Chain.Complete {
				b.Fatalf("page of %d events, %d matched, chain %+v", len(p.Events), p.Matched, p.Chain)
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/query")
			b.ReportMetric(float64(p.Matched), "matched")
			b.ReportMetric(heap, "heap-B/event")
			b.ReportMetric(build.Seconds(), "build-s")
		})
	}
}
