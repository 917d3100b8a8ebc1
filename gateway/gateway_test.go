package gateway_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/modgate/modgate/audit"
	"github.com/modgate/modgate/budget"
	"github.com/modgate/modgate/cache"
	"github.com/modgate/modgate/gate"
	"github.com/modgate/modgate/gate/gatetest"
	"github.com/modgate/modgate/gateway"
	"github.com/modgate/modgate/integration/testproxy"
	"github.com/modgate/modgate/ledger"
	"github.com/modgate/modgate/policy"
	"github.com/modgate/modgate/upstream"
	"github.com/modgate/modgate/verify"
)

type harness struct {
	url     string
	events  *gatetest.AuditLog
	handler http.Handler
}

type setup struct {
	public  []string // upstream base URLs
	private []string
	sumdb   string // verifier key of the public upstreams' checksum database; "" verifies nothing public
	opts    gate.Options
	client  upstream.ClientOptions
}

func start(t testing.TB, s setup) *harness {
	t.Helper()
	set := new(upstream.Set)
	for i, u := range s.public {
		up, err := upstream.Parse("pub"+string(rune('0'+i)), u, false)
		if err != nil {
			t.Fatal(err)
		}
		set.Public = append(set.Public, up)
	}
	for i, u := range s.private {
		up, err := upstream.Parse("priv"+string(rune('0'+i)), u, true)
		if err != nil {
			t.Fatal(err)
		}
		set.Private = append(set.Private, up)
	}
	pol, err := policy.New(policy.Config{Private: []string{"corp.example"}, SumDBs: []string{testproxy.DefaultSumDB}})
	if err != nil {
		t.Fatal(err)
	}
	ev := new(gatetest.AuditLog)
	log := slog.New(slog.DiscardHandler)
	if _, bench := t.(*testing.B); !bench {
		log = slog.New(slog.NewTextHandler(gatetest.TBWriter{T: t}, nil))
	}
	c, err := cache.Open(cache.Config{Dir: t.TempDir(), HotBytes: 8 << 20, DiskBytes: 1 << 30, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	aw := audit.NewWriter(ev)
	t.Cleanup(func() { aw.Close() })
	client := upstream.NewClient(s.client)
	led, err := ledger.Open(filepath.Join(t.TempDir(), "ledger"), log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { led.Close() })
	vc := verify.Config{Key: s.sumdb, Ledger: led, Logger: log}
	if s.sumdb != "" {
		vc.Dir = t.TempDir()
		vc.Fetch = func(ctx context.Context, p string) ([]byte, error) {
			return client.Get(ctx, set.Public, "/sumdb/"+testproxy.DefaultSumDB+p, 1<<20)
		}
	}
	v, err := verify.New(t.Context(), vc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	opts := s.opts
	opts.Policy, opts.Upstreams, opts.Audit, opts.Logger, opts.Cache, opts.Verifier = pol, set, aw, log, c, v
	proc, err := gate.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	h, err := gateway.New(gateway.Options{Processor: proc, Client: client, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &harness{url: srv.URL, events: ev, handler: h}
}

// get sends a raw request target, so hostile paths reach the server as
// written.
func get(t *testing.T, method, base, target string) (status int, body string, err error) {
	t.Helper()
	req, err := http.NewRequest(method, base+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.URL.Opaque = target // sent verbatim as the request-target
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// The status semantics of every kind of request, cache state and upstream
// failure are the behaviour table (package gate/gatetest), which
// TestBehaviour runs through this front end and extproc's runs through the
// ext_proc server. The tests below are what only the HTTP front end does.

func TestUpstreamTimeoutIs504(t *testing.T) {
	p := testproxy.Start(t, testproxy.Fixtures(t))
	p.Delay(func(string) time.Duration { return 2 * time.Second })
	h := start(t, setup{public: []string{p.URL}, sumdb: p.VerifierKey, client: upstream.ClientOptions{HeaderTimeout: 200 * time.Millisecond}})
	got, body, err := get(t, "GET", h.url, "/example.com/a/@v/list")
	if err != nil {
		t.Fatal(err)
	}
	if got != http.StatusGatewayTimeout {
		t.Errorf("GET with a slow upstream = %d %q, want 504", got, body)
	}
	if evs := h.events.Wait(t, 1); len(evs) != 1 || evs[0].HTTP.Response.StatusCode != 504 {
		t.Errorf("audit events = %+v, want one with status 504", evs)
	}
}

func TestOversizeBody(t *testing.T) {
	const target = "/example.com/a/@v/v1.0.0.info"
	big := bytes.Repeat([]byte("x"), gate.MaxInfoBytes+1)

	t.Run("announced", func(t *testing.T) {
		p := testproxy.Start(t, testproxy.Fixtures(t))
		p.Replace(target, big)
		h := start(t, setup{public: []string{p.URL}, sumdb: p.VerifierKey})
		got, body, err := get(t, "GET", h.url, target)
		if err != nil || got != http.StatusBadGateway || !strings.Contains(body, "limit") {
			t.Errorf("GET of an announced oversize .info = %d %q, %v; want 502 naming the limit", got, body, err)
		}
	})

	t.Run("streamed", func(t *testing.T) {
		// An upstream that sends no Content-Length: the limit trips mid-body,
		// before the client got a byte.
		up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			w.Write(big)
		}))
		t.Cleanup(up.Close)
		h := start(t, setup{public: []string{up.URL}})
		got, body, err := get(t, "GET", h.url, target)
		if err != nil || got != http.StatusBadGateway || !strings.Contains(body, "limit") {
			t.Errorf("GET of a streamed oversize .info = %d %q, %v; want 502 naming the limit", got, body, err)
		}
		evs := h.events.Wait(t, 1)
		if len(evs) != 1 || evs[0].Event.Outcome != audit.OutcomeFailure || !strings.Contains(evs[0].Event.Reason, "limit") {
			t.Errorf("audit events = %+v, want one failure naming the limit", evs)
		}
	})
}

func TestEveryRequestAuditedOnce(t *testing.T) {
	p := testproxy.Start(t, testproxy.Fixtures(t))
	h := start(t, setup{public: []string{p.URL}, sumdb: p.VerifierKey})
	targets := []string{
		"/example.com/a/@v/list", "/example.com/a/@v/v1.0.0.zip", "/x/../y", "/%00",
		"/sumdb/" + testproxy.DefaultSumDB + "/supported", "/example.com/nope/@latest",
	}
	const rounds = 5
	var wg sync.WaitGroup
	for range rounds {
		for _, target := range targets {
			wg.Go(func() {
				if _, _, err := get(t, "GET", h.url, target); err != nil {
					t.Errorf("GET %s: %v", target, err)
				}
			})
		}
	}
	wg.Wait()
	evs := h.events.Wait(t, rounds*len(targets))
	if len(evs) != rounds*len(targets) {
		t.Fatalf("got %d audit events for %d requests", len(evs), rounds*len(targets))
	}
	ids := map[string]bool{}
	for _, ev := range evs {
		if ids[ev.HTTP.Request.ID] {
			t.Errorf("request id %s audited twice", ev.HTTP.Request.ID)
		}
		ids[ev.HTTP.Request.ID] = true
	}
}

func TestServeCachedEntry(t *testing.T) {
	p := testproxy.Start(t, testproxy.Fixtures(t))
	h := start(t, setup{public: []string{p.URL}, sumdb: p.VerifierKey})
	const zip = "/example.com/a/@v/v1.0.0.zip"
	const info = "/example.com/a/@v/v1.0.0.info"
	client := &http.Client{}
	do := func(method, path string, header ...string) (*http.Response, []byte) {
		t.Helper()
		req, err := http.NewRequest(method, h.url+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp, body
	}
	for _, path := range []string{zip, info} {
		first, full := do("GET", path)
		if first.StatusCode != 200 || first.Header.Get("X-Modgate-Cache") != "miss" || first.Header.Get("Etag") == "" {
			t.Fatalf("GET %s = %s, cache %q, etag %q", path, first.Status, first.Header.Get("X-Modgate-Cache"), first.Header.Get("Etag"))
		}
		etag := first.Header.Get("Etag")

		resp, body := do("GET", path)
		if resp.StatusCode != 200 || resp.Header.Get("X-Modgate-Cache") != "hit" || !bytes.Equal(body, full) ||
			resp.Header.Get("Cache-Control") != "public, max-age=31536000, immutable" || resp.ContentLength != int64(len(full)) {
			t.Errorf("GET %s (hit) = %s, cache %q, cache-control %q, %d bytes; want the same %d bytes, immutable",
				path, resp.Status, resp.Header.Get("X-Modgate-Cache"), resp.Header.Get("Cache-Control"), len(body), len(full))
		}

		resp, body = do("HEAD", path)
		if resp.StatusCode != 200 || len(body) != 0 || resp.ContentLength != int64(len(full)) {
			t.Errorf("HEAD %s = %s, %d body bytes, length %d; want 200, none, %d", path, resp.Status, len(body), resp.ContentLength, len(full))
		}

		resp, body = do("GET", path, "Range", "bytes=2-9")
		if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, full[2:10]) {
			t.Errorf("GET %s with Range = %s %q, want 206 %q", path, resp.Status, body, full[2:10])
		}

		resp, _ = do("GET", path, "If-None-Match", etag)
		if resp.StatusCode != http.StatusNotModified {
			t.Errorf("GET %s with If-None-Match = %s, want 304", path, resp.Status)
		}
	}
	if got := p.Count(zip); got != 1 {
		t.Errorf("upstream saw %d requests for the zip, want 1", got)
	}
	// Every response above is audited.
	if evs := h.events.Wait(t, 10); len(evs) != 10 {
		t.Errorf("got %d audit events for 10 requests", len(evs))
	}
}

func TestMissBudget(t *testing.T) {
	p := testproxy.Start(t, testproxy.Fixtures(t))
	b, err := budget.New(budget.Config{Client: budget.Limit{Rate: 0.01, Burst: 2}})
	if err != nil {
		t.Fatal(err)
	}
	h := start(t, setup{public: []string{p.URL}, sumdb: p.VerifierKey, opts: gate.Options{Budget: b}})
	client := &http.Client{}
	misses := []string{"/example.com/a/@v/v1.0.0.info", "/example.com/a/@v/v1.1.0.info", "/example.com/a/@v/v1.0.0.mod"}
	for i, path := range misses {
		resp, err := client.Get(h.url + path)
		if err != nil {
			t.Fatal(err)
		}
		body := readBody(t, resp)
		if i < 2 {
			if resp.StatusCode != 200 {
				t.Errorf("miss %d within the budget = %s %q", i, resp.Status, body)
			}
			continue
		}
		if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" || !strings.Contains(body, "too many") {
			t.Errorf("miss over the budget = %s, Retry-After %q, %q; want 429 with Retry-After", resp.Status, resp.Header.Get("Retry-After"), body)
		}
	}
	// Hits cost nothing.
	for range 5 {
		resp, err := client.Get(h.url + misses[0])
		if err != nil {
			t.Fatal(err)
		}
		if readBody(t, resp); resp.StatusCode != 200 || resp.Header.Get("X-Modgate-Cache") != "hit" {
			t.Errorf("hit with the budget spent = %s, cache %q; want a 200 hit", resp.Status, resp.Header.Get("X-Modgate-Cache"))
		}
	}
	if got := p.Count(misses[2]); got != 0 {
		t.Errorf("upstream saw %d requests for the refused miss, want 0", got)
	}
	evs := h.events.Wait(t, 8)
	i := slices.IndexFunc(evs, func(e audit.Event) bool { return e.HTTP.Response.StatusCode == http.StatusTooManyRequests })
	if i < 0 || evs[i].Modgate.Rule != "budget-client" || evs[i].Modgate.Decision != "deny" {
		t.Errorf("audit events = %+v, want a 429 denied by rule budget-client", evs)
	}
}

func TestLeaderClientLeaves(t *testing.T) {
	// The first client gives up while its fetch is slow; the fetch goes on
	// for the client waiting behind it, and fills the cache.
	p := testproxy.Start(t, testproxy.Fixtures(t))
	const zip = "/example.com/a/@v/v1.0.0.zip"
	p.Delay(func(path string) time.Duration {
		if path == zip {
			return 400 * time.Millisecond
		}
		return 0
	})
	h := start(t, setup{public: []string{p.URL}, sumdb: p.VerifierKey})

	leaderErr := make(chan error, 1)
	go func() {
		c := &http.Client{Timeout: 100 * time.Millisecond}
		resp, err := c.Get(h.url + zip)
		if err == nil {
			resp.Body.Close()
		}
		leaderErr <- err
	}()
	time.Sleep(50 * time.Millisecond) // the leader's fetch is under way
	resp, err := http.Get(h.url + zip)
	if err != nil {
		t.Fatal(err)
	}
	body := readBody(t, resp)
	if resp.StatusCode != 200 || resp.Header.Get("X-Modgate-Cache") != "coalesced" || len(body) == 0 {
		t.Errorf("follower = %s, cache %q, %d bytes; want a coalesced 200", resp.Status, resp.Header.Get("X-Modgate-Cache"), len(body))
	}
	if err := <-leaderErr; err == nil {
		t.Errorf("leader with a 100ms timeout got its response; the test needs it to give up")
	}
	resp, err = http.Get(h.url + zip)
	if err != nil {
		t.Fatal(err)
	}
	readBody(t, resp)
	if resp.Header.Get("X-Modgate-Cache") != "hit" || p.Count(zip) != 1 {
		t.Errorf("after the fill: cache %q, upstream requests %d; want a hit and 1", resp.Header.Get("X-Modgate-Cache"), p.Count(zip))
	}
	evs := h.events.Wait(t, 3)
	i := slices.IndexFunc(evs, func(e audit.Event) bool { return e.Event.Reason == "client went away" })
	if i < 0 || evs[i].Modgate.Cache != "miss" {
		t.Errorf("audit events = %+v, want the leader's, a miss whose client went away", evs)
	}
}

func readBody(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestTransparentOriginalDestinationAndTLS(t *testing.T) {
	p := testproxy.Start(t, testproxy.Fixtures(t))
	h := start(t, setup{public: []string{p.URL}, sumdb: p.VerifierKey})
	// Stand in for a redirected connection: the listener's own address is
	// what the accepted connection reports as its local address, as the
	// original destination would be.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var refused sync.WaitGroup
	refused.Add(1)
	var refusedFrom string
	srv := &http.Server{Handler: h.handler, ConnContext: gateway.TransparentConnContext}
	go srv.Serve(gateway.RefuseTLS(l, func(c net.Conn) {
		refusedFrom = c.RemoteAddr().String()
		refused.Done()
	}))
	t.Cleanup(func() { srv.Close() })

	resp, err := http.Get("http://" + l.Addr().String() + "/example.com/a/@v/list")
	if err != nil {
		t.Fatal(err)
	}
	readBody(t, resp)
	evs := h.events.Wait(t, 1)
	if len(evs) != 1 || evs[0].Modgate.OriginalDestination != l.Addr().String() {
		t.Errorf("audit events = %+v, want original_destination %s", evs, l.Addr())
	}

	// A TLS handshake on a captured connection is refused, not served.
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte{0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0x00})
	refused.Wait()
	if refusedFrom != c.LocalAddr().String() {
		t.Errorf("refused %s, want %s", refusedFrom, c.LocalAddr())
	}
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if n, err := c.Read(make([]byte, 10)); err == nil {
		t.Errorf("the TLS connection got %d bytes back, want it closed", n)
	}
}

func TestTracing(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { tp.Shutdown(context.Background()) })
	p := testproxy.Start(t, testproxy.Fixtures(t))
	h := start(t, setup{public: []string{p.URL}, sumdb: p.VerifierKey, opts: gate.Options{Tracer: tp.Tracer("modgate")}})

	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	req, err := http.NewRequest("GET", h.url+"/example.com/a/@v/v1.0.0.zip", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	readBody(t, resp)
	if evs := h.events.Wait(t, 1); len(evs) != 1 || evs[0].Modgate.TraceID != traceID {
		t.Errorf("audit events = %+v, want one with trace_id %s", evs, traceID)
	}

	spans := map[string]tracetest.SpanStub{}
	for _, s := range exp.GetSpans() {
		spans[s.Name] = s
	}
	root, ok := spans["modgate.request"]
	if !ok {
		t.Fatalf("no modgate.request span; got %v", slices.Collect(maps.Keys(spans)))
	}
	if root.SpanContext.TraceID().String() != traceID || root.Parent.SpanID().String() != "00f067aa0ba902b7" {
		t.Errorf("request span trace %s parent %s, want the client's traceparent", root.SpanContext.TraceID(), root.Parent.SpanID())
	}
	for _, name := range []string{"modgate.cache.lookup", "modgate.upstream.fetch", "modgate.verify"} {
		s, ok := spans[name]
		if !ok {
			t.Errorf("no %s span", name)
			continue
		}
		if s.SpanContext.TraceID().String() != traceID {
			t.Errorf("%s is in trace %s, want %s", name, s.SpanContext.TraceID(), traceID)
		}
	}
	if v := spans["modgate.verify"]; v.Parent.SpanID() != spans["modgate.upstream.fetch"].SpanContext.SpanID() {
		t.Errorf("modgate.verify is not a child of the fetch")
	}
}
