package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

// Overflow is what Record does with an event when the Writer's queue is
// full.
type Overflow int

const (
	// Block waits up to WriterOptions.BlockFor for room, then drops the
	// event.
	Block Overflow = iota
	// Drop drops the event at once.
	Drop
)

// ErrDropped is the error Record returns (wrapped) for an event it dropped:
// the queue was full, or the event is larger than a line may be. The event
// is counted in Stats.Dropped and in Chain.Dropped of the next line.
var ErrDropped = errors.New("audit event dropped")

// Defaults of WriterOptions.
const (
	// MaxPending is the default WriterOptions.MaxPending.
	MaxPending = 4 << 20
	// DefaultBlockFor is the default WriterOptions.BlockFor.
	DefaultBlockFor = 10 * time.Second
)

// maxLine bounds one line of an audit log, newline excluded: Record drops a
// larger event, Verify reports a larger line, OpenFile reads no further
// back than two of them.
const maxLine = 1 << 20

// maxChain bounds the encoded chain member and closing brace.
const maxChain = 256

// WriterOptions configures a Writer. The zero value works.
type WriterOptions struct {
	// MaxPending is the most bytes of encoded events queued for the
	// writing goroutine; Record applies Overflow when the queue holds that
	// much. The batch being written is not counted: memory use may reach
	// about three times MaxPending (the queue, the batch, and the batch
	// chained). Default MaxPending (4 MiB).
	MaxPending int
	// Overflow is what Record does when the queue is full. Default Block.
	Overflow Overflow
	// BlockFor is how long Record waits for room in Block mode before it
	// drops the event. Default DefaultBlockFor (10s).
	BlockFor time.Duration
}

func (o *WriterOptions) check() error {
	switch {
	case o.MaxPending < 0:
		return fmt.Errorf("audit: WriterOptions.MaxPending is negative (%d)", o.MaxPending)
	case o.BlockFor < 0:
		return fmt.Errorf("audit: WriterOptions.BlockFor is negative (%v)", o.BlockFor)
	case o.Overflow != Block && o.Overflow != Drop:
		return fmt.Errorf("audit: WriterOptions.Overflow is %d: want Block or Drop", o.Overflow)
	}
	if o.MaxPending == 0 {
		o.MaxPending = MaxPending
	}
	if o.BlockFor == 0 {
		o.BlockFor = DefaultBlockFor
	}
	return nil
}

// A Writer writes events as chained JSON lines (see the package
// documentation) to an io.Writer with group commit: Record encodes an
// event on the caller's goroutine and queues it; one goroutine of the
// Writer assigns each queued event its chain, in order, and writes
// whatever is queued in one Write as soon as the previous Write returns.
// Under load many events share a write; idle, each event is written at
// once. The queue is bounded (WriterOptions). Close writes what is queued
// and stops the goroutine.
//
// A failed Write is not retried. The lines the sink took whole stay; the
// chain goes on from the last of them, so the events lost are counted
// (Stats.Failed) and recorded in Chain.Dropped of the next line written,
// as dropped events are. If the sink kept part of a line, the next write
// ends it with a newline and the next line names it in Chain.Torn, as
// after a crash. Record returns the error while writes fail; Flush and
// Close return the first one.
type Writer struct {
	w          io.Writer
	closer     io.Closer // the sink, when the Writer owns it (OpenFile)
	maxPending int
	overflow   Overflow
	blockFor   time.Duration
	done       chan struct{} // closed when run returns

	// The chain: owned by run (and by the constructor before it starts).
	seq  uint64 // of the last line
	prev string // hex SHA-256 of the last line
	torn string // Chain.Torn for the next line
	// cut says the sink holds part of a line (a failed write): the next
	// write ends it with a newline first.
	cut bool
	out []byte // the batch being written, chained

	mu         sync.Mutex
	ready      *sync.Cond // run waits here for events or Close; signalled by Record
	room       *sync.Cond // Record and Flush wait here; broadcast when run takes or writes a batch, on Close, and when a wait times out
	pending    []byte     // bodies queued (appendBody), not yet taken by run
	ents       []entry    // one per body in pending
	spare      []byte     // the previous batch, reused
	spareEnts  []entry
	unreported uint64 // events dropped or lost since the last one queued
	queued     uint64 // events ever queued
	handled    uint64 // events ever handed to w, successfully or not
	inflight   int    // bytes of the batch run is writing
	inflightN  int    // events in it
	written    uint64 // events written
	failed     uint64 // events lost to failed writes
	dropped    uint64 // events dropped
	lastSeq    uint64 // seq of the last line handed to w
	err        error  // the first write error; sticky
	failing    error  // the last write's error; nil once a write succeeds
	closed     bool
}

// entry is one queued event: where its body ends in the queue, and the
// drops it reports.
type entry struct {
	end     int
	dropped uint64
}

// Stats are a Writer's counters, for metrics.
type Stats struct {
	QueueBytes  int    // bytes of events recorded but not yet written
	QueueEvents int    // events recorded but not yet written
	Written     uint64 // events written since the Writer started
	Failed      uint64 // events lost to writes that failed
	Dropped     uint64 // events dropped since the Writer started (ErrDropped)
	Seq         uint64 // Chain.Seq of the last line handed to the sink
}

// lineBuf holds one encoded event between Record's encoding and queueing.
type lineBuf struct{ b []byte }

var bufPool = sync.Pool{New: func() any { return new(lineBuf) }}

// NewWriter returns a Writer writing to w with the default WriterOptions.
// Its chain starts at seq 1; nothing is rotated or continued (see OpenFile
// for that). The caller must Close the Writer, and then w if it needs
// closing.
func NewWriter(w io.Writer) *Writer {
	aw, _ := New(w, WriterOptions{}) // the zero options are valid
	return aw
}

// New returns a Writer writing to w, configured by opts; like NewWriter
// otherwise.
func New(w io.Writer, opts WriterOptions) (*Writer, error) {
	return newWriter(w, opts, chainStart{})
}

// chainStart is where a Writer's chain continues from: the seq and hash
// of the last line already written (zero for a new log), and Chain.Torn for
// the first new line.
type chainStart struct {
	seq  uint64
	prev string
	torn string
}

func newWriter(w io.Writer, opts WriterOptions, start chainStart) (*Writer, error) {
	if err := opts.check(); err != nil {
		return nil, err
	}
	if start.prev == "" {
		start.prev = GenesisPrev
	}
	aw := &Writer{
		w:          w,
		maxPending: opts.MaxPending,
		overflow:   opts.Overflow,
		blockFor:   opts.BlockFor,
		done:       make(chan struct{}),
		seq:        start.seq,
		prev:       start.prev,
		torn:       start.torn,
		lastSeq:    start.seq,
	}
	aw.ready = sync.NewCond(&aw.mu)
	aw.room = sync.NewCond(&aw.mu)
	go aw.run()
	return aw, nil
}

var errClosed = errors.New("audit: writer closed")

// Record queues e as one line; e.Chain is ignored, and e is not kept.
//
// When the queue is full, Record waits for room up to BlockFor (Block) or
// not at all (Drop); an event it cannot queue is dropped and counted, and
// Record returns an error wrapping ErrDropped. Record also fails if the
// Writer is closed, or if the last write failed (the event is still
// queued in that case, but the sink is suspect).
func (w *Writer) Record(e *Event) error {
	buf := bufPool.Get().(*lineBuf)
	defer bufPool.Put(buf)
	buf.b = e.appendBody(buf.b[:0])
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return errClosed
	}
	if len(buf.b) > maxLine-maxChain {
		w.drop()
		return fmt.Errorf("audit: event of %d bytes is over the %d-byte line limit: %w", len(buf.b), maxLine-maxChain, ErrDropped)
	}
	if len(w.pending) >= w.maxPending {
		if err := w.waitRoom(); err != nil {
			return err
		}
	}
	w.queue(buf.b)
	if w.failing != nil {
		return fmt.Errorf("write audit event: %w", w.failing)
	}
	return nil
}

// queue queues one event body, carrying the drops not yet reported. w.mu
// is held.
func (w *Writer) queue(body []byte) {
	w.pending = append(w.pending, body...)
	w.ents = append(w.ents, entry{end: len(w.pending), dropped: w.unreported})
	w.unreported = 0
	w.queued++
	w.ready.Signal()
}

// drop counts a dropped event. w.mu is held.
func (w *Writer) drop() {
	w.dropped++
	w.unreported++
}

// waitRoom waits, as Overflow says, until the queue has room. w.mu is
// held.
func (w *Writer) waitRoom() error {
	if w.overflow == Drop {
		w.drop()
		return fmt.Errorf("audit: queue full: %w", ErrDropped)
	}
	deadline := time.Now().Add(w.blockFor)
	t := time.AfterFunc(w.blockFor, func() {
		w.mu.Lock() // so that the broadcast cannot fall between a waiter's check and its Wait
		w.room.Broadcast()
		w.mu.Unlock()
	})
	defer t.Stop()
	for len(w.pending) >= w.maxPending && !w.closed {
		if !time.Now().Before(deadline) {
			w.drop()
			return fmt.Errorf("audit: queue full for %v: %w", w.blockFor, ErrDropped)
		}
		w.room.Wait()
	}
	if w.closed {
		return errClosed
	}
	return nil
}

// run chains and writes queued events until the Writer is closed and
// drained.
func (w *Writer) run() {
	defer close(w.done)
	w.mu.Lock()
	defer w.mu.Unlock()
	for {
		for len(w.ents) == 0 && !w.closed {
			w.ready.Wait()
		}
		if len(w.ents) == 0 {
			return // closed and drained
		}
		body, ents := w.pending, w.ents
		w.pending, w.ents = w.spare[:0], w.spareEnts[:0]
		w.spare, w.spareEnts = nil, nil
		w.inflight, w.inflightN = len(body), len(ents)
		w.room.Broadcast()
		w.mu.Unlock()

		start := chainStart{seq: w.seq, prev: w.prev, torn: w.torn}
		cut := w.cut
		out := w.chain(body, ents)
		n, err := w.w.Write(out)
		var lost, carry uint64
		if err != nil {
			lost, carry = w.rewind(out, n, cut, start, ents)
		}

		w.mu.Lock()
		w.handled += uint64(len(ents))
		w.written += uint64(len(ents)) - lost
		w.failing = err
		if err != nil {
			w.failed += lost
			if w.err == nil {
				w.err = err
			}
			// The next line records the lost events, and the drops they
			// recorded.
			if len(w.ents) > 0 {
				w.ents[0].dropped += carry
			} else {
				w.unreported += carry
			}
		}
		w.lastSeq = w.seq
		w.inflight, w.inflightN = 0, 0
		if cap(body) <= 2*w.maxPending {
			w.spare, w.spareEnts = body[:0], ents[:0]
		}
		w.room.Broadcast()
	}
}

// chain turns a batch of queued bodies into lines: each gets the next seq,
// the hash of the line before it, its drops, and its closing brace.
func (w *Writer) chain(body []byte, ents []entry) []byte {
	out := w.out[:0]
	if w.cut {
		out = append(out, '\n') // ends the part of a line a failed write left
		w.cut = false
	}
	start := 0
	for _, en := range ents {
		line := len(out)
		out = append(out, body[start:en.end]...)
		start = en.end
		w.seq++
		out = appendChain(out, &Chain{Seq: w.seq, Prev: w.prev, Dropped: en.dropped, Torn: w.torn})
		out = append(out, '}')
		sum := sha256.Sum256(out[line:])
		w.prev = hex.EncodeToString(sum[:])
		w.torn = ""
		out = append(out, '\n')
	}
	if cap(out) <= 4*w.maxPending {
		w.out = out
	} else {
		w.out = nil
	}
	return out
}

// rewind puts the chain back after a write of out, chained from start,
// that failed having written only n bytes: the lines written whole stay,
// the chain goes on from the last of them, and a line written in part is
// torn (the next write ends it, the next line names it). cut says out
// starts with the newline that ends an earlier torn line. It returns how
// many of ents were lost, and how many events the next line must record
// as dropped: those, and the drops they recorded.
func (w *Writer) rewind(out []byte, n int, cut bool, start chainStart, ents []entry) (lost, carry uint64) {
	n = max(0, min(n, len(out)))
	done := out[:n]
	switch {
	case cut && n == 0:
		w.cut = true // the earlier torn line is still to be ended
	case cut:
		done = done[1:] // it is ended
	}
	w.seq, w.prev, w.torn = start.seq, start.prev, start.torn
	whole := 0
	for {
		i := bytes.IndexByte(done, '\n')
		if i < 0 {
			break
		}
		w.seq++
		w.prev = lineHash(done[:i])
		w.torn = ""
		whole++
		done = done[i+1:]
	}
	if len(done) > 0 {
		sum := sha256.Sum256(done)
		w.torn = hex.EncodeToString(sum[:])
		w.cut = true
	}
	for _, en := range ents[whole:] {
		lost++
		carry += 1 + en.dropped
	}
	return lost, carry
}

// Stats returns the Writer's counters.
func (w *Writer) Stats() Stats {
	w.mu.Lock()
	defer w.mu.Unlock()
	return Stats{
		QueueBytes:  len(w.pending) + w.inflight,
		QueueEvents: len(w.ents) + w.inflightN,
		Written:     w.written,
		Failed:      w.failed,
		Dropped:     w.dropped,
		Seq:         w.lastSeq,
	}
}

// Flush waits until every event recorded before it has been written, and
// returns the first write error, if any.
func (w *Writer) Flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	target := w.queued
	for w.handled < target {
		w.room.Wait()
	}
	return w.err
}

// Close writes what is queued, stops the Writer, closes the file of an
// OpenFile Writer, and returns the first write or close error, if any.
// Drops not yet reported by a line are written as an ActionDropped event.
// Record fails after Close.
func (w *Writer) Close() error {
	w.mu.Lock()
	if !w.closed && w.unreported > 0 {
		e := &Event{
			Timestamp: time.Now().UTC(),
			Event: EventFields{
				Action:  ActionDropped,
				Outcome: OutcomeFailure,
				Reason:  fmt.Sprintf("%d audit events dropped (queue full) or lost to failed writes since the previous line", w.unreported),
			},
		}
		w.queue(e.appendBody(nil))
	}
	w.closed = true
	w.ready.Broadcast()
	w.room.Broadcast()
	w.mu.Unlock()
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closer != nil {
		err := w.closer.Close()
		w.closer = nil
		if err != nil && w.err == nil {
			w.err = fmt.Errorf("close audit file: %w", err)
		}
	}
	return w.err
}
