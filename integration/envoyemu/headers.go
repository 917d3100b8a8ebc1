package envoyemu

import (
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/protobuf/types/known/structpb"
)

// field is one header entry; keys are lower-case, as in Envoy's header map.
type field struct{ key, value string }

// headerMap is an ordered multi-map, pseudo headers first, like Envoy's.
type headerMap []field

// fromHTTP converts regular headers, lower-casing keys and keeping one entry
// per value, in a stable order.
func fromHTTP(h http.Header) headerMap {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var m headerMap
	for _, k := range keys {
		for _, v := range h[k] {
			m = append(m, field{strings.ToLower(k), v})
		}
	}
	return m
}

func (m headerMap) get(key string) (string, bool) {
	for _, f := range m {
		if f.key == key {
			return f.value, true
		}
	}
	return "", false
}

func (m headerMap) del(key string) headerMap {
	out := m[:0:0]
	for _, f := range m {
		if f.key != key {
			out = append(out, f)
		}
	}
	return out
}

// set overwrites every value of key with one value, keeping its position.
func (m headerMap) set(key, value string) headerMap {
	for i, f := range m {
		if f.key == key {
			out := append(m[:i:i], field{key, value})
			return append(out, m[i+1:].del(key)...)
		}
	}
	return m.add(key, value)
}

func (m headerMap) add(key, value string) headerMap {
	out := append(m[:len(m):len(m)], field{key, value})
	// Keep pseudo headers in front.
	sort.SliceStable(out, func(i, j int) bool {
		return strings.HasPrefix(out[i].key, ":") && !strings.HasPrefix(out[j].key, ":")
	})
	return out
}

// proto is the map Envoy sends: values in raw_value only (ENVOY.md).
func (m headerMap) proto() *corev3.HeaderMap {
	hm := &corev3.HeaderMap{Headers: make([]*corev3.HeaderValue, 0, len(m))}
	for _, f := range m {
		hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: f.key, RawValue: []byte(f.value)})
	}
	return hm
}

// http returns the regular headers with canonical keys.
func (m headerMap) http() http.Header {
	h := make(http.Header, len(m))
	for _, f := range m {
		if !strings.HasPrefix(f.key, ":") {
			h.Add(f.key, f.value)
		}
	}
	return h
}

// mutationRules are Envoy's default header mutation rules (mutation_rules
// unset). pseudo is the one pseudo header the phase may set (":path" for
// requests, ":status" for responses, "" otherwise).
type mutationRules struct {
	phase  string
	pseudo string
}

// mutable reports whether the default rules let a mutation touch key
// (ENVOY.md: host, :authority, :scheme, :method and x-envoy-* are not
// mutable; ':'-headers and host can never be removed). Rejected mutations
// are dropped silently (disallow_is_error false).
func (r mutationRules) mutable(key string, remove bool) bool {
	switch {
	case key == "host", strings.HasPrefix(key, "x-envoy-"):
		return false
	case strings.HasPrefix(key, ":"):
		return !remove && key == r.pseudo
	}
	return true
}

// apply applies mut to m the way Envoy's ext_proc mutation code does:
// removals first, then sets; only raw_value is read (value alone gives an
// empty header, both set is an error); the legacy append BoolValue decides
// append vs overwrite and append_action is ignored (envoy#36982). Invalid
// names or values are an error (local reply 500). The second result lists
// the dropped mutations.
func (r mutationRules) apply(m headerMap, mut *extprocv3.HeaderMutation) (headerMap, []string, error) {
	var ignored []string
	for _, key := range mut.GetRemoveHeaders() {
		key = strings.ToLower(key)
		if !r.mutable(key, true) {
			ignored = append(ignored, r.phase+": remove "+key)
			continue
		}
		m = m.del(key)
	}
	for _, opt := range mut.GetSetHeaders() {
		hv := opt.GetHeader()
		key := strings.ToLower(hv.GetKey())
		if hv.GetValue() != "" && len(hv.GetRawValue()) > 0 {
			return nil, nil, fmt.Errorf("set %s: both value and raw_value", key)
		}
		value := string(hv.GetRawValue()) // value alone → empty header
		if !validName(key) || !validValue(value) {
			return nil, nil, fmt.Errorf("set %q: invalid character", key)
		}
		if !r.mutable(key, false) {
			ignored = append(ignored, r.phase+": set "+key)
			continue
		}
		if key == ":status" {
			if code, err := strconv.Atoi(value); err != nil || code < 200 || code > 599 {
				return nil, nil, fmt.Errorf("set :status: invalid %q", value)
			}
		}
		//lint:ignore SA1019 Envoy's ext_proc reads only the legacy append flag (envoy#36982, ENVOY.md).
		if opt.GetAppend().GetValue() {
			m = m.add(key, value)
		} else {
			m = m.set(key, value)
		}
	}
	return m, ignored, nil
}

// validName accepts an RFC 9110 token, optionally behind one ':'.
func validName(key string) bool {
	key = strings.TrimPrefix(key, ":")
	if key == "" {
		return false
	}
	for i := 0; i < len(key); i++ {
		c := key[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

// validValue rejects what Envoy's headerValueIsValid rejects: NUL, CR, LF.
func validValue(v string) bool { return !strings.ContainsAny(v, "\x00\r\n") }

// attributeStruct builds the Struct Envoy sends under
// "envoy.filters.http.ext_proc": bools and numbers typed, nil omitted,
// everything else a string (ENVOY.md).
func attributeStruct(attrs map[string]any) *structpb.Struct {
	s := &structpb.Struct{Fields: make(map[string]*structpb.Value, len(attrs))}
	for k, v := range attrs {
		var val *structpb.Value
		switch x := v.(type) {
		case nil:
			continue
		case bool:
			val = structpb.NewBoolValue(x)
		case int:
			val = structpb.NewNumberValue(float64(x))
		case int32:
			val = structpb.NewNumberValue(float64(x))
		case int64:
			val = structpb.NewNumberValue(float64(x))
		case uint:
			val = structpb.NewNumberValue(float64(x))
		case uint32:
			val = structpb.NewNumberValue(float64(x))
		case uint64:
			val = structpb.NewNumberValue(float64(x))
		case float32:
			val = structpb.NewNumberValue(float64(x))
		case float64:
			val = structpb.NewNumberValue(x)
		case string:
			val = structpb.NewStringValue(x)
		case []byte:
			val = structpb.NewStringValue(string(x))
		default:
			val = structpb.NewStringValue(fmt.Sprint(x))
		}
		s.Fields[k] = val
	}
	return s
}
