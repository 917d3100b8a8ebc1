package ledger

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// lineLen is the length of the line recording corp.example/m v1.1.0 (or
// v1.2.0): the fields, a 64-digit chain value and a newline.
const lineLen = len("corp.example/m v1.1.0 "+hashA+" ") + 64 + 1

var (
	errWrite    = errors.New("injected write error")
	errSync     = errors.New("injected sync error")
	errTruncate = errors.New("injected truncate error")
)

// faultFile is a ledger's real file that fails on cue. Its faults are
// one-shot unless stated otherwise, so that a retry can succeed.
type faultFile struct {
	file
	failWrite bool // the next WriteAt writes only tornAt bytes, then fails
	tornAt    int
	failSyncs int  // the next failSyncs calls of Sync fail, without syncing
	failCuts  bool // every Truncate fails, without truncating
}

func (f *faultFile) WriteAt(b []byte, off int64) (int, error) {
	if !f.failWrite {
		return f.file.WriteAt(b, off)
	}
	f.failWrite = false
	n, err := f.file.WriteAt(b[:min(f.tornAt, len(b))], off)
	if err != nil {
		return n, err
	}
	return n, errWrite
}

func (f *faultFile) Sync() error {
	if f.failSyncs > 0 {
		f.failSyncs--
		return errSync
	}
	return f.file.Sync()
}

func (f *faultFile) Truncate(size int64) error {
	if f.failCuts {
		return errTruncate
	}
	return f.file.Truncate(size)
}

// inject puts fault between l and its file.
func inject(l *Ledger, fault *faultFile) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fault.file = l.f
	l.f = fault
}

// versions returns the versions recorded in the ledger file at path,
// failing the test if Read finds the chain broken.
func versions(t testing.TB, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	entries, err := Read(f)
	if err != nil {
		t.Fatalf("Read(%s) = %v, want an intact chain", path, err)
	}
	var vs []string
	for _, e := range entries {
		vs = append(vs, e.Version)
	}
	return vs
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestFailedAppendIsUndone checks that an append that fails is cut off,
// so that a retry records the hash once and the file reopens.
func TestFailedAppendIsUndone(t *testing.T) {
	tests := []struct {
		name    string
		fault   faultFile
		wantErr error
	}{
		{"write fails before any byte", faultFile{failWrite: true, tornAt: 0}, errWrite},
		{"write torn after 10 bytes", faultFile{failWrite: true, tornAt: 10}, errWrite},
		{"write torn before its newline", faultFile{failWrite: true, tornAt: lineLen - 1}, errWrite},
		{"sync fails after a full write", faultFile{failSyncs: 1}, errSync},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "ledger")
			l := open(t, path)
			if _, err := l.Check(t.Context(), "corp.example/m", "v1.0.0", hashA); err != nil {
				t.Fatal(err)
			}
			before := readFile(t, path)
			fault := tt.fault
			inject(l, &fault)

			if first, err := l.Check(t.Context(), "corp.example/m", "v1.1.0", hashA); first || !errors.Is(err, tt.wantErr) {
				t.Fatalf("Check with a failing file = %v, %v; want false, %v", first, err, tt.wantErr)
			}
			if after := readFile(t, path); !bytes.Equal(after, before) {
				t.Errorf("after a failed append the file is\n%q\nwant it as before\n%q", after, before)
			}
			if first, err := l.Check(t.Context(), "corp.example/m", "v1.1.0", hashA); !first || err != nil {
				t.Errorf("retried Check = %v, %v; want true, nil", first, err)
			}
			if first, err := l.Check(t.Context(), "corp.example/m", "v1.2.0", hashB); !first || err != nil {
				t.Errorf("Check of another version = %v, %v; want true, nil", first, err)
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}

			want := []string{"v1.0.0", "v1.1.0", "v1.2.0"}
			if got := versions(t, path); !slices.Equal(got, want) {
				t.Errorf("Read = %q, want %q", got, want)
			}
			l2 := open(t, path)
			if first, err := l2.Check(t.Context(), "corp.example/m", "v1.1.0", hashA); first || err != nil {
				t.Errorf("after reopening: Check(v1.1.0) = %v, %v; want false, nil", first, err)
			}
		})
	}
}

// TestUndoFails checks that a ledger whose failed append cannot be undone
// refuses every later Check, and that its file still opens.
func TestUndoFails(t *testing.T) {
	tests := []struct {
		name      string
		fault     faultFile
		wantErr   error
		wantAfter []string // versions in the file when reopened
	}{
		{"torn write, truncate fails", faultFile{failWrite: true, tornAt: 10, failCuts: true}, errTruncate, []string{"v1.0.0"}},
		{"failed write, truncate fails", faultFile{failWrite: true, tornAt: 0, failCuts: true}, errTruncate, []string{"v1.0.0"}},
		{"all but the newline, truncate fails", faultFile{failWrite: true, tornAt: lineLen - 1, failCuts: true}, errTruncate, []string{"v1.0.0"}},
		// The unacknowledged line is whole and valid, as after a crash
		// between write and sync: Open keeps it.
		{"failed sync, truncate fails", faultFile{failSyncs: 1, failCuts: true}, errTruncate, []string{"v1.0.0", "v1.1.0"}},
		{"failed sync, truncated but not synced", faultFile{failSyncs: 2}, errSync, []string{"v1.0.0"}},
		{"torn write, truncated but not synced", faultFile{failWrite: true, tornAt: 10, failSyncs: 1}, errSync, []string{"v1.0.0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "ledger")
			l := open(t, path)
			if _, err := l.Check(t.Context(), "corp.example/m", "v1.0.0", hashA); err != nil {
				t.Fatal(err)
			}
			fault := tt.fault
			inject(l, &fault)

			_, err := l.Check(t.Context(), "corp.example/m", "v1.1.0", hashA)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Check with a failing file = %v, want %v", err, tt.wantErr)
			}
			size := len(readFile(t, path))

			// Every later Check fails, even once the file works again,
			// and nothing more is written.
			fault.failSyncs, fault.failCuts = 0, false
			for _, v := range []string{"v1.1.0", "v1.2.0", "v1.0.0"} {
				first, err := l.Check(t.Context(), "corp.example/m", v, hashA)
				if first || err == nil || !strings.Contains(err.Error(), "broken until reopened") || !errors.Is(err, tt.wantErr) {
					t.Errorf("Check(%s) on a broken ledger = %v, %v; want false and an error saying it is broken until reopened", v, first, err)
				}
			}
			if got := len(readFile(t, path)); got != size {
				t.Errorf("a broken ledger's file grew from %d to %d bytes", size, got)
			}
			l.Close()

			l2 := open(t, path)
			if got := versions(t, path); !slices.Equal(got, tt.wantAfter) {
				t.Errorf("after reopening: Read = %q, want %q", got, tt.wantAfter)
			}
			if first, err := l2.Check(t.Context(), "corp.example/m", "v1.1.0", hashA); first != (len(tt.wantAfter) == 1) || err != nil {
				t.Errorf("after reopening: Check(v1.1.0) = %v, %v; want %v, nil", first, err, len(tt.wantAfter) == 1)
			}
			if first, err := l2.Check(t.Context(), "corp.example/m", "v1.2.0", hashA); !first || err != nil {
				t.Errorf("after reopening: Check(v1.2.0) = %v, %v; want true, nil", first, err)
			}
			l2.Close()
			if got, want := versions(t, path), []string{"v1.0.0", "v1.1.0", "v1.2.0"}; !slices.Equal(got, want) {
				t.Errorf("finally: Read = %q, want %q", got, want)
			}
		})
	}
}

// TestOpenDropsTornTail checks that Open cuts a torn final line off the
// file, so that the next line is appended on a clean line.
func TestOpenDropsTornTail(t *testing.T) {
	lines := ledgerText(t)
	whole := strings.Join(lines[:2], "")
	tests := []struct {
		name  string
		whole string // the complete lines
		torn  string // what follows them
	}{
		{"empty file", "", ""},
		{"no torn line", whole, ""},
		{"only a torn line", "", lines[0][:20]},
		{"one torn byte", whole, lines[2][:1]},
		{"torn line", whole, lines[2][:20]},
		{"all but the newline", whole, strings.TrimSuffix(lines[2], "\n")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "ledger")
			if err := os.WriteFile(path, []byte(tt.whole+tt.torn), 0o640); err != nil {
				t.Fatal(err)
			}
			l := open(t, path)
			if got := string(readFile(t, path)); got != tt.whole {
				t.Errorf("after Open the file is %q, want %q", got, tt.whole)
			}
			if first, err := l.Check(t.Context(), "corp.example/n", "v1.0.0", hashB); !first || err != nil {
				t.Errorf("Check = %v, %v; want true, nil", first, err)
			}
			l.Close()
			got := string(readFile(t, path))
			if !strings.HasPrefix(got, tt.whole) || strings.Count(got[len(tt.whole):], "\n") != 1 || !strings.HasSuffix(got, "\n") {
				t.Errorf("after Check the file is %q, want %q and one more line", got, tt.whole)
			}
			want := strings.Count(tt.whole, "\n") + 1
			if vs := versions(t, path); len(vs) != want {
				t.Errorf("Read = %d entries, want %d", len(vs), want)
			}
			l2, err := Open(path, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatalf("reopening: %v", err)
			}
			l2.Close()
		})
	}
}
