package repocheck

import (
	"errors"
	"fmt"
	"go/version"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/mod/modfile"
	"golang.org/x/mod/module"
	"golang.org/x/mod/semver"
	modzip "golang.org/x/mod/zip"
)

// modulesTxtFile is vendor/modules.txt as Findings and errors name it.
const modulesTxtFile = "vendor/modules.txt"

// maxModulesTxt bounds vendor/modules.txt. go mod vendor writes a few
// lines a package; the largest repositories' files are well under 1 MiB.
const maxModulesTxt = 16 << 20

// A vendoredModule is one "# path [version] [=> replacement]" line of
// vendor/modules.txt and the annotation and package lines under it.
type vendoredModule struct {
	line int // of the "# " line
	// mod is the module the line is about; its Version is "" for a
	// line recording a replacement of all versions.
	mod module.Version
	// replacement is what mod is replaced by: the zero Version if it is
	// not replaced, a Version with no Version for a local directory.
	replacement module.Version
	explicit    bool   // "## explicit"
	goVersion   string // "## go 1.x", "" if none
	goLine      int    // line of the last "go" annotation
	packages    []string
	packageLine []int // line of each package
}

// zipModule is the module whose zip holds m's files: its replacement, if
// it has one.
func (m *vendoredModule) zipModule() module.Version {
	if m.replacement.Path != "" {
		return m.replacement
	}
	return m.mod
}

// parseModulesTxt parses vendor/modules.txt in the format go mod vendor
// writes (cmd/go/internal/modcmd/vendor.go):
//
//	## workspace                          (go work vendor only, first line)
//	# path version [=> new/path version | => ./dir]
//	## explicit; go 1.21                  (annotations, ";"-separated)
//	package/import/path                   (one a line)
//	# path => new/path version            (a replacement of all versions)
//
// It is stricter than cmd/go's reader, which skips what it does not
// understand: a line that is none of these is an error naming its line,
// since a check of what a tool would not have written cannot be trusted.
// Annotations other than "explicit" and "go" are reserved, as cmd/go
// says, and ignored. Its work is linear in len(data), which it bounds.
func parseModulesTxt(data []byte) ([]*vendoredModule, error) {
	if len(data) > maxModulesTxt {
		return nil, fmt.Errorf("%s: %d bytes, more than %d", modulesTxtFile, len(data), maxModulesTxt)
	}
	var (
		mods []*vendoredModule
		cur  *vendoredModule
		n    int
	)
	for line := range strings.SplitSeq(string(data), "\n") {
		n++
		line = strings.TrimSuffix(line, "\r")
		errorf := func(format string, args ...any) error {
			return fmt.Errorf("%s:%d: %s", modulesTxtFile, n, fmt.Sprintf(format, args...))
		}
		switch {
		case strings.TrimSpace(line) == "":
			continue
		case strings.HasPrefix(line, "## "):
			if cur == nil {
				continue // "## workspace", or reserved
			}
			for entry := range strings.SplitSeq(line[len("## "):], ";") {
				entry = strings.TrimSpace(entry)
				if entry == "explicit" {
					cur.explicit = true
				} else if v, ok := strings.CutPrefix(entry, "go "); ok {
					cur.goVersion = strings.TrimSpace(v)
					cur.goLine = n
				}
			}
		case strings.HasPrefix(line, "# "):
			m, err := parseModuleLine(line[len("# "):])
			if err != nil {
				return nil, errorf("%v", err)
			}
			m.line = n
			mods = append(mods, m)
			cur = m
		case strings.HasPrefix(line, "#"):
			return nil, errorf("malformed line %q", line)
		default:
			f := strings.Fields(line)
			if len(f) != 1 {
				return nil, errorf("malformed package line %q", line)
			}
			if err := module.CheckImportPath(f[0]); err != nil {
				return nil, errorf("%v", err)
			}
			if cur == nil {
				return nil, errorf("package %s before any module line", f[0])
			}
			if cur.mod.Version == "" {
				return nil, errorf("package %s under %s, which has no version", f[0], cur.mod.Path)
			}
			cur.packages = append(cur.packages, f[0])
			cur.packageLine = append(cur.packageLine, n)
		}
	}
	return mods, nil
}

// parseModuleLine parses a module line after its "# ".
func parseModuleLine(s string) (*vendoredModule, error) {
	f := strings.Fields(s)
	if len(f) == 0 {
		return nil, errors.New("module line names no module")
	}
	m := &vendoredModule{mod: module.Version{Path: f[0]}}
	f = f[1:]
	if len(f) > 0 && f[0] != "=>" {
		m.mod.Version = f[0]
		f = f[1:]
	}
	if err := checkPathVersion(m.mod); err != nil {
		return nil, err
	}
	switch {
	case len(f) == 0:
		if m.mod.Version == "" {
			return nil, fmt.Errorf("module %s has neither a version nor a replacement", m.mod.Path)
		}
	case f[0] == "=>" && len(f) == 2:
		if !modfile.IsDirectoryPath(f[1]) {
			return nil, fmt.Errorf("replacement %s has no version and is not a directory", f[1])
		}
		m.replacement = module.Version{Path: f[1]}
	case f[0] == "=>" && len(f) == 3:
		m.replacement = module.Version{Path: f[1], Version: f[2]}
		if err := checkPathVersion(m.replacement); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("malformed module line %q", "# "+s)
	}
	return m, nil
}

// checkPathVersion checks a module path and, if it has one, its version as
// go mod vendor writes them: an import path (a go.mod may replace a path
// with no dot in its first element) and a canonical semantic version.
func checkPathVersion(m module.Version) error {
	if err := module.CheckImportPath(m.Path); err != nil {
		return err
	}
	if m.Version != "" && (!semver.IsValid(m.Version) || module.CanonicalVersion(m.Version) != m.Version) {
		return fmt.Errorf("%s: version %q is not canonical", m.Path, m.Version)
	}
	return nil
}

// readModulesTxt reads and parses dir's vendor/modules.txt. found is false
// if there is none. Neither vendor nor vendor/modules.txt is followed if
// it is a symbolic link.
func readModulesTxt(dir string) (mods []*vendoredModule, found bool, err error) {
	fi, err := os.Lstat(filepath.Join(dir, "vendor"))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, false, nil
	case err != nil:
		return nil, false, err
	case fi.Mode()&fs.ModeSymlink != 0:
		return nil, false, errors.New("read vendor/modules.txt: vendor is a symbolic link, not followed")
	case !fi.IsDir():
		return nil, false, nil
	}
	name := filepath.Join(dir, filepath.FromSlash(modulesTxtFile))
	fi, err = os.Lstat(name)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, false, nil
	case err != nil:
		return nil, false, err
	case !fi.Mode().IsRegular():
		return nil, false, fmt.Errorf("read %s: not a regular file (%v), not followed", modulesTxtFile, fi.Mode().Type())
	}
	f, err := openRegular(name, fi)
	if err != nil {
		return nil, false, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxModulesTxt+1))
	if err != nil {
		return nil, false, fmt.Errorf("read %s: %w", modulesTxtFile, err)
	}
	mods, err = parseModulesTxt(data)
	return mods, err == nil, err
}

// readGoMod reads and parses dir's go.mod.
func readGoMod(dir string) (*modfile.File, error) {
	f, err := os.Open(filepath.Join(dir, "go.mod"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, modzip.MaxGoMod+1))
	if err != nil {
		return nil, fmt.Errorf("read go.mod: %w", err)
	}
	if len(data) > modzip.MaxGoMod {
		return nil, fmt.Errorf("read go.mod: more than %d bytes", modzip.MaxGoMod)
	}
	return modfile.Parse("go.mod", data, nil)
}

// checkModulesTxt compares vendor/modules.txt with go.mod. See CheckVendor
// for the rules.
func checkModulesTxt(mods []*vendoredModule, gomod *modfile.File) []Finding {
	// Go 1.14 is when go mod vendor started to write "## explicit" and
	// lines for every replace directive; cmd/go checks less before it, and
	// so does this. No go directive counts as before.
	pre114 := gomod.Go == nil || version.Compare("go"+gomod.Go.Version, "go1.14") < 0
	mainPath := ""
	if gomod.Module != nil {
		mainPath = gomod.Module.Mod.Path
	}

	var out []Finding
	add := func(m module.Version, line int, format string, args ...any) {
		out = append(out, Finding{
			Kind:    KindModulesTxt,
			Module:  m.Path,
			Version: m.Version,
			File:    modulesTxtFile,
			Line:    line,
			Message: fmt.Sprintf(format, args...),
		})
	}

	// Each module once, and packages in their modules.
	var list []*vendoredModule
	byMod := make(map[module.Version]*vendoredModule)
	// inBuild is, by path, the first line that puts a version of the
	// module in the build: with packages, or marked explicit.
	inBuild := make(map[string]*vendoredModule)
	withPkgs := make(map[string]*vendoredModule)
	for _, m := range mods {
		if first := byMod[m.mod]; first != nil {
			add(m.mod, m.line, "%s is listed twice (first on line %d)", describe(m.mod), first.line)
			continue
		}
		byMod[m.mod] = m
		list = append(list, m)
		if inBuild[m.mod.Path] == nil && m.mod.Version != "" && (len(m.packages) > 0 || m.explicit) {
			inBuild[m.mod.Path] = m
		}
		for i, p := range m.packages {
			if p != m.mod.Path && !strings.HasPrefix(p, m.mod.Path+"/") {
				add(m.mod, m.packageLine[i], "package %s is not in module %s", p, m.mod.Path)
			}
		}
		if len(m.packages) > 0 {
			if first := withPkgs[m.mod.Path]; first != nil {
				add(m.mod, m.line, "%s is listed with packages at %s too (line %d): only one version of a module can be vendored", m.mod.Path, first.mod.Version, first.line)
			} else {
				withPkgs[m.mod.Path] = m
			}
		}
	}

	// Requirements: listed at their version and marked explicit.
	required := make(map[module.Version]bool)
	reported := make(map[*vendoredModule]bool)
	for _, r := range gomod.Require {
		required[r.Mod] = true
		at := fmt.Sprintf("go.mod:%d", r.Syntax.Start.Line)
		if m := byMod[r.Mod]; m != nil {
			if !m.explicit && !pre114 {
				add(m.mod, m.line, "%s is required in go.mod (%s) but not marked \"## explicit\"", describe(r.Mod), at)
			}
			continue
		}
		if m := inBuild[r.Mod.Path]; m != nil {
			add(m.mod, m.line, "%s is listed at %s, but go.mod requires %s (%s)", r.Mod.Path, m.mod.Version, r.Mod.Version, at)
			reported[m] = true
			continue
		}
		if !pre114 {
			add(r.Mod, 0, "%s is required in go.mod (%s) but not listed", describe(r.Mod), at)
		}
	}
	for _, m := range list {
		if m.explicit && !required[m.mod] && !reported[m] {
			add(m.mod, m.line, "%s is marked \"## explicit\" but go.mod does not require it", describe(m.mod))
		}
	}

	// Replacements: each line's is go.mod's, and each of go.mod's has a line.
	replaces := make(map[module.Version]*modfile.Replace)
	var directives []*modfile.Replace
	for _, r := range gomod.Replace {
		if _, dup := replaces[r.Old]; dup || (r.Old.Path == mainPath && r.Old.Version == "") {
			continue // the first one counts; the main module is not replaced
		}
		replaces[r.Old] = r
		directives = append(directives, r)
	}
	for _, m := range list {
		r := replaces[m.mod]
		if r == nil && m.mod.Version != "" {
			r = replaces[module.Version{Path: m.mod.Path}]
		}
		var want module.Version
		if r != nil {
			want = r.New
		}
		if m.replacement == want {
			continue
		}
		switch {
		case r == nil:
			add(m.mod, m.line, "%s is replaced by %s, but go.mod does not replace it", describe(m.mod), describe(m.replacement))
		case m.replacement.Path == "":
			add(m.mod, m.line, "%s is not replaced, but go.mod replaces it by %s (go.mod:%d)", describe(m.mod), describe(want), r.Syntax.Start.Line)
		default:
			add(m.mod, m.line, "%s is replaced by %s, but go.mod replaces it by %s (go.mod:%d)", describe(m.mod), describe(m.replacement), describe(want), r.Syntax.Start.Line)
		}
	}
	if !pre114 {
		for _, r := range directives {
			if byMod[r.Old] == nil {
				add(r.Old, 0, "go.mod replaces %s by %s (go.mod:%d), but vendor/modules.txt does not record it", describe(r.Old), describe(r.New), r.Syntax.Start.Line)
			}
		}
	}

	// Lines go mod vendor does not write: neither required, nor with
	// packages, nor recording a replacement.
	for _, m := range list {
		if !m.explicit && len(m.packages) == 0 && m.replacement.Path == "" {
			add(m.mod, m.line, "%s is listed with no packages, not explicit and not replaced", describe(m.mod))
		}
	}
	return out
}

// describe returns path@version, or path if there is no version.
func describe(m module.Version) string {
	if m.Version == "" {
		return m.Path
	}
	return m.String()
}
