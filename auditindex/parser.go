package auditindex

import "unicode/utf8"

// maxDepth bounds the nesting the fast path follows.
const maxDepth = 64

// A parser reads JSON from b.
type parser struct {
	b []byte
	i int
}

func (p *parser) ws() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

// str reads a string: its raw bytes between the quotes, whether they hold
// escapes, and whether they are all ASCII. ok is false if it is not a
// valid JSON string.
func (p *parser) str() (b []byte, esc, ascii, ok bool) {
	if p.i >= len(p.b) || p.b[p.i] != '"' {
		return nil, false, false, false
	}
	p.i++
	start := p.i
	ascii = true
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			b = p.b[start:p.i]
			p.i++
			return b, esc, ascii, true
		case c < 0x20:
			return nil, false, false, false
		case c == '\\':
			esc = true
			p.i++
			if p.i >= len(p.b) {
				return nil, false, false, false
			}
			switch p.b[p.i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				p.i++
			case 'u':
				if p.i+4 >= len(p.b) || !isHex(p.b[p.i+1]) || !isHex(p.b[p.i+2]) || !isHex(p.b[p.i+3]) || !isHex(p.b[p.i+4]) {
					return nil, false, false, false
				}
				p.i += 5
			default:
				return nil, false, false, false
			}
		default:
			if c >= utf8.RuneSelf {
				ascii = false
			}
			p.i++
		}
	}
	return nil, false, false, false
}

// plain reads a string whose raw bytes are its value: no escapes, and
// valid UTF-8 (encoding/json replaces invalid bytes).
func (p *parser) plain() ([]byte, bool) {
	b, esc, ascii, ok := p.str()
	if !ok || esc || !ascii && !utf8.Valid(b) {
		return nil, false
	}
	return b, true
}

// equalFoldASCII reports whether the ASCII key b equals s but for case.
func equalFoldASCII(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		x, y := b[i], s[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// integer reads a number that encoding/json would decode into an int (or,
// if unsigned, a uint64) the same way: no fraction or exponent, and few
// enough digits that it cannot overflow. Anything else is left to
// encoding/json.
func (p *parser) integer(unsigned bool) (int64, bool) {
	neg := false
	if p.i < len(p.b) && p.b[p.i] == '-' {
		if unsigned {
			return 0, false
		}
		neg = true
		p.i++
	}
	start := p.i
	var n int64
	for p.i < len(p.b) && '0' <= p.b[p.i] && p.b[p.i] <= '9' {
		n = n*10 + int64(p.b[p.i]-'0')
		p.i++
	}
	digits := p.i - start
	switch {
	case digits == 0 || digits > 18 || digits > 1 && p.b[start] == '0':
		return 0, false
	case p.i < len(p.b) && (p.b[p.i] == '.' || p.b[p.i] == 'e' || p.b[p.i] == 'E'):
		return 0, false
	}
	if neg {
		n = -n
	}
	return n, true
}

// skip reads any JSON value, checking it is valid.
func (p *parser) skip(depth int) bool {
	if depth > maxDepth || p.i >= len(p.b) {
		return false
	}
	switch c := p.b[p.i]; {
	case c == '"':
		_, _, _, ok := p.str()
		return ok
	case c == '{':
		p.i++
		p.ws()
		if p.i < len(p.b) && p.b[p.i] == '}' {
			p.i++
			return true
		}
		for {
			if _, _, _, ok := p.str(); !ok {
				return false
			}
			p.ws()
			if p.i >= len(p.b) || p.b[p.i] != ':' {
				return false
			}
			p.i++
			p.ws()
			if !p.skip(depth + 1) {
				return false
			}
			p.ws()
			if p.i >= len(p.b) {
				return false
			}
			if p.b[p.i] == '}' {
				p.i++
				return true
			}
			if p.b[p.i] != ',' {
				return false
			}
			p.i++
			p.ws()
		}
	case c == '[':
		p.i++
		p.ws()
		if p.i < len(p.b) && p.b[p.i] == ']' {
			p.i++
			return true
		}
		for {
			if !p.skip(depth + 1) {
				return false
			}
			p.ws()
			if p.i >= len(p.b) {
				return false
			}
			if p.b[p.i] == ']' {
				p.i++
				return true
			}
			if p.b[p.i] != ',' {
				return false
			}
			p.i++
			p.ws()
		}
	case c == '-' || '0' <= c && c <= '9':
		return p.number()
	case c == 't':
		return p.literal("true")
	case c == 'f':
		return p.literal("false")
	case c == 'n':
		return p.literal("null")
	}
	return false
}

func (p *parser) literal(s string) bool {
	if len(p.b)-p.i < len(s) || string(p.b[p.i:p.i+len(s)]) != s {
		return false
	}
	p.i += len(s)
	return true
}

// number reads a JSON number.
func (p *parser) number() bool {
	digits := func() int {
		start := p.i
		for p.i < len(p.b) && '0' <= p.b[p.i] && p.b[p.i] <= '9' {
			p.i++
		}
		return p.i - start
	}
	if p.b[p.i] == '-' {
		p.i++
	}
	if p.i < len(p.b) && p.b[p.i] == '0' {
		p.i++
	} else if digits() == 0 {
		return false
	}
	if p.i < len(p.b) && p.b[p.i] == '.' {
		p.i++
		if digits() == 0 {
			return false
		}
	}
	if p.i < len(p.b) && (p.b[p.i] == 'e' || p.b[p.i] == 'E') {
		p.i++
		if p.i < len(p.b) && (p.b[p.i] == '+' || p.b[p.i] == '-') {
			p.i++
		}
		if digits() == 0 {
			return false
		}
	}
	return true
}
