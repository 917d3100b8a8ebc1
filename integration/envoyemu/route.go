package envoyemu

import (
	"slices"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// metadata is the stream's dynamic metadata, by namespace.
type metadata map[string]*structpb.Struct

// merge takes the namespaces of dm listed in receiving, merging their
// fields into what is already there, as Envoy's setDynamicMetadata does.
// Other namespaces, and namespaces whose value is not a Struct, are dropped
// (ENVOY.md: metadata_options.receiving_namespaces).
func (md metadata) merge(dm *structpb.Struct, receiving []string) {
	for ns, v := range dm.GetFields() {
		s := v.GetStructValue()
		if s == nil || !slices.Contains(receiving, ns) {
			continue
		}
		cur := md[ns]
		if cur == nil {
			cur = &structpb.Struct{Fields: map[string]*structpb.Value{}}
			md[ns] = cur
		}
		for k, fv := range s.GetFields() {
			cur.Fields[k] = proto.Clone(fv).(*structpb.Value)
		}
	}
}

// matches reports whether the route's metadata matcher matches md.
func (r Route) matches(md metadata) bool {
	if r.Key == "" {
		return true
	}
	v, ok := md[r.Namespace].GetFields()[r.Key]
	if !ok {
		return false
	}
	s, ok := v.GetKind().(*structpb.Value_StringValue)
	return ok && s.StringValue == r.Value
}

// selectRoute returns the first route matching md.
func selectRoute(routes []Route, md metadata) (Route, bool) {
	for _, r := range routes {
		if r.matches(md) {
			return r, true
		}
	}
	return Route{}, false
}
