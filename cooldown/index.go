package cooldown

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"golang.org/x/mod/module"
	"golang.org/x/mod/sumdb/tlog"
)

// Limits on the module index's answers, and how the Checker asks it.
const (
	maxIndexBytes  = 1 << 20 // one answer
	maxIndexLine   = 4 << 10 // one entry
	indexLimit     = 256     // entries asked for at once
	indexWitnesses = 8       // entries looked up to date an anchor
	indexTimeout   = 30 * time.Second
	indexRetry     = time.Minute // between attempts to learn an anchor
)

// indexWindows are how far before the cutoff the Checker looks for index
// entries, widening the window until it holds indexWitnesses of them.
var indexWindows = []time.Duration{10 * time.Minute, time.Hour, 6 * time.Hour, 36 * time.Hour, 9 * 24 * time.Hour}

// An IndexEntry is one line of a module index: a module version and when
// the index first saw it.
type IndexEntry struct {
	Path      string
	Version   string
	Timestamp time.Time
}

// httpIndex asks a module index over HTTP.
type httpIndex struct {
	url    *url.URL
	client *http.Client
}

// entries asks for at most limit entries from since on.
func (h *httpIndex) entries(ctx context.Context, since time.Time, limit int) ([]IndexEntry, error) {
	ctx, cancel := context.WithTimeout(ctx, indexTimeout)
	defer cancel()
	u := *h.url
	q := u.Query()
	q.Set("since", since.UTC().Format(time.RFC3339Nano))
	q.Set("limit", strconv.Itoa(limit))
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", u.Redacted(), resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxIndexBytes+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u.Redacted(), err)
	}
	if len(body) > maxIndexBytes {
		return nil, fmt.Errorf("GET %s: answer longer than %d bytes", u.Redacted(), maxIndexBytes)
	}
	return parseIndex(body, since, limit)
}

// parseIndex parses an index answer to ?since=since&limit=limit: at most
// limit JSON lines {"Path","Version","Timestamp"}, canonical module
// versions, with timestamps from since on, in order. Any bad line fails
// the whole answer.
func parseIndex(body []byte, since time.Time, limit int) ([]IndexEntry, error) {
	var out []IndexEntry
	n := 0
	for line := range bytes.Lines(body) {
		n++
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		if len(line) > maxIndexLine {
			return nil, fmt.Errorf("index line %d: longer than %d bytes", n, maxIndexLine)
		}
		var e IndexEntry
		if err := json.Unmarshal(line, &e); err != nil {
			return nil, fmt.Errorf("index line %d: %w", n, err)
		}
		if err := module.Check(e.Path, e.Version); err != nil {
			return nil, fmt.Errorf("index line %d: %w", n, err)
		}
		if module.CanonicalVersion(e.Version) != e.Version {
			return nil, fmt.Errorf("index line %d: version %q is not canonical", n, e.Version)
		}
		switch {
		case e.Timestamp.IsZero():
			return nil, fmt.Errorf("index line %d: no timestamp", n)
		case e.Timestamp.Before(since):
			return nil, fmt.Errorf("index line %d: timestamp %s is before since=%s", n, e.Timestamp.Format(time.RFC3339Nano), since.Format(time.RFC3339Nano))
		case len(out) > 0 && e.Timestamp.Before(out[len(out)-1].Timestamp):
			return nil, fmt.Errorf("index line %d: timestamp %s is out of order", n, e.Timestamp.Format(time.RFC3339Nano))
		case len(out) >= limit:
			return nil, fmt.Errorf("index line %d: more than the %d entries asked for", n, limit)
		}
		out = append(out, e)
	}
	return out, nil
}

// learn dates an anchor with the module index, for a Checker that has no
// anchor of its own older than cutoff. It asks the index for versions it
// first saw shortly before cutoff and looks up the last indexWitnesses of
// them in the checksum database. A record that existed when the index saw
// its version says that the log held at least that many records then; of
// the records, learn takes the smallest, so that a version the database
// recorded late (after someone's first lookup, perhaps learn's own) does
// not make the anchor claim more than the others support. Records beyond
// the latest tree head, fetched before any lookup, are ignored for the
// same reason. The anchor's tree hash is computed from the log, so it is
// on the timeline by construction.
func (c *Checker) learn(ctx context.Context, cutoff time.Time) error {
	before, err := c.sum.latestTree(ctx)
	if err != nil {
		return fmt.Errorf("checksum database %s: %w", c.sum.name, err)
	}
	var cands []IndexEntry
	for _, w := range indexWindows {
		since := cutoff.Add(-w)
		entries, err := c.index(ctx, since, indexLimit)
		if err != nil {
			return fmt.Errorf("module index: %w", err)
		}
		cands = cands[:0]
		for _, e := range entries {
			if !e.Timestamp.After(cutoff) && !e.Timestamp.Before(since) {
				cands = append(cands, e)
			}
		}
		if len(cands) >= indexWitnesses {
			break
		}
	}
	if len(cands) == 0 {
		return fmt.Errorf("module index: no entry older than %s in the last %s", fmtDuration(c.minAge), fmtDuration(indexWindows[len(indexWindows)-1]))
	}
	if len(cands) > indexWitnesses {
		cands = cands[len(cands)-indexWitnesses:]
	}
	var (
		best    *IndexEntry
		bestRec record
		errs    []error
	)
	for i := range cands {
		e := &cands[i]
		rec, _, err := c.sum.lookup(ctx, e.Path, e.Version)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s@%s: %w", e.Path, e.Version, err))
			continue
		}
		if rec.N >= before.N {
			continue
		}
		if best == nil || rec.N < bestRec.N {
			best, bestRec = e, rec
		}
	}
	if best == nil {
		if len(errs) > 0 {
			return fmt.Errorf("no entry of the module index could be dated in the checksum database: %w", errors.Join(errs...))
		}
		return errors.New("no entry of the module index was in the checksum database before modgate asked")
	}
	h, err := c.sum.treeHash(ctx, bestRec.N+1)
	if err != nil {
		return fmt.Errorf("checksum database %s: %w", c.sum.name, err)
	}
	a := anchor{Time: best.Timestamp, Tree: tlog.Tree{N: bestRec.N + 1, Hash: h}, Source: sourceIndex}
	c.mu.Lock()
	c.proven[a.Tree] = true
	err = c.addAnchorLocked(a)
	c.mu.Unlock()
	c.log.Info("cooldown: anchor dated by the module index", "time", a.Time, "records", a.Tree.N, "module", best.Path, "version", best.Version, "err", err)
	return nil
}
