#!/usr/bin/env bash
# Builds the peer Go module proxies that BenchmarkVsPeers (peers_bench_test.go)
# measures modgate against, each at a pinned version from its own Go module,
# into the directory the benchmark looks in, skipping any that is there
# already:
#
#   goproxy  github.com/goproxy/goproxy   cmd/goproxy
#   athens   github.com/gomods/athens     cmd/proxy
#
# Each is built inside its module's directory in the module cache, with that
# module's own go.mod and go.sum (replace directives included), so that
# modgate's go.mod is neither read nor changed. A peer that fails to build
# is reported and skipped; the benchmark then skips that peer.
set -u

dir=${MODGATE_PEERS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/modgate-test/bin}
go=${GO:-go}
status=0

# build NAME MODULE VERSION PACKAGE: build MODULE@VERSION's PACKAGE (relative
# to the module root) into $dir/NAME.
build() {
	local name=$1 mod=$2 version=$3 pkg=$4
	local out=$dir/$name
	if [ -x "$out" ]; then
		echo "build.sh: $name: $out is there already"
		return 0
	fi
	local start modjson srcdir
	start=$(date +%s)
	echo "build.sh: $name: building $mod@$version ./$pkg into $out"
	# Outside any module and workspace, and without the caller's GOFLAGS.
	if ! modjson=$(cd / && GOWORK=off GOFLAGS= "$go" mod download -json "$mod@$version"); then
		echo "build.sh: $name: cannot download $mod@$version:"
		echo "$modjson"
		return 1
	fi
	srcdir=$(printf '%s\n' "$modjson" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
	if [ -z "$srcdir" ] || [ ! -d "$srcdir" ]; then
		echo "build.sh: $name: go mod download gave no module directory:"
		echo "$modjson"
		return 1
	fi
	mkdir -p "$dir"
	# The module cache is read-only and the build must not change the
	# module's go.mod or go.sum: -mod=readonly (the default) fails instead.
	if ! (cd "$srcdir" && GOWORK=off GOFLAGS=-mod=readonly CGO_ENABLED=0 \
		"$go" build -trimpath -o "$out.part.$$" "./$pkg"); then
		rm -f "$out.part.$$"
		echo "build.sh: $name: build of $mod@$version ./$pkg failed after $(($(date +%s) - start))s"
		return 1
	fi
	mv "$out.part.$$" "$out" # a rename: a benchmark never sees a partial binary
	echo "build.sh: $name: built $out in $(($(date +%s) - start))s"
}

build goproxy github.com/goproxy/goproxy v0.26.1 cmd/goproxy || status=1
build athens github.com/gomods/athens v0.18.0 cmd/proxy || status=1
exit $status
