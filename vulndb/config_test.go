package vulndb

import (
	"strings"
	"testing"
	"time"
)

func TestConfigCheck(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string // error prefix; "" for none
	}{
		{"zero", Config{}, ""},
		{"https", Config{URL: "https://vulndb.example/", Refresh: 30 * time.Minute, MaxStaleness: 24 * time.Hour, OnStale: "open"}, ""},
		{"file", Config{URL: "file:///srv/vulndb"}, ""},
		{"loopback http", Config{URL: "http://127.0.0.1:8080"}, ""},
		{"http", Config{URL: "http://vulndb.example"}, "vulndb.url: "},
		{"relative file", Config{URL: "file://srv/vulndb"}, "vulndb.url: "},
		{"credentials", Config{URL: "https://u:p@vulndb.example"}, "vulndb.url: credentials"},
		{"query", Config{URL: "https://vulndb.example/?x=1"}, "vulndb.url: "},
		{"ftp", Config{URL: "ftp://vulndb.example"}, "vulndb.url: "},
		{"refresh too short", Config{Refresh: time.Second}, "vulndb.refresh: "},
		{"negative staleness", Config{MaxStaleness: -time.Hour}, "vulndb.max_staleness: "},
		{"staleness below refresh", Config{Refresh: 2 * time.Hour, MaxStaleness: time.Hour}, "vulndb.max_staleness: "},
		{"on_stale", Config{OnStale: "ajar"}, "vulndb.on_stale: "},
	}
	for _, tt := range tests {
		err := tt.cfg.Check()
		if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tt.want)) {
			t.Errorf("%s: Check() = %v, want %q", tt.name, err, tt.want)
		}
	}
}

func TestPolicyCheck(t *testing.T) {
	ok := Accept{ID: "GO-2026-0001", Until: "2026-12-31", Reason: "r"}
	with := func(f func(a *Accept)) []Accept {
		a := ok
		f(&a)
		return []Accept{ok, a}
	}
	tests := []struct {
		name string
		p    Policy
		want string
	}{
		{"zero", Policy{}, ""},
		{"full", Policy{Action: "deny", Accept: []Accept{ok, {ID: "GO-2026-12345", Modules: []string{"example.com/*,corp.example"}, Until: "2026-12-31T12:00:00+01:00", Reason: "r"}}, Exempt: []string{"corp.example"}}, ""},
		{"action", Policy{Action: "block"}, "policy.vulnerabilities.action: "},
		{"id", Policy{Accept: with(func(a *Accept) { a.ID = "CVE-2026-1" })}, "policy.vulnerabilities.accept[1].id: "},
		{"until missing", Policy{Accept: with(func(a *Accept) { a.Until = "" })}, "policy.vulnerabilities.accept[1].until: missing"},
		{"until bad", Policy{Accept: with(func(a *Accept) { a.Until = "31/12/2026" })}, "policy.vulnerabilities.accept[1].until: "},
		{"reason", Policy{Accept: with(func(a *Accept) { a.Reason = " " })}, "policy.vulnerabilities.accept[1].reason: "},
		{"modules", Policy{Accept: with(func(a *Accept) { a.Modules = []string{"example.com/["} })}, "policy.vulnerabilities.accept[1].modules[0]: "},
		{"exempt", Policy{Exempt: []string{"ok.example", "x@v1"}}, "policy.vulnerabilities.exempt[1]: "},
	}
	for _, tt := range tests {
		err := tt.p.Check()
		if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tt.want)) {
			t.Errorf("%s: Check() = %v, want %q", tt.name, err, tt.want)
		}
	}
	if _, err := NewChecker(Policy{Action: "deny"}, nil); err == nil {
		t.Errorf("NewChecker(deny, no store) = nil error, want one")
	}
}

func TestParseUntil(t *testing.T) {
	tests := []struct {
		in   string
		want time.Time
	}{
		{"2026-12-31", time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)},
		{"2026-12-31T10:00:00Z", time.Date(2026, 12, 31, 10, 0, 0, 0, time.UTC)},
	}
	for _, tt := range tests {
		got, err := parseUntil(tt.in)
		if err != nil || !got.Equal(tt.want) {
			t.Errorf("parseUntil(%q) = %v, %v, want %v", tt.in, got, err, tt.want)
		}
	}
}
