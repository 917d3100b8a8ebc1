// Package cooldown refuses module versions that have not been public for
// a minimum age (policy.cooldown.min_age), and proves the age of those it
// serves.
//
// A version's age is never taken from its .info Time: that is a commit
// date, chosen by whoever makes the commit, and backdating it is the
// obvious attack. The age of a public version is proven from the checksum
// database instead, by this argument:
//
//  1. The database is an append-only log of records, signed by its key. A
//     lookup of M@V answers N, the number of the record that holds M@V's
//     go.sum lines, and the Checker proves with tlog, from the tiles of a
//     signed tree head, that the log holds that very record under N.
//  2. Whenever modgate verifies a signed tree head of S records (ObserveTree,
//     and every tree head the Checker's own lookups bring), the Checker
//     records an anchor (T, S, tree hash) in a synced file, T being
//     modgate's own clock: every record numbered below S existed at T.
//  3. A version whose record number N is below the S of an anchor with
//     T ≤ now − min_age was in the log at T, so it has been public for at
//     least min_age: the Checker allows it, once it has proven, again with
//     tlog, that the anchor's tree is a prefix of the database's current
//     tree (the log has not forked since).
//  4. So no one can make a version look older than it is (the index
//     aside, below): the anchor commits to the log's content by hash, so
//     N < S proves the record was in the log at T, and a database,
//     upstream or attacker that answers another N, another record or
//     another log fails a proof, which refuses.
//  5. Anything else is refused, failing closed: a version proven too new
//     (with when it becomes available: min_age after the first anchor that
//     holds its record), or one whose age cannot be proven (database
//     unreachable, no anchor old enough).
//
// On a fresh install no anchor is min_age old. With an index_url, the
// Checker then dates one with the module index (see learn): the index says
// when it first saw some versions from just before now − min_age, the
// database proves their records, and the smallest record number gives an
// anchor (the index's time, that number + 1). Unlike the database, the
// index is trusted here: an index that dates a version earlier than its
// record entered the log makes every version up to that record look old,
// the unsafe direction. That trust is narrowed: it serves only while the
// Checker has no anchor of its own that is min_age old (the first min_age
// after install), its anchors are never preferred to the Checker's own
// once there is one, it takes the smallest
// of up to eight records (so one version recorded late, perhaps by the
// Checker's own lookup, cannot stretch it), it ignores records beyond the
// tree head it fetched before asking, and the index must be https. Use the
// index of the database's own operator (index.golang.org for
// sum.golang.org), or none: every public version is then refused for the
// first min_age after install.
//
// A private module has no public record. With Options.FirstSeen, its age
// counts from when modgate first saw the version: the earlier of what
// FirstSeen says and the Checker's own synced record of the first time it
// was asked about it. Without FirstSeen, private modules are exempt.
//
// The Checker trusts modgate's clock and its own state directory; it never
// reads a version's .info. A Checker is safe for concurrent use.
package cooldown

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"golang.org/x/mod/module"
	"golang.org/x/mod/semver"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/modgate/modgate/internal/sumanswer"
)

// Rule is Verdict.Rule: the cooldown's name in denials and audit events.
const Rule = "cooldown"

// maxFilterChecks bounds the versions Filter checks for one list.
const maxFilterChecks = 16

// Options configures a Checker.
type Options struct {
	Config
	// Dir holds the Checker's durable state: the anchors file, and the
	// record of private versions first seen. Required with MinAge.
	Dir string
	// Fetch reads a path of the checksum database ("/lookup/M@V",
	// "/latest", "/tile/…"), as verify.Config.Fetch does, with a limit on
	// the body. Required with MinAge.
	Fetch func(ctx context.Context, path string) ([]byte, error)
	// VerifierKey is the checksum database's note verifier key
	// ("name+hash+keydata"; verify.KnownKeys has sum.golang.org's).
	// Required with MinAge.
	VerifierKey string
	// Index reads a module index: at most limit entries from since on.
	// Default: GET IndexURL?since=…&limit=… with HTTPClient, or none
	// without an IndexURL.
	Index func(ctx context.Context, since time.Time, limit int) ([]IndexEntry, error)
	// HTTPClient asks the index. Default http.DefaultClient.
	HTTPClient *http.Client
	// FirstSeen says when modgate first recorded a private module version
	// by other means than the Checker's own record, false if it did not.
	// It must be fast and safe for concurrent use. Default nil: private
	// module versions are exempt.
	FirstSeen func(path, version string) (time.Time, bool)
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Logger receives operational logs. Default slog.Default().
	Logger *slog.Logger
}

// A Verdict is the cooldown's answer for one module version.
type Verdict struct {
	Allow bool
	// Reason, when !Allow, is what the developer sees in the 403 body:
	// two lines of plain text without a final newline, that say why and
	// when the version becomes available, or that its age cannot be
	// proven.
	Reason string
	// AvailableAfter, when !Allow, is the earliest time the version can be
	// proven old enough, rounded up to the minute; zero when its age
	// cannot be proven at all. modgate must keep observing the database
	// for the time to hold: a version no anchor covers yet becomes
	// available min_age after the first one that does.
	AvailableAfter time.Time
	// Rule is Rule.
	Rule string
	// Evidence says, for the audit log, what decided: the record and the
	// anchor, "exempt", a private version's first sight, or the error
	// that left the age unproven.
	Evidence string
}

// A Checker decides whether a module version is old enough to serve.
// Create it with New. A nil *Checker allows everything.
type Checker struct {
	minAge    time.Duration
	spacing   time.Duration // between anchors recorded, unless one is needed
	exempt    string        // patterns, as module.MatchPrefixPatterns wants
	now       func() time.Time
	log       *slog.Logger
	firstSeen func(path, version string) (time.Time, bool) // nil: private exempt
	sum       *sumLog                                      // nil when off
	index     func(ctx context.Context, since time.Time, limit int) ([]IndexEntry, error)
	learning  chan struct{} // a token, held while learning an anchor from the index

	mu          sync.Mutex
	anchors     []anchor // sorted by time
	anchorsFile *journal
	lastOwn     anchor             // the newest anchor of sourceTree
	proven      map[tlog.Tree]bool // anchors proven on the database's timeline
	bad         map[tlog.Tree]bool // anchors proven off it: never used
	lastLearn   time.Time          // the last attempt to learn from the index
	learnErr    error              // and its error
	seen        map[module.Version]time.Time
	seenFile    *journal
}

// New checks opts and returns a Checker, reading its state from opts.Dir.
// With MinAge 0 it returns a Checker that allows everything.
func New(ctx context.Context, opts Options) (*Checker, error) {
	if err := opts.Config.Check(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c := &Checker{
		minAge:    opts.MinAge,
		now:       opts.Now,
		log:       opts.Logger,
		firstSeen: opts.FirstSeen,
		learning:  make(chan struct{}, 1),
		proven:    make(map[tlog.Tree]bool),
		bad:       make(map[tlog.Tree]bool),
		seen:      make(map[module.Version]time.Time),
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.log == nil {
		c.log = slog.Default()
	}
	if c.minAge == 0 {
		return c, nil
	}
	c.exempt, _ = exemptPatterns(opts.Exempt) // checked above
	c.spacing = max(c.minAge/256, time.Minute)
	if opts.Dir == "" {
		return nil, errors.New("cooldown: Dir is required with policy.cooldown.min_age")
	}
	if opts.Fetch == nil || opts.VerifierKey == "" {
		return nil, errors.New("cooldown: Fetch and VerifierKey are required with policy.cooldown.min_age: ages are proven from the checksum database")
	}
	var err error
	if c.sum, err = newSumLog(opts.Fetch, opts.VerifierKey, c.log); err != nil {
		return nil, fmt.Errorf("cooldown: %w", err)
	}
	switch {
	case opts.Index != nil:
		c.index = opts.Index
	case opts.IndexURL != "":
		u, _ := parseIndexURL(opts.IndexURL) // checked above
		hc := opts.HTTPClient
		if hc == nil {
			hc = http.DefaultClient
		}
		c.index = (&httpIndex{url: u, client: hc}).entries
	}
	if err := os.MkdirAll(opts.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("cooldown: %w", err)
	}
	if err := c.openAnchors(filepath.Join(opts.Dir, "anchors")); err != nil {
		return nil, fmt.Errorf("cooldown: %w", err)
	}
	if c.firstSeen != nil {
		if err := c.openSeen(filepath.Join(opts.Dir, "private")); err != nil {
			c.anchorsFile.close()
			return nil, fmt.Errorf("cooldown: %w", err)
		}
	}
	return c, nil
}

// openAnchors reads the anchors file. A line that does not parse is
// dropped with a warning: an anchor only ever makes versions servable, so
// losing one fails closed.
func (c *Checker) openAnchors(path string) error {
	j, lines, err := openJournal(path, maxAnchorsBytes)
	if err != nil {
		return err
	}
	for i, line := range lines {
		a, err := parseAnchor(line)
		if err != nil {
			c.log.Warn("cooldown: ignoring a line of the anchors file", "file", path, "line", i+1, "err", err)
			continue
		}
		c.anchors = insertAnchor(c.anchors, a)
		if a.Source == sourceTree && !a.Time.Before(c.lastOwn.Time) {
			c.lastOwn = a
		}
	}
	c.anchorsFile = j
	if len(c.anchors) > maxAnchors {
		c.anchors = thin(c.anchors, maxAnchors)
		if err := c.rewriteAnchorsLocked(); err != nil {
			c.log.Warn("cooldown: thinning the anchors file", "err", err)
		}
	}
	return nil
}

// openSeen reads the record of private versions first seen.
func (c *Checker) openSeen(path string) error {
	j, lines, err := openJournal(path, maxSeenBytes)
	if err != nil {
		return err
	}
	for i, line := range lines {
		mv, t, err := parseSeen(line)
		if err != nil {
			// Unlike an anchor, a lost line makes a version look new
			// again, which also fails closed.
			c.log.Warn("cooldown: ignoring a line of the private record", "file", path, "line", i+1, "err", err)
			continue
		}
		if old, ok := c.seen[mv]; !ok || t.Before(old) {
			c.seen[mv] = t
		}
	}
	c.seenFile = j
	return nil
}

// Close closes the Checker's files. The Checker must not be used after.
func (c *Checker) Close() error {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return errors.Join(c.anchorsFile.close(), c.seenFile.close())
}

// ObserveTree records signedNote, a signed tree head of the checksum
// database that modgate verified now, as an anchor, if it adds to the
// anchors (see the package documentation). A note the Checker's verifier
// key does not verify is an error and is not recorded. ObserveTree does no
// network I/O: whether the tree is on the database's timeline is proven
// when the anchor is used.
func (c *Checker) ObserveTree(ctx context.Context, signedNote []byte) error {
	if c == nil || c.sum == nil {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	tree, err := sumanswer.Tree(signedNote, c.sum.verifiers)
	if err != nil {
		return fmt.Errorf("cooldown: observing a tree head: %w", err)
	}
	return c.observe(tree, c.now(), -1)
}

// observe records tree, verified at now, as an anchor if it holds more
// records than the newest anchor of the Checker's own and, either that
// anchor is spacing old, or tree holds record need (-1: none) which that
// anchor does not. (A needed anchor costs a synced append per lookup of a
// version newer than the newest anchor: cheap beside the lookup and the
// proof that come with it, and it makes AvailableAfter exact.)
func (c *Checker) observe(tree tlog.Tree, now time.Time, need int64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	last := c.lastOwn
	if tree.N <= last.Tree.N {
		return nil
	}
	if last.Tree.N > 0 && now.Sub(last.Time) < c.spacing && need < last.Tree.N {
		return nil
	}
	a := anchor{Time: now, Tree: tree, Source: sourceTree}
	if err := c.addAnchorLocked(a); err != nil {
		c.log.Warn("cooldown: recording an anchor", "err", err)
		return fmt.Errorf("cooldown: recording an anchor: %w", err)
	}
	return nil
}

// addAnchorLocked adds a to the anchors, in memory and in the file,
// thinning them when there are too many. An anchor the file failed to
// take is still used until the Checker stops: it is true all the same.
func (c *Checker) addAnchorLocked(a anchor) error {
	c.anchors = insertAnchor(c.anchors, a)
	if a.Source == sourceTree && !a.Time.Before(c.lastOwn.Time) {
		c.lastOwn = a
	}
	if len(c.anchors) > maxAnchors {
		c.anchors = thin(c.anchors, maxAnchors)
		kept := make(map[tlog.Tree]bool, len(c.anchors))
		for _, a := range c.anchors {
			kept[a.Tree] = true
		}
		for _, m := range []map[tlog.Tree]bool{c.proven, c.bad} {
			maps.DeleteFunc(m, func(t tlog.Tree, _ bool) bool { return !kept[t] })
		}
		return c.rewriteAnchorsLocked()
	}
	return c.anchorsFile.append(formatAnchor(a))
}

func (c *Checker) rewriteAnchorsLocked() error {
	lines := make([][]byte, len(c.anchors))
	for i, a := range c.anchors {
		lines[i] = formatAnchor(a)
	}
	return c.anchorsFile.rewrite(lines)
}

// usable returns the anchor to judge by at cutoff: of the anchors not
// proven bad with a time at or before cutoff, the one with the most
// records among the Checker's own, else among those of the index.
func (c *Checker) usable(cutoff time.Time) (anchor, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, src := range []string{sourceTree, sourceIndex} {
		var best anchor
		for _, a := range c.anchors {
			if a.Time.After(cutoff) {
				break
			}
			if a.Source == src && a.Tree.N > best.Tree.N && !c.bad[a.Tree] {
				best = a
			}
		}
		if best.Tree.N > 0 {
			return best, true
		}
	}
	return anchor{}, false
}

// AnchorAge returns how old the anchor that Check judges by now is, 0 if
// there is none: at least MinAge when there is one, and growing beyond it
// when modgate stops observing the database. It is for a metric.
func (c *Checker) AnchorAge() time.Duration {
	if c == nil || c.sum == nil {
		return 0
	}
	now := c.now()
	a, ok := c.usable(now.Add(-c.minAge))
	if !ok {
		return 0
	}
	return now.Sub(a.Time)
}

// Check decides whether the module version path@version, a canonical
// version of a public module or, if private, of a private one, has been
// public (or, if private, known to modgate) for MinAge. It is for the
// requests that fetch a version: .zip, and .info of a canonical version.
// A public version not yet known takes a lookup in the checksum database
// and tlog proofs from its tiles; known ones are decided from memory.
func (c *Checker) Check(ctx context.Context, path, version string, private bool) Verdict {
	return c.check(ctx, path, version, private, true)
}

// Preview decides as Check would, for people asking (the console's "would
// this be allowed?"), without recording a private version as seen: one it
// has not seen is judged as if first seen now, and its cooldown still
// starts at its first real request.
func (c *Checker) Preview(ctx context.Context, path, version string, private bool) Verdict {
	return c.check(ctx, path, version, private, false)
}

func (c *Checker) check(ctx context.Context, path, version string, private, record bool) Verdict {
	if c == nil || c.sum == nil {
		return Verdict{Allow: true, Rule: Rule, Evidence: "no cooldown"}
	}
	what := path + " " + version
	if err := module.Check(path, version); err != nil {
		return c.unproven(what, "it is not a module version", err)
	}
	if module.CanonicalVersion(version) != version {
		return c.unproven(what, "it is not a canonical version", errors.New("not canonical"))
	}
	if c.exempt != "" && module.MatchPrefixPatterns(c.exempt, path) {
		return Verdict{Allow: true, Rule: Rule, Evidence: "exempt"}
	}
	now := c.now()
	if private {
		return c.checkPrivate(module.Version{Path: path, Version: version}, what, now, record)
	}
	return c.checkPublic(ctx, path, version, what, now)
}

func (c *Checker) checkPrivate(mv module.Version, what string, now time.Time, record bool) Verdict {
	if c.firstSeen == nil {
		return Verdict{Allow: true, Rule: Rule, Evidence: "private module: exempt"}
	}
	t, err := c.privateFirstSeen(mv, now, record)
	if err != nil {
		return c.unproven(what, "modgate could not record when it first saw this private version", err)
	}
	evidence := "private version first seen by modgate at " + t.UTC().Format(time.RFC3339)
	if now.Sub(t) >= c.minAge {
		return Verdict{Allow: true, Rule: Rule, Evidence: evidence}
	}
	after := ceilMinute(t.Add(c.minAge))
	return Verdict{
		Rule:           Rule,
		AvailableAfter: after,
		Evidence:       evidence,
		Reason: fmt.Sprintf("%s was first seen by modgate within the last %s; available after %s\n%s",
			what, fmtDuration(c.minAge), fmtTime(after), c.policyLine()),
	}
}

func (c *Checker) checkPublic(ctx context.Context, path, version, what string, now time.Time) Verdict {
	rec, tree, err := c.sum.lookup(ctx, path, version)
	if err != nil {
		return c.unproven(what, fmt.Sprintf("checksum database %s did not prove its record", c.sum.name), err)
	}
	if tree.N > 0 {
		c.observe(tree, now, rec.N) // failures are logged; the anchor is kept in memory
	}
	cutoff := now.Add(-c.minAge)
	for range 3 { // a fresh anchor after one proven bad
		a, ok := c.usable(cutoff)
		var learnErr error
		if c.index != nil && (!ok || (a.Source == sourceIndex && rec.N >= a.Tree.N && cutoff.Sub(a.Time) > c.spacing)) {
			learnErr = c.tryLearn(ctx, cutoff, now)
			a, ok = c.usable(cutoff)
		}
		if !ok {
			summary := fmt.Sprintf("modgate has no record of checksum database %s older than %s", c.sum.name, fmtDuration(c.minAge))
			if c.index == nil {
				summary += " (it has not been observing it that long, and no module index is configured)"
			} else {
				summary += ", and the module index did not date one"
			}
			if learnErr == nil {
				learnErr = errors.New("no anchor old enough")
			}
			return c.unproven(what, summary, learnErr)
		}
		if rec.N >= a.Tree.N {
			return c.tooNew(what, rec, a, now)
		}
		err := c.prove(ctx, a)
		if errors.Is(err, errOffTimeline) {
			continue
		}
		if err != nil {
			return c.unproven(what, fmt.Sprintf("checksum database %s did not prove modgate's record of it", c.sum.name), err)
		}
		return Verdict{Allow: true, Rule: Rule, Evidence: fmt.Sprintf("record %d of %s; the log held %d records at %s (%s)",
			rec.N, c.sum.name, a.Tree.N, a.Time.UTC().Format(time.RFC3339), a.Source)}
	}
	return c.unproven(what, fmt.Sprintf("checksum database %s disagrees with modgate's records of it", c.sum.name), errOffTimeline)
}

// errOffTimeline is an anchor proven not to be a prefix of the database's
// log: the database forked, or the anchors file was tampered with.
var errOffTimeline = errors.New("anchor is not on the checksum database's log")

// prove proves that a's tree is a prefix of the database's log, once per
// anchor. An anchor proven off it is marked bad and errOffTimeline
// returned.
func (c *Checker) prove(ctx context.Context, a anchor) error {
	c.mu.Lock()
	ok := c.proven[a.Tree]
	c.mu.Unlock()
	if ok {
		return nil
	}
	ok, err := c.sum.onTimeline(ctx, a.Tree)
	if err != nil {
		return err
	}
	c.mu.Lock()
	if ok {
		c.proven[a.Tree] = true
	} else {
		c.bad[a.Tree] = true
	}
	c.mu.Unlock()
	if !ok {
		c.log.Error("SECURITY: an anchor of the cooldown is not on the checksum database's log: the database forked, or the anchors file was changed; the anchor is ignored",
			"sumdb", c.sum.name, "time", a.Time, "records", a.Tree.N, "hash", a.Tree.Hash.String(), "source", a.Source)
		return errOffTimeline
	}
	return nil
}

// tryLearn learns an anchor from the index, unless another call did or
// tried within indexRetry: then it returns that call's error.
func (c *Checker) tryLearn(ctx context.Context, cutoff, now time.Time) error {
	select {
	case c.learning <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-c.learning }()
	c.mu.Lock()
	if !c.lastLearn.IsZero() && now.Sub(c.lastLearn) < indexRetry && !now.Before(c.lastLearn) {
		err := c.learnErr
		c.mu.Unlock()
		return err
	}
	c.lastLearn = now
	c.mu.Unlock()
	err := c.learn(ctx, cutoff)
	if err != nil {
		c.log.Warn("cooldown: no anchor from the module index", "err", err)
	}
	c.mu.Lock()
	c.learnErr = err
	c.mu.Unlock()
	return err
}

// tooNew is the verdict on a version whose record, rec, is not below
// anchor a's size.
func (c *Checker) tooNew(what string, rec record, a anchor, now time.Time) Verdict {
	after := c.availableAfter(rec.N, now)
	since := "within the last " + fmtDuration(c.minAge)
	if now.Add(-c.minAge).Sub(a.Time) > 2*c.spacing {
		// The anchor judged by is older than min_age by more than the
		// anchors' spacing: say only what it proves.
		since = "after " + fmtTime(a.Time)
	}
	return Verdict{
		Rule:           Rule,
		AvailableAfter: after,
		Evidence:       fmt.Sprintf("record %d of %s; the log held %d records at %s (%s)", rec.N, c.sum.name, a.Tree.N, a.Time.UTC().Format(time.RFC3339), a.Source),
		Reason:         fmt.Sprintf("%s was published %s; available after %s\n%s", what, since, fmtTime(after), c.policyLine()),
	}
}

// availableAfter is when a record numbered n can first be proven min_age
// old: min_age after the first anchor of the Checker's own that holds it,
// or, if none does (its tree head came with no lookup, or recording it
// failed), after now, the earliest the next anchor can be.
func (c *Checker) availableAfter(n int64, now time.Time) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := now
	for _, a := range c.anchors {
		if a.Source == sourceTree && a.Tree.N > n && !c.bad[a.Tree] {
			t = a.Time
			break
		}
	}
	return ceilMinute(t.Add(c.minAge))
}

// unproven is the verdict on a version whose age cannot be proven: summary
// is for the developer, err for the audit log.
func (c *Checker) unproven(what, summary string, err error) Verdict {
	return Verdict{
		Rule:     Rule,
		Evidence: err.Error(),
		Reason: fmt.Sprintf("%s: its age cannot be proven: %s\nmodgate serves a module version only once it can prove it has been public for %s (policy.cooldown); try again later or ask the gateway's administrators",
			what, summary, fmtDuration(c.minAge)),
	}
}

func (c *Checker) policyLine() string {
	return fmt.Sprintf("modgate serves a module version only once it has been public for %s (policy.cooldown); ask the gateway's administrators if you need it sooner", fmtDuration(c.minAge))
}

// Filter returns, in a new slice and in their order, the versions of
// path's list without those Check proves too new. It checks from the
// highest version down, as semver orders them, and stops after the first
// it allows that is not a prerelease, and after maxFilterChecks: the go
// command resolves latest and upgrades from the top of the list. Versions
// it does not check, or whose age cannot be proven, stay: Check refuses
// their .zip with a message that says why, where a version missing from a
// list only gets "no matching versions".
func (c *Checker) Filter(ctx context.Context, path string, versions []string, private bool) []string {
	if c == nil || c.sum == nil {
		return slices.Clone(versions)
	}
	var order []string
	for _, v := range versions {
		if semver.IsValid(v) {
			order = append(order, v)
		}
	}
	slices.SortFunc(order, func(a, b string) int { return semver.Compare(b, a) })
	drop := make(map[string]bool)
	for i, v := range order {
		if i == maxFilterChecks {
			break
		}
		vd := c.Check(ctx, path, v, private)
		if !vd.Allow && !vd.AvailableAfter.IsZero() {
			drop[v] = true
			continue
		}
		if vd.Allow && semver.Prerelease(v) == "" {
			break
		}
	}
	out := make([]string, 0, len(versions))
	for _, v := range versions {
		if !drop[v] {
			out = append(out, v)
		}
	}
	return out
}

// ceilMinute rounds t up to the minute, in UTC.
func ceilMinute(t time.Time) time.Time {
	t = t.UTC()
	if r := t.Truncate(time.Minute); r.Before(t) {
		return r.Add(time.Minute)
	}
	return t
}

// fmtTime formats a time of a Reason: "2026-12-10T09:00Z".
func fmtTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04Z") }

// fmtDuration formats a duration of a Reason: "72h", "90m", "1m30s".
func fmtDuration(d time.Duration) string {
	switch {
	case d%time.Hour == 0:
		return fmt.Sprintf("%dh", d/time.Hour)
	case d%time.Minute == 0:
		return fmt.Sprintf("%dm", d/time.Minute)
	}
	return d.String()
}
