package s3store

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// maxKeyLen is S3's limit on the length of a key (Prefix and name), in bytes.
const maxKeyLen = 1024

// checkName reports why name cannot be an object name, or nil if it can.
//
// Names are opaque to the store, but they must mean the same object on every
// S3 implementation, including those that keep objects in a file tree
// (SeaweedFS's filer, MinIO) and would clean "a//b" or "a/./b" into another
// name or refuse a trailing "/" or "\". So a name is valid UTF-8 without
// control characters or backslashes, and a "/"-separated list of elements,
// none of them empty, "." or "..".
func checkName(name string) error {
	if why := badName(name); why != "" {
		return fmt.Errorf("invalid name %q: %s", name, why)
	}
	return nil
}

// checkPrefix reports why prefix cannot start the names to list, or be
// prepended to every name, or nil if it can: it is "" or a valid name
// followed perhaps by a "/".
func checkPrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	if why := badName(strings.TrimSuffix(prefix, "/")); why != "" {
		return fmt.Errorf("invalid prefix %q: %s", prefix, why)
	}
	return nil
}

// badName returns what is wrong with name, or "".
func badName(name string) string {
	if name == "" {
		return "empty"
	}
	if !utf8.ValidString(name) {
		return "not UTF-8"
	}
	for _, c := range name {
		if c < 0x20 || c == 0x7f || c == '\\' {
			return "control character or backslash"
		}
	}
	for elem := range strings.SplitSeq(name, "/") {
		switch elem {
		case "":
			return "leading, trailing or double slash"
		case ".", "..":
			return fmt.Sprintf("%q element", elem)
		}
	}
	return ""
}
