package auditindex

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/modgate/modgate/audit"
	"github.com/modgate/modgate/inventory"
)

func TestQueryFilters(t *testing.T) {
	const n = 400
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	writeEvents(t, path, audit.FileOptions{MaxBytes: 30 << 10, Keep: 100}, 0, n)
	if files := logFiles(t, path); len(files) < 4 {
		t.Fatalf("the log has %d files, want several", len(files))
	}
	ix := openIndex(t, Options{Path: path})

	events := make([]*audit.Event, n)
	for i := range events {
		events[i] = genEvent(i)
	}
	contains := func(s, sub string) bool { return strings.Contains(strings.ToLower(s), sub) }
	status := func(e *audit.Event) int {
		if e.HTTP == nil {
			return 0
		}
		return e.HTTP.Response.StatusCode
	}
	tests := []struct {
		name  string
		q     Query
		match func(e *audit.Event) bool
	}{
		{"all", Query{}, func(*audit.Event) bool { return true }},
		{"module", Query{Module: "example.com/Mod3"}, func(e *audit.Event) bool { return e.Modgate.Module == "example.com/Mod3" }},
		{"module like, any case", Query{ModuleLike: "MOD3"}, func(e *audit.Event) bool { return contains(e.Modgate.Module, "mod3") }},
		{"module like a prefix", Query{ModuleLike: "example.com/"}, func(e *audit.Event) bool { return e.Modgate.Module != "" }},
		{"module and module like", Query{Module: "example.com/Mod3", ModuleLike: "mod3"}, func(e *audit.Event) bool { return e.Modgate.Module == "example.com/Mod3" }},
		{"module and module like disagree", Query{Module: "example.com/Mod3", ModuleLike: "mod4"}, func(*audit.Event) bool { return false }},
		{"unknown module", Query{Module: "example.com/nope"}, func(*audit.Event) bool { return false }},
		{"module is not a substring match", Query{Module: "Mod3"}, func(*audit.Event) bool { return false }},
		{"version", Query{Version: "v1.0.2"}, func(e *audit.Event) bool { return e.Modgate.Version == "v1.0.2" }},
		{"identity: user", Query{IdentityLike: "alice1"}, func(e *audit.Event) bool { return contains(inventory.Identity(e), "alice1") }},
		{"identity: SAN", Query{IdentityLike: "builder-2"}, func(e *audit.Event) bool { return contains(inventory.Identity(e), "builder-2") }},
		{"identity: subject", Query{IdentityLike: "cn=host-1"}, func(e *audit.Event) bool { return contains(inventory.Identity(e), "cn=host-1") }},
		{"identity: address", Query{IdentityLike: "10.0.1."}, func(e *audit.Event) bool { return contains(inventory.Identity(e), "10.0.1.") }},
		{"decisions", Query{Decisions: []string{"deny", "reject"}}, func(e *audit.Event) bool { return e.Modgate.Decision == "deny" || e.Modgate.Decision == "reject" }},
		{"no decision", Query{Decisions: []string{""}}, func(e *audit.Event) bool { return e.Modgate.Decision == "" }},
		{"unknown decision", Query{Decisions: []string{"maybe"}}, func(*audit.Event) bool { return false }},
		{"rule", Query{Rule: "rule-1"}, func(e *audit.Event) bool { return e.Modgate.Rule == "rule-1" }},
		{"kinds", Query{Kinds: []string{"zip", "info"}}, func(e *audit.Event) bool { return e.Modgate.Kind == "zip" || e.Modgate.Kind == "info" }},
		{"status", Query{Status: 403}, func(e *audit.Event) bool { return status(e) == 403 }},
		{"status class 4xx", Query{Status: 400, StatusClass: true}, func(e *audit.Event) bool { return status(e) >= 400 && status(e) < 500 }},
		{"status class 5xx", Query{Status: 500, StatusClass: true}, func(e *audit.Event) bool { return status(e) >= 500 && status(e) < 600 }},
		{"action", Query{Action: "config-reload"}, func(e *audit.Event) bool { return e.Event.Action == "config-reload" }},
		{"verification", Query{HasVerification: true}, func(e *audit.Event) bool { return e.Modgate.Verification != "" }},
		{"since, until", Query{Since: t0.Add(100 * time.Second), Until: t0.Add(150 * time.Second)}, func(e *audit.Event) bool {
			return !e.Timestamp.Before(t0.Add(100*time.Second)) && e.Timestamp.Before(t0.Add(150*time.Second))
		}},
		{"since", Query{Since: t0.Add(390 * time.Second)}, func(e *audit.Event) bool { return !e.Timestamp.Before(t0.Add(390 * time.Second)) }},
		{"combined", Query{ModuleLike: "mod2", Decisions: []string{"deny"}, Since: t0.Add(50 * time.Second), Status: 403}, func(e *audit.Event) bool {
			return contains(e.Modgate.Module, "mod2") && e.Modgate.Decision == "deny" && !e.Timestamp.Before(t0.Add(50*time.Second)) && status(e) == 403
		}},
		{"small pages", Query{Limit: 7, Kinds: []string{"mod"}}, func(e *audit.Event) bool { return e.Modgate.Kind == "mod" }},
		{"one a page", Query{Limit: 1, Rule: "grammar"}, func(e *audit.Event) bool { return e.Modgate.Rule == "grammar" }},
		{"from a cursor", Query{Before: 123, Limit: 40}, func(*audit.Event) bool { return true }},
		{"from a cursor, filtered", Query{Before: 300, Decisions: []string{"serve"}}, func(e *audit.Event) bool { return e.Modgate.Decision == "serve" }},
		{"before everything", Query{Before: 1}, func(*audit.Event) bool { return true }},
		{"a large page", Query{Limit: 10000}, func(*audit.Event) bool { return true }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var want []uint64
			matched := 0
			for i := n - 1; i >= 0; i-- {
				if tt.match(events[i]) {
					matched++
					if seq := uint64(i + 1); tt.q.Before == 0 || seq < tt.q.Before {
						want = append(want, seq)
					}
				}
			}
			got, first := pageAll(t, ix, tt.q)
			if first.Matched != matched {
				t.Errorf("Matched = %d, want %d", first.Matched, matched)
			}
			if !slices.Equal(got, want) {
				t.Errorf("paged seqs = %v\nwant %v", got, want)
			}
			limit := cmpOr(min(tt.q.Limit, MaxLimit), DefaultLimit)
			if wantLen := min(len(want), limit); len(first.Events) != wantLen {
				t.Errorf("first page has %d events, want %d", len(first.Events), wantLen)
			}
			if c := first.Chain; c.Problem != nil || c.VerifiedFrom != 1 || c.VerifiedThrough != n || !c.Complete {
				t.Errorf("Chain = %+v (problem %v), want verified from 1 through %d, complete", c, c.Problem, n)
			}
			for _, e := range first.Events {
				orig := events[e.Seq-1]
				if e.Changed || !e.Verified || e.File == "" || e.Line < 1 {
					t.Errorf("seq %d: Changed %v, Verified %v, at %s:%d; want unchanged, verified, at a line", e.Seq, e.Changed, e.Verified, e.File, e.Line)
				}
				if e.Identity != inventory.Identity(orig) || e.Event.Modgate != orig.Modgate || !e.Event.Timestamp.Equal(orig.Timestamp) || e.Event.Chain == nil || e.Event.Chain.Seq != e.Seq {
					t.Errorf("seq %d = %+v, identity %q; want %+v, identity %q", e.Seq, e.Event, e.Identity, orig, inventory.Identity(orig))
				}
				if lines := fileLines(t, e.File); e.Line > len(lines) || !strings.Contains(string(lines[e.Line-1]), `"seq":`+strconv.FormatUint(e.Seq, 10)+`,`) {
					t.Errorf("seq %d is not at %s:%d", e.Seq, e.File, e.Line)
				}
			}
		})
	}
}

func cmpOr(a, b int) int {
	if a != 0 {
		return a
	}
	return b
}

func TestQueryErrors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	writeEvents(t, path, audit.FileOptions{}, 0, 3)
	ix := openIndex(t, Options{Path: path})
	for _, q := range []Query{
		{Limit: -1},
		{Status: -3},
		{Status: 70000},
		{Status: 42, StatusClass: true},
		{Since: t0, Until: t0},
	} {
		if _, err := ix.Query(context.Background(), q); err == nil {
			t.Errorf("Query(%+v) succeeded, want an error", q)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := ix.Query(ctx, Query{}); !errors.Is(err, context.Canceled) {
		t.Errorf("Query(cancelled) = %v, want context.Canceled", err)
	}
	if err := ix.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := ix.Query(context.Background(), Query{}); !errors.Is(err, ErrClosed) {
		t.Errorf("Query after Close = %v, want ErrClosed", err)
	}
	if err := ix.Refresh(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Refresh after Close = %v, want ErrClosed", err)
	}
	if err := ix.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
}

func TestOpenChecksOptions(t *testing.T) {
	for _, opts := range []Options{
		{},
		{Path: "x", MaxEvents: -1},
		{Path: "x", Interval: -time.Second},
	} {
		if ix, err := Open(opts); err == nil {
			ix.Close()
			t.Errorf("Open(%+v) succeeded, want an error", opts)
		}
	}
}
