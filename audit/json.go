package audit

import (
	"strconv"
	"time"
	"unicode/utf8"
)

// appendJSON appends e to b as one JSON object, byte for byte what
// encoding/json (with HTML escaping off) would write for it, without
// reflection: it is on the path of every request.
func (e *Event) appendJSON(b []byte) []byte {
	b = e.appendBody(b)
	if e.Chain != nil {
		b = appendChain(b, e.Chain)
	}
	return append(b, '}')
}

// appendBody appends e without its Chain and without the closing brace of
// the object: Record encodes this much, and the Writer's goroutine adds the
// chain and the brace in file order.
func (e *Event) appendBody(b []byte) []byte {
	var o object
	b = o.open(b)
	b = o.key(b, "@timestamp")
	b = append(b, '"')
	b = e.Timestamp.AppendFormat(b, time.RFC3339Nano)
	b = append(b, '"')

	b = o.key(b, "event")
	var ev object
	b = ev.open(b)
	b = ev.str(b, "action", e.Event.Action, false)
	b = ev.str(b, "outcome", e.Event.Outcome, false)
	b = ev.str(b, "reason", e.Event.Reason, true)
	b = ev.int(b, "duration", e.Event.Duration, true)
	b = ev.close(b)

	if s := e.Source; s != nil {
		b = o.key(b, "source")
		var so object
		b = so.open(b)
		b = so.str(b, "ip", s.IP, true)
		b = so.int(b, "port", int64(s.Port), true)
		b = so.close(b)
	}
	if t := e.TLS; t != nil {
		b = o.key(b, "tls")
		var to, co object
		b = to.open(b)
		b = to.key(b, "client")
		b = co.open(b)
		b = co.str(b, "subject", t.Client.Subject, true)
		if x := t.Client.X509; x != nil {
			b = co.key(b, "x509")
			var xo, so object
			b = xo.open(b)
			b = xo.key(b, "san")
			b = so.open(b)
			b = so.strs(b, "uri", x.SAN.URI)
			b = so.close(b)
			b = xo.close(b)
		}
		if h := t.Client.Hash; h != nil {
			b = co.key(b, "hash")
			var ho object
			b = ho.open(b)
			b = ho.str(b, "sha256", h.SHA256, true)
			b = ho.close(b)
		}
		b = co.close(b)
		b = to.close(b)
	}
	if u := e.User; u != nil {
		b = o.key(b, "user")
		var uo object
		b = uo.open(b)
		b = uo.str(b, "name", u.Name, true)
		b = uo.strs(b, "roles", u.Roles)
		b = uo.close(b)
	}
	if u := e.URL; u != nil {
		b = o.key(b, "url")
		var uo object
		b = uo.open(b)
		b = uo.str(b, "path", u.Path, true)
		b = uo.close(b)
	}
	if h := e.HTTP; h != nil {
		b = o.key(b, "http")
		var ho, req, resp object
		b = ho.open(b)
		b = ho.key(b, "request")
		b = req.open(b)
		b = req.str(b, "id", h.Request.ID, true)
		b = req.str(b, "method", h.Request.Method, true)
		b = req.close(b)
		b = ho.key(b, "response")
		b = resp.open(b)
		b = resp.int(b, "status_code", int64(h.Response.StatusCode), true)
		b = resp.int(b, "bytes", h.Response.Bytes, false)
		b = resp.close(b)
		b = ho.close(b)
	}
	if v := e.Vulnerability; v != nil {
		b = o.key(b, "vulnerability")
		var vo object
		b = vo.open(b)
		b = vo.strs(b, "id", v.ID)
		b = vo.close(b)
	}

	m := &e.Modgate
	b = o.key(b, "modgate")
	var mo object
	b = mo.open(b)
	b = mo.str(b, "module", m.Module, true)
	b = mo.str(b, "version", m.Version, true)
	b = mo.str(b, "kind", m.Kind, true)
	b = mo.str(b, "sumdb", m.SumDB, true)
	b = mo.str(b, "decision", m.Decision, true)
	b = mo.str(b, "rule", m.Rule, true)
	b = mo.str(b, "upstream", m.Upstream, true)
	b = mo.str(b, "origin_host", m.OriginHost, true)
	b = mo.str(b, "cache", m.Cache, true)
	b = mo.str(b, "verification", m.Verification, true)
	b = mo.str(b, "original_destination", m.OriginalDestination, true)
	b = mo.str(b, "trace_id", m.TraceID, true)
	b = mo.close(b)
	return b // the object stays open: "modgate" is always there, so a chain follows a comma
}

// appendChain appends the chain member, comma first, to an object that
// already has members.
func appendChain(b []byte, c *Chain) []byte {
	b = append(b, `,"chain":`...)
	var co object
	b = co.open(b)
	b = co.uint(b, "seq", c.Seq, false)
	b = co.str(b, "prev", c.Prev, false)
	b = co.uint(b, "dropped", c.Dropped, true)
	b = co.str(b, "torn", c.Torn, true)
	return co.close(b)
}

// object writes the punctuation of one JSON object.
type object struct{ fields int }

func (o *object) open(b []byte) []byte  { return append(b, '{') }
func (o *object) close(b []byte) []byte { return append(b, '}') }

func (o *object) key(b []byte, k string) []byte {
	if o.fields > 0 {
		b = append(b, ',')
	}
	o.fields++
	b = append(b, '"')
	b = append(b, k...)
	return append(b, '"', ':')
}

func (o *object) str(b []byte, k, v string, omitEmpty bool) []byte {
	if omitEmpty && v == "" {
		return b
	}
	return appendString(o.key(b, k), v)
}

// strs writes k and the JSON array of v, or nothing if v is empty
// (omitempty).
func (o *object) strs(b []byte, k string, v []string) []byte {
	if len(v) == 0 {
		return b
	}
	b = o.key(b, k)
	b = append(b, '[')
	for i, s := range v {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, s)
	}
	return append(b, ']')
}

func (o *object) int(b []byte, k string, v int64, omitEmpty bool) []byte {
	if omitEmpty && v == 0 {
		return b
	}
	return strconv.AppendInt(o.key(b, k), v, 10)
}

func (o *object) uint(b []byte, k string, v uint64, omitEmpty bool) []byte {
	if omitEmpty && v == 0 {
		return b
	}
	return strconv.AppendUint(o.key(b, k), v, 10)
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string, escaped as encoding/json does
// with HTML escaping off: quotes, backslashes and control characters
// escaped, invalid UTF-8 replaced by U+FFFD, U+2028 and U+2029 escaped.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
