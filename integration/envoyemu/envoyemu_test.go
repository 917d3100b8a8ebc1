package envoyemu_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	procmodev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/modgate/modgate/integration/envoyemu"
)

// env is what a case's check can look at.
type env struct {
	proc    *fakeProc
	a, b    *upstream
	body    []byte // what upstream a serves
	elapsed time.Duration
}

const kib = 1 << 10

func TestDo(t *testing.T) {
	body200k := pattern(200 * kib)
	tests := []struct {
		name     string
		proc     func(t testing.TB) func(s *serverStream) error
		body     []byte           // upstream a's body; default "hello"
		upstream http.HandlerFunc // overrides body
		config   func(t testing.TB, c *envoyemu.Config)
		req      envoyemu.Request // Path defaults to /example.com/m/@v/list
		check    func(t *testing.T, e *env, r *envoyemu.Response)
	}{
		{
			name: "pass-through",
			proc: func(testing.TB) func(*serverStream) error { return script(proceed) },
			req: envoyemu.Request{Header: http.Header{
				"Host": {"proxy.example"}, "X-Client": {"c1"}, "X-Envoy-Internal": {"x"},
			}},
			check: func(t *testing.T, e *env, r *envoyemu.Response) {
				wantResponse(t, r, 200, "hello", false)
				if r.Header.Get("X-Up") != "1" || r.Cluster != "a" || r.Messages != 2 {
					t.Errorf("X-Up, Cluster, Messages = %q, %q, %d, want 1, a, 2", r.Header.Get("X-Up"), r.Cluster, r.Messages)
				}
				wantKinds(t, e.proc, "request_headers", "response_headers")
				first := e.proc.received()[0]
				rh := first.GetRequestHeaders()
				if !rh.GetEndOfStream() || first.GetProtocolConfig() == nil {
					t.Errorf("request_headers end_of_stream, protocol_config = %v, %v, want true, set", rh.GetEndOfStream(), first.GetProtocolConfig())
				}
				got := map[string]string{}
				for _, hv := range rh.GetHeaders().GetHeaders() {
					if hv.GetValue() != "" || hv.GetKey() != strings.ToLower(hv.GetKey()) {
						t.Errorf("header %q: value %q set or key not lower-case", hv.GetKey(), hv.GetValue())
					}
					got[hv.GetKey()] = string(hv.GetRawValue())
				}
				for k, v := range map[string]string{":method": "GET", ":path": "/example.com/m/@v/list",
					":authority": "proxy.example", ":scheme": "https", "x-client": "c1"} {
					if got[k] != v {
						t.Errorf("request_headers[%q] = %q, want %q", k, got[k], v)
					}
				}
				_, up := e.a.served()
				if up.Host != "proxy.example" || up.Header.Get("X-Client") != "c1" || up.Header.Get("X-Envoy-Internal") != "" {
					t.Errorf("upstream Host, X-Client, X-Envoy-Internal = %q, %q, %q, want proxy.example, c1, \"\"",
						up.Host, up.Header.Get("X-Client"), up.Header.Get("X-Envoy-Internal"))
				}
				if err := e.proc.waitEnd(t); !errors.Is(err, io.EOF) && status.Code(err) != codes.Canceled {
					t.Errorf("server stream end = %v, want io.EOF or Canceled", err)
				}
			},
		},
		{
			name: "immediate response to request headers",
			proc: func(testing.TB) func(*serverStream) error {
				return script(func(*extprocv3.ProcessingRequest) []*extprocv3.ProcessingResponse {
					return []*extprocv3.ProcessingResponse{immediate(403, "forbidden", "policy_denied", setRaw("x-reason", "denied"))}
				})
			},
			check: func(t *testing.T, e *env, r *envoyemu.Response) {
				wantResponse(t, r, 403, "forbidden", true)
				if r.Header.Get("X-Reason") != "denied" || r.Details != "policy_denied" || r.Cluster != "" {
					t.Errorf("X-Reason, Details, Cluster = %q, %q, %q", r.Header.Get("X-Reason"), r.Details, r.Cluster)
				}
				wantHits(t, e.a, 0)
				wantKinds(t, e.proc, "request_headers")
			},
		},
		{
			name: "dynamic metadata, clear_route_cache and header mutation route to b",
			proc: func(t testing.TB) func(*serverStream) error {
				return script(onPhase(func(req *extprocv3.ProcessingRequest) []*extprocv3.ProcessingResponse {
					r := answer(req, &extprocv3.CommonResponse{HeaderMutation: &extprocv3.HeaderMutation{}, ClearRouteCache: true})
					r.DynamicMetadata = metadataStruct(t, "modgate", "route", "private")
					return []*extprocv3.ProcessingResponse{r}
				}, nil, nil))
			},
			check: func(t *testing.T, e *env, r *envoyemu.Response) {
				wantResponse(t, r, 200, "from b", false)
				if r.Cluster != "b" {
					t.Errorf("Cluster = %q, want b", r.Cluster)
				}
				if got := r.Metadata["modgate"].GetFields()["route"].GetStringValue(); got != "private" {
					t.Errorf("Metadata[modgate][route] = %q, want private", got)
				}
				wantHits(t, e.a, 0)
				wantHits(t, e.b, 1)
			},
		},
		{
			name: "clear_route_cache without header mutation keeps route",
			proc: func(t testing.TB) func(*serverStream) error {
				return script(onPhase(func(req *extprocv3.ProcessingRequest) []*extprocv3.ProcessingResponse {
					r := answer(req, &extprocv3.CommonResponse{ClearRouteCache: true})
					r.DynamicMetadata = metadataStruct(t, "modgate", "route", "private")
					return []*extprocv3.ProcessingResponse{r}
				}, nil, nil))
			},
			check: func(t *testing.T, e *env, r *envoyemu.Response) {
				wantResponse(t, r, 200, "hello", false)
				if r.Cluster != "a" {
					t.Errorf("Cluster = %q, want a", r.Cluster)
				}
				wantHits(t, e.b, 0)
			},
		},
		{
			name: "namespace not in receiving_namespaces ignored",
			config: func(_ testing.TB, c *envoyemu.Config) {
				c.Routes = []envoyemu.Route{{Namespace: "other", Key: "route", Value: "private", Cluster: "b"}, {Cluster: "a"}}
			},
			proc: func(t testing.TB) func(*serverStream) error {
				return script(onPhase(func(req *extprocv3.ProcessingRequest) []*extprocv3.ProcessingResponse {
					r := answer(req, &extprocv3.CommonResponse{HeaderMutation: &extprocv3.HeaderMutation{}, ClearRouteCache: true})
					r.DynamicMetadata = metadataStruct(t, "other", "route", "private")
					return []*extprocv3.ProcessingResponse{r}
				}, nil, nil))
			},
			check: func(t *testing.T, e *env, r *envoyemu.Response) {
				if r.Cluster != "a" || r.Metadata["other"] != nil {
					t.Errorf("Cluster, Metadata[other] = %q, %v, want a, nil", r.Cluster, r.Metadata["other"])
				}
				wantHits(t, e.b, 0)
			},
		},
		{
			name: "value-only header is set empty",
			proc: func(testing.TB) func(*serverStream) error {
				return script(onPhase(func(req *extprocv3.ProcessingRequest) []*extprocv3.ProcessingResponse {
					return []*extprocv3.ProcessingResponse{answer(req, &extprocv3.CommonResponse{HeaderMutation: &extprocv3.HeaderMutation{
						SetHeaders: []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-tag", Value: "v"}}},
					}})}
				}, nil, nil))
			},
			check: func(t *testing.T, e *env, r *envoyemu.Response) {
				wantResponse(t, r, 200, "hello", false)
				_, up := e.a.served()
				if got, ok := up.Header["X-Tag"]; !ok || len(got) != 1 || got[0] != "" {
					t.Errorf("upstream X-Tag = %q (present %v), want [\"\"]", got, ok)
				}
			},
		},
		{
			name: "value and raw_value both set fails closed",
			proc: func(testing.TB) func(*serverStream) error {
				return script(onPhase(func(req *extprocv3.ProcessingRequest) []*extprocv3.ProcessingResponse {
					return []*extprocv3.ProcessingResponse{answer(req, &extprocv3.CommonResponse{HeaderMutation: &extprocv3.HeaderMutation{
						SetHeaders: []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-tag", Value: "v", RawValue: []byte("v")}}},
					}})}
				}, nil, nil))
			},
			check: func(t *testing.T, e *env, r *envoyemu.Response) {
				wantResponse(t, r, 500, "", true)
				wantDetails(t, r, "invalid_header_mutation")
				wantHits(t, e.a, 0)
			},
		},
		{
			name: "append flag decides, append_action ignored",
			req:  envoyemu.Request{Header: http.Header{"X-Multi": {"one"}, "X-Over": {"old"}, "X-Action": {"old"}}},
			proc: func(testing.TB) func(*serverStream) error {
				return script(onPhase(func(req *extprocv3.ProcessingRequest) []*extprocv3.ProcessingResponse {
					app := setRaw("x-multi", "two")
					//lint:ignore SA1019 the legacy flag is what Envoy's ext_proc reads (ENVOY.md).
					app.Append = wrapperspb.Bool(true)
					over := setRaw("x-over", "new")
					//lint:ignore SA1019 the legacy flag is what Envoy's ext_proc reads (ENVOY.md).
					over.Append = wrapperspb.Bool(false)
					action := setRaw("x-action", "new")
					action.AppendAction = corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD
					return []*extprocv3.ProcessingResponse{answer(req, &extprocv3.CommonResponse{HeaderMutation: &extprocv3.HeaderMutation{
						SetHeaders: []*corev3.HeaderValueOption{app, over, action},
					}})}
				}, nil, nil))
			},
			check: func(t *testing.T, e *env, r *envoyemu.Response) {
				_, up := e.a.served()
				for k, want := range map[string]string{"X-Multi": "one,two", "X-Over": "new", "X-Action": "new"} {
					if got := strings.Join(up.Header[k], ","); got != want {
						t.Errorf("upstream %s = %q, want %q", k, got, want)
					}
				}
			},
		},
		{
			name: "routing and x-envoy headers are immutable, :path is not",
			req:  envoyemu.Request{Header: http.Header{"Host": {"proxy.example"}}},
			proc: func(testing.TB) func(*serverStream) error {
				return script(onPhase(func(req *extprocv3.ProcessingRequest) []*extprocv3.ProcessingResponse {
					return []*extprocv3.ProcessingResponse{answer(req, &extprocv3.CommonResponse{HeaderMutation: &extprocv3.HeaderMutation{
						SetHeaders: []*corev3.HeaderValueOption{
							setRaw(":authority", "evil"), setRaw("host", "evil"), setRaw(":method", "POST"),
							setRaw(":scheme", "http"), setRaw("x-envoy-original-path", "/x"), setRaw(":path", "/rewritten"),
						},
						RemoveHeaders: []string{":path", "host"},
					}})}
				}, nil, nil))
			},
			check: func(t *testing.T, e *env, r *envoyemu.Response) {
				wantResponse(t, r, 200, "hello", false)
				_, up := e.a.served()
				if up.Method != "GET" || up.Host != "proxy.example" || up.URL.Path != "/rewritten" || up.Header.Get("X-Envoy-Original-Path") != "" {
					t.Errorf("upstream method, host, path, x-envoy = %s, %s, %s, %q", up.Method, up.Host, up.URL.Path, up.Header.Get("X-Envoy-Original-Path"))
				}
				want := []string{"request_headers: remove :path", "request_headers: remove host",
					"request_headers: set :authority", "request_headers: set host", "request_headers: set :method",
					"request_headers: set :scheme", "request_headers: set x-envoy-original-path"}
				if strings.Join(r.IgnoredMutations, "|") != strings.Join(want, "|") {
					t.Errorf("IgnoredMutations = %q, want %q", r.IgnoredMutations, want)
				}
			},
		},
		{
			name: "wrong reply type fails closed",
			proc: func(testing.TB) func(*serverStream) error {
				return script(func(*extprocv3.ProcessingRequest) []*extprocv3.ProcessingResponse {
					return []*extprocv3.ProcessingResponse{{Response: &extprocv3.ProcessingResponse_ResponseHeaders{
						ResponseHeaders: &extprocv3.HeadersResponse{}}}}
				})
			},
			check: func(t *testing.T, e *env, r *envoyemu.Response) {
				wantResponse(t, r, 500, "", true)
				wantDetails(t, r, "spurious_message")
				wantHits(t, e.a, 0)
			},
		},
		{
			name: "reply with nothing outstanding fails closed",
			upstream: func(w http.ResponseWriter, r *http.Request) {
				time.Sleep(200 * time.Millisecond) // let the extra reply arrive
				w.Write([]byte("hello"))
			},
			proc: func(testing.TB) func(*serverStream) error {
				return script(onPhase(func(req *extprocv3.ProcessingRequest) []*extprocv3.ProcessingResponse {
					return append(proceed(req), proceed(req)...)
				}, nil, nil))
			},
			check: func(t *testing.T, e *env, r *envoyemu.Response) {
				wantResponse(t, r, 500, "", true)
				wantDetails(t, r, "spurious_message")
			},
		},
		{
			name:   "no reply is a message timeout",
			config: func(_ testing.TB, c *envoyemu.Config) { c.MessageTimeout = 100 * time.Millisecond },
			proc:   func(testing.TB) func(*serverStream) error { return stall },
			check: func(t *testing.T, e *env, r *envoyemu.Response) {
				wantResponse(t, r, 504, "", true)
				wantDetails(t, r, "message_timeout")
				if e.elapsed < 100*time.Millisecond || e.elapsed > 2*time.Second {
					t.Errorf("elapsed = %v, want 100ms–2s", e.elapsed)
				}
				wantHits(t, e.a, 0)
			},
		},
		{
			name: "override_message_timeout keeps a slow reply alive",
			config: func(_ testing.TB, c *envoyemu.Config) {
				c.MessageTimeout = 100 * time.Millisecond
				c.MaxMessageTimeout = 5 * time.Second
			},
			proc: func(testing.TB) func(*serverStream) error { return slowReply(2 * time.Second) },
			check: func(t *testing.T, e *env, r *envoyemu.Response) {
				wantResponse(t, r, 200, "hello", false)
			},
		},
		{
			name: "override_message_timeout above max is ignored",
			config: func(_ testing.TB, c *envoyemu.Config) {
				c.MessageTimeout = 100 * time.Millisecond
				c.MaxMessageTimeout = 200 * time.Millisecond
			},
			proc: func(testing.TB) func(*serverStream) error { return slowReply(2 * time.Second) },
			check: func(t *testing.T, e *env, r *envoyemu.Response) {
				wantResponse(t, r, 504, "", true)
				wantDetails(t, r, "message_timeout")
			},
		},
		{
			name: "override_message_timeout disabled without max",
			config: func(_ testing.TB, c *envoyemu.Config) {
				c.MessageTimeout = 100 * time.Millisecond
				c.MaxMessageTimeout = 0
			},
			proc: func(testing.TB) func(*serverStream) error { return slowReply(time.Second) },
			check: func(t *testing.T, e *env, r *envoyemu.Response) {
				wantResponse(t, r, 504, "", true)
			},
		},
		{
			name: "mode_override STREAMED on response headers",
			body: body200k,
			proc: func(testing.TB) func(*serverStream) error {
				return script(onPhase(nil, withMode(streamedMode()), nil))
			},
			check: func(t *testing.T, e *env, r *envoyemu.Response) {
				wantResponse(t, r, 200, string(e.body), false)
				if cl := r.Header.Get("Content-Length"); cl != "" {
					t.Errorf("downstream Content-Length = %q, want none in STREAMED", cl)
				}
				chunks := e.proc.bodies()
				if len(chunks) != 7 || r.Messages != 9 {
					t.Fatalf("body messages, Messages = %d, %d, want 7, 9", len(chunks), r.Messages)
				}
				var joined []byte
				for i, c := range chunks {
					n := len(c.GetBody())
					last := i == len(chunks)-1
					if !last && (n < 16*kib || n > 64*kib) || last && n > 64*kib {
						t.Errorf("chunk %d size = %d, want 16–64 KiB", i, n)
					}
					if c.GetEndOfStream() != last {
						t.Errorf("chunk %d end_of_stream = %v, want %v", i, c.GetEndOfStream(), last)
					}
					joined = append(joined, c.GetBody()...)
				}
				if !bytes.Equal(joined, e.body) {
					t.Error("chunks joined differ from the upstream body")
				}
			},
		},
		{
			name: "STREAMED body on a chunk boundary ends with an empty chunk",
			body: pattern(64 * kib),
			proc: func(testing.TB) func(*serverStream) error {
				return script(onPhase(nil, withMode(streamedMode()), nil))
			},
			check: func(t *testing.T, e *env, r *envoyemu.Response) {
				wantResponse(t, r, 200, string(e.body), false)
				chunks := e.proc.bodies()
				if len(chunks) != 3 || len(chunks[2].GetBody()) != 0 || !chunks[2].GetEndOfStream() {
					t.Errorf("chunks = %d, want 3 with an empty final end_of_stream chunk", len(chunks))
				}
			},
		},
		{
			name: "STREAMED chunks are pipelined",
			body: body200k,
			proc: func(testing.TB) func(*serverStream) error { return pipelined },
			check: func(t *testing.T, e *env, r *envoyemu.Response) {
				wantResponse(t, r, 200, string(e.body), false)
			},
		},
		{
			name: "immediate response on the final chunk resets",
			body: body200k,
			proc: func(testing.TB) func(*serverStream) error {
				return script(onPhase(nil, withMode(streamedMode()), func(req *extprocv3.ProcessingRequest) []*extprocv3.ProcessingResponse {
					if req.GetResponseBody().GetEndOfStream() {
						return []*extprocv3.ProcessingResponse{immediate(502, "bad zip", "hash_mismatch")}
					}
					return proceed(req)
				}))
			},
			check: func(t *testing.T, e *env, r *envoyemu.Response) {
				if !r.Reset || r.LocalReply || r.Status != 200 || r.Details != "hash_mismatch" {
					t.Errorf("Reset, LocalReply, Status, Details = %v, %v, %d, %q, want true, false, 200, hash_mismatch",
						r.Reset, r.LocalReply, r.Status, r.Details)
				}
				want := e.body[:6*32*kib]
				if !bytes.Equal(r.Body, want) {
					t.Errorf("downstream body = %d bytes, want the first %d", len(r.Body), len(want))
				}
			},
		},
		{
			name: "immediate response to response headers replaces the response",
			proc: func(testing.TB) func(*serverStream) error {
				return script(onPhase(nil, func(*extprocv3.ProcessingRequest) []*extprocv3.ProcessingResponse {
					return []*extprocv3.ProcessingResponse{immediate(451, "gone", "")}
				}, nil))
			},
			check: func(t *testing.T, e *env, r *envoyemu.Response) {
				wantResponse(t, r, 451, "gone", true)
				if r.Header.Get("X-Up") != "" {
					t.Errorf("X-Up = %q, want the upstream headers replaced", r.Header.Get("X-Up"))
				}
			},
		},
		{
			name:   "BUFFERED over the buffer limit is 500",
			body:   pattern(100 * kib),
			config: func(_ testing.TB, c *envoyemu.Config) { c.BufferLimit = 64 * kib },
			proc: func(testing.TB) func(*serverStream) error {
				return script(onPhase(nil, withMode(bufferedMode()), nil))
			},
			check: func(t *testing.T, e *env, r *envoyemu.Response) {
				wantResponse(t, r, 500, "", true)
				wantDetails(t, r, "buffer_limit")
				wantKinds(t, e.proc, "request_headers", "response_headers")
			},
		},
		{
			name: "BUFFERED body replaced with matching content-length",
			body: pattern(10 * kib),
			proc: func(testing.TB) func(*serverStream) error {
				return script(onPhase(nil, withMode(bufferedMode()), replaceBody("small", true)))
			},
			check: func(t *testing.T, e *env, r *envoyemu.Response) {
				wantResponse(t, r, 200, "small", false)
				if b := e.proc.bodies(); len(b) != 1 || !b[0].GetEndOfStream() || len(b[0].GetBody()) != 10*kib {
					t.Errorf("body messages = %d, want one whole body with end_of_stream", len(b))
				}
			},
		},
		{
			name: "BUFFERED body replaced with stale content-length fails",
			body: pattern(10 * kib),
			proc: func(testing.TB) func(*serverStream) error {
				return script(onPhase(nil, withMode(bufferedMode()), replaceBody("small", false)))
			},
			check: func(t *testing.T, e *env, r *envoyemu.Response) {
				wantResponse(t, r, 500, "", true)
				wantDetails(t, r, "content_length_mismatch")
			},
		},
		{
			name: "mode_override in a body reply is ignored",
			body: body200k,
			proc: func(testing.TB) func(*serverStream) error {
				return script(onPhase(nil, withMode(streamedMode()), withMode(&procmodev3.ProcessingMode{
					ResponseBodyMode: procmodev3.ProcessingMode_NONE,
				})))
			},
			check: func(t *testing.T, e *env, r *envoyemu.Response) {
				wantResponse(t, r, 200, string(e.body), false)
				if n := len(e.proc.bodies()); n != 7 {
					t.Errorf("body messages = %d, want 7", n)
				}
			},
		},
		{
			name:   "mode_override ignored without allow_mode_override",
			body:   body200k,
			config: func(_ testing.TB, c *envoyemu.Config) { c.AllowModeOverride = false },
			proc: func(testing.TB) func(*serverStream) error {
				return script(onPhase(nil, withMode(streamedMode()), nil))
			},
			check: func(t *testing.T, e *env, r *envoyemu.Response) {
				wantResponse(t, r, 200, string(e.body), false)
				wantKinds(t, e.proc, "request_headers", "response_headers")
			},
		},
		{
			name: "attributes arrive typed under the filter name",
			req: envoyemu.Request{Attributes: map[string]any{
				"source.address":                      "10.1.2.3:4567",
				"connection.mtls":                     true,
				"connection.uri_san_peer_certificate": "spiffe://mesh/ns/dev/sa/go",
				"request.id":                          nil,
			}},
			proc: func(testing.TB) func(*serverStream) error { return script(proceed) },
			check: func(t *testing.T, e *env, r *envoyemu.Response) {
				got := e.proc.received()
				if len(got) != 2 {
					t.Fatalf("messages = %d, want 2", len(got))
				}
				// The response direction carries the response attributes:
				// which upstream answered.
				ra := got[1].GetAttributes()["envoy.filters.http.ext_proc"].GetFields()
				if ra["xds.cluster_name"].GetStringValue() != "a" || !strings.HasPrefix(ra["upstream.address"].GetStringValue(), "127.0.0.1:") {
					t.Errorf("response attributes = %v, want the cluster and its address", ra)
				}
				if _, ok := ra["source.address"]; ok {
					t.Error("a request attribute was sent on the response direction")
				}
				for _, m := range got[:1] {
					a := m.GetAttributes()["envoy.filters.http.ext_proc"].GetFields()
					if v, ok := a["connection.mtls"].GetKind().(*structpb.Value_BoolValue); !ok || !v.BoolValue {
						t.Errorf("connection.mtls = %v, want bool true", a["connection.mtls"])
					}
					if a["source.address"].GetStringValue() != "10.1.2.3:4567" ||
						a["connection.uri_san_peer_certificate"].GetStringValue() != "spiffe://mesh/ns/dev/sa/go" {
						t.Errorf("string attributes = %v", a)
					}
					if _, ok := a["request.id"]; ok {
						t.Error("absent attribute request.id was sent")
					}
				}
			},
		},
		{
			name:   "ext_proc server down fails closed",
			config: func(t testing.TB, c *envoyemu.Config) { c.ExtProcAddr = deadAddr(t) },
			proc:   func(testing.TB) func(*serverStream) error { return script(proceed) },
			check: func(t *testing.T, e *env, r *envoyemu.Response) {
				wantResponse(t, r, 500, "", true)
				wantDetails(t, r, "ext_proc_error_gRPC_error")
				wantHits(t, e.a, 0)
			},
		},
		{
			name: "ext_proc stream error fails closed",
			proc: func(testing.TB) func(*serverStream) error {
				return func(s *serverStream) error {
					s.Recv()
					return status.Error(codes.Internal, "boom")
				}
			},
			check: func(t *testing.T, e *env, r *envoyemu.Response) {
				wantResponse(t, r, 500, "", true)
				wantDetails(t, r, "ext_proc_error_gRPC_error_13")
				wantHits(t, e.a, 0)
			},
		},
		{
			name: "clean close by the server continues without ext_proc",
			proc: func(testing.TB) func(*serverStream) error {
				return func(s *serverStream) error {
					s.Recv()
					return nil
				}
			},
			check: func(t *testing.T, e *env, r *envoyemu.Response) {
				wantResponse(t, r, 200, "hello", false)
				if r.Messages != 1 {
					t.Errorf("Messages = %d, want 1", r.Messages)
				}
			},
		},
		{
			name:   "upstream down is 503 and ext_proc is not told",
			config: func(t testing.TB, c *envoyemu.Config) { c.Clusters["a"] = "http://" + deadAddr(t) },
			proc:   func(testing.TB) func(*serverStream) error { return script(proceed) },
			check: func(t *testing.T, e *env, r *envoyemu.Response) {
				if r.Status != 503 || !r.LocalReply || r.Cluster != "a" {
					t.Errorf("Status, LocalReply, Cluster = %d, %v, %q, want 503, true, a", r.Status, r.LocalReply, r.Cluster)
				}
				e.proc.waitEnd(t)
				wantKinds(t, e.proc, "request_headers")
			},
		},
		{
			name: "unknown cluster is 503",
			config: func(_ testing.TB, c *envoyemu.Config) {
				c.Routes = []envoyemu.Route{{Cluster: "missing"}}
			},
			proc: func(testing.TB) func(*serverStream) error { return script(proceed) },
			check: func(t *testing.T, e *env, r *envoyemu.Response) {
				wantResponse(t, r, 503, "", true)
				wantDetails(t, r, "no_cluster")
				e.proc.waitEnd(t)
				wantKinds(t, e.proc, "request_headers")
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := &env{body: []byte("hello")}
			if tt.body != nil {
				e.body = tt.body
			}
			h := tt.upstream
			if h == nil {
				h = serve(e.body)
			}
			e.a = startUpstream(t, h)
			e.b = startUpstream(t, serve([]byte("from b")))
			e.proc = startProc(t, tt.proc(t))
			cfg := envoyemu.NewConfig(e.proc.addr)
			cfg.Clusters = map[string]string{"a": e.a.srv.URL, "b": e.b.srv.URL}
			cfg.Routes = []envoyemu.Route{
				{Namespace: "modgate", Key: "route", Value: "private", Cluster: "b"},
				{Cluster: "a"},
			}
			if tt.config != nil {
				tt.config(t, &cfg)
			}
			emu, err := envoyemu.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { emu.Close() })

			req := tt.req
			if req.Path == "" {
				req.Path = "/example.com/m/@v/list"
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			start := time.Now()
			resp, err := emu.Do(ctx, req)
			e.elapsed = time.Since(start)
			if err != nil {
				t.Fatalf("Do = %v, want a response", err)
			}
			tt.check(t, e, resp)
		})
	}
}

func wantResponse(t *testing.T, r *envoyemu.Response, status int, body string, local bool) {
	t.Helper()
	if r.Status != status || string(r.Body) != body || r.LocalReply != local || r.Reset {
		b := string(r.Body)
		if len(b) > 64 {
			b = b[:64] + "…"
		}
		t.Errorf("Do = %d %q local=%v reset=%v (%s), want %d, %d-byte body, local=%v",
			r.Status, b, r.LocalReply, r.Reset, r.Details, status, len(body), local)
	}
}

func wantDetails(t *testing.T, r *envoyemu.Response, prefix string) {
	t.Helper()
	if !strings.HasPrefix(r.Details, prefix) {
		t.Errorf("Details = %q, want prefix %q", r.Details, prefix)
	}
}

func wantHits(t *testing.T, u *upstream, n int) {
	t.Helper()
	if hits, _ := u.served(); hits != n {
		t.Errorf("upstream hits = %d, want %d", hits, n)
	}
}

func wantKinds(t *testing.T, f *fakeProc, kinds ...string) {
	t.Helper()
	if got := f.kinds(); strings.Join(got, ",") != strings.Join(kinds, ",") {
		t.Errorf("ext_proc messages = %v, want %v", got, kinds)
	}
}

// TestDoCanceled: canceling Do's context resets the ext_proc stream.
func TestDoCanceled(t *testing.T) {
	proc := startProc(t, stall)
	up := startUpstream(t, serve([]byte("hello")))
	cfg := envoyemu.NewConfig(proc.addr)
	cfg.Clusters = map[string]string{"a": up.srv.URL}
	cfg.Routes = []envoyemu.Route{{Cluster: "a"}}
	cfg.MessageTimeout = 5 * time.Second
	emu, err := envoyemu.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer emu.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := emu.Do(ctx, envoyemu.Request{Path: "/x"}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Do = %v, want context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Do took %v after cancel", d)
	}
	if err := proc.waitEnd(t); status.Code(err) != codes.Canceled {
		t.Errorf("server stream end = %v, want Canceled", err)
	}
}

func TestNewConfig(t *testing.T) {
	tests := []struct {
		name   string
		cfg    envoyemu.Config
		errSub string
	}{
		{"no address", envoyemu.Config{}, "ExtProcAddr"},
		{"small chunk", envoyemu.Config{ExtProcAddr: "127.0.0.1:1", ChunkSize: 1024}, "ChunkSize"},
		{"big chunk", envoyemu.Config{ExtProcAddr: "127.0.0.1:1", ChunkSize: 128 * kib}, "ChunkSize"},
		{"negative timeout", envoyemu.Config{ExtProcAddr: "127.0.0.1:1", MessageTimeout: -1}, "MessageTimeout"},
		{"zero value works", envoyemu.Config{ExtProcAddr: "127.0.0.1:1"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			emu, err := envoyemu.New(tt.cfg)
			if tt.errSub == "" {
				if err != nil {
					t.Fatalf("New = %v, want nil", err)
				}
				emu.Close()
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.errSub) {
				t.Errorf("New = %v, want an error naming %s", err, tt.errSub)
			}
		})
	}
}
