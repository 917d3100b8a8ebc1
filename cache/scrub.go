package cache

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/time/rate"
)

// A ScrubCheck judges one stored .mod or .zip again, offline: against the
// checksum-database state or the ledger (package verify). file holds its
// bytes, whose SHA-256 the Cache has already checked against the entry.
// A non-nil bad means the bytes must never be served again; an error, that
// the check could not be made (the entry is kept).
type ScrubCheck func(ctx context.Context, m Meta, file string) (bad string, err error)

// ScrubOptions bounds a scrub.
type ScrubOptions struct {
	// Match selects the keys to scrub. Default: every .mod and .zip.
	Match func(key string) bool
	// BytesPerSecond bounds the reading, so that a scrub cannot starve
	// serving. Default 32 MiB/s.
	BytesPerSecond int64
	// OnQuarantine, if set, is told of each entry quarantined.
	OnQuarantine func(m Meta, reason string)
}

// A ScrubReport says what a scrub did.
type ScrubReport struct {
	Checked     int          `json:"checked"`
	Bytes       int64        `json:"bytes"`
	Quarantined []Quarantine `json:"quarantined"`
	// Unchecked are entries whose check could not be made, with why.
	Unchecked []string `json:"unchecked,omitempty"`
}

// A Quarantine is an entry taken out of service.
type Quarantine struct {
	Key    string `json:"key"`
	Reason string `json:"reason"`
	// File holds its bytes, kept for whoever investigates.
	File string `json:"file"`
}

// Scrub re-reads every stored .mod and .zip of the disk tier (those Match
// selects), checks its bytes against the SHA-256 its entry recorded, then
// asks check, and quarantines what fails either: the entry is removed
// from both tiers, so it is never served again (the next request fetches
// and verifies it anew), and its bytes are moved to quarantine/ in the
// cache directory. It stops when ctx ends, with what it did so far.
func (c *Cache) Scrub(ctx context.Context, check ScrubCheck, opts ScrubOptions) (ScrubReport, error) {
	if opts.Match == nil {
		opts.Match = func(key string) bool {
			return strings.HasSuffix(key, ".mod") || strings.HasSuffix(key, ".zip")
		}
	}
	if opts.BytesPerSecond <= 0 {
		opts.BytesPerSecond = 32 << 20
	}
	const burst = 1 << 20
	lim := rate.NewLimiter(rate.Limit(opts.BytesPerSecond), burst)

	var metas []Meta
	c.disk.mu.Lock()
	for k, e := range c.disk.entries {
		if opts.Match(k) {
			metas = append(metas, e.meta)
		}
	}
	c.disk.mu.Unlock()
	slices.SortFunc(metas, func(a, b Meta) int { return strings.Compare(a.Key, b.Key) })

	r := ScrubReport{Quarantined: []Quarantine{}}
	for _, m := range metas {
		if err := ctx.Err(); err != nil {
			return r, err
		}
		path := c.disk.blobPath(m.SHA256)
		sum, err := hashLimited(ctx, path, lim, burst)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			continue // evicted or purged meanwhile
		case ctx.Err() != nil:
			return r, ctx.Err()
		case err != nil:
			r.Unchecked = append(r.Unchecked, m.Key+": "+err.Error())
			continue
		}
		r.Checked++
		r.Bytes += m.Size
		reason := ""
		if sum != m.SHA256 {
			reason = fmt.Sprintf("its bytes changed on disk: SHA-256 %x, stored as %x", sum, m.SHA256)
		} else if check != nil {
			bad, err := check(ctx, m, path)
			if err != nil {
				r.Unchecked = append(r.Unchecked, m.Key+": "+err.Error())
				continue
			}
			reason = bad
		}
		if reason == "" {
			continue
		}
		q, err := c.quarantine(m, reason)
		if err != nil {
			return r, err
		}
		r.Quarantined = append(r.Quarantined, q)
		c.log.Error("cache: entry quarantined: never served again", "key", m.Key, "reason", reason, "file", q.File)
		if opts.OnQuarantine != nil {
			opts.OnQuarantine(m, reason)
		}
	}
	return r, nil
}

// hashLimited returns the SHA-256 of the file at path, reading at most
// lim's rate.
func hashLimited(ctx context.Context, path string, lim *rate.Limiter, burst int) ([32]byte, error) {
	var sum [32]byte
	f, err := os.Open(path)
	if err != nil {
		return sum, err
	}
	defer f.Close()
	h := sha256.New()
	buf := make([]byte, 256<<10)
	for {
		n, err := f.Read(buf)
		if n > 0 {
			h.Write(buf[:n])
			if werr := lim.WaitN(ctx, min(n, burst)); werr != nil {
				return sum, werr
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return sum, err
		}
	}
	copy(sum[:], h.Sum(nil))
	return sum, nil
}

// quarantine copies m's bytes to quarantine/ and removes m from both
// tiers.
func (c *Cache) quarantine(m Meta, reason string) (Quarantine, error) {
	dir := filepath.Join(c.disk.dir, "quarantine")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return Quarantine{}, fmt.Errorf("cache: %w", err)
	}
	key := sha256.Sum256([]byte(m.Key))
	name := filepath.Join(dir, fmt.Sprintf("%s-%x", time.Now().UTC().Format("20060102T150405.000000000Z"), key[:8]))
	data, err := os.ReadFile(c.disk.blobPath(m.SHA256))
	if err == nil {
		note := fmt.Sprintf("key %s\nreason %s\n", m.Key, reason)
		err = errors.Join(os.WriteFile(name+".why", []byte(note), 0o640), os.WriteFile(name, data, 0o640))
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return Quarantine{}, fmt.Errorf("cache: quarantining %s: %w", m.Key, err)
	}
	c.hot.Del([]byte(m.Key))
	c.disk.deleteKey(m.Key, m.SHA256, m.Stored)
	return Quarantine{Key: m.Key, Reason: reason, File: name}, nil
}
