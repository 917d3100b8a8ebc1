package repocheck

import (
	"archive/zip"
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"go/version"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/mod/modfile"
	"golang.org/x/mod/module"
	modzip "golang.org/x/mod/zip"
)

// openRegular opens the file name that was fi when it was looked at with
// Lstat, and makes sure it still is: a file swapped for a symbolic link
// since is an error, not followed.
func openRegular(name string, fi fs.FileInfo) (*os.File, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	now, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !now.Mode().IsRegular() || !os.SameFile(fi, now) {
		f.Close()
		return nil, fmt.Errorf("open %s: changed while being checked", name)
	}
	return f, nil
}

// withPackages returns the modules that contribute packages, in order:
// the first line of each module path that has package lines. Their files
// are under vendor/PATH/.
func withPackages(mods []*vendoredModule) []*vendoredModule {
	var out []*vendoredModule
	seen := make(map[string]bool)
	for _, m := range mods {
		if len(m.packages) > 0 && !seen[m.mod.Path] {
			seen[m.mod.Path] = true
			out = append(out, m)
		}
	}
	return out
}

// A zipGroup is the vendored modules whose files one zip holds: usually
// one, more when several paths are replaced by one module version.
type zipGroup struct {
	zip  module.Version
	mods []*vendoredModule
}

// zipGroups groups the modules with packages by the zip that holds their
// files, in order of first appearance.
func zipGroups(mods []*vendoredModule) []*zipGroup {
	var out []*zipGroup
	index := make(map[module.Version]*zipGroup)
	for _, m := range withPackages(mods) {
		z := m.zipModule()
		g := index[z]
		if g == nil {
			g = &zipGroup{zip: z}
			index[z] = g
			out = append(out, g)
		}
		g.mods = append(g.mods, m)
	}
	return out
}

// noZip returns why the module version z can have no zip: a local
// directory, or not a module path and version that can be fetched; "" if
// it can have one.
func noZip(z module.Version) string {
	if z.Version == "" {
		return fmt.Sprintf("replaced by the local directory %s, which has no zip to check its files against", z.Path)
	}
	if err := module.Check(z.Path, z.Version); err != nil {
		return fmt.Sprintf("%v: no zip to check its files against", err)
	}
	return ""
}

// VendoredModules returns the module versions, after replacement, whose
// zips CheckVendor gets to check dir's vendor/ tree: one for each module
// that vendor/modules.txt lists with packages, less those that can have
// no zip (replaced by a local directory), each once, in the file's order.
// It returns nil, nil if dir has no vendor/modules.txt.
func VendoredModules(dir string) ([]module.Version, error) {
	mods, found, err := readModulesTxt(dir)
	if err != nil || !found {
		return nil, err
	}
	var out []module.Version
	for _, g := range zipGroups(mods) {
		if noZip(g.zip) == "" {
			out = append(out, g.zip)
		}
	}
	return out, nil
}

// CheckVendor checks dir's vendor/ tree, if it has one: vendor/modules.txt
// against dir/go.mod (only: a go.work is not consulted), and every file
// under vendor/PATH/ of a module listed with packages against the zip of
// that module version, or of its replacement, which it gets from zips. A
// file must be in the zip, byte for byte; files of the zip that are not
// vendored are not findings (go mod vendor leaves out tests, other
// packages); a file of another size than the zip's is not read. A file
// under vendor/ outside every such module, a symbolic link (never
// followed) or another file that is not regular is KindVendorExtra. A
// module replaced by a local directory, or whose zip zips does not have
// (fs.ErrNotExist), is KindUnverifiable.
//
// vendor/modules.txt must agree with go.mod the way go mod vendor writes
// it and cmd/go checks it (cmd/go/internal/modload/vendor.go), and more:
// a module go.mod requires (// indirect or not) is listed at that version
// and marked "## explicit" (go 1.14 and later); a module marked explicit
// is required; each line's replacement is the one go.mod's replace
// directives give it (a version's own, else the path's); every replace
// directive has its line (go 1.14 and later); no module is listed twice;
// a package is in its module; a "## go" annotation is what the go.mod of
// the module's zip says (go 1.17 and later: one must be there if that
// go.mod has a go directive). Each disagreement is KindModulesTxt.
//
// The findings are sorted by File, then Line. It returns nil, nil if dir
// has no vendor/modules.txt, and an error only if the check cannot be
// done: go.mod or vendor/modules.txt cannot be read or parsed, a file
// under vendor/ cannot be read, zips fails with an error that does not
// wrap fs.ErrNotExist, a zip is not a valid module zip for its version
// (golang.org/x/mod/zip.CheckZip: names, sizes).
func CheckVendor(ctx context.Context, dir string, zips Zips) ([]Finding, error) {
	mods, found, err := readModulesTxt(dir)
	if err != nil || !found {
		return nil, err
	}
	gomod, err := readGoMod(dir)
	if err != nil {
		return nil, err
	}
	var findings []Finding
	if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
		// go work vendor writes modules.txt from every used module's
		// requirements and go.work's replacements, which this check does
		// not gather yet: the vendored files are still compared.
		findings = append(findings, Finding{Kind: KindUnverifiable, File: modulesTxtFile,
			Message: "a workspace's vendor/modules.txt (go work vendor) is not compared with go.work and its modules' go.mod files; the vendored files are"})
	} else {
		findings = checkModulesTxt(mods, gomod)
	}
	groups := zipGroups(mods)
	files, more, err := walkVendor(ctx, dir, withPackages(mods))
	if err != nil {
		return nil, err
	}
	findings = append(findings, more...)
	wantGo := gomod.Go != nil && version.Compare("go"+gomod.Go.Version, "go1.17") >= 0
	for _, g := range groups {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		more, err := checkZipGroup(ctx, zips, g, files, wantGo)
		if err != nil {
			return nil, err
		}
		findings = append(findings, more...)
	}
	slices.SortStableFunc(findings, func(a, b Finding) int {
		return cmp.Or(strings.Compare(a.File, b.File), cmp.Compare(a.Line, b.Line))
	})
	return findings, nil
}

// A vendoredFile is a regular file under vendor/PATH/ of a module.
type vendoredFile struct {
	rel  string      // relative to vendor/PATH/, forward slashes
	name string      // relative to the repository, forward slashes
	path string      // on disk
	info fs.FileInfo // from Lstat
}

// walkVendor walks dir's vendor/ tree, without following any symbolic
// link, and returns each regular file by the module whose directory
// vendor/PATH/ holds it, nearest first: vendor/example.com/m/sub/x.go is
// example.com/m/sub's if that is a module with packages, else
// example.com/m's. Other files are findings.
func walkVendor(ctx context.Context, dir string, mods []*vendoredModule) (map[*vendoredModule][]vendoredFile, []Finding, error) {
	owners := make(map[string]*vendoredModule, len(mods))
	for _, m := range mods {
		owners[m.mod.Path] = m
	}
	files := make(map[*vendoredModule][]vendoredFile)
	var out []Finding
	extra := func(name, format string, args ...any) {
		out = append(out, Finding{Kind: KindVendorExtra, File: name, Message: fmt.Sprintf(format, args...)})
	}
	root := filepath.Join(dir, "vendor")
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		name := "vendor/" + rel
		switch t := d.Type(); {
		case rel == ".":
			return nil
		case t&fs.ModeSymlink != 0:
			extra(name, "is a symbolic link, not followed: go mod vendor copies only regular files")
			return nil
		case d.IsDir():
			return nil
		case !t.IsRegular():
			extra(name, "is not a regular file (%v): go mod vendor copies only regular files", t)
			return nil
		case rel == "modules.txt":
			return nil
		}
		m := owner(owners, rel)
		if m == nil {
			extra(name, "is in no module that vendor/modules.txt lists with packages")
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		files[m] = append(files[m], vendoredFile{
			rel:  rel[len(m.mod.Path)+1:],
			name: name,
			path: p,
			info: info,
		})
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("walk vendor: %w", err)
	}
	return files, out, nil
}

// owner returns the module of owners whose directory holds the file rel,
// the nearest one, or nil.
func owner(owners map[string]*vendoredModule, rel string) *vendoredModule {
	for d := path.Dir(rel); d != "." && d != "/"; d = path.Dir(d) {
		if m := owners[d]; m != nil {
			return m
		}
	}
	return nil
}

// checkZipGroup checks the files of g's modules against g's zip.
func checkZipGroup(ctx context.Context, zips Zips, g *zipGroup, files map[*vendoredModule][]vendoredFile, wantGo bool) ([]Finding, error) {
	var out []Finding
	unverifiable := func(why string) []Finding {
		for _, m := range g.mods {
			out = append(out, Finding{
				Kind:    KindUnverifiable,
				Module:  m.mod.Path,
				Version: m.mod.Version,
				File:    modulesTxtFile,
				Line:    m.line,
				Message: fmt.Sprintf("%s: %s", describe(m.mod), why),
			})
		}
		return out
	}
	if why := noZip(g.zip); why != "" {
		return unverifiable(why), nil
	}
	file, err := zips.Zip(ctx, g.zip.Path, g.zip.Version)
	if errors.Is(err, fs.ErrNotExist) {
		return unverifiable(fmt.Sprintf("no zip for %s", g.zip)), nil
	}
	if err != nil {
		return nil, fmt.Errorf("get zip of %s: %w", g.zip, err)
	}

	// CheckZip holds the zip to what cmd/go would extract: every name
	// under path@version/, clean, no collisions, go.mod and LICENSE and
	// the whole within the module zip limits. What is read below is
	// bounded by the sizes it checked.
	if _, err := modzip.CheckZip(g.zip, file); err != nil {
		return nil, fmt.Errorf("check zip of %s: %w", g.zip, err)
	}
	zr, err := zip.OpenReader(file)
	if err != nil {
		return nil, fmt.Errorf("open zip of %s: %w", g.zip, err)
	}
	defer zr.Close()
	prefix := g.zip.String() + "/"
	entries := make(map[string]*zip.File, len(zr.File))
	for _, zf := range zr.File {
		name, ok := strings.CutPrefix(zf.Name, prefix)
		if !ok {
			return nil, fmt.Errorf("check zip of %s: %s is not under %s", g.zip, zf.Name, prefix)
		}
		entries[name] = zf
	}

	for _, m := range g.mods {
		of := ""
		if m.replacement.Path != "" {
			of = fmt.Sprintf(" (replaced by %s)", g.zip)
		}
		for _, f := range files[m] {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			finding := Finding{Module: m.mod.Path, Version: m.mod.Version, File: f.name}
			zf := entries[f.rel]
			if zf == nil {
				finding.Kind = KindVendorExtra
				finding.Message = fmt.Sprintf("is not in the zip of %s%s", describe(m.mod), of)
				out = append(out, finding)
				continue
			}
			same, err := sameContent(f, zf)
			if err != nil {
				return nil, fmt.Errorf("compare %s with the zip of %s: %w", f.name, g.zip, err)
			}
			if !same {
				finding.Kind = KindVendorModified
				finding.Message = fmt.Sprintf("differs from %s in the zip of %s%s", f.rel, describe(m.mod), of)
				out = append(out, finding)
			}
		}
	}

	return append(out, checkGoAnnotations(g, entries, wantGo)...), nil
}

// compareBuf is the size of the chunks sameContent compares.
const compareBuf = 32 << 10

// sameContent reports whether the vendored file f holds the bytes of the
// zip's file zf. A file whose size is not zf's is not read.
func sameContent(f vendoredFile, zf *zip.File) (bool, error) {
	size := zf.UncompressedSize64
	if size > modzip.MaxZipFile {
		return false, fmt.Errorf("%s: %d bytes, more than the module zip limit %d", zf.Name, size, modzip.MaxZipFile)
	}
	if f.info.Size() != int64(size) {
		return false, nil
	}
	vf, err := openRegular(f.path, f.info)
	if err != nil {
		return false, err
	}
	defer vf.Close()
	zrc, err := zf.Open()
	if err != nil {
		return false, err
	}
	defer zrc.Close()

	// Each side may hold more than it said (a file that grew, an entry
	// that lies): read one byte past the size to see it, no more.
	z := io.LimitReader(zrc, int64(size)+1)
	v := io.LimitReader(vf, int64(size)+1)
	zb, vb := make([]byte, compareBuf), make([]byte, compareBuf)
	var total uint64
	for {
		zn, zerr := io.ReadFull(z, zb)
		if zerr != nil && zerr != io.EOF && zerr != io.ErrUnexpectedEOF {
			return false, zerr
		}
		vn, verr := io.ReadFull(v, vb)
		if verr != nil && verr != io.EOF && verr != io.ErrUnexpectedEOF {
			return false, verr
		}
		total += uint64(zn)
		if total > size {
			return false, fmt.Errorf("%s: more bytes than its declared %d", zf.Name, size)
		}
		if zn != vn || !bytes.Equal(zb[:zn], vb[:vn]) {
			return false, nil
		}
		if zerr != nil {
			return total == size, nil
		}
	}
}

// checkGoAnnotations compares the "## go" annotation of each of g's
// modules with the go directive of the go.mod in g's zip, which is what
// go mod vendor writes there (the module's GoVersion; none if its go.mod
// has none). A +incompatible version's go.mod is not the one cmd/go reads
// (it makes one up), so it is not compared. A go.mod that cannot be read
// leaves the annotations unverifiable.
func checkGoAnnotations(g *zipGroup, entries map[string]*zip.File, wantGo bool) []Finding {
	if strings.HasSuffix(g.zip.Version, "+incompatible") {
		return nil
	}
	zipGo, err := zipGoVersion(entries["go.mod"])
	var out []Finding
	for _, m := range g.mods {
		finding := Finding{Kind: KindModulesTxt, Module: m.mod.Path, Version: m.mod.Version, File: modulesTxtFile}
		switch {
		case err != nil:
			finding.Kind = KindUnverifiable
			finding.Line = cmp.Or(m.goLine, m.line)
			finding.Message = fmt.Sprintf("%s: go annotation: go.mod in the zip of %s: %v", describe(m.mod), g.zip, err)
		case m.goVersion == zipGo:
			continue
		case m.goVersion == "" && !wantGo:
			continue
		case m.goVersion == "":
			finding.Line = m.line
			finding.Message = fmt.Sprintf("%s has no \"go %s\" annotation, which the go.mod in the zip of %s declares", describe(m.mod), zipGo, g.zip)
		case zipGo == "":
			finding.Line = m.goLine
			finding.Message = fmt.Sprintf("%s is annotated \"go %s\", but the go.mod in the zip of %s has no go directive", describe(m.mod), m.goVersion, g.zip)
		default:
			finding.Line = m.goLine
			finding.Message = fmt.Sprintf("%s is annotated \"go %s\", but the go.mod in the zip of %s says go %s", describe(m.mod), m.goVersion, g.zip, zipGo)
		}
		out = append(out, finding)
	}
	return out
}

// zipGoVersion returns the go directive's version of zf, a zip's go.mod,
// "" if it has none or zf is nil.
func zipGoVersion(zf *zip.File) (string, error) {
	if zf == nil {
		return "", nil
	}
	data, err := readZipFile(zf, modzip.MaxGoMod)
	if err != nil {
		return "", err
	}
	f, err := modfile.ParseLax("go.mod", data, nil)
	if err != nil {
		return "", err
	}
	if f.Go == nil {
		return "", nil
	}
	return f.Go.Version, nil
}

// readZipFile reads zf, which must hold at most max bytes.
func readZipFile(zf *zip.File, max int64) ([]byte, error) {
	if zf.UncompressedSize64 > uint64(max) {
		return nil, fmt.Errorf("%s: %d bytes, more than %d", zf.Name, zf.UncompressedSize64, max)
	}
	rc, err := zf.Open()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("%s: more than %d bytes", zf.Name, max)
	}
	return data, nil
}
