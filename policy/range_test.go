package policy

import (
	"strings"
	"testing"
)

var parseRangeTests = []struct {
	in   string
	want string // String of the parsed range
}{
	{"<v1.4.2", "<v1.4.2"},
	{"<=v1.4.2", "<=v1.4.2"},
	{">v1.4.2", ">v1.4.2"},
	{">=v2.0.0 <v2.3.0", ">=v2.0.0 <v2.3.0"},
	{"  >=v2.0.0\t<v2.3.0 ", ">=v2.0.0 <v2.3.0"},
	{"=v1.0.0", "=v1.0.0"},
	{"v1.0.0", "v1.0.0"},
	{"<v1.2.4-rc.1", "<v1.2.4-rc.1"},
	{">=v0.0.0-20190101000000-abcdefabcdef", ">=v0.0.0-20190101000000-abcdefabcdef"},
}

func TestParseRange(t *testing.T) {
	for _, tt := range parseRangeTests {
		r, err := ParseRange(tt.in)
		if err != nil {
			t.Errorf("ParseRange(%q) = %v, want %q", tt.in, err, tt.want)
			continue
		}
		if got := r.String(); got != tt.want {
			t.Errorf("ParseRange(%q).String() = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestParseRangeErrors(t *testing.T) {
	tests := []struct {
		in   string
		want string // substring of the error
	}{
		{"", "empty"},
		{"   ", "empty"},
		{">= v2.0.0", `operator ">=" without a version: write it as ">=v1.2.3", with no space`},
		{"<", `operator "<" without a version`},
		{"<v1.2", `"v1.2" is not canonical: write "v1.2.0"`},
		{"v1", `"v1" is not canonical: write "v1.0.0"`},
		{"<1.2.3", `"1.2.3" is not a semantic version`},
		{"==v1.0.0", `"=v1.0.0" is not a semantic version`},
		{"=<v1.0.0", `"<v1.0.0" is not a semantic version`},
		{"!=v1.0.0", `"!=v1.0.0" is not a semantic version`},
		{"~v1.2.0", `"~v1.2.0" is not a semantic version`},
		{">=v2.0.0 <v2.3", `"v2.3" is not canonical`},
		{"=v2.0.0+incompatible", `"v2.0.0+incompatible" has build metadata, which comparisons ignore: write "v2.0.0"`},
		{"latest", `"latest" is not a semantic version`},
		{">=v2.0.0,<v2.3.0", "is not a semantic version"},
	}
	for _, tt := range tests {
		r, err := ParseRange(tt.in)
		if err == nil {
			t.Errorf("ParseRange(%q) = %q, want error containing %q", tt.in, r, tt.want)
			continue
		}
		if !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "range ") {
			t.Errorf("ParseRange(%q) error = %q, want \"range ...\" containing %q", tt.in, err, tt.want)
		}
	}
}

func TestRangeContains(t *testing.T) {
	tests := []struct {
		rng  string
		v    string
		want bool
	}{
		{"<v1.4.2", "v1.4.1", true},
		{"<v1.4.2", "v1.4.2", false},
		{"<v1.4.2", "v1.5.0", false},
		{"<=v1.4.2", "v1.4.2", true},
		{">v1.4.2", "v1.4.2", false},
		{">v1.4.2", "v1.4.3", true},
		{">=v2.0.0 <v2.3.0", "v2.0.0", true},
		{">=v2.0.0 <v2.3.0", "v2.2.9", true},
		{">=v2.0.0 <v2.3.0", "v2.3.0", false},
		{">=v2.0.0 <v2.3.0", "v1.9.9", false},
		{"=v1.0.0", "v1.0.0", true},
		{"=v1.0.0", "v1.0.1", false},
		{"v1.0.0", "v1.0.0", true},
		{"v1.0.0", "v1.0.0-rc.1", false},
		// Prereleases sort before their release, as semver says.
		{"<v1.2.4", "v1.2.4-rc.1", true},
		{">=v2.0.0", "v2.0.0-beta.1", false},
		{">=v2.0.0-beta.1", "v2.0.0-beta.2", true},
		{"<v1.0.0", "v0.0.0-20190101000000-abcdefabcdef", true},
		{">v1.2.3", "v1.2.4-0.20190101000000-abcdefabcdef", true},
		// Build metadata is ignored: +incompatible compares as its core version.
		{">=v2.0.0 <v3.0.0", "v2.1.0+incompatible", true},
		{"=v2.0.0", "v2.0.0+incompatible", true},
		{"<v2.0.0", "v2.0.0+incompatible", false},
		// Invalid versions are in no range.
		{"<v9.0.0", "", false},
		{"<v9.0.0", "latest", false},
		{"<v9.0.0", "master", false},
		{"<v9.0.0", "1.0.0", false},
		{">=v0.0.0", "v1.2.3.4", false},
		// Short valid versions compare as semver completes them.
		{"=v1.2.0", "v1.2", true},
	}
	for _, tt := range tests {
		r, err := ParseRange(tt.rng)
		if err != nil {
			t.Fatalf("ParseRange(%q): %v", tt.rng, err)
		}
		if got := r.Contains(tt.v); got != tt.want {
			t.Errorf("ParseRange(%q).Contains(%q) = %v, want %v", tt.rng, tt.v, got, tt.want)
		}
	}
}

func TestZeroRange(t *testing.T) {
	var r Range
	if !r.Contains("v1.2.3") || r.Contains("master") || r.String() != "" {
		t.Errorf("zero Range: Contains(v1.2.3) = %v, Contains(master) = %v, String() = %q; want true, false, \"\"", r.Contains("v1.2.3"), r.Contains("master"), r.String())
	}
}

func FuzzParseRange(f *testing.F) {
	for _, tt := range parseRangeTests {
		f.Add(tt.in, "v1.4.1")
	}
	f.Add(">= v2.0.0", "v2.0.0+incompatible")
	f.Add("=v2.0.0+incompatible", "v2.0.0-rc.1")
	f.Add("<v1.2", "v1.2")
	f.Fuzz(func(t *testing.T, s, v string) {
		r, err := ParseRange(s)
		if err != nil {
			return
		}
		again, err := ParseRange(r.String())
		if err != nil {
			t.Fatalf("ParseRange(%q).String() = %q, which does not parse: %v", s, r.String(), err)
		}
		if again.String() != r.String() {
			t.Fatalf("ParseRange(%q).String() = %q, which parses to %q", s, r.String(), again.String())
		}
		if r.Contains(v) != again.Contains(v) {
			t.Fatalf("ParseRange(%q).Contains(%q) = %v, but the range parsed from its String says %v", s, v, r.Contains(v), again.Contains(v))
		}
	})
}
