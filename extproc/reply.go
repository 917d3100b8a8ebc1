package extproc

import (
	"net/http"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/modgate/modgate/goproxy"
)

// Limits of a plain-text body: the go command shows a server's error body
// only up to 8 lines.
const (
	maxBodyLines = 8
	maxLineBytes = 240
)

// textHeader returns the headers of a plain-text reply.
func textHeader() http.Header {
	return http.Header{
		"Content-Type":           {"text/plain; charset=utf-8"},
		"X-Content-Type-Options": {"nosniff"},
		"Cache-Control":          {"no-store"},
	}
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

// passHeader picks the upstream headers that reach the client: a content
// type (the protocol's, if the upstream's is missing), and Last-Modified.
// Nothing else passes: no cookies, no upstream identity, no caching
// headers that modgate does not stand behind.
func passHeader(up http.Header, kind goproxy.Kind) http.Header {
	h := http.Header{}
	ct := up.Get("Content-Type")
	if ct == "" {
		ct = defaultContentType(kind)
	}
	h.Set("Content-Type", ct)
	if lm := up.Get("Last-Modified"); lm != "" {
		h.Set("Last-Modified", lm)
	}
	return h
}

func defaultContentType(kind goproxy.Kind) string {
	switch kind {
	case goproxy.KindInfo, goproxy.KindLatest:
		return "application/json"
	case goproxy.KindZip:
		return "application/zip"
	}
	return "text/plain; charset=utf-8"
}
