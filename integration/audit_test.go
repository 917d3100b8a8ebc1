package integration

import (
	"os/exec"
	"strings"
	"testing"
)

// TestAuditChainAcrossRestart: the real binary's audit file verifies with
// `modgate audit verify`, also after a restart appended to it.
func TestAuditChainAcrossRestart(t *testing.T) {
	public, private := upstreams(t)
	cfg := gatewayConfig(public, private)
	g := startModgate(t, cfg)
	for _, p := range []string{"/example.com/a/@v/list", "/x/../y", "/example.com/a/@v/v1.0.0.mod"} {
		get(t, g.URL+p)
	}
	g.waitEvents(t, 3)
	stopModgate(t, g)

	// A second run appends to the same file.
	g2 := startModgate(t, cfg, "--audit", g.audit)
	g2.audit = g.audit
	get(t, g2.URL+"/example.com/a/@v/v1.0.0.mod")
	g2.waitEvents(t, 4)
	stopModgate(t, g2)

	out, err := exec.Command(modgateBin, "audit", "verify", g.audit).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "chain intact") {
		t.Fatalf("modgate audit verify: %v\n%s", err, out)
	}
	if n := len(g2.events(t)); n < 4 {
		t.Errorf("%d events in the file, want at least 4", n)
	}
}
