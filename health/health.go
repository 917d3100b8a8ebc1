// Package health is modgate's one registry of upstream health, shared by
// the standalone data plane (which skips drained upstreams) and the xDS
// server (which publishes them to Envoy as draining, then removes them).
//
// Each upstream has a breaker. Reports come from active probes and from
// the data plane's own failed fetches (passive). FailThreshold consecutive
// failures (default 3) mark a Healthy upstream Draining; RecoverThreshold
// consecutive successes (default 2) make a Draining or Removed one Healthy
// again; an upstream Draining for DrainPeriod (default 11 minutes, longer
// than the longest route timeout) becomes Removed. Every change of state is
// announced on Changes and to Config.OnChange.
//
// A Registry is safe for concurrent use.
package health

import (
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/modgate/modgate/upstream"
)

// State is an upstream's health.
type State uint8

// The states.
const (
	Healthy State = iota
	Draining
	Removed
)

func (s State) String() string {
	switch s {
	case Healthy:
		return "healthy"
	case Draining:
		return "draining"
	case Removed:
		return "removed"
	}
	return fmt.Sprintf("State(%d)", s)
}

// Config configures a Registry. The zero value works.
type Config struct {
	FailThreshold    int           // default 3
	RecoverThreshold int           // default 2
	DrainPeriod      time.Duration // default 11m
	Now              func() time.Time
	// OnChange is called, outside the Registry's lock, after each change.
	OnChange func(upstream string, from, to State)
	Logger   *slog.Logger
}

// A Registry holds the health of a set of upstreams.
type Registry struct {
	cfg     Config
	changes chan struct{}

	mu      sync.Mutex
	set     upstream.Set
	entries map[string]*entry // by upstream name
}

type entry struct {
	state     State
	fails     int // consecutive
	successes int // consecutive
	since     time.Time
}

// New returns a Registry for set, every upstream Healthy.
func New(set *upstream.Set, cfg Config) *Registry {
	if cfg.FailThreshold <= 0 {
		cfg.FailThreshold = 3
	}
	if cfg.RecoverThreshold <= 0 {
		cfg.RecoverThreshold = 2
	}
	if cfg.DrainPeriod <= 0 {
		cfg.DrainPeriod = 11 * time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	r := &Registry{cfg: cfg, changes: make(chan struct{}, 1), entries: map[string]*entry{}}
	r.Configure(set)
	return r
}

// Configure replaces the set of upstreams (a reloaded configuration).
// Upstreams that stay keep their state; new ones start Healthy.
func (r *Registry) Configure(set *upstream.Set) {
	r.mu.Lock()
	r.set = upstream.Set{Public: slices.Clone(set.Public), Private: slices.Clone(set.Private)}
	entries := map[string]*entry{}
	for _, u := range r.all() {
		if e := r.entries[u.Name]; e != nil {
			entries[u.Name] = e
		} else {
			entries[u.Name] = &entry{since: r.cfg.Now()}
		}
	}
	r.entries = entries
	r.mu.Unlock()
	r.notify()
}

// all returns every upstream; r.mu must be held.
func (r *Registry) all() []*upstream.Upstream {
	return append(slices.Clone(r.set.Public), r.set.Private...)
}

// Upstreams returns the configured upstreams, whatever their state.
func (r *Registry) Upstreams() upstream.Set {
	r.mu.Lock()
	defer r.mu.Unlock()
	return upstream.Set{Public: slices.Clone(r.set.Public), Private: slices.Clone(r.set.Private)}
}

// Report records one probe or fetch of the named upstream.
func (r *Registry) Report(name string, ok bool) {
	r.mu.Lock()
	e := r.entries[name]
	if e == nil {
		r.mu.Unlock()
		return
	}
	from := e.state
	if ok {
		e.fails = 0
		e.successes++
		if e.state != Healthy && e.successes >= r.cfg.RecoverThreshold {
			e.state, e.since = Healthy, r.cfg.Now()
		}
	} else {
		e.successes = 0
		e.fails++
		if e.state == Healthy && e.fails >= r.cfg.FailThreshold {
			e.state, e.since = Draining, r.cfg.Now()
		}
	}
	to := e.state
	r.mu.Unlock()
	if from != to {
		r.changed(name, from, to)
	}
}

// Tick removes upstreams that have been Draining for the drain period.
// Call it periodically (the prober does).
func (r *Registry) Tick() {
	type change struct {
		name     string
		from, to State
	}
	var cs []change
	r.mu.Lock()
	now := r.cfg.Now()
	for name, e := range r.entries {
		if e.state == Draining && now.Sub(e.since) >= r.cfg.DrainPeriod {
			e.state, e.since = Removed, now
			cs = append(cs, change{name, Draining, Removed})
		}
	}
	r.mu.Unlock()
	for _, c := range cs {
		r.changed(c.name, c.from, c.to)
	}
}

func (r *Registry) changed(name string, from, to State) {
	r.cfg.Logger.Warn("upstream health changed", "upstream", name, "from", from, "to", to)
	if r.cfg.OnChange != nil {
		r.cfg.OnChange(name, from, to)
	}
	r.notify()
}

func (r *Registry) notify() {
	select {
	case r.changes <- struct{}{}:
	default: // a change is already pending
	}
}

// Changes delivers a value after changes of state or configuration
// (several changes may share one value).
func (r *Registry) Changes() <-chan struct{} { return r.changes }

// State returns the named upstream's state (Removed for an unknown one).
func (r *Registry) State(name string) State {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e := r.entries[name]; e != nil {
		return e.state
	}
	return Removed
}

// A Status is one upstream's health, for people: its state and since when.
type Status struct {
	Name    string
	URL     string
	Private bool
	State   State
	// Since is when the upstream entered State (or was configured).
	Since time.Time
	// Fails is the count of consecutive failed reports.
	Fails int
}

// Status returns every configured upstream's health, public ones first,
// each set in its configured order.
func (r *Registry) Status() []Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Status, 0, len(r.set.Public)+len(r.set.Private))
	for _, u := range r.all() {
		e := r.entries[u.Name]
		out = append(out, Status{Name: u.Name, URL: u.URL.Redacted(), Private: u.Private, State: e.state, Since: e.since, Fails: e.fails})
	}
	return out
}

// Configured reports whether any private (or public) upstream is
// configured, whatever its health.
func (r *Registry) Configured(private bool) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.set.Configured(private)
}

// Candidates returns the Healthy public (or private) upstreams, in
// configured order: what the standalone data plane may fetch from.
func (r *Registry) Candidates(private bool) []*upstream.Upstream {
	r.mu.Lock()
	defer r.mu.Unlock()
	list := r.set.Public
	if private {
		list = r.set.Private
	}
	var out []*upstream.Upstream
	for _, u := range list {
		if r.entries[u.Name].state == Healthy {
			out = append(out, u)
		}
	}
	return out
}
