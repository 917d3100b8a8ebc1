package coord

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
)

// maxPurge bounds a purge message: a module path, a version, a name.
const maxPurge = 4 << 10

// purge is a purge message: what an operator purged at one replica, which
// every other replica purges from its local tiers.
type purge struct {
	Module  string `json:"module"`
	Version string `json:"version,omitempty"`
	Origin  string `json:"origin"`
}

// purgeSubject is the subject purges travel on, one per bucket, so that
// fleets sharing a NATS server do not purge each other's caches.
func (l *Leases) purgeSubject() string { return "modgate." + l.kvcfg.Bucket + ".purge" }

// PublishPurge tells the other replicas that module (at version, or every
// version if "") was purged here. Delivery is NATS's: at most once, to
// the replicas connected now; the error says whether the server took the
// message.
func (l *Leases) PublishPurge(ctx context.Context, module, version string) error {
	data, err := json.Marshal(purge{Module: module, Version: version, Origin: l.name})
	if err != nil {
		return err
	}
	if err := l.nc.Publish(l.purgeSubject(), data); err != nil {
		return fmt.Errorf("coord: publishing a purge: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	if err := l.nc.FlushWithContext(ctx); err != nil {
		return fmt.Errorf("coord: publishing a purge: %w", err)
	}
	return nil
}

// OnPurge calls fn, on a goroutine of the connection's, for every purge
// another replica publishes, until Close. The module and version are as
// the other replica sent them: fn must check them. The subscription
// survives reconnections.
func (l *Leases) OnPurge(fn func(module, version, origin string)) error {
	_, err := l.nc.Subscribe(l.purgeSubject(), func(m *nats.Msg) {
		var p purge
		if len(m.Data) > maxPurge || json.Unmarshal(m.Data, &p) != nil || p.Module == "" {
			l.log.Warn("coord: ignoring a malformed purge message", "bytes", len(m.Data))
			return
		}
		if p.Origin == l.name {
			return // our own
		}
		fn(p.Module, p.Version, p.Origin)
	})
	if errors.Is(err, nats.ErrConnectionClosed) {
		return fmt.Errorf("coord: closed")
	}
	if err != nil {
		return fmt.Errorf("coord: subscribing to purges: %w", err)
	}
	// The server knows of the subscription once a round trip is done;
	// while disconnected, the client makes it again on reconnecting.
	l.nc.FlushTimeout(l.timeout)
	return nil
}
