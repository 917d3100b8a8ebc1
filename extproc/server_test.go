package extproc_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/modgate/modgate/audit"
	"github.com/modgate/modgate/cache"
	"github.com/modgate/modgate/extproc"
	"github.com/modgate/modgate/gate"
	"github.com/modgate/modgate/integration/testproxy"
	"github.com/modgate/modgate/ledger"
	"github.com/modgate/modgate/policy"
	"github.com/modgate/modgate/upstream"
	"github.com/modgate/modgate/verify"
)

// sidecar is a Server on loopback over a Processor whose only upstream is
// a hermetic one; the test plays Envoy by hand.
type sidecar struct {
	client extprocv3.ExternalProcessorClient
	cache  *cache.Cache
	up     *testproxy.Server
}

func startSidecar(tb testing.TB) *sidecar {
	tb.Helper()
	return startSidecarWith(tb, extproc.ServerOptions{})
}

// startSidecarWith is startSidecar with the server's options.
func startSidecarWith(tb testing.TB, opts extproc.ServerOptions) *sidecar {
	tb.Helper()
	log := slog.New(slog.DiscardHandler)
	up := testproxy.Start(tb, testproxy.Fixtures(tb))
	pub, err := upstream.Parse("public", up.URL, false)
	if err != nil {
		tb.Fatal(err)
	}
	set := &upstream.Set{Public: []*upstream.Upstream{pub}}
	c, err := cache.Open(cache.Config{Dir: tb.TempDir(), HotBytes: 8 << 20, Logger: log})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	led, err := ledger.Open(filepath.Join(tb.TempDir(), "ledger"), log)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { led.Close() })
	uc := upstream.NewClient(upstream.ClientOptions{})
	v, err := verify.New(context.Background(), verify.Config{
		Key: up.VerifierKey, Dir: tb.TempDir(), Ledger: led, Logger: log,
		Fetch: func(ctx context.Context, p string) ([]byte, error) {
			return uc.Get(ctx, set.Public, "/sumdb/"+up.SumDB+p, 1<<20)
		},
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { v.Close() })
	pol, err := policy.New(policy.Config{SumDBs: []string{up.SumDB}})
	if err != nil {
		tb.Fatal(err)
	}
	aw := audit.NewWriter(io.Discard)
	tb.Cleanup(func() { aw.Close() })
	p, err := gate.New(gate.Options{Policy: pol, Upstreams: set, Cache: c, Verifier: v, Audit: aw, Logger: log})
	if err != nil {
		tb.Fatal(err)
	}
	return &sidecar{client: serveExtProc(tb, extproc.NewServer(p, opts)), cache: c, up: up}
}

// serveExtProc serves impl over gRPC on 127.0.0.1 until the test ends and
// returns a client of it.
func serveExtProc(tb testing.TB, impl extprocv3.ExternalProcessorServer) extprocv3.ExternalProcessorClient {
	tb.Helper()
	srv := grpc.NewServer()
	extprocv3.RegisterExternalProcessorServer(srv, impl)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	go srv.Serve(l)
	tb.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	return extprocv3.NewExternalProcessorClient(conn)
}

func headers(kv ...string) *corev3.HeaderMap {
	hm := &corev3.HeaderMap{}
	for i := 0; i+1 < len(kv); i += 2 {
		hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: kv[i], RawValue: []byte(kv[i+1])})
	}
	return hm
}

// requestHeaders opens a stream and sends a GET's request headers.
func requestHeaders(ctx context.Context, c extprocv3.ExternalProcessorClient, path string) (extprocv3.ExternalProcessor_ProcessClient, *extprocv3.ProcessingResponse, error) {
	s, err := c.Process(ctx)
	if err != nil {
		return nil, nil, err
	}
	attrs, _ := structpb.NewStruct(map[string]any{"source.address": "10.1.2.3:4567", "connection.uri_san_peer_certificate": "spiffe://x/y"})
	err = s.Send(&extprocv3.ProcessingRequest{
		Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{
			Headers:     headers(":method", "GET", ":path", path, ":authority", "gateway", ":scheme", "https"),
			EndOfStream: true,
		}},
		Attributes: map[string]*structpb.Struct{"envoy.filters.http.ext_proc": attrs},
	})
	if err != nil {
		return nil, nil, err
	}
	resp, err := s.Recv()
	return s, resp, err
}

// end ends a stream as Envoy does: CloseSend, then read until the
// server's end, which releases the stream.
func end(s extprocv3.ExternalProcessor_ProcessClient) {
	s.CloseSend()
	for {
		if _, err := s.Recv(); err != nil {
			return
		}
	}
}

// route returns the route a reply asks for, "" if none.
func route(resp *extprocv3.ProcessingResponse) string {
	return resp.GetDynamicMetadata().GetFields()[extproc.MetadataNamespace].GetStructValue().GetFields()[extproc.MetadataKey].GetStringValue()
}

// TestOverrideNotice checks that a phase that runs longer than
// WaitNotice (here a request waiting for another's fill) first asks
// Envoy for more time, with ExtendTo, on its own stream, then answers.
func TestOverrideNotice(t *testing.T) {
	const wait, extend = 20 * time.Millisecond, 7 * time.Second
	sc := startSidecarWith(t, extproc.ServerOptions{WaitNotice: wait, ExtendTo: extend})
	ctx := t.Context()
	const mod = "/example.com/a/@v/v1.0.0.mod"
	leader, resp, err := requestHeaders(ctx, sc.client, mod)
	if err != nil || route(resp) != extproc.RoutePublic {
		t.Fatalf("the leader: %v %v, want it routed upstream", resp, err)
	}
	// The follower waits for the leader's fill: past WaitNotice, Envoy
	// is asked for more time.
	follower, resp, err := requestHeaders(ctx, sc.client, mod)
	if err != nil {
		t.Fatal(err)
	}
	if d := resp.GetOverrideMessageTimeout(); d == nil || d.AsDuration() != extend {
		t.Fatalf("the follower's first reply: %v, want an override_message_timeout of %v", resp, extend)
	}
	body := fixtureBody(t, "example.com/a", "v1.0.0").Mod
	leader.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{
		Headers: headers(":status", "200", "content-length", strconv.Itoa(len(body))),
	}}})
	if _, err := leader.Recv(); err != nil {
		t.Fatal(err)
	}
	leader.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{Body: body, EndOfStream: true}}})
	if _, err := leader.Recv(); err != nil {
		t.Fatal(err)
	}
	end(leader)
	resp, err = follower.Recv()
	if err != nil {
		t.Fatal(err)
	}
	end(follower)
	if ir := resp.GetImmediateResponse(); ir == nil || ir.GetStatus().GetCode() != 200 || string(ir.GetBody()) != string(body) {
		t.Errorf("the follower's answer: %v, want an ImmediateResponse 200 with the go.mod", resp)
	}
}

func TestServerDecisions(t *testing.T) {
	sc := startSidecar(t)
	ctx := t.Context()

	// A reject: an ImmediateResponse with a plain-text body.
	s, resp, err := requestHeaders(ctx, sc.client, "/example.com/a/@v/v1.0.0/../../x")
	if err != nil {
		t.Fatal(err)
	}
	end(s)
	if ir := resp.GetImmediateResponse(); ir == nil || ir.GetStatus().GetCode() != 400 || len(ir.GetBody()) == 0 {
		t.Errorf("hostile path: reply %v, want an ImmediateResponse 400", resp)
	}

	// A miss: routed to the public cluster by dynamic metadata, with a
	// header mutation and clear_route_cache.
	const mod = "/example.com/a/@v/v1.0.0.mod"
	s, resp, err = requestHeaders(ctx, sc.client, mod)
	if err != nil {
		t.Fatal(err)
	}
	cr := resp.GetRequestHeaders().GetResponse()
	if route(resp) != extproc.RoutePublic || cr.GetHeaderMutation() == nil || !cr.GetClearRouteCache() {
		t.Fatalf("miss: reply %v, want route public + header mutation + clear_route_cache", resp)
	}
	// Envoy fetched it: response headers, then the body.
	body := fixtureBody(t, "example.com/a", "v1.0.0").Mod
	s.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{
		Headers: headers(":status", "200", "content-type", "text/plain", "content-length", strconv.Itoa(len(body))),
	}}})
	resp, err = s.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetResponseHeaders() == nil || resp.GetModeOverride().GetResponseBodyMode().String() != "BUFFERED" {
		t.Fatalf("response headers: reply %v, want headers + BUFFERED", resp)
	}
	s.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{Body: body, EndOfStream: true}}})
	resp, err = s.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetResponseBody() == nil {
		t.Fatalf("verified body: reply %v, want it passed", resp)
	}
	end(s)

	// Now a small hit: an ImmediateResponse with the cached bytes.
	s, resp, err = requestHeaders(ctx, sc.client, mod)
	if err != nil {
		t.Fatal(err)
	}
	end(s)
	ir := resp.GetImmediateResponse()
	if ir.GetStatus().GetCode() != 200 || string(ir.GetBody()) != string(body) {
		t.Errorf("hit: reply %v, want an ImmediateResponse 200 with the go.mod", resp)
	}
	for _, h := range ir.GetHeaders().GetSetHeaders() {
		if h.GetHeader().GetValue() != "" || len(h.GetHeader().GetRawValue()) == 0 {
			t.Errorf("header %q not in raw_value only", h.GetHeader().GetKey())
		}
	}
}

func TestServerWithholdsTamperedZip(t *testing.T) {
	sc := startSidecar(t)
	ctx := t.Context()
	const zip = "/example.com/a/@v/v1.0.0.zip"
	s, resp, err := requestHeaders(ctx, sc.client, zip)
	if err != nil || route(resp) != extproc.RoutePublic {
		t.Fatalf("miss: %v, %v", resp, err)
	}
	good := fixtureBody(t, "example.com/a", "v1.0.0").Zip
	bad := slices.Clone(good)
	bad[len(bad)/2] ^= 1
	s.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{
		Headers: headers(":status", "200", "content-type", "application/zip"), // no length: STREAMED
	}}})
	if resp, err = s.Recv(); err != nil || resp.GetModeOverride().GetResponseBodyMode().String() != "STREAMED" {
		t.Fatalf("response headers: %v, %v; want STREAMED", resp, err)
	}
	half := len(bad) / 2
	s.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{Body: bad[:half]}}})
	if resp, err = s.Recv(); err != nil || resp.GetResponseBody() == nil {
		t.Fatalf("first chunk: %v, %v; want it passed", resp, err)
	}
	s.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{Body: bad[half:], EndOfStream: true}}})
	resp, err = s.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if ir := resp.GetImmediateResponse(); ir == nil || ir.GetStatus().GetCode() != 502 {
		t.Errorf("final chunk of a tampered zip: reply %v, want an ImmediateResponse 502 (Envoy resets the stream)", resp)
	}
	end(s)
	if _, err := sc.cache.Get(t.Context(), zip); err == nil {
		t.Error("the tampered zip was cached")
	}
}

func fixtureBody(t testing.TB, path, version string) *testproxy.Module {
	t.Helper()
	for _, m := range testproxy.Fixtures(t) {
		if m.Path == path && m.Version == version {
			return m
		}
	}
	t.Fatalf("no fixture %s@%s", path, version)
	return nil
}

// BenchmarkRoundTrip measures one ext_proc exchange for a request-headers
// decision (a reject) and for a small cache hit, at 1, 64 and 512
// concurrent streams on loopback; it reports p50 and p99 in microseconds.
func BenchmarkRoundTrip(b *testing.B) {
	sc := startSidecar(b)
	// Warm the hit.
	const mod = "/example.com/a/@v/v1.0.0.mod"
	s, resp, err := requestHeaders(b.Context(), sc.client, mod)
	if err != nil || route(resp) != extproc.RoutePublic {
		b.Fatalf("warming: %v %v", resp, err)
	}
	body := fixtureBody(b, "example.com/a", "v1.0.0").Mod
	s.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{
		Headers: headers(":status", "200", "content-length", strconv.Itoa(len(body))),
	}}})
	s.Recv()
	s.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{Body: body, EndOfStream: true}}})
	s.Recv()
	end(s)

	for _, tc := range []struct{ name, path string }{{"decision", "/favicon.ico"}, {"small-hit", mod}} {
		for _, conc := range []int{1, 64, 512} {
			b.Run(fmt.Sprintf("%s/streams=%d", tc.name, conc), func(b *testing.B) {
				lat := make([]time.Duration, b.N)
				var mu sync.Mutex
				next := 0
				var wg sync.WaitGroup
				b.ResetTimer()
				for range conc {
					wg.Go(func() {
						for {
							mu.Lock()
							i := next
							next++
							mu.Unlock()
							if i >= b.N {
								return
							}
							t0 := time.Now()
							s, resp, err := requestHeaders(context.Background(), sc.client, tc.path)
							if err != nil || resp.GetImmediateResponse() == nil {
								b.Errorf("%s: %v %v", tc.path, resp, err)
								return
							}
							end(s)
							lat[i] = time.Since(t0)
						}
					})
				}
				wg.Wait()
				b.StopTimer()
				sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
				b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
				b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
			})
		}
	}
}
