// Package repocheck proves that a repository's go.sum and vendor/ are what
// the world published: every go.sum line of a public module against the
// checksum database, every vendored file against its module's zip, and
// vendor/modules.txt against go.mod. It is the core of `modgate check`,
// with no command line and no output format of its own: it returns
// Findings. golang.org/x/mod is its only authority on go.mod, go.sum,
// versions, zips and the checksum database.
package repocheck

import (
	"context"
	"fmt"
)

// Kinds of finding.
const (
	// KindForgedSum is a go.sum line whose hash differs from the checksum
	// database's record for that version: forged, or stale.
	KindForgedSum = "forged-sum"
	// KindUnknownVersion is a go.sum line for a version the checksum
	// database does not know.
	KindUnknownVersion = "unknown-version"
	// KindUnverifiable is what could not be checked, and why: a private
	// module with no ledger to ask, a module replaced by a local directory.
	KindUnverifiable = "unverifiable"
	// KindVendorModified is a vendored file whose bytes differ from the
	// module zip's file of the same name.
	KindVendorModified = "vendor-modified"
	// KindVendorExtra is a file under vendor/MODULE/ that is not in the
	// module's zip.
	KindVendorExtra = "vendor-extra"
	// KindModulesTxt is a vendor/modules.txt that disagrees with go.mod:
	// a missing or extra module, another version, a missing or wrong
	// "## explicit" marker, another replacement.
	KindModulesTxt = "modules-txt"
	// KindRefused is a selected module version the gateway would refuse
	// (policy rule, cooldown, vulnerability).
	KindRefused = "refused"
)

// A Finding is one problem, located in a file of the repository.
type Finding struct {
	Kind    string `json:"kind"`
	Module  string `json:"module,omitempty"`
	Version string `json:"version,omitempty"`
	// File is the path of the file the finding is about, relative to the
	// repository's directory, with forward slashes: go.sum,
	// vendor/modules.txt, vendor/example.com/m/x.go.
	File string `json:"file"`
	// Line is the 1-based line in File, 0 if the finding is about the
	// whole file.
	Line int `json:"line,omitempty"`
	// Message says what is wrong, for a person.
	Message string `json:"message"`
}

func (f Finding) String() string {
	loc := f.File
	if f.Line > 0 {
		loc = fmt.Sprintf("%s:%d", f.File, f.Line)
	}
	return fmt.Sprintf("%s: %s: %s", loc, f.Kind, f.Message)
}

// Zips gives the zip of a module version: a local file holding it, which
// the caller may read until ctx ends, and which Zips has checked against
// the checksum database or the gateway's verification (a go.sum line is
// not enough: go.sum is what is being checked). An error wrapping
// fs.ErrNotExist means the version has no zip to get.
type Zips interface {
	Zip(ctx context.Context, path, version string) (file string, err error)
}
