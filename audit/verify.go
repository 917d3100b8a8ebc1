package audit

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
)

// A Kind classifies a Problem.
type Kind string

// Kinds of Problem.
const (
	// KindMalformed is a line that is not a JSON object with a chain (and
	// not a torn line a restart recovered).
	KindMalformed Kind = "malformed"
	// KindEdited is a line whose hash differs from the next line's
	// Chain.Prev: it was changed after it was written.
	KindEdited Kind = "edited"
	// KindMissing is a line whose seq skips some: lines before it were
	// deleted or moved, or a rotated file is missing.
	KindMissing Kind = "missing"
	// KindReordered is a line that comes before a line with a lower seq,
	// or repeats a seq: lines were moved, or files given out of order.
	KindReordered Kind = "reordered"
	// KindRestarted is a new chain (seq 1) in the middle of a file: the
	// lines before it are from another chain.
	KindRestarted Kind = "restarted"
	// KindTorn is a line with no newline: the file was cut short, by a
	// crash mid-write (that modgate has not yet restarted after) or a
	// truncation.
	KindTorn Kind = "torn"
)

// A Location is a line of a file, counted from 1.
type Location struct {
	File string
	Line int
}

func (l Location) String() string { return fmt.Sprintf("%s:%d", l.File, l.Line) }

// A Problem is the first break in a chain.
type Problem struct {
	Location
	Kind   Kind
	Detail string
}

func (p *Problem) Error() string {
	return fmt.Sprintf("%s: %s: %s", p.Location, p.Kind, p.Detail)
}

// maxListed bounds the locations a Report lists.
const maxListed = 100

// A Report is what Verify found.
type Report struct {
	Files    int        // files read
	Events   int        // lines whose chain checked out
	FirstSeq uint64     // seq of the first line
	LastSeq  uint64     // seq of the last line that checked out
	LastHash string     // hex SHA-256 of that line: keep it elsewhere to check this log's end later
	Dropped  uint64     // events the writer dropped (queue full) or lost (failed writes), as the chain records them
	Drops    []Location // lines recording drops (at most 100)
	Torn     []Location // torn lines that a restart recovered (at most 100): crashes, not tampering
	// Problem is the first break in the chain, nil if there is none. The
	// counts above stop before it.
	Problem *Problem
}

// Verify checks the chain of the audit log in files, which are read in the
// order given: oldest first, one chain across them (for a rotated log,
// PATH.N … PATH.1, PATH). The first line may have any seq (older files may
// have been rotated away); from there each line must have the next seq and
// the hash of the line before it. Verify stops at the first problem and
// reports it in Report.Problem; the error is for files that cannot be
// read.
//
// A crash is told from tampering by the line after a torn one: a line with
// no newline is a torn line only if it is followed by an ActionRecovered
// event whose Chain.Torn is that line's SHA-256 and whose Chain.Prev and
// seq continue from the line before the torn one — what OpenFile writes
// when it restarts after a crash. Verify lists such lines in Report.Torn.
// Any other line that does not parse is KindMalformed, and a last line
// with no newline (not yet recovered) is KindTorn.
//
// Verify is a Checker given the lines of files; a reader that follows a
// log as it is written can use a Checker itself.
func Verify(files []string) (Report, error) {
	if len(files) == 0 {
		return Report{}, errors.New("audit verify: no files")
	}
	lr := &lineReader{files: files}
	defer lr.close()
	var ck Checker
	for ck.Problem() == nil {
		l, err := lr.next()
		if err != nil {
			rep := ck.Report()
			rep.Files = lr.opened
			return rep, err
		}
		if l == nil {
			ck.End()
			break
		}
		ck.Add(*l)
	}
	rep := ck.Report()
	rep.Files = lr.opened
	return rep, nil
}

// A Line is one line of an audit log, as a Checker takes it.
type Line struct {
	// Location names the line in a Problem: its file, and its number in
	// the file, from 1.
	Location Location
	// FileID tells files apart: the lines of one file have the same
	// FileID, and a Checker takes a line with another FileID than the
	// line before it for the start of the next file.
	FileID int
	// Bytes is the line without its newline, at most 1 MiB of it. Add
	// keeps no reference to it.
	Bytes []byte
	// Complete says a newline ended the line.
	Complete bool
	// Long says the line is longer than 1 MiB; Bytes holds its start, or
	// nothing.
	Long bool
	// LastFile says the line is in the last file, the one being written;
	// it only words the Problem of a torn line.
	LastFile bool
	// Chain, if not nil, is the line's "chain" as encoding/json decodes
	// it from the line, which the caller has decoded already and found to
	// be one JSON object (say, while decoding its Event). The Checker then
	// checks it without decoding the line again. nil: the Checker decodes
	// the line. Add keeps no reference to it.
	Chain *Chain
}

// A Checker checks the chain of an audit log given to it line by line,
// oldest first, as Verify does (Verify is a Checker given the lines of
// files). It suits a reader that follows a log as it is written, across
// rotations and restarts.
//
// The verdict on a line may wait for the next one: a line that does not
// parse is a torn line that a restart recovered only if the next line's
// Chain.Torn names it; a line whose seq skips some was moved if the next
// line holds a skipped seq, else lines are missing; and when a line's
// prev is not the hash of the line before it, the next line tells which
// of the two was edited. Add keeps what it needs of such a line (not its
// bytes) and settles it on the next Add, or on End.
//
// The zero Checker is ready; the first line may have any seq (older lines
// may have been rotated away). Once it finds a Problem, a Checker checks
// nothing more. A Checker is not safe for concurrent use.
type Checker struct {
	rep      Report
	n        int64    // lines added
	prev     checked  // the last line that checked out; n == 0 if none
	before   checked  // the line that checked out before prev
	wait     *waiting // a line whose verdict waits for the next one
	brokenAt int64    // the number of the line Problem is at
}

// checked is a line whose chain checked out.
type checked struct {
	loc     Location
	file    int
	n       int64 // its number among the lines added, from 1
	seq     uint64
	hash    [sha256.Size]byte
	dropped uint64
}

// Why a line's verdict waits for the next line.
const (
	waitParse = iota // it does not parse: is it a recovered torn line?
	waitGap          // its seq skips some: moved or missing?
	waitPrev         // its prev is not the hash of the line before it: which one was edited?
)

// waiting is a line whose verdict waits for the next line.
type waiting struct {
	why     int
	loc     Location
	n       int64
	seq     uint64
	sum     [sha256.Size]byte
	err     error // why it does not parse
	newFile bool
}

// Add checks l, the line after the last one added. Whatever the state of
// the chain, it returns l's chain if l is a chained audit line (complete,
// one JSON object with a well-formed chain: l.Chain itself if it was
// given), l's SHA-256 (of l.Bytes), and otherwise why l is not a chained
// line: malformed, or torn (a next line may yet recover it).
func (ck *Checker) Add(l Line) (*Chain, [sha256.Size]byte, error) {
	ck.n++
	sum := sha256.Sum256(l.Bytes)
	c, err := lineChain(l)
	if ck.rep.Problem != nil {
		return c, sum, err
	}
	if w := ck.wait; w != nil {
		ck.wait = nil
		ck.settle(w, c)
		if ck.rep.Problem != nil {
			return c, sum, err
		}
	}
	ck.check(l, c, sum, err)
	return c, sum, err
}

// End tells the Checker that no line follows the last one added, and
// settles a line whose verdict waited for the next one as Verify does at
// the end of its files.
func (ck *Checker) End() {
	if w := ck.wait; w != nil && ck.rep.Problem == nil {
		ck.wait = nil
		ck.settle(w, nil)
	}
}

// Report returns what the Checker has found so far; Report.Files is
// left to the caller. The counts cover the lines whose verdict is known.
func (ck *Checker) Report() Report {
	rep := ck.rep
	if ck.prev.n != 0 {
		rep.LastHash = hex.EncodeToString(ck.prev.hash[:])
	}
	return rep
}

// Problem returns the first break in the chain, nil if none is known.
func (ck *Checker) Problem() *Problem { return ck.rep.Problem }

// BrokenAt returns the number of the line Problem is at, counting the
// lines added from 1; 0 if there is no Problem.
func (ck *Checker) BrokenAt() int64 { return ck.brokenAt }

// Verified returns the last line that checked out before the chain broke:
// its number among the lines added (from 1) and its seq; zeros if none
// did. When the Problem is at a line that had checked out (an edited line
// that the next line does not chain to), it is the line before that one.
func (ck *Checker) Verified() (n int64, seq uint64) {
	if ck.rep.Problem != nil && ck.brokenAt == ck.prev.n {
		return ck.before.n, ck.before.seq
	}
	return ck.prev.n, ck.prev.seq
}

// lineChain returns l's chain, or why it has none.
func lineChain(l Line) (*Chain, error) {
	switch {
	case l.Long:
		return nil, fmt.Errorf("line longer than %d bytes", maxLine)
	case !l.Complete:
		return nil, fmt.Errorf("torn: no newline after %d bytes", len(l.Bytes))
	case l.Chain != nil:
		if err := checkChain(l.Chain); err != nil {
			return nil, err
		}
		return l.Chain, nil
	}
	return parseLine(l.Bytes)
}

// fail records the Problem of the chain, at line n.
func (ck *Checker) fail(at Location, n int64, k Kind, format string, args ...any) {
	ck.rep.Problem = &Problem{Location: at, Kind: k, Detail: fmt.Sprintf(format, args...)}
	ck.brokenAt = n
}

// check checks line l (its chain c, hash sum, or why it has no chain)
// against the last line that checked out: it fails, waits for the next
// line, or accepts l.
func (ck *Checker) check(l Line, c *Chain, sum [sha256.Size]byte, perr error) {
	at, n := l.Location, ck.n
	if l.Long {
		ck.fail(at, n, KindMalformed, "line longer than %d bytes", maxLine)
		return
	}
	if !l.Complete {
		if l.LastFile {
			ck.fail(at, n, KindTorn, "the last line has no newline (%d bytes): the log was cut short, by a crash mid-write (a restart of modgate recovers it) or by truncation", len(l.Bytes))
		} else {
			ck.fail(at, n, KindTorn, "%s does not end with a newline: its last line (%d bytes) was cut short", at.File, len(l.Bytes))
		}
		return
	}
	if perr != nil {
		ck.wait = &waiting{why: waitParse, loc: at, n: n, sum: sum, err: perr}
		return
	}
	cur := checked{loc: at, file: l.FileID, n: n, seq: c.Seq, hash: sum, dropped: c.Dropped}
	prev := &ck.prev
	if prev.n == 0 {
		if c.Seq == 1 && c.Prev != GenesisPrev {
			ck.fail(at, n, KindEdited, "seq 1 has prev %s, want %s: the line was edited", c.Prev, GenesisPrev)
			return
		}
		ck.accept(cur)
		return
	}
	newFile := l.FileID != prev.file
	chained := hashIs(c.Prev, prev.hash)
	if c.Seq != prev.seq+1 && chained {
		// In its place, but numbered otherwise.
		ck.fail(at, n, KindEdited, "seq %d follows seq %d, yet the line's prev is the hash of that line: its seq was edited", c.Seq, prev.seq)
		return
	}
	switch {
	case c.Seq == 1 && c.Prev == GenesisPrev && !newFile:
		ck.fail(at, n, KindRestarted, "a new chain starts here after seq %d (%s): the lines before it belong to another chain", prev.seq, prev.loc)
		return
	case c.Seq <= prev.seq:
		if newFile {
			ck.fail(at, n, KindReordered, "seq %d follows seq %d (%s): files out of order (give them oldest first), lines moved, or a new chain started", c.Seq, prev.seq, prev.loc)
		} else {
			ck.fail(at, n, KindReordered, "seq %d follows seq %d: lines moved or repeated", c.Seq, prev.seq)
		}
		return
	case c.Seq > prev.seq+1:
		ck.wait = &waiting{why: waitGap, loc: at, n: n, seq: c.Seq, sum: sum, newFile: newFile}
		return
	case !chained:
		ck.wait = &waiting{why: waitPrev, loc: at, n: n, seq: c.Seq, sum: sum, newFile: newFile}
		return
	}
	ck.accept(cur)
}

// settle decides the verdict on w, given next, the chain of the line after
// it (nil if there is none, or it is not a chained line).
func (ck *Checker) settle(w *waiting, next *Chain) {
	prev := &ck.prev
	switch w.why {
	case waitParse:
		if next != nil && hashIs(next.Torn, w.sum) {
			// A torn line, recovered by the next.
			if len(ck.rep.Torn) < maxListed {
				ck.rep.Torn = append(ck.rep.Torn, w.loc)
			}
			return
		}
		ck.fail(w.loc, w.n, KindMalformed, "%v", w.err)
	case waitGap:
		if next != nil && next.Seq > prev.seq && next.Seq < w.seq {
			ck.fail(w.loc, w.n, KindReordered, "seq %d comes before seq %d: lines moved", w.seq, next.Seq)
			return
		}
		missing := w.seq - prev.seq - 1
		if w.newFile && w.loc.Line == 1 {
			ck.fail(w.loc, w.n, KindMissing, "%d event(s) missing between %s (seq %d) and %s (seq %d): a rotated file is missing, or lines were deleted at the end or start of these", missing, prev.loc.File, prev.seq, w.loc.File, w.seq)
			return
		}
		ck.fail(w.loc, w.n, KindMissing, "seq jumps from %d to %d: %d line(s) before this one deleted or moved", prev.seq, w.seq, missing)
	case waitPrev:
		if next != nil && next.Seq == w.seq+1 && !hashIs(next.Prev, w.sum) {
			// The next line does not chain to this one either: this
			// one changed, not the one before.
			ck.fail(w.loc, w.n, KindEdited, "its prev is not the SHA-256 of the line before it (%s), and its own SHA-256 is not the prev of the next line: this line was edited", prev.loc)
			return
		}
		ck.fail(prev.loc, prev.n, KindEdited, "its SHA-256 is not the prev of the next line (%s): this line was edited", w.loc)
	}
}

// accept counts a line whose chain checked out.
func (ck *Checker) accept(cur checked) {
	if ck.prev.n == 0 {
		ck.rep.FirstSeq = cur.seq
	}
	ck.rep.Events++
	ck.rep.LastSeq = cur.seq
	if cur.dropped > 0 {
		ck.rep.Dropped += cur.dropped
		if len(ck.rep.Drops) < maxListed {
			ck.rep.Drops = append(ck.rep.Drops, cur.loc)
		}
	}
	ck.before, ck.prev = ck.prev, cur
}

// hashIs reports whether h, a lower-case hex SHA-256 (or anything else),
// is sum, without allocating.
func hashIs(h string, sum [sha256.Size]byte) bool {
	var b [sha256.Size]byte
	if len(h) != hex.EncodedLen(len(b)) {
		return false
	}
	if _, err := hex.Decode(b[:], []byte(h)); err != nil {
		return false
	}
	return b == sum
}

// parseLine parses a line's chain, strictly: the line must be one JSON
// object with a well-formed chain.
func parseLine(b []byte) (*Chain, error) {
	var l struct {
		Chain *Chain `json:"chain"`
	}
	if err := json.Unmarshal(b, &l); err != nil {
		return nil, fmt.Errorf("not a JSON object: %v", err)
	}
	if err := checkChain(l.Chain); err != nil {
		return nil, err
	}
	return l.Chain, nil
}

// checkChain checks that a line's decoded chain is well-formed.
func checkChain(c *Chain) error {
	switch {
	case c == nil:
		return errors.New(`no "chain": not written by a chaining audit writer`)
	case c.Seq == 0:
		return errors.New("chain.seq is 0")
	case !isHash(c.Prev):
		return fmt.Errorf("chain.prev %q is not a hex SHA-256", c.Prev)
	case c.Torn != "" && !isHash(c.Torn):
		return fmt.Errorf("chain.torn %q is not a hex SHA-256", c.Torn)
	}
	return nil
}

// lineReader reads the lines of files in turn.
type lineReader struct {
	files  []string
	opened int // files opened so far
	f      *os.File
	r      *bufio.Reader
	n      int // lines read from f
}

// next returns the next line, nil at the end of the last file.
func (lr *lineReader) next() (*Line, error) {
	for {
		if lr.f == nil {
			if lr.opened == len(lr.files) {
				return nil, nil
			}
			f, err := os.Open(lr.files[lr.opened])
			if err != nil {
				return nil, fmt.Errorf("audit verify: %w", err)
			}
			lr.opened++
			lr.f, lr.n = f, 0
			if lr.r == nil {
				lr.r = bufio.NewReaderSize(f, 64<<10)
			} else {
				lr.r.Reset(f)
			}
		}
		name := lr.files[lr.opened-1]
		b, complete, long, err := readLine(lr.r)
		if err != nil {
			return nil, fmt.Errorf("audit verify: read %s: %w", name, err)
		}
		if !complete && !long && len(b) == 0 { // end of this file
			lr.f.Close()
			lr.f = nil
			continue
		}
		lr.n++
		return &Line{
			Location: Location{File: name, Line: lr.n},
			FileID:   slices.Index(lr.files, name), // a name given twice is one file
			Bytes:    b,
			Complete: complete,
			Long:     long,
			LastFile: lr.opened == len(lr.files),
		}, nil
	}
}

func (lr *lineReader) close() {
	if lr.f != nil {
		lr.f.Close()
	}
}

// readLine reads a line from r: at most maxLine bytes of it (long says
// there was more), and whether a newline ended it (else the input did).
func readLine(r *bufio.Reader) (b []byte, complete, long bool, err error) {
	for {
		frag, err := r.ReadSlice('\n')
		if len(frag) > 0 && frag[len(frag)-1] == '\n' {
			frag, complete = frag[:len(frag)-1], true
		}
		if room := maxLine - len(b); len(frag) > room {
			frag, long = frag[:max(room, 0)], true
		}
		b = append(b, frag...)
		switch {
		case err == nil:
			return b, true, long, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF):
			return b, false, long, nil
		default:
			return nil, false, false, err
		}
	}
}
