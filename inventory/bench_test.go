package inventory

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"

	"github.com/modgate/modgate/audit"
)

var benchEvents = flag.Int("inventory.events", 1_000_000, "events BenchmarkWho ingests before it queries")

// workload makes a skewed stream of fetches: 5,000 modules with 30
// versions each, 2,000 identities, popular modules (Zipf) fetched most.
type workload struct {
	r        *rand.Rand
	modZipf  *rand.Zipf
	modules  []string
	versions []string
	ids      []string
	kinds    []string
	e        audit.Event
	i        int
}

func newWorkload() *workload {
	w := &workload{r: rand.New(rand.NewPCG(1, 2)), kinds: []string{"info", "mod", "zip"}}
	w.modZipf = rand.NewZipf(w.r, 1.1, 1, 4999)
	for i := range 5000 {
		w.modules = append(w.modules, fmt.Sprintf("github.com/org%d/module-%d", i%300, i))
	}
	for i := range 30 {
		w.versions = append(w.versions, fmt.Sprintf("v1.%d.%d", i/5, i%5))
	}
	for i := range 2000 {
		w.ids = append(w.ids, fmt.Sprintf("spiffe://corp.example/ns/team%d/sa/builder-%d", i%40, i))
	}
	w.e = audit.Event{
		Event:   audit.EventFields{Action: audit.ActionRequest, Outcome: audit.OutcomeSuccess},
		User:    &audit.User{},
		HTTP:    &audit.HTTP{Response: audit.HTTPResponse{StatusCode: 200}},
		Modgate: audit.ModgateGroup{Decision: "serve"},
	}
	return w
}

// next returns the next event; it is reused.
func (w *workload) next() *audit.Event {
	w.i++
	w.e.Timestamp = t0.Add(time.Duration(w.i) * time.Millisecond)
	w.e.Modgate.Module = w.modules[w.modZipf.Uint64()]
	w.e.Modgate.Version = w.versions[w.r.IntN(len(w.versions))]
	w.e.Modgate.Kind = w.kinds[w.r.IntN(3)]
	w.e.User.Name = w.ids[w.r.IntN(len(w.ids))]
	return &w.e
}

func heap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// BenchmarkIngest measures Add on a store in memory and on disk (with the
// journal flushed each second, as the server runs it).
func BenchmarkIngest(b *testing.B) {
	for _, disk := range []bool{false, true} {
		b.Run(map[bool]string{false: "memory", true: "disk"}[disk], func(b *testing.B) {
			opts := Options{}
			if disk {
				opts.Dir = b.TempDir()
			}
			w := newWorkload()
			inv := open(b, opts)
			b.ResetTimer()
			for range b.N {
				inv.Add(w.next())
			}
			if err := inv.Flush(); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
			st := inv.Stats()
			b.ReportMetric(float64(st.Keys), "keys")
			runtime.KeepAlive(inv)
		})
	}
}

// BenchmarkWho measures Who, for the most fetched modules and a range,
// after ingesting -inventory.events events (10 million:
// go test ./inventory -run X -bench Who -v -args -inventory.events=10000000).
// It logs the ingest rate and the heap per key.
func BenchmarkWho(b *testing.B) {
	w := newWorkload()
	inv := open(b, Options{MaxKeys: 1 << 30}) // measure the whole index, unbounded
	before := heap()
	start := time.Now()
	for range *benchEvents {
		inv.Add(w.next())
	}
	ingest := time.Since(start)
	st := inv.Stats()
	b.Logf("ingested %d events in %v (%.0f events/s): %d keys in %d modules, heap %d MB (%d B/key)", *benchEvents, ingest, float64(*benchEvents)/ingest.Seconds(), st.Keys, st.Modules, (heap()-before)>>20, (heap()-before)/uint64(max(st.Keys, 1)))
	top := inv.Top(1)[0].Module
	for _, q := range []struct{ name, module, versions string }{
		{"top-module/all", top, ""},
		{"top-module/range", top, ">=v1.2.0 <v1.4.0"},
		{"top-module/exact", top, "v1.0.0"},
		{"rare-module/all", w.modules[4000], ""},
	} {
		b.Run(q.name, func(b *testing.B) {
			n := 0
			var worst time.Duration
			for b.Loop() {
				t := time.Now()
				got, err := inv.Who(q.module, q.versions)
				if err != nil {
					b.Fatal(err)
				}
				worst = max(worst, time.Since(t))
				n = len(got)
			}
			b.ReportMetric(float64(n), "fetches")
			b.ReportMetric(float64(worst.Microseconds())/1000, "worst-ms")
		})
	}
	b.Run("top", func(b *testing.B) {
		for b.Loop() {
			inv.Top(20)
		}
	})
}
