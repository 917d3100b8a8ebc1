package vcs

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestRedact(t *testing.T) {
	r := &redactor{secrets: []string{"hunter22", "tok-abc"}}
	tests := []struct{ in, want string }{
		{"https://user:pass@host/x", "https://REDACTED@host/x"},
		{"'http://user:p@ss@host:8080/x.git/'", "'http://REDACTED@host:8080/x.git/'"},
		{"ssh://git@host/x", "ssh://REDACTED@host/x"},
		{"git+ssh://u@h", "git+ssh://REDACTED@h"},
		{"https://host/mod/@v/list", "https://host/mod/@v/list"},
		{"corp.example.com/lib@v1.0.0", "corp.example.com/lib@v1.0.0"},
		{"password hunter22 here", "password REDACTED here"},
		{"Authorization: Basic dXNlcjpwYXNz\nnext", "Authorization: REDACTED\nnext"},
		{"authorization:Bearer x", "authorization:REDACTED"},
		{"token tok-abc.", "token REDACTED."},
		{"", ""},
	}
	for _, tt := range tests {
		if got := r.redact(tt.in); got != tt.want {
			t.Errorf("redact(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestClean(t *testing.T) {
	r := &redactor{secrets: []string{"hunter22"}}
	tests := []struct{ in, want string }{
		{"go: x@v1: invalid version: unknown revision v1\n", "x@v1: invalid version: unknown revision v1"},
		{"\n\n  go: first\nsecond\n", "first"},
		{"go: a: exit status 128:\n\tfatal: Authentication failed for 'https://u:hunter22@h/'\nmore", "a: exit status 128: fatal: Authentication failed for 'https://REDACTED@h/'"},
		{"bell\a and \x1b[31mcolour\x1b[0m and é", "bell and [31mcolour[0m and"},
		{strings.Repeat("y", 1000), strings.Repeat("y", maxLine)},
		{"", ""},
	}
	for _, tt := range tests {
		if got := r.clean(tt.in); got != tt.want {
			t.Errorf("clean(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestReadNetrc(t *testing.T) {
	file := filepath.Join(t.TempDir(), "netrc")
	text := `machine a.example.com login alice password pw-a
machine b.example.com
	login bob
	password "pw b"
macdef init
	password not-a-password

default login carol password pw-c
machine c.example.com login dave
`
	if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	got := readNetrc(file)
	want := []netrcEntry{{"alice", "pw-a"}, {"bob", `"pw`}, {"carol", "pw-c"}}
	if !slices.Equal(got, want) {
		t.Errorf("readNetrc = %q, want %q", got, want)
	}
	r := newRedactor(file, []string{"extra-secret"})
	for _, s := range []string{"pw-a", "pw-c", "extra-secret", base64.StdEncoding.EncodeToString([]byte("alice:pw-a"))} {
		if !slices.Contains(r.secrets, s) {
			t.Errorf("redactor secrets %q lack %q", r.secrets, s)
		}
	}
	if got := newRedactor(filepath.Join(t.TempDir(), "missing"), nil).secrets; len(got) != 0 {
		t.Errorf("secrets of a missing netrc = %q", got)
	}
}

func FuzzRedact(f *testing.F) {
	f.Add("https://user:hunter22@host/x hunter22", "hunter22")
	f.Add("fatal: Authentication failed for 'http://a:b@127.0.0.1:1/'", "b")
	f.Add("DX DDXX", "DX")
	f.Add("ACT", "ACT")
	f.Add("x://y@z://w@", "w@")
	f.Fuzz(func(t *testing.T, text, secret string) {
		r := &redactor{}
		if secret != "" {
			r.secrets = []string{secret}
		}
		got := r.redact(text)
		if secret != "" && strings.Contains(got, secret) && !strings.Contains(redacted+"@", secret) && !strings.Contains(withheld, secret) {
			t.Fatalf("redact(%q) with secret %q = %q", text, secret, got)
		}
		for _, m := range userinfoRE.FindAllStringSubmatch(got, -1) {
			if !strings.HasSuffix(m[0], "://"+redacted+"@") {
				t.Fatalf("redact(%q) = %q keeps userinfo %q", text, got, m[0])
			}
		}
		line := r.clean(text)
		if len(line) > maxLine || strings.ContainsFunc(line, func(c rune) bool { return c < ' ' || c >= 0x7f }) {
			t.Fatalf("clean(%q) = %q: too long or not printable ASCII", text, line)
		}
		if secret != "" && strings.Contains(line, secret) && !strings.Contains(redacted+"@", secret) && !strings.Contains(withheld, secret) {
			t.Fatalf("clean(%q) with secret %q = %q", text, secret, line)
		}
	})
}
