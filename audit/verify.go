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
	Dropped  uint64     // events the writer dropped, queue full, as the chain records them
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
func Verify(files []string) (Report, error) {
	var rep Report
	if len(files) == 0 {
		return rep, errors.New("audit verify: no files")
	}
	lr := &lineReader{files: files}
	defer lr.close()
	var prev *checked
	for {
		cur, err := lr.next()
		if err != nil {
			rep.Files = lr.opened
			return rep, err
		}
		if cur == nil {
			break
		}
		p, c, err := check(lr, prev, cur)
		if err != nil {
			rep.Files = lr.opened
			return rep, err
		}
		if p != nil {
			rep.Problem = p
			break
		}
		if c == nil { // a recovered torn line
			if len(rep.Torn) < maxListed {
				rep.Torn = append(rep.Torn, cur.loc)
			}
			continue
		}
		if prev == nil {
			rep.FirstSeq = c.seq
		}
		rep.Events++
		rep.LastSeq, rep.LastHash = c.seq, hex.EncodeToString(c.hash[:])
		if c.dropped > 0 {
			rep.Dropped += c.dropped
			if len(rep.Drops) < maxListed {
				rep.Drops = append(rep.Drops, cur.loc)
			}
		}
		prev = c
	}
	rep.Files = lr.opened
	return rep, nil
}

// checked is a line whose chain checked out.
type checked struct {
	loc     Location
	seq     uint64
	hash    [sha256.Size]byte
	dropped uint64
}

// check checks line cur against prev, the line before it (nil for the
// first). It returns the problem, or the checked line, or neither for a
// recovered torn line.
func check(lr *lineReader, prev *checked, cur *line) (*Problem, *checked, error) {
	problem := func(at Location, k Kind, format string, args ...any) (*Problem, *checked, error) {
		return &Problem{Location: at, Kind: k, Detail: fmt.Sprintf(format, args...)}, nil, nil
	}
	if cur.long {
		return problem(cur.loc, KindMalformed, "line longer than %d bytes", maxLine)
	}
	if !cur.complete {
		if cur.lastFile {
			return problem(cur.loc, KindTorn, "the last line has no newline (%d bytes): the log was cut short, by a crash mid-write (a restart of modgate recovers it) or by truncation", len(cur.b))
		}
		return problem(cur.loc, KindTorn, "%s does not end with a newline: its last line (%d bytes) was cut short", cur.loc.File, len(cur.b))
	}
	c, perr := parseLine(cur.b)
	if perr != nil {
		nc, err := peekChain(lr)
		if err != nil {
			return nil, nil, err
		}
		if nc != nil && nc.Torn == lineHash(cur.b) {
			return nil, nil, nil // a torn line, recovered by the next
		}
		return problem(cur.loc, KindMalformed, "%v", perr)
	}
	l := &checked{loc: cur.loc, seq: c.Seq, hash: sha256.Sum256(cur.b), dropped: c.Dropped}
	if prev == nil {
		if c.Seq == 1 && c.Prev != GenesisPrev {
			return problem(cur.loc, KindEdited, "seq 1 has prev %s, want %s: the line was edited", c.Prev, GenesisPrev)
		}
		return nil, l, nil
	}
	newFile := cur.loc.File != prev.loc.File
	prevHash := hex.EncodeToString(prev.hash[:])
	if c.Seq != prev.seq+1 && c.Prev == prevHash {
		// In its place, but numbered otherwise.
		return problem(cur.loc, KindEdited, "seq %d follows seq %d, yet the line's prev is the hash of that line: its seq was edited", c.Seq, prev.seq)
	}
	switch {
	case c.Seq == 1 && c.Prev == GenesisPrev && !newFile:
		return problem(cur.loc, KindRestarted, "a new chain starts here after seq %d (%s): the lines before it belong to another chain", prev.seq, prev.loc)
	case c.Seq <= prev.seq:
		if newFile {
			return problem(cur.loc, KindReordered, "seq %d follows seq %d (%s): files out of order (give them oldest first), lines moved, or a new chain started", c.Seq, prev.seq, prev.loc)
		}
		return problem(cur.loc, KindReordered, "seq %d follows seq %d: lines moved or repeated", c.Seq, prev.seq)
	case c.Seq > prev.seq+1:
		nc, err := peekChain(lr)
		if err != nil {
			return nil, nil, err
		}
		if nc != nil && nc.Seq > prev.seq && nc.Seq < c.Seq {
			return problem(cur.loc, KindReordered, "seq %d comes before seq %d: lines moved", c.Seq, nc.Seq)
		}
		missing := c.Seq - prev.seq - 1
		if newFile && cur.loc.Line == 1 {
			return problem(cur.loc, KindMissing, "%d event(s) missing between %s (seq %d) and %s (seq %d): a rotated file is missing, or lines were deleted at the end or start of these", missing, prev.loc.File, prev.seq, cur.loc.File, c.Seq)
		}
		return problem(cur.loc, KindMissing, "seq jumps from %d to %d: %d line(s) before this one deleted or moved", prev.seq, c.Seq, missing)
	case c.Prev != prevHash:
		nc, err := peekChain(lr)
		if err != nil {
			return nil, nil, err
		}
		if nc != nil && nc.Seq == c.Seq+1 && nc.Prev != hex.EncodeToString(l.hash[:]) {
			// The next line does not chain to this one either: this
			// one changed, not the one before.
			return problem(cur.loc, KindEdited, "its prev is not the SHA-256 of the line before it (%s), and its own SHA-256 is not the prev of the next line: this line was edited", prev.loc)
		}
		return problem(prev.loc, KindEdited, "its SHA-256 is not the prev of the next line (%s): this line was edited", cur.loc)
	}
	return nil, l, nil
}

// peekChain parses the chain of the line after the current one, if there
// is one and it parses.
func peekChain(lr *lineReader) (*Chain, error) {
	next, err := lr.peek()
	if err != nil || next == nil || next.long || !next.complete {
		return nil, err
	}
	c, err := parseLine(next.b)
	if err != nil {
		return nil, nil
	}
	return c, nil
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
	switch {
	case l.Chain == nil:
		return nil, errors.New(`no "chain": not written by a chaining audit writer`)
	case l.Chain.Seq == 0:
		return nil, errors.New("chain.seq is 0")
	case !isHash(l.Chain.Prev):
		return nil, fmt.Errorf("chain.prev %q is not a hex SHA-256", l.Chain.Prev)
	case l.Chain.Torn != "" && !isHash(l.Chain.Torn):
		return nil, fmt.Errorf("chain.torn %q is not a hex SHA-256", l.Chain.Torn)
	}
	return l.Chain, nil
}

// A line is one line of a file.
type line struct {
	loc      Location
	b        []byte // without the newline; at most maxLine bytes
	complete bool   // ended by a newline
	long     bool   // longer than maxLine; b is cut
	lastFile bool   // in the last file
}

// lineReader reads the lines of files in turn, with one line of lookahead.
type lineReader struct {
	files  []string
	opened int // files opened so far
	f      *os.File
	r      *bufio.Reader
	n      int // lines read from f
	peeked *line
	eof    bool
}

func (lr *lineReader) next() (*line, error) {
	if l := lr.peeked; l != nil {
		lr.peeked = nil
		return l, nil
	}
	return lr.read()
}

func (lr *lineReader) peek() (*line, error) {
	if lr.peeked == nil {
		l, err := lr.read()
		if err != nil {
			return nil, err
		}
		lr.peeked = l
	}
	return lr.peeked, nil
}

func (lr *lineReader) read() (*line, error) {
	for {
		if lr.eof {
			return nil, nil
		}
		if lr.f == nil {
			if lr.opened == len(lr.files) {
				lr.eof = true
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
		return &line{
			loc:      Location{File: name, Line: lr.n},
			b:        b,
			complete: complete,
			long:     long,
			lastFile: lr.opened == len(lr.files),
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
