package envoy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Limits on a YAML document, so that a small file cannot expand (through
// aliases) into an unbounded JSON text.
const (
	maxJSONBytes = 32 << 20
	maxValues    = 1 << 20
	maxDepth     = 200
)

// source is a YAML document converted to JSON for protojson, with what is
// needed to point a problem back at a YAML line.
type source struct {
	json []byte
	root *yaml.Node // the document's top value

	// lines[i] is the value that starts on JSON line i+1: every object
	// member and array element starts a line of its own.
	lines []jsonLine

	active map[*yaml.Node]bool // anchored values being encoded
}

// A jsonLine is a value of the document, its path kept as a link to its
// parent's line so that a large document costs no path strings.
type jsonLine struct {
	node   *yaml.Node // the member's key, or the element
	parent int        // index in lines; -1 for the top
	key    string     // the member's key, if index < 0
	index  int        // the element's index, or -1
}

// path returns the path of lines[i].
func (s *source) path(i int) string {
	if i <= 0 {
		return ""
	}
	l := s.lines[i]
	if l.index >= 0 {
		return joinIndex(s.path(l.parent), l.index)
	}
	return joinKey(s.path(l.parent), l.key)
}

// parseYAML reads a single YAML document and converts it to JSON. Duplicate
// mapping keys, tags other than the core schema's, non-scalar keys and
// self-referencing aliases are refused, as are documents that expand past
// maxJSONBytes, maxValues or maxDepth.
func parseYAML(data []byte) (*source, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("yaml: empty document")
		}
		return nil, err
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, fmt.Errorf("yaml: line %d: more than one document", extra.Line)
	} else if !errors.Is(err, io.EOF) {
		return nil, err
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("yaml: line %d: document is not a mapping", root.Line)
	}
	s := &source{
		root:   root,
		lines:  []jsonLine{{node: root, parent: -1, index: -1}},
		active: make(map[*yaml.Node]bool),
	}
	if err := s.encode(root, 0, 0); err != nil {
		return nil, err
	}
	return s, nil
}

// encode appends n, the value of lines[line], as JSON, starting each member
// and element on a new line recorded in s.lines.
func (s *source) encode(n *yaml.Node, line, depth int) error {
	if depth > maxDepth {
		return at(n, s.path(line), "nested deeper than %d levels", maxDepth)
	}
	if len(s.json) > maxJSONBytes || len(s.lines) > maxValues {
		return fmt.Errorf("yaml: document larger than %d bytes or %d values once aliases are expanded", maxJSONBytes, maxValues)
	}
	if n.Anchor != "" {
		s.active[n] = true
		defer delete(s.active, n)
	}
	switch n.Kind {
	case yaml.AliasNode:
		if s.active[n.Alias] {
			return at(n, s.path(line), "alias *%s refers to a value that contains it", n.Value)
		}
		return s.encode(n.Alias, line, depth+1)
	case yaml.MappingNode:
		first := make(map[string]int)
		s.json = append(s.json, '{')
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Kind == yaml.AliasNode {
				k = k.Alias
			}
			if k.Kind != yaml.ScalarNode {
				return at(k, s.path(line), "mapping key is not a scalar")
			}
			if i > 0 {
				s.json = append(s.json, ',')
			}
			kline := s.newline(jsonLine{node: k, parent: line, key: k.Value, index: -1})
			if first, dup := first[k.Value]; dup {
				return at(k, s.path(kline), "duplicate key %q (first at line %d)", k.Value, first)
			}
			first[k.Value] = k.Line
			s.json = strconv.AppendQuote(s.json, k.Value)
			s.json = append(s.json, ':')
			if err := s.encode(v, kline, depth+1); err != nil {
				return err
			}
		}
		s.json = append(s.json, '}')
	case yaml.SequenceNode:
		s.json = append(s.json, '[')
		for i, v := range n.Content {
			if i > 0 {
				s.json = append(s.json, ',')
			}
			eline := s.newline(jsonLine{node: v, parent: line, index: i})
			if err := s.encode(v, eline, depth+1); err != nil {
				return err
			}
		}
		s.json = append(s.json, ']')
	case yaml.ScalarNode:
		return s.scalar(n, line)
	default:
		return at(n, s.path(line), "unexpected YAML node kind %d", n.Kind)
	}
	return nil
}

// newline starts a JSON line for l and returns its index in s.lines.
func (s *source) newline(l jsonLine) int {
	s.json = append(s.json, '\n')
	s.lines = append(s.lines, l)
	return len(s.lines) - 1
}

// scalar appends a scalar as the JSON value protojson expects: core schema
// ints, floats, bools and nulls as such, everything else as a string.
func (s *source) scalar(n *yaml.Node, line int) error {
	bad := func(err error) error { return at(n, s.path(line), "%v", err) }
	switch n.ShortTag() {
	case "!!str", "!!timestamp", "!!binary":
		s.json = strconv.AppendQuote(s.json, n.Value)
	case "!!null":
		s.json = append(s.json, "null"...)
	case "!!bool":
		var b bool
		if err := n.Decode(&b); err != nil {
			return bad(err)
		}
		s.json = strconv.AppendBool(s.json, b)
	case "!!int":
		var v any
		if err := n.Decode(&v); err != nil {
			return bad(err)
		}
		switch v := v.(type) {
		case int:
			s.json = strconv.AppendInt(s.json, int64(v), 10)
		case int64:
			s.json = strconv.AppendInt(s.json, v, 10)
		case uint64:
			s.json = strconv.AppendUint(s.json, v, 10)
		default:
			return bad(fmt.Errorf("integer %s out of range", n.Value))
		}
	case "!!float":
		var f float64
		if err := n.Decode(&f); err != nil {
			return bad(err)
		}
		switch {
		case math.IsNaN(f):
			s.json = append(s.json, `"NaN"`...)
		case math.IsInf(f, 1):
			s.json = append(s.json, `"Infinity"`...)
		case math.IsInf(f, -1):
			s.json = append(s.json, `"-Infinity"`...)
		default:
			s.json = strconv.AppendFloat(s.json, f, 'g', -1, 64)
		}
	default:
		return bad(fmt.Errorf("unsupported tag %s", n.Tag))
	}
	return nil
}

// at returns a problem at the YAML node n, the value at path.
func at(n *yaml.Node, path, format string, args ...any) error {
	return &problem{path: pathOrTop(path), line: n.Line, msg: fmt.Sprintf(format, args...)}
}

// jsonPos matches the position protojson puts in its errors.
var jsonPos = regexp.MustCompile(`\(line (\d+):\d+\)`)

// jsonError turns a protojson error into a problem at the YAML field it
// is about.
func (s *source) jsonError(err error) *problem {
	msg := err.Error()
	loc := jsonPos.FindStringSubmatchIndex(msg)
	if loc == nil {
		return &problem{msg: msg}
	}
	n, _ := strconv.Atoi(msg[loc[2]:loc[3]])
	rest := strings.TrimLeft(msg[loc[1]:], ": ")
	if n < 1 || n > len(s.lines) {
		return &problem{msg: rest}
	}
	return &problem{path: pathOrTop(s.path(n - 1)), line: s.lines[n-1].node.Line, msg: rest}
}

// line returns the YAML line of the field at path, or of its nearest
// ancestor present in the document, or 0.
func (s *source) line(path string) int {
	n := s.root
	line := 0
	for _, seg := range splitPath(path) {
		for n.Kind == yaml.AliasNode {
			n = n.Alias
		}
		var next *yaml.Node
		switch {
		case seg.index >= 0 && n.Kind == yaml.SequenceNode:
			if seg.index < len(n.Content) {
				next = n.Content[seg.index]
			}
		case seg.index < 0 && n.Kind == yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				if k := n.Content[i]; k.Value == seg.key || k.Value == jsonName(seg.key) {
					line = k.Line
					next = n.Content[i+1]
					break
				}
			}
		}
		if next == nil {
			return line
		}
		n = next
		if seg.index >= 0 {
			line = n.Line
		}
	}
	return line
}

// segment is one step of a path: a field or map key, or a list index.
type segment struct {
	key   string
	index int // -1 for a key
}

// splitPath splits a path written by joinKey and joinIndex.
func splitPath(path string) []segment {
	var segs []segment
	for path != "" {
		switch path[0] {
		case '.':
			path = path[1:]
		case '[':
			if q, err := strconv.QuotedPrefix(path[1:]); err == nil {
				k, _ := strconv.Unquote(q)
				segs = append(segs, segment{key: k, index: -1})
				path = strings.TrimPrefix(path[1+len(q):], "]")
				continue
			}
			end := strings.IndexByte(path, ']')
			if end < 0 {
				return segs
			}
			i, err := strconv.Atoi(path[1:end])
			if err != nil {
				segs = append(segs, segment{key: path[1:end], index: -1})
			} else {
				segs = append(segs, segment{index: i})
			}
			path = path[end+1:]
		default:
			end := strings.IndexAny(path, ".[")
			if end < 0 {
				end = len(path)
			}
			segs = append(segs, segment{key: path[:end], index: -1})
			path = path[end:]
		}
	}
	return segs
}

// jsonName is the lowerCamelCase JSON name of a snake_case proto field
// name: YAML may use either.
func jsonName(name string) string {
	var b strings.Builder
	up := false
	for _, r := range name {
		switch {
		case r == '_':
			up = true
		case up && 'a' <= r && r <= 'z':
			b.WriteRune(r - 'a' + 'A')
			up = false
		default:
			b.WriteRune(r)
			up = false
		}
	}
	return b.String()
}

var identifier = regexp.MustCompile(`^[A-Za-z_@][A-Za-z0-9_@]*$`)

// joinKey appends a field name or map key to path: `a.b` for a name,
// `a["x.y"]` for any other key.
func joinKey(path, key string) string {
	if !identifier.MatchString(key) {
		return path + "[" + strconv.Quote(key) + "]"
	}
	if path == "" {
		return key
	}
	return path + "." + key
}

func pathOrTop(path string) string {
	if path == "" {
		return "(top level)"
	}
	return path
}
