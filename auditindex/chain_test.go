package auditindex

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/modgate/modgate/audit"
)

// tamperable writes a rotated log of 60 events and returns its path.
func tamperable(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	line := len(mustJSON(t, genEvent(3))) + 130
	writeEvents(t, path, audit.FileOptions{MaxBytes: int64(12 * line), Keep: 100}, 0, 60)
	if n := len(logFiles(t, path)); n < 4 {
		t.Fatalf("the log has %d files, want 4 or more", n)
	}
	return path
}

// rewrite replaces the lines of a file by what edit returns.
func rewrite(t *testing.T, name string, edit func(lines [][]byte) [][]byte) {
	t.Helper()
	var b bytes.Buffer
	for _, l := range edit(fileLines(t, name)) {
		b.Write(l)
		b.WriteByte('\n')
	}
	if err := os.WriteFile(name, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// editLine replaces a line of a file (from 1) by what edit returns.
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

// seqBefore returns the seq of the last chained line before at, in the
// files in order.
func seqBefore(t *testing.T, files []string, at audit.Location) uint64 {
	t.Helper()
	var seq uint64
	for _, f := range files {
		for i, l := range fileLines(t, f) {
			if f == at.File && i+1 == at.Line {
				return seq
			}
			var e audit.Event
			if json.Unmarshal(l, &e) == nil && e.Chain != nil {
				seq = e.Chain.Seq
			}
		}
	}
	t.Fatalf("%s is not a line of the log", at)
	return 0
}

func TestChainTamperedBeforeOpen(t *testing.T) {
	// The index finds what audit.Verify finds, where Verify finds it, and
	// verifies up to the line before.
	tests := []struct {
		name   string
		tamper func(t *testing.T, f []string)
		want   audit.Kind
	}{
		{"a field edited", func(t *testing.T, f []string) {
			editLine(t, f[1], 2, replace(`"action":"request"`, `"action":"requesX"`))
		}, audit.KindEdited},
		{"the last line of a rotated file edited", func(t *testing.T, f []string) {
			n := len(fileLines(t, f[1]))
			editLine(t, f[1], n, replace(`"method":"GET"`, `"method":"PUT"`))
		}, audit.KindEdited},
		{"a line made not JSON", func(t *testing.T, f []string) {
			editLine(t, f[2], 3, func(l []byte) []byte { return l[:len(l)-1] })
		}, audit.KindMalformed},
		{"a line deleted", func(t *testing.T, f []string) {
			rewrite(t, f[1], func(lines [][]byte) [][]byte { return slices.Delete(lines, 1, 2) })
		}, audit.KindMissing},
		{"two lines swapped", func(t *testing.T, f []string) {
			rewrite(t, f[1], func(lines [][]byte) [][]byte {
				lines[1], lines[2] = lines[2], lines[1]
				return lines
			})
		}, audit.KindReordered},
		{"a rotated file cut mid-line", func(t *testing.T, f []string) {
			data, _ := os.ReadFile(f[1])
			os.WriteFile(f[1], data[:len(data)-20], 0o644)
		}, audit.KindTorn},
		{"a rotated file removed from the middle", func(t *testing.T, f []string) {
			os.Remove(f[1])
			os.Rename(f[0], f[1]) // no gap in the names
		}, audit.KindMissing},
	}
	orig := tamperable(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := copyLog(t, orig, t.TempDir())
			tt.tamper(t, logFiles(t, path))
			files := logFiles(t, path)
			rep, err := audit.Verify(files)
			if err != nil || rep.Problem == nil || rep.Problem.Kind != tt.want {
				t.Fatalf("Verify = %+v, %v; want a %s problem", rep.Problem, err, tt.want)
			}
			ix := openIndex(t, Options{Path: path})
			p := query(t, ix, Query{Limit: 500})
			if got := p.Chain.Problem; got == nil || *got != *rep.Problem {
				t.Fatalf("Chain.Problem = %v\nwant Verify's %v", got, rep.Problem)
			}
			through := seqBefore(t, files, rep.Problem.Location)
			if p.Chain.VerifiedThrough != through || p.Chain.VerifiedFrom != 1 {
				t.Errorf("Chain verified %d through %d, want 1 through %d", p.Chain.VerifiedFrom, p.Chain.VerifiedThrough, through)
			}
			// Events after the break are shown, not verified.
			for _, e := range p.Events {
				if e.Verified != (e.Seq <= through) && e.Seq != through+1 || e.Changed {
					t.Errorf("seq %d: Verified %v, Changed %v; verified through %d", e.Seq, e.Verified, e.Changed, through)
				}
			}
			if p.Events[0].Seq != 60 || p.Events[0].Verified {
				t.Errorf("the newest event, seq %d, verified %v; want 60, unverified", p.Events[0].Seq, p.Events[0].Verified)
			}
			t.Logf("%v", p.Chain.Problem)
		})
	}
}

func TestChainEditedAfterIndexing(t *testing.T) {
	path := copyLog(t, tamperable(t), t.TempDir())
	ix := openIndex(t, Options{Path: path})
	files := logFiles(t, path)
	// Same length: the lines after it stay where they were.
	editLine(t, files[1], 3, replace(`"@timestamp":"2026-03-01T12`, `"@timestamp":"2026-03-01T13`))
	editLine(t, files[2], 2, replace(`"@timestamp":"2026-03-01T12`, `"@timestamp":"2026-03-01T14`))
	var at uint64
	{
		var e audit.Event
		json.Unmarshal(fileLines(t, files[1])[2], &e)
		at = e.Chain.Seq
	}
	// A page without the edited line: nothing found yet.
	if p := query(t, ix, Query{Before: at - 5}); p.Chain.Problem != nil || p.Chain.VerifiedThrough != 60 {
		t.Errorf("a page of older lines: Chain = %+v (problem %v), want intact through 60", p.Chain, p.Chain.Problem)
	}
	// The later edit is found first (a page of the newer lines); the
	// earlier one, once shown, takes its place.
	p := query(t, ix, Query{Limit: 60 - int(at)})
	if c := p.Chain.Problem; c == nil || c.Kind != audit.KindEdited || c.File != files[2] || c.Line != 2 {
		t.Errorf("Chain.Problem = %v, want edited at %s:2", c, files[2])
	}
	p = query(t, ix, Query{Limit: 500})
	if c := p.Chain.Problem; c == nil || c.Kind != audit.KindEdited || c.File != files[1] || c.Line != 3 {
		t.Errorf("Chain.Problem = %v, want edited at %s:3", c, files[1])
	}
	if p.Chain.VerifiedThrough != at-1 {
		t.Errorf("VerifiedThrough = %d, want %d", p.Chain.VerifiedThrough, at-1)
	}
	for _, e := range p.Events {
		wantChanged := e.File == files[1] && e.Line == 3 || e.File == files[2] && e.Line == 2
		if e.Changed != wantChanged || e.Verified != (e.Seq < at) {
			t.Errorf("seq %d (%s:%d): Changed %v, Verified %v", e.Seq, e.File, e.Line, e.Changed, e.Verified)
		}
		if wantChanged && e.Event.Timestamp.Hour() == 12 {
			t.Errorf("seq %d: the entry shows the line as indexed, not as it reads now", e.Seq)
		}
	}
}

func TestTornTail(t *testing.T) {
	// The lines of a log of 6 events, the last one appended by hand.
	scratch := filepath.Join(t.TempDir(), "scratch.jsonl")
	writeEvents(t, scratch, audit.FileOptions{}, 0, 6)
	lines := fileLines(t, scratch)
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	if err := os.WriteFile(path, append(bytes.Join(lines[:5], []byte("\n")), '\n'), 0o640); err != nil {
		t.Fatal(err)
	}
	ix := openIndex(t, Options{Path: path})
	half := len(lines[5]) / 2
	appendTo(t, path, string(lines[5][:half]))
	refresh(t, ix)
	if p, st := query(t, ix, Query{}), ix.Stats(); st.Events != 5 || st.Malformed != 0 || p.Chain.Problem != nil || p.Chain.VerifiedThrough != 5 {
		t.Errorf("with half a line: Stats %+v, Chain %+v; want 5 events, intact", st, p.Chain)
	}
	appendTo(t, path, string(lines[5][half:])+"\n")
	if p, st := query(t, ix, Query{}), ix.Stats(); st.Events != 6 || p.Chain.Problem != nil || p.Chain.VerifiedThrough != 6 || p.Events[0].Seq != 6 {
		t.Errorf("with the line ended: Stats %+v, Chain %+v; want 6 events, intact", st, p.Chain)
	}
}

func TestCrashRecovery(t *testing.T) {
	// A crash leaves a torn line; the restarted writer ends it and
	// records its recovery: a torn line, not a break.
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	writeEvents(t, path, audit.FileOptions{}, 0, 5)
	data, _ := os.ReadFile(path)
	if err := os.WriteFile(path, data[:len(data)-40], 0o640); err != nil {
		t.Fatal(err)
	}
	ix := openIndex(t, Options{Path: path})
	if p, st := query(t, ix, Query{}), ix.Stats(); st.Events != 4 || p.Chain.Problem != nil || p.Chain.VerifiedThrough != 4 {
		t.Errorf("after the crash: Stats %+v, Chain %+v; want 4 events, intact", st, p.Chain)
	}
	writeEvents(t, path, audit.FileOptions{}, 5, 2)
	p := query(t, ix, Query{})
	if st := ix.Stats(); st.Events != 7 || st.Torn != 1 || st.Malformed != 0 || p.Chain.Problem != nil || p.Chain.VerifiedThrough != 7 {
		t.Errorf("after the restart: Stats %+v, Chain %+v (problem %v); want 7 events, 1 torn line, intact", st, p.Chain, p.Chain.Problem)
	}
	if p.Events[2].Event.Event.Action != audit.ActionRecovered || !p.Events[2].Verified {
		t.Errorf("seq 5 = %+v, want the verified recovery event", p.Events[2])
	}
	if rep, err := audit.Verify(logFiles(t, path)); err != nil || rep.Problem != nil || len(rep.Torn) != 1 {
		t.Errorf("Verify = %+v, %v", rep, err)
	}
}

func TestRotatedFileShrinks(t *testing.T) {
	// A rotated file is never written again: one that shrinks was
	// tampered with. Its events stay, and show as changed.
	path := copyLog(t, tamperable(t), t.TempDir())
	ix := openIndex(t, Options{Path: path})
	files := logFiles(t, path)
	rewrite(t, files[1], func(lines [][]byte) [][]byte { return slices.Delete(lines, 4, 5) })
	refresh(t, ix)
	if st := ix.Stats(); st.Events != 60 || st.Dropped != 0 {
		t.Errorf("Stats = %+v, want the 60 events kept", st)
	}
	p := query(t, ix, Query{Limit: 500})
	if c := p.Chain.Problem; c == nil || c.Kind != audit.KindEdited || c.File != files[1] || c.Line != 5 {
		t.Errorf("Chain.Problem = %v, want edited at %s:5", c, files[1])
	}
	changed := 0
	for _, e := range p.Events {
		if e.Changed {
			changed++
			if e.File != files[1] || e.Line < 5 {
				t.Errorf("seq %d at %s:%d changed", e.Seq, e.File, e.Line)
			}
		}
	}
	if want := len(fileLines(t, files[1])) + 1 - 4; changed != want {
		t.Errorf("%d lines changed, want %d (line 5 on)", changed, want)
	}
}
