package inventory

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/modgate/modgate/audit"
)

// MaxLine bounds a line of an audit file that ReadAudit reads, newline
// excluded: a longer line is malformed. It is the audit Writer's own
// bound.
const MaxLine = 1 << 20

// maxListed bounds the locations a Report lists.
const maxListed = 100

// A Report is what reading audit files found.
type Report struct {
	Lines     int // lines read
	Fetches   int // events counted as fetches
	Ignored   int // events that are not fetches
	Refused   int // fetches of new keys refused: the inventory is full
	Malformed int // lines that are not an audit event, or longer than MaxLine
	// MalformedAt lists the malformed lines (at most 100).
	MalformedAt []audit.Location
}

func (r *Report) add(o Report) {
	r.Lines += o.Lines
	r.Fetches += o.Fetches
	r.Ignored += o.Ignored
	r.Refused += o.Refused
	r.Malformed += o.Malformed
	for _, l := range o.MalformedAt {
		if len(r.MalformedAt) < maxListed {
			r.MalformedAt = append(r.MalformedAt, l)
		}
	}
}

// ReadAudit adds the events of audit JSON lines from r (named name in the
// Report) to inv, as Add would. Lines that do not parse as an audit event,
// or are longer than MaxLine, are counted and skipped; a last line without
// a newline is read like any other. The chain is not checked: see
// audit.Verify. The error is for r failing.
func (inv *Inventory) ReadAudit(name string, r io.Reader) (Report, error) {
	var rep Report
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		b, long, err := readLine(br)
		if err != nil {
			return rep, fmt.Errorf("read audit %s: %w", name, err)
		}
		if b == nil {
			return rep, nil
		}
		rep.Lines++
		if len(b) == 0 {
			continue // a blank line
		}
		var e audit.Event
		if long || json.Unmarshal(b, &e) != nil {
			rep.Malformed++
			if len(rep.MalformedAt) < maxListed {
				rep.MalformedAt = append(rep.MalformedAt, audit.Location{File: name, Line: rep.Lines})
			}
			continue
		}
		switch inv.add(&e) {
		case added:
			rep.Fetches++
		case ignored:
			rep.Ignored++
		case refused:
			rep.Refused++
		}
	}
}

// readLine reads a line, without its newline, from r: nil at the end. A
// line longer than MaxLine is read to its end but returned cut, with long
// set.
func readLine(r *bufio.Reader) (b []byte, long bool, err error) {
	for {
		frag, err := r.ReadSlice('\n')
		if len(frag) > 0 && frag[len(frag)-1] == '\n' {
			frag = frag[:len(frag)-1]
		}
		if room := MaxLine - len(b); len(frag) > room {
			frag, long = frag[:max(room, 0)], true
		}
		b = append(b, frag...)
		switch {
		case err == nil:
			if b == nil {
				b = []byte{}
			}
			return b, long, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF):
			if len(b) == 0 && !long {
				return nil, false, nil
			}
			return b, long, nil
		default:
			return nil, false, err
		}
	}
}

// FromAudit returns an inventory in memory only, built from the audit
// JSON lines of r.
func FromAudit(r io.Reader) (*Inventory, Report, error) {
	inv, err := Open(Options{})
	if err != nil {
		return nil, Report{}, err
	}
	rep, err := inv.ReadAudit("audit", r)
	return inv, rep, err
}

// Rebuild builds the inventory anew from audit files, read in the order
// given (oldest first), replacing whatever opts.Dir held, and returns it
// open. The new store is written (snapshot, then an empty journal, each
// atomically) only once every file has been read: until then, and if
// Rebuild fails, the old store stays as it was. No process may have
// opts.Dir open meanwhile.
func Rebuild(opts Options, files ...string) (*Inventory, Report, error) {
	dir := opts.Dir
	opts.Dir = ""
	inv, err := Open(opts)
	if err != nil {
		return nil, Report{}, fmt.Errorf("rebuild inventory: %w", err)
	}
	var rep Report
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			return nil, rep, fmt.Errorf("rebuild inventory: %w", err)
		}
		r, err := inv.ReadAudit(name, f)
		f.Close()
		rep.add(r)
		if err != nil {
			return nil, rep, fmt.Errorf("rebuild inventory: %w", err)
		}
	}
	if dir == "" {
		return inv, rep, nil
	}
	compact := opts.CompactBytes
	if compact == 0 {
		compact = DefaultCompactBytes
	}
	s, err := createStore(dir, compact, inv.log)
	if err != nil {
		return nil, rep, fmt.Errorf("rebuild inventory: %w", err)
	}
	if err := s.compact(inv.snapshotTo); err != nil {
		s.close()
		return nil, rep, fmt.Errorf("rebuild inventory: %w", err)
	}
	inv.mu.Lock()
	inv.store = s
	inv.mu.Unlock()
	inv.startFlusher(opts.FlushInterval)
	return inv, rep, nil
}
