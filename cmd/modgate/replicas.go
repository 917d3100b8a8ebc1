package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/modgate/modgate/audit"
	"github.com/modgate/modgate/cache"
	"github.com/modgate/modgate/coord"
	"github.com/modgate/modgate/gate"
	"github.com/modgate/modgate/internal/files"
	"github.com/modgate/modgate/s3store"
)

// storeConfig is the tier several replicas share: the store: section.
// Without it (type ""), modgate keeps one machine's cache.
type storeConfig struct {
	// Type is "s3", or "" for none.
	Type string `yaml:"type"`
	// Bucket is the S3 bucket. Required with type s3.
	Bucket string `yaml:"bucket"`
	// Prefix is prepended to every object's name, e.g. "cache/".
	Prefix string `yaml:"prefix"`
	// Endpoint is the S3 endpoint's URL, e.g. http://127.0.0.1:9000, for
	// S3-compatible servers (path-style addressing). Default: the SDK's
	// endpoint for the region.
	Endpoint string `yaml:"endpoint"`
	// Region is the bucket's region. Default us-east-1.
	Region string `yaml:"region"`
	// PartSize is the multipart upload's part size and the ranged read's
	// size. Default 8MiB, at least 5MiB.
	PartSize byteSize `yaml:"part_size"`
	// Timeout bounds each round trip to the store. Default 30s.
	Timeout time.Duration `yaml:"timeout"`
}

// coordinationConfig lets replicas coalesce their fills: the
// coordination: section. Without it (type ""), each replica coalesces
// only its own requests, and the store's conditional writes keep one
// commit of every immutable entry all the same.
type coordinationConfig struct {
	// Type is "nats", or "" for none.
	Type string `yaml:"type"`
	// URL is the NATS server (nats://host:port, comma-separated for
	// several). Required with type nats.
	URL string `yaml:"url"`
	// Bucket is the JetStream key-value bucket of the fills' leases.
	// Default modgate_fills.
	Bucket string `yaml:"bucket"`
	// LeaseTTL is how long a replica's fill lease lasts without renewal;
	// it is renewed every third of it while the fill runs. Default 10s.
	LeaseTTL time.Duration `yaml:"lease_ttl"`
	// Timeout bounds each round trip to NATS. Default 2s.
	Timeout time.Duration `yaml:"timeout"`
	// FollowTimeout bounds how long a miss waits for another replica's
	// fill before fetching itself. Default 60s.
	FollowTimeout time.Duration `yaml:"follow_timeout"`
	// Credentials, through nats.go's own options: a credentials file
	// (JWT and NKey seed), an NKey seed file, a token file, or a user and
	// a password file.
	Creds        string `yaml:"creds"`
	NKey         string `yaml:"nkey"`
	TokenFile    string `yaml:"token_file"`
	User         string `yaml:"user"`
	PasswordFile string `yaml:"password_file"`
	// TLS: a CA file to verify the server, and a client certificate and
	// key for mutual TLS.
	CA   string `yaml:"ca"`
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

func (c *storeConfig) check() error {
	switch c.Type {
	case "":
		if c.Bucket != "" || c.Endpoint != "" {
			return errors.New("store: bucket or endpoint given without type: s3")
		}
		return nil
	case "s3":
	default:
		return fmt.Errorf("store: type %q: want s3", c.Type)
	}
	if c.Bucket == "" {
		return errors.New("store: bucket is required with type s3")
	}
	if c.PartSize != 0 && c.PartSize < 5<<20 {
		return fmt.Errorf("store: part_size %d is under S3's minimum of 5MiB", c.PartSize)
	}
	if c.Timeout < 0 {
		return errors.New("store: timeout: negative")
	}
	switch {
	case strings.HasPrefix(c.Prefix, "/") || strings.Contains(c.Prefix, ".."):
		return fmt.Errorf("store: prefix %q: it may not start with a slash or hold a .. element", c.Prefix)
	case c.Prefix != "" && !strings.HasSuffix(c.Prefix, "/"):
		return fmt.Errorf("store: prefix %q: it must end in / (as cache/ does)", c.Prefix)
	}
	return nil
}

func (c *coordinationConfig) check(store *storeConfig) error {
	switch c.Type {
	case "":
		if c.URL != "" {
			return errors.New("coordination: url given without type: nats")
		}
		return nil
	case "nats":
	default:
		return fmt.Errorf("coordination: type %q: want nats", c.Type)
	}
	if store.Type == "" {
		return errors.New("coordination: needs a shared store: replicas wait for each other's fills to land there")
	}
	if c.URL == "" {
		return errors.New("coordination: url is required with type nats")
	}
	if c.LeaseTTL < 0 || c.Timeout < 0 || c.FollowTimeout < 0 {
		return errors.New("coordination: lease_ttl, timeout and follow_timeout must not be negative")
	}
	if c.LeaseTTL != 0 && c.LeaseTTL < 300*time.Millisecond {
		return fmt.Errorf("coordination: lease_ttl %s is under 300ms", c.LeaseTTL)
	}
	if (c.Cert == "") != (c.Key == "") {
		return errors.New("coordination: cert and key go together")
	}
	if (c.User == "") != (c.PasswordFile == "") {
		return errors.New("coordination: user and password_file go together")
	}
	return nil
}

// openStore opens the shared store, or returns nil without one.
func (g *standalone) openStore(ctx context.Context) error {
	c := g.cfg.Store
	if c.Type == "" {
		return nil
	}
	s, err := s3store.Open(ctx, s3store.Config{
		Bucket: c.Bucket, Prefix: c.Prefix, Endpoint: c.Endpoint, Region: c.Region,
		PartSize: int64(c.PartSize), Timeout: c.Timeout, Logger: g.log,
	})
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	g.store = s
	g.log.Info("shared store", "store", s.Name())
	return nil
}

// openCoordination connects to NATS, or does nothing without it. A NATS
// server that is down does not stop the start: the replica fills alone
// until it is back.
func (g *standalone) openCoordination(ctx context.Context) error {
	c := g.cfg.Coordination
	if c.Type == "" {
		return nil
	}
	opts, err := c.natsOptions()
	if err != nil {
		return err
	}
	l, err := coord.Open(ctx, coord.Config{
		URL: c.URL, Bucket: c.Bucket, LeaseTTL: c.LeaseTTL, Timeout: c.Timeout,
		Options: opts, Logger: g.log,
	})
	if err != nil {
		return fmt.Errorf("coordination: %w", err)
	}
	g.leases = l
	return nil
}

// natsOptions turns the credentials and TLS settings into nats.go options.
func (c *coordinationConfig) natsOptions() ([]nats.Option, error) {
	var opts []nats.Option
	if c.Creds != "" {
		opts = append(opts, nats.UserCredentials(c.Creds))
	}
	if c.NKey != "" {
		o, err := nats.NkeyOptionFromSeed(c.NKey)
		if err != nil {
			return nil, fmt.Errorf("coordination: nkey: %w", err)
		}
		opts = append(opts, o)
	}
	if c.TokenFile != "" {
		tok, err := readSecret(c.TokenFile, maxSecret)
		if err != nil {
			return nil, fmt.Errorf("coordination: token_file: %w", err)
		}
		opts = append(opts, nats.Token(tok))
	}
	if c.User != "" {
		pw, err := readSecret(c.PasswordFile, maxSecret)
		if err != nil {
			return nil, fmt.Errorf("coordination: password_file: %w", err)
		}
		opts = append(opts, nats.UserInfo(c.User, pw))
	}
	if c.CA != "" {
		opts = append(opts, nats.RootCAs(c.CA))
	}
	if c.Cert != "" {
		opts = append(opts, nats.ClientCert(c.Cert, c.Key))
	}
	return opts, nil
}

// maxSecret bounds a credentials file modgate reads.
const maxSecret = 4 << 10

// readSecret reads a secret file of at most max bytes, without
// surrounding white space; an empty one is an error.
func readSecret(name string, max int64) (string, error) {
	data, err := files.ReadMax(name, max)
	if err != nil {
		return "", err
	}
	s := strings.TrimSpace(string(data))
	if s == "" {
		return "", fmt.Errorf("%s: empty", name)
	}
	return s, nil
}

// gateLeases gives the processor coord's leases.
type gateLeases struct{ l *coord.Leases }

func (g gateLeases) Lead(ctx context.Context, key string) (gate.Lease, error) {
	l, err := g.l.Lead(ctx, key)
	if err != nil {
		return nil, err
	}
	return l, nil
}

// purgeShared deletes the entries of a module (at a version, or all) from
// the shared store, if there is one, and returns how many. Their blobs are
// left to `modgate store gc`.
func (g *standalone) purgeShared(ctx context.Context, t purgeTarget) (int, error) {
	if g.store == nil {
		return 0, nil
	}
	match := t.keys()
	var names []string
	err := g.store.List(ctx, cache.SharedEntriesPrefix+t.escPath+"/@", func(o s3store.Object) error {
		if match("/" + strings.TrimPrefix(o.Name, cache.SharedEntriesPrefix)) {
			names = append(names, o.Name)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("shared store: %w", err)
	}
	for i, name := range names {
		if err := g.store.Delete(ctx, name); err != nil {
			return i, fmt.Errorf("shared store: %w", err)
		}
	}
	return len(names), nil
}

// purgeForPeer purges from the local tiers what another replica purged
// (see coord.Leases.OnPurge), and audits it.
func (g *standalone) purgeForPeer(path, version, origin string) {
	target := path
	if version != "" {
		target += "@" + version
	}
	t, err := parsePurgeTarget(target)
	if err != nil {
		g.log.Warn("ignoring another replica's purge of an invalid target", "target", target, "origin", origin, "err", err)
		return
	}
	n := g.cache.Purge(t.keys())
	g.log.Info("cache purged at another replica's request", "module", t.path, "version", t.version, "entries", n, "origin", origin)
	ev := &audit.Event{
		Timestamp: g.clock.Now().UTC(),
		Event:     audit.EventFields{Action: "cache-purge", Outcome: audit.OutcomeSuccess, Reason: fmt.Sprintf("purged %d entries at the request of replica %s", n, origin)},
	}
	ev.Modgate.Module, ev.Modgate.Version = t.path, t.version
	if err := g.audit.Record(ev); err != nil {
		g.log.Error("audit event not recorded", "err", err)
	}
}
