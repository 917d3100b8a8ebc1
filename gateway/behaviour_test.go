package gateway_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/modgate/modgate/gate/gatetest"
	"github.com/modgate/modgate/gateway"
	"github.com/modgate/modgate/upstream"
)

// TestBehaviour runs the processor's behaviour table through the
// standalone HTTP front end.
func TestBehaviour(t *testing.T) { gatetest.Run(t, httpFrontEnd{}) }

// httpFrontEnd is the standalone mode: the gateway handler on an HTTP
// server, fetching with its own upstream client.
type httpFrontEnd struct{}

func (httpFrontEnd) Mode() gatetest.Mode { return gatetest.Standalone }

func (httpFrontEnd) Start(t testing.TB, env *gatetest.Env) gatetest.Client {
	h, err := gateway.New(gateway.Options{Processor: env.Processor, Client: upstream.NewClient(upstream.ClientOptions{}), Logger: env.Logger})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return httpClient{base: srv.URL, c: &http.Client{Transport: &http.Transport{}}}
}

type httpClient struct {
	base string
	c    *http.Client
}

func (httpClient) SourceIP() string { return "127.0.0.1" }

// Do sends the target verbatim as the request-target.
func (c httpClient) Do(ctx context.Context, r gatetest.Request) (*gatetest.Response, error) {
	req, err := http.NewRequestWithContext(ctx, r.Method, c.base+"/", nil)
	if err != nil {
		return nil, err
	}
	req.URL.Opaque = r.Target
	for k, vs := range r.Header {
		req.Header[k] = vs
	}
	resp, err := c.c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	out := &gatetest.Response{Status: resp.StatusCode, Header: resp.Header, Body: body}
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, err
		}
		out.Reset = true // the server aborted the response mid-body
	}
	return out, nil
}
