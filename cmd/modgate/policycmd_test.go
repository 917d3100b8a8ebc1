package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modgate/modgate/auth"
)

// policyYAML is a config file with a policy section among other settings.
const policyYAML = `listen: 127.0.0.1:9999
private: [corp.example]
policy:
  default: allow
  rules:
    - name: ci-old-yaml
      match: github.com/x/y
      versions: "<v1.2.4"
      groups: [ci]
      action: allow
    - name: no-yaml-v2
      match: github.com/x/y
      versions: "<v1.2.4"
      action: deny
      reason: use v1.2.4 or later
    - match: github.com/evil
      action: deny
cache:
  hot_bytes: 1MiB
`

func writePolicyConfig(t testing.TB, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestPolicyCheck(t *testing.T) {
	cfg := writePolicyConfig(t, "modgate.yaml", policyYAML)
	tests := []struct {
		args []string
		code int
		want string // stdout
	}{
		{[]string{"check", "github.com/x/y@v1.2.3", "--config", cfg}, 1, `deny github.com/x/y@v1.2.3 by rule "no-yaml-v2": use v1.2.4 or later` + "\n"},
		{[]string{"check", "github.com/x/y@v1.2.4", "--config", cfg}, 0, "allow github.com/x/y@v1.2.4 (default)\n"},
		{[]string{"check", "github.com/x/y@v1.2.4-rc.1", "--config", cfg}, 1, `deny github.com/x/y@v1.2.4-rc.1 by rule "no-yaml-v2": use v1.2.4 or later` + "\n"},
		{[]string{"check", "--config", cfg, "github.com/evil/lib@v1.0.0"}, 1, `deny github.com/evil/lib@v1.0.0 by rule "rule 3"` + "\n"},
		{[]string{"check", "github.com/evil/lib/v2@v2.0.0", "--config", cfg}, 1, `deny github.com/evil/lib/v2@v2.0.0 by rule "rule 3"` + "\n"},
		// --as with groups; flags before or after MODULE@VERSION.
		{[]string{"check", "github.com/x/y@v1.2.3", "--as", "ci-bot", "--group", "ci", "--config", cfg}, 0, `allow github.com/x/y@v1.2.3 by rule "ci-old-yaml"` + "\n"},
		{[]string{"check", "--as", "ci-bot", "--group", "dev", "--group", "ci", "--config", cfg, "github.com/x/y@v1.2.3"}, 0, `allow github.com/x/y@v1.2.3 by rule "ci-old-yaml"` + "\n"},
		{[]string{"check", "github.com/x/y@v1.2.3", "--as", "alice", "--group", "dev", "--config", cfg}, 1, `deny github.com/x/y@v1.2.3 by rule "no-yaml-v2": use v1.2.4 or later` + "\n"},
		{[]string{"check", "github.com/x/y@v1.2.3", "--as", "ci-bot", "--config", cfg}, 1, `deny github.com/x/y@v1.2.3 by rule "no-yaml-v2": use v1.2.4 or later` + "\n"},
		// Bad usage.
		{[]string{"check", "--config", cfg}, 2, ""},
		{[]string{"check", "github.com/x/y", "--config", cfg}, 2, ""},
		{[]string{"check", "github.com/x/y@latest", "--config", cfg}, 2, ""},
		{[]string{"check", "github.com/x/y@v1.2", "--config", cfg}, 2, ""},
		{[]string{"check", "github.com/x/y@v2.0.0", "--config", cfg}, 2, ""}, // wants +incompatible or /v2
		{[]string{"check", "Not A Path@v1.0.0", "--config", cfg}, 2, ""},
		{[]string{"check", "github.com/x/y@v1.0.0", "github.com/x/z@v1.0.0", "--config", cfg}, 2, ""},
		{[]string{"check", "github.com/x/y@v1.2.3", "--group", "ci", "--config", cfg}, 2, ""},
		{[]string{"check", "github.com/x/y@v1.2.3", "--group", "", "--as", "a", "--config", cfg}, 2, ""},
		{[]string{"check", "github.com/x/y@v1.2.3", "--as", "a", "--group", "ci,release", "--config", cfg}, 2, ""},
		{[]string{"check", "github.com/x/y@v1.2.3", "--bogus", "--config", cfg}, 2, ""},
		{[]string{"inspect"}, 2, ""},
		{[]string{}, 2, ""},
		// A config file that is not there is an error when named.
		{[]string{"check", "github.com/x/y@v1.2.3", "--config", filepath.Join(t.TempDir(), "missing.yaml")}, 1, ""},
	}
	for _, tt := range tests {
		args := append([]string{"policy"}, tt.args...)
		var stdout, stderr bytes.Buffer
		code := run(t.Context(), args, &stdout, &stderr)
		if code != tt.code || stdout.String() != tt.want {
			t.Errorf("modgate %s = %d, %q (stderr %q); want %d, %q", strings.Join(args, " "), code, stdout.String(), stderr.String(), tt.code, tt.want)
		}
	}
}

func TestPolicyCheckDenialMessage(t *testing.T) {
	cfg := writePolicyConfig(t, "modgate.yaml", policyYAML)
	var stdout, stderr bytes.Buffer
	run(t.Context(), []string{"policy", "check", "github.com/x/y@v1.2.3", "--config", cfg}, &stdout, &stderr)
	want := `modgate: policy check: denied; a go command would be told: github.com/x/y v1.2.3 is denied by rule "no-yaml-v2": use v1.2.4 or later` + "\n"
	if stderr.String() != want {
		t.Errorf("modgate policy check (denied) stderr = %q, want %q", stderr.String(), want)
	}
}

func TestPolicyDefaultConfigFile(t *testing.T) {
	tests := []struct {
		name string
		file string // content of ./modgate.yaml; "" for none
		args []string
		code int
		want string
	}{
		{"no file: allow", "", []string{"check", "github.com/x/y@v1.2.3"}, 0, "allow github.com/x/y@v1.2.3 (default)\n"},
		{"no file: validate", "", []string{"validate"}, 0, "ok: 0 rules\n"},
		{"file without policy", "listen: 127.0.0.1:9999\n", []string{"check", "github.com/x/y@v1.2.3"}, 0, "allow github.com/x/y@v1.2.3 (default)\n"},
		{"empty file", "\n", []string{"validate"}, 0, "ok: 0 rules\n"},
		{"file with policy", policyYAML, []string{"check", "github.com/x/y@v1.2.3"}, 1, `deny github.com/x/y@v1.2.3 by rule "no-yaml-v2": use v1.2.4 or later` + "\n"},
		{"default deny", "policy: {default: deny}\n", []string{"check", "github.com/x/y@v1.2.3"}, 1, "deny github.com/x/y@v1.2.3 (default)\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if tt.file != "" {
				if err := os.WriteFile(filepath.Join(dir, "modgate.yaml"), []byte(tt.file), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			t.Chdir(dir)
			args := append([]string{"policy"}, tt.args...)
			var stdout, stderr bytes.Buffer
			code := run(t.Context(), args, &stdout, &stderr)
			if code != tt.code || stdout.String() != tt.want {
				t.Errorf("modgate %s = %d, %q (stderr %q); want %d, %q", strings.Join(args, " "), code, stdout.String(), stderr.String(), tt.code, tt.want)
			}
		})
	}
}

func TestPolicyValidate(t *testing.T) {
	tests := []struct {
		name   string
		file   string
		code   int
		stdout string
		stderr string // substring
	}{
		{"ok", policyYAML, 0, "ok: 3 rules\n", ""},
		{"bad range", "policy:\n  rules:\n    - {match: a.example, action: deny}\n    - {match: b.example, action: deny}\n    - {match: c.example, versions: \"<v1.2\", action: deny}\n", 1, "",
			`policy.rules[2].versions: range "<v1.2": "v1.2" is not canonical: write "v1.2.0"`},
		{"unknown action", "policy:\n  rules:\n    - {match: a.example, action: block}\n", 1, "", `policy.rules[0].action: "block": want allow or deny`},
		{"no match", "policy:\n  rules:\n    - {action: deny}\n", 1, "", `policy.rules[0].match: missing`},
		{"bad pattern", "policy:\n  rules:\n    - {match: \"a.example/[\", action: deny}\n", 1, "", `policy.rules[0].match: bad pattern "a.example/["`},
		{"bad default", "policy:\n  default: block\n", 1, "", `policy.default: "block": want allow or deny`},
		{"unknown key in policy", "policy:\n  rules:\n    - {match: a.example, action: deny, block_zip: true}\n", 1, "", "field block_zip not found"},
		{"unknown key in rule list", "policy:\n  rule: []\n", 1, "", "field rule not found"},
		{"unquoted > range", "policy:\n  rules:\n    - match: a.example\n      versions: >=v2.0.0\n      action: deny\n", 1, "", "config "},
		{"not YAML", "policy: [\n", 1, "", "config "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := writePolicyConfig(t, "modgate.yaml", tt.file)
			args := []string{"policy", "validate", "--config", cfg}
			var stdout, stderr bytes.Buffer
			code := run(t.Context(), args, &stdout, &stderr)
			if code != tt.code || stdout.String() != tt.stdout || !strings.Contains(stderr.String(), tt.stderr) {
				t.Errorf("modgate %s = %d, %q, stderr %q; want %d, %q, stderr containing %q", strings.Join(args, " "), code, stdout.String(), stderr.String(), tt.code, tt.stdout, tt.stderr)
			}
		})
	}
	// Usage errors.
	for _, args := range [][]string{
		{"policy", "validate", "extra"},
		{"policy", "validate", "--as", "alice"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(t.Context(), args, &stdout, &stderr); code != 2 {
			t.Errorf("modgate %s = %d (stderr %q), want 2", strings.Join(args, " "), code, stderr.String())
		}
	}
}

// --as NAME takes NAME's groups from the tokens file the config names, as
// the server would.
func TestPolicyCheckGroupsFromTokens(t *testing.T) {
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	if _, err := auth.Create(tokens, "alice", []string{"release"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "modgate.yaml")
	text := "auth:\n  tokens: " + tokens + "\npolicy:\n  default: deny\n  rules:\n    - {name: release-only, match: example.com/m, groups: [release], action: allow}\n"
	if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	for as, want := range map[string]int{"alice": 0, "bob": 1} {
		var stdout, stderr bytes.Buffer
		if code := run(t.Context(), []string{"policy", "check", "example.com/m@v1.0.0", "--as", as, "--config", cfg}, &stdout, &stderr); code != want {
			t.Errorf("policy check --as %s = %d (%q %q), want %d", as, code, stdout.String(), stderr.String(), want)
		}
	}
}
