#!/usr/bin/env bash
# Builds toxiproxy-server, the fault-injecting TCP proxy of the fault matrix
# (see toxiproxy.go), at the pinned version into the path the tests look
# in (about twenty seconds), unless an executable is there already.
set -eu
exec bash "$(dirname "$0")/../helperbin/install.sh" github.com/Shopify/toxiproxy/v2/cmd/server v2.5.0 \
	"${MODGATE_TOXIPROXY:-${XDG_CACHE_HOME:-$HOME/.cache}/modgate-test/bin/toxiproxy-server}"
