package coord

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

const (
	// leadAttempts bounds Lead's tries when the key is released between
	// its create and its look at the holder.
	leadAttempts = 3
	// maxValue is the most of a lease's value that is parsed; a longer
	// value is not one of ours, and its holder is unknown.
	maxValue = 1 << 10
)

// A Lease is this replica's claim on one key's fill, as Lead returned it:
// held by this replica, or by another one. Held, Wait and Release may be
// called from any goroutine.
type Lease struct {
	l      *Leases
	name   string // the cache key, for logs
	key    string // the bucket key: kvKey(name)
	held   bool
	holder string // the holder's name, as its value says; "" if unknown

	// A lease held elsewhere:
	sum   [sha256.Size]byte // SHA-256 of the value Lead saw: which of the key's leases this is
	ended bool              // it had ended by the time Lead looked

	// A held lease:
	stop chan struct{} // closed by Release
	done chan struct{} // closed when the heartbeat has released the key
	once sync.Once
}

// leaseValue is what a lease's entry holds.
type leaseValue struct {
	Holder  string    `json:"holder"`
	Started time.Time `json:"started"`
	// ID tells apart two leases of one key even if their holders share a
	// name and a clock tick: a waiter compares values to know whether
	// the lease it waits for has been replaced by another.
	ID string `json:"id"`
}

// kvKey is the bucket key of a cache key: the lowercase hex SHA-256 of
// it, since cache keys hold characters ('/', '@', '!', '~', '+') that
// bucket keys may not.
func kvKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

// parseValue returns the holder a lease's value names, or "" for a value
// that is not a lease's (too long, not JSON).
func parseValue(b []byte) string {
	if len(b) > maxValue {
		return ""
	}
	var v leaseValue
	if json.Unmarshal(b, &v) != nil {
		return ""
	}
	return v.Holder
}

// Lead takes key's lease for a fill by this replica, or returns the lease
// another replica holds. A held lease is renewed every LeaseTTL/3 until
// Release; the caller must Release it. Lead fails at once when
// coordination is unavailable (not connected, bucket not bound, closed),
// and otherwise takes at most Config.Timeout; an error means the caller
// fills without coordination.
func (l *Leases) Lead(ctx context.Context, key string) (*Lease, error) {
	kv, _, err := l.ready()
	if err != nil {
		return nil, fmt.Errorf("lead: %w", err)
	}
	val, err := json.Marshal(leaseValue{Holder: l.name, Started: time.Now().UTC(), ID: rand.Text()})
	if err != nil {
		return nil, fmt.Errorf("lead: %w", err)
	}
	k := kvKey(key)
	rctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	for range leadAttempts {
		rev, err := kv.Create(rctx, k, val)
		if err == nil {
			return l.hold(ctx, kv, key, k, val, rev)
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			l.lost(kv, err)
			return nil, fmt.Errorf("lead: create: %w", err)
		}
		e, err := kv.Get(rctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // released since the create: try again
		}
		if err != nil {
			l.lost(kv, err)
			return nil, fmt.Errorf("lead: get: %w", err)
		}
		return &Lease{
			l:      l,
			name:   key,
			key:    k,
			holder: parseValue(e.Value()),
			sum:    sha256.Sum256(e.Value()),
		}, nil
	}
	// Taken and released again each time: there is no lease to wait for,
	// and the caller looks at the shared tier again.
	return &Lease{l: l, name: key, key: k, ended: true}, nil
}

// hold returns a held lease on key, whose entry k has revision rev, and
// starts its heartbeat.
func (l *Leases) hold(ctx context.Context, kv jetstream.KeyValue, key, k string, val []byte, rev uint64) (*Lease, error) {
	s := &Lease{
		l:      l,
		name:   key,
		key:    k,
		held:   true,
		holder: l.name,
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	// The heartbeat outlives Lead's ctx; it keeps its values.
	hctx := context.WithoutCancel(ctx)
	if !l.goAdd() {
		close(s.done)
		s.release(hctx, kv, rev)
		return nil, errors.New("lead: coordination closed")
	}
	go s.heartbeat(hctx, kv, val, rev)
	return s, nil
}

// Held reports whether this replica holds the lease, and so leads the
// fill.
func (s *Lease) Held() bool { return s.held }

// Holder returns the name of the replica holding the lease, as its value
// says, or "" if that is unknown.
func (s *Lease) Holder() string { return s.holder }

// Release ends a held lease: it stops the renewals and deletes the key's
// entry, unless another lease has replaced it, and returns once that is
// done (at most Config.Timeout). It does nothing for a lease not held,
// and may be called more than once. A failure to delete is logged, not
// returned: waiters then see the lease lapse.
func (s *Lease) Release() {
	if !s.held {
		return
	}
	s.once.Do(func() { close(s.stop) })
	<-s.done
}

// heartbeat renews a held lease every LeaseTTL/3, by updating its entry
// conditionally on the revision it last wrote, until Release or Close;
// then it releases the lease. A refused update means the lease lapsed and
// another replica's waiter or Lead took the key: it stops renewing (the
// fill goes on; the shared tier decides what is stored).
func (s *Lease) heartbeat(ctx context.Context, kv jetstream.KeyValue, val []byte, rev uint64) {
	defer s.l.wg.Done()
	defer close(s.done)
	t := time.NewTicker(s.l.ttl / 3)
	defer t.Stop()
	renew := t.C
loop:
	for {
		select {
		case <-s.stop:
			break loop
		case <-s.l.stop:
			break loop
		case <-renew:
			var ok bool
			if rev, ok = s.renew(ctx, kv, val, rev); !ok {
				renew = nil // lost: wait for Release
			}
		}
	}
	s.release(ctx, kv, rev)
}

// renew updates the lease's entry once and returns its new revision, or
// false if the lease is lost. An update that fails for another reason
// (a timeout, no connection) is tried again at the next tick.
func (s *Lease) renew(ctx context.Context, kv jetstream.KeyValue, val []byte, rev uint64) (uint64, bool) {
	ctx, cancel := context.WithTimeout(ctx, s.l.timeout)
	defer cancel()
	n, err := kv.Update(ctx, s.key, val, rev)
	if err == nil {
		return n, true
	}
	if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) && !errors.Is(err, jetstream.ErrKeyExists) {
		s.l.log.Debug("renewing fill lease", "key", s.name, "err", err)
		s.l.lost(kv, err)
		return rev, true
	}
	// An update whose answer was lost may have been applied: if the entry
	// is still exactly ours, it is our own renewal.
	if e, gerr := kv.Get(ctx, s.key); gerr == nil && bytes.Equal(e.Value(), val) {
		return e.Revision(), true
	}
	s.l.log.Warn("fill lease lost: taken over after a renewal was late; the fill goes on", "key", s.name, "err", err)
	return rev, false
}

// release deletes the lease's entry if it is still at revision rev.
func (s *Lease) release(ctx context.Context, kv jetstream.KeyValue, rev uint64) {
	ctx, cancel := context.WithTimeout(ctx, s.l.timeout)
	defer cancel()
	if err := kv.Delete(ctx, s.key, jetstream.LastRevision(rev)); err != nil {
		s.l.log.Debug("releasing fill lease", "key", s.name, "err", err)
	}
}

// Wait, for a lease another replica holds, blocks until that lease ends
// and returns nil; it returns ctx's error if ctx ends first. The lease
// ends when its holder releases it, when another lease replaces it, or
// when its holder has not renewed it for LeaseTTL plus a grace of half of
// it (Wait then deletes the stale entry, so that the key is free). Wait
// also returns nil, at once, when coordination is or becomes unavailable
// (the connection is lost, the Leases closed): the caller looks at the
// shared tier again and, if it must, fills alone. For a held lease it
// returns nil at once.
func (s *Lease) Wait(ctx context.Context) error {
	if s.held || s.ended {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	kv, down, err := s.l.ready()
	if err != nil {
		return nil
	}
	// The watch lives as long as this Wait, but setting it up may take
	// only Timeout.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	setup := time.AfterFunc(s.l.timeout, cancel)
	// The watch delivers the entry's current value first, then every
	// change: a release between Lead's look and this watch shows as a
	// delete, or as another lease's value, so it cannot be missed.
	w, err := kv.Watch(wctx, s.key)
	if !setup.Stop() || err != nil {
		if err == nil {
			w.Stop()
		} else {
			s.l.log.Debug("watching fill lease", "key", s.name, "err", err)
			s.l.lost(kv, err)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return nil
	}
	defer w.Stop()

	lapse := s.l.ttl + s.l.ttl/2
	t := time.NewTimer(lapse)
	defer t.Stop()
	var rev uint64 // of the last renewal seen; 0 before the first
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-down:
			return nil
		case e, ok := <-w.Updates():
			switch {
			case !ok: // the connection closed
				return nil
			case e == nil: // the end of the current values
				if rev == 0 {
					return nil // the key has no entry
				}
			case e.Operation() != jetstream.KeyValuePut, sha256.Sum256(e.Value()) != s.sum:
				return nil // released, or replaced by another lease
			default:
				rev = e.Revision()
				t.Reset(lapse)
			}
		case <-t.C:
			if rev != 0 {
				s.lapsed(ctx, kv, rev)
			}
			return nil
		}
	}
}

// lapsed deletes the entry of a lease whose holder stopped renewing it,
// if it is still at revision rev, so that the key is free. Another waiter
// may have deleted it first.
func (s *Lease) lapsed(ctx context.Context, kv jetstream.KeyValue, rev uint64) {
	ctx, cancel := context.WithTimeout(ctx, s.l.timeout)
	defer cancel()
	err := kv.Delete(ctx, s.key, jetstream.LastRevision(rev))
	s.l.log.Info("fill lease lapsed", "key", s.name, "holder", s.holder, "deleted", err == nil)
}
