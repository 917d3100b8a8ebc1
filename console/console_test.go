package console

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"html"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/modgate/modgate/audit"
	"github.com/modgate/modgate/auditindex"
	"github.com/modgate/modgate/console/history"
	"github.com/modgate/modgate/health"
	"github.com/modgate/modgate/inventory"
	"github.com/modgate/modgate/metrics"
)

const testToken = "0123456789abcdef0123456789abcdef"

// fakeGateway answers as a gateway with a fixed state would.
type fakeGateway struct {
	upstreams []health.Status
	policy    Policy
}

func (f fakeGateway) Upstreams() []health.Status { return f.upstreams }
func (f fakeGateway) Cached(mod, version string) Cached {
	return Cached{Zip: version == "v1.0.0", Mod: true}
}
func (f fakeGateway) Vulnerabilities(mod, version string) []string {
	if version == "v1.0.0" {
		return []string{"GO-2026-0001"}
	}
	return nil
}
func (f fakeGateway) Check(ctx context.Context, mod, version, name string) (Decision, error) {
	if strings.Contains(mod, "denied") {
		return Decision{Line: "deny " + mod + "@" + version + ` by rule "r"`, Rule: "r", Reason: "no"}, nil
	}
	return Decision{Allow: true, Line: "allow " + mod + "@" + version + " (default)", Rule: "default"}, nil
}
func (f fakeGateway) Policy() Policy { return f.policy }

// testState is a console over real sources: a metrics registry, an
// inventory and an audit file written by the audit package and indexed.
type testState struct {
	console *Console
	metrics *metrics.Metrics
	inv     *inventory.Inventory
	audit   *audit.Writer
	index   *auditindex.Index
	file    string
	gateway *fakeGateway
}

func newTestState(t testing.TB, cfg Config) *testState {
	t.Helper()
	s := &testState{metrics: metrics.New(), file: filepath.Join(t.TempDir(), "audit.jsonl"), gateway: &fakeGateway{}}
	var err error
	if s.inv, err = inventory.Open(inventory.Options{}); err != nil {
		t.Fatal(err)
	}
	if s.audit, err = audit.OpenFile(s.file, audit.FileOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.audit.Close() })
	if s.index, err = auditindex.Open(auditindex.Options{Path: s.file, Logger: slog.New(slog.DiscardHandler)}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.index.Close() })
	if cfg.Token == "" && !cfg.AnonymousLoopback {
		cfg.Token = testToken
	}
	cfg.History = history.New(s.metrics.Gatherer(), history.Options{})
	cfg.Gateway = s.gateway
	cfg.Inventory = s.inv
	cfg.Audit = s.index
	cfg.Logger = slog.New(slog.DiscardHandler)
	if s.console, err = New(cfg); err != nil {
		t.Fatal(err)
	}
	return s
}

// record writes ev to the audit file, the inventory and the metrics, as
// the gateway does, and waits until the index has it.
func (s *testState) record(t testing.TB, evs ...*audit.Event) {
	t.Helper()
	for _, ev := range evs {
		s.inv.Add(ev)
		if ev.Modgate.Decision == "deny" || ev.Modgate.Decision == "reject" {
			s.metrics.Refusal(ev.Modgate.Rule)
		}
		status := 0
		if ev.HTTP != nil {
			status = ev.HTTP.Response.StatusCode
		}
		s.metrics.Request(ev.Modgate.Kind, status, ev.Modgate.Cache, time.Millisecond)
		if err := s.audit.Record(ev); err != nil {
			t.Fatal(err)
		}
	}
	want := s.audit.Stats().Seq + uint64(s.audit.Stats().QueueEvents)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if err := s.index.Refresh(context.Background()); err != nil {
			t.Fatal(err)
		}
		if st := s.index.Stats(); st.NewestSeq >= want && s.audit.Stats().QueueEvents == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the index did not catch up with seq %d: %+v", want, s.index.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// event makes a request event.
func event(identity, decision, rule, module, version, kind string, status int) *audit.Event {
	ev := audit.NewRequest(audit.Request{
		Start:  time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC),
		Method: "GET",
		Target: "/" + module + "/@v/" + version + "." + kind,
		Status: status,
		Client: audit.Client{User: identity},
		Modgate: audit.ModgateGroup{
			Module: module, Version: version, Kind: kind, Decision: decision, Rule: rule, Cache: "miss",
		},
	})
	if decision == "serve" || decision == "forward" {
		ev.Modgate.Verification = "verified"
	}
	return ev
}

func get(t testing.TB, h http.Handler, path string, header ...string) *http.Response {
	t.Helper()
	req := httptest.NewRequest("GET", path, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w.Result()
}

func body(t testing.TB, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestAccess: the admin token, as a bearer token or through the login
// form's session, is the way in; anonymous loopback access only when
// configured.
func TestAccess(t *testing.T) {
	s := newTestState(t, Config{})
	h := s.console.Handler()

	for _, tc := range []struct {
		name       string
		header     []string
		wantStatus int
		wantLoc    string
	}{
		{"no credentials", nil, http.StatusSeeOther, "/ui/login?next=%2Fui%2Faudit"},
		{"wrong token", []string{"Authorization", "Bearer nope"}, http.StatusUnauthorized, ""},
		{"admin token", []string{"Authorization", "Bearer " + testToken}, http.StatusOK, ""},
		{"forged session", []string{"Cookie", sessionCookie + "=" + strings.Repeat("a", 64)}, http.StatusSeeOther, "/ui/login?next=%2Fui%2Faudit"},
	} {
		resp := get(t, h, "/ui/audit", tc.header...)
		if resp.StatusCode != tc.wantStatus || resp.Header.Get("Location") != tc.wantLoc {
			t.Errorf("%s: GET /ui/audit = %d, Location %q; want %d, %q", tc.name, resp.StatusCode, resp.Header.Get("Location"), tc.wantStatus, tc.wantLoc)
		}
	}

	login := func(token, next string) *http.Response {
		form := url.Values{"token": {token}, "next": {next}}
		req := httptest.NewRequest("POST", "/ui/login", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w.Result()
	}
	if resp := login("wrong", "/ui/"); resp.StatusCode != http.StatusUnauthorized || len(resp.Cookies()) != 0 {
		t.Errorf("login with a wrong token = %d with %d cookies; want 401, none", resp.StatusCode, len(resp.Cookies()))
	}
	resp := login(testToken, "//evil.example/")
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/" {
		t.Errorf("login to next=//evil.example/ = %d to %q; want 303 to /ui/", resp.StatusCode, resp.Header.Get("Location"))
	}
	cookies := resp.Cookies()
	if len(cookies) != 1 || !cookies[0].HttpOnly || cookies[0].SameSite != http.SameSiteStrictMode || cookies[0].Value == testToken {
		t.Fatalf("login cookies = %+v; want one HttpOnly, SameSite=Strict session that is not the token", cookies)
	}
	session := []string{"Cookie", cookies[0].String()}
	if resp := get(t, h, "/ui/policy", session...); resp.StatusCode != http.StatusOK {
		t.Errorf("GET /ui/policy with the session = %d, want 200", resp.StatusCode)
	}
	req := httptest.NewRequest("POST", "/ui/logout", nil)
	req.AddCookie(cookies[0])
	h.ServeHTTP(httptest.NewRecorder(), req)
	if resp := get(t, h, "/ui/policy", session...); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("GET /ui/policy after logout = %d, want 303 to the login", resp.StatusCode)
	}

	// Anonymous loopback access, when configured: loopback yes, others no.
	anon := newTestState(t, Config{AnonymousLoopback: true}).console.Handler()
	for _, tc := range []struct {
		remote string
		want   int
	}{{"127.0.0.1:5555", http.StatusOK}, {"[::1]:5555", http.StatusOK}, {"192.0.2.1:5555", http.StatusSeeOther}} {
		req := httptest.NewRequest("GET", "/ui/", nil)
		req.RemoteAddr = tc.remote
		w := httptest.NewRecorder()
		anon.ServeHTTP(w, req)
		if w.Code != tc.want {
			t.Errorf("anonymous loopback console, GET /ui/ from %s = %d, want %d", tc.remote, w.Code, tc.want)
		}
	}
	if _, err := New(Config{History: history.New(metrics.New().Gatherer(), history.Options{}), Gateway: fakeGateway{}}); err == nil {
		t.Errorf("New without a token or anonymous loopback access succeeded")
	}
}

// TestHeaders: every page, the login included, forbids scripts, framing
// and caching.
func TestHeaders(t *testing.T) {
	s := newTestState(t, Config{})
	h := s.console.Handler()
	for _, path := range []string{"/ui/login", "/ui/", "/ui/modules", "/ui/modules?module=example.com/a", "/ui/refusals", "/ui/audit", "/ui/policy", "/ui/policy?target=example.com/a@v1.0.0"} {
		resp := get(t, h, path, "Authorization", "Bearer "+testToken)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s = %d, want 200: %s", path, resp.StatusCode, body(t, resp))
			continue
		}
		if got := resp.Header.Get("Content-Security-Policy"); got != csp {
			t.Errorf("GET %s: Content-Security-Policy = %q, want %q", path, got, csp)
		}
		if resp.Header.Get("X-Frame-Options") != "DENY" || resp.Header.Get("Cache-Control") != "no-store" {
			t.Errorf("GET %s: headers %v", path, resp.Header)
		}
	}
	if resp := get(t, h, "/ui/static/console.css"); resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/css") {
		t.Errorf("GET /ui/static/console.css = %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
}

// TestBadInput: malformed filters are 400 with a message, never a 500.
func TestBadInput(t *testing.T) {
	s := newTestState(t, Config{})
	h := s.console.Handler()
	for _, tc := range []struct{ path, want string }{
		{"/ui/audit?status=abc", "want a code such as 404"},
		{"/ui/audit?since=yesterday", "want a time"},
		{"/ui/audit?before=-1", "not a sequence number"},
		{"/ui/modules?module=" + url.QueryEscape("Not A Path"), "malformed module path"},
		{"/ui/policy?target=example.com/a", "want MODULE@VERSION"},
	} {
		resp := get(t, h, tc.path, "Authorization", "Bearer "+testToken)
		if b := body(t, resp); resp.StatusCode != http.StatusBadRequest || !strings.Contains(b, tc.want) {
			t.Errorf("GET %s = %d, want 400 with %q", tc.path, resp.StatusCode, tc.want)
		}
	}
}

// fakeIdentifier knows two client tokens and one certificate.
type fakeIdentifier struct{}

func (fakeIdentifier) Identify(ctx context.Context, r *http.Request, token string) (string, []string, bool) {
	switch {
	case token == "mgt_ops":
		return "olivia", []string{"dev", "ops"}, true
	case token == "mgt_dev":
		return "dave", []string{"dev"}, true
	case token == "" && r.TLS != nil && len(r.TLS.VerifiedChains) > 0:
		return "spiffe://corp.example/sre", []string{"ops"}, true
	}
	return "", nil, false
}

// TestGroups: with console.groups, the gateway's identities in one of
// them get in (a client token as a bearer token or to the login form, a
// verified certificate without a login); others do not.
func TestGroups(t *testing.T) {
	s := newTestState(t, Config{Token: testToken, Groups: []string{"ops"}, Identifier: fakeIdentifier{}})
	h := s.console.Handler()
	for _, tc := range []struct {
		name   string
		header []string
		tls    bool
		want   int
		who    string
	}{
		{"token in the group", []string{"Authorization", "Bearer mgt_ops"}, false, http.StatusOK, "olivia"},
		{"token not in the group", []string{"Authorization", "Bearer mgt_dev"}, false, http.StatusUnauthorized, ""},
		{"unknown token", []string{"Authorization", "Bearer mgt_nope"}, false, http.StatusUnauthorized, ""},
		{"admin token", []string{"Authorization", "Bearer " + testToken}, false, http.StatusOK, "admin token"},
		{"certificate in the group", nil, true, http.StatusOK, "spiffe://corp.example/sre"},
		{"nothing", nil, false, http.StatusSeeOther, ""},
	} {
		req := httptest.NewRequest("GET", "/ui/policy", nil)
		for i := 0; i+1 < len(tc.header); i += 2 {
			req.Header.Set(tc.header[i], tc.header[i+1])
		}
		if tc.tls {
			req.TLS = &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{{}}}}
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != tc.want || (tc.who != "" && !strings.Contains(w.Body.String(), `<span class="who" id="who">`+html.EscapeString(tc.who)+`</span>`)) {
			t.Errorf("%s: GET /ui/policy = %d, want %d as %q", tc.name, w.Code, tc.want, tc.who)
		}
	}
	for _, tc := range []struct {
		token string
		want  int
	}{{"mgt_ops", http.StatusSeeOther}, {"mgt_dev", http.StatusUnauthorized}} {
		req := httptest.NewRequest("POST", "/ui/login", strings.NewReader(url.Values{"token": {tc.token}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != tc.want {
			t.Errorf("login with %s = %d, want %d", tc.token, w.Code, tc.want)
		}
	}
	if _, err := New(Config{Groups: []string{"ops"}, History: history.New(metrics.New().Gatherer(), history.Options{}), Gateway: fakeGateway{}}); err == nil {
		t.Errorf("New with groups and no Identifier succeeded")
	}
}

// TestAuditPaging: following "Older events" from the newest page shows
// every event once, newest first, with the filter kept.
func TestAuditPaging(t *testing.T) {
	s := newTestState(t, Config{})
	var evs []*audit.Event
	for i := range 130 {
		decision, status := "serve", 200
		if i%13 == 0 {
			decision, status = "deny", 403
		}
		evs = append(evs, event(fmt.Sprintf("user%d", i%3), decision, "", "example.com/a", "v1.0.0", "zip", status))
	}
	s.record(t, evs...)
	h := s.console.Handler()
	seqRE := regexp.MustCompile(`<tr class="(serve|deny)[^"]*">\s*<td class="n">(\d+)</td>`)
	nextRE := regexp.MustCompile(`<a href="([^"]+)" id="older">`)
	for _, tc := range []struct {
		path  string
		want  int
		pages int
	}{
		{"/ui/audit", 130, 3},
		{"/ui/audit?decision=serve&identity=user1", 40, 1},
	} {
		var seqs []int
		path, pages := tc.path, 0
		for path != "" && pages < 10 {
			pages++
			resp := get(t, h, path, "Authorization", "Bearer "+testToken)
			b := body(t, resp)
			for _, m := range seqRE.FindAllStringSubmatch(b, -1) {
				n, _ := strconv.Atoi(m[2])
				seqs = append(seqs, n)
			}
			path = ""
			if m := nextRE.FindStringSubmatch(b); m != nil {
				path = html.UnescapeString(m[1])
			}
		}
		if len(seqs) != tc.want || pages != tc.pages || !slices.IsSortedFunc(seqs, func(a, b int) int { return b - a }) || len(slices.Compact(slices.Clone(seqs))) != len(seqs) {
			t.Errorf("%s: %d events on %d pages (%v), want %d distinct, newest first, on %d pages", tc.path, len(seqs), pages, seqs, tc.want, tc.pages)
		}
	}
}
