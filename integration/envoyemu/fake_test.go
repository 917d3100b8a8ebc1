package envoyemu_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	procmodev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
)

// fakeProc is a real gRPC ext_proc server whose streams run a per-test
// handler. It records every message it receives and how each stream ended.
type fakeProc struct {
	extprocv3.UnimplementedExternalProcessorServer
	handle func(s *serverStream) error
	addr   string

	mu   sync.Mutex
	got  []*extprocv3.ProcessingRequest
	ends []error
}

// serverStream records what the handler receives.
type serverStream struct {
	extprocv3.ExternalProcessor_ProcessServer
	f *fakeProc
}

func (s *serverStream) Recv() (*extprocv3.ProcessingRequest, error) {
	req, err := s.ExternalProcessor_ProcessServer.Recv()
	s.f.mu.Lock()
	defer s.f.mu.Unlock()
	if err != nil {
		s.f.ends = append(s.f.ends, err)
	} else {
		s.f.got = append(s.f.got, req)
	}
	return req, err
}

func (f *fakeProc) Process(stream extprocv3.ExternalProcessor_ProcessServer) error {
	return f.handle(&serverStream{stream, f})
}

// startProc serves handle on 127.0.0.1:0 with the keepalive policy
// ENVOY.md asks of our gRPC servers.
func startProc(t testing.TB, handle func(s *serverStream) error) *fakeProc {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeProc{handle: handle, addr: l.Addr().String()}
	srv := grpc.NewServer(grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
		MinTime: 10 * time.Second, PermitWithoutStream: true,
	}))
	extprocv3.RegisterExternalProcessorServer(srv, f)
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	return f
}

// received returns the messages received so far.
func (f *fakeProc) received() []*extprocv3.ProcessingRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*extprocv3.ProcessingRequest(nil), f.got...)
}

// kinds names the received messages.
func (f *fakeProc) kinds() []string {
	var out []string
	for _, r := range f.received() {
		switch r.GetRequest().(type) {
		case *extprocv3.ProcessingRequest_RequestHeaders:
			out = append(out, "request_headers")
		case *extprocv3.ProcessingRequest_ResponseHeaders:
			out = append(out, "response_headers")
		case *extprocv3.ProcessingRequest_ResponseBody:
			out = append(out, "response_body")
		default:
			out = append(out, "other")
		}
	}
	return out
}

// bodies returns the response_body messages received.
func (f *fakeProc) bodies() []*extprocv3.HttpBody {
	var out []*extprocv3.HttpBody
	for _, r := range f.received() {
		if b := r.GetResponseBody(); b != nil {
			out = append(out, b)
		}
	}
	return out
}

// waitEnd waits for the first stream to end on the server side and returns
// how it ended.
func (f *fakeProc) waitEnd(t testing.TB) error {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		f.mu.Lock()
		ends := f.ends
		f.mu.Unlock()
		if len(ends) > 0 {
			return ends[0]
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("ext_proc stream did not end on the server")
	return nil
}

// reply answers a message by kind; it returns nil for nothing.
type reply func(req *extprocv3.ProcessingRequest) []*extprocv3.ProcessingResponse

// script runs a stream that answers each message with r(message).
func script(r reply) func(s *serverStream) error {
	return func(s *serverStream) error {
		for {
			req, err := s.Recv()
			if err != nil {
				return nil
			}
			for _, resp := range r(req) {
				if err := s.Send(resp); err != nil {
					return nil
				}
			}
		}
	}
}

// proceed answers every message with an empty reply of the matching type.
func proceed(req *extprocv3.ProcessingRequest) []*extprocv3.ProcessingResponse {
	return []*extprocv3.ProcessingResponse{answer(req, &extprocv3.CommonResponse{})}
}

// answer is the reply of the matching type carrying cr.
func answer(req *extprocv3.ProcessingRequest, cr *extprocv3.CommonResponse) *extprocv3.ProcessingResponse {
	switch req.GetRequest().(type) {
	case *extprocv3.ProcessingRequest_RequestHeaders:
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{
			RequestHeaders: &extprocv3.HeadersResponse{Response: cr}}}
	case *extprocv3.ProcessingRequest_ResponseHeaders:
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseHeaders{
			ResponseHeaders: &extprocv3.HeadersResponse{Response: cr}}}
	case *extprocv3.ProcessingRequest_ResponseBody:
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{
			ResponseBody: &extprocv3.BodyResponse{Response: cr}}}
	}
	panic("unexpected message")
}

// onPhase answers request headers with reqHdr, response headers with
// respHdr, bodies with body (nil: proceed).
func onPhase(reqHdr, respHdr, body reply) reply {
	return func(req *extprocv3.ProcessingRequest) []*extprocv3.ProcessingResponse {
		var r reply
		switch req.GetRequest().(type) {
		case *extprocv3.ProcessingRequest_RequestHeaders:
			r = reqHdr
		case *extprocv3.ProcessingRequest_ResponseHeaders:
			r = respHdr
		case *extprocv3.ProcessingRequest_ResponseBody:
			r = body
		}
		if r == nil {
			r = proceed
		}
		return r(req)
	}
}

func immediate(code typev3.StatusCode, body, details string, hdrs ...*corev3.HeaderValueOption) *extprocv3.ProcessingResponse {
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ImmediateResponse{
		ImmediateResponse: &extprocv3.ImmediateResponse{
			Status:  &typev3.HttpStatus{Code: code},
			Headers: &extprocv3.HeaderMutation{SetHeaders: hdrs},
			Body:    []byte(body),
			Details: details,
		}}}
}

func setRaw(key, value string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: key, RawValue: []byte(value)}}
}

func metadataStruct(t testing.TB, ns, key, value string) *structpb.Struct {
	t.Helper()
	s, err := structpb.NewStruct(map[string]any{ns: map[string]any{key: value}})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func streamedMode() *procmodev3.ProcessingMode {
	return &procmodev3.ProcessingMode{
		ResponseHeaderMode: procmodev3.ProcessingMode_SEND,
		RequestBodyMode:    procmodev3.ProcessingMode_NONE,
		ResponseBodyMode:   procmodev3.ProcessingMode_STREAMED,
	}
}

func bufferedMode() *procmodev3.ProcessingMode {
	return &procmodev3.ProcessingMode{
		ResponseHeaderMode: procmodev3.ProcessingMode_SEND,
		RequestBodyMode:    procmodev3.ProcessingMode_NONE,
		ResponseBodyMode:   procmodev3.ProcessingMode_BUFFERED,
	}
}

// withMode answers headers with a mode_override.
func withMode(m *procmodev3.ProcessingMode) reply {
	return func(req *extprocv3.ProcessingRequest) []*extprocv3.ProcessingResponse {
		r := answer(req, &extprocv3.CommonResponse{})
		r.ModeOverride = m
		return []*extprocv3.ProcessingResponse{r}
	}
}

// upstream is a fake cluster that records the requests it serves.
type upstream struct {
	srv *httptest.Server

	mu   sync.Mutex
	hits int
	last *http.Request
}

func startUpstream(t testing.TB, h http.HandlerFunc) *upstream {
	t.Helper()
	u := &upstream{}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.hits++
		u.last = r.Clone(context.Background())
		u.mu.Unlock()
		h(w, r)
	}))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *upstream) served() (int, *http.Request) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.hits, u.last
}

// serve answers with 200, header X-Up and body.
func serve(body []byte) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Up", "1")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Write(body)
	}
}

// deadAddr is a 127.0.0.1 address nothing listens on.
func deadAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// pattern is a deterministic body of n bytes.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/251)
	}
	return b
}

// stall never replies; it ends when Envoy resets the stream.
func stall(s *serverStream) error {
	s.Recv()
	s.Recv() // blocks until the stream ends
	return nil
}

// slowReply asks for extend more time on request headers, takes 300ms,
// then proceeds.
func slowReply(extend time.Duration) func(s *serverStream) error {
	return func(s *serverStream) error {
		req, err := s.Recv()
		if err != nil {
			return nil
		}
		if s.Send(&extprocv3.ProcessingResponse{OverrideMessageTimeout: durationpb.New(extend)}) != nil {
			return nil
		}
		select {
		case <-time.After(300 * time.Millisecond):
		case <-s.Context().Done():
			return nil
		}
		if s.Send(proceed(req)[0]) != nil {
			return nil
		}
		return script(proceed)(s)
	}
}

// replaceBody replaces a buffered body, fixing content-length if asked.
func replaceBody(body string, fixLength bool) reply {
	return func(req *extprocv3.ProcessingRequest) []*extprocv3.ProcessingResponse {
		cr := &extprocv3.CommonResponse{BodyMutation: &extprocv3.BodyMutation{
			Mutation: &extprocv3.BodyMutation_Body{Body: []byte(body)},
		}}
		if fixLength {
			cr.HeaderMutation = &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{
				setRaw("content-length", strconv.Itoa(len(body))),
			}}
		}
		return []*extprocv3.ProcessingResponse{answer(req, cr)}
	}
}

// pipelined switches to STREAMED and receives the first two chunks before
// answering either: it only completes if Envoy sends ahead.
func pipelined(s *serverStream) error {
	recvAnswer := func(r reply) bool {
		req, err := s.Recv()
		if err != nil {
			return false
		}
		for _, resp := range r(req) {
			if s.Send(resp) != nil {
				return false
			}
		}
		return true
	}
	if !recvAnswer(proceed) || !recvAnswer(withMode(streamedMode())) {
		return nil
	}
	first, err := s.Recv()
	if err != nil {
		return nil
	}
	second, err := s.Recv()
	if err != nil {
		return nil
	}
	for _, req := range []*extprocv3.ProcessingRequest{first, second} {
		if s.Send(proceed(req)[0]) != nil {
			return nil
		}
	}
	return script(proceed)(s)
}
