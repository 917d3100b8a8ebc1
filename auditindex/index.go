// Package auditindex keeps an in-memory index of modgate's audit log,
// following its files as they are written and rotated and checking their
// hash chain, and answers filtered, paged queries over it — the web
// console's Audit and Refusals pages. A query over a million events
// answers in milliseconds (BenchmarkQuery1M).
//
// # What is indexed
//
// The log is the file an audit Writer appends to (audit.OpenFile: PATH)
// and the files it rotated (PATH.1 the newest … PATH.N the oldest). Open
// reads them oldest first, then follows: every Options.Interval, and
// before each Query, it reads what was written since, notices rotation
// (files are told apart by identity, os.SameFile, not by name) and reads
// a rotated file to its end before the new PATH. A line counts once its
// newline is written: a torn last line (being written, or left by a
// crash) is not read until then.
//
// Each line is parsed once, when read, into a compact record of the
// fields queries filter on (about 64 bytes an event, strings interned);
// the line itself stays in its file, where a query reads the lines it
// shows. The index holds the newest Options.MaxEvents events: older ones
// fall out, as do the events of files the Writer deletes (Stats.Dropped).
// Lines longer than 1 MiB (inventory.MaxLine), or that are not a chained
// audit event, are counted (Stats.Malformed), not indexed.
//
// # The chain
//
// The index checks the hash chain as it reads, line by line across files,
// catch-ups and rotations, with audit.Checker: what audit.Verify would say
// of the files read so far. ChainStatus gives the range of seqs that
// verified and the first break (audit.Problem, at the file's current
// name); events after a break are indexed and shown, but not verified.
// A line whose verdict depends on the next one (see audit.Checker) stays
// unverified until that line is written. At query time each line shown is
// read again and hashed: a line that changed since it was indexed is
// Entry.Changed, and the first such line becomes the chain's Problem
// (KindEdited) if no earlier break is known.
//
// What the index verifies is the chain of the lines it read, from the
// oldest one it read: like audit.Verify, it cannot tell that lines before
// that one, or after the newest, were removed. If the Writer rotates more
// than Keep times between two catch-ups, a file is deleted before the
// index opens it, and the chain reports it missing.
//
// # Limits
//
// Strings are interned up to a bound: module paths of 1024 bytes,
// versions, identities and rules of 256 (identities are cut to 256 bytes,
// as inventory.Identity cuts them); a longer value matches no filter on
// its field. The fields with few values (decision, kind, action,
// verification) hold up to 254 distinct values of up to 64 bytes; others
// match no filter. Status codes outside 0…65534 match no status filter.
// At most 1000 rotated files are followed, the newest; a file that shows
// up older than one already followed (say, restored from a backup) is
// ignored.
//
// An Index is safe for concurrent use.
package auditindex

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Defaults of Options.
const (
	DefaultMaxEvents = 1_000_000
	DefaultInterval  = time.Second
)

// Options configures an Index.
type Options struct {
	// Path is the audit file, PATH; its rotated files are PATH.1 … PATH.N.
	// Required. It need not exist yet.
	Path string
	// MaxEvents is how many events the index holds, the newest; older
	// ones fall out. Default DefaultMaxEvents (1,000,000): about 64 MB.
	MaxEvents int
	// Interval is how often the index catches up with the files, besides
	// before each Query. Default DefaultInterval (1s).
	Interval time.Duration
	// Logger logs catch-up errors, rotations and truncations. Default
	// slog.Default().
	Logger *slog.Logger
}

// ErrClosed is the error of Query and Refresh after Close.
var ErrClosed = errors.New("auditindex: closed")

// An Index is an index of one audit log. Open starts it; Close stops it.
type Index struct {
	path      string
	maxEvents int
	interval  time.Duration
	log       *slog.Logger

	stop      chan struct{} // closed by Close: the follower and catch-ups stop
	done      chan struct{} // closed when the follower has returned
	closeOnce sync.Once
	closeErr  error

	// catch is held (by sending to it) by whoever catches up with the
	// files: the follower, Refresh or Query. It is a channel so that a
	// waiter can give up. Close takes it for good.
	catch chan struct{}
	fl    *follower // the state of catching up: used by the holder of catch only

	mu       sync.RWMutex
	ring     ring                // the records, oldest first
	keys     keys                // their paging keys
	tabs     tables              // their interned strings
	segs     map[uint32]*segment // the files open, by id
	chain    chainState
	counts   counts
	building bool // no catch-up has read all the files yet
	complete bool // the last catch-up read everything
	closed   bool
}

// counts are an Index's counters, for Stats.
type counts struct {
	dropped   int // events dropped: MaxEvents, deleted files
	malformed int // lines not indexed
	torn      int // torn lines that a restart recovered
	flagged   int // records in ring whose file was deleted
	sinceTabs int // records dropped since tabs were rebuilt
}

// Open returns an Index of the audit log at opts.Path and starts its
// goroutine, which reads the files, oldest first, then follows them. It
// returns at once: until the first reading is done, Query answers from
// what is indexed so far (ChainStatus.Complete is false) and Refresh
// waits for it.
func Open(opts Options) (*Index, error) {
	ix, err := newIndex(opts)
	if err != nil {
		return nil, err
	}
	go ix.follow()
	return ix, nil
}

// newIndex returns an Index, its goroutine not started.
func newIndex(opts Options) (*Index, error) {
	switch {
	case opts.Path == "":
		return nil, errors.New("auditindex: Options.Path is empty")
	case opts.MaxEvents < 0:
		return nil, fmt.Errorf("auditindex: Options.MaxEvents is negative (%d)", opts.MaxEvents)
	case opts.Interval < 0:
		return nil, fmt.Errorf("auditindex: Options.Interval is negative (%v)", opts.Interval)
	}
	if opts.MaxEvents == 0 {
		opts.MaxEvents = DefaultMaxEvents
	}
	if opts.Interval == 0 {
		opts.Interval = DefaultInterval
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	ix := &Index{
		path:      opts.Path,
		maxEvents: opts.MaxEvents,
		interval:  opts.Interval,
		log:       opts.Logger.With("path", opts.Path),
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
		catch:     make(chan struct{}, 1),
		fl:        newFollower(),
		ring:      ring{max: opts.MaxEvents},
		tabs:      newTables(),
		segs:      make(map[uint32]*segment),
		building:  true,
	}
	return ix, nil
}

// follow catches up every interval until Close.
func (ix *Index) follow() {
	defer close(ix.done)
	t := time.NewTicker(ix.interval)
	defer t.Stop()
	for {
		select {
		case ix.catch <- struct{}{}:
		case <-ix.stop:
			return
		}
		err := ix.catchUp(nil, true)
		<-ix.catch
		if err != nil && !errors.Is(err, errStopped) {
			ix.fl.logErr(ix.log, err)
		}
		select {
		case <-t.C:
		case <-ix.stop:
			return
		}
	}
}

// Close stops the goroutine, waits for it and for a catch-up in progress,
// and closes the files. Query and Refresh fail with ErrClosed after it.
func (ix *Index) Close() error {
	ix.closeOnce.Do(func() {
		close(ix.stop)
		<-ix.done
		ix.catch <- struct{}{} // taken for good: no catch-up after Close
		ix.mu.Lock()
		defer ix.mu.Unlock()
		ix.closed = true
		var errs []error
		for id, s := range ix.segs {
			if s.f != nil {
				errs = append(errs, s.f.Close())
			}
			delete(ix.segs, id)
		}
		if err := errors.Join(errs...); err != nil {
			ix.closeErr = fmt.Errorf("close audit index: %w", err)
		}
	})
	return ix.closeErr
}

// Refresh catches up now with everything written to the files so far,
// rotations included, waiting for a catch-up in progress (such as the
// first reading of the files) to end first. Its error is for files that
// could not be listed or read, ctx, or ErrClosed.
func (ix *Index) Refresh(ctx context.Context) error {
	if err := ix.take(ctx); err != nil {
		return err
	}
	err := ix.catchUp(ctx.Done(), true)
	<-ix.catch
	if errors.Is(err, errStopped) {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return ErrClosed
	}
	return err
}

// take takes ix.catch, unless ctx ends or the Index is closed first.
func (ix *Index) take(ctx context.Context) error {
	select {
	case <-ix.stop:
		return ErrClosed
	default:
	}
	select {
	case ix.catch <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-ix.stop:
		return ErrClosed
	}
}

// Stats are an Index's counts.
type Stats struct {
	Events    int // events held
	Dropped   int // events that fell out: past MaxEvents, or with files deleted
	OldestSeq uint64
	NewestSeq uint64
	Files     int   // files open
	Bytes     int64 // bytes read of them
	Malformed int   // lines not indexed: not chained audit events, or longer than 1 MiB
	Torn      int   // torn lines that a restart recovered (a crash), not indexed either
	Building  bool  // the first reading of the files is not done
}

// Stats returns the Index's counts.
func (ix *Index) Stats() Stats {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	st := Stats{
		Events:    ix.ring.n - ix.counts.flagged,
		Dropped:   ix.counts.dropped,
		Files:     len(ix.segs),
		Malformed: ix.counts.malformed,
		Torn:      ix.counts.torn,
		Building:  ix.building,
	}
	for i := 0; i < ix.ring.n; i++ {
		if r := ix.ring.at(i); !r.gone {
			st.OldestSeq = r.seq
			break
		}
	}
	for i := ix.ring.n - 1; i >= 0; i-- {
		if r := ix.ring.at(i); !r.gone {
			st.NewestSeq = r.seq
			break
		}
	}
	for _, s := range ix.segs {
		st.Bytes += s.read
	}
	return st
}
