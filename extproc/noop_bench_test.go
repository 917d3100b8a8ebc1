package extproc_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/modgate/modgate/extproc"
)

// The shape of BenchmarkVsNoop's measurements, per server and round.
const (
	noopSeqRequests  = 2000            // sequential requests of a p50 measurement
	noopWarmRequests = 200             // untimed requests before them
	noopSeqBlock     = 100             // in blocks, taking turns with the other server
	noopStreams      = 64              // concurrent streams of a throughput measurement
	noopLoadTime     = 2 * time.Second // length of a throughput measurement
	noopSlices       = 8               // in slices, taking turns with the other server
	noopLoadMax      = 200_000         // most requests of a throughput measurement
	noopRounds       = 3               // rounds, medians kept
)

// BenchmarkVsNoop measures what modgate's ext_proc server adds to the
// cheapest ext_proc exchange there is: it compares modgate answering a
// warm cache hit of a small .mod (an ImmediateResponse 200 carrying the
// cached bytes) with a no-op ext_proc server that answers every message
// with an empty reply of the matching kind. Both listen on 127.0.0.1 and
// are driven by the same Envoy-like client over real gRPC on TCP loopback,
// each over one client connection: one Process stream per request,
// carrying one request-headers message with the headers and the request
// attributes Envoy sends (end_of_stream true), then the reply is read, the
// send side closed and the stream drained to its end. A request's time is
// all of that, from opening the stream to its end. The client and both
// servers share the process, and so the machine's cores: the no-op's
// figures are the floor that gRPC and the client set on this machine.
//
// Two measurements per server and round:
//
//   - p50: the median latency of 2000 sequential requests, one stream at
//     a time, after 200 untimed ones;
//   - req/s-64: the requests per second of 64 concurrent streams, each
//     making requests one after the other, over 2 s (and at most 200,000
//     requests).
//
// The servers take turns in blocks of 100 requests for p50 and in 250 ms
// slices for req/s-64, so that a change in the machine's load (other work
// on a shared machine) hits both alike; the order is swapped each round.
// The medians of 3 rounds are reported with b.ReportMetric, with the
// ratios modgate/noop: "ratio-p50" (goal ≤ 1.3) and "ratio-req/s-64"
// (goal ≥ 0.85); each round's figures are logged. Every modgate reply is
// checked to be the ImmediateResponse 200 with the .mod's bytes, every
// no-op reply a request-headers reply, so an error is never measured. It
// runs once whatever b.N is (run it with -benchtime=1x).
func BenchmarkVsNoop(b *testing.B) {
	const mod = "/example.com/a/@v/v1.0.0.mod"
	sc := startSidecar(b)
	want := fixtureBody(b, "example.com/a", "v1.0.0").Mod
	warmHit(b, sc, mod, want)

	servers := []noopTarget{
		{"modgate", &envoyClient{client: sc.client, path: mod}, func(resp *extprocv3.ProcessingResponse) error {
			ir := resp.GetImmediateResponse()
			if ir.GetStatus().GetCode() != 200 || string(ir.GetBody()) != string(want) {
				return fmt.Errorf("reply %v, want an ImmediateResponse 200 with the .mod", resp)
			}
			return nil
		}},
		{"noop", &envoyClient{client: serveExtProc(b, noopServer{}), path: mod}, func(resp *extprocv3.ProcessingResponse) error {
			if resp.GetRequestHeaders() == nil {
				return fmt.Errorf("reply %v, want a request-headers reply", resp)
			}
			return nil
		}},
	}
	p50 := map[string][]time.Duration{}
	rps := map[string][]float64{}
	for r := range noopRounds {
		order := servers
		if r%2 == 1 {
			order = []noopTarget{servers[1], servers[0]}
		}
		lat := sequential(b, order)
		n := concurrent(b, order)
		for i, t := range order {
			p50[t.name] = append(p50[t.name], lat[i])
			rps[t.name] = append(rps[t.name], n[i])
		}
		b.Logf("round %d: p50 modgate %.1fµs, noop %.1fµs; %d streams modgate %.0f req/s, noop %.0f req/s", r+1,
			micros(p50["modgate"][r]), micros(p50["noop"][r]), noopStreams, rps["modgate"][r], rps["noop"][r])
	}
	mp50, np50 := medianOf(p50["modgate"]), medianOf(p50["noop"])
	mrps, nrps := medianOf(rps["modgate"]), medianOf(rps["noop"])
	b.ReportMetric(micros(mp50), "modgate-p50-µs")
	b.ReportMetric(micros(np50), "noop-p50-µs")
	b.ReportMetric(float64(mp50)/float64(np50), "ratio-p50")
	b.ReportMetric(mrps, "modgate-req/s-64")
	b.ReportMetric(nrps, "noop-req/s-64")
	b.ReportMetric(mrps/nrps, "ratio-req/s-64")
}

// A noopTarget is one server of BenchmarkVsNoop: its client, and the
// check every reply must pass.
type noopTarget struct {
	name  string
	c     *envoyClient
	check func(*extprocv3.ProcessingResponse) error
}

// request makes one request to t and checks the reply.
func (t noopTarget) request(ctx context.Context) error {
	resp, err := t.c.do(ctx)
	if err != nil {
		return err
	}
	return t.check(resp)
}

// micros returns d in microseconds.
func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// warmHit fills the cache with path as Envoy would on a miss (routed to
// the public cluster, the upstream's headers and body handed back), then
// checks that path is a hit answered with body.
func warmHit(tb testing.TB, sc *sidecar, path string, body []byte) {
	tb.Helper()
	ctx := tb.Context()
	s, resp, err := requestHeaders(ctx, sc.client, path)
	if err != nil || route(resp) != extproc.RoutePublic {
		tb.Fatalf("warming %s: reply %v, %v; want route public", path, resp, err)
	}
	s.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{
		Headers: headers(":status", "200", "content-length", strconv.Itoa(len(body))),
	}}})
	if resp, err = s.Recv(); err != nil || resp.GetResponseHeaders() == nil {
		tb.Fatalf("warming %s: response headers: reply %v, %v", path, resp, err)
	}
	s.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{Body: body, EndOfStream: true}}})
	if resp, err = s.Recv(); err != nil || resp.GetResponseBody() == nil {
		tb.Fatalf("warming %s: response body: reply %v, %v", path, resp, err)
	}
	end(s)
	s, resp, err = requestHeaders(ctx, sc.client, path)
	if err != nil {
		tb.Fatal(err)
	}
	end(s)
	if ir := resp.GetImmediateResponse(); ir.GetStatus().GetCode() != 200 || string(ir.GetBody()) != string(body) {
		tb.Fatalf("warmed %s: reply %v, want an ImmediateResponse 200 with its bytes", path, resp)
	}
}

// noopServer is the cheapest correct ext_proc server: every message gets
// an empty reply of its kind.
type noopServer struct {
	extprocv3.UnimplementedExternalProcessorServer
}

// Process answers every message of a stream until Envoy ends it.
func (noopServer) Process(srv extprocv3.ExternalProcessor_ProcessServer) error {
	for {
		req, err := srv.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled {
				return nil
			}
			return err
		}
		resp := &extprocv3.ProcessingResponse{}
		switch req.Request.(type) {
		case *extprocv3.ProcessingRequest_RequestHeaders:
			resp.Response = &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocv3.HeadersResponse{Response: &extprocv3.CommonResponse{}}}
		case *extprocv3.ProcessingRequest_RequestBody:
			resp.Response = &extprocv3.ProcessingResponse_RequestBody{RequestBody: &extprocv3.BodyResponse{Response: &extprocv3.CommonResponse{}}}
		case *extprocv3.ProcessingRequest_RequestTrailers:
			resp.Response = &extprocv3.ProcessingResponse_RequestTrailers{RequestTrailers: &extprocv3.TrailersResponse{}}
		case *extprocv3.ProcessingRequest_ResponseHeaders:
			resp.Response = &extprocv3.ProcessingResponse_ResponseHeaders{ResponseHeaders: &extprocv3.HeadersResponse{Response: &extprocv3.CommonResponse{}}}
		case *extprocv3.ProcessingRequest_ResponseBody:
			resp.Response = &extprocv3.ProcessingResponse_ResponseBody{ResponseBody: &extprocv3.BodyResponse{Response: &extprocv3.CommonResponse{}}}
		case *extprocv3.ProcessingRequest_ResponseTrailers:
			resp.Response = &extprocv3.ProcessingResponse_ResponseTrailers{ResponseTrailers: &extprocv3.TrailersResponse{}}
		default:
			return status.Errorf(codes.InvalidArgument, "unknown ext_proc message %T", req.Request)
		}
		if err := srv.Send(resp); err != nil {
			return err
		}
	}
}

// envoyClient plays the gateway Envoy's ext_proc filter for GETs of one
// path, one Process stream per request.
type envoyClient struct {
	client extprocv3.ExternalProcessorClient
	path   string
	n      atomic.Uint64 // requests sent, for x-request-id
}

// envoyRequest is the first (and here only) message Envoy sends on a
// stream for a GET from the go command through a client sidecar: the
// request headers (pseudo headers first, values in raw_value, keys
// lower-case), the protocol configuration, and the request attributes
// the gateway bootstrap asks for, in the Struct Envoy sends.
func (c *envoyClient) envoyRequest() *extprocv3.ProcessingRequest {
	n := c.n.Add(1)
	id := fmt.Sprintf("6f1c2a9e-3b4d-4e5f-8a7b-%012x", n)
	attrs := &structpb.Struct{Fields: map[string]*structpb.Value{
		"source.address":                            structpb.NewStringValue("10.1.2.3:" + strconv.Itoa(30000+int(n%30000))),
		"connection.mtls":                           structpb.NewBoolValue(true),
		"connection.subject_peer_certificate":       structpb.NewStringValue("CN=builder,OU=ci,O=modgate.test"),
		"connection.uri_san_peer_certificate":       structpb.NewStringValue("spiffe://modgate.test/ns/ci/sa/builder"),
		"connection.sha256_peer_certificate_digest": structpb.NewStringValue("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"),
		"request.id":                                structpb.NewStringValue(id),
	}}
	return &extprocv3.ProcessingRequest{
		Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{
			Headers: headers(
				":authority", "modgate.modgate.svc",
				":path", c.path,
				":method", "GET",
				":scheme", "https",
				"user-agent", "Go-http-client/1.1",
				"accept-encoding", "gzip",
				"x-forwarded-proto", "https",
				"x-request-id", id,
			),
			EndOfStream: true,
		}},
		Attributes: map[string]*structpb.Struct{"envoy.filters.http.ext_proc": attrs},
		ProtocolConfig: &extprocv3.ProtocolConfiguration{
			RequestBodyMode:  filterv3.ProcessingMode_NONE,
			ResponseBodyMode: filterv3.ProcessingMode_NONE,
		},
	}
}

// do makes one request: it opens a stream, sends the request headers,
// reads the one reply, closes the send side and drains the stream to its
// end, as Envoy does. It returns the reply.
func (c *envoyClient) do(ctx context.Context) (*extprocv3.ProcessingResponse, error) {
	s, err := c.client.Process(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.Send(c.envoyRequest()); err != nil {
		return nil, err
	}
	resp, err := s.Recv()
	if err != nil {
		return nil, err
	}
	if err := s.CloseSend(); err != nil {
		return nil, err
	}
	for {
		if _, err := s.Recv(); err != nil {
			if errors.Is(err, io.EOF) {
				return resp, nil
			}
			return nil, fmt.Errorf("draining the stream: %w", err)
		}
	}
}

// sequential makes noopWarmRequests and then noopSeqRequests requests to
// each target, one at a time, the targets taking turns in blocks of
// noopSeqBlock, and returns each target's median latency over the latter.
// The first request of a block, after the other target's turn, is not
// timed either.
func sequential(b *testing.B, targets []noopTarget) []time.Duration {
	b.Helper()
	ctx := b.Context()
	request := func(t noopTarget) time.Duration {
		t0 := time.Now()
		if err := t.request(ctx); err != nil {
			b.Fatalf("%s: %v", t.name, err)
		}
		return time.Since(t0)
	}
	for _, t := range targets {
		for range noopWarmRequests {
			request(t)
		}
	}
	lat := make([][]time.Duration, len(targets))
	for range noopSeqRequests / noopSeqBlock {
		for j, t := range targets {
			request(t)
			for range noopSeqBlock {
				lat[j] = append(lat[j], request(t))
			}
		}
	}
	p50 := make([]time.Duration, len(targets))
	for j := range targets {
		p50[j] = medianOf(lat[j])
	}
	return p50
}

// concurrent loads each target with noopStreams streams for noopLoadTime
// or noopLoadMax requests, whichever comes first, in noopSlices slices,
// the targets taking turns slice by slice, and returns each target's
// requests per second over its slices.
func concurrent(b *testing.B, targets []noopTarget) []float64 {
	b.Helper()
	done := make([]int64, len(targets))
	took := make([]time.Duration, len(targets))
	for range noopSlices {
		for j, t := range targets {
			n, d := loadSlice(b, t, noopLoadTime/noopSlices, noopLoadMax/noopSlices)
			done[j] += n
			took[j] += d
		}
	}
	rps := make([]float64, len(targets))
	for j := range targets {
		rps[j] = float64(done[j]) / took[j].Seconds()
	}
	return rps
}

// loadSlice runs noopStreams streams against t at once, each making
// requests one after the other, for d or limit requests, whichever comes
// first. It returns the requests answered and the time from the first
// request's start to the last one's end.
func loadSlice(b *testing.B, t noopTarget, d time.Duration, limit int64) (int64, time.Duration) {
	b.Helper()
	ctx := b.Context()
	var (
		started atomic.Int64 // requests started
		done    atomic.Int64 // requests answered and checked
		errOnce sync.Once
		failed  error
	)
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	for range noopStreams {
		wg.Go(func() {
			for started.Add(1) <= limit && time.Now().Before(deadline) {
				if err := t.request(ctx); err != nil {
					errOnce.Do(func() { failed = err })
					return
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	if failed != nil {
		b.Fatalf("%s, %d streams: %v", t.name, noopStreams, failed)
	}
	return done.Load(), took
}

// medianOf returns the median of xs.
func medianOf[T int64 | float64 | time.Duration](xs []T) T {
	xs = slices.Clone(xs)
	slices.Sort(xs)
	return xs[len(xs)/2]
}
