package integration

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestChaosClockStep: the gateway's wall clock jumps 2 hours forward
// under load (MODGATE_FAULT_CLOCK=1, POST /debug/clock), as an NTP step
// or a resumed VM would do. Query answers (@v/list, TTL 60s) expire and
// are fetched again; immutable artifacts stay hits; tokens keep working
// (they do not expire); the cooldown counts its anchors' age on this
// clock, so a version its 1h cooldown held becomes servable: the
// documented trust in the local clock, shown. Nothing unverified is
// served and the audit chain verifies across the step.
func TestChaosClockStep(t *testing.T) {
	public, private := upstreams(t)
	tokens := t.TempDir() + "/tokens"
	ci := newToken(t, tokens, "ci-builder", "ci")
	g := startModgateEnv(t, gatewayConfig(public, private)+fmt.Sprintf(`
auth:
  tokens: %s
cache:
  ttl: {query: 60s, negative: 5m}
policy:
  cooldown:
    min_age: 1h
    exempt: [example.com/a]
`, tokens), []string{"MODGATE_FAULT_CLOCK=1"})

	client := &http.Client{Timeout: 10 * time.Second}
	type answer struct {
		status      int
		cache, body string
	}
	get := func(path string) answer {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), "GET", g.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+ci)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return answer{status: resp.StatusCode, cache: resp.Header.Get("X-Modgate-Cache"), body: string(b)}
	}
	const (
		list = "/example.com/a/@v/list"
		zip  = "/example.com/a/@v/v1.1.0.zip"
		held = "/example.com/b/@v/v1.0.0.zip" // not exempt: the cooldown decides
	)
	unverified := 0
	checkZip := func(a answer) {
		if a.status == 200 && a.body != string(clockOrigin(t, public.URL+zip)) {
			unverified++
		}
	}
	for _, p := range []string{list, list, zip, zip} {
		a := get(p)
		if a.status != 200 {
			t.Fatalf("warming %s = %d %s", p, a.status, a.body)
		}
		if p == zip {
			checkZip(a)
		}
	}
	if a := get(list); a.cache != "hit" {
		t.Fatalf("list before the step: cache %q, want hit", a.cache)
	}
	before := get(held)
	if before.status != http.StatusForbidden || !strings.Contains(before.body, "cooldown") {
		t.Fatalf("%s before the step = %d %q, want the cooldown's 403", held, before.status, before.body)
	}

	// The step: 2 hours forward, while a few clients keep asking.
	req, err := http.NewRequestWithContext(t.Context(), "POST", g.Admin+"/debug/clock?step=2h", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+g.adminToken(t))
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("POST /debug/clock?step=2h = %d", resp.StatusCode)
	}
	stepped := time.Now()

	afterList := get(list)
	recovery := time.Since(stepped)
	afterZip := get(zip)
	checkZip(afterZip)
	afterHeld := get(held)
	if afterList.status != 200 || afterList.cache == "hit" {
		t.Errorf("list after a 2h step = %d, cache %q; want 200 fetched again (its 60s TTL is past)", afterList.status, afterList.cache)
	}
	if afterZip.status != 200 || afterZip.cache != "hit" {
		t.Errorf("zip after a 2h step = %d, cache %q; want a 200 hit (immutable)", afterZip.status, afterZip.cache)
	}
	if afterHeld.status != 200 {
		t.Errorf("%s after a 2h step = %d %q; want 200: the anchor modgate recorded is now 2h old on its clock", held, afterHeld.status, afterHeld.body)
	}
	if afterHeld.status == 200 && afterHeld.body != string(clockOrigin(t, public.URL+held)) {
		unverified++
	}
	g.waitEvents(t, 10) // 9 requests and the clock-step event
	recordChaos(t, chaosRow{
		Group:      "clock",
		Fault:      "wall clock stepped 2h forward",
		ClientSaw:  fmt.Sprintf("list %d (%s, refetched: TTL past), zip %d (%s), token accepted, %s %d before and %d after", afterList.status, afterList.cache, afterZip.status, afterZip.cache, held, before.status, afterHeld.status),
		Unverified: unverified,
		ChainOK:    chainVerifies(t, g),
		Recovery:   recovery,
		Note:       "TTLs count on the stepped clock; tokens do not expire; the cooldown trusts the local clock (package cooldown), so a 2h step released a version its 1h cooldown held; no leases without coordination",
	})
}

// clockOrigin is the upstream's own body at url, to compare with what the
// gateway served.
func clockOrigin(t *testing.T, url string) []byte {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s from the upstream: %d %v", url, resp.StatusCode, err)
	}
	return b
}
