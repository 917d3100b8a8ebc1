package xds

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/modgate/modgate/audit"
)

// ActionNACK is the audit action of a rejected snapshot version.
const ActionNACK = "xds-nack"

// An Auditor records audit events. *audit.Writer is one. Record may block
// (the writer's queue is full) and is called from the rejecting client's
// stream, never under a lock of the Server.
type Auditor interface {
	Record(*audit.Event) error
}

// An Observer counts what the control plane sees. *metrics.Metrics is one.
// It must be safe for concurrent use and must not block.
type Observer interface {
	// XDSNack counts one NACK received for the resource type typ ("cds",
	// "eds", "lds", "rds", "sds", …, or "other").
	XDSNack(typ string)
}

// maxDetail bounds the client's error_detail as logged and audited.
const maxDetail = 2048

// maxRejections bounds the rejections remembered so that each is logged
// and audited once; past it the memory is cleared, so a rejection may be
// logged again, never lost. Publish forgets those of older versions.
const maxRejections = 4096

// rejections keeps an xDS client from being sent a snapshot version it
// has rejected, and reports each rejection once. Its methods are the ADS
// server's callbacks.
//
// Why the server needs it. A NACK is a DiscoveryRequest with error_detail
// set, the nonce of the rejected response in response_nonce, and in
// version_info the last version the client *accepted* (the xDS protocol
// says so; Envoy and grpc-go do it). go-control-plane's SotW server
// (pkg/server/sotw/v3, v0.14) passes every request whose nonce is current
// straight to the cache's CreateWatch, and the SnapshotCache
// (pkg/cache/v3/simple.go) answers at once whenever the request's
// version_info differs from the snapshot's version: to the cache, a NACK
// looks like a client that is behind, so it gets the rejected version
// again, which it rejects again, without end (go-control-plane issue #962,
// PR #794).
//
// What it does. OnStreamResponse remembers, per stream and type, the
// nonce and version of the last response sent. A NACK whose nonce is that
// one rejects that version V; from then on, until a response of another
// version is sent on the stream for that type, every request of that
// type is handed on with version_info V. The same request pointer goes
// from OnStreamRequest to CreateWatch (both sotw.process and processADS
// call the callback, then the cache, with it; TestRejectedVersionIsNotResent
// here and in integration/ fails if a later go-control-plane stops
// doing so). The cache then sees a
// client that holds the current version (the server recorded V's
// resources as returned when it sent them) and opens a watch instead of
// answering; SetSnapshot answers that watch only with a version other
// than V. A request that names a resource the client has not been sent
// yet is still answered at V (those resources may be fine): so a client
// gets V at most once more per change of its subscription, never in a
// loop. Stale requests (an older nonce), which the server ignores, are
// left alone. The rewrite changes only what the cache compares: the
// response carries the snapshot's own version, and nothing else reads
// the request's version_info.
//
// Delta xDS needs none of this: the delta server records the resource
// versions it sent whether or not they are accepted, so a NACK causes no
// re-send there.
type rejections struct {
	log      *slog.Logger
	auditor  Auditor
	observer Observer
	now      func() time.Time

	mu      sync.Mutex
	streams map[int64]*stream
	// reported holds the rejections logged and audited.
	reported map[rejection]bool
}

// A stream is what rejections knows of one ADS stream.
type stream struct {
	peer   netip.AddrPort // invalid if unknown
	client *audit.TLS     // the client certificate, nil without mutual TLS
	sent   map[string]*sent
}

// sent is the last response of a type sent on a stream.
type sent struct {
	nonce, version string
	rejected       bool // the client NACKed it
}

// A rejection is a client's rejection of one version of one type. A
// client is a node id at a peer address (port excluded, so a client that
// reconnects is the same client).
type rejection struct {
	node, addr, typeURL, version string
}

func newRejections(log *slog.Logger, a Auditor, o Observer) *rejections {
	return &rejections{log: log, auditor: a, observer: o, now: time.Now, streams: map[int64]*stream{}, reported: map[rejection]bool{}}
}

// OnStreamOpen notes the stream's peer.
func (r *rejections) OnStreamOpen(ctx context.Context, id int64, _ string) error {
	st := &stream{sent: map[string]*sent{}}
	if p, ok := peer.FromContext(ctx); ok {
		if a, ok := p.Addr.(*net.TCPAddr); ok {
			st.peer = a.AddrPort()
		}
		st.client = clientCert(p.AuthInfo)
	}
	r.mu.Lock()
	r.streams[id] = st
	r.mu.Unlock()
	return nil
}

// OnStreamClosed forgets the stream.
func (r *rejections) OnStreamClosed(id int64, _ *corev3.Node) {
	r.mu.Lock()
	delete(r.streams, id)
	r.mu.Unlock()
}

// OnStreamResponse remembers the response about to be sent.
func (r *rejections) OnStreamResponse(_ context.Context, id int64, _ *discoverygrpc.DiscoveryRequest, resp *discoverygrpc.DiscoveryResponse) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if st := r.streams[id]; st != nil {
		st.sent[resp.GetTypeUrl()] = &sent{nonce: resp.GetNonce(), version: resp.GetVersionInfo()}
	}
}

// OnStreamRequest recognises a NACK of the last response of its type,
// reports it, and hands the cache a request that holds the rejected
// version (see rejections).
func (r *rejections) OnStreamRequest(id int64, req *discoverygrpc.DiscoveryRequest) error {
	typeURL, nack := req.GetTypeUrl(), req.GetErrorDetail() != nil
	if nack && r.observer != nil {
		r.observer.XDSNack(typeName(typeURL))
	}
	r.mu.Lock()
	st := r.streams[id]
	if st == nil {
		r.mu.Unlock()
		return nil
	}
	last := st.sent[typeURL]
	if last == nil || req.GetResponseNonce() != last.nonce {
		// The first request of its type, or a stale one.
		r.mu.Unlock()
		return nil
	}
	var report bool
	rej := rejection{node: req.GetNode().GetId(), typeURL: typeURL, version: last.version}
	if st.peer.IsValid() {
		rej.addr = st.peer.Addr().Unmap().String()
	}
	if nack {
		last.rejected = true
		if !r.reported[rej] {
			if len(r.reported) >= maxRejections {
				clear(r.reported)
			}
			r.reported[rej] = true
			report = true
		}
	}
	if last.rejected {
		req.VersionInfo = last.version
	}
	peerAddr, client := st.peer, st.client
	r.mu.Unlock()
	if report {
		r.report(rej, peerAddr, client, req.GetErrorDetail().GetMessage())
	}
	return nil
}

// published forgets the rejections of versions other than version: no
// client can be sent those again.
func (r *rejections) published(version string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for rej := range r.reported {
		if rej.version != version {
			delete(r.reported, rej)
		}
	}
}

// report logs and audits one rejection.
func (r *rejections) report(rej rejection, addr netip.AddrPort, client *audit.TLS, detail string) {
	detail = clip(detail)
	r.log.Warn("xds: snapshot rejected (NACK); this version is not sent to the client again",
		"node", rej.node, "peer", addr.String(), "type", typeName(rej.typeURL), "type_url", rej.typeURL, "version", rej.version, "error", detail)
	if r.auditor == nil {
		return
	}
	ev := &audit.Event{
		Timestamp: r.now().UTC(),
		Event: audit.EventFields{
			Action:  ActionNACK,
			Outcome: audit.OutcomeFailure,
			Reason:  fmt.Sprintf("node %q rejected %s version %q: %s", rej.node, rej.typeURL, rej.version, detail),
		},
		TLS: client,
	}
	if addr.IsValid() {
		ev.Source = &audit.Source{IP: addr.Addr().Unmap().String(), Port: addr.Port()}
	}
	if err := r.auditor.Record(ev); err != nil {
		r.log.Error("audit event not recorded", "err", err)
	}
}

// clip makes a client's error detail fit a log line: valid UTF-8, at most
// maxDetail bytes, a cut marked.
func clip(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= maxDetail {
		return s
	}
	cut := maxDetail
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%s… (%d bytes)", s[:cut], len(s))
}

// clientCert is the identity in a client's TLS certificate, nil without one.
func clientCert(ai credentials.AuthInfo) *audit.TLS {
	ti, ok := ai.(credentials.TLSInfo)
	if !ok || len(ti.State.PeerCertificates) == 0 {
		return nil
	}
	c := ti.State.PeerCertificates[0]
	sum := sha256.Sum256(c.Raw)
	t := &audit.TLS{Client: audit.TLSClient{Subject: c.Subject.String(), Hash: &audit.ClientHash{SHA256: hex.EncodeToString(sum[:])}}}
	if len(c.URIs) > 0 {
		uris := make([]string, len(c.URIs))
		for i, u := range c.URIs {
			uris[i] = u.String()
		}
		t.Client.X509 = &audit.X509{SAN: audit.X509SAN{URI: uris}}
	}
	return t
}

// typeName is the short name of an xDS resource type, for logs and metric
// labels: the type URL comes from the client, so anything unknown is
// "other".
func typeName(typeURL string) string {
	switch typeURL {
	case resource.ClusterType:
		return "cds"
	case resource.EndpointType:
		return "eds"
	case resource.ListenerType:
		return "lds"
	case resource.RouteType:
		return "rds"
	case resource.ScopedRouteType:
		return "srds"
	case resource.VirtualHostType:
		return "vhds"
	case resource.SecretType:
		return "sds"
	case resource.RuntimeType:
		return "rtds"
	case resource.ExtensionConfigType:
		return "ecds"
	}
	return "other"
}
