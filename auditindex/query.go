package auditindex

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/modgate/modgate/audit"
)

// Page sizes.
const (
	DefaultLimit = 50
	MaxLimit     = 500
)

// A Query selects events; its fields combine with AND, and a zero field
// selects any value. The zero Query is the newest DefaultLimit events.
type Query struct {
	Module       string // exactly this modgate.module
	ModuleLike   string // modgate.module holds this, case-insensitively
	Version      string // exactly this modgate.version
	IdentityLike string // the identity (inventory.Identity) holds this, case-insensitively
	// Decisions are the modgate.decision values to select (serve,
	// forward, deny, reject); nil selects any, an empty value events
	// without one.
	Decisions []string
	Rule      string   // exactly this modgate.rule
	Kinds     []string // modgate.kind values to select; nil selects any
	// Status selects http.response.status_code: exactly Status, or with
	// StatusClass the hundred it begins (400: 400…499). 1…65534; with
	// StatusClass 100…999.
	Status      int
	StatusClass bool
	Action      string // exactly this event.action
	// HasVerification selects events with a modgate.verification.
	HasVerification bool
	// Since and Until bound @timestamp: Since <= t < Until, each if not
	// zero.
	Since, Until time.Time
	// Before is the cursor of the page: the previous page's Next, or 0
	// for the newest events. Only events before it, in the log's order,
	// are shown. Along one chain (any log that verifies, rotated or
	// restarted) it is a chain.seq: Before 1000 shows the events of seq
	// 999 and down. Where seqs do not increase — a new chain after a
	// damaged log, lines moved — the cursor counts on from the last seq
	// before, so that paging still shows each event once.
	Before uint64
	// Limit is the page size: default DefaultLimit (50), at most
	// MaxLimit (500).
	Limit int
}

func (q *Query) check() error {
	switch {
	case q.Limit < 0:
		return fmt.Errorf("auditindex: Query.Limit is negative (%d)", q.Limit)
	case q.Status < 0 || q.Status >= noStatus:
		return fmt.Errorf("auditindex: Query.Status %d is not a status code", q.Status)
	case q.StatusClass && (q.Status < 100 || q.Status > 999):
		return fmt.Errorf("auditindex: Query.Status %d is not a status class (100…999)", q.Status)
	case !q.Since.IsZero() && !q.Until.IsZero() && !q.Since.Before(q.Until):
		return fmt.Errorf("auditindex: Query.Since (%v) is not before Query.Until (%v)", q.Since, q.Until)
	}
	return nil
}

// A Page is what a Query found.
type Page struct {
	Events  []Entry // newest first
	Matched int     // events that match the query, on all pages
	Next    uint64  // Query.Before of the next, older page; 0 if there is none
	Chain   ChainStatus
}

// An Entry is one event of a Page.
type Entry struct {
	Seq uint64 // chain.seq
	// Event is the line as it reads now, decoded with encoding/json (as
	// much of it as decodes, if it changed).
	Event    audit.Event
	Identity string // inventory.Identity, of the line when indexed
	File     string // the file the line is in, by its current name
	Line     int    // the line's number in it, from 1
	// Changed says the line no longer hashes to what it did when it was
	// indexed: it was edited since (see ChainStatus.Problem).
	Changed bool
	// Verified says the line is in the range of the chain that verified:
	// ChainStatus.VerifiedFrom through VerifiedThrough, and not Changed.
	Verified bool
}

// ChainStatus is what the chain check found: a page can state "the hash
// chain verifies from seq VerifiedFrom through VerifiedThrough" (and
// whether its entries are in that range: Entry.Verified), or "the chain
// breaks at Problem.File:Problem.Line (Problem.Kind): Problem.Detail".
type ChainStatus struct {
	// VerifiedFrom and VerifiedThrough are the seqs of the oldest event
	// held and of the last line whose chain checked out from there,
	// before any break; both 0 if no event held verified.
	VerifiedFrom, VerifiedThrough uint64
	// Problem is the first break found, while indexing or (KindEdited) in
	// a line a query found changed, at the file's current name; nil if
	// none is known.
	Problem *audit.Problem
	// Complete says the index holds everything the files held at the last
	// catch-up (not while the first reading runs, or after a failed one).
	Complete bool
}

// Query returns a page of the events that match q, newest first. It
// catches up with the files first (cheaply, if nothing was written),
// unless the first reading of the files is still running: it then
// answers from what is indexed so far. It reads the lines it returns from
// their files again and checks they did not change.
func (ix *Index) Query(ctx context.Context, q Query) (Page, error) {
	if err := q.check(); err != nil {
		return Page{}, err
	}
	limit := q.Limit
	switch {
	case limit == 0:
		limit = DefaultLimit
	case limit > MaxLimit:
		limit = MaxLimit
	}
	if err := ix.sync(ctx); err != nil {
		return Page{}, err
	}

	ix.mu.RLock()
	if ix.closed {
		ix.mu.RUnlock()
		return Page{}, ErrClosed
	}
	f, ok := ix.compile(&q)
	var res scanned
	if ok {
		res = ix.scan(&f, q.Before, limit)
	}
	ix.mu.RUnlock()

	page := Page{Matched: res.matched, Next: res.next, Events: make([]Entry, 0, len(res.hits))}
	ords := make([]uint64, 0, len(res.hits))
	var changed []*hit
	for i := range res.hits {
		h := &res.hits[i]
		e, err := h.entry()
		if errors.Is(err, os.ErrClosed) {
			continue // its file was dropped meanwhile
		}
		if err != nil {
			return Page{}, err
		}
		if e.Changed {
			changed = append(changed, h)
		}
		page.Events = append(page.Events, e)
		ords = append(ords, h.ord)
	}
	if len(changed) > 0 {
		ix.mu.Lock()
		for _, h := range changed {
			ix.edited(h)
		}
		ix.mu.Unlock()
	}

	ix.mu.RLock()
	var vr verifiedRange
	page.Chain, vr = ix.chainStatus()
	ix.mu.RUnlock()
	for i := range page.Events {
		e := &page.Events[i]
		e.Verified = !e.Changed && vr.has(ords[i])
	}
	return page, nil
}

// sync catches up before a query: not while the first reading runs.
func (ix *Index) sync(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	ix.mu.RLock()
	building, closed := ix.building, ix.closed
	ix.mu.RUnlock()
	switch {
	case closed:
		return ErrClosed
	case building:
		return nil
	}
	if err := ix.take(ctx); err != nil {
		return err
	}
	defer func() { <-ix.catch }()
	err := ix.catchUp(ctx.Done(), false)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, errStopped):
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return ErrClosed
	}
	ix.fl.logErr(ix.log, err) // answer from what is indexed
	return nil
}

// A filter is a compiled Query: integer comparisons on records.
type filter struct {
	all                       bool // no condition
	module, version, identity idSet
	rule                      idSet
	decision, kind, action    codeSet
	verification              bool
	status                    bool
	statusLo, statusHi        uint16
	since, until              bool
	sinceNs, untilNs          int64
}

// An idSet is a set of interned ids.
type idSet struct {
	on   bool
	one  bool   // just id
	id   uint32 //
	bits []uint64
}

func (s *idSet) has(id uint32) bool {
	switch {
	case !s.on:
		return true
	case s.one:
		return id == s.id
	}
	return int(id>>6) < len(s.bits) && s.bits[id>>6]&(1<<(id&63)) != 0
}

// A codeSet is a set of codes.
type codeSet struct {
	on   bool
	bits [4]uint64
}

func (s *codeSet) has(c uint8) bool { return !s.on || s.bits[c>>6]&(1<<(c&63)) != 0 }

// compile compiles q against the interned strings; ok is false if
// nothing can match. ix.mu is held.
func (ix *Index) compile(q *Query) (f filter, ok bool) {
	t := &ix.tabs
	exact := func(s *idSet, tab *strtab, v string) bool {
		if v == "" {
			return true
		}
		id, ok := tab.lookup(v)
		*s = idSet{on: true, one: true, id: id}
		return ok
	}
	like := func(s *idSet, tab *strtab, sub string) bool {
		if sub == "" {
			return true
		}
		sub = strings.ToLower(sub)
		if s.on { // and exactly: the one id must hold sub too
			return strings.Contains(tab.lower[s.id], sub)
		}
		*s = idSet{on: true, bits: make([]uint64, (len(tab.strs)+63)/64)}
		any := false
		for id, l := range tab.lower {
			if strings.Contains(l, sub) {
				s.bits[id>>6] |= 1 << (id & 63)
				any = true
			}
		}
		return any
	}
	codes := func(s *codeSet, tab *codetab, vs []string) bool {
		if vs == nil {
			return true
		}
		s.on = true
		any := false
		for _, v := range vs {
			if c, ok := tab.lookup(v); ok {
				s.bits[c>>6] |= 1 << (c & 63)
				any = true
			}
		}
		return any
	}
	ok = exact(&f.module, t.module, q.Module) &&
		like(&f.module, t.module, q.ModuleLike) &&
		exact(&f.version, t.version, q.Version) &&
		like(&f.identity, t.identity, q.IdentityLike) &&
		exact(&f.rule, t.rule, q.Rule) &&
		codes(&f.decision, t.decision, q.Decisions) &&
		codes(&f.kind, t.kind, q.Kinds)
	if q.Action != "" {
		ok = ok && codes(&f.action, t.action, []string{q.Action})
	}
	f.verification = q.HasVerification
	if q.Status != 0 {
		f.status = true
		f.statusLo, f.statusHi = uint16(q.Status), uint16(q.Status)+1
		if q.StatusClass {
			f.statusLo = uint16(q.Status / 100 * 100)
			f.statusHi = f.statusLo + 100
		}
	}
	if !q.Since.IsZero() {
		f.since, f.sinceNs = true, unixNano(q.Since)
	}
	if !q.Until.IsZero() {
		f.until, f.untilNs = true, unixNano(q.Until)
	}
	f.all = !f.module.on && !f.version.on && !f.identity.on && !f.rule.on &&
		!f.decision.on && !f.kind.on && !f.action.on && !f.verification && !f.status && !f.since && !f.until
	return f, ok
}

func (f *filter) match(r *record) bool {
	return !r.gone &&
		(!f.since || r.ts >= f.sinceNs) && (!f.until || r.ts < f.untilNs) &&
		f.module.has(r.module) && f.version.has(r.version) && f.identity.has(r.identity) && f.rule.has(r.rule) &&
		f.decision.has(r.decision) && f.kind.has(r.kind) && f.action.has(r.action) &&
		(!f.verification || r.verification != 0) &&
		(!f.status || r.status >= f.statusLo && r.status < f.statusHi)
}

// A hit is a record a query shows, with what reading its line takes.
type hit struct {
	rec      record
	ord      uint64
	f        *os.File
	file     string
	identity string
}

// scanned is what a scan found.
type scanned struct {
	hits    []hit // newest first
	matched int
	next    uint64
}

// scan finds the records that match f: all of them, counted, and up to
// limit of those before the cursor. ix.mu is held.
func (ix *Index) scan(f *filter, before uint64, limit int) scanned {
	g := &ix.ring
	var res scanned
	if g.n == 0 {
		return res
	}
	start := g.n // records [0, start) are before the cursor
	if before != 0 {
		start = sort.Search(g.n, func(i int) bool {
			return ix.keys.key(g.first+uint64(i), g.at(i).seq) >= before
		})
	}
	// take adds the record at i (from the oldest) to the page, if there is
	// room, and reports whether there was.
	take := func(i int, r *record) bool {
		if len(res.hits) == limit { // there is more: the next page starts after the last hit
			last := &res.hits[limit-1]
			res.next = ix.keys.key(last.ord, last.rec.seq)
			return false
		}
		res.hits = append(res.hits, ix.hit(r, g.first+uint64(i)))
		return true
	}
	a, b := g.parts()
	if f.all {
		res.matched = g.n - ix.counts.flagged
		for i := start - 1; i >= 0; i-- {
			if r := g.at(i); !r.gone && !take(i, r) {
				break
			}
		}
		return res
	}
	// All records are compared, for Matched; two loops over the ring's
	// halves, newest first.
	full := false
	for k, part := range [][]record{b, a} {
		base := 0
		if k == 0 {
			base = len(a)
		}
		for j := len(part) - 1; j >= 0; j-- {
			r := &part[j]
			if !f.match(r) {
				continue
			}
			res.matched++
			if i := base + j; i < start && !full {
				full = !take(i, r)
			}
		}
	}
	return res
}

// hit returns what a query needs of record r, of ordinal ord. ix.mu is
// held.
func (ix *Index) hit(r *record, ord uint64) hit {
	h := hit{rec: *r, ord: ord, identity: ix.tabs.identity.str(r.identity)}
	if s := ix.segs[r.seg]; s != nil {
		h.f, h.file = s.f, s.name
	}
	return h
}

// entry reads the line of h again: it decodes it and checks it did not
// change. An error wrapping os.ErrClosed says its file was dropped.
func (h *hit) entry() (Entry, error) {
	e := Entry{Seq: h.rec.seq, Identity: h.identity, File: h.file, Line: int(h.rec.line)}
	if h.f == nil {
		return e, os.ErrClosed
	}
	b := make([]byte, h.rec.length())
	n, err := h.f.ReadAt(b, h.rec.offset())
	switch {
	case errors.Is(err, os.ErrClosed):
		return e, err
	case err != nil && !errors.Is(err, io.EOF):
		return e, fmt.Errorf("read audit line %s:%d: %w", h.file, e.Line, err)
	}
	sum := sha256.Sum256(b[:n])
	e.Changed = n < len(b) || binary.BigEndian.Uint64(sum[:8]) != h.rec.sum
	_ = json.Unmarshal(b[:n], &e.Event) // a changed line shows what decodes
	return e, nil
}

// edited notes that the line of h changed since it was indexed: the
// chain breaks there, if not before. ix.mu is held.
func (ix *Index) edited(h *hit) {
	if e := ix.chain.edited; e != nil && e.ord <= h.ord {
		return
	}
	s := ix.segs[h.rec.seg]
	ix.chain.edited = &breakAt{
		p: audit.Problem{
			Location: audit.Location{File: h.file, Line: int(h.rec.line)},
			Kind:     audit.KindEdited,
			Detail:   fmt.Sprintf("seq %d no longer hashes to what it did when it was indexed: the line was edited since", h.rec.seq),
		},
		seg: s,
		ord: h.ord,
	}
}

// verifiedRange is the ordinals of the records whose chain verified.
type verifiedRange struct {
	ok         bool
	from, thru uint64
}

func (v verifiedRange) has(ord uint64) bool { return v.ok && v.from <= ord && ord <= v.thru }

// chainStatus returns the chain's status, and which records verified.
// ix.mu is held.
func (ix *Index) chainStatus() (ChainStatus, verifiedRange) {
	cs := &ix.chain
	st := ChainStatus{Complete: ix.complete && !ix.building}
	p := cs.problem
	if e := cs.edited; e != nil && (p == nil || e.ord < p.ord) {
		p = e
	}
	if p != nil {
		pp := p.p
		if p.seg != nil {
			pp.File = p.seg.name
		}
		st.Problem = &pp
	}
	if !cs.verified {
		return st, verifiedRange{}
	}
	g := &ix.ring
	from, thru := max(cs.fromOrd, g.first), cs.thruOrd
	if e := cs.edited; e != nil && e.ord <= thru {
		if e.ord == 0 {
			return st, verifiedRange{}
		}
		thru = e.ord - 1
	}
	if g.n == 0 || thru < from || thru >= g.next() {
		return st, verifiedRange{}
	}
	st.VerifiedFrom = g.at(int(from - g.first)).seq
	st.VerifiedThrough = g.at(int(thru - g.first)).seq
	return st, verifiedRange{ok: true, from: from, thru: thru}
}
