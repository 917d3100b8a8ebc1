#!/usr/bin/env bash
# install.sh PACKAGE VERSION OUT: builds PACKAGE@VERSION with go install
# into OUT, unless an executable is there already. The helpers' own
# build.sh scripts pin the package and version and name OUT (see
# helperbin.go for where the tests look).
set -eu

pkg=$1 version=$2 out=$3
go=${GO:-go}

if [ -x "$out" ]; then
	exit 0
fi

start=$(date +%s)
echo "build.sh: building $pkg@$version into $out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Outside any module, so that modgate's go.mod is neither read nor changed.
(cd "$tmp" && GOWORK=off GOFLAGS= GOBIN="$tmp/bin" "$go" install -trimpath "$pkg@$version")
mkdir -p "$(dirname "$out")"
# go install names the binary after its package's directory.
mv "$tmp/bin/$(basename "$pkg")" "$out.part.$$"
mv "$out.part.$$" "$out" # a rename: a test never sees a partial binary
echo "build.sh: built $out in $(($(date +%s) - start))s"
