package audit

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// tamperLog writes a rotated log through the real Writer, with a crash
// (a torn last line) and a restart in the middle, and returns its files,
// oldest first, and where the recovered torn line is.
func tamperLog(t *testing.T) (files []string, torn Location) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	line := len(event(10).appendJSON(nil)) + 120
	opts := FileOptions{MaxBytes: int64(4 * line)}
	record(t, openFile(t, path, opts), 0, 14)
	truncateBy(t, path, 17)
	record(t, openFile(t, path, opts), 100, 12)
	files = logFiles(t, path)
	rep := verifyFiles(t, files)
	if rep.Problem != nil || len(rep.Torn) != 1 || len(files) < 5 {
		t.Fatalf("the untampered log: %d files, Verify = %+v; want 5 or more files, intact, one torn line", len(files), rep)
	}
	for _, f := range files {
		if n := len(fileLines(t, f)); n < 3 {
			t.Fatalf("%s has %d lines, want 3 or more", f, n)
		}
	}
	return files, rep.Torn[0]
}

// rewrite replaces the lines of a file by what edit returns.
func rewrite(t *testing.T, name string, edit func(lines [][]byte) [][]byte) {
	t.Helper()
	lines := edit(fileLines(t, name))
	var b bytes.Buffer
	for _, l := range lines {
		b.Write(l)
		b.WriteByte('\n')
	}
	if err := os.WriteFile(name, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// editLine replaces line n (from 1) of a file by what edit returns.
func editLine(t *testing.T, name string, n int, edit func(l []byte) []byte) {
	t.Helper()
	rewrite(t, name, func(lines [][]byte) [][]byte {
		lines[n-1] = edit(bytes.Clone(lines[n-1]))
		return lines
	})
}

func replace(old, new string) func([]byte) []byte {
	return func(l []byte) []byte {
		if !bytes.Contains(l, []byte(old)) {
			panic(fmt.Sprintf("%q not in %q", old, l))
		}
		return bytes.Replace(l, []byte(old), []byte(new), 1)
	}
}

func TestVerifyDetectsTampering(t *testing.T) {
	// Each case tampers with a copy of the same log (files oldest first:
	// f[0] … f[len-1], the current file last) and says where Verify must
	// find the problem.
	last := func(t *testing.T, name string) int { return len(fileLines(t, name)) }
	tests := []struct {
		name   string
		tamper func(t *testing.T, f []string, torn Location) (verify []string, at Location)
		want   Kind
	}{
		{"intact", func(t *testing.T, f []string, _ Location) ([]string, Location) {
			return f, Location{}
		}, ""},
		{"a field edited", func(t *testing.T, f []string, _ Location) ([]string, Location) {
			editLine(t, f[1], 2, replace(`"action":"request"`, `"action":"requesX"`))
			return f, Location{f[1], 2}
		}, KindEdited},
		{"the last line of a rotated file edited", func(t *testing.T, f []string, _ Location) ([]string, Location) {
			n := last(t, f[1])
			editLine(t, f[1], n, replace(`"status_code":200`, `"status_code":403`))
			return f, Location{f[1], n}
		}, KindEdited},
		{"a seq edited", func(t *testing.T, f []string, _ Location) ([]string, Location) {
			editLine(t, f[2], 2, func(l []byte) []byte {
				i := bytes.Index(l, []byte(`"seq":`)) + len(`"seq":`)
				return slices.Concat(l[:i], []byte("9"), l[i:])
			})
			return f, Location{f[2], 2}
		}, KindEdited},
		{"a prev edited", func(t *testing.T, f []string, _ Location) ([]string, Location) {
			editLine(t, f[2], 2, func(l []byte) []byte {
				i := bytes.Index(l, []byte(`"prev":"`)) + len(`"prev":"`)
				l[i] ^= 1
				return l
			})
			return f, Location{f[2], 2}
		}, KindEdited},
		{"a line made not JSON", func(t *testing.T, f []string, _ Location) ([]string, Location) {
			editLine(t, f[1], 3, func(l []byte) []byte { return l[:len(l)-1] })
			return f, Location{f[1], 3}
		}, KindMalformed},
		{"a line deleted", func(t *testing.T, f []string, _ Location) ([]string, Location) {
			rewrite(t, f[1], func(lines [][]byte) [][]byte { return slices.Delete(lines, 1, 2) })
			return f, Location{f[1], 2}
		}, KindMissing},
		{"the first line of a file deleted", func(t *testing.T, f []string, _ Location) ([]string, Location) {
			rewrite(t, f[2], func(lines [][]byte) [][]byte { return lines[1:] })
			return f, Location{f[2], 1}
		}, KindMissing},
		{"two lines swapped", func(t *testing.T, f []string, _ Location) ([]string, Location) {
			rewrite(t, f[1], func(lines [][]byte) [][]byte {
				lines[1], lines[2] = lines[2], lines[1]
				return lines
			})
			return f, Location{f[1], 2}
		}, KindReordered},
		{"a line repeated", func(t *testing.T, f []string, _ Location) ([]string, Location) {
			rewrite(t, f[1], func(lines [][]byte) [][]byte { return slices.Insert(lines, 2, lines[1]) })
			return f, Location{f[1], 3}
		}, KindReordered},
		{"the tail truncated mid-line", func(t *testing.T, f []string, _ Location) ([]string, Location) {
			cur := f[len(f)-1]
			n := last(t, cur)
			truncateBy(t, cur, 10)
			return f, Location{cur, n}
		}, KindTorn},
		{"a rotated file removed from the middle", func(t *testing.T, f []string, _ Location) ([]string, Location) {
			if err := os.Remove(f[1]); err != nil {
				t.Fatal(err)
			}
			return slices.Delete(slices.Clone(f), 1, 2), Location{f[2], 1}
		}, KindMissing},
		{"files given newest first", func(t *testing.T, f []string, _ Location) ([]string, Location) {
			return []string{f[1], f[0]}, Location{f[0], 1}
		}, KindReordered},
		{"a recovered torn line edited", func(t *testing.T, f []string, torn Location) ([]string, Location) {
			editLine(t, torn.File, torn.Line, replace(`"event"`, `"Event"`))
			return f, torn
		}, KindMalformed},
		{"a line cut short, as if torn, with no recovery", func(t *testing.T, f []string, _ Location) ([]string, Location) {
			editLine(t, f[2], 2, func(l []byte) []byte { return l[:len(l)/2] })
			return f, Location{f[2], 2}
		}, KindMalformed},
	}
	files, torn := tamperLog(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A copy of the log, with the same base names.
			dir := t.TempDir()
			f := make([]string, len(files))
			for i, name := range files {
				data, err := os.ReadFile(name)
				if err != nil {
					t.Fatal(err)
				}
				f[i] = filepath.Join(dir, filepath.Base(name))
				if err := os.WriteFile(f[i], data, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			tl := Location{filepath.Join(dir, filepath.Base(torn.File)), torn.Line}
			verify, at := tt.tamper(t, f, tl)
			rep := verifyFiles(t, verify)
			if tt.want == "" {
				if rep.Problem != nil {
					t.Errorf("Verify = %v, want intact", rep.Problem)
				}
				return
			}
			if p := rep.Problem; p == nil || p.Kind != tt.want || p.Location != at {
				t.Errorf("Verify problem = %v, want %s at %s", p, tt.want, at)
			} else {
				t.Logf("%v", p)
			}
		})
	}
}

func TestVerifyErrors(t *testing.T) {
	if _, err := Verify(nil); err == nil {
		t.Error("Verify(nil) succeeded")
	}
	missing := filepath.Join(t.TempDir(), "missing")
	if _, err := Verify([]string{missing}); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("Verify(missing) = %v, want an error naming the file", err)
	}
}

func TestVerifyLongLine(t *testing.T) {
	rep := verifyBytes(t, append(bytes.Repeat([]byte("x"), maxLine+10), '\n'))
	if p := rep.Problem; p == nil || p.Kind != KindMalformed || p.Line != 1 {
		t.Errorf("Verify(long line) problem = %v, want malformed at line 1", p)
	}
}

func FuzzVerify(f *testing.F) {
	path := filepath.Join(f.TempDir(), "seed.jsonl")
	w := openFile(f, path, FileOptions{})
	for i := range 5 {
		w.Record(event(i))
	}
	w.Close()
	seed, err := os.ReadFile(path)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add(seed[:len(seed)-7])
	f.Add([]byte("{}\n\n{\"chain\":{\"seq\":1,\"prev\":\"" + GenesisPrev + "\"}}\n"))
	fuzzed := filepath.Join(f.TempDir(), "fuzzed.jsonl") // one per worker; a worker runs one input at a time
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(fuzzed, data, 0o644); err != nil {
			t.Fatal(err)
		}
		rep, err := Verify([]string{fuzzed})
		if err != nil {
			t.Fatalf("Verify: %v", err)
		}
		if rep.Problem == nil && rep.Events > 0 && rep.LastSeq-rep.FirstSeq+1 != uint64(rep.Events) {
			t.Errorf("intact log of %d events from seq %d to %d", rep.Events, rep.FirstSeq, rep.LastSeq)
		}
		if rep.Problem == nil && len(data) > 0 && data[len(data)-1] != '\n' {
			t.Errorf("log without a final newline reported intact")
		}
	})
}
