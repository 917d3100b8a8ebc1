package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/modgate/modgate/internal/browsertest"
	"github.com/modgate/modgate/inventory"
)

// TestConsole drives a real modgate (hits, misses, a policy denial, a
// vulnerability block, a malformed request, a dead upstream that drains),
// then reads every console page in headless Chromium: it logs in with the
// admin token, checks each page's figures against /metrics, `modgate
// inventory` and `modgate policy check` for the same state, uses the
// filters and the policy form, and saves a screenshot of each page
// (make screenshots keeps them for the README).
func TestConsole(t *testing.T) {
	public, private := upstreams(t)
	dir := t.TempDir()
	db := filepath.Join(dir, "vulndb")
	writeVulnDB(t, db, time.Now().Add(-time.Hour))
	tokens := filepath.Join(dir, "tokens")
	alice := newToken(t, tokens, "alice@corp", "dev")
	ci := newToken(t, tokens, "ci-builder", "ci")

	// A public upstream that is down from the start: the probes drain it.
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadURL := "http://" + dead.Addr().String()
	dead.Close()

	config := fmt.Sprintf(`
upstreams:
  - {name: public, url: %s}
  - {name: corp, url: %s, private: true}
  - {name: mirror-2, url: %s}
private: ["corp.example"]
sumdb: [%s]
sumdb_key: %s
health: {probe_path: /example.com/a/@v/list, interval: 100ms, timeout: 500ms, fail_threshold: 2, recover_threshold: 2, drain_period: 10m}
auth:
  tokens: %s
vulndb:
  url: file://%s
policy:
  rules:
    - name: no-old-b
      match: example.com/b
      versions: "<v2.0.0"
      action: deny
      reason: example.com/b before v2 is retired; use example.com/c/v2
  vulnerabilities:
    action: deny
console:
  sample_interval: 200ms
`, public.URL, private.URL, deadURL, public.SumDB, public.VerifierKey, tokens, db)
	g := startModgate(t, config)
	cfgFile := filepath.Join(filepath.Dir(g.audit), "modgate.yaml")

	client := &http.Client{Timeout: 10 * time.Second}
	get := func(token, path string) int {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), "GET", g.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	traffic := []struct {
		token, path string
		want        int
	}{
		{alice, "/example.com/a/@v/v1.1.0.info", 200}, // misses
		{alice, "/example.com/a/@v/v1.1.0.mod", 200},
		{alice, "/example.com/a/@v/v1.1.0.zip", 200},
		{ci, "/example.com/a/@v/v1.1.0.mod", 200}, // hits
		{ci, "/example.com/a/@v/v1.1.0.zip", 200},
		{ci, "/example.com/c/v2/@v/v2.0.0.zip", 200},
		{alice, "/example.com/b/@v/v1.0.0.zip", 403}, // policy: no-old-b
		{ci, "/example.com/b/@v/v1.0.0.info", 403},
		{alice, "/example.com/a/@v/v1.0.0.zip", 403}, // vulnerabilities: GO-2026-0101
		{"", "/example.com/a/@v/v1.1.0.info", 200},   // anonymous: the client's address
		{"", "/Example.com/%3Cscript%3E/@v/list", 400},
	}
	for _, r := range traffic {
		if got := get(r.token, r.path); got != r.want {
			t.Fatalf("GET %s = %d, want %d; log:\n%s", r.path, got, r.want, g.logText())
		}
	}
	// Warm hits spread over two seconds, so that the charts, sampled every
	// 200 ms, have something to show.
	for i := range 20 {
		if got := get(ci, "/example.com/a/@v/v1.1.0.mod"); got != 200 {
			t.Fatalf("warm hit %d = %d", i, got)
		}
		time.Sleep(100 * time.Millisecond)
	}
	g.waitEvents(t, len(traffic)+20)
	waitFor(t, 10*time.Second, func() bool {
		return scrape(t, g.Admin)[`modgate_upstream_state{state="draining",upstream="mirror-2"}`] == 1
	}, "mirror-2 to drain")

	ctx := browsertest.New(t)
	// Each step gets 20 seconds, and says where the page was if it fails.
	do := func(t *testing.T, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		if err := chromedp.Do(sctx, actions...); err != nil {
			loc, _ := chromedp.Run(ctx, chromedp.Location())
			html, _ := chromedp.Run(ctx, chromedp.OuterHTML(chromedp.CSS("main")))
			t.Fatalf("%v (at %s):\n%s", err, loc, html)
		}
	}
	text := func(t *testing.T, sel string) string {
		t.Helper()
		sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		s, err := chromedp.Run(sctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return strings.TrimSpace(s)
	}
	// submit clicks what navigates (a form's button, a link) and waits
	// for the page it loads.
	submit := func(t *testing.T, sel string) {
		t.Helper()
		sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		resp, err := chromedp.RunResponse(sctx, chromedp.Click(chromedp.CSS(sel)))
		if err != nil {
			loc, _ := chromedp.Run(ctx, chromedp.Location())
			t.Fatalf("click %s: %v (at %s)", sel, err, loc)
		}
		if resp.Status >= 500 {
			t.Fatalf("click %s: the page loaded is a %d", sel, resp.Status)
		}
	}
	texts := func(t *testing.T, sel string) []string {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll(`+strconv.Quote(sel)+`), e => e.innerText.trim())`))
		if err != nil {
			t.Fatalf("texts of %s: %v", sel, err)
		}
		return s
	}

	t.Run("login", func(t *testing.T) {
		do(t, chromedp.Navigate(g.Admin+"/ui/"), chromedp.WaitVisible(chromedp.CSS("#token")))
		browsertest.Screenshot(t, ctx, "login")
		do(t, chromedp.SendKeys(chromedp.CSS("#token"), "not-the-token"))
		submit(t, "#login")
		if got := text(t, "#login-error"); !strings.Contains(got, "not the admin token") {
			t.Errorf("login with a wrong token: %q", got)
		}
		do(t, chromedp.SetValue(chromedp.CSS("#token"), g.adminToken(t)))
		submit(t, "#login")
		do(t, chromedp.WaitVisible(chromedp.CSS("#requests-total")))
	})

	t.Run("overview", func(t *testing.T) {
		do(t, chromedp.Navigate(g.Admin+"/ui/"), chromedp.WaitVisible(chromedp.CSS("#requests-total")))
		m := scrape(t, g.Admin)
		if got, want := text(t, "#requests-total"), num(sum(m, `^modgate_requests_total\{`)); got != want {
			t.Errorf("requests on the page = %s, /metrics says %s", got, want)
		}
		hits := sum(m, `^modgate_requests_total\{.*cache="hit"`)
		lookups := sum(m, `^modgate_requests_total\{`) - sum(m, `^modgate_requests_total\{.*cache="bypass"`)
		if got, want := text(t, "#hit-ratio"), strconv.FormatFloat(100*hits/lookups, 'f', 1, 64)+" %"; got != want {
			t.Errorf("hit ratio on the page = %s, /metrics says %s (%v hits of %v lookups)", got, want, hits, lookups)
		}
		rows := texts(t, "#refusals-by-rule tbody tr")
		for _, rule := range []string{"no-old-b", "vulnerability", "grammar"} {
			want := rule + "\t" + num(sum(m, `^modgate_refusals_total\{rule="`+rule+`"\}`))
			if !slices.Contains(rows, want) {
				t.Errorf("refusals by rule = %q, want a row %q (from /metrics)", rows, want)
			}
		}
		ups := texts(t, "#upstreams tbody tr")
		want := []string{"public\t" + public.URL + "\tpublic\thealthy", "mirror-2\t" + deadURL + "\tpublic\tdraining", "corp\t" + private.URL + "\tprivate\thealthy"}
		for i, w := range want {
			if i >= len(ups) || !strings.HasPrefix(ups[i], w) {
				t.Errorf("upstreams = %q, want rows starting %q", ups, want)
				break
			}
		}
		lines, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("figure.chart svg polyline").length`))
		if err != nil || lines < 2 {
			t.Errorf("%d charts with a line (%v), want at least 2: requests, hit ratio", lines, err)
		}
		if att := texts(t, ".attention"); len(att) == 0 || !strings.Contains(strings.Join(att, " "), "mirror-2 is draining") {
			t.Errorf("attention notes = %q, want one for mirror-2", att)
		}
		browsertest.Screenshot(t, ctx, "overview")
	})

	t.Run("modules", func(t *testing.T) {
		do(t, chromedp.Navigate(g.Admin+"/ui/modules"), chromedp.WaitVisible(chromedp.CSS("#q")),
			chromedp.SendKeys(chromedp.CSS("#q"), "example.com/a"))
		submit(t, "#search")
		cli := inventoryCLI[[]inventory.ModuleCount](t, g, "top", "-n", "100")
		var want []string
		for _, mc := range cli {
			if strings.Contains(mc.Module, "example.com/a") {
				want = append(want, fmt.Sprintf("%s\t%d\t%d\t%d", mc.Module, mc.Count, mc.Versions, mc.Identities))
			}
		}
		if got := texts(t, "#results tbody tr"); !slices.Equal(got, want) || len(want) == 0 {
			t.Errorf("search results = %q, want %q (modgate inventory top)", got, want)
		}
		submit(t, "#results tbody a")
		fetches := inventoryCLI[[]inventory.Fetch](t, g, "who", "example.com/a")
		var count int64
		var ids []string
		for _, f := range fetches {
			if f.Version == "v1.1.0" {
				count += f.Count
				ids = append(ids, f.Identity)
			}
		}
		row := text(t, "#versions tbody tr")
		for _, want := range append([]string{"v1.1.0", "zip mod info", "checksum database", strconv.FormatInt(count, 10), "none known", "allow"}, ids...) {
			if !strings.Contains(row, want) {
				t.Errorf("the v1.1.0 row %q lacks %q (modgate inventory who: %d fetches by %q)", row, want, count, ids)
			}
		}
		browsertest.Screenshot(t, ctx, "modules")
	})

	t.Run("refusals", func(t *testing.T) {
		do(t, chromedp.Navigate(g.Admin+"/ui/refusals"), chromedp.WaitVisible(chromedp.CSS("#events")))
		refused := sum(scrape(t, g.Admin), `^modgate_refusals_total\{`)
		if got := text(t, "#matched"); !strings.HasPrefix(got, num(refused)+" matching") || refused != 4 {
			t.Errorf("refusals page: %q, /metrics counts %v refusals", got, refused)
		}
		browsertest.Screenshot(t, ctx, "refusals")
		do(t, chromedp.SetValue(chromedp.CSS("#rule"), "vulnerability"))
		submit(t, "#filter")
		rows := texts(t, "#events tbody tr")
		if len(rows) != 1 || !strings.Contains(rows[0], "GO-2026-0101") || !strings.Contains(rows[0], "alice@corp") {
			t.Errorf("refusals by rule vulnerability = %q, want alice's one block of GO-2026-0101", rows)
		}
		do(t, chromedp.Navigate(g.Admin+"/ui/refusals"), chromedp.WaitVisible(chromedp.CSS("#identity")),
			chromedp.SendKeys(chromedp.CSS("#identity"), "ci-builder"))
		submit(t, "#filter")
		rows = texts(t, "#events tbody tr")
		if len(rows) != 1 || !strings.Contains(rows[0], "no-old-b") {
			t.Errorf("refusals of ci-builder = %q, want its one no-old-b denial", rows)
		}
	})

	t.Run("audit", func(t *testing.T) {
		do(t, chromedp.Navigate(g.Admin+"/ui/audit"), chromedp.WaitVisible(chromedp.CSS("#events")))
		events := g.events(t)
		if got := text(t, "#matched"); !strings.HasPrefix(got, strconv.Itoa(len(events))+" matching") {
			t.Errorf("audit page: %q, the audit file holds %d events", got, len(events))
		}
		newest := events[len(events)-1].Chain.Seq
		if got := text(t, "#chain"); !strings.Contains(got, "verifies") || !strings.Contains(got, fmt.Sprintf("(%d)", newest)) {
			t.Errorf("chain statement = %q, want it verified through the newest event, %d", got, newest)
		}
		browsertest.Screenshot(t, ctx, "audit")
		do(t, chromedp.SetValue(chromedp.CSS("#decision"), "deny"), chromedp.SetValue(chromedp.CSS("#status"), "4xx"))
		submit(t, "#filter")
		denied := 0
		for _, ev := range events {
			if ev.Modgate.Decision == "deny" && ev.HTTP != nil && ev.HTTP.Response.StatusCode/100 == 4 {
				denied++
			}
		}
		if got := text(t, "#matched"); !strings.HasPrefix(got, strconv.Itoa(denied)+" matching") || denied != 3 {
			t.Errorf("audit filtered to deny, 4xx: %q; the file holds %d such events (want 3)", got, denied)
		}
	})

	t.Run("policy", func(t *testing.T) {
		do(t, chromedp.Navigate(g.Admin+"/ui/policy"), chromedp.WaitVisible(chromedp.CSS("#rules")))
		if got := text(t, "#rules tbody"); !strings.Contains(got, "no-old-b") || !strings.Contains(got, "example.com/b") {
			t.Errorf("rules in force = %q, want no-old-b", got)
		}
		if got := text(t, "#policy-source"); !strings.Contains(got, cfgFile) {
			t.Errorf("policy source = %q, want %s", got, cfgFile)
		}
		for _, tc := range []struct{ target, as string }{
			{"example.com/b@v1.0.0", "ci-builder"},
			{"example.com/c/v2@v2.0.0", ""},
		} {
			do(t, chromedp.Navigate(g.Admin+"/ui/policy"), chromedp.WaitVisible(chromedp.CSS("#target")),
				chromedp.SendKeys(chromedp.CSS("#target"), tc.target), chromedp.SendKeys(chromedp.CSS("#as"), tc.as))
			submit(t, "#check")
			args := []string{"policy", "check", tc.target, "--config", cfgFile}
			if tc.as != "" {
				args = append(args, "--as", tc.as)
			}
			cmd := exec.Command(modgateBin, args...)
			cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "GOENV=off", "GOFLAGS="}
			out, _ := cmd.Output() // exit status 1 for a denial
			if got, want := text(t, "#verdict"), strings.TrimSpace(string(out)); got != want || want == "" {
				t.Errorf("policy form for %s as %q = %q, modgate policy check says %q", tc.target, tc.as, got, want)
			}
		}
		browsertest.Screenshot(t, ctx, "policy")
	})
}

// inventoryCLI runs `modgate inventory ARGS --json` on g's inventory.
func inventoryCLI[T any](t *testing.T, g *gatewayProc, args ...string) T {
	t.Helper()
	dir := filepath.Join(filepath.Dir(g.audit), "cache", "inventory")
	var v T
	// The server flushes its inventory every second.
	waitFor(t, 5*time.Second, func() bool {
		out, err := exec.Command(modgateBin, append(append([]string{"inventory"}, args...), "--dir", dir, "--json")...).Output()
		return err == nil && json.Unmarshal(out, &v) == nil && !isEmpty(v)
	}, "the inventory to be flushed")
	return v
}

func isEmpty(v any) bool {
	switch v := v.(type) {
	case []inventory.ModuleCount:
		return len(v) == 0
	case []inventory.Fetch:
		return len(v) == 0
	}
	return false
}

// num writes a metric's value as the console does.
func num(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }
