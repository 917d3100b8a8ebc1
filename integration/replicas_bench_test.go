package integration

import (
	"context"
	"fmt"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modgate/modgate/goproxy"
	"github.com/modgate/modgate/integration/natsserver"
	"github.com/modgate/modgate/integration/s3server"
	"github.com/modgate/modgate/integration/testproxy"
)

// BenchmarkReplicas measures three replicas on one S3 store (versitygw on
// this machine) and one NATS server:
//
//   - warm throughput of a replica: a zip served from its own disk tier,
//     and a small answer from its hot tier (wrk, 16 connections);
//   - a shared-tier hit: what a replica pays the first time it serves a
//     key that another replica filled (read through from the store);
//   - the cold fan-in: 30 concurrent requests for one cold key, spread
//     over 3 replicas or all sent to 1, until the last answer.
//
// It runs its own fixed rounds (run it with -benchtime=1x).
func BenchmarkReplicas(b *testing.B) {
	wrkBin, err := exec.LookPath("wrk")
	if err != nil {
		b.Skip("needs wrk: run 'make bench', which installs it")
	}
	s3 := s3server.Start(b, "modgate-bench")
	nats := natsserver.Start(b)
	f := newFleet(b, s3, nats, 3)
	a, r2 := f.replicas[0], f.replicas[1]

	var keys []string
	for _, m := range testproxy.Fixtures(b) {
		if strings.HasPrefix(m.Path, "corp.example/") {
			continue
		}
		keys = append(keys, m.Target(goproxy.KindMod), m.Target(goproxy.KindZip))
	}
	for range b.N {
		const zip, mod = "/example.com/a/@v/v1.0.0.zip", "/example.com/a/@v/v1.0.0.mod"
		for _, k := range []string{zip, mod} {
			if s, _ := getBody(b, a.URL+k); s != 200 {
				b.Fatalf("warming %s: %d", k, s)
			}
		}
		disk := runWrk(b, wrkBin, a.URL+zip, 16, 3*time.Second)
		hot := runWrk(b, wrkBin, a.URL+mod, 16, 3*time.Second)
		b.ReportMetric(disk.rps, "disk-hit-zip-req/s")
		b.ReportMetric(hot.rps, "hot-hit-mod-req/s")

		// Each key once through A (a fill), then once through B: B reads
		// it through from the store.
		var through []time.Duration
		for _, k := range keys[2:] {
			if s, _ := getBody(b, a.URL+k); s != 200 {
				b.Fatalf("filling %s: %d", k, s)
			}
			start := time.Now()
			if s, _ := getBody(b, r2.URL+k); s != 200 {
				b.Fatalf("reading %s through: %d", k, s)
			}
			through = append(through, time.Since(start))
		}
		b.ReportMetric(ms(medianDuration(through)), "shared-hit-ms")
	}

	// Shared-tier hits under load: replica B serves 300 zips that replica
	// A filled, each B's first read of it, 16 at a time.
	synth, _ := syntheticModules(b, 300)
	h := &fleet{s3: s3, nats: nats, public: testproxy.Start(b, synth), prefix: "BenchmarkReplicas-shared/"}
	fa, fb := h.start(b, nil), h.start(b, nil)
	zips := make([]string, len(synth))
	for i, m := range synth {
		zips[i] = "/" + m.Path + "/@v/" + m.Version + ".zip"
	}
	fetchAll(b, fa, zips, 8)
	start := time.Now()
	fetchAll(b, fb, zips, 16)
	b.ReportMetric(float64(len(zips))/time.Since(start).Seconds(), "shared-hit-zip-req/s")

	// The cold fan-in, on a fleet with an empty store prefix.
	g := newFleet(b, s3, nats, 3)
	var three, one []time.Duration
	for i, k := range keys {
		targets := g.replicas
		if i%2 == 1 {
			targets = g.replicas[:1]
		}
		d := fanIn(b, targets, k, 30)
		if i%2 == 0 {
			three = append(three, d)
		} else {
			one = append(one, d)
		}
	}
	b.ReportMetric(ms(medianDuration(three)), "cold-fan-in-3-replicas-ms")
	b.ReportMetric(ms(medianDuration(one)), "cold-fan-in-1-replica-ms")
	if got := g.public.Requests(); len(got) > len(keys)+8 { // + the checksum database's
		b.Errorf("the upstream got %d requests for %d cold keys", len(got), len(keys))
	}
}

// fanIn sends n concurrent GETs of key, round robin over replicas, and
// returns the time until the last answer.
func fanIn(b *testing.B, replicas []*gatewayProc, key string, n int) time.Duration {
	ctx, cancel := context.WithTimeout(b.Context(), 30*time.Second)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			req, _ := http.NewRequestWithContext(ctx, "GET", replicas[i%len(replicas)].URL+key, nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Error(fmt.Errorf("GET %s: %d", key, resp.StatusCode))
			}
		})
	}
	wg.Wait()
	return time.Since(start)
}

func medianDuration(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	ds = slices.Clone(ds)
	slices.Sort(ds)
	return ds[len(ds)/2]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// fetchAll GETs every key from g, conc at a time, and fails b on any
// answer but 200.
func fetchAll(b *testing.B, g *gatewayProc, keys []string, conc int) {
	sem := make(chan struct{}, conc)
	var wg sync.WaitGroup
	for _, k := range keys {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			if s, _ := getBody(b, g.URL+k); s != 200 {
				b.Errorf("GET %s: %d", k, s)
			}
		})
	}
	wg.Wait()
}
