// Package xds is modgate's control plane: an ADS server (go-control-plane)
// that publishes to the gateway Envoy the upstream clusters its bootstrap
// routes to, from modgate's configuration and the health registry.
//
//   - upstream_public: a LOGICAL_DNS cluster (TLS with SNI and a SAN check
//     for https) for the first healthy public upstream in configured order.
//     Envoy has no per-endpoint health for LOGICAL_DNS, so the control
//     plane shifts traffic at the cluster level: when that upstream drains,
//     the next snapshot points the cluster at the next healthy one.
//   - upstream_private: an EDS cluster whose endpoints (IP literals) are the
//     private upstreams: DRAINING ones marked so (out of load balancing),
//     removed ones gone after the drain period.
//   - modgate_blob: the sidecar's blob listener, over mutual TLS (the
//     gateway's client certificate, the sidecar's CA and SAN) when
//     Options.BlobTLS is set.
//
// Every group of endpoints (EDS, and the DNS clusters' own) has an
// explicit locality (empty: there are no zones) and weight 1: Envoy
// ignores both without locality-weighted balancing, and grpc-go's xDS
// client rejects an EDS assignment without a locality and drops a
// locality of weight 0.
//
// Every resource passes envoy.ValidateResource and every snapshot is
// Consistent() before it is set, which makes a NACK unlikely, not
// impossible (a client may be older than our protos, or, like grpc-go,
// support fewer cluster types than Envoy). A client that rejects (NACKs)
// a version is not sent that version again: it gets the next one, when
// the snapshot changes. Each rejection is logged and audited once (action
// xds-nack) per client, type and version, and every NACK is counted.
//
// Clients may subscribe to every cluster (Envoy's wildcard CDS) or name
// the clusters and endpoints they want (grpc-go): a named subscription is
// answered with the resources named.
package xds

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/modgate/modgate/envoy"
	"github.com/modgate/modgate/health"
	"github.com/modgate/modgate/upstream"
)

// Defaults that the shipped gateway bootstrap agrees with (a test checks).
const (
	DefaultNodeID   = "modgate-gateway"
	DefaultListen   = "127.0.0.1:18000"
	DefaultBlobAddr = "modgate:9003"
)

// Options configures a Server. Health is required.
type Options struct {
	// NodeID is the gateway Envoy's node id. Default DefaultNodeID.
	NodeID string
	// Health is the upstreams and their health.
	Health *health.Registry
	// BlobAddr is host:port of the blob listener as the gateway reaches it.
	// Default DefaultBlobAddr.
	BlobAddr string
	// BlobTLS, if not nil, makes the modgate_blob cluster reach the blob
	// listener over mutual TLS. Default nil: plain HTTP, for a blob
	// listener on loopback.
	BlobTLS *BlobTLS
	// VCSAddr is the IP:PORT at which the gateway reaches the VCS origin's
	// listener (vcs.advertise): the upstream_private endpoint of the
	// in-process VCS upstream. Default "": the VCS origin is not
	// published (standalone mode reaches it in process).
	VCSAddr string
	// Logger receives operational logs. Default slog.Default().
	Logger *slog.Logger
	// Auditor records each rejected version (action xds-nack) once per
	// client, type and version. Default nil: rejections are only logged.
	Auditor Auditor
	// Observer counts NACKs. Default nil: not counted.
	Observer Observer
}

// A Server publishes snapshots over ADS.
type Server struct {
	opts  Options
	log   *slog.Logger
	cache cachev3.SnapshotCache
	ads   serverv3.Server
	nacks *rejections

	mu      sync.Mutex
	version int
	last    *cachev3.Snapshot
}

// New returns a Server; ctx bounds the ADS streams' lives.
func New(ctx context.Context, opts Options) (*Server, error) {
	if opts.Health == nil {
		return nil, errors.New("xds: Health is required")
	}
	if opts.NodeID == "" {
		opts.NodeID = DefaultNodeID
	}
	if opts.BlobAddr == "" {
		opts.BlobAddr = DefaultBlobAddr
	}
	if err := opts.BlobTLS.check(); err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Server{opts: opts, log: opts.Logger, nacks: newRejections(opts.Logger, opts.Auditor, opts.Observer)}
	// Not the cache's ADS mode: in it, SnapshotCache.respond answers a
	// request that names resources only if it names every resource of
	// its type in the snapshot, so a client that subscribes to the one
	// cluster it routes to (grpc-go does) is never answered. That rule
	// predates the subscription tracking of go-control-plane v0.14, which
	// answers a named subset at the snapshot's version and answers again,
	// at the same version, when the client names a resource it has not
	// been sent yet: so a client that names part of a type's resources
	// first and the rest later (Envoy's EDS while clusters warm) still
	// ends up with a consistent set. The mode's other effect, ordering
	// the watches it answers on SetSnapshot, is lost anyway in the
	// server's non-ordered ADS loop, which selects among the per-type
	// response channels at random. Both modes answer a wildcard
	// subscription (Envoy's CDS) with every resource.
	s.cache = cachev3.NewSnapshotCache(false, cachev3.IDHash{}, logAdapter{opts.Logger})
	s.ads = serverv3.NewServer(ctx, s.cache, serverv3.CallbackFuncs{
		StreamOpenFunc:     s.nacks.OnStreamOpen,
		StreamClosedFunc:   s.nacks.OnStreamClosed,
		StreamRequestFunc:  s.nacks.OnStreamRequest,
		StreamResponseFunc: s.nacks.OnStreamResponse,
	})
	return s, nil
}

// Register serves ADS on g.
func (s *Server) Register(g *grpc.Server) {
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(g, s.ads)
}

// Publish builds, checks and sets a new snapshot from the registry's
// current state. A snapshot that fails its checks is not set: the last
// good one stays.
func (s *Server) Publish(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	snap, err := Build(strconv.Itoa(s.version+1), s.opts.Health, Sidecar{BlobAddr: s.opts.BlobAddr, BlobTLS: s.opts.BlobTLS, VCSAddr: s.opts.VCSAddr})
	if err != nil {
		return err
	}
	if err := s.cache.SetSnapshot(ctx, s.opts.NodeID, snap); err != nil {
		return fmt.Errorf("xds: setting snapshot: %w", err)
	}
	s.version++
	s.last = snap
	s.nacks.published(snap.GetVersion(resource.ClusterType))
	s.log.Info("xds: snapshot published", "version", s.version, "node", s.opts.NodeID)
	return nil
}

// Run publishes a snapshot now and after every change of the registry,
// until ctx ends.
func (s *Server) Run(ctx context.Context) {
	for {
		// The snapshot built now covers any change already announced.
		select {
		case <-s.opts.Health.Changes():
		default:
		}
		if err := s.Publish(ctx); err != nil {
			s.log.Error("xds: snapshot not published; the last good one stays", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-s.opts.Health.Changes():
		}
	}
}

// endpoint is a private upstream with the status Envoy should see.
type endpoint struct {
	u      *upstream.Upstream
	status corev3.HealthStatus
}

// Sidecar is what the gateway Envoy reaches of the sidecar besides
// ext_proc: the blob listener, and the VCS origin's listener if any.
type Sidecar struct {
	// BlobAddr is the blob listener's host:port. Required.
	BlobAddr string
	// BlobTLS is mutual TLS to the blob listener, and to the VCS origin's;
	// nil is plain HTTP.
	BlobTLS *BlobTLS
	// VCSAddr is the IP:PORT of the VCS origin's listener, published as
	// the upstream_private endpoint of the in-process VCS upstream; ""
	// publishes none.
	VCSAddr string
}

// BlobTLS is the gateway Envoy's side of mutual TLS to the blob listener.
// Files are paths as Envoy sees them: they are written into the cluster,
// never read here.
type BlobTLS struct {
	// Cert and Key are the gateway's client certificate chain and key
	// (PEM files). Required.
	Cert, Key string
	// CA is the PEM file of CAs the blob listener's certificate must chain
	// to. Required.
	CA string
	// SAN is the subject alternative name the blob listener's certificate
	// must carry: a DNS name, an IP address, or a URI with "://" (a SPIFFE
	// ID). Required.
	SAN string
}

// check reports a BlobTLS with a missing field; nil is fine.
func (t *BlobTLS) check() error {
	switch {
	case t == nil:
		return nil
	case t.Cert == "" || t.Key == "":
		return errors.New("xds: blob TLS needs a client certificate and key")
	case t.CA == "":
		return errors.New("xds: blob TLS needs a CA to verify the blob listener")
	case t.SAN == "":
		return errors.New("xds: blob TLS needs the blob listener's SAN")
	}
	return nil
}

// Build makes the snapshot for the registry's state, validated.
func Build(version string, reg *health.Registry, sc Sidecar) (*cachev3.Snapshot, error) {
	set := reg.Upstreams()
	if len(set.Public) == 0 {
		return nil, errors.New("xds: no public upstream")
	}
	// The first healthy public upstream; if none, the first not removed;
	// if none, the first.
	pub := set.Public[0]
	for _, want := range []health.State{health.Healthy, health.Draining} {
		if i := indexOf(set.Public, reg, want); i >= 0 {
			pub = set.Public[i]
			break
		}
	}
	pc, err := publicCluster(pub)
	if err != nil {
		return nil, err
	}
	// An upstream served inside modgate (the VCS origin) is published at
	// the sidecar's VCS listener if it has one (mesh mode), and is
	// otherwise nothing Envoy could reach. The listener is the sidecar's,
	// so it is reached like the blob listener.
	var private []*upstream.Upstream
	vcs := false
	for _, u := range set.Private {
		if u.URL == nil || u.URL.Host != upstream.InProcessHost {
			private = append(private, u)
			continue
		}
		if sc.VCSAddr == "" {
			continue
		}
		scheme := "http"
		if sc.BlobTLS != nil {
			scheme = "https"
		}
		pu, err := upstream.Parse(u.Name, scheme+"://"+sc.VCSAddr, true)
		if err != nil {
			return nil, fmt.Errorf("xds: VCS listener: %w", err)
		}
		private, vcs = append(private, pu), true
	}
	if vcs && len(private) > 1 {
		return nil, errors.New("xds: the VCS origin's listener and other private upstreams cannot share upstream_private: publish one or the other")
	}
	privC, err := privateCluster(private)
	if err != nil {
		return nil, err
	}
	if vcs && sc.BlobTLS != nil {
		if err := sidecarTLS(privC, sc.BlobTLS); err != nil {
			return nil, err
		}
	}
	var eps []endpoint
	for _, u := range private {
		switch reg.State(u.Name) {
		case health.Healthy:
			eps = append(eps, endpoint{u, corev3.HealthStatus_HEALTHY})
		case health.Draining:
			eps = append(eps, endpoint{u, corev3.HealthStatus_DRAINING})
		}
	}
	cla, err := privateEndpoints(eps)
	if err != nil {
		return nil, err
	}
	if err := sc.BlobTLS.check(); err != nil {
		return nil, err
	}
	bc, err := blobCluster(sc.BlobAddr, sc.BlobTLS)
	if err != nil {
		return nil, err
	}
	for _, m := range []proto.Message{pc, privC, bc, cla} {
		if err := envoy.ValidateResource(m); err != nil {
			return nil, fmt.Errorf("xds: invalid resource: %w", err)
		}
	}
	snap, err := cachev3.NewSnapshot(version, map[resource.Type][]types.Resource{
		resource.ClusterType:  {pc, privC, bc},
		resource.EndpointType: {cla},
	})
	if err != nil {
		return nil, fmt.Errorf("xds: %w", err)
	}
	if err := snap.Consistent(); err != nil {
		return nil, fmt.Errorf("xds: inconsistent snapshot: %w", err)
	}
	return snap, nil
}

func indexOf(ups []*upstream.Upstream, reg *health.Registry, st health.State) int {
	for i, u := range ups {
		if reg.State(u.Name) == st {
			return i
		}
	}
	return -1
}

// logAdapter gives go-control-plane's logger interface to slog.
type logAdapter struct{ l *slog.Logger }

func (a logAdapter) Debugf(format string, args ...any) { a.l.Debug(fmt.Sprintf(format, args...)) }
func (a logAdapter) Infof(format string, args ...any)  { a.l.Debug(fmt.Sprintf(format, args...)) }
func (a logAdapter) Warnf(format string, args ...any)  { a.l.Warn(fmt.Sprintf(format, args...)) }
func (a logAdapter) Errorf(format string, args ...any) { a.l.Error(fmt.Sprintf(format, args...)) }
