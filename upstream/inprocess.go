package upstream

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
)

// InProcessHost is the host of an upstream served inside this process (the
// VCS origin in standalone mode): a name no DNS resolves, so a request for
// it can never leave the machine by mistake.
const InProcessHost = "vcs.modgate.invalid"

// inProcess is the transport of in-process upstreams: each request is
// served by a handler in this process, its body streamed through a pipe as
// the handler writes it, never held in memory whole.
type inProcess struct {
	handlers map[string]http.Handler // by host
	next     http.RoundTripper       // every other host
}

func (t *inProcess) RoundTrip(req *http.Request) (*http.Response, error) {
	h, ok := t.handlers[req.URL.Host]
	if !ok {
		return t.next.RoundTrip(req)
	}
	pr, pw := io.Pipe()
	w := &pipeWriter{header: http.Header{}, pw: pw, started: make(chan struct{})}
	// The handler sees the request as a server would.
	sreq := req.Clone(req.Context())
	sreq.RequestURI = req.URL.RequestURI()
	sreq.RemoteAddr = "127.0.0.1:0"
	go func() {
		defer func() {
			if p := recover(); p != nil {
				w.start(http.StatusInternalServerError)
				pw.CloseWithError(fmt.Errorf("in-process upstream %s: panic: %v", req.URL.Host, p))
				return
			}
			w.start(http.StatusOK)
			pw.Close()
		}()
		h.ServeHTTP(w, sreq)
	}()
	select {
	case <-w.started:
	case <-req.Context().Done():
		pr.CloseWithError(req.Context().Err())
		return nil, fmt.Errorf("in-process upstream %s: %w", req.URL.Host, context.Cause(req.Context()))
	}
	resp := &http.Response{
		Status:        strconv.Itoa(w.status) + " " + http.StatusText(w.status),
		StatusCode:    w.status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        w.sent,
		Body:          pr,
		ContentLength: -1,
		Request:       req,
	}
	if n, err := strconv.ParseInt(w.sent.Get("Content-Length"), 10, 64); err == nil {
		resp.ContentLength = n
	}
	if req.Method == http.MethodHead {
		pr.Close()
		resp.Body = http.NoBody
	}
	return resp, nil
}

// pipeWriter is the in-process handler's ResponseWriter: the status and
// headers are handed over at the first WriteHeader or Write, the body goes
// into the pipe.
type pipeWriter struct {
	header  http.Header
	pw      *io.PipeWriter
	once    sync.Once
	started chan struct{}
	status  int
	sent    http.Header // header as it was when the response started
}

func (w *pipeWriter) Header() http.Header { return w.header }

func (w *pipeWriter) start(status int) {
	w.once.Do(func() {
		w.status, w.sent = status, w.header.Clone()
		close(w.started)
	})
}

func (w *pipeWriter) WriteHeader(status int) { w.start(status) }

func (w *pipeWriter) Write(p []byte) (int, error) {
	w.start(http.StatusOK)
	return w.pw.Write(p)
}

// Flush is a no-op: every Write already goes to the reader.
func (w *pipeWriter) Flush() {}
