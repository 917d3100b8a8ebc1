package extproc_test

import (
	"context"
	"net"
	"net/http/httptest"
	"testing"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"

	"github.com/modgate/modgate/capability"
	"github.com/modgate/modgate/extproc"
	"github.com/modgate/modgate/gate/gatetest"
	"github.com/modgate/modgate/gateway"
	"github.com/modgate/modgate/integration/envoyemu"
)

// TestBehaviour runs the processor's behaviour table through the ext_proc
// server, with the Envoy emulator as the gateway Envoy in front of it.
func TestBehaviour(t *testing.T) { gatetest.Run(t, meshFrontEnd{}) }

// meshFrontEnd is mesh mode: the ext_proc server and the blob listener
// over the processor, behind the emulated gateway Envoy, whose route table
// is envoy/gateway.yaml's and whose clusters are the upstreams the control
// plane would publish.
type meshFrontEnd struct{}

func (meshFrontEnd) Mode() gatetest.Mode { return gatetest.Mesh }

func (meshFrontEnd) Start(t testing.TB, env *gatetest.Env) gatetest.Client {
	key := capability.NewKey(0, nil)
	g := grpc.NewServer()
	extprocv3.RegisterExternalProcessorServer(g, extproc.NewServer(env.Processor, extproc.ServerOptions{Capability: key, Logger: env.Logger}))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(l)
	t.Cleanup(g.Stop)
	blob := httptest.NewServer(gateway.NewBlobHandler(env.Cache, key, env.Logger))
	t.Cleanup(blob.Close)

	cfg := envoyemu.NewConfig(l.Addr().String())
	cfg.Clusters = map[string]string{
		"upstream_public": env.Public[env.Route].URL.String(),
		"modgate_blob":    blob.URL,
	}
	if len(env.Private) > 0 {
		cfg.Clusters["upstream_private"] = env.Private[0].URL.String()
	}
	cfg.Routes = envoyemu.GatewayRoutes()
	e, err := envoyemu.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return meshClient{e}
}

type meshClient struct{ e *envoyemu.Emulator }

const meshSource = "10.9.8.7"

func (meshClient) SourceIP() string { return meshSource }

func (c meshClient) Do(ctx context.Context, r gatetest.Request) (*gatetest.Response, error) {
	resp, err := c.e.Do(ctx, envoyemu.Request{
		Method: r.Method, Path: r.Target, Header: r.Header, ResetAfterChunks: r.ResetAfterChunks,
		Attributes: map[string]any{
			"source.address":                      meshSource + ":40000",
			"connection.mtls":                     true,
			"connection.uri_san_peer_certificate": "spiffe://modgate.test/ns/ci/sa/builder",
		},
	})
	if err != nil {
		return nil, err
	}
	return &gatetest.Response{Status: resp.Status, Header: resp.Header, Body: resp.Body, Reset: resp.Reset}, nil
}
