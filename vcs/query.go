package vcs

import (
	"errors"
	"strings"
)

// checkQuery reports whether q, a version or version query that has
// passed goproxy.Parse, may be handed to the go command, which passes it
// on to git. It refuses what git could read as an option, a path or
// revision syntax: a leading "-" (CVE-2025-68119 turned crafted versions
// into git options), any "/" or "..", and every byte outside
// [A-Za-z0-9._+-], so "~", "^", ":", "@" and "{" (git revision syntax)
// never reach git. The empty string is refused too.
//
// Branch names with other characters, such as "feature/x", can therefore
// not be queried; the GOPROXY protocol cannot carry a "/" anyway.
func checkQuery(q string) error {
	switch {
	case q == "":
		return errors.New("empty version")
	case strings.HasPrefix(q, "-"):
		return errors.New("version must not begin with \"-\"")
	case strings.Contains(q, "/"):
		return errors.New("version must not contain \"/\"")
	case strings.Contains(q, ".."):
		return errors.New("version must not contain \"..\"")
	}
	for i := 0; i < len(q); i++ {
		switch c := q[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '.', c == '_', c == '+', c == '-':
		default:
			return errors.New("version may contain only letters, digits and \"._+-\"")
		}
	}
	return nil
}
