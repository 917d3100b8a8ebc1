// Package sumanswer parses the checksum database's answers that carry a
// signed tree head — /latest and /lookup/M@V — and checks what can be
// checked without the log's tiles: size limits, the signature against the
// database's key, and that a lookup's record is the version asked for and
// is numbered within its tree. Whether the tree really holds that record
// is for the caller to prove (tlog.TileHashReader).
package sumanswer

import (
	"fmt"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// TileHeight is the height of the log's tiles (2^8 hashes each), as
// the go command and sum.golang.org have them.
const TileHeight = 8

// Limits on what the checksum database sends.
const (
	MaxLookupBytes = 64 << 10 // a record (a few go.sum lines) and a signed tree head
	MaxNoteBytes   = 16 << 10 // a signed tree head
)

// Tree verifies msg, a signed tree head, with v and returns its tree.
func Tree(msg []byte, v note.Verifiers) (tlog.Tree, error) {
	if len(msg) > MaxNoteBytes {
		return tlog.Tree{}, fmt.Errorf("signed tree head longer than %d bytes", MaxNoteBytes)
	}
	n, err := note.Open(msg, v)
	if err != nil {
		return tlog.Tree{}, fmt.Errorf("signed tree head: %w", err)
	}
	tree, err := tlog.ParseTree([]byte(n.Text))
	if err != nil {
		return tlog.Tree{}, fmt.Errorf("signed tree head: %w", err)
	}
	return tree, nil
}

// Lookup parses data, the answer to /lookup/path@version: the record
// number, the record text and a signed tree head, msg, which it verifies
// with v. The record must hold the zip hash line of path at version (a
// record number proves things about whatever record it numbers, so
// another module's must not pass) and be numbered within the tree.
func Lookup(data []byte, path, version string, v note.Verifiers) (id int64, text []byte, tree tlog.Tree, msg []byte, err error) {
	if len(data) > MaxLookupBytes {
		return 0, nil, tlog.Tree{}, nil, fmt.Errorf("lookup answer longer than %d bytes", MaxLookupBytes)
	}
	id, text, msg, err = tlog.ParseRecord(data)
	if err != nil {
		return 0, nil, tlog.Tree{}, nil, fmt.Errorf("lookup answer: %w", err)
	}
	if id < 0 {
		return 0, nil, tlog.Tree{}, nil, fmt.Errorf("lookup answer: record number %d", id)
	}
	prefix := path + " " + version + " "
	found := false
	for line := range strings.SplitSeq(string(text), "\n") {
		if strings.HasPrefix(line, prefix) {
			found = true
			break
		}
	}
	if !found {
		return 0, nil, tlog.Tree{}, nil, fmt.Errorf("lookup answer: record %d is not about %s %s", id, path, version)
	}
	tree, err = Tree(msg, v)
	if err != nil {
		return 0, nil, tlog.Tree{}, nil, fmt.Errorf("lookup answer: %w", err)
	}
	if id >= tree.N {
		return 0, nil, tlog.Tree{}, nil, fmt.Errorf("lookup answer: record %d is outside its tree of %d records", id, tree.N)
	}
	return id, text, tree, msg, nil
}
