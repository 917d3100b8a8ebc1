#!/usr/bin/env bash
# Builds versitygw, the real S3 server of the tests (see s3server.go), at
# the pinned version into the path the tests look in, unless an executable
# is there already.
set -eu

version=v1.8.0
pkg=github.com/versity/versitygw/cmd/versitygw
out=${MODGATE_S3_SERVER:-${XDG_CACHE_HOME:-$HOME/.cache}/modgate-test/bin/versitygw}
go=${GO:-go}

if [ -x "$out" ]; then
	exit 0
fi

start=$(date +%s)
echo "build.sh: building $pkg@$version into $out (about two minutes)"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Outside any module, so that modgate's go.mod is neither read nor changed.
(cd "$tmp" && GOWORK=off GOFLAGS= GOBIN="$tmp/bin" "$go" install -trimpath "$pkg@$version")
mkdir -p "$(dirname "$out")"
mv "$tmp/bin/versitygw" "$out.part.$$"
mv "$out.part.$$" "$out" # a rename: a test never sees a partial binary
echo "build.sh: built $out in $(($(date +%s) - start))s"
