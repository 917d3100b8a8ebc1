package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestClientEnvLine(t *testing.T) {
	tests := []struct {
		patterns []string
		want     string
	}{
		{nil, "go env -w GOPROXY=http://gw:8080 GONOSUMDB= GOPRIVATE= GONOPROXY="},
		{[]string{"corp.example"}, "go env -w GOPROXY=http://gw:8080 GONOSUMDB=corp.example GOPRIVATE= GONOPROXY="},
		// go env values are comma lists; one pattern from several variables once.
		{[]string{"corp.example,*.internal", "corp.example", " x.test "}, "go env -w GOPROXY=http://gw:8080 GONOSUMDB=corp.example,*.internal,x.test GOPRIVATE= GONOPROXY="},
	}
	for _, tt := range tests {
		if got := clientEnvLine("http://gw:8080", tt.patterns); got != tt.want {
			t.Errorf("clientEnvLine(%q) = %q, want %q", tt.patterns, got, tt.want)
		}
	}
}

func TestClientEnvCommand(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "modgate.yaml")
	if err := os.WriteFile(cfg, []byte("listen: 127.0.0.1:9999\nprivate: [corp.example, \"*.internal.example\"]\ntls: {cert: c.pem, key: k.pem}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"client-env", "--config", cfg}, 0, "go env -w GOPROXY=https://127.0.0.1:9999 GONOSUMDB=corp.example,*.internal.example GOPRIVATE= GONOPROXY=\n"},
		{[]string{"client-env", "--config", cfg, "--gateway", "https://modgate.corp.example"}, 0, "go env -w GOPROXY=https://modgate.corp.example GONOSUMDB=corp.example,*.internal.example GOPRIVATE= GONOPROXY=\n"},
		{[]string{"client-env", "--config", cfg, "--gateway", "modgate:8080"}, 2, ""},
		{[]string{"client-env", "--config", cfg, "--gateway", "https://a,direct"}, 2, ""},
		{[]string{"client-env", "extra"}, 2, ""},
	}
	for _, tt := range tests {
		var stdout, stderr bytes.Buffer
		code := run(t.Context(), tt.args, &stdout, &stderr)
		if code != tt.code || stdout.String() != tt.want {
			t.Errorf("modgate %s = %d, %q (stderr %q); want %d, %q", strings.Join(tt.args, " "), code, stdout.String(), stderr.String(), tt.code, tt.want)
		}
	}
}
