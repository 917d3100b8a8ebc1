package auditindex

import (
	"encoding/json"
	"time"

	"github.com/modgate/modgate/audit"
	"github.com/modgate/modgate/inventory"
)

// fields are what the index keeps of an event, before interning.
type fields struct {
	ts                                   time.Time
	module, version, identity, rule      string
	decision, kind, action, verification string
	status                               int
}

// A decoder decodes the fields of audit lines. Lines in the form the
// audit Writer writes (encoding/json's) take a fast path that reads only
// the fields the index keeps while it checks the whole line is valid
// JSON; anything else — escapes or non-ASCII in keys, a key that matches
// a field only case-insensitively, a repeated key, null or an unexpected
// type where a kept field is, a timestamp that does not parse — is left
// to encoding/json (decodeSlow). Both give the same fields for a line
// (FuzzDecode checks it). A decoder is not safe for concurrent use.
type decoder struct {
	strs map[string]string // recent strings, so that repeated values are not allocated again
}

// maxStrs bounds decoder.strs; it is emptied when full.
const maxStrs = 1 << 16

// str returns b as a string, allocating it only if it is new.
func (d *decoder) str(b []byte) string {
	if s, ok := d.strs[string(b)]; ok {
		return s
	}
	if d.strs == nil || len(d.strs) >= maxStrs {
		d.strs = make(map[string]string)
	}
	s := string(b)
	d.strs[s] = s
	return s
}

// decodeSlow decodes line with encoding/json into an audit.Event, as the
// index does at query time: the fields encoding/json fills in are kept
// even if it fails part way.
func decodeSlow(line []byte, f *fields) {
	var e audit.Event
	_ = json.Unmarshal(line, &e) // a line that does not decode keeps what did
	*f = fieldsOf(&e)
}

// fieldsOf returns the fields the index keeps of e.
func fieldsOf(e *audit.Event) fields {
	f := fields{
		ts:           e.Timestamp,
		module:       e.Modgate.Module,
		version:      e.Modgate.Version,
		identity:     inventory.Identity(e),
		rule:         e.Modgate.Rule,
		decision:     e.Modgate.Decision,
		kind:         e.Modgate.Kind,
		action:       e.Event.Action,
		verification: e.Modgate.Verification,
	}
	if e.HTTP != nil {
		f.status = e.HTTP.Response.StatusCode
	}
	return f
}

// decode decodes line into f and c (its chain) along the fast path. It
// returns false, and leaves f and c in no particular state, if the line is
// not in a form the fast path knows: decode it with decodeSlow, and let
// audit.Checker decode the chain.
func (d *decoder) decode(line []byte, f *fields, c *audit.Chain) bool {
	*f, *c = fields{}, audit.Chain{}
	p := parser{b: line}
	var v fastEvent
	p.ws()
	if !p.object(&v, 0, topLevel) {
		return false
	}
	p.ws()
	if p.i != len(p.b) || !v.has(kChain) {
		return false
	}
	if v.has(kTimestamp) {
		if f.ts.UnmarshalJSON(v.ts) != nil {
			return false
		}
	}
	for i, dst := range [...]*string{&f.module, &f.version, &f.rule, &f.decision, &f.kind, &f.action, &f.verification} {
		if b := v.strs[i]; b != nil {
			*dst = d.str(b)
		}
	}
	f.status = v.status
	*c = v.chain
	if b := v.prev; b != nil {
		c.Prev = string(b)
	}
	if b := v.torn; b != nil {
		c.Torn = string(b)
	}
	// The identity, by inventory.Identity itself.
	var (
		e    audit.Event
		user audit.User
		tls  audit.TLS
		x509 audit.X509
		src  audit.Source
		uri  [1]string
	)
	if v.has(kUser) {
		user.Name = d.str(v.user)
		e.User = &user
	}
	if v.has(kTLS) {
		tls.Client.Subject = d.str(v.subject)
		if v.has(kX509) {
			if v.hasURI {
				uri[0] = d.str(v.uri)
				x509.SAN.URI = uri[:]
			}
			tls.Client.X509 = &x509
		}
		e.TLS = &tls
	}
	if v.has(kSource) {
		src.IP = d.str(v.ip)
		e.Source = &src
	}
	f.identity = inventory.Identity(&e)
	return true
}

// fastEvent is what the fast path found: raw bytes of strings, which
// point into the line.
type fastEvent struct {
	seen    uint32    // bits of the k* objects and values found
	ts      []byte    // the timestamp's JSON string, quotes included
	strs    [7][]byte // module, version, rule, decision, kind, action, verification
	user    []byte
	subject []byte
	uri     []byte // the first URI SAN
	hasURI  bool   // there is one
	ip      []byte
	status  int
	chain   audit.Chain // Seq and Dropped
	prev    []byte
	torn    []byte
}

func (v *fastEvent) has(k uint32) bool { return v.seen&k != 0 }

// Bits of fastEvent.seen, one for each object or value the fast path
// keeps (and checks for repeats).
const (
	kTimestamp uint32 = 1 << iota
	kEvent
	kSource
	kTLS
	kUser
	kHTTP
	kModgate
	kChain
	kAction
	kIP
	kClient
	kSubject
	kX509
	kSAN
	kURI
	kName
	kResponse
	kStatus
	kSeq
	kPrev
	kDropped
	kTorn
	kModgateField // and the 5 bits after it: module, version, rule, decision, kind, verification
)

// The objects the fast path reads into: each has the keys it keeps.
type level int

const (
	topLevel level = iota
	eventLevel
	sourceLevel
	tlsLevel
	clientLevel
	x509Level
	sanLevel
	userLevel
	httpLevel
	responseLevel
	modgateLevel
	chainLevel
)

// levelKeys are the keys each level keeps: a key of another case is left
// to encoding/json, which would match it.
var levelKeys = [...][]string{
	topLevel:      {"@timestamp", "event", "source", "tls", "user", "http", "modgate", "chain"},
	eventLevel:    {"action"},
	sourceLevel:   {"ip"},
	tlsLevel:      {"client"},
	clientLevel:   {"subject", "x509"},
	x509Level:     {"san"},
	sanLevel:      {"uri"},
	userLevel:     {"name"},
	httpLevel:     {"response"},
	responseLevel: {"status_code"},
	modgateLevel:  {"module", "version", "rule", "decision", "kind", "verification"},
	chainLevel:    {"seq", "prev", "dropped", "torn"},
}

// modgateStr maps a modgate key's index in levelKeys to fastEvent.strs.
// strs: module, version, rule, decision, kind, action, verification.
var modgateStr = [...]int{0, 1, 2, 3, 4, 6}

// object reads an object at level lv into v.
func (p *parser) object(v *fastEvent, depth int, lv level) bool {
	if depth > maxDepth || p.i >= len(p.b) || p.b[p.i] != '{' {
		return false
	}
	p.i++
	p.ws()
	if p.i < len(p.b) && p.b[p.i] == '}' {
		p.i++
		return true
	}
	for {
		key, esc, ascii, ok := p.str()
		if !ok || esc || !ascii {
			return false // a key encoding/json might match otherwise
		}
		p.ws()
		if p.i >= len(p.b) || p.b[p.i] != ':' {
			return false
		}
		p.i++
		p.ws()
		if !p.member(v, depth, lv, key) {
			return false
		}
		p.ws()
		if p.i >= len(p.b) {
			return false
		}
		switch p.b[p.i] {
		case ',':
			p.i++
			p.ws()
		case '}':
			p.i++
			return true
		default:
			return false
		}
	}
}

// member reads the value of key, at level lv.
func (p *parser) member(v *fastEvent, depth int, lv level, key []byte) bool {
	idx := -1
	for i, k := range levelKeys[lv] {
		if string(key) == k {
			idx = i
			break
		}
		if equalFoldASCII(key, k) {
			return false // encoding/json would match it
		}
	}
	if idx < 0 {
		return p.skip(depth + 1)
	}
	// mark notes a kept key; a repeated one is left to encoding/json.
	mark := func(k uint32) bool {
		if v.seen&k != 0 {
			return false
		}
		v.seen |= k
		return true
	}
	str := func(k uint32, dst *[]byte) bool {
		if !mark(k) {
			return false
		}
		b, ok := p.plain()
		*dst = b
		return ok
	}
	obj := func(k uint32, next level) bool {
		return mark(k) && p.object(v, depth+1, next)
	}
	switch lv {
	case topLevel:
		switch idx {
		case 0:
			if !mark(kTimestamp) || p.i >= len(p.b) || p.b[p.i] != '"' {
				return false
			}
			start := p.i
			if _, _, _, ok := p.str(); !ok {
				return false
			}
			v.ts = p.b[start:p.i]
			return true
		case 1:
			return obj(kEvent, eventLevel)
		case 2:
			return obj(kSource, sourceLevel)
		case 3:
			return obj(kTLS, tlsLevel)
		case 4:
			return obj(kUser, userLevel)
		case 5:
			return obj(kHTTP, httpLevel)
		case 6:
			return obj(kModgate, modgateLevel)
		case 7:
			return obj(kChain, chainLevel)
		}
	case eventLevel:
		return str(kAction, &v.strs[5])
	case sourceLevel:
		return str(kIP, &v.ip)
	case tlsLevel:
		return obj(kClient, clientLevel)
	case clientLevel:
		if idx == 0 {
			return str(kSubject, &v.subject)
		}
		return obj(kX509, x509Level)
	case x509Level:
		return obj(kSAN, sanLevel)
	case sanLevel:
		return mark(kURI) && p.firstString(depth+1, &v.uri, &v.hasURI)
	case userLevel:
		return str(kName, &v.user)
	case httpLevel:
		return obj(kResponse, responseLevel)
	case responseLevel:
		if !mark(kStatus) {
			return false
		}
		n, ok := p.integer(false)
		v.status = int(n)
		return ok
	case modgateLevel:
		return str(kModgateField<<idx, &v.strs[modgateStr[idx]])
	case chainLevel:
		switch idx {
		case 0, 2:
			k, dst := kSeq, &v.chain.Seq
			if idx == 2 {
				k, dst = kDropped, &v.chain.Dropped
			}
			if !mark(k) {
				return false
			}
			n, ok := p.integer(true)
			*dst = uint64(n)
			return ok
		case 1:
			return str(kPrev, &v.prev)
		case 3:
			return str(kTorn, &v.torn)
		}
	}
	return false
}

// firstString reads an array of strings, keeping the first (nil if
// there is none). An element that is not a plain string is left to
// encoding/json.
func (p *parser) firstString(depth int, first *[]byte, any *bool) bool {
	if depth > maxDepth || p.i >= len(p.b) || p.b[p.i] != '[' {
		return false
	}
	p.i++
	p.ws()
	if p.i < len(p.b) && p.b[p.i] == ']' {
		p.i++
		return true
	}
	for n := 0; ; n++ {
		b, ok := p.plain()
		if !ok {
			return false
		}
		if n == 0 {
			*first, *any = b, true
		}
		p.ws()
		if p.i >= len(p.b) {
			return false
		}
		switch p.b[p.i] {
		case ',':
			p.i++
			p.ws()
		case ']':
			p.i++
			return true
		default:
			return false
		}
	}
}
