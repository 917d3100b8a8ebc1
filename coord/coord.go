// Package coord coordinates fills across modgate replicas that share a
// cache tier, with leases kept in a NATS JetStream key-value bucket. When
// a key misses on several replicas at once, the replica whose create of
// the key's entry succeeds holds the lease and fetches; it renews the
// entry (a heartbeat) until it releases it by deleting the entry. The
// others watch the entry and wait until the lease ends: deleted by its
// holder, replaced by a newer lease, or not renewed for longer than the
// lease TTL (its holder is gone; a waiter then deletes it). Then they
// read the shared tier.
//
// A lease is an optimisation, never a lock that correctness depends on:
// the shared tier's conditional writes decide what is stored. Two
// replicas may both fetch a key when a holder stalls for longer than the
// TTL, when coordination is unreachable (Lead then fails at once and the
// caller fills alone), or when the NATS server restarts (the bucket is
// kept in memory, so its leases are forgotten).
//
// Nothing here blocks for long: every round trip to NATS is bounded by
// Config.Timeout, and a Wait by its context, the lease TTL, and the
// connection (a Wait returns when the connection is lost). Lapses are
// measured on each waiter's own clock from the renewals it sees, so the
// replicas' and the server's clocks need not agree. A server that is down
// when Open runs, or goes away later, is retried in the background
// forever; Lead fails until the connection is up and the bucket bound.
//
// Keys in the bucket are the lowercase hex SHA-256 of the cache keys,
// which contain characters key-value keys may not. A lease's value is a
// small JSON object naming its holder, for people reading the bucket.
package coord

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Defaults for the Config fields.
const (
	DefaultBucket   = "modgate_fills"
	DefaultLeaseTTL = 10 * time.Second
	DefaultTimeout  = 2 * time.Second
)

const (
	// minLeaseTTL is the shortest LeaseTTL allowed.
	minLeaseTTL = 100 * time.Millisecond
	// gcFactor × LeaseTTL is the bucket's maximum age for an entry, which
	// clears the keys of holders that died with nobody waiting on them.
	// A held lease is renewed far more often, so it never ages out.
	gcFactor = 10
	// minBucketAge is the least maximum age the bucket gets.
	minBucketAge = time.Second
	// Bounds on the wait between attempts to bind the bucket.
	minRetry = 100 * time.Millisecond
	maxRetry = 2 * time.Second
	// poll is how often the monitor looks at the connection even without
	// a status event (the client drops events when a listener lags).
	poll = time.Second
)

var bucketRe = regexp.MustCompile(`^[a-zA-Z0-9_-]+$`)

// Config configures Open. URL is required; the other fields' zero values
// work.
type Config struct {
	// URL is the NATS server to connect to, nats://host:port, or several
	// separated by commas. Required.
	URL string
	// Bucket is the key-value bucket the leases are kept in, created if
	// it does not exist. Default DefaultBucket ("modgate_fills").
	Bucket string
	// LeaseTTL is how long a lease lasts without renewal: a lease whose
	// holder has not renewed it for this long has lapsed. A holder renews
	// every LeaseTTL/3; a waiter gives up on a lease (and deletes it)
	// once it has seen no renewal for LeaseTTL plus a grace of
	// LeaseTTL/2. All replicas sharing a bucket should use the same
	// value. At least 100ms; default 10s.
	LeaseTTL time.Duration
	// Timeout bounds each round trip to NATS. Default 2s.
	Timeout time.Duration
	// Options configure the connection: credentials (user and password,
	// token, nkey, creds file), TLS, reconnect pacing. Open adds its own
	// after them: retry on a failed first connect, reconnect forever,
	// and no buffering of messages while reconnecting. Default none.
	Options []nats.Option
	// Name is this replica's name, recorded in the leases it holds.
	// Default the host name and process id, "host-1234".
	Name string
	// Logger receives state changes (connection lost, bucket bound) and
	// lost leases. Default slog.Default().
	Logger *slog.Logger
}

// Leases takes and waits for fill leases; see the package comment. Create
// it with Open. It is safe for concurrent use.
type Leases struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	kvcfg   jetstream.KeyValueConfig
	ttl     time.Duration
	timeout time.Duration
	name    string
	log     *slog.Logger

	events    chan nats.Status   // the connection's status changes
	kick      chan struct{}      // asks the monitor to look again; buffered 1
	stop      chan struct{}      // closed by Close
	cancel    context.CancelFunc // ends the monitor's context
	closeOnce sync.Once

	// mu guards the bound state and closed, and orders wg.Add against
	// Close's wg.Wait.
	mu         sync.Mutex
	kv         jetstream.KeyValue // nil while not bound
	down       chan struct{}      // closed when the bound state ends
	reconnects uint64             // the connection's reconnect count when kv was bound
	reason     string             // why kv is nil; "" while bound
	closed     bool
	wg         sync.WaitGroup // the monitor and every heartbeat
}

// Open connects to NATS and binds the lease bucket, creating it if it
// does not exist. A server that cannot be reached does not make Open
// fail: the connection is retried in the background, and Lead fails until
// it is up and the bucket bound. Open fails only for a bad Config or
// connection option (a creds file that cannot be read, say). ctx
// bounds the first attempt to bind the bucket; the Leases outlive it.
// The caller must Close the Leases.
func Open(ctx context.Context, cfg Config) (*Leases, error) {
	switch {
	case cfg.URL == "":
		return nil, errors.New("coord: URL is required")
	case cfg.Bucket != "" && !bucketRe.MatchString(cfg.Bucket):
		return nil, fmt.Errorf("coord: Bucket %q: only letters, digits, '-' and '_' are allowed", cfg.Bucket)
	case cfg.LeaseTTL < 0:
		return nil, fmt.Errorf("coord: LeaseTTL %v is negative", cfg.LeaseTTL)
	case cfg.LeaseTTL != 0 && cfg.LeaseTTL < minLeaseTTL:
		return nil, fmt.Errorf("coord: LeaseTTL %v is under the minimum %v", cfg.LeaseTTL, minLeaseTTL)
	case cfg.Timeout < 0:
		return nil, fmt.Errorf("coord: Timeout %v is negative", cfg.Timeout)
	}
	if cfg.Bucket == "" {
		cfg.Bucket = DefaultBucket
	}
	if cfg.LeaseTTL == 0 {
		cfg.LeaseTTL = DefaultLeaseTTL
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Name == "" {
		host, err := os.Hostname()
		if err != nil {
			host = "unknown"
		}
		cfg.Name = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	l := &Leases{
		kvcfg: jetstream.KeyValueConfig{
			Bucket:      cfg.Bucket,
			Description: "modgate fill leases",
			History:     1,
			TTL:         max(gcFactor*cfg.LeaseTTL, minBucketAge),
			Storage:     jetstream.MemoryStorage,
		},
		ttl:     cfg.LeaseTTL,
		timeout: cfg.Timeout,
		name:    cfg.Name,
		log:     cfg.Logger.With("bucket", cfg.Bucket),
		kick:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		reason:  "connecting",
	}
	opts := append(cfg.Options[:len(cfg.Options):len(cfg.Options)],
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		// Fail a publish at once while reconnecting, rather than
		// buffer it for a server that may be gone for minutes.
		nats.ReconnectBufSize(-1),
	)
	nc, err := nats.Connect(cfg.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("coord: connect: %w", err)
	}
	l.nc = nc
	l.events = nc.StatusChanged()
	if l.js, err = jetstream.New(nc); err != nil {
		nc.Close()
		return nil, fmt.Errorf("coord: %w", err)
	}
	// The monitor outlives Open's ctx but keeps its values.
	mctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	l.cancel = cancel
	if nc.Status() == nats.CONNECTED {
		l.refresh(ctx)
	}
	l.wg.Add(1)
	go l.monitor(mctx)
	return l, nil
}

// Status reports whether coordination works (connected, and the bucket
// bound) and, in words, its state or why it does not work.
func (l *Leases) Status() (ok bool, detail string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.kv == nil {
		return false, l.reason
	}
	return true, fmt.Sprintf("connected to %s, bucket %s", l.nc.ConnectedUrlRedacted(), l.kvcfg.Bucket)
}

// Close releases every lease still held, stops the background work and
// closes the connection. Lead fails after Close, and Waits return.
func (l *Leases) Close() error {
	l.closeOnce.Do(func() {
		l.mu.Lock()
		l.closed = true
		l.mu.Unlock()
		close(l.stop)
		l.cancel()
		l.wg.Wait()
		l.unbind("closed")
		l.nc.Close()
	})
	return nil
}

// ready returns the bound bucket and the channel closed when it stops
// being bound, or why there is none.
func (l *Leases) ready() (jetstream.KeyValue, <-chan struct{}, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.kv == nil {
		return nil, nil, fmt.Errorf("coordination unavailable: %s", l.reason)
	}
	return l.kv, l.down, nil
}

// goAdd registers a goroutine that Close waits for; it reports false once
// Close has begun.
func (l *Leases) goAdd() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.wg.Add(1)
	return true
}

// monitor keeps the bound state in step with the connection: it unbinds
// the bucket when the connection is lost, and binds it again, with
// backoff, once connected. It runs until Close.
func (l *Leases) monitor(ctx context.Context) {
	defer l.wg.Done()
	events := l.events
	backoff := minRetry
	t := time.NewTimer(poll)
	defer t.Stop()
	for {
		if l.refresh(ctx) {
			backoff = minRetry
			t.Reset(poll)
		} else {
			t.Reset(backoff)
			backoff = min(2*backoff, maxRetry)
		}
		select {
		case <-l.stop:
			return
		case _, ok := <-events:
			if !ok {
				events = nil // polled from now on
			}
		case <-l.kick:
		case <-t.C:
		}
	}
}

// refresh looks at the connection once: unbinds the bucket if the
// connection is down or has reconnected since it was bound (a restarted
// server has forgotten a bucket in memory), and binds it if connected
// and not bound. It reports false if the bucket is not bound and should
// be tried again soon.
func (l *Leases) refresh(ctx context.Context) bool {
	st := l.nc.Status()
	if st != nats.CONNECTED {
		l.unbind("not connected to NATS: " + st.String())
		return true // the status events wake the monitor
	}
	n := l.nc.Stats().Reconnects
	l.mu.Lock()
	bound, stale := l.kv != nil && l.reconnects == n, l.kv != nil
	l.mu.Unlock()
	if bound {
		return true
	}
	if stale {
		l.unbind("reconnected, binding the bucket again")
	}
	bctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	kv, err := l.js.CreateKeyValue(bctx, l.kvcfg)
	if errors.Is(err, jetstream.ErrBucketExists) {
		// Created by a replica with other settings: use it as it is.
		kv, err = l.js.KeyValue(bctx, l.kvcfg.Bucket)
	}
	if err != nil {
		l.unbind("binding the bucket: " + err.Error())
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return true
	}
	l.kv = kv
	l.down = make(chan struct{})
	l.reconnects = n
	l.reason = ""
	l.log.Info("coordination ready", "url", l.nc.ConnectedUrlRedacted())
	return true
}

// unbind ends the bound state, if any, for reason, and logs a change of
// reason once.
func (l *Leases) unbind(reason string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.kv != nil {
		l.kv = nil
		close(l.down)
	}
	if reason != l.reason {
		l.reason = reason
		if reason != "closed" {
			l.log.Warn("coordination unavailable", "reason", reason)
		}
	}
}

// lost is told of an error from the bucket; if the error says the bucket
// is gone (a restarted server, an operator's delete) it unbinds kv, so the
// monitor binds the bucket again.
func (l *Leases) lost(kv jetstream.KeyValue, err error) {
	switch {
	case errors.Is(err, jetstream.ErrNoStreamResponse),
		errors.Is(err, jetstream.ErrStreamNotFound),
		errors.Is(err, jetstream.ErrBucketNotFound),
		errors.Is(err, nats.ErrNoResponders):
	default:
		return
	}
	l.mu.Lock()
	current := l.kv == kv
	l.mu.Unlock()
	if !current {
		return
	}
	l.unbind("bucket lost: " + err.Error())
	select {
	case l.kick <- struct{}{}:
	default:
	}
}
