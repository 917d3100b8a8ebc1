#!/usr/bin/env bash
# Builds versitygw, the real S3 server of the tests (see s3server.go), at
# the pinned version into the path the tests look in (about two minutes),
# unless an executable is there already.
set -eu
exec bash "$(dirname "$0")/../helperbin/install.sh" github.com/versity/versitygw/cmd/versitygw v1.8.0 \
	"${MODGATE_S3_SERVER:-${XDG_CACHE_HOME:-$HOME/.cache}/modgate-test/bin/versitygw}"
