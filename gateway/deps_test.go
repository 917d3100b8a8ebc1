package gateway_test

import (
	"os/exec"
	"strings"
	"testing"
)

// The HTTP front end is one of two equal front ends over the processor: it
// must not pull in the other's transport.
func TestNoGRPC(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/modgate/modgate/gateway").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for dep := range strings.FieldsSeq(string(out)) {
		if strings.HasPrefix(dep, "google.golang.org/grpc") || strings.Contains(dep, "/extproc") {
			t.Errorf("package gateway depends on %s", dep)
		}
	}
}
