package gateway_test

import (
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/modgate/modgate/integration/testproxy"
)

// BenchmarkHit measures warm cache hits through the standalone front end,
// in process (the client shares the CPU), at several client
// concurrencies. It reports requests per second and latency percentiles;
// BenchmarkVsNginx in integration/ measures the real binary against nginx.
func BenchmarkHit(b *testing.B) {
	mods := testproxy.Fixtures(b)
	for _, target := range []string{"/example.com/a/@v/v1.0.0.info", "/example.com/a/@v/v1.0.0.zip"} {
		for _, conc := range []int{16, 64} {
			b.Run(fmt.Sprintf("%s/c=%d", target[len("/example.com/a/@v/"):], conc), func(b *testing.B) {
				up := testproxy.Start(b, mods)
				h := start(b, setup{public: []string{up.URL}, sumdb: up.VerifierKey})
				client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: conc}}
				benchGet(b, client, h.url+target, conc)
			})
		}
	}
}

// benchGet runs b.N GETs of url from conc goroutines and reports req/s
// and the p50 and p99 latency in microseconds.
func benchGet(b *testing.B, client *http.Client, url string, conc int) {
	b.Helper()
	lat := make([]time.Duration, b.N)
	var next sync.Mutex
	i := 0
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			for {
				next.Lock()
				n := i
				i++
				next.Unlock()
				if n >= b.N {
					return
				}
				t0 := time.Now()
				resp, err := client.Get(url)
				if err != nil {
					b.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Errorf("GET %s: %s", url, resp.Status)
					return
				}
				lat[n] = time.Since(t0)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "req/s")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}
