package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modgate/modgate/audit"
	"github.com/modgate/modgate/inventory"
)

// writeInventoryAudit writes an audit file of fetches: alice fetches
// example.com/lib v1.0.0 and v1.1.0, a mesh client v1.1.0, and a 404 and a
// non-JSON line that are not fetches.
func writeInventoryAudit(t *testing.T) string {
	t.Helper()
	name := filepath.Join(t.TempDir(), "audit.log")
	f, err := os.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	w := audit.NewWriter(f)
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	alice := audit.Client{Addr: netip.MustParseAddrPort("10.0.0.1:1"), User: "alice"}
	mesh := audit.Client{Addr: netip.MustParseAddrPort("10.0.0.2:1"), URISANs: []string{"spiffe://corp/ns/ci/sa/builder"}}
	for i, r := range []struct {
		c       audit.Client
		mod     string
		version string
		kind    string
		status  int
	}{
		{alice, "example.com/lib", "v1.0.0", "info", 200},
		{alice, "example.com/lib", "v1.0.0", "zip", 200},
		{alice, "example.com/lib", "v1.1.0", "mod", 200},
		{mesh, "example.com/lib", "v1.1.0", "zip", 200},
		{mesh, "example.com/lib", "v1.2.0", "zip", 404},
		{mesh, "example.com/tool", "v0.3.0", "zip", 200},
	} {
		err := w.Record(audit.NewRequest(audit.Request{
			Start:   t0.Add(time.Duration(i) * time.Minute),
			Method:  "GET",
			Status:  r.status,
			Client:  r.c,
			Modgate: audit.ModgateGroup{Module: r.mod, Version: r.version, Kind: r.kind},
		}))
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return name
}

func TestInventoryCommand(t *testing.T) {
	file := writeInventoryAudit(t)
	dir := filepath.Join(t.TempDir(), "inv")
	tests := []struct {
		args []string
		code int
		want string // stdout, exactly
	}{
		{[]string{"rebuild", file, "--dir", dir}, 0, dir + ": 5 fetches of 4 module versions by identity, 2 modules, from 6 lines in 1 files (chain intact, seq 1 to 6); 1 other events\n"},
		{[]string{"who", "example.com/lib", "--dir", dir}, 0, "" +
			"MODULE           VERSION  IDENTITY                        FIRST                 LAST                  COUNT  KINDS\n" +
			"example.com/lib  v1.0.0   alice                           2026-03-01T12:00:00Z  2026-03-01T12:01:00Z  2      info,zip\n" +
			"example.com/lib  v1.1.0   alice                           2026-03-01T12:02:00Z  2026-03-01T12:02:00Z  1      mod\n" +
			"example.com/lib  v1.1.0   spiffe://corp/ns/ci/sa/builder  2026-03-01T12:03:00Z  2026-03-01T12:03:00Z  1      zip\n"},
		{[]string{"who", "--dir", dir, "example.com/lib@>=v1.1.0"}, 0, "" +
			"MODULE           VERSION  IDENTITY                        FIRST                 LAST                  COUNT  KINDS\n" +
			"example.com/lib  v1.1.0   alice                           2026-03-01T12:02:00Z  2026-03-01T12:02:00Z  1      mod\n" +
			"example.com/lib  v1.1.0   spiffe://corp/ns/ci/sa/builder  2026-03-01T12:03:00Z  2026-03-01T12:03:00Z  1      zip\n"},
		{[]string{"who", "example.com/lib@v1.2.0", "--dir", dir}, 0, "MODULE  VERSION  IDENTITY  FIRST  LAST  COUNT  KINDS\n"},
		{[]string{"who", "example.com/lib@v1.2.0", "--dir", dir, "--json"}, 0, "[]\n"},
		{[]string{"affected", "example.com/lib", "--range", "<v1.1.0", "--dir", dir}, 0, "" +
			"MODULE           VERSION  IDENTITY  FIRST                 LAST                  COUNT  KINDS\n" +
			"example.com/lib  v1.0.0   alice     2026-03-01T12:00:00Z  2026-03-01T12:01:00Z  2      info,zip\n"},
		{[]string{"top", "--dir", dir}, 0, "" +
			"MODULE            FETCHES  VERSIONS  IDENTITIES\n" +
			"example.com/lib   4        2         2\n" +
			"example.com/tool  1        1         1\n"},
		{[]string{"top", "-n", "1", "--dir", dir}, 0, "" +
			"MODULE           FETCHES  VERSIONS  IDENTITIES\n" +
			"example.com/lib  4        2         2\n"},

		{[]string{"who", "--dir", dir}, 2, ""},
		{[]string{"who", "example.com/lib@<v1", "--dir", dir}, 2, ""},
		{[]string{"who", "not a module", "--dir", dir}, 2, ""},
		{[]string{"who", "example.com/lib", "-n", "3", "--dir", dir}, 2, ""},
		{[]string{"affected", "example.com/lib", "--dir", dir}, 2, ""},
		{[]string{"affected", "example.com/lib@v1.0.0", "--dir", dir}, 2, ""},
		{[]string{"top", "-n", "0", "--dir", dir}, 2, ""},
		{[]string{"top", "extra", "--dir", dir}, 2, ""},
		{[]string{"rebuild", "--dir", dir}, 2, ""},
		{[]string{"rebuild", file, "--json", "--dir", dir}, 2, ""},
		{[]string{"frobnicate"}, 2, ""},
		{[]string{"top", "--dir", filepath.Join(dir, "missing")}, 1, ""},
		{[]string{"rebuild", filepath.Join(dir, "missing.log"), "--dir", dir}, 1, ""},
	}
	for _, tt := range tests {
		var stdout, stderr bytes.Buffer
		args := append([]string{"inventory"}, tt.args...)
		code := run(t.Context(), args, &stdout, &stderr)
		if code != tt.code || stdout.String() != tt.want {
			t.Errorf("modgate %s = %d, stdout\n%s\nstderr %q; want %d, stdout\n%s", strings.Join(args, " "), code, stdout.String(), stderr.String(), tt.code, tt.want)
		}
	}
}

func TestInventoryJSON(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "inv")
	if code := run(t.Context(), []string{"inventory", "rebuild", writeInventoryAudit(t), "--dir", dir}, new(bytes.Buffer), new(bytes.Buffer)); code != 0 {
		t.Fatalf("rebuild = %d", code)
	}
	var stdout, stderr bytes.Buffer
	if code := run(t.Context(), []string{"inventory", "who", "example.com/lib@v1.0.0", "--json", "--dir", dir}, &stdout, &stderr); code != 0 {
		t.Fatalf("who --json = %d, %s", code, stderr.String())
	}
	var got []inventory.Fetch
	if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
		t.Fatalf("who --json: %v in %s", err, stdout.String())
	}
	if len(got) != 1 || got[0].Identity != "alice" || got[0].Count != 2 || fmt.Sprint(got[0].Kinds) != "[info zip]" {
		t.Errorf("who --json = %+v, want alice's 2 fetches of info and zip", got)
	}
	stdout.Reset()
	if code := run(t.Context(), []string{"inventory", "top", "--json", "--dir", dir}, &stdout, &stderr); code != 0 {
		t.Fatalf("top --json = %d, %s", code, stderr.String())
	}
	var top []inventory.ModuleCount
	if err := json.Unmarshal(stdout.Bytes(), &top); err != nil || len(top) != 2 || top[0].Module != "example.com/lib" {
		t.Errorf("top --json = %s (%v), want 2 modules, example.com/lib first", stdout.String(), err)
	}
}

// TestInventoryRebuildBrokenChain checks that rebuild refuses an audit log
// whose chain is broken, unless --unverified, and reports skipped lines.
func TestInventoryRebuildBrokenChain(t *testing.T) {
	file := writeInventoryAudit(t)
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(b), "\n")
	lines[2] = "garbage\n"
	if err := os.WriteFile(file, []byte(strings.Join(lines, "")), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "inv")
	var stdout, stderr bytes.Buffer
	if code := run(t.Context(), []string{"inventory", "rebuild", file, "--dir", dir}, &stdout, &stderr); code != 1 || !strings.Contains(stderr.String(), "--unverified") {
		t.Errorf("rebuild of a broken chain = %d, stderr %q; want 1 and advice", code, stderr.String())
	}
	if _, err := os.Stat(dir); err == nil {
		t.Errorf("rebuild of a broken chain created %s", dir)
	}
	stdout.Reset()
	stderr.Reset()
	if code := run(t.Context(), []string{"inventory", "rebuild", file, "--dir", dir, "--unverified"}, &stdout, &stderr); code != 0 {
		t.Fatalf("rebuild --unverified = %d, stderr %q", code, stderr.String())
	}
	if want := "1 lines skipped, not audit events: " + file + ":3\n"; !strings.HasSuffix(stdout.String(), want) {
		t.Errorf("rebuild --unverified printed %q, want it to end %q", stdout.String(), want)
	}
	if !strings.Contains(stderr.String(), "warning: audit chain broken") {
		t.Errorf("rebuild --unverified: stderr %q, want a warning", stderr.String())
	}
}
