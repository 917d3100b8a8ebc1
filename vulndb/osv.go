package vulndb

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"golang.org/x/mod/module"
	"golang.org/x/mod/semver"
)

// The pseudo-module paths of the database: the standard library and the
// go command and its tools, versioned by Go release (1.21.5, 1.22.0-rc.1).
const (
	stdlibPath    = "stdlib"
	toolchainPath = "toolchain"
)

// Limits on what the database may hold.
const (
	maxIndexBytes = 32 << 20 // index/db.json, index/modules.json
	maxEntryBytes = 1 << 20  // ID/GO-….json
	maxEntries    = 100_000  // distinct IDs
	maxSummary    = 1 << 10  // bytes of a summary kept
	maxAliases    = 64
)

// dbIndex is index/db.json.
type dbIndex struct {
	Modified time.Time `json:"modified"`
}

// parseDBIndex parses index/db.json.
func parseDBIndex(data []byte) (time.Time, error) {
	var ix dbIndex
	if err := strictUnmarshal(data, &ix); err != nil {
		return time.Time{}, fmt.Errorf("parse index/db.json: %w", err)
	}
	if ix.Modified.IsZero() {
		return time.Time{}, errors.New("parse index/db.json: no modified time")
	}
	return ix.Modified.UTC(), nil
}

// modulesIndex is index/modules.json.
type modulesIndex []struct {
	Path  string `json:"path"`
	Vulns []struct {
		ID       string    `json:"id"`
		Modified time.Time `json:"modified"`
		Fixed    string    `json:"fixed"`
	} `json:"vulns"`
}

// parseModulesIndex parses index/modules.json into the modified time of
// each ID it lists. IDs are checked before anything builds a path from
// them.
func parseModulesIndex(data []byte) (map[string]time.Time, error) {
	var ix modulesIndex
	if err := strictUnmarshal(data, &ix); err != nil {
		return nil, fmt.Errorf("parse index/modules.json: %w", err)
	}
	ids := make(map[string]time.Time)
	for i, m := range ix {
		if err := checkPath(m.Path); err != nil {
			return nil, fmt.Errorf("parse index/modules.json: module %d: %w", i, err)
		}
		for _, v := range m.Vulns {
			if !idPattern.MatchString(v.ID) {
				return nil, fmt.Errorf("parse index/modules.json: %s: bad vulnerability ID %q", m.Path, v.ID)
			}
			if v.Modified.IsZero() {
				return nil, fmt.Errorf("parse index/modules.json: %s: %s: no modified time", m.Path, v.ID)
			}
			if v.Fixed != "" && !semver.IsValid("v"+v.Fixed) {
				return nil, fmt.Errorf("parse index/modules.json: %s: %s: bad fixed version %q", m.Path, v.ID, v.Fixed)
			}
			if t, ok := ids[v.ID]; ok && !t.Equal(v.Modified) {
				return nil, fmt.Errorf("parse index/modules.json: %s: modified %v here, %v for another module", v.ID, v.Modified, t)
			}
			ids[v.ID] = v.Modified.UTC()
			if len(ids) > maxEntries {
				return nil, fmt.Errorf("parse index/modules.json: more than %d vulnerabilities", maxEntries)
			}
		}
	}
	return ids, nil
}

// osvEntry is the part of an OSV entry modgate reads.
type osvEntry struct {
	ID        string     `json:"id"`
	Modified  time.Time  `json:"modified"`
	Published time.Time  `json:"published"`
	Withdrawn *time.Time `json:"withdrawn"`
	Aliases   []string   `json:"aliases"`
	Summary   string     `json:"summary"`
	Affected  []struct {
		Package struct {
			Name      string `json:"name"`
			Ecosystem string `json:"ecosystem"`
		} `json:"package"`
		Ranges []struct {
			Type   string `json:"type"`
			Events []struct {
				Introduced   string `json:"introduced"`
				Fixed        string `json:"fixed"`
				LastAffected string `json:"last_affected"`
			} `json:"events"`
		} `json:"ranges"`
	} `json:"affected"`
}

// entry is a checked OSV entry, as a DB holds it.
type entry struct {
	id        string
	modified  time.Time
	summary   string
	aliases   []string
	withdrawn bool
	affects   []affect
	size      int64 // bytes of the JSON
}

// affect is the versions of one module an entry affects.
type affect struct {
	path  string
	spans []span // all versions if empty
}

// span is a half-open interval of affected versions, in Go's form ("v"
// first): [introduced, fixed), or [introduced, lastAffected] when
// lastAffected is set. An empty introduced is the lowest version; an
// empty fixed and lastAffected, no end.
type span struct {
	introduced, fixed, lastAffected string
}

// contains reports whether the valid semantic version v is in s.
func (s span) contains(v string) bool {
	if s.introduced != "" && semver.Compare(v, s.introduced) < 0 {
		return false
	}
	switch {
	case s.fixed != "":
		return semver.Compare(v, s.fixed) < 0
	case s.lastAffected != "":
		return semver.Compare(v, s.lastAffected) <= 0
	}
	return true
}

// parseEntry parses and checks ID/<id>.json. Every version must be valid
// once "v" is put before it, the events of a range alternate introduced
// and fixed (or last_affected) in increasing order, and every package is a
// valid module path of the Go ecosystem, or stdlib or toolchain.
func parseEntry(id string, data []byte) (*entry, error) {
	if len(data) > maxEntryBytes {
		return nil, fmt.Errorf("parse %s: longer than %d bytes", id, maxEntryBytes)
	}
	var o osvEntry
	if err := strictUnmarshal(data, &o); err != nil {
		return nil, fmt.Errorf("parse %s: %w", id, err)
	}
	if o.ID != id {
		return nil, fmt.Errorf("parse %s: the entry's id is %q", id, o.ID)
	}
	if o.Modified.IsZero() {
		return nil, fmt.Errorf("parse %s: no modified time", id)
	}
	if len(o.Aliases) > maxAliases {
		return nil, fmt.Errorf("parse %s: more than %d aliases", id, maxAliases)
	}
	e := &entry{
		id:        id,
		modified:  o.Modified.UTC(),
		summary:   cleanText(o.Summary, maxSummary),
		withdrawn: o.Withdrawn != nil,
		size:      int64(len(data)),
	}
	for _, a := range o.Aliases {
		e.aliases = append(e.aliases, cleanText(a, 64))
	}
	if len(o.Affected) == 0 && !e.withdrawn {
		return nil, fmt.Errorf("parse %s: affects nothing", id)
	}
	for i, a := range o.Affected {
		if a.Package.Ecosystem != "Go" {
			return nil, fmt.Errorf("parse %s: affected[%d]: ecosystem %q, want Go", id, i, a.Package.Ecosystem)
		}
		if err := checkPath(a.Package.Name); err != nil {
			return nil, fmt.Errorf("parse %s: affected[%d]: %w", id, i, err)
		}
		af := affect{path: a.Package.Name}
		for j, r := range a.Ranges {
			if r.Type != "SEMVER" {
				return nil, fmt.Errorf("parse %s: affected[%d].ranges[%d]: type %q, want SEMVER", id, i, j, r.Type)
			}
			spans, err := parseEvents(r.Events)
			if err != nil {
				return nil, fmt.Errorf("parse %s: affected[%d].ranges[%d]: %w", id, i, j, err)
			}
			af.spans = append(af.spans, spans...)
		}
		// OSV: an affected package without ranges is affected at every
		// version. spans is then empty, which contains means so.
		e.affects = append(e.affects, af)
	}
	return e, nil
}

// parseEvents checks the events of one SEMVER range and turns them into
// spans.
func parseEvents(events []struct {
	Introduced   string `json:"introduced"`
	Fixed        string `json:"fixed"`
	LastAffected string `json:"last_affected"`
}) ([]span, error) {
	if len(events) == 0 {
		return nil, errors.New("no events")
	}
	var spans []span
	prev := "" // the last version seen, in Go's form; "" before any
	open := false
	for k, ev := range events {
		n := 0
		for _, s := range []string{ev.Introduced, ev.Fixed, ev.LastAffected} {
			if s != "" {
				n++
			}
		}
		if n != 1 {
			return nil, fmt.Errorf("events[%d]: want exactly one of introduced, fixed, last_affected", k)
		}
		switch {
		case ev.Introduced != "":
			if open {
				return nil, fmt.Errorf("events[%d]: introduced twice without a fix between", k)
			}
			v := ""
			if ev.Introduced != "0" {
				var err error
				if v, err = goVersion(ev.Introduced); err != nil {
					return nil, fmt.Errorf("events[%d]: %w", k, err)
				}
				if prev != "" && semver.Compare(v, prev) <= 0 {
					return nil, fmt.Errorf("events[%d]: introduced %s is not after %s", k, ev.Introduced, prev[1:])
				}
			} else if k != 0 {
				return nil, fmt.Errorf("events[%d]: introduced 0 after other events", k)
			}
			spans = append(spans, span{introduced: v})
			prev, open = v, true
		default:
			if !open {
				return nil, fmt.Errorf("events[%d]: a fix without an introduction before it", k)
			}
			s := ev.Fixed + ev.LastAffected
			v, err := goVersion(s)
			if err != nil {
				return nil, fmt.Errorf("events[%d]: %w", k, err)
			}
			c := semver.Compare(v, prev)
			last := &spans[len(spans)-1]
			if ev.Fixed != "" {
				if prev != "" && c <= 0 {
					return nil, fmt.Errorf("events[%d]: fixed %s is not after introduced %s", k, s, prev[1:])
				}
				last.fixed = v
			} else {
				if prev != "" && c < 0 {
					return nil, fmt.Errorf("events[%d]: last_affected %s is before introduced %s", k, s, prev[1:])
				}
				last.lastAffected = v
			}
			prev, open = v, false
		}
	}
	return spans, nil
}

// goVersion turns an OSV SEMVER version (no "v") into Go's form.
func goVersion(s string) (string, error) {
	v := "v" + s
	// Canonical drops the build suffix (+incompatible): keep it.
	if strings.HasPrefix(s, "v") || !semver.IsValid(v) || semver.Canonical(v)+semver.Build(v) != v {
		return "", fmt.Errorf("bad version %q", s)
	}
	return v, nil
}

// checkPath checks a module path of the database: a valid module path,
// or one of the pseudo-modules stdlib and toolchain.
func checkPath(p string) error {
	if p == stdlibPath || p == toolchainPath {
		return nil
	}
	if err := module.CheckPath(p); err != nil {
		return err
	}
	return nil
}

// strictUnmarshal unmarshals one JSON value, and nothing after it.
func strictUnmarshal(data []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(data))
	if err := d.Decode(v); err != nil {
		return err
	}
	if d.More() {
		return errors.New("data after the JSON value")
	}
	if _, err := d.Token(); err == nil {
		return errors.New("data after the JSON value")
	}
	return nil
}

// cleanText makes untrusted text fit for one line of a plain-text
// response: valid UTF-8, no control characters, spaces collapsed, at most
// max bytes.
func cleanText(s string, max int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	var b strings.Builder
	space := false
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == '\u2028' || r == '\u2029' || r == ' ' {
			space = b.Len() > 0
			continue
		}
		if space {
			b.WriteByte(' ')
			space = false
		}
		if b.Len()+len(string(r)) > max {
			break
		}
		b.WriteRune(r)
	}
	return b.String()
}
