//go:build !linux

package integration

import (
	"testing"
	"time"
)

// killOnRotation kills g after within: without inotify, it cannot tell
// when the audit log rotates.
func killOnRotation(t *testing.T, g *gatewayProc, path string, within time.Duration) bool {
	t.Helper()
	time.Sleep(within)
	g.kill(t)
	return false
}
