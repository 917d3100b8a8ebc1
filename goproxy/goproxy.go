// Package goproxy parses the request targets of the GOPROXY protocol and of
// the checksum database protocol proxied through it.
//
// Parse is the whole grammar. It accepts the method "GET" or "HEAD" and a raw
// request target (the bytes after the method on the request line) of one of
// these forms, where $module and $version are escaped as described in
// [golang.org/x/mod/module] ("!" marks an upper-case letter):
//
//	/$module/@v/list
//	/$module/@v/$version.info  ($version may also be a query such as "master")
//	/$module/@v/$version.mod   ($version must be canonical)
//	/$module/@v/$version.zip   ($version must be canonical)
//	/$module/@latest
//	/sumdb/$name/supported
//	/sumdb/$name/latest
//	/sumdb/$name/lookup/$module@$version  ($version must be canonical)
//	/sumdb/$name/tile/$H/$L/$N[.p/$W]     ($L may be "data")
//
// The target is limited to DefaultMaxTarget bytes unless the caller chooses
// another limit. It must not contain a query or fragment, raw control bytes,
// spaces, backslashes or non-ASCII bytes. Module paths and versions need no
// percent-encoding: the one escape the go command sends is "%21" for the
// "!" that marks an upper-case letter (it writes github.com/BurntSushi as
// github.com/%21burnt%21sushi), so "%21" and a raw "!" are the only
// accepted spellings of it, and every other percent-escape is refused: it
// could only be another spelling of a resource, one that evades audit
// searches and path checks. Empty segments and the segments "." and ".."
// are rejected. Exactly one path segment may contain '@', and it must be
// the endpoint marker "@v" or "@latest" (or, for a lookup, the final
// module@version segment). All module path and version decisions are made
// by golang.org/x/mod.
//
// A successfully parsed Request has one canonical form, [Request.Path], the
// go command's spelling, which Parse maps back to the same Request.
//
// Rejections are *Error values whose Class is ErrMethod (a method other than
// GET or HEAD), ErrMalformed (a target that breaks the grammar above) or
// ErrNotFound (a well-formed target that names no endpoint at all).
// Mapping classes to HTTP status codes is up to the caller.
package goproxy

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/mod/module"
	"golang.org/x/mod/semver"
	"golang.org/x/mod/sumdb/tlog"
)

// A Kind identifies the endpoint a request addresses.
type Kind uint8

const (
	KindList           Kind = iota + 1 // /$module/@v/list
	KindInfo                           // /$module/@v/$version.info ($version may be a query such as a branch name)
	KindMod                            // /$module/@v/$version.mod (canonical version only)
	KindZip                            // /$module/@v/$version.zip (canonical version only)
	KindLatest                         // /$module/@latest
	KindSumDBSupported                 // /sumdb/$name/supported
	KindSumDBLatest                    // /sumdb/$name/latest
	KindSumDBLookup                    // /sumdb/$name/lookup/$module@$version
	KindSumDBTile                      // /sumdb/$name/tile/$H/$L/$N[.p/$W] (also tile/$H/data/...)
)

var kindNames = [...]string{
	KindList:           "list",
	KindInfo:           "info",
	KindMod:            "mod",
	KindZip:            "zip",
	KindLatest:         "latest",
	KindSumDBSupported: "sumdb-supported",
	KindSumDBLatest:    "sumdb-latest",
	KindSumDBLookup:    "sumdb-lookup",
	KindSumDBTile:      "sumdb-tile",
}

// String returns the name of the kind, such as "zip" or "sumdb-tile".
func (k Kind) String() string {
	if k >= KindList && k <= KindSumDBTile {
		return kindNames[k]
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// IsSumDB reports whether k is one of the checksum database kinds.
func (k Kind) IsSumDB() bool {
	return k >= KindSumDBSupported && k <= KindSumDBTile
}

// A Request is a parsed request target.
type Request struct {
	Kind    Kind
	Module  string    // unescaped module path (GOPROXY kinds and KindSumDBLookup), else ""
	Version string    // unescaped version (info, mod, zip, lookup), else ""
	SumDB   string    // checksum database name (sumdb kinds), else ""
	Tile    tlog.Tile // KindSumDBTile only
}

// Path returns the canonical request path of r, beginning with "/", as the
// go command sends it: the module path and version escaped with
// module.EscapePath and module.EscapeVersion, and the "!" that marks an
// upper-case letter written "%21"; nothing else is percent-encoded. Tile
// paths come from tlog.Tile.Path.
// Path returns "" if r cannot be written as a request path, which never
// happens for a Request returned by Parse.
func (r Request) Path() string {
	// Each part is escaped and checked only if the kind has it: a warm
	// hit computes its key with this.
	escMod := func() (string, bool) {
		mod, err := module.EscapePath(r.Module)
		return strings.ReplaceAll(mod, "!", bangEscape), err == nil
	}
	escVers := func() (string, bool) {
		vers, err := module.EscapeVersion(r.Version)
		return strings.ReplaceAll(vers, "!", bangEscape), err == nil
	}
	switch r.Kind {
	case KindList, KindLatest, KindInfo, KindMod, KindZip:
		mod, ok := escMod()
		if !ok {
			return ""
		}
		switch r.Kind {
		case KindList:
			return "/" + mod + "/@v/list"
		case KindLatest:
			return "/" + mod + "/@latest"
		}
		vers, ok := escVers()
		if !ok {
			return ""
		}
		return "/" + mod + "/@v/" + vers + "." + r.Kind.String()
	}

	if module.CheckPath(r.SumDB) != nil || strings.Contains(r.SumDB, "/") {
		return ""
	}
	db := "/sumdb/" + r.SumDB
	switch r.Kind {
	case KindSumDBSupported:
		return db + "/supported"
	case KindSumDBLatest:
		return db + "/latest"
	case KindSumDBLookup:
		mod, modOK := escMod()
		vers, versOK := escVers()
		if modOK && versOK {
			return db + "/lookup/" + mod + "@" + vers
		}
	case KindSumDBTile:
		if t, err := tlog.ParseTilePath(r.Tile.Path()); err == nil && t == r.Tile {
			return db + "/" + r.Tile.Path()
		}
	}
	return ""
}

// An Error describes why Parse rejected a request.
type Error struct {
	Class  error  // one of ErrMethod, ErrMalformed, ErrNotFound
	Reason string // one line of plain text, safe to show a client
}

// Error returns e.Reason.
func (e *Error) Error() string { return e.Reason }

// Unwrap returns e.Class, so that errors.Is(err, ErrMalformed) and the like work.
func (e *Error) Unwrap() error { return e.Class }

// The classes of Error.
var (
	ErrMethod    = errors.New("method not allowed") // method other than GET or HEAD
	ErrMalformed = errors.New("malformed request")  // target breaks the grammar
	ErrNotFound  = errors.New("no such endpoint")   // well-formed target that names no endpoint
)

// DefaultMaxTarget is the default limit on the raw request target, in bytes.
const DefaultMaxTarget = 1024

const (
	maxQuoted = 120 // bytes of client input quoted in a Reason
	maxReason = 200 // bytes in a Reason
)

// fail returns an *Error whose Reason is the formatted message, reduced to
// at most maxReason bytes of printable ASCII.
func fail(class error, format string, args ...any) (Request, error) {
	msg := []byte(fmt.Sprintf(format, args...))
	for i, b := range msg {
		if b < 0x20 || b >= 0x7f {
			msg[i] = '?'
		}
	}
	if len(msg) > maxReason {
		msg = append(msg[:maxReason-3], "..."...)
	}
	return Request{}, &Error{Class: class, Reason: string(msg)}
}

// quote quotes client input for use in a Reason, truncating it.
func quote(s string) string {
	if len(s) > maxQuoted {
		return strconv.QuoteToASCII(s[:maxQuoted]) + "..."
	}
	return strconv.QuoteToASCII(s)
}

// Parse parses the method and raw request target of a request, as received
// on the wire (net/http's Request.RequestURI, or Envoy's :path header).
// A maxTarget <= 0 means DefaultMaxTarget. The error, if any, is an *Error.
func Parse(method, target string, maxTarget int) (Request, error) {
	if method != "GET" && method != "HEAD" {
		return fail(ErrMethod, "method %s not allowed: use GET or HEAD", quote(method))
	}
	if maxTarget <= 0 {
		maxTarget = DefaultMaxTarget
	}
	if len(target) > maxTarget {
		return fail(ErrMalformed, "request target longer than %d bytes", maxTarget)
	}
	if !strings.HasPrefix(target, "/") {
		return fail(ErrMalformed, "request target must begin with \"/\"")
	}
	for i := 0; i < len(target); i++ {
		switch b := target[i]; {
		case b == '?':
			return fail(ErrMalformed, "query strings are not part of the protocol")
		case b == '#':
			return fail(ErrMalformed, "fragment not allowed in request target")
		case b == '%' && !strings.HasPrefix(target[i:], bangEscape):
			return fail(ErrMalformed, "percent-encoding not allowed, except %%21 for \"!\": write the path as the go command does")
		case badByte(b):
			return fail(ErrMalformed, "invalid byte 0x%02x in request target", b)
		}
	}
	if target == "/" {
		return fail(ErrNotFound, "not a module proxy or checksum database endpoint")
	}

	segs := strings.Split(strings.ReplaceAll(target[1:], bangEscape, "!"), "/")
	for _, seg := range segs {
		if seg == "" {
			return fail(ErrMalformed, "empty path segment")
		}
		if seg == "." || seg == ".." {
			return fail(ErrMalformed, "path segment %s not allowed", quote(seg))
		}
	}
	if segs[0] == "sumdb" {
		return parseSumDB(segs[1:])
	}
	return parseProxy(segs)
}

// bangEscape is the one percent-escape of the protocols: "!", which
// module.EscapePath puts before the lower case of an upper-case letter.
const bangEscape = "%21"

// badByte reports whether b may not appear in a request target.
func badByte(b byte) bool {
	return b < 0x20 || b >= 0x7f || b == ' ' || b == '\\'
}

// parseProxy parses the segments of a GOPROXY request.
func parseProxy(segs []string) (Request, error) {
	at := -1
	for i, s := range segs {
		if !strings.Contains(s, "@") {
			continue
		}
		if at >= 0 {
			return fail(ErrMalformed, "more than one path segment contains \"@\"")
		}
		if s[0] != '@' {
			return fail(ErrMalformed, "unexpected \"@\" in path segment %s", quote(s))
		}
		at = i
	}
	if at < 0 {
		return fail(ErrNotFound, "not a module proxy or checksum database endpoint")
	}
	if at == 0 {
		return fail(ErrMalformed, "missing module path before %s", quote(segs[0]))
	}
	mod, err := module.UnescapePath(strings.Join(segs[:at], "/"))
	if err != nil {
		return fail(ErrMalformed, "%v", err)
	}

	switch rest := segs[at:]; {
	case rest[0] == "@latest" && len(rest) == 1:
		return Request{Kind: KindLatest, Module: mod}, nil
	case rest[0] == "@v" && len(rest) == 2:
		file := rest[1]
		if file == "list" {
			return Request{Kind: KindList, Module: mod}, nil
		}
		for _, k := range []Kind{KindInfo, KindMod, KindZip} {
			if escVers, ok := strings.CutSuffix(file, "."+k.String()); ok {
				return parseVersion(Request{Kind: k, Module: mod}, escVers)
			}
		}
		return fail(ErrMalformed, "unknown file %s in @v/", quote(file))
	default:
		return fail(ErrMalformed, "unknown endpoint %s", quote(strings.Join(rest, "/")))
	}
}

// parseVersion unescapes and checks the version of r, which already has
// its Kind and Module set.
func parseVersion(r Request, escaped string) (Request, error) {
	v, err := module.UnescapeVersion(escaped)
	if err != nil {
		return fail(ErrMalformed, "%v", err)
	}
	r.Version = v
	// No version or query begins with '-' or holds "..": such a string
	// could only be meant for a tool an origin runs (git took crafted
	// versions for options, CVE-2025-68119).
	if strings.HasPrefix(v, "-") || strings.Contains(v, "..") {
		return fail(ErrMalformed, "version %s may not begin with \"-\" or contain \"..\"", quote(v))
	}
	if r.Kind == KindInfo && (!semver.IsValid(v) || module.CanonicalVersion(v) != v) {
		return r, nil // a query, resolved by the upstream
	}
	if err := module.Check(r.Module, v); err != nil {
		var verr *module.InvalidVersionError
		if errors.As(err, &verr) {
			err = verr.Err
		}
		return fail(ErrMalformed, "invalid version %s for module %s: %v", quote(v), quote(r.Module), err)
	}
	if cv := module.CanonicalVersion(v); cv != v {
		return fail(ErrMalformed, "non-canonical version %s (use %s)", quote(v), quote(cv))
	}
	return r, nil
}

// parseSumDB parses the segments after /sumdb/.
func parseSumDB(segs []string) (Request, error) {
	if len(segs) < 2 {
		return fail(ErrMalformed, "missing checksum database name or endpoint")
	}
	name := segs[0]
	if err := module.CheckPath(name); err != nil {
		return fail(ErrMalformed, "invalid checksum database name %s: want a lower-case host name", quote(name))
	}
	switch endpoint := segs[1]; {
	case endpoint == "supported" && len(segs) == 2:
		return Request{Kind: KindSumDBSupported, SumDB: name}, nil
	case endpoint == "latest" && len(segs) == 2:
		return Request{Kind: KindSumDBLatest, SumDB: name}, nil
	case endpoint == "lookup" && len(segs) > 2:
		target := strings.Join(segs[2:], "/")
		escMod, escVers, ok := strings.Cut(target, "@")
		if !ok || strings.Contains(escVers, "@") || strings.Contains(escVers, "/") {
			return fail(ErrMalformed, "lookup must have the form $module@$version")
		}
		mod, err := module.UnescapePath(escMod)
		if err != nil {
			return fail(ErrMalformed, "%v", err)
		}
		return parseVersion(Request{Kind: KindSumDBLookup, Module: mod, SumDB: name}, escVers)
	case endpoint == "tile":
		tile, err := tlog.ParseTilePath(strings.Join(segs[1:], "/"))
		if err != nil {
			return fail(ErrMalformed, "%v", err)
		}
		return Request{Kind: KindSumDBTile, SumDB: name, Tile: tile}, nil
	default:
		return fail(ErrMalformed, "unknown checksum database endpoint %s", quote(strings.Join(segs[1:], "/")))
	}
}
