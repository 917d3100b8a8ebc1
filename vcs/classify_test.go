package vcs

import (
	"errors"
	"testing"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		text string
		want error
	}{
		// As the go command 1.26 and git 2.39 print them.
		{"go: corp.example.com/lib@v1.9.9: invalid version: unknown revision v1.9.9", errNotFound},
		{"go: corp.example.com/lib@nobranch: invalid version: unknown revision nobranch", errNotFound},
		{"go: corp.example.com/nope@latest: unrecognized import path \"corp.example.com/nope\": reading http://corp.example.com/nope?go-get=1: 404 Not Found\n\tserver response: 404 page not found", errNotFound},
		{"go: module corp.example.com/lib: no matching versions for query \"latest\"", errNotFound},
		{"go: corp.example.com/lib@v2.0.0+incompatible: invalid version: module contains a go.mod file, so module path must match major version (\"corp.example.com/lib/v2\")", errNotFound},
		{"go: example.com/x@v1.0.0: invalid version: git ls-remote -q origin in /c: exit status 128:\n\tfatal: repository 'https://example.com/x/' not found", errNotFound},
		{"go: corp.example.com/x@v1.0.0: parsing go.mod:\n\tmodule declares its path as: corp.example.com/y\n\t        but was required as: corp.example.com/x", errNotFound},
		{"go: corp.example.com/x@v0.0.0-20200101000000-abcdefabcdef: invalid pseudo-version: does not match version-control timestamp", errNotFound},
		{"go: module corp.example.com/lib: git ls-remote -q --end-of-options http://127.0.0.1:1/lib.git in /c: exit status 128:\n\tfatal: could not read Username for 'http://127.0.0.1:1': terminal prompts disabled", errAuth},
		{"fatal: Authentication failed for 'https://git.corp.example.com/lib.git/'", errAuth},
		{"fatal: unable to access 'https://h/x.git/': The requested URL returned error: 403", errAuth},
		{"git@h: Permission denied (publickey).", errAuth},
		// Outages are never "not found", whatever else the text says.
		{"go: x@v1.0.0: invalid version: unknown revision v1.0.0: fatal: unable to access 'https://h/x.git/': Could not resolve host: h", errFailed},
		{"fatal: unable to access 'https://h/x.git/': Failed to connect to h port 443: Connection refused", errFailed},
		{"go: unrecognized import path \"h/x\": https fetch: Get \"https://h/x?go-get=1\": dial tcp: lookup h: no such host", errFailed},
		{"error: RPC failed; HTTP 500 curl 22 The requested URL returned error: 500\nfatal: unknown revision", errFailed},
		{"go: reading https://h/x?go-get=1: 503 Service Unavailable", errFailed},
		{"go: something else entirely", errFailed},
		{"", errFailed},
	}
	for _, tt := range tests {
		if got := classify(tt.text); !errors.Is(got, tt.want) {
			t.Errorf("classify(%q) = %v, want %v", tt.text, got, tt.want)
		}
	}
}

func TestHostIn(t *testing.T) {
	tests := []struct{ text, want string }{
		{"go: module corp.example.com/lib: git ls-remote -q --end-of-options http://127.0.0.1:4321/lib.git in /c: exit status 128:", "127.0.0.1:4321"},
		{"reading http://corp.example.com/nope?go-get=1: 404 Not Found", ""},
		{"fatal: Authentication failed for 'https://git.corp.example.com/lib.git/'", "git.corp.example.com"},
		{"https://REDACTED@git.corp.example.com:8443/x.git", "git.corp.example.com:8443"},
		{"no url", ""},
	}
	for _, tt := range tests {
		if got := hostIn(tt.text); got != tt.want {
			t.Errorf("hostIn(%q) = %q, want %q", tt.text, got, tt.want)
		}
	}
}
