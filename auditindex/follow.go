package auditindex

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"slices"

	"github.com/modgate/modgate/audit"
	"github.com/modgate/modgate/inventory"
)

// readBuf is the size of a read: a line of up to inventory.MaxLine bytes
// and its newline fit.
const readBuf = inventory.MaxLine + 64<<10

// follower is the state of catching up, used by the holder of
// Index.catch only.
type follower struct {
	order   []*segment    // the files followed, oldest first
	ignored []os.FileInfo // files that showed up older than one followed
	nextID  uint32
	buf     []byte
	dec     decoder
	batch   []pending // lines read, not yet committed
	pushed  uint64    // records committed ever: the next one's ordinal
	behind  bool      // the last catch-up did not complete

	ck      audit.Checker
	nfed    int64              // lines given to ck
	fed     [8]fedLine         // the last lines given to ck, by number
	lastBad *[sha256.Size]byte // hash of the line before, if it was not indexed
	chain   chainState         // to publish at the next commit
	vn      int64              // ck.Verified's line when last asked
	counts  counts             // deltas to publish: malformed, torn

	warnedFiles bool   // logged that there are more than maxFiles
	lastErr     string // the last catch-up error logged
}

// pending is a line read and decoded, to be committed.
type pending struct {
	rec record
	f   fields
	seg *segment
}

// fedLine is a line given to the Checker: where it is in files and in the
// index.
type fedLine struct {
	n    int64
	seg  *segment
	line int
	ord  uint64 // its ordinal if indexed, else the next one's
}

// chainState is what the chain check found, in terms of the index.
type chainState struct {
	verified         bool   // some line checked out
	fromOrd, fromSeq uint64 // the first line that checked out
	thruOrd, thruSeq uint64 // the last line that checked out before the break
	problem          *breakAt
	edited           *breakAt // the first line a query found changed
}

// breakAt is a break in the chain and where it is.
type breakAt struct {
	p   audit.Problem
	seg *segment
	ord uint64 // the ordinal of its line, or of the line indexed after it
}

func newFollower() *follower {
	return &follower{buf: make([]byte, readBuf)}
}

// errStopped is a catch-up's error when it was cancelled or the Index
// closed.
var errStopped = errors.New("auditindex: catch-up stopped")

// catchUp reads what the files gained since the last catch-up. Its caller
// holds ix.catch. If full, it lists the rotated files; otherwise only if
// PATH is another file than the one followed (it rotated) or shrank. It
// stops between batches of lines when cancel is closed or ix stops.
func (ix *Index) catchUp(cancel <-chan struct{}, full bool) (err error) {
	defer func() {
		ix.mu.Lock()
		ix.complete = err == nil
		if err == nil && full {
			ix.building = false
		}
		ix.mu.Unlock()
	}()
	fl := ix.fl
	behind := fl.behind
	fl.behind = true // until this one completes
	defer func() { fl.behind = err != nil }()
	cur, err := statPath(ix.path)
	if err != nil {
		return err
	}
	// Unless a catch-up stopped part way (an older file may be part
	// read), only PATH can have grown if it is the file followed.
	if s := fl.current(ix.path); !full && !behind && s != nil && cur != nil && os.SameFile(cur, s.fi) && cur.Size() >= s.size {
		if cur.Size() == s.size {
			return nil // nothing new
		}
		return ix.read(s, false, cancel)
	}
	list, err := ix.list(cur)
	if err != nil {
		return err
	}
	if err := ix.match(list); err != nil {
		return err
	}
	for _, s := range slices.Clone(fl.order) {
		if err := ix.read(s, s.gone || s.name != ix.path, cancel); err != nil {
			return err
		}
	}
	for _, s := range fl.order {
		if s.gone {
			ix.drop(s)
		}
	}
	fl.order = slices.DeleteFunc(fl.order, func(s *segment) bool { return s.gone })
	return nil
}

// read reads s from where it was left to its end, in batches. If final,
// no more lines will come: a torn last line is read too.
func (ix *Index) read(s *segment, final bool, cancel <-chan struct{}) error {
	if s.f == nil {
		return nil
	}
	for {
		select {
		case <-cancel:
			return errStopped
		case <-ix.stop:
			return errStopped
		default:
		}
		more, err := ix.readBatch(s, final)
		ix.commit(s)
		if err != nil {
			return fmt.Errorf("read audit file %s: %w", s.name, err)
		}
		if !more {
			return nil
		}
	}
}

// readBatch reads one buffer of s, and decodes and checks its lines. It
// reports whether there is more to read.
func (ix *Index) readBatch(s *segment, final bool) (more bool, err error) {
	buf := ix.fl.buf
	if s.skip > 0 { // in a line longer than MaxLine: look for its end
		n, err := s.f.ReadAt(buf, s.off+s.skip)
		if err != nil && !errors.Is(err, io.EOF) {
			return false, err
		}
		if i := bytes.IndexByte(buf[:n], '\n'); i >= 0 {
			ix.line(s, nil, s.off, s.skip+int64(i), true, true)
			s.off += s.skip + int64(i) + 1
			s.skip = 0
			return true, nil
		}
		s.skip += int64(n)
		if n == len(buf) {
			return true, nil
		}
		s.size = s.off + s.skip
		if final {
			ix.line(s, nil, s.off, s.skip, false, true)
			s.off, s.skip = s.size, 0
		}
		return false, nil
	}
	n, err := s.f.ReadAt(buf, s.off)
	if err != nil && !errors.Is(err, io.EOF) {
		return false, err
	}
	data := buf[:n]
	p := 0
	for {
		i := bytes.IndexByte(data[p:], '\n')
		if i < 0 {
			break
		}
		b := data[p : p+i]
		ix.line(s, b, s.off+int64(p), int64(i), true, len(b) > inventory.MaxLine)
		p += i + 1
	}
	s.off += int64(p)
	rest := data[p:]
	if len(rest) > inventory.MaxLine {
		s.skip = int64(len(rest))
		if n == len(buf) {
			return true, nil
		}
		s.size = s.off + s.skip
		if final {
			ix.line(s, nil, s.off, s.skip, false, true)
			s.off, s.skip = s.size, 0
		}
		return false, nil
	}
	if n == len(buf) {
		return true, nil
	}
	s.size = s.off + int64(len(rest))
	if final && len(rest) > 0 {
		ix.line(s, rest, s.off, int64(len(rest)), false, false)
		s.off = s.size
	}
	return false, nil
}

// line checks and decodes one line of s, at off, of length bytes (b holds
// it, or its start, or nothing for a long one), and queues its record.
func (ix *Index) line(s *segment, b []byte, off, length int64, complete, long bool) {
	fl := ix.fl
	s.lines++
	if len(b) > inventory.MaxLine {
		b = b[:inventory.MaxLine]
	}
	var (
		f fields
		c audit.Chain
	)
	l := audit.Line{
		Location: audit.Location{File: s.name, Line: s.lines},
		FileID:   int(s.id),
		Bytes:    b,
		Complete: complete,
		Long:     long,
	}
	fast := complete && !long && fl.dec.decode(b, &f, &c)
	if fast {
		l.Chain = &c
	}
	chain, sum, err := fl.ck.Add(l)
	fl.nfed++
	ord := fl.pushed + uint64(len(fl.batch))
	fl.fed[fl.nfed%int64(len(fl.fed))] = fedLine{n: fl.nfed, seg: s, line: s.lines, ord: ord}
	switch {
	case err != nil || off > maxOffset:
		fl.counts.malformed++
		fl.lastBad = &sum
	default:
		if !fast {
			decodeSlow(b, &f)
		}
		if chain.Torn != "" && fl.lastBad != nil && chain.Torn == hex.EncodeToString(fl.lastBad[:]) {
			// The line before was a torn line this one recovers.
			fl.counts.malformed--
			fl.counts.torn++
		}
		fl.lastBad = nil
		fl.batch = append(fl.batch, pending{
			rec: record{
				seq:    chain.Seq,
				ts:     unixNano(f.ts),
				sum:    binary.BigEndian.Uint64(sum[:8]),
				pos:    uint64(off)<<lenBits | uint64(length),
				seg:    s.id,
				line:   uint32(min(s.lines, math.MaxUint32)),
				status: statusOf(f.status),
			},
			f:   f,
			seg: s,
		})
	}
	fl.checked()
}

func statusOf(code int) uint16 {
	if code < 0 || code >= noStatus {
		return noStatus
	}
	return uint16(code)
}

// checked notes what the Checker found after the last line.
func (fl *follower) checked() {
	cs := &fl.chain
	if cs.problem != nil {
		return // it checks nothing more
	}
	if p := fl.ck.Problem(); p != nil {
		at := fl.fedLine(fl.ck.BrokenAt())
		cs.problem = &breakAt{p: *p, seg: at.seg, ord: at.ord}
	}
	n, seq := fl.ck.Verified()
	if n == fl.vn {
		return
	}
	fl.vn = n
	if n == 0 {
		cs.verified = false
		return
	}
	at := fl.fedLine(n)
	if !cs.verified && cs.fromSeq == 0 {
		cs.fromOrd, cs.fromSeq = at.ord, seq
	}
	cs.verified, cs.thruOrd, cs.thruSeq = true, at.ord, seq
}

// fedLine returns the line numbered n among those given to the Checker: one
// of the last few.
func (fl *follower) fedLine(n int64) fedLine {
	if f := fl.fed[n%int64(len(fl.fed))]; f.n == n {
		return f
	}
	return fl.fed[fl.nfed%int64(len(fl.fed))] // not kept: the last one
}

// commit adds the lines read to the index, and publishes the chain's
// state and the counts; s is the file they were read from.
func (ix *Index) commit(s *segment) {
	fl := ix.fl
	ix.mu.Lock()
	defer ix.mu.Unlock()
	t := &ix.tabs
	for i := range fl.batch {
		p := &fl.batch[i]
		r := p.rec
		r.module = t.module.id(p.f.module)
		r.version = t.version.id(p.f.version)
		r.identity = t.identity.id(p.f.identity)
		r.rule = t.rule.id(p.f.rule)
		r.decision = t.decision.id(p.f.decision)
		r.kind = t.kind.id(p.f.kind)
		r.action = t.action.id(p.f.action)
		r.verification = t.verification.id(p.f.verification)
		ix.keys.next(ix.ring.next(), r.seq)
		if old, ok := ix.ring.push(r); ok {
			ix.evicted(&old)
		}
		p.seg.events++
		*p = pending{}
	}
	fl.pushed += uint64(len(fl.batch))
	fl.batch = fl.batch[:0]
	ix.popGone()
	ix.keys.trim(ix.ring.first)
	s.read = s.off
	edited := ix.chain.edited
	ix.chain = fl.chain
	ix.chain.edited = edited
	ix.counts.malformed += fl.counts.malformed
	ix.counts.torn += fl.counts.torn
	fl.counts = counts{}
	if ix.counts.sinceTabs > max(ix.ring.n, 1<<16) {
		ix.retable()
	}
}

// evicted counts a record that fell out of the ring. ix.mu is held.
func (ix *Index) evicted(r *record) {
	if r.gone {
		ix.counts.flagged--
		return
	}
	ix.counts.dropped++
	ix.counts.sinceTabs++
	if s := ix.segs[r.seg]; s != nil {
		s.events--
	}
}

// popGone drops the oldest records while their file is gone. ix.mu is
// held.
func (ix *Index) popGone() {
	for ix.ring.n > 0 && ix.ring.at(0).gone {
		ix.ring.popFront()
		ix.counts.flagged--
	}
}

// drop stops following s, which is gone, dropping its events.
func (ix *Index) drop(s *segment) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	for ix.ring.n > 0 && s.events > 0 && ix.ring.at(0).seg == s.id {
		ix.ring.popFront()
		s.events--
		ix.counts.dropped++
		ix.counts.sinceTabs++
		ix.popGone()
	}
	if s.events > 0 { // not the oldest file: flag its records
		for i := 0; i < ix.ring.n && s.events > 0; i++ {
			if r := ix.ring.at(i); r.seg == s.id && !r.gone {
				r.gone = true
				s.events--
				ix.counts.flagged++
				ix.counts.dropped++
				ix.counts.sinceTabs++
			}
		}
	}
	ix.keys.trim(ix.ring.first)
	delete(ix.segs, s.id)
	if s.f != nil {
		s.f.Close()
		s.f = nil
	}
}

// retable rebuilds the interned strings from the records held, so that
// strings of events that fell out are let go. ix.mu is held.
func (ix *Index) retable() {
	old := ix.tabs
	ix.tabs = newTables()
	a, b := ix.ring.parts()
	for _, part := range [][]record{a, b} {
		for i := range part {
			ix.tabs.remap(&old, &part[i])
		}
	}
	ix.counts.sinceTabs = 0
}

// logErr logs a catch-up error, unless it is the one logged last.
func (fl *follower) logErr(log *slog.Logger, err error) {
	if msg := err.Error(); msg != fl.lastErr {
		fl.lastErr = msg
		log.Error("audit index: catching up", "err", err)
	}
}
