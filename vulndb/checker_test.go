package vulndb

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func newChecker(t testing.TB, p Policy, s *Store) *Checker {
	t.Helper()
	c, err := NewChecker(p, s)
	if err != nil {
		t.Fatalf("NewChecker: %v", err)
	}
	return c
}

func checkReason(t *testing.T, v Verdict) {
	t.Helper()
	if n := strings.Count(v.Reason, "\n"); n > 7 || strings.Contains(v.Reason, "\n\n") || strings.HasSuffix(v.Reason, "\n") {
		t.Errorf("Reason = %q: more than 8 lines, a blank one or a final newline", v.Reason)
	}
}

func TestCheckDeny(t *testing.T) {
	clk := newClock(t0)
	c := newChecker(t, Policy{Action: ActionDeny, Exempt: []string{"example.com/always"}}, fileStore(t, Config{}, clk))
	tests := []struct {
		path, version string
		action        string
		ids           []string
		reason        string // first line
	}{
		{"example.com/vuln", "v1.0.0", "deny", []string{"GO-2026-0001"},
			"example.com/vuln v1.0.0 has known vulnerabilities: GO-2026-0001 (Remote code execution in example.com/vuln); fixed in v1.0.1: use v1.0.1 or later"},
		{"example.com/vuln", "v1.0.1", "allow", nil, ""},
		{"example.com/vuln", "v1.0.1-0.20260101000000-abcdefabcdef", "deny", []string{"GO-2026-0001"},
			"example.com/vuln v1.0.1-0.20260101000000-abcdefabcdef has known vulnerabilities: GO-2026-0001 (Remote code execution in example.com/vuln); fixed in v1.0.1: use v1.0.1 or later"},
		{"example.com/nofix", "v1.3.0", "deny", []string{"GO-2026-0002"},
			"example.com/nofix v1.3.0 has known vulnerabilities: GO-2026-0002 (Unbounded memory use in example.com/nofix); no fixed version is known"},
		{"example.com/always", "v1.0.0", "allow", nil, ""}, // exempt
		{"example.com/withdrawn", "v1.0.0", "allow", nil, ""},
		{"example.com/two", "v1.0.0", "deny", []string{"GO-2026-0007"},
			// v1.1.0 fixes GO-2026-0007 but has GO-2026-0008.
			"example.com/two v1.0.0 has known vulnerabilities: GO-2026-0007 (Path traversal in example.com/multi and example.com/two); fixed in v1.2.0: use v1.2.0 or later"},
		{"golang.org/toolchain", "v0.0.1-go1.21.3.linux-amd64", "deny", []string{"GO-2026-0005", "GO-2026-0006"},
			"golang.org/toolchain v0.0.1-go1.21.3.linux-amd64 has 2 known vulnerabilities; fixed in v0.0.1-go1.21.6.linux-amd64: use v0.0.1-go1.21.6.linux-amd64 or later"},
		{"golang.org/toolchain", "v0.0.1-go1.22.1.linux-amd64", "allow", nil, ""},
		{"example.com/clean", "v1.0.0", "allow", nil, ""},
	}
	for _, tt := range tests {
		v := c.Check(tt.path, tt.version, clk.Now())
		if v.Action != tt.action || !slices.Equal(v.IDs, tt.ids) {
			t.Errorf("Check(%s, %s) = %+v, want %s %v", tt.path, tt.version, v, tt.action, tt.ids)
			continue
		}
		if got := firstLine(v.Reason); got != tt.reason {
			t.Errorf("Check(%s, %s).Reason = %q, want first line %q", tt.path, tt.version, v.Reason, tt.reason)
		}
		checkReason(t, v)
	}
	v := c.Check("golang.org/toolchain", "v0.0.1-go1.21.3.linux-amd64", clk.Now())
	for _, want := range []string{"\n  GO-2026-0005 (Request smuggling in net/http)", "\n  GO-2026-0006 (Code injection in the go command)", "policy.vulnerabilities"} {
		if !strings.Contains(v.Reason, want) {
			t.Errorf("Check(toolchain).Reason = %q, want it to contain %q", v.Reason, want)
		}
	}
	var nilChecker *Checker
	if v := nilChecker.Check("example.com/vuln", "v1.0.0", clk.Now()); v.Action != ActionAllow {
		t.Errorf("nil Checker: Check = %+v, want allow", v)
	}
	off := newChecker(t, Policy{}, nil)
	if v := off.Check("example.com/vuln", "v1.0.0", clk.Now()); v.Action != ActionAllow || v.IDs != nil {
		t.Errorf("action off: Check = %+v, want allow, unchecked", v)
	}
}

func TestCheckWarn(t *testing.T) {
	clk := newClock(t0)
	c := newChecker(t, Policy{Action: ActionWarn}, fileStore(t, Config{}, clk))
	tests := []struct{ path, version, warning string }{
		{"example.com/vuln", "v1.0.0", `299 modgate "GO-2026-0001: fixed in v1.0.1"`},
		{"example.com/nofix", "v1.0.0", `299 modgate "GO-2026-0002: no fixed version"`},
		{"golang.org/toolchain", "v0.0.1-go1.21.3.linux-amd64", `299 modgate "GO-2026-0005, GO-2026-0006: fixed in v0.0.1-go1.21.6.linux-amd64"`},
	}
	for _, tt := range tests {
		v := c.Check(tt.path, tt.version, clk.Now())
		if v.Action != ActionWarn || v.Warning != tt.warning || v.Reason != "" || len(v.IDs) == 0 {
			t.Errorf("Check(%s, %s) = %+v, want warn with Warning %s", tt.path, tt.version, v, tt.warning)
		}
	}
	if v := c.Check("example.com/vuln", "v1.0.1", clk.Now()); v.Action != ActionAllow || v.Warning != "" {
		t.Errorf("Check(fixed version) = %+v, want allow without warning", v)
	}
}

func TestCheckAccept(t *testing.T) {
	clk := newClock(t0)
	p := Policy{Action: ActionDeny, Accept: []Accept{
		{ID: "GO-2026-0001", Modules: []string{"example.com/vuln"}, Until: "2026-11-05", Reason: "not reachable from our code"},
		{ID: "GO-2026-0002", Modules: []string{"example.com/other"}, Until: "2027-01-01", Reason: "another module"},
		{ID: "GO-2026-0007", Until: "2026-11-03T12:00:00Z", Reason: "every module"},
	}}
	c := newChecker(t, p, fileStore(t, Config{MaxStaleness: 30 * 24 * time.Hour}, clk))
	tests := []struct {
		name          string
		at            time.Time
		path, version string
		action        string
		warningHas    string
	}{
		{"accepted", t0, "example.com/vuln", "v1.0.0", "allow", `299 modgate "GO-2026-0001: accepted until 2026-11-05"`},
		{"last second of the date", time.Date(2026, 11, 5, 23, 59, 59, 0, time.UTC), "example.com/vuln", "v1.0.0", "allow", "accepted"},
		{"expired", time.Date(2026, 11, 6, 0, 0, 0, 0, time.UTC), "example.com/vuln", "v1.0.0", "deny", ""},
		{"other module", t0, "example.com/nofix", "v1.0.0", "deny", ""},
		{"no modules: every module", t0, "example.com/multi", "v1.0.0", "allow", "GO-2026-0007: accepted until 2026-11-03T12:00:00Z"},
		{"RFC 3339 expired", time.Date(2026, 11, 3, 12, 0, 0, 0, time.UTC), "example.com/multi", "v1.0.0", "deny", ""},
		{"one of two accepted", t0, "example.com/two", "v1.1.0", "deny", ""},
	}
	for _, tt := range tests {
		v := c.Check(tt.path, tt.version, tt.at)
		if v.Action != tt.action || len(v.IDs) == 0 || !strings.Contains(v.Warning, tt.warningHas) {
			t.Errorf("%s: Check(%s, %s) = %+v, want %s with IDs and a warning containing %q", tt.name, tt.path, tt.version, v, tt.action, tt.warningHas)
		}
	}
}

func TestCheckStale(t *testing.T) {
	staleAt := dbModified.Add(73 * time.Hour) // a file:// source ages from modified
	tests := []struct {
		name          string
		policy        Policy
		onStale       string
		path, version string
		action        string
		reason        string
		warningHas    string
	}{
		{"closed", Policy{Action: ActionDeny}, "", "example.com/clean", "v1.0.0", "deny",
			"example.com/clean v1.0.0: the vulnerability database is 73 hours old (max_staleness 72h): refusing versions it cannot vouch for", ""},
		{"closed: exempt", Policy{Action: ActionDeny, Exempt: []string{"example.com/clean"}}, "closed", "example.com/clean", "v1.0.0", "allow", "", ""},
		{"open", Policy{Action: ActionDeny}, "open", "example.com/clean", "v1.0.0", "allow", "",
			`299 modgate "the vulnerability database is 73 hours old (max_staleness 72h): versions are not fully checked"`},
		{"open: known still denied", Policy{Action: ActionDeny}, "open", "example.com/vuln", "v1.0.0", "deny",
			"example.com/vuln v1.0.0 has known vulnerabilities: GO-2026-0001 (Remote code execution in example.com/vuln); fixed in v1.0.1: use v1.0.1 or later", "73 hours old"},
		{"warn never refuses", Policy{Action: ActionWarn}, "closed", "example.com/vuln", "v1.0.0", "warn", "", "73 hours old"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock(t0)
			c := newChecker(t, tt.policy, fileStore(t, Config{OnStale: tt.onStale}, clk))
			v := c.Check(tt.path, tt.version, staleAt)
			if v.Action != tt.action || firstLine(v.Reason) != tt.reason || !strings.Contains(v.Warning, tt.warningHas) {
				t.Errorf("Check(%s, %s) = %+v, want %s, reason %q, warning containing %q", tt.path, tt.version, v, tt.action, tt.reason, tt.warningHas)
			}
			checkReason(t, v)
			if v := c.Check(tt.path, tt.version, staleAt.Add(-2*time.Hour)); v.Warning != "" && !strings.Contains(v.Warning, "fixed in") {
				t.Errorf("Check before stale = %+v, want no staleness warning", v)
			}
		})
	}

	// No data at all.
	clk := newClock(t0)
	empty := openStore(t, Options{Config: Config{URL: "https://vulndb.example"}, Get: noNetwork}, clk)
	c := newChecker(t, Policy{Action: ActionDeny}, empty)
	if v := c.Check("example.com/clean", "v1.0.0", t0); v.Action != ActionDeny || !strings.Contains(v.Reason, "has not loaded the vulnerability database yet") {
		t.Errorf("Check without data = %+v, want deny: not loaded", v)
	}
}

func TestFilter(t *testing.T) {
	clk := newClock(t0)
	s := fileStore(t, Config{}, clk)
	c := newChecker(t, Policy{Action: ActionDeny}, s)
	list := []string{"v0.9.0", "v1.0.0", "v1.0.1-0.20260101000000-abcdefabcdef", "v1.0.1", "v1.1.0"}
	if got, want := c.Filter("example.com/vuln", list, t0), []string{"v1.0.1", "v1.1.0"}; !slices.Equal(got, want) {
		t.Errorf("Filter(example.com/vuln) = %v, want %v", got, want)
	}
	if got := c.Filter("example.com/clean", list, t0); !slices.Equal(got, list) {
		t.Errorf("Filter(example.com/clean) = %v, want all", got)
	}
	// Stale: versions stay listed; their .zip says why.
	if got := c.Filter("example.com/clean", list, dbModified.Add(100*time.Hour)); !slices.Equal(got, list) {
		t.Errorf("Filter(stale) = %v, want all", got)
	}
	warn := newChecker(t, Policy{Action: ActionWarn}, s)
	if got := warn.Filter("example.com/vuln", list, t0); !slices.Equal(got, list) {
		t.Errorf("warn: Filter(example.com/vuln) = %v, want all", got)
	}
}
