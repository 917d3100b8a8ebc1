package console

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/modgate/modgate/audit"
	"github.com/modgate/modgate/health"
	"github.com/modgate/modgate/internal/browsertest"
)

// hostile is markup that would run script if a page let it through.
const hostile = `"><img src=x onerror="document.title='pwned'"><script>document.title='pwned'</script>`

// TestHostileInput: identities (a client certificate's subject), rule
// names, reasons and upstream names that hold markup are shown as text on
// every page, in a real browser, and nothing of them runs.
func TestHostileInput(t *testing.T) {
	s := newTestState(t, Config{AnonymousLoopback: true})
	s.gateway.upstreams = []health.Status{{Name: "up" + hostile, URL: "http://127.0.0.1:1", State: health.Draining, Since: time.Now()}}
	s.gateway.policy = Policy{Default: "allow", Rules: []Rule{{Name: "rule" + hostile, Match: "example.com", Action: "deny", Reason: hostile}}}
	fetch := event("", "serve", "", "example.com/a", "v1.0.0", "zip", 200)
	fetch.TLS = &audit.TLS{Client: audit.TLSClient{Subject: "CN=" + hostile}}
	fetch.User = nil
	deny := event("", "deny", "rule"+hostile, "example.com/a", "v1.1.0", "zip", 403)
	deny.TLS = &audit.TLS{Client: audit.TLSClient{Subject: "CN=" + hostile}}
	deny.User = nil
	deny.Event.Reason = hostile
	s.record(t, fetch, deny)
	if err := s.console.cfg.History.Sample(); err != nil {
		t.Fatal(err)
	}

	srv := httptest.NewServer(s.console.Handler())
	defer srv.Close()
	ctx := browsertest.New(t)
	for _, page := range []struct{ path, sel, want string }{
		{"/ui/", "#upstreams", "up" + hostile},
		{"/ui/", "#refusals-by-rule", "rule" + hostile},
		{"/ui/modules?module=example.com/a", "#versions", "CN=" + hostile},
		{"/ui/refusals", "#events", "CN=" + hostile},
		{"/ui/audit", "#events", hostile},
		{"/ui/policy", "#rules", "rule" + hostile},
		{"/ui/policy?target=" + "example.com/a@v1.0.0&identity=" + strings.ReplaceAll(hostile, "&", "%26"), "#as", ""},
	} {
		if err := chromedp.Do(ctx, chromedp.Navigate(srv.URL+page.path), chromedp.WaitReady(chromedp.CSS(page.sel))); err != nil {
			t.Fatalf("%s: %v", page.path, err)
		}
		title, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.title`))
		if err != nil {
			t.Fatal(err)
		}
		imgs, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("main img, main script").length`))
		if err != nil {
			t.Fatal(err)
		}
		if title == "pwned" || imgs != 0 {
			t.Errorf("%s: title %q, %d img/script elements in the page: the hostile input was taken as markup", page.path, title, imgs)
		}
		if page.want == "" {
			continue
		}
		text, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(page.sel)))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(text, page.want) {
			t.Errorf("%s: %s does not show %q as text:\n%s", page.path, page.sel, page.want, text)
		}
	}
	browsertest.Screenshot(t, ctx, "hostile")
}
