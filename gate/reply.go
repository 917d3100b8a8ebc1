package gate

import (
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/modgate/modgate/cache"
	"github.com/modgate/modgate/goproxy"
)

// Limits of a plain-text body: the go command shows a server's error body
// only up to 8 lines.
const (
	maxBodyLines = 8
	maxLineBytes = 240
)

const textContentType = "text/plain; charset=utf-8"

// textHeader returns the headers of a plain-text reply.
func textHeader(cacheStatus string) http.Header {
	return http.Header{
		"Content-Type":           {textContentType},
		"X-Content-Type-Options": {"nosniff"},
		"Cache-Control":          {"no-store"},
		"X-Modgate-Cache":        {cacheStatus},
	}
}

// Header values every answer from the cache shares, so that a warm hit
// does not allocate them. Front ends and the processor only ever replace
// a header's values (Set), never append to them.
var (
	nosniffValue   = []string{"nosniff"}
	noStoreValue   = []string{"no-store"}
	immutableValue = []string{"public, max-age=31536000, immutable"}
	cacheValues    = map[string][]string{
		cacheHit: {cacheHit}, cacheMiss: {cacheMiss}, cacheStale: {cacheStale},
		cacheNegative: {cacheNegative}, cacheCoalesced: {cacheCoalesced}, cacheBypass: {cacheBypass},
	}
)

// entryHeader returns the headers of a response served from e. Immutable
// entries may be kept by clients and intermediaries for a year; others for
// what is left of their freshness; stale and negative ones not at all.
func (x *Exchange) entryHeader(e *cache.Entry) http.Header {
	status, ok := cacheValues[x.cache]
	if !ok {
		status = []string{x.cache}
	}
	h := make(http.Header, 6) // room for a Warning
	h["Content-Type"] = []string{e.ContentType}
	h["X-Content-Type-Options"] = nosniffValue
	h["Etag"] = []string{e.ETag()}
	h["X-Modgate-Cache"] = status
	switch {
	case e.Status != http.StatusOK || !e.Fresh:
		h["Cache-Control"] = noStoreValue
	case e.Class.Immutable():
		h["Cache-Control"] = immutableValue
	default:
		secs := int(e.FreshUntil.Sub(x.p.now()) / time.Second)
		h.Set("Cache-Control", "public, max-age="+strconv.Itoa(max(secs, 0)))
	}
	return h
}

// plainText builds a plain-text body from lines: each line split further
// at newlines, control characters replaced, long lines cut, at most 8 lines
// in all.
func plainText(lines ...string) []byte {
	var out []string
	for _, l := range lines {
		out = append(out, splitLines(l)...)
	}
	if len(out) > maxBodyLines {
		out = out[:maxBodyLines]
	}
	return []byte(strings.Join(out, "\n") + "\n")
}

// splitLines splits s into clean lines, dropping empty ones.
func splitLines(s string) []string {
	var lines []string
	for l := range strings.SplitSeq(s, "\n") {
		l = cleanLine(strings.TrimSpace(l))
		if l == "" {
			continue
		}
		lines = append(lines, l)
		if len(lines) == maxBodyLines {
			break
		}
	}
	return lines
}

// cleanLine replaces control characters and invalid UTF-8 in l and cuts
// it to maxLineBytes.
func cleanLine(l string) string {
	var b strings.Builder
	for _, r := range l {
		if r == utf8.RuneError || (unicode.IsControl(r) && r != '\t') {
			r = '?'
		}
		if b.Len()+utf8.RuneLen(r) > maxLineBytes {
			b.WriteString("…")
			break
		}
		b.WriteRune(r)
	}
	return b.String()
}

// contentType returns the upstream's Content-Type if it is a plain,
// short value, else the protocol's for kind.
func contentType(up http.Header, kind goproxy.Kind) string {
	ct := up.Get("Content-Type")
	ok := ct != "" && len(ct) <= 128
	for i := 0; ok && i < len(ct); i++ {
		ok = ct[i] >= 0x20 && ct[i] < 0x7f
	}
	if ok {
		return ct
	}
	switch kind {
	case goproxy.KindInfo, goproxy.KindLatest:
		return "application/json"
	case goproxy.KindZip:
		return "application/zip"
	}
	return textContentType
}
