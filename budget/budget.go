// Package budget limits how often clients may cause upstream fetches.
//
// A gateway that serves modules from a cache must go upstream on every miss,
// so a client requesting paths that are not cached (by mistake or on purpose)
// can turn the gateway into an amplifier. A [Budget] charges each miss against
// two token buckets: one for the client identity (a SPIFFE ID, a certificate
// subject, a source address: any opaque string) and one for the module path.
// A miss proceeds only if both buckets hold a token; otherwise the caller
// should answer 429 Too Many Requests with the returned Retry-After.
//
// Keys come from untrusted clients, so a Budget remembers at most
// [Config.MaxKeys] buckets per kind and forgets the least recently used one
// when full. A forgotten key starts again with a full bucket. That errs on the
// side of availability: evicting a bucket can only let more requests through,
// never fewer. Key lengths are not bounded here; callers should bound them.
//
// A Budget is safe for concurrent use by multiple goroutines.
package budget

import (
	"container/list"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// DefaultMaxKeys is the number of buckets of each kind remembered when
// [Config.MaxKeys] is zero.
const DefaultMaxKeys = 65536

// A Limit is a token bucket's refill rate and size.
// A zero Rate means no limit.
type Limit struct {
	Rate  float64 // tokens per second; 0 means no limit
	Burst int     // bucket size; 0 with Rate > 0 means max(1, int(Rate))
}

// Config configures a [Budget]. The zero Config imposes no limits at all.
type Config struct {
	Client Limit // per client identity
	Module Limit // per module path

	// MaxKeys bounds how many buckets each of the two kinds remembers.
	// When full, the least recently used bucket is forgotten, and its key
	// starts again with a full bucket. Zero means DefaultMaxKeys.
	MaxKeys int

	// Now returns the current time. Nil means time.Now.
	// It must be safe for concurrent use. If it goes backwards,
	// buckets do not refill until it passes their last charge again.
	Now func() time.Time
}

// A Budget charges upstream fetches against per-client and per-module
// token buckets. Create one with [New].
type Budget struct {
	now func() time.Time

	mu     sync.Mutex // guards the contents of client and module
	client *buckets   // nil if unlimited
	module *buckets   // nil if unlimited
}

// New returns a Budget for cfg, or an error naming the first invalid field.
func New(cfg Config) (*Budget, error) {
	if err := cfg.Client.check("client"); err != nil {
		return nil, err
	}
	if err := cfg.Module.check("module"); err != nil {
		return nil, err
	}
	if cfg.MaxKeys < 0 {
		return nil, errors.New("budget: maxkeys: negative")
	}
	maxKeys := cfg.MaxKeys
	if maxKeys == 0 {
		maxKeys = DefaultMaxKeys
	}
	b := &Budget{
		now:    cfg.Now,
		client: newBuckets(cfg.Client, maxKeys),
		module: newBuckets(cfg.Module, maxKeys),
	}
	if b.now == nil {
		b.now = time.Now
	}
	return b, nil
}

func (l Limit) check(name string) error {
	switch {
	case math.IsNaN(l.Rate) || math.IsInf(l.Rate, 0):
		return fmt.Errorf("budget: %s.rate: not finite", name)
	case l.Rate < 0:
		return fmt.Errorf("budget: %s.rate: negative", name)
	case l.Burst < 0:
		return fmt.Errorf("budget: %s.burst: negative", name)
	}
	return nil
}

// Charge takes one token from the bucket of client and one from the bucket
// of module; an empty module names no bucket (requests that belong to no
// module, such as checksum-database tiles). If both have a token, it takes them and returns ok=true.
// Otherwise it takes none and returns ok=false, which bucket refused
// ("client" or "module"), and how long until that bucket holds a token,
// rounded up to whole seconds and at least one second, for use in a
// Retry-After header.
//
// The client bucket is consulted first. If it refuses, the module bucket is
// neither consulted nor created, so a refused client cannot churn the
// module buckets.
func (b *Budget) Charge(client, module string) (ok bool, which string, retryAfter time.Duration) {
	if b.client == nil && b.module == nil {
		return true, "", 0
	}
	now := b.now()

	b.mu.Lock()
	defer b.mu.Unlock()

	var cl, ml *rate.Limiter
	if b.client != nil {
		cl = b.client.get(client)
		if t := cl.TokensAt(now); t < 1 {
			return false, "client", wait(1-t, b.client.limit.Rate)
		}
	}
	if b.module != nil && module != "" {
		ml = b.module.get(module)
		if t := ml.TokensAt(now); t < 1 {
			return false, "module", wait(1-t, b.module.limit.Rate)
		}
	}
	// Both buckets hold a token at now and b.mu keeps anyone else from
	// taking it, so these cannot fail.
	if cl != nil {
		cl.AllowN(now, 1)
	}
	if ml != nil {
		ml.AllowN(now, 1)
	}
	return true, "", 0
}

// maxWait is the largest whole number of seconds a time.Duration holds.
const maxWait = math.MaxInt64 / int64(time.Second)

// wait returns how long a bucket refilling at perSec tokens per second takes
// to gain deficit tokens, rounded up to whole seconds and at least 1s.
func wait(deficit, perSec float64) time.Duration {
	secs := math.Ceil(deficit / perSec)
	switch {
	case secs < 1:
		secs = 1
	case secs > float64(maxWait):
		secs = float64(maxWait)
	}
	return time.Duration(secs) * time.Second
}

// buckets is a bounded set of token buckets keyed by string, forgetting the
// least recently used one when full. Its methods require Budget.mu.
type buckets struct {
	limit Limit
	max   int
	lru   list.List // of *entry; front is most recently used
	byKey map[string]*list.Element
}

type entry struct {
	key string
	lim *rate.Limiter
}

// newBuckets returns an empty set of buckets for l,
// or nil if l imposes no limit.
func newBuckets(l Limit, maxKeys int) *buckets {
	if l.Rate == 0 {
		return nil
	}
	if l.Burst == 0 {
		l.Burst = defaultBurst(l.Rate)
	}
	return &buckets{limit: l, max: maxKeys, byKey: make(map[string]*list.Element)}
}

// defaultBurst returns max(1, int(r)), without overflowing for huge r.
func defaultBurst(r float64) int {
	switch {
	case r < 1:
		return 1
	case r >= math.MaxInt32:
		return math.MaxInt32
	}
	return int(r)
}

// get returns the bucket for key, creating a full one if needed,
// and marks it most recently used.
func (bs *buckets) get(key string) *rate.Limiter {
	if e, ok := bs.byKey[key]; ok {
		bs.lru.MoveToFront(e)
		return e.Value.(*entry).lim
	}
	if bs.lru.Len() >= bs.max {
		oldest := bs.lru.Back()
		bs.lru.Remove(oldest)
		delete(bs.byKey, oldest.Value.(*entry).key)
	}
	lim := rate.NewLimiter(rate.Limit(bs.limit.Rate), bs.limit.Burst)
	bs.byKey[key] = bs.lru.PushFront(&entry{key: key, lim: lim})
	return lim
}

// len returns the number of remembered buckets.
func (bs *buckets) len() int {
	return bs.lru.Len()
}
