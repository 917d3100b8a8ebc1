package integration

import (
	"context"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
)

// maxADSResponses bounds how many responses an adsRejecter handles: a
// server that re-sends a rejected version in a loop sends hundreds of
// thousands in a few seconds.
const maxADSResponses = 200_000

// An adsRejecter plays an xDS client on one ADS stream that cannot accept
// one version of one resource type: it subscribes to CDS (wildcard, as
// Envoy does) and, once it has accepted clusters, EDS for
// upstream_private; it NACKs every response of type reject whose version
// is the first it saw of that type, and ACKs every other response. It
// counts what it receives.
type adsRejecter struct {
	reject string // type URL to NACK
	stream discoverygrpc.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	node   *corev3.Node
	done   chan struct{} // closed when the receive loop ends

	mu       sync.Mutex
	rejected string            // the version NACKed
	received map[string]int    // "type version" → responses
	acked    map[string]string // type → last version ACKed
	sendErr  error
	// next is closed, and replaced, after every response.
	next chan struct{}
}

// startRejecter opens an ADS stream to addr as node id node and starts
// its receive loop; the stream ends with the test.
func startRejecter(t *testing.T, addr, node, reject string) *adsRejecter {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	s, err := discoverygrpc.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := &adsRejecter{
		reject:   reject,
		stream:   s,
		node:     &corev3.Node{Id: node},
		done:     make(chan struct{}),
		received: map[string]int{},
		acked:    map[string]string{},
		next:     make(chan struct{}),
	}
	t.Cleanup(func() {
		cancel()
		<-c.done
		conn.Close()
	})
	c.send(resource.ClusterType, "", "", nil, false)
	go c.loop()
	return c
}

func (c *adsRejecter) send(typ, version, nonce string, names []string, nack bool) {
	req := &discoverygrpc.DiscoveryRequest{Node: c.node, TypeUrl: typ, VersionInfo: version, ResponseNonce: nonce, ResourceNames: names}
	if nack {
		req.ErrorDetail = &status.Status{Code: int32(codes.InvalidArgument), Message: "test client: cannot accept this " + typ}
	}
	if err := c.stream.Send(req); err != nil {
		c.mu.Lock()
		c.sendErr = err
		c.mu.Unlock()
	}
}

func (c *adsRejecter) loop() {
	defer close(c.done)
	edsAsked := false
	for range maxADSResponses {
		resp, err := c.stream.Recv()
		if err != nil {
			return
		}
		typ, v := resp.TypeUrl, resp.VersionInfo
		var names []string
		if typ == resource.EndpointType {
			names = []string{"upstream_private"}
		}
		c.mu.Lock()
		c.received[typ+" "+v]++
		if typ == c.reject && c.rejected == "" {
			c.rejected = v
		}
		nack := typ == c.reject && v == c.rejected
		if !nack {
			c.acked[typ] = v
		}
		acked := c.acked[typ]
		close(c.next)
		c.next = make(chan struct{})
		c.mu.Unlock()
		// A NACK carries the last version accepted, as Envoy's does.
		c.send(typ, acked, resp.Nonce, names, nack)
		if typ == resource.ClusterType && !nack && !edsAsked {
			edsAsked = true
			c.send(resource.EndpointType, "", "", []string{"upstream_private"}, false)
		}
	}
}

// count returns how many responses of typ at version the client got.
func (c *adsRejecter) count(typ, version string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.received[typ+" "+version]
}

// waitFor waits up to d for ok to hold of the client's state (read
// under its lock) and reports whether it did.
func (c *adsRejecter) waitFor(d time.Duration, ok func(c *adsRejecter) bool) bool {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		done, next := ok(c), c.next
		c.mu.Unlock()
		if done {
			return true
		}
		select {
		case <-next:
		case <-c.done:
			c.mu.Lock()
			defer c.mu.Unlock()
			return ok(c)
		case <-deadline.C:
			return false
		}
	}
}
