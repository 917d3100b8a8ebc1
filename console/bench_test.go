package console

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/modgate/modgate/audit"
	"github.com/modgate/modgate/auditindex"
	"github.com/modgate/modgate/console/history"
	"github.com/modgate/modgate/inventory"
	"github.com/modgate/modgate/metrics"
)

// benchEvents is the audit log's size the pages must answer at within
// 200 ms.
const benchEvents = 1_000_000

// writeBenchLog writes an audit log of n request events with a valid hash
// chain, as the audit Writer would, and feeds them to inv: module paths
// example.com/orgA/modB (A < 97, B < 5000: 485,000 of them at a million
// events, a harsh case for the module search), 4 versions, 2,000
// identities, one event in 20 a denial.
func writeBenchLog(b *testing.B, file string, n int, inv *inventory.Inventory) {
	b.Helper()
	f, err := os.Create(file)
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	prev := audit.GenesisPrev
	start := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	kinds := []string{"info", "mod", "zip", "list"}
	for i := range n {
		mod := fmt.Sprintf("example.com/org%d/mod%d", i%97, i%5000)
		version := fmt.Sprintf("v1.%d.0", i%4)
		kind := kinds[i%len(kinds)]
		decision, rule, status, reason := "serve", "", 200, ""
		switch {
		case i%20 == 7:
			decision, rule, status, reason = "deny", fmt.Sprintf("rule-%d", i%9), 403, "denied by policy"
		case i%20 == 13:
			decision = "forward"
		}
		ev := audit.NewRequest(audit.Request{
			Start:    start.Add(time.Duration(i) * 50 * time.Millisecond),
			Duration: 3 * time.Millisecond,
			ID:       fmt.Sprintf("%016x", i),
			Method:   "GET",
			Target:   "/" + mod + "/@v/" + version + "." + kind,
			Status:   status,
			Bytes:    1234,
			Reason:   reason,
			Client:   audit.Client{User: fmt.Sprintf("user%d@corp.example", i%2000), Roles: []string{"dev"}},
			Modgate: audit.ModgateGroup{
				Module: mod, Version: version, Kind: kind, Decision: decision, Rule: rule,
				Upstream: "public", Cache: "hit",
			},
		})
		if decision == "forward" {
			ev.Modgate.Verification = "verified"
		}
		inv.Add(ev)
		ev.Chain = &audit.Chain{Seq: uint64(i + 1), Prev: prev}
		line, err := json.Marshal(ev)
		if err != nil {
			b.Fatal(err)
		}
		sum := sha256.Sum256(line)
		prev = hex.EncodeToString(sum[:])
		w.Write(line)
		w.WriteByte('\n')
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkPages1M times each page against an audit log of a million
// events (and an inventory of them), through the console's handler as a
// browser would ask; ms/page is the figure (the goal: under 200 ms).
func BenchmarkPages1M(b *testing.B) {
	if testing.Short() {
		b.Skip("writes a million audit events")
	}
	dir := b.TempDir()
	file := filepath.Join(dir, "audit.jsonl")
	inv, err := inventory.Open(inventory.Options{})
	if err != nil {
		b.Fatal(err)
	}
	writeBenchLog(b, file, benchEvents, inv)
	built := time.Now()
	ix, err := auditindex.Open(auditindex.Options{Path: file, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer ix.Close()
	for ix.Stats().Building || ix.Stats().Events < benchEvents {
		if err := ix.Refresh(context.Background()); err != nil {
			b.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.Logf("indexed %d events in %s", ix.Stats().Events, time.Since(built).Round(time.Millisecond))
	m := metrics.New()
	c, err := New(Config{Token: testToken, History: history.New(m.Gatherer(), history.Options{}), Gateway: fakeGateway{}, Inventory: inv, Audit: ix, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	h := c.Handler()
	for _, page := range []struct{ name, path string }{
		{"audit", "/ui/audit"},
		{"audit-identity", "/ui/audit?identity=user1234%40corp"},
		{"audit-module-deny-4xx", "/ui/audit?module=org5%2Fmod1200&decision=deny&status=4xx"},
		{"audit-old-page", "/ui/audit?before=1000"},
		{"audit-time-range", "/ui/audit?since=2026-11-01T01:00&until=2026-11-01T02:00"},
		{"refusals", "/ui/refusals"},
		{"refusals-rule", "/ui/refusals?rule=rule-3"},
		{"modules-top", "/ui/modules"},
		{"modules-search", "/ui/modules?q=mod12"},
		{"modules-module", "/ui/modules?module=example.com%2Forg5%2Fmod1200"},
		{"overview", "/ui/"},
		{"policy", "/ui/policy?target=example.com%2Forg5%2Fmod1200%40v1.0.0"},
	} {
		b.Run(page.name, func(b *testing.B) {
			var worst time.Duration
			for b.Loop() {
				req := httptest.NewRequest("GET", page.path, nil)
				req.Header.Set("Authorization", "Bearer "+testToken)
				w := httptest.NewRecorder()
				t0 := time.Now()
				h.ServeHTTP(w, req)
				worst = max(worst, time.Since(t0))
				if w.Code != http.StatusOK {
					b.Fatalf("GET %s = %d: %s", page.path, w.Code, w.Body.String())
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/page")
			b.ReportMetric(float64(worst.Microseconds())/1000, "worst-ms")
		})
	}
}
