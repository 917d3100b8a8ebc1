package repocheck

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"golang.org/x/mod/modfile"
	"golang.org/x/mod/module"
)

// SumDB is the checksum database, as Lookup of golang.org/x/mod/sumdb's
// Client sees it: the lines recorded for a module version (its zip's and
// its go.mod's hashes), verified against a signed tree. An error wrapping
// fs.ErrNotExist means the database does not know the version; any other
// error, that it could not be asked. It must be safe for concurrent use.
type SumDB interface {
	Lookup(ctx context.Context, path, version string) ([]string, error)
}

// SumsConfig says how CheckSums checks.
type SumsConfig struct {
	// DB is the checksum database. Nil: public lines are unverifiable.
	DB SumDB
	// Private reports whether a module path is private (GOPRIVATE,
	// GONOSUMDB): no public database may be asked about it.
	Private func(path string) bool
	// Ledger, if set, is the gateway's private ledger, which private
	// modules' lines are checked against as public ones are against DB.
	// Nil: private lines are unverifiable.
	Ledger SumDB
	// Parallel bounds concurrent lookups. Default 8.
	Parallel int
	// Progress, if set, is called after each module version is checked.
	Progress func(done, total int)
}

// maxSumFile bounds a go.sum file.
const maxSumFile = 64 << 20

// sumLine is one line of a go.sum file.
type sumLine struct {
	file          string // relative to the repository, forward slashes
	line          int
	path, version string // version with /go.mod for a go.mod hash
	hash          string
}

// SumFiles returns the go.sum files of the repository in dir: go.sum, or,
// in a workspace (go.work), go.work.sum and each used module's go.sum.
// Files that do not exist are left out.
func SumFiles(dir string) ([]string, error) {
	files := []string{"go.sum"}
	data, err := os.ReadFile(filepath.Join(dir, "go.work"))
	switch {
	case err == nil:
		wf, err := modfile.ParseWork("go.work", data, nil)
		if err != nil {
			return nil, err
		}
		files = []string{"go.work.sum"}
		for _, u := range wf.Use {
			files = append(files, filepath.ToSlash(filepath.Join(u.Path, "go.sum")))
		}
	case !errors.Is(err, fs.ErrNotExist):
		return nil, err
	}
	var out []string
	for _, f := range files {
		if _, err := os.Stat(filepath.Join(dir, filepath.FromSlash(f))); err == nil {
			out = append(out, f)
		}
	}
	return out, nil
}

// readSums reads and checks the lines of one go.sum file.
func readSums(dir, name string) ([]sumLine, error) {
	f, err := os.Open(filepath.Join(dir, filepath.FromSlash(name)))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > maxSumFile {
		return nil, fmt.Errorf("%s: %d bytes, more than %d", name, fi.Size(), maxSumFile)
	}
	var lines []sumLine
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 64<<10)
	for n := 1; sc.Scan(); n++ {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		if len(fields) != 3 {
			return nil, fmt.Errorf("%s:%d: malformed go.sum line: want module, version, hash", name, n)
		}
		path, version, hash := fields[0], fields[1], fields[2]
		v := strings.TrimSuffix(version, "/go.mod")
		if err := module.Check(path, v); err != nil {
			return nil, fmt.Errorf("%s:%d: %v", name, n, err)
		}
		if !strings.HasPrefix(hash, "h1:") {
			// Hashes of other algorithms are the go command's to judge; the
			// database records h1 only.
			continue
		}
		lines = append(lines, sumLine{file: name, line: n, path: path, version: version, hash: hash})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return lines, nil
}

// CheckSums checks every h1 line of the repository's go.sum files (see
// SumFiles): a public module's against the checksum database, which must
// record exactly that line. It returns the findings, sorted by file and
// line, and how many module versions its go.sum files name. An error means the check
// could not be done: a file that cannot be read or parsed, a database that
// cannot be asked.
func CheckSums(ctx context.Context, dir string, cfg SumsConfig) ([]Finding, int, error) {
	files, err := SumFiles(dir)
	if err != nil {
		return nil, 0, err
	}
	var all []sumLine
	for _, f := range files {
		lines, err := readSums(dir, f)
		if err != nil {
			return nil, 0, err
		}
		all = append(all, lines...)
	}
	// One lookup per line kind of a module version: the Client returns
	// the lines of exactly the version asked, "v1.2.3" or "v1.2.3/go.mod"
	// (one fetch of the record serves both).
	type mv struct {
		path, version string
		private       bool
	}
	byVersion := map[mv][]sumLine{}
	var order []mv
	var findings []Finding
	versions := map[string]bool{} // path@version, for the count
	for _, l := range all {
		private := cfg.Private != nil && cfg.Private(l.path)
		k := mv{l.path, l.version, private}
		versions[l.path+"@"+strings.TrimSuffix(l.version, "/go.mod")] = true
		if private && cfg.Ledger == nil {
			findings = append(findings, Finding{Kind: KindUnverifiable, Module: l.path, Version: l.version, File: l.file, Line: l.line,
				Message: fmt.Sprintf("%s %s is private: no public checksum database may be asked about it, and no gateway's ledger was given", l.path, l.version)})
			continue
		}
		if !private && cfg.DB == nil {
			findings = append(findings, Finding{Kind: KindUnverifiable, Module: l.path, Version: l.version, File: l.file, Line: l.line,
				Message: "no checksum database to check against (GOSUMDB=off)"})
			continue
		}
		if byVersion[k] == nil {
			order = append(order, k)
		}
		byVersion[k] = append(byVersion[k], l)
	}

	parallel := cfg.Parallel
	if parallel <= 0 {
		parallel = 8
	}
	type result struct {
		k     mv
		lines []string
		err   error
	}
	results := make([]result, len(order))
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		done int
	)
	sem := make(chan struct{}, parallel)
	for i, k := range order {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			db, ver := cfg.DB, k.version
			if k.private {
				// The ledger answers for a version, both its lines.
				db, ver = cfg.Ledger, strings.TrimSuffix(k.version, "/go.mod")
			}
			lines, err := db.Lookup(ctx, k.path, ver)
			results[i] = result{k, lines, err}
			mu.Lock()
			done++
			if cfg.Progress != nil {
				cfg.Progress(done, len(order))
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	for _, r := range results {
		if r.err != nil && !errors.Is(r.err, fs.ErrNotExist) {
			if r.k.private {
				return nil, 0, fmt.Errorf("the gateway's ledger: %w", r.err)
			}
			return nil, 0, fmt.Errorf("checksum database: %w", r.err)
		}
		src := "the checksum database"
		if r.k.private {
			src = "the gateway's private ledger"
		}
		for _, l := range byVersion[r.k] {
			if f, bad := judge(l, r.lines, r.err, src); bad {
				findings = append(findings, f)
			}
		}
	}
	slices.SortFunc(findings, func(a, b Finding) int {
		if c := strings.Compare(a.File, b.File); c != 0 {
			return c
		}
		return a.Line - b.Line
	})
	return findings, len(versions), nil
}

// judge compares one go.sum line with the database's lines for its
// version (err: the lookup's, nil or not found).
func judge(l sumLine, db []string, err error, src string) (Finding, bool) {
	f := Finding{Module: l.path, Version: l.version, File: l.file, Line: l.line}
	if err != nil {
		f.Kind = KindUnknownVersion
		f.Message = fmt.Sprintf("%s %s is not in %s: nobody published it, or the line is made up", l.path, l.version, src)
		return f, true
	}
	for _, d := range db {
		fields := strings.Fields(d)
		if len(fields) != 3 || fields[0] != l.path || fields[1] != l.version {
			continue
		}
		if fields[2] == l.hash {
			return Finding{}, false
		}
		f.Kind = KindForgedSum
		f.Message = fmt.Sprintf("%s %s has hash %s here, but %s records %s: the line is forged or stale", l.path, l.version, l.hash, src, fields[2])
		return f, true
	}
	f.Kind = KindUnknownVersion
	f.Message = fmt.Sprintf("%s has no %s hash for %s %s", src, kindOf(l.version), l.path, strings.TrimSuffix(l.version, "/go.mod"))
	return f, true
}

func kindOf(version string) string {
	if strings.HasSuffix(version, "/go.mod") {
		return "go.mod"
	}
	return "zip"
}
