package cooldown

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/tlog"
)

// An anchor says that at Time the checksum database's log held at least
// the Tree.N records of Tree: every record numbered below Tree.N existed
// then.
type anchor struct {
	Time   time.Time
	Tree   tlog.Tree
	Source string // sourceTree or sourceIndex
}

// Where an anchor's time comes from.
const (
	// sourceTree: modgate verified a signed tree head of Tree at Time,
	// on its own clock.
	sourceTree = "tree"
	// sourceIndex: the module index dates a version whose record is
	// Tree.N-1 at Time. See learn.
	sourceIndex = "index"
)

// Limits on the anchors file.
const (
	maxAnchors      = 1000                 // kept; more are thinned, see thin
	maxAnchorsBytes = 4 * maxAnchors * 128 // the largest file read: room for lines that are not ours
	maxAnchorLine   = 128
)

// formatAnchor is a's line in the anchors file:
//
//	2026-12-07T09:00:00.123456789Z 41234567 <base64 tree hash> tree
func formatAnchor(a anchor) []byte {
	return fmt.Appendf(nil, "%s %d %s %s", a.Time.UTC().Format(time.RFC3339Nano), a.Tree.N, a.Tree.Hash, a.Source)
}

// parseAnchor parses a line of the anchors file.
func parseAnchor(line []byte) (anchor, error) {
	if len(line) > maxAnchorLine {
		return anchor{}, errors.New("line too long")
	}
	f := strings.Fields(string(line))
	if len(f) != 4 {
		return anchor{}, errors.New("want four fields: time, tree size, tree hash, source")
	}
	t, err := time.Parse(time.RFC3339Nano, f[0])
	if err != nil {
		return anchor{}, fmt.Errorf("time: %w", err)
	}
	n, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil || n <= 0 {
		return anchor{}, fmt.Errorf("tree size %q: want a positive integer", f[1])
	}
	h, err := tlog.ParseHash(f[2])
	if err != nil {
		return anchor{}, fmt.Errorf("tree hash %q: %w", f[2], err)
	}
	if f[3] != sourceTree && f[3] != sourceIndex {
		return anchor{}, fmt.Errorf("source %q: want %s or %s", f[3], sourceTree, sourceIndex)
	}
	return anchor{Time: t, Tree: tlog.Tree{N: n, Hash: h}, Source: f[3]}, nil
}

// insertAnchor inserts a into list, which is sorted by time, after any
// anchor of the same time.
func insertAnchor(list []anchor, a anchor) []anchor {
	i, _ := slices.BinarySearchFunc(list, a.Time, func(b anchor, t time.Time) int {
		if b.Time.After(t) {
			return 1
		}
		return -1
	})
	return slices.Insert(list, i, a)
}

// thin returns list, sorted by time, cut down to at most max anchors by
// thinning the old ones: the newest max/2 stay, and of the older ones the
// oldest and every second one. Applied again and again as anchors are
// added, it keeps recent anchors dense and old ones ever sparser. Which
// anchors go never matters for soundness, only for how soon a version is
// proven old: an anchor is evidence that makes versions servable, and
// dropping one makes none servable.
func thin(list []anchor, max int) []anchor {
	if len(list) <= max {
		return list
	}
	keep := max / 2
	old, recent := list[:len(list)-keep], list[len(list)-keep:]
	out := make([]anchor, 0, len(old)/2+1+keep)
	for i, a := range old {
		if i%2 == 0 {
			out = append(out, a)
		}
	}
	return append(out, recent...)
}
