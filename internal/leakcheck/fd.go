package leakcheck

import (
	"errors"
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
)

// fd is an open file descriptor and what it refers to, as
// /proc/self/fd shows it: a path, "socket:[inode]", "pipe:[inode]",
// "anon_inode:[eventfd]", ….
type fd struct {
	num    int
	target string
}

// openFDs returns the process's open descriptors and their targets, or
// nil where there is no /proc/self/fd to list them (other than Linux). A
// descriptor closed while the list is read is left out, as is the one the
// list is read through.
func openFDs() (map[int]string, error) {
	if runtime.GOOS != "linux" {
		return nil, nil
	}
	const dir = "/proc/self/fd"
	entries, err := os.ReadDir(dir) // closes its own descriptor before returning
	if err != nil {
		return nil, err
	}
	fds := make(map[int]string, len(entries))
	for _, e := range entries {
		num, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if errors.Is(err, fs.ErrNotExist) {
			continue // closed since listed: ReadDir's own, or a passing one
		}
		if err != nil {
			return nil, err
		}
		fds[num] = target
	}
	return fds, nil
}

// newFDs returns the descriptors open now that were not open in before, or
// were but refer to something else, apart from the testing package's
// profile files.
func newFDs(before map[int]string) ([]fd, error) {
	now, err := openFDs()
	if err != nil {
		return nil, err
	}
	kept := testingFiles()
	var fds []fd
	for num, target := range now {
		if t, ok := before[num]; ok && t == target {
			continue
		}
		if slices.Contains(kept, target) {
			continue
		}
		fds = append(fds, fd{num, target})
	}
	slices.SortFunc(fds, func(a, b fd) int { return a.num - b.num })
	return fds, nil
}

// testingFiles returns the absolute paths of the files the testing package
// opens for -test.cpuprofile and -test.trace and never closes ("not worth
// the effort", says its source), resolved as it resolves them: relative to
// -test.outputdir, else to the working directory.
func testingFiles() []string {
	var out string
	if f := flag.Lookup("test.outputdir"); f != nil {
		out = f.Value.String()
	}
	var paths []string
	for _, name := range []string{"test.cpuprofile", "test.trace"} {
		f := flag.Lookup(name)
		if f == nil || f.Value.String() == "" {
			continue
		}
		p := f.Value.String()
		if !filepath.IsAbs(p) && out != "" {
			p = filepath.Join(out, p)
		}
		if abs, err := filepath.Abs(p); err == nil {
			paths = append(paths, abs)
		}
	}
	return paths
}
