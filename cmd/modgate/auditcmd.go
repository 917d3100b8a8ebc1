package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/modgate/modgate/audit"
)

const auditUsage = `Usage:

	modgate audit verify [--as-given] FILE…

The audit log (modgate serve --audit FILE) is a hash chain: each line
carries its sequence number and the SHA-256 of the line before it, across
rotated files (FILE.1 the newest … FILE.N the oldest) and restarts.

verify checks the chain of the files given and prints how many events it
checked, or fails naming the first line (FILE:LINE) that was edited,
deleted, moved, repeated or cut short, or the first rotated file missing.
Give the whole rotated set to check it whole: modgate audit verify FILE*.
Files are checked oldest first, whatever order they are given in: FILE.N
before FILE.N-1 before FILE (files named alike are sorted by their
numeric suffix; others keep their place). With --as-given they are
checked in the order given, oldest first.

A torn line that modgate recovered when it restarted after a crash is
listed, not an error; drops (the audit queue full under load, or events
lost to a failed write, the disk full) are listed too. A log's first
lines may have been rotated away; its very last lines can only be
checked against a seq and hash kept elsewhere (verify prints them).

Flags:
`

// auditCmd runs `modgate audit`.
func auditCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("audit", auditUsage, stderr)
	asGiven := fs.Bool("as-given", false, "check the files in the order given, not sorted by rotation suffix")
	if _, err := parseSub(fs, args, "verify"); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return usageError{"audit verify: want at least one FILE"}
	}
	files := fs.Args()
	if !*asGiven {
		files = chainOrder(files)
	}
	rep, err := audit.Verify(files)
	if err != nil {
		return err
	}
	if rep.Problem != nil {
		return fmt.Errorf("audit chain broken at %v (after %d intact events)", rep.Problem, rep.Events)
	}
	fmt.Fprintf(stdout, "%d events in %d files, chain intact", rep.Events, rep.Files)
	if rep.Events > 0 {
		fmt.Fprintf(stdout, " (seq %d to %d; last line sha256 %s)", rep.FirstSeq, rep.LastSeq, rep.LastHash)
	}
	fmt.Fprintln(stdout)
	if rep.Dropped > 0 {
		fmt.Fprintf(stdout, "%d events dropped (audit queue full) or lost (failed writes), recorded at %s\n", rep.Dropped, locations(rep.Drops))
	}
	if len(rep.Torn) > 0 {
		fmt.Fprintf(stdout, "torn lines recovered after a crash (not tampering): %s\n", locations(rep.Torn))
	}
	return nil
}

// chainOrder sorts files into chain order, oldest first: each group of
// files named NAME, NAME.1, NAME.2 … (as audit.OpenFile rotates them)
// becomes … NAME.2, NAME.1, NAME, at the place of its first member.
func chainOrder(files []string) []string {
	type file struct {
		name, base string
		n          int // rotation suffix; 0 for the current file
		group      int // first appearance of base
	}
	groups := map[string]int{}
	list := make([]file, len(files))
	for i, name := range files {
		base, n := name, 0
		if j := strings.LastIndexByte(name, '.'); j >= 0 {
			if k, err := strconv.Atoi(name[j+1:]); err == nil && k > 0 && name[j+1] != '+' && name[j+1] != '0' {
				base, n = name[:j], k
			}
		}
		if _, ok := groups[base]; !ok {
			groups[base] = len(groups)
		}
		list[i] = file{name: name, base: base, n: n, group: groups[base]}
	}
	slices.SortStableFunc(list, func(a, b file) int {
		return cmp.Or(cmp.Compare(a.group, b.group), cmp.Compare(b.n, a.n))
	})
	out := make([]string, len(list))
	for i, f := range list {
		out[i] = f.name
	}
	return out
}

// locations lists some locations, and how many more there are.
func locations(locs []audit.Location) string {
	const show = 5
	var s []string
	for _, l := range locs[:min(len(locs), show)] {
		s = append(s, l.String())
	}
	if len(locs) > show {
		s = append(s, fmt.Sprintf("and %d more", len(locs)-show))
	}
	return strings.Join(s, ", ")
}
