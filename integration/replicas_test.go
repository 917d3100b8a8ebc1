package integration

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modgate/modgate/integration/natsserver"
	"github.com/modgate/modgate/integration/s3server"
	"github.com/modgate/modgate/integration/testproxy"
	"github.com/modgate/modgate/s3store"
)

// A fleet is several `modgate serve` replicas on one S3 store (a real S3
// server) and, optionally, one NATS server, as `Running several replicas`
// in the README deploys them.
type fleet struct {
	s3       *s3server.Server
	nats     *natsserver.Server // nil: no coordination
	public   *testproxy.Server
	private  *testproxy.Server
	prefix   string
	replicas []*gatewayProc
}

// leaseTTL is the replicas' lease: short, so that a dead leader's lease
// lapses quickly.
const leaseTTL = time.Second

// config is a replica's modgate.yaml; private, if not nil, replaces the
// fleet's private upstream for this replica.
func (f *fleet) config(private *testproxy.Server) string {
	if private == nil {
		private = f.private
	}
	cfg := gatewayConfig(f.public, private) + fmt.Sprintf(`
store:
  type: s3
  bucket: %s
  prefix: %s
  endpoint: %s
  region: %s
`, f.s3.Bucket, f.prefix, f.s3.Endpoint, f.s3.Region)
	if f.nats != nil {
		cfg += fmt.Sprintf(`
coordination:
  type: nats
  url: %s
  lease_ttl: %s
`, f.nats.URL, leaseTTL)
	}
	return cfg
}

// start starts one more replica.
func (f *fleet) start(t testing.TB, private *testproxy.Server) *gatewayProc {
	t.Helper()
	g := startModgateEnv(t, f.config(private), f.s3.Env())
	f.replicas = append(f.replicas, g)
	return g
}

// store opens the fleet's store as a replica sees it.
func (f *fleet) store(t *testing.T) *s3store.Store {
	t.Helper()
	f.s3.Setenv(t)
	s, err := s3store.Open(t.Context(), s3store.Config{Bucket: f.s3.Bucket, Prefix: f.prefix, Endpoint: f.s3.Endpoint, Region: f.s3.Region})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// objects lists the names under prefix in the fleet's store.
func (f *fleet) objects(t *testing.T, prefix string) []string {
	t.Helper()
	var names []string
	if err := f.store(t).List(t.Context(), prefix, func(o s3store.Object) error {
		names = append(names, o.Name)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return names
}

func newFleet(t testing.TB, s3 *s3server.Server, nats *natsserver.Server, n int) *fleet {
	t.Helper()
	public, private := upstreams(t)
	f := &fleet{s3: s3, nats: nats, public: public, private: private, prefix: strings.ReplaceAll(t.Name(), "/", "-") + "/"}
	for range n {
		f.start(t, nil)
	}
	return f
}

// getBody GETs url within 30s; a transport error fails t, from any
// goroutine.
func getBody(t testing.TB, url string) (int, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Errorf("GET %s: %v", url, err)
		return 0, nil
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Errorf("GET %s: reading the body: %v", url, err)
	}
	return resp.StatusCode, body
}

// TestReplicas runs three replicas on one S3 store and one NATS server,
// with the real go command, and the faults of each.
func TestReplicas(t *testing.T) {
	s3 := s3server.Start(t, "modgate")
	nats := natsserver.Start(t)

	t.Run("a cold miss asked of every replica reaches the upstream once", func(t *testing.T) {
		f := newFleet(t, s3, nats, 3)
		const zip = "/example.com/a/@v/v1.0.0.zip"
		f.public.Delay(func(p string) time.Duration {
			if p == zip {
				return 500 * time.Millisecond // every request arrives during the fill
			}
			return 0
		})
		const n = 100
		bodies := make([][]byte, n)
		statuses := make([]int, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() { statuses[i], bodies[i] = getBody(t, f.replicas[i%3].URL+zip) })
		}
		wg.Wait()
		for i := range n {
			if statuses[i] != 200 || !bytes.Equal(bodies[i], bodies[0]) {
				t.Fatalf("request %d (replica %d) = %d, %d bytes; want 200 and the same %d bytes as the first", i, i%3, statuses[i], len(bodies[i]), len(bodies[0]))
			}
		}
		if got := f.public.Count(zip); got != 1 {
			t.Errorf("the upstream received %d requests for %s from 3 replicas, want 1", got, zip)
		}
	})

	t.Run("go mod download through another replica makes no upstream request", func(t *testing.T) {
		f := newFleet(t, s3, nats, 2)
		if out, err := download(t, f.replicas[0].URL, f.public.VerifierKey, warmModules...); err != nil {
			t.Fatalf("through replica A: %v\n%s", err, out)
		}
		before := len(f.public.Requests())
		if out, err := download(t, f.replicas[1].URL, f.public.VerifierKey, warmModules...); err != nil {
			t.Fatalf("through replica B: %v\n%s", err, out)
		}
		if after := f.public.Requests(); len(after) != before {
			t.Errorf("replica B asked the upstream %d times after A filled the store: %q", len(after)-before, after[before:])
		}
		if len(f.objects(t, "entries/")) == 0 {
			t.Errorf("no entry in the store")
		}
	})

	t.Run("a leader killed mid-fill leaves nothing, and another replica completes the fill", func(t *testing.T) {
		f := newFleet(t, s3, nats, 2)
		const zip = "/example.com/b/@v/v1.0.0.zip"
		f.public.Delay(func(p string) time.Duration {
			if p == zip {
				return 3 * time.Second
			}
			return 0
		})
		a, b := f.replicas[0], f.replicas[1]
		go func() {
			http.Get(a.URL + zip) // its replica dies under it
		}()
		waitFor(t, 5*time.Second, func() bool { return f.public.Count(zip) == 1 }, "the leader's fill to reach the upstream")
		type result struct {
			status int
			body   []byte
		}
		done := make(chan result, 1)
		start := time.Now()
		go func() { s, body := getBody(t, b.URL+zip); done <- result{s, body} }()
		time.Sleep(200 * time.Millisecond) // b is following a's lease
		a.kill(t)
		if names := f.objects(t, "entries/"); len(names) != 0 {
			t.Errorf("entries in the store after the leader died mid-fill: %q", names)
		}
		r := <-done
		if r.status != 200 {
			t.Fatalf("through replica B after A died: %d %q", r.status, r.body)
		}
		// The lease lapses within 1.5 × its TTL, then B fills (3s): far
		// sooner than B's follow timeout (60s), after which it would have
		// fetched the key without the lease. The bound leaves room for a
		// loaded machine.
		if took := time.Since(start); took > 3*time.Second+4*leaseTTL+2*time.Second {
			t.Errorf("B answered %s after A died, want within the lease's lapse plus its own fill", took)
		}
		if got := f.public.Count(zip); got != 2 {
			t.Errorf("the upstream received %d requests, want 2: the dead leader's and B's", got)
		}
		// The zip's one entry (beside the checksum database's records and
		// tiles that B's verification read through the store).
		if got := f.objects(t, "entries"+zip); len(got) != 1 {
			t.Errorf("entries of %s in the store = %q, want one", zip, got)
		}
	})

	t.Run("a purge reaches the store and every replica", func(t *testing.T) {
		f := newFleet(t, s3, nats, 2)
		a, b := f.replicas[0], f.replicas[1]
		const zip = "/example.com/a/@v/v1.1.0.zip"
		for _, g := range f.replicas { // A fills, B reads through: both hold it
			if s, body := getBody(t, g.URL+zip); s != 200 {
				t.Fatalf("%d %q", s, body)
			}
		}
		req, _ := http.NewRequest("POST", a.Admin+"/cache/purge?module=example.com/a@v1.1.0", nil)
		req.Header.Set("Authorization", "Bearer "+a.adminToken(t))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), "1 in the shared store") || !strings.Contains(string(body), "other replicas were told") {
			t.Fatalf("purge: %d %q", resp.StatusCode, body)
		}
		waitFor(t, 5*time.Second, func() bool {
			return strings.Contains(b.logText(), "cache purged at another replica's request")
		}, "replica B to purge")
		if s, _ := getBody(t, b.URL+zip); s != 200 {
			t.Fatalf("after the purge: %d", s)
		}
		if got := f.public.Count(zip); got != 2 {
			t.Errorf("the upstream received %d requests for %s, want 2: the purge reached B and the store, so B fetched it again", got, zip)
		}
	})

	t.Run("one private ledger: the loser of a race refuses its bytes", func(t *testing.T) {
		// No coordination: both replicas fetch, the ledger decides.
		_, other := upstreams(t)
		f := newFleet(t, s3, nil, 1)
		b := f.start(t, other)
		const mod = "/corp.example/private/@v/v1.0.0.mod"
		other.Replace(mod, []byte("module corp.example/private\n\n// not what the other replica was given\n"))
		// Both upstreams answer late, so that both replicas miss and fetch
		// (a replica that looked after the other had committed would read
		// its entry from the store, and serve it).
		slow := func(p string) time.Duration {
			if p == mod {
				return 500 * time.Millisecond
			}
			return 0
		}
		f.private.Delay(slow)
		other.Delay(slow)
		var statuses [2]int
		var wg sync.WaitGroup
		for i, g := range []*gatewayProc{f.replicas[0], b} {
			wg.Go(func() { statuses[i], _ = getBody(t, g.URL+mod) })
		}
		wg.Wait()
		ok, refused := 0, 0
		for _, s := range statuses {
			switch s {
			case 200:
				ok++
			case 502:
				refused++
			}
		}
		if ok != 1 || refused != 1 {
			t.Errorf("statuses %v, want one 200 and one 502 (the ledger's mismatch)", statuses)
		}
		if got := f.objects(t, "ledger/"); len(got) != 1 {
			t.Errorf("ledger records in the store = %q, want exactly one", got)
		}
	})

	t.Run("nats stopped: requests succeed and nothing is committed twice", func(t *testing.T) {
		f := newFleet(t, s3, nats, 2)
		nats.Stop()
		restarted := false
		defer func() {
			if !restarted {
				nats.Restart(t)
			}
		}()
		const zip = "/example.com/c/v2/@v/v2.0.0.zip"
		var statuses [2]int
		var wg sync.WaitGroup
		for i, g := range f.replicas {
			wg.Go(func() { statuses[i], _ = getBody(t, g.URL+zip) })
		}
		wg.Wait()
		if statuses != [2]int{200, 200} {
			t.Fatalf("statuses %v with NATS down, want 200 from both replicas", statuses)
		}
		fetched := f.public.Count(zip)
		noops := func() int {
			n := 0
			for _, g := range f.replicas {
				for line := range strings.Lines(g.logText()) {
					if strings.Contains(line, "another replica committed the entry first") && strings.Contains(line, zip) {
						n++
					}
				}
			}
			return n
		}
		// The replicas' logs are read as they come: give the lines a moment.
		deadline := time.Now().Add(5 * time.Second)
		for noops() < fetched-1 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if second := noops(); second != fetched-1 {
			t.Errorf("the upstream was asked %d times and %d commits found the entry already there, want %d: every commit after the first is a no-op", fetched, second, fetched-1)
		}
		_, ready := getBody(t, f.replicas[0].Admin+"/readyz")
		if !strings.Contains(string(ready), "coordination: unavailable") {
			t.Errorf("/readyz with NATS down = %q, want it to say coordination is unavailable", ready)
		}
		nats.Restart(t)
		restarted = true
		waitFor(t, 15*time.Second, func() bool {
			_, ready := getBody(t, f.replicas[0].Admin+"/readyz")
			return !strings.Contains(string(ready), "coordination")
		}, "the replica to reconnect to NATS")
	})

	t.Run("s3 stopped: warm keys served, misses are 503, then it recovers", func(t *testing.T) {
		f := newFleet(t, s3, nats, 2)
		const warm, cold = "/example.com/a/@v/v1.1.0.zip", "/example.com/b/@v/v1.0.0.mod"
		if s, body := getBody(t, f.replicas[0].URL+warm); s != 200 {
			t.Fatalf("warming: %d %q", s, body)
		}
		s3.Stop(t)
		restarted := false
		defer func() {
			if !restarted {
				s3.Restart(t)
			}
		}()
		if s, body := getBody(t, f.replicas[0].URL+warm); s != 200 {
			t.Errorf("warm key with the store down: %d %q, want 200 from the local tiers", s, body)
		}
		for i, g := range f.replicas {
			if s, body := getBody(t, g.URL+cold); s != 503 {
				t.Errorf("replica %d: miss with the store down: %d %q, want 503", i, s, body)
			}
		}
		// B never had the warm key: it is in the store, which is down.
		if s, body := getBody(t, f.replicas[1].URL+warm); s != 503 {
			t.Errorf("replica B, key only in the store, with the store down: %d %q, want 503", s, body)
		}
		s3.Restart(t)
		restarted = true
		if s, body := getBody(t, f.replicas[1].URL+cold); s != 200 {
			t.Errorf("miss after the store came back: %d %q", s, body)
		}
		if s, body := getBody(t, f.replicas[1].URL+warm); s != 200 {
			t.Errorf("B reading A's entry after the store came back: %d %q", s, body)
		}
	})
}

// waitFor polls cond until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
