package extproc

import (
	"strings"
	"testing"
)

func TestPlainText(t *testing.T) {
	tests := []struct {
		name  string
		lines []string
		want  string
	}{
		{"one line", []string{"not found"}, "not found\n"},
		{"split and trimmed", []string{"a\n\n  b  \r\n"}, "a\nb\n"},
		{"control bytes", []string{"x\x00y\x1b[31mz"}, "x?y?[31mz\n"},
		{"invalid utf-8", []string{"a\xffb"}, "a?b\n"},
		{"at most 8 lines", []string{"1\n2\n3\n4\n5", "6\n7\n8\n9\n10"}, "1\n2\n3\n4\n5\n6\n7\n8\n"},
		{"long line cut", []string{strings.Repeat("x", 300)}, strings.Repeat("x", maxLineBytes) + "…\n"},
	}
	for _, tt := range tests {
		if got := string(plainText(tt.lines...)); got != tt.want {
			t.Errorf("%s: plainText(%q) = %q, want %q", tt.name, tt.lines, got, tt.want)
		}
	}
}

func TestExcerpt(t *testing.T) {
	x := &Exchange{}
	if got := string(x.Excerpt(nil)); got != "not found\n" {
		t.Errorf("Excerpt(nil) = %q, want %q", got, "not found\n")
	}
	body := "not found: example.com/x@v9.9.9: invalid version\n" + strings.Repeat("more\n", 20)
	got := string(x.Excerpt([]byte(body)))
	if n := strings.Count(got, "\n"); n != maxBodyLines || !strings.HasPrefix(got, "not found: example.com/x@v9.9.9") {
		t.Errorf("Excerpt(%d lines) = %q, want the first %d lines", 21, got, maxBodyLines)
	}
}
