package gate

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
