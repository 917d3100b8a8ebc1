package vcs

import (
	"strings"
	"testing"
)

var queryTests = []struct {
	q  string
	ok bool
}{
	{"v1.0.0", true},
	{"v1.0.0-rc.1", true},
	{"v1.0.0+incompatible", true},
	{"v0.0.0-20240102030405-abcdefabcdef", true},
	{"v1.0", true},
	{"main", true},
	{"master", true},
	{"release_1.2", true},
	{"latest", true},
	{"0123456789ab", true},
	{"Feature", true},
	{"", false},
	{"-x", false},
	{"--upload-pack=touch /tmp/x", false},
	{"--end-of-options", false},
	{"-", false},
	{"v1.0.0/../x", false},
	{"a/b", false},
	{"..", false},
	{"v1..0", false},
	{"main~1", false},
	{"main^", false},
	{"HEAD@{1}", false},
	{"refs:heads", false},
	{"a b", false},
	{"a\x00b", false},
	{"a\nb", false},
	{"ä", false},
	{"a\\b", false},
	{"*", false},
	{"a?b", false},
}

func TestCheckQuery(t *testing.T) {
	for _, tt := range queryTests {
		if err := checkQuery(tt.q); (err == nil) != tt.ok {
			t.Errorf("checkQuery(%q) = %v, want ok %v", tt.q, err, tt.ok)
		}
	}
}

func FuzzCheckQuery(f *testing.F) {
	for _, tt := range queryTests {
		f.Add(tt.q)
	}
	f.Fuzz(func(t *testing.T, q string) {
		if checkQuery(q) != nil {
			return
		}
		if q == "" || q[0] == '-' || strings.Contains(q, "/") || strings.Contains(q, "..") {
			t.Fatalf("checkQuery(%q) = nil for a query git could misread", q)
		}
		for _, c := range []byte(q) {
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("._+-", c) >= 0) {
				t.Fatalf("checkQuery(%q) = nil with byte %q", q, c)
			}
		}
	})
}
