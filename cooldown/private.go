package cooldown

import (
	"bytes"
	"fmt"
	"time"

	"golang.org/x/mod/module"
)

// Limits on the record of private versions first seen.
const (
	maxSeen      = 100_000  // versions recorded
	maxSeenLine  = 1 << 10  // one line: a time, a module path, a version
	maxSeenBytes = 32 << 20 // the file
)

// formatSeen is a line of the private file: "TIME PATH VERSION".
func formatSeen(mv module.Version, t time.Time) []byte {
	return fmt.Appendf(nil, "%s %s %s", t.UTC().Format(time.RFC3339Nano), mv.Path, mv.Version)
}

// parseSeen parses a line of the private file.
func parseSeen(line []byte) (module.Version, time.Time, error) {
	f := bytes.Fields(line)
	if len(f) != 3 || len(line) > maxSeenLine {
		return module.Version{}, time.Time{}, fmt.Errorf("want time, module path, version")
	}
	t, err := time.Parse(time.RFC3339Nano, string(f[0]))
	if err != nil {
		return module.Version{}, time.Time{}, err
	}
	mv := module.Version{Path: string(f[1]), Version: string(f[2])}
	if err := module.Check(mv.Path, mv.Version); err != nil {
		return module.Version{}, time.Time{}, err
	}
	return mv, t, nil
}

// privateFirstSeen returns when modgate first saw the private version mv:
// the earlier of what Options.FirstSeen says and the Checker's own
// record. A version neither knows is seen first now: the Checker records
// that, durably, before it returns, if record is set.
func (c *Checker) privateFirstSeen(mv module.Version, now time.Time, record bool) (time.Time, error) {
	t, ok := c.firstSeen(mv.Path, mv.Version)
	c.mu.Lock()
	defer c.mu.Unlock()
	own, ownOK := c.seen[mv]
	switch {
	case ok && (!ownOK || t.Before(own)):
		return t, nil
	case ownOK:
		return own, nil
	case !record:
		return now, nil
	}
	line := formatSeen(mv, now)
	if len(c.seen) >= maxSeen || len(line) > maxSeenLine {
		return time.Time{}, fmt.Errorf("the record of private versions first seen is full (%d versions) or the module path is too long", maxSeen)
	}
	if err := c.seenFile.append(line); err != nil {
		return time.Time{}, fmt.Errorf("recording when it was first seen: %w", err)
	}
	c.seen[mv] = now
	return now, nil
}
