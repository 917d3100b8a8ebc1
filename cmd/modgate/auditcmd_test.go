package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modgate/modgate/audit"
)

// auditLog writes n events through a rotating audit.Writer and returns the
// log's path; its files are path, path.1 … path.files-1.
func auditLog(t *testing.T, n, files int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	w, err := audit.OpenFile(path, audit.FileOptions{MaxBytes: 1200})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		e := &audit.Event{
			Timestamp: time.Unix(1700000000, int64(i)).UTC(),
			Event:     audit.EventFields{Action: "request", Outcome: audit.OutcomeSuccess},
			URL:       &audit.URL{Path: fmt.Sprintf("/example.com/m/@v/v1.0.%d.zip", i)},
			Modgate:   audit.ModgateGroup{Module: "example.com/m", Kind: "zip"},
		}
		if err := w.Record(e); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(fmt.Sprintf("%s.%d", path, files-1)); err != nil {
		t.Fatalf("want %d files: %v", files, err)
	}
	return path
}

func TestAuditCmd(t *testing.T) {
	path := auditLog(t, 20, 3)
	rotated := func(i int) string { return fmt.Sprintf("%s.%d", path, i) }
	var all []string
	for i := 1; ; i++ {
		if _, err := os.Stat(rotated(i)); err != nil {
			break
		}
		all = append(all, rotated(i))
	}
	all = append(all, path) // newest first, as a shell glob might not give them
	nfiles := len(all)

	// A tampered copy: the second line of path.1 edited.
	tampered := filepath.Join(t.TempDir(), "audit.jsonl")
	var tamperedAll []string
	for _, f := range all {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if f == rotated(1) {
			lines := bytes.SplitAfter(data, []byte("\n"))
			lines[1] = bytes.Replace(lines[1], []byte(`"zip"`), []byte(`"mod"`), 1)
			data = bytes.Join(lines, nil)
		}
		name := filepath.Join(filepath.Dir(tampered), filepath.Base(f))
		if err := os.WriteFile(name, data, 0o644); err != nil {
			t.Fatal(err)
		}
		tamperedAll = append(tamperedAll, name)
	}

	tests := []struct {
		name    string
		args    []string
		wantOut string // substring of stdout
		wantErr string // substring of the error, "" for none
		usage   bool   // the error is a usageError
	}{
		{"intact set, any order", append([]string{"verify"}, all...),
			fmt.Sprintf("20 events in %d files, chain intact", nfiles), "", false},
		{"current file alone", []string{"verify", path}, "in 1 files, chain intact", "", false},
		{"tampered", append([]string{"verify"}, tamperedAll...),
			"", tampered + ".1:2: edited", false},
		{"as given, newest first", append([]string{"verify", "--as-given"}, all...),
			"", "reordered", false},
		{"missing file", []string{"verify", path + ".99"}, "", "no such file", false},
		{"no file", []string{"verify"}, "", "want at least one FILE", true},
		{"no subcommand", nil, "", "missing subcommand", true},
		{"unknown subcommand", []string{"check", path}, "", `unknown subcommand "check"`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := auditCmd(context.Background(), tt.args, &stdout, &stderr)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("auditCmd(%q) = %v", tt.args, err)
				}
			} else if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("auditCmd(%q) = %v, want an error containing %q", tt.args, err, tt.wantErr)
			}
			var ue usageError
			if errors.As(err, &ue) != tt.usage {
				t.Errorf("auditCmd(%q) = %v (%T), usage error: %v", tt.args, err, err, tt.usage)
			}
			if !strings.Contains(stdout.String(), tt.wantOut) {
				t.Errorf("auditCmd(%q) stdout = %q, want %q in it", tt.args, stdout.String(), tt.wantOut)
			}
		})
	}
}

func TestChainOrder(t *testing.T) {
	tests := []struct {
		in, want []string
	}{
		{[]string{"a", "a.1", "a.10", "a.2"}, []string{"a.10", "a.2", "a.1", "a"}},
		{[]string{"x/a.3", "x/a"}, []string{"x/a.3", "x/a"}},
		{[]string{"b", "a.1", "a", "b.1"}, []string{"b.1", "b", "a.1", "a"}},
		{[]string{"log.json", "log.json.1"}, []string{"log.json.1", "log.json"}},
		{[]string{"a.01", "a.0", "a"}, []string{"a.01", "a.0", "a"}},
	}
	for _, tt := range tests {
		if got := chainOrder(tt.in); !slices.Equal(got, tt.want) {
			t.Errorf("chainOrder(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
