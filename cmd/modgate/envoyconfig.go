package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/modgate/modgate/envoy"
)

const envoyConfigUsage = `Usage:

	modgate envoy-config validate [--root DIR | --no-files] FILE...

validate checks Envoy bootstrap files (YAML, Envoy v3 API) the way Envoy
would load them, without an Envoy binary: unknown fields and enum values,
the protoc-gen-validate rules (also inside typed_config), deprecated
fields, references to missing clusters, gRPC clusters that are not
HTTP/2 (or speak TLS without ALPN h2), ALPN without TLS, upstream TLS
that does not verify the server, and modgate's ext_proc settings (fail
closed, timeouts, the "modgate" metadata namespace, the upstream.address
and xds.cluster_name response attributes, and a cluster that reaches the
sidecar over TLS with a client certificate and a SAN matcher, unless all
its endpoints are loopback).

Files a config names (certificates, keys, CA bundles) must exist: as
written, or under DIR with --root (DIR stands for the Envoy container's
file system root: /etc/x is DIR/etc/x); --no-files skips that check.

It prints "FILE: ok" for each good file and one line per problem of a bad
one, and fails if any file has a problem.

Flags:
`

// maxEnvoyConfig bounds the size of a bootstrap file read.
const maxEnvoyConfig = 4 << 20

// envoyConfigCmd runs `modgate envoy-config`.
func envoyConfigCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("envoy-config", envoyConfigUsage, stderr)
	root := fs.String("root", "", "look up the files a config names under this `directory`")
	noFiles := fs.Bool("no-files", false, "do not check that the files a config names exist")
	if _, err := parseSub(fs, args, "validate"); err != nil {
		return err
	}
	if *root != "" && *noFiles {
		return usageError{"envoy-config validate: --root and --no-files exclude each other"}
	}
	if fs.NArg() == 0 {
		return usageError{"envoy-config validate: want at least one FILE"}
	}
	v := &envoy.Validator{FileExists: envoy.FilesUnder(*root)}
	if *noFiles {
		v.FileExists = nil
	}
	failed := 0
	for _, name := range fs.Args() {
		if err := ctx.Err(); err != nil {
			return err
		}
		err := validateEnvoyFile(v, name)
		if err == nil {
			fmt.Fprintf(stdout, "%s: ok\n", name)
			continue
		}
		failed++
		for _, p := range problems(err) {
			fmt.Fprintf(stdout, "%s: %v\n", name, p)
		}
	}
	if failed > 0 {
		return fmt.Errorf("envoy-config validate: %d of %d files have problems", failed, fs.NArg())
	}
	return nil
}

// validateEnvoyFile reads and validates one bootstrap file.
func validateEnvoyFile(v *envoy.Validator, name string) error {
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxEnvoyConfig+1))
	if err != nil {
		return err
	}
	if len(data) > maxEnvoyConfig {
		return fmt.Errorf("larger than %d bytes", maxEnvoyConfig)
	}
	return v.ValidateBootstrap(data)
}

// problems splits an error from errors.Join into its parts.
func problems(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}
