package auditindex

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// A segment is one file of the log, followed through renames by its open
// handle.
type segment struct {
	id uint32
	fi os.FileInfo // of the file when opened: its identity

	// Guarded by Index.mu; written by the holder of Index.catch only.
	f      *os.File // nil once handed to another segment (truncation)
	name   string   // its current name
	read   int64    // bytes read, for Stats
	events int      // records of it in the ring

	// Owned by the holder of Index.catch.
	off    int64 // where the next line starts
	skip   int64 // bytes after off without a newline, once a line is known to be too long
	size   int64 // the file's size when last read to its end
	lines  int   // lines read
	absent int   // listings in a row it was not in
	gone   bool  // deleted, moved away or truncated: to be dropped
	shrank bool  // a rotated file that shrank (logged)
}

// maxFiles bounds the rotated files followed: the newest.
const maxFiles = 1000

// current returns the file followed as PATH, if any.
func (fl *follower) current(path string) *segment {
	if n := len(fl.order); n > 0 && fl.order[n-1].name == path && !fl.order[n-1].gone {
		return fl.order[n-1]
	}
	return nil
}

// statPath stats PATH; nil if it does not exist.
func statPath(path string) (os.FileInfo, error) {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("stat audit file: %w", err)
	}
	return fi, nil
}

// A listed file is a file of the log, found by name.
type listed struct {
	name string
	fi   os.FileInfo
}

// list lists the files of the log, oldest first: PATH.N … PATH.1, then
// PATH (cur, if it exists). If PATH is another file after the listing
// than before (a rotation ran meanwhile), it lists again.
func (ix *Index) list(cur os.FileInfo) ([]listed, error) {
	for try := 0; ; try++ {
		files, err := ix.listOnce(cur)
		if err != nil {
			return nil, err
		}
		after, err := statPath(ix.path)
		if err != nil {
			return nil, err
		}
		if same := cur == nil && after == nil || cur != nil && after != nil && os.SameFile(cur, after); same || try == 3 {
			return files, nil
		}
		cur = after
	}
}

func (ix *Index) listOnce(cur os.FileInfo) ([]listed, error) {
	dir, base := filepath.Split(ix.path)
	if dir == "" {
		dir = "."
	}
	ents, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("list audit files: %w", err)
	}
	var nums []int
	for _, e := range ents {
		suf, ok := strings.CutPrefix(e.Name(), base+".")
		if !ok {
			continue
		}
		if n, err := strconv.Atoi(suf); err == nil && n > 0 && strconv.Itoa(n) == suf {
			nums = append(nums, n)
		}
	}
	slices.Sort(nums)
	if len(nums) > maxFiles {
		if !ix.fl.warnedFiles {
			ix.fl.warnedFiles = true
			ix.log.Warn("audit index: too many rotated files; following the newest", "files", len(nums), "followed", maxFiles)
		}
		nums = nums[:maxFiles]
	}
	files := make([]listed, 0, len(nums)+1)
	for _, n := range slices.Backward(nums) {
		name := ix.path + "." + strconv.Itoa(n)
		fi, err := os.Stat(name)
		if err != nil || !fi.Mode().IsRegular() {
			continue // rotated away meanwhile, or not a file
		}
		files = append(files, listed{name, fi})
	}
	if cur != nil && cur.Mode().IsRegular() {
		files = append(files, listed{ix.path, cur})
	}
	return files, nil
}

// match matches the files listed with those followed: it renames those
// that moved, opens the new ones after the newest followed, and marks
// gone those deleted, moved out of the log or truncated.
func (ix *Index) match(files []listed) error {
	fl := ix.fl
	found := make(map[*segment]bool, len(fl.order))
	newest := -1 // the newest file followed, in files
	for i, l := range files {
		if s := fl.find(l.fi); s != nil {
			found[s] = true
			s.absent = 0
			if s.name != l.name {
				ix.mu.Lock()
				s.name = l.name
				ix.mu.Unlock()
			}
			newest = i
		}
	}
	for _, s := range fl.order {
		if !found[s] && !s.gone {
			s.absent++
			// Deleted, or gone from the listing twice (not just renamed
			// while it was listed).
			if s.absent >= 2 || unlinked(s.f) {
				s.gone = true
				ix.log.Info("audit index: file gone; dropping its events", "file", s.name)
			}
		}
	}
	for i, l := range files {
		if fl.find(l.fi) != nil || fl.isIgnored(l.fi) {
			continue // followed (maybe under two names), or ignored
		}
		if i < newest {
			fl.ignored = append(fl.ignored, l.fi)
			if len(fl.ignored) > maxFiles {
				fl.ignored = fl.ignored[1:]
			}
			ix.log.Warn("audit index: ignoring a file older than one already followed", "file", l.name)
			continue
		}
		if err := ix.open(l); err != nil {
			return err
		}
	}
	return ix.truncations()
}

// find returns the live segment of the file fi, if any.
func (fl *follower) find(fi os.FileInfo) *segment {
	for _, s := range fl.order {
		if !s.gone && os.SameFile(s.fi, fi) {
			return s
		}
	}
	return nil
}

func (fl *follower) isIgnored(fi os.FileInfo) bool {
	return slices.ContainsFunc(fl.ignored, func(o os.FileInfo) bool { return os.SameFile(o, fi) })
}

// open starts following the file l, as the newest.
func (ix *Index) open(l listed) error {
	f, err := os.Open(l.name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // rotated away meanwhile: the next listing has it
	}
	if err != nil {
		return fmt.Errorf("open audit file: %w", err)
	}
	fi, err := f.Stat()
	if err != nil || !os.SameFile(fi, l.fi) {
		f.Close()
		return nil // another file by now: the next listing has it
	}
	ix.add(&segment{fi: fi, f: f, name: l.name})
	return nil
}

// add starts following s, as the newest file.
func (ix *Index) add(s *segment) {
	fl := ix.fl
	s.id = fl.nextID
	fl.nextID++
	fl.order = append(fl.order, s)
	ix.mu.Lock()
	ix.segs[s.id] = s
	ix.mu.Unlock()
}

// truncations notices files that shrank below what was read. A truncated
// PATH is read again from its start, as a new file, its old events
// dropped. A rotated file is never written again: if one shrinks, its
// lines changed after they were read, which queries report (Entry.Changed)
// as they read them; its events are kept.
func (ix *Index) truncations() error {
	fl := ix.fl
	for i, s := range fl.order {
		if s.gone || s.f == nil {
			continue
		}
		fi, err := s.f.Stat()
		if err != nil {
			return fmt.Errorf("stat audit file: %w", err)
		}
		if fi.Size() >= s.off {
			continue
		}
		if i < len(fl.order)-1 || s.name != ix.path {
			if !s.shrank {
				s.shrank = true
				ix.log.Warn("audit index: a rotated file shrank: its lines changed after they were read", "file", s.name, "size", fi.Size(), "read", s.off)
			}
			continue
		}
		ix.log.Warn("audit index: file truncated; its events are dropped and it is read again", "file", s.name, "size", fi.Size(), "read", s.off)
		s.gone = true
		ix.mu.Lock()
		f := s.f
		s.f = nil
		ix.mu.Unlock()
		ix.add(&segment{fi: fi, f: f, name: s.name})
	}
	return nil
}
