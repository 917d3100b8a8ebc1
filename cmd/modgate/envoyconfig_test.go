package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestEnvoyConfigCmd(t *testing.T) {
	root := t.TempDir()
	for _, f := range []string{
		"etc/modgate/certs/ca.pem", "etc/modgate/certs/gateway.pem", "etc/modgate/certs/gateway-key.pem",
		"etc/modgate/certs/gateway-client.pem", "etc/modgate/certs/gateway-client-key.pem",
		"etc/ssl/certs/ca-certificates.crt",
	} {
		p := filepath.Join(root, filepath.FromSlash(f))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("test\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	const (
		gateway = "../../envoy/gateway.yaml"
		client  = "../../envoy/client-sidecar.yaml"
		broken  = "../../envoy/testdata/broken/failure-mode-allow.yaml"
	)
	tests := []struct {
		name    string
		args    []string
		wantOut []string // substrings of stdout
		wantErr string   // substring of the error, "" for none
		usage   bool     // the error is a usageError
	}{
		{"no files checked", []string{"validate", "--no-files", gateway, client},
			[]string{gateway + ": ok\n", client + ": ok\n"}, "", false},
		{"files under root", []string{"validate", "--root", root, gateway},
			[]string{gateway + ": ok\n"}, "", false},
		{"client cert missing under root", []string{"validate", "--root", root, client},
			[]string{client + `: static_resources.clusters[0]`, `file "/etc/modgate/certs/client.pem" does not exist`},
			"1 of 1 files have problems", false},
		{"broken", []string{"validate", "--no-files", gateway, broken},
			[]string{gateway + ": ok\n", broken + ": static_resources.listeners[0]", "failure_mode_allow (line 78): must be false"},
			"1 of 2 files have problems", false},
		{"missing file", []string{"validate", "--no-files", "testdata/no-such.yaml"},
			[]string{"testdata/no-such.yaml: open testdata/no-such.yaml"}, "1 of 1 files", false},
		{"no subcommand", nil, nil, "missing subcommand", true},
		{"unknown subcommand", []string{"check", gateway}, nil, `unknown subcommand "check"`, true},
		{"no file", []string{"validate"}, nil, "want at least one FILE", true},
		{"root and no-files", []string{"validate", "--root", root, "--no-files", gateway}, nil, "exclude each other", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := envoyConfigCmd(context.Background(), tt.args, &stdout, &stderr)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("envoyConfigCmd(%q) = %v, want nil; stdout:\n%s", tt.args, err, &stdout)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("envoyConfigCmd(%q) = %v, want error containing %q", tt.args, err, tt.wantErr)
			}
			var ue usageError
			if got := errors.As(err, &ue); got != tt.usage {
				t.Errorf("envoyConfigCmd(%q) = %v: usage error %v, want %v", tt.args, err, got, tt.usage)
			}
			for _, w := range tt.wantOut {
				if !strings.Contains(stdout.String(), w) {
					t.Errorf("envoyConfigCmd(%q) stdout:\n%s\nwant it to contain %q", tt.args, &stdout, w)
				}
			}
		})
	}
}
