package auditindex

import (
	"math"
	"sort"
	"strings"
	"time"
)

// A record is what the index keeps of one event: 64 bytes, strings
// interned. The line itself stays in its file, at pos.
type record struct {
	seq uint64 // chain.seq
	ts  int64  // @timestamp, Unix nanoseconds, clamped to int64
	sum uint64 // the first 8 bytes of the line's SHA-256 when indexed
	pos uint64 // offset<<lenBits | length, of the line in its file
	// Interned strings (strtab ids).
	module, version, identity, rule uint32
	seg                             uint32 // the file's segment id
	line                            uint32 // in the file, from 1; 0 past math.MaxUint32
	status                          uint16 // http.response.status_code; noStatus if out of range
	// Small codes (codetab ids).
	decision, kind, action, verification uint8
	gone                                 bool // its file was deleted: no longer counted or shown
}

// lenBits is how many bits of record.pos hold the line's length: enough
// for inventory.MaxLine. The rest, 43 bits, hold its offset: files up to
// 8 TiB.
const (
	lenBits   = 21
	maxOffset = 1<<(64-lenBits) - 1
)

func (r *record) offset() int64 { return int64(r.pos >> lenBits) }
func (r *record) length() int   { return int(r.pos & (1<<lenBits - 1)) }

// noStatus is record.status for an event without a status code in
// 0…65534 (none is 0, as the audit log writes it).
const noStatus = math.MaxUint16

// unixNano is t in Unix nanoseconds, clamped to what an int64 holds.
func unixNano(t time.Time) int64 {
	switch {
	case t.Before(minTime):
		return math.MinInt64
	case t.After(maxTime):
		return math.MaxInt64
	}
	return t.UnixNano()
}

var (
	minTime = time.Unix(0, math.MinInt64)
	maxTime = time.Unix(0, math.MaxInt64)
)

// Bounds of interned strings: a longer value is interned as tooLong and
// no filter on its field selects it. Identities are cut to 256 bytes by
// inventory.Identity already.
const (
	maxModule = 1024
	maxString = 256 // version, identity, rule
	maxCode   = 64  // decision, kind, action, verification
	// maxCodes is how many distinct values a code field holds; values
	// past it are otherCode.
	maxCodes = 254
)

// Reserved ids.
const (
	tooLong   = math.MaxUint32 // a string past its bound
	otherCode = math.MaxUint8  // a code past its bound, or past maxCodes values
)

// A strtab interns the strings of one field: id 0 is "", others count
// from 1. It does not shrink: compact rebuilds it from the records held.
type strtab struct {
	ids   map[string]uint32
	strs  []string
	lower []string // strs in lower case, for substring filters
	max   int      // longest string interned; longer ones are tooLong
}

func newStrtab(max int) *strtab {
	return &strtab{ids: map[string]uint32{"": 0}, strs: []string{""}, lower: []string{""}, max: max}
}

// id interns s.
func (t *strtab) id(s string) uint32 {
	if len(s) > t.max {
		return tooLong
	}
	if id, ok := t.ids[s]; ok {
		return id
	}
	id := uint32(len(t.strs))
	t.ids[s] = id
	t.strs = append(t.strs, s)
	t.lower = append(t.lower, strings.ToLower(s)) // s itself if it is
	return id
}

// lookup returns the id of s, if it is interned.
func (t *strtab) lookup(s string) (uint32, bool) {
	id, ok := t.ids[s]
	return id, ok
}

// str returns the string of id ("" for tooLong).
func (t *strtab) str(id uint32) string {
	if int64(id) >= int64(len(t.strs)) {
		return ""
	}
	return t.strs[id]
}

// A codetab interns the few values of a code field: 0 is "".
type codetab struct {
	ids  map[string]uint8
	strs []string
}

func newCodetab() *codetab {
	return &codetab{ids: map[string]uint8{"": 0}, strs: []string{""}}
}

func (t *codetab) id(s string) uint8 {
	if id, ok := t.ids[s]; ok {
		return id
	}
	if len(s) > maxCode || len(t.strs) > maxCodes {
		return otherCode
	}
	id := uint8(len(t.strs))
	t.ids[s] = id
	t.strs = append(t.strs, s)
	return id
}

func (t *codetab) lookup(s string) (uint8, bool) {
	id, ok := t.ids[s]
	return id, ok
}

// tables are the interned strings of the records.
type tables struct {
	module, version, identity, rule      *strtab
	decision, kind, action, verification *codetab
}

func newTables() tables {
	return tables{
		module: newStrtab(maxModule), version: newStrtab(maxString),
		identity: newStrtab(maxString), rule: newStrtab(maxString),
		decision: newCodetab(), kind: newCodetab(), action: newCodetab(), verification: newCodetab(),
	}
}

// remap re-interns the strings of r from old into t.
func (t *tables) remap(old *tables, r *record) {
	re := func(nt, ot *strtab, id uint32) uint32 {
		if id == tooLong {
			return id
		}
		return nt.id(ot.str(id))
	}
	rc := func(nt, ot *codetab, id uint8) uint8 {
		if int(id) >= len(ot.strs) {
			return id
		}
		return nt.id(ot.strs[id])
	}
	r.module = re(t.module, old.module, r.module)
	r.version = re(t.version, old.version, r.version)
	r.identity = re(t.identity, old.identity, r.identity)
	r.rule = re(t.rule, old.rule, r.rule)
	r.decision = rc(t.decision, old.decision, r.decision)
	r.kind = rc(t.kind, old.kind, r.kind)
	r.action = rc(t.action, old.action, r.action)
	r.verification = rc(t.verification, old.verification, r.verification)
}

// A ring holds the records in file order, oldest first, at most max of
// them; it grows as it fills. Each record has an ordinal: how many
// records were pushed before it.
type ring struct {
	recs  []record
	head  int    // index in recs of the oldest
	n     int    // records held
	first uint64 // ordinal of the oldest
	max   int
}

// push appends r, evicting the oldest record if the ring is full; it
// returns the evicted record, if any.
func (g *ring) push(r record) (evicted record, ok bool) {
	if g.n == len(g.recs) && len(g.recs) < g.max {
		g.grow()
	}
	if g.n == len(g.recs) {
		evicted, ok = g.recs[g.head], true
		g.recs[g.head] = r
		g.head = (g.head + 1) % len(g.recs)
		g.first++
		return evicted, ok
	}
	g.recs[(g.head+g.n)%len(g.recs)] = r
	g.n++
	return record{}, false
}

func (g *ring) grow() {
	c := min(g.max, max(1024, 2*len(g.recs)))
	recs := make([]record, c)
	a, b := g.parts()
	copy(recs[copy(recs, a):], b)
	g.recs, g.head = recs, 0
}

// parts returns the records, oldest first, as two slices.
func (g *ring) parts() (a, b []record) {
	if g.head+g.n <= len(g.recs) {
		return g.recs[g.head : g.head+g.n], nil
	}
	return g.recs[g.head:], g.recs[:g.head+g.n-len(g.recs)]
}

// at returns the i-th record, from the oldest (0).
func (g *ring) at(i int) *record {
	return &g.recs[(g.head+i)%len(g.recs)]
}

// popFront drops the oldest record.
func (g *ring) popFront() {
	g.recs[g.head] = record{}
	g.head = (g.head + 1) % len(g.recs)
	g.n--
	g.first++
	if g.n == 0 {
		g.head = 0
	}
}

// next is the ordinal the next record pushed gets.
func (g *ring) next() uint64 { return g.first + uint64(g.n) }

// keys gives each record a paging key that increases in file order: its
// seq plus an offset that is 0 along a chain that starts below maxKey.
// Where seqs do not increase (a new chain, lines moved), an epoch starts
// whose offset puts its first key right after the last one.
type keys struct {
	epochs  []epoch // by start
	lastSeq uint64
	lastKey uint64
}

// An epoch is a run of records whose key is seq+add (mod 2^64).
type epoch struct {
	start uint64 // ordinal of its first record
	add   uint64
}

// maxKey bounds the keys a chain's seqs give; past it keys count on from
// the last one, so that they never wrap.
const maxKey = 1 << 62

// next gives the record of ordinal ord and seq its key.
func (k *keys) next(ord, seq uint64) {
	n := len(k.epochs)
	if n > 0 {
		if key := seq + k.epochs[n-1].add; seq > k.lastSeq && key > k.lastKey && key <= maxKey {
			k.lastSeq, k.lastKey = seq, key
			return
		}
	}
	key := seq
	if n > 0 || seq > maxKey {
		key = k.lastKey + 1
	}
	k.epochs = append(k.epochs, epoch{start: ord, add: key - seq})
	k.lastSeq, k.lastKey = seq, key
}

// key returns the key of the record of ordinal ord and seq.
func (k *keys) key(ord, seq uint64) uint64 {
	e := k.epochs
	if len(e) == 1 || ord >= e[len(e)-1].start {
		return seq + e[len(e)-1].add
	}
	i := sort.Search(len(e), func(i int) bool { return e[i].start > ord }) - 1
	return seq + e[max(i, 0)].add
}

// trim forgets the epochs that end before ordinal first.
func (k *keys) trim(first uint64) {
	i := 0
	for i+1 < len(k.epochs) && k.epochs[i+1].start <= first {
		i++
	}
	if i > 0 {
		k.epochs = append(k.epochs[:0], k.epochs[i:]...)
	}
}
