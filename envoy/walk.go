package envoy

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/anypb"
)

// A checker collects the problems of one configuration.
type checker struct {
	src   *source // the YAML source, nil for a Go message
	probs []*problem

	// nodes holds every message of the configuration, those inside Any
	// values unpacked, in depth-first order; the checks in crosscheck.go
	// pick the ones they need by type.
	nodes []node
}

// A node is one message of the configuration tree.
type node struct {
	path   string
	msg    proto.Message
	parent int // index in checker.nodes, -1 at the root
}

// ancestor returns the nearest message above nodes[i] for which match is
// true, or nil.
func (c *checker) ancestor(i int, match func(proto.Message) bool) proto.Message {
	for i = c.nodes[i].parent; i >= 0; i = c.nodes[i].parent {
		if match(c.nodes[i].msg) {
			return c.nodes[i].msg
		}
	}
	return nil
}

// validate runs m's protoc-gen-validate rules, if it has any, and records
// each violation at the path of the field it is about.
func (c *checker) validate(m proto.Message, path string) {
	v, ok := m.(interface{ ValidateAll() error })
	if !ok {
		return
	}
	if err := v.ValidateAll(); err != nil {
		c.pgv(err, m.ProtoReflect(), path)
	}
}

// pgvMulti and pgvField are the shapes of the errors protoc-gen-validate
// generates: XMultiError and XValidationError.
type pgvMulti interface{ AllErrors() []error }

type pgvField interface {
	Field() string
	Reason() string
	Key() bool
	Cause() error
}

func isPGV(err error) bool {
	switch err.(type) {
	case pgvMulti, pgvField:
		return true
	}
	return false
}

// pgv records the violations in err, an error ValidateAll returned for m,
// following the chain of "embedded message failed validation" causes down
// to the field that broke a rule.
func (c *checker) pgv(err error, m protoreflect.Message, path string) {
	switch e := err.(type) {
	case pgvMulti:
		for _, err := range e.AllErrors() {
			c.pgv(err, m, path)
		}
	case pgvField:
		// Field is the Go name of a field or oneof of m, with an index
		// ("Clusters[2]") or map key ("Options[name]") for an element.
		goName, sub, _ := strings.Cut(e.Field(), "[")
		sub = strings.TrimSuffix(sub, "]")
		fd, name := fieldByGoName(m.Descriptor(), goName)
		fpath := joinKey(path, name)
		if strings.Contains(e.Field(), "[") {
			if i, err := strconv.Atoi(sub); err == nil && fd != nil && fd.IsList() {
				fpath = joinIndex(fpath, i)
			} else {
				fpath = joinKey(fpath, sub)
			}
		}
		cause := e.Cause()
		if fd != nil && isPGV(cause) && !e.Key() {
			if child, ok := childMessage(m, fd, sub); ok {
				c.pgv(cause, child, fpath)
				return
			}
		}
		msg := e.Reason()
		if e.Key() {
			msg = "map key: " + msg
		}
		if cause != nil {
			msg += ": " + cause.Error()
		}
		c.add(fpath, "%s", msg)
	default:
		c.add(path, "%v", err)
	}
}

// fieldByGoName finds the field or oneof of md whose generated Go name is
// goName, and returns it (nil for a oneof) with its proto name. Go names
// are the proto names in CamelCase without underscores.
func fieldByGoName(md protoreflect.MessageDescriptor, goName string) (protoreflect.FieldDescriptor, string) {
	same := func(name protoreflect.Name) bool {
		return strings.EqualFold(strings.ReplaceAll(string(name), "_", ""), goName)
	}
	fields := md.Fields()
	for i := range fields.Len() {
		if fd := fields.Get(i); same(fd.Name()) {
			return fd, string(fd.Name())
		}
	}
	oneofs := md.Oneofs()
	for i := range oneofs.Len() {
		if od := oneofs.Get(i); same(od.Name()) {
			return nil, string(od.Name())
		}
	}
	return nil, goName
}

// childMessage returns the message in field fd of m, the element sub of a
// list or map field.
func childMessage(m protoreflect.Message, fd protoreflect.FieldDescriptor, sub string) (protoreflect.Message, bool) {
	switch {
	case fd.IsList():
		i, err := strconv.Atoi(sub)
		l := m.Get(fd).List()
		if err != nil || fd.Message() == nil || i < 0 || i >= l.Len() {
			return nil, false
		}
		return l.Get(i).Message(), true
	case fd.IsMap():
		if fd.MapKey().Kind() != protoreflect.StringKind || fd.MapValue().Message() == nil {
			return nil, false
		}
		v := m.Get(fd).Map().Get(protoreflect.ValueOfString(sub).MapKey())
		if !v.IsValid() {
			return nil, false
		}
		return v.Message(), true
	case fd.Message() != nil:
		return m.Get(fd).Message(), true
	}
	return nil, false
}

// walk records m and everything below it as nodes, unpacking and
// validating every Any, and flags deprecated and unknown content.
func (c *checker) walk(m protoreflect.Message, path string, parent int) {
	idx := len(c.nodes)
	c.nodes = append(c.nodes, node{path: path, msg: m.Interface(), parent: parent})
	md := m.Descriptor()
	if opts, ok := md.Options().(*descriptorpb.MessageOptions); ok && opts.GetDeprecated() {
		c.add(path, "message type %s is deprecated", md.FullName())
	}
	if len(m.GetUnknown()) > 0 {
		c.add(path, "%s has unknown fields (%d bytes)", md.FullName(), len(m.GetUnknown()))
	}
	if md.FullName() == "google.protobuf.Any" {
		c.any(m, path, idx)
		return
	}
	fields := md.Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if !m.Has(fd) {
			continue
		}
		fpath := joinKey(path, string(fd.Name()))
		if opts, ok := fd.Options().(*descriptorpb.FieldOptions); ok && opts.GetDeprecated() {
			c.add(fpath, "field %s is deprecated", fd.FullName())
		}
		v := m.Get(fd)
		switch {
		case fd.IsList():
			l := v.List()
			for j := range l.Len() {
				c.value(fd, l.Get(j), joinIndex(fpath, j), idx)
			}
		case fd.IsMap():
			mp := v.Map()
			var keys []protoreflect.MapKey
			mp.Range(func(k protoreflect.MapKey, _ protoreflect.Value) bool {
				keys = append(keys, k)
				return true
			})
			slices.SortFunc(keys, func(a, b protoreflect.MapKey) int { return strings.Compare(a.String(), b.String()) })
			for _, k := range keys {
				c.value(fd.MapValue(), mp.Get(k), joinKey(fpath, k.String()), idx)
			}
		default:
			c.value(fd, v, fpath, idx)
		}
	}
}

// value checks one value of field fd: an enum against its definition, a
// message by walking it.
func (c *checker) value(fd protoreflect.FieldDescriptor, v protoreflect.Value, path string, parent int) {
	switch fd.Kind() {
	case protoreflect.EnumKind:
		ev := fd.Enum().Values().ByNumber(v.Enum())
		if ev == nil {
			c.add(path, "undefined value %d for enum %s", v.Enum(), fd.Enum().FullName())
			return
		}
		if opts, ok := ev.Options().(*descriptorpb.EnumValueOptions); ok && opts.GetDeprecated() {
			c.add(path, "enum value %s is deprecated", ev.FullName())
		}
	case protoreflect.MessageKind, protoreflect.GroupKind:
		c.walk(v.Message(), path, parent)
	}
}

// any unpacks the Any m, validates its content and walks it. The content
// is a child node at the same path: in JSON an Any is its content plus
// "@type".
func (c *checker) any(m protoreflect.Message, path string, idx int) {
	a, ok := m.Interface().(*anypb.Any)
	if !ok {
		c.add(path, "cannot unpack %T", m.Interface())
		return
	}
	if a.GetTypeUrl() == "" {
		c.add(path, "Any without @type")
		return
	}
	mt, err := protoregistry.GlobalTypes.FindMessageByURL(a.GetTypeUrl())
	if err != nil {
		c.add(path, "unknown type %q (not linked into this validator)", a.GetTypeUrl())
		return
	}
	inner := mt.New()
	if err := proto.Unmarshal(a.GetValue(), inner.Interface()); err != nil {
		c.add(path, "unpack %s: %v", a.GetTypeUrl(), err)
		return
	}
	c.validate(inner.Interface(), path)
	c.walk(inner, path, idx)
}

// joinIndex appends a list index to path.
func joinIndex(path string, i int) string {
	return fmt.Sprintf("%s[%d]", path, i)
}
