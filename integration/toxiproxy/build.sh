#!/usr/bin/env bash
# Builds toxiproxy-server, the fault-injecting TCP proxy of the fault matrix
# (see toxiproxy.go), at the pinned version into the path the tests look
# in, unless an executable is there already.
set -eu

version=v2.5.0
pkg=github.com/Shopify/toxiproxy/v2/cmd/server
out=${MODGATE_TOXIPROXY:-${XDG_CACHE_HOME:-$HOME/.cache}/modgate-test/bin/toxiproxy-server}
go=${GO:-go}

if [ -x "$out" ]; then
	exit 0
fi

start=$(date +%s)
echo "build.sh: building $pkg@$version into $out (about twenty seconds)"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Outside any module, so that modgate's go.mod is neither read nor changed.
(cd "$tmp" && GOWORK=off GOFLAGS= GOBIN="$tmp/bin" "$go" install -trimpath "$pkg@$version")
mkdir -p "$(dirname "$out")"
# go install names the binary after its package's directory: server.
mv "$tmp/bin/server" "$out.part.$$"
mv "$out.part.$$" "$out" # a rename: a test never sees a partial binary
echo "build.sh: built $out in $(($(date +%s) - start))s"
