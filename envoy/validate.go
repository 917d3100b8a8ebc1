// Package envoy validates Envoy v3 configuration without an Envoy binary:
// the bootstrap files modgate ships for the mesh gateway and the client
// sidecar, and each resource modgate's xDS server emits.
//
// ValidateBootstrap reads a YAML bootstrap and reports every problem it
// finds, each naming the field by its path (for example
// static_resources.clusters[2].load_assignment) and, for YAML input, the
// line. It checks, in order:
//
//   - YAML: one document, no duplicate mapping keys, core-schema scalars;
//   - protojson into envoy.config.bootstrap.v3.Bootstrap: unknown fields
//     and bad enum names are errors, also inside typed_config (Any);
//   - the protoc-gen-validate rules (ValidateAll), also inside every Any,
//     which ValidateAll itself does not enter;
//   - deprecated fields, deprecated or undefined enum values, deprecated
//     message types and unknown fields left in an Any;
//   - what Envoy checks in C++ or not at all: referenced clusters exist,
//     gRPC clusters are HTTP/2 (and offer ALPN h2 over TLS, which grpc-go
//     servers require), ALPN auto_config only over TLS, upstream
//     TLS verifies the server, named files exist, names are unique;
//   - modgate's ext_proc contract: fail closed, message_timeout at least
//     500ms, max_message_timeout set, allow_mode_override, the "modgate"
//     receiving namespace, a capped gRPC message size, the response
//     attributes upstream.address and xds.cluster_name, and a cluster that
//     reaches the sidecar over TLS with a client certificate (unless every
//     endpoint is a loopback address or a pipe).
//
// ValidateResource runs the same checks, minus those that need the whole
// bootstrap (cluster references, files), on one xDS resource.
//
// Limits: only the extensions this package imports can be unpacked from an
// Any (see the imports in this file); any other @type is reported as
// unknown. Protojson stops at the first syntax or schema error, so such a
// file reports one problem. Nothing here resolves DNS, reads a certificate's
// contents, checks access-log format strings or runs Envoy's own
// per-extension factory checks: where Docker exists, `envoy --mode validate`
// in the pinned image remains the final word.
package envoy

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	// Every extension whose @type the shipped configs use (and the ones the
	// xDS server may emit), so that Any values resolve.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
)

// maxConfigBytes bounds a bootstrap file; Envoy's own are a few KiB.
const maxConfigBytes = 4 << 20

// Validator validates Envoy configurations. Its zero value checks
// everything except that named files exist.
type Validator struct {
	// FileExists reports whether a file a config names (a certificate,
	// private key or CA bundle) exists; path is as written in the config.
	// Nil, the default, skips the file checks. See FilesUnder.
	FileExists func(path string) bool
}

// ValidateBootstrap validates the YAML Envoy bootstrap data, looking up the
// files it names on the local file system. It returns nil or every problem
// found, joined with errors.Join.
func ValidateBootstrap(data []byte) error {
	return (&Validator{FileExists: FilesUnder("")}).ValidateBootstrap(data)
}

// ValidateBootstrap validates the YAML Envoy bootstrap data. It returns nil
// or every problem found, joined with errors.Join; each problem's text
// starts with the path of the field it is about.
func (v *Validator) ValidateBootstrap(data []byte) error {
	if len(data) > maxConfigBytes {
		return fmt.Errorf("bootstrap is %d bytes, more than the limit of %d", len(data), maxConfigBytes)
	}
	src, err := parseYAML(data)
	if err != nil {
		return err
	}
	var b bootstrapv3.Bootstrap
	opts := protojson.UnmarshalOptions{DiscardUnknown: false}
	if err := opts.Unmarshal(src.json, &b); err != nil {
		return src.jsonError(err)
	}
	c := &checker{src: src}
	c.validate(&b, "")
	c.walk(b.ProtoReflect(), "", -1)
	c.local()
	c.cross(&b, v.FileExists)
	return c.err()
}

// ValidateResource validates one xDS resource (a cluster, listener, route
// configuration, cluster load assignment, …): the protoc-gen-validate rules
// also inside every Any, deprecated fields and enum values, and the checks
// that need only the resource itself (ALPN over TLS, upstream TLS
// verification, modgate's ext_proc contract). It does not check that
// referenced clusters exist or that files exist. Paths in the problems are
// relative to m.
func ValidateResource(m proto.Message) error {
	if m == nil || !m.ProtoReflect().IsValid() {
		return errors.New("validate resource: nil message")
	}
	c := &checker{}
	c.validate(m, "")
	c.walk(m.ProtoReflect(), "", -1)
	c.local()
	return c.err()
}

// FilesUnder returns a FileExists function that looks each path up under
// the directory root, as if root were the file system root of the Envoy
// container: /etc/x is root/etc/x. A path that leaves root through ".."
// does not exist. With root "", paths are looked up as written.
func FilesUnder(root string) func(path string) bool {
	return func(path string) bool {
		p := path
		if root != "" {
			rel := strings.TrimLeft(filepath.ToSlash(path), "/")
			if !filepath.IsLocal(filepath.FromSlash(rel)) {
				return false
			}
			p = filepath.Join(root, filepath.FromSlash(rel))
		}
		fi, err := os.Stat(p)
		return err == nil && fi.Mode().IsRegular()
	}
}

// A problem is one thing wrong with a configuration.
type problem struct {
	path string // of the field, "" for the whole document
	line int    // in the YAML source, 0 if unknown
	msg  string
}

func (p *problem) Error() string {
	switch {
	case p.path == "":
		return p.msg
	case p.line > 0:
		return fmt.Sprintf("%s (line %d): %s", p.path, p.line, p.msg)
	}
	return p.path + ": " + p.msg
}

// add records a problem at path.
func (c *checker) add(path, format string, args ...any) {
	p := &problem{path: pathOrTop(path), msg: fmt.Sprintf(format, args...)}
	if c.src != nil {
		p.line = c.src.line(path)
	}
	c.probs = append(c.probs, p)
}

// err returns the problems joined, or nil.
func (c *checker) err() error {
	errs := make([]error, len(c.probs))
	for i, p := range c.probs {
		errs[i] = p
	}
	return errors.Join(errs...)
}
