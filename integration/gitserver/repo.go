package gitserver

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// BaseTime is the author and committer date of a repository's first
// commit; each later commit of the repository is one hour later.
var BaseTime = time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)

// A Repo is a repository being built, directly in the server's bare
// repository NAME.git: commits are written with git fast-import (no work
// tree, one process a commit), so a test's fixtures take milliseconds.
type Repo struct {
	Name string // the repository name; module paths DOMAIN/NAME[/...] map to it

	s       *Server
	bare    string // the served bare repository
	home    string // HOME for git
	head    string // the tip of main, "" before the first commit
	commits int    // commits so far, for the dates
}

// NewRepo creates an empty bare repository name on the server, with a
// default branch "main".
func (s *Server) NewRepo(t testing.TB, name string) *Repo {
	t.Helper()
	r := &Repo{
		Name: name,
		s:    s,
		bare: filepath.Join(s.Root, name+".git"),
		home: t.TempDir(),
	}
	if _, err := os.Stat(r.bare); err == nil {
		t.Fatalf("gitserver: repository %s exists", name)
	}
	r.git(t, nil, "init", "-q", "--bare", "-b", "main", r.bare)
	r.git(t, nil, "config", "uploadpack.allowAnySHA1InWant", "true")
	return r
}

// Commit commits files (path → contents; "" deletes the file) on top of
// main with message msg, and returns the commit hash. The author and
// committer date is BaseTime plus one hour per earlier commit of r.
func (r *Repo) Commit(t testing.TB, msg string, files map[string]string) string {
	t.Helper()
	when := r.Time(r.commits + 1).Unix()
	var b bytes.Buffer
	fmt.Fprintf(&b, "commit refs/heads/main\nmark :1\n")
	fmt.Fprintf(&b, "author Gitserver Test <gitserver@example.com> %d +0000\n", when)
	fmt.Fprintf(&b, "committer Gitserver Test <gitserver@example.com> %d +0000\n", when)
	fmt.Fprintf(&b, "data %d\n%s\n", len(msg), msg)
	if r.head != "" {
		fmt.Fprintf(&b, "from %s\n", r.head)
	}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if data := files[name]; data == "" {
			fmt.Fprintf(&b, "D %s\n", name)
		} else {
			fmt.Fprintf(&b, "M 100644 inline %s\ndata %d\n%s\n", name, len(data), data)
		}
	}
	marks := filepath.Join(t.TempDir(), "marks")
	r.git(t, &b, "fast-import", "--quiet", "--export-marks="+marks)
	data, err := os.ReadFile(marks)
	if err != nil {
		t.Fatalf("gitserver: %v", err)
	}
	_, hash, ok := strings.Cut(strings.TrimSpace(string(data)), " ")
	if !ok || len(hash) != 40 {
		t.Fatalf("gitserver: fast-import marks %q", data)
	}
	r.head = hash
	r.commits++
	return hash
}

// Head returns the hash of the commit at the tip of main.
func (r *Repo) Head() string {
	return r.head
}

// Time returns the date of r's nth commit (from 1).
func (r *Repo) Time(n int) time.Time {
	return BaseTime.Add(time.Duration(n-1) * time.Hour)
}

// Tag creates the lightweight tag name for the commit rev ("" for the
// tip of main).
func (r *Repo) Tag(t testing.TB, name, rev string) {
	t.Helper()
	if rev == "" {
		rev = r.head
	}
	// The empty old value makes update-ref refuse an existing tag.
	r.git(t, nil, "update-ref", "refs/tags/"+name, rev, "")
}

// MoveTag moves the existing tag name to the commit rev, as a force push
// to a real host would.
func (r *Repo) MoveTag(t testing.TB, name, rev string) {
	t.Helper()
	r.git(t, nil, "rev-parse", "--verify", "--quiet", "refs/tags/"+name)
	r.git(t, nil, "update-ref", "refs/tags/"+name, rev)
}

// git runs git with args in the bare repository (or, before it exists,
// the server root) with an environment of its own and stdin, and returns
// its standard output.
func (r *Repo) git(t testing.TB, stdin *bytes.Buffer, args ...string) string {
	t.Helper()
	cmd := exec.Command(r.s.git, args...)
	cmd.Dir = r.bare
	if _, err := os.Stat(r.bare); err != nil {
		cmd.Dir = r.s.Root
	}
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + r.home,
		"GIT_DIR=" + r.bare,
		"GIT_CONFIG_NOSYSTEM=1",
		"GIT_CONFIG_GLOBAL=" + os.DevNull,
	}
	if args[0] == "init" {
		cmd.Env = slices.DeleteFunc(cmd.Env, func(e string) bool { return strings.HasPrefix(e, "GIT_DIR=") })
	}
	if stdin != nil {
		cmd.Stdin = stdin
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("gitserver: git %s: %v\n%s", strings.Join(args, " "), err, stderr.Bytes())
	}
	return stdout.String()
}

// GoMod returns the text of a go.mod file for module path with the given
// extra lines (e.g. a retract directive).
func GoMod(path string, extra ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "module %s\n\ngo 1.21\n", path)
	for _, line := range extra {
		b.WriteString("\n" + line + "\n")
	}
	return b.String()
}

// GoFile returns the text of a Go file of package pkg with a constant V
// set to v.
func GoFile(pkg, v string) string {
	return fmt.Sprintf("package %s\n\n// V is the version this file was written for.\nconst V = %q\n", pkg, v)
}
