package auth

import (
	"encoding/base64"
	"errors"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

// clock is a fake clock safe for concurrent use.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// fixture is a tokens file with two tokens.
type fixture struct {
	path      string
	ci, alice string // the tokens
}

func newFixture(t testing.TB) fixture {
	t.Helper()
	fx := fixture{path: filepath.Join(t.TempDir(), "tokens")}
	var err error
	if fx.ci, err = Create(fx.path, "ci", []string{"ci"}, created); err != nil {
		t.Fatal(err)
	}
	if fx.alice, err = Create(fx.path, "alice", []string{"dev", "release"}, created); err != nil {
		t.Fatal(err)
	}
	return fx
}

func mustLoad(t testing.TB, path string) *Tokens {
	t.Helper()
	ts, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return ts
}

func mustNew(t testing.TB, cfg Config) *Authenticator {
	t.Helper()
	a, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return a
}

func basic(user, pass string) http.Header {
	return http.Header{"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))}}
}

func bearer(tok string) http.Header {
	return http.Header{"Authorization": {"Bearer " + tok}}
}

var (
	addr  = netip.MustParseAddrPort("192.0.2.7:50000")
	addr2 = netip.MustParseAddrPort("192.0.2.8:50000")
)

const (
	spiffeBuilder = "spiffe://corp.example/ns/ci/sa/builder"
	subjectDev    = "CN=dev-laptop,O=Corp"
)

func TestAuthenticate(t *testing.T) {
	fx := newFixture(t)
	tokens := mustLoad(t, fx.path)
	identities := map[string][]string{
		spiffeBuilder: {"ci"},
		subjectDev:    {"dev"},
	}
	const wrong = "mgt_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	builderCert := Peer{Addr: addr, Subject: "CN=builder", URISANs: []string{"https://corp.example/x", spiffeBuilder, "spiffe://corp.example/other"}, CertSHA256: "ab"}
	devCert := Peer{Addr: addr, Subject: subjectDev, CertSHA256: "cd"}
	tests := []struct {
		name     string
		required bool
		h        http.Header
		peer     Peer
		want     Identity
		err      error
	}{
		{name: "basic, any user", h: basic("anything", fx.ci), peer: Peer{Addr: addr}, want: Identity{"ci", []string{"ci"}, MethodToken}},
		{name: "basic, empty user", h: basic("", fx.alice), want: Identity{"alice", []string{"dev", "release"}, MethodToken}},
		{name: "basic, lower-case scheme", h: http.Header{"Authorization": {"basic " + base64.StdEncoding.EncodeToString([]byte("u:"+fx.ci))}}, want: Identity{"ci", []string{"ci"}, MethodToken}},
		{name: "bearer", required: true, h: bearer(fx.alice), want: Identity{"alice", []string{"dev", "release"}, MethodToken}},
		{name: "bearer, spaces", h: http.Header{"Authorization": {"BEARER   " + fx.ci}}, want: Identity{"ci", []string{"ci"}, MethodToken}},
		{name: "token wins over certificate", h: bearer(fx.alice), peer: builderCert, want: Identity{"alice", []string{"dev", "release"}, MethodToken}},

		{name: "wrong token, not required", h: basic("any", wrong), peer: Peer{Addr: addr}, err: ErrUnauthenticated},
		{name: "wrong token, required", required: true, h: bearer(wrong), err: ErrUnauthenticated},
		{name: "wrong token with a certificate", h: bearer(wrong), peer: builderCert, err: ErrUnauthenticated},
		{name: "token prefix", h: bearer(fx.ci[:len(fx.ci)-1]), err: ErrUnauthenticated},
		{name: "token plus", h: bearer(fx.ci + "A"), err: ErrUnauthenticated},
		{name: "token as user name", h: basic(fx.ci, "x"), err: ErrUnauthenticated},
		{name: "basic, no password", h: basic(fx.ci, ""), err: ErrUnauthenticated},
		{name: "basic, no colon", h: http.Header{"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte(fx.ci))}}, err: ErrUnauthenticated},
		{name: "basic, not base64", h: http.Header{"Authorization": {"Basic " + fx.ci}}, err: ErrUnauthenticated},
		{name: "bearer, two words", h: http.Header{"Authorization": {"Bearer " + fx.ci + " x"}}, err: ErrUnauthenticated},
		{name: "scheme only", h: http.Header{"Authorization": {"Bearer"}}, err: ErrUnauthenticated},
		{name: "empty header", h: http.Header{"Authorization": {""}}, err: ErrUnauthenticated},
		{name: "other scheme", h: http.Header{"Authorization": {"Token " + fx.ci}}, err: ErrUnauthenticated},
		{name: "two headers", h: http.Header{"Authorization": {"Bearer " + fx.ci, "Bearer " + fx.ci}}, err: ErrUnauthenticated},

		{name: "spiffe certificate", peer: builderCert, want: Identity{spiffeBuilder, []string{"ci"}, MethodMTLS}},
		{name: "spiffe certificate, required", required: true, peer: builderCert, want: Identity{spiffeBuilder, []string{"ci"}, MethodMTLS}},
		{name: "subject certificate", peer: devCert, want: Identity{subjectDev, []string{"dev"}, MethodMTLS}},
		{name: "spiffe wins over subject", peer: Peer{Subject: subjectDev, URISANs: []string{spiffeBuilder}}, want: Identity{spiffeBuilder, []string{"ci"}, MethodMTLS}},
		{name: "unmapped certificate", required: true, peer: Peer{Subject: "CN=stranger"}, want: Identity{Name: "CN=stranger", Method: MethodMTLS}},
		{name: "certificate from the mesh", peer: Peer{URISANs: []string{spiffeBuilder}, FromMesh: true}, want: Identity{spiffeBuilder, []string{"ci"}, MethodMesh}},
		{name: "certificate without identity", peer: Peer{URISANs: []string{"https://corp.example/x"}, CertSHA256: "ef"}, want: Identity{}},

		{name: "anonymous", peer: Peer{Addr: addr}, want: Identity{}},
		{name: "anonymous, required", required: true, peer: Peer{Addr: addr}, err: ErrUnauthenticated},
		{name: "no credentials, required", required: true, h: http.Header{"Proxy-Authorization": {"Bearer " + fx.ci}}, err: ErrUnauthenticated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := mustNew(t, Config{Tokens: tokens, Required: tt.required, Identities: identities})
			got, err := a.Authenticate(t.Context(), tt.h, tt.peer)
			if !errors.Is(err, tt.err) || (tt.err == nil) != (err == nil) {
				t.Fatalf("Authenticate = %+v, %v; want error %v", got, err, tt.err)
			}
			if err != nil {
				msg := err.Error()
				for _, tok := range []string{fx.ci, fx.alice, wrong, fx.ci[len(TokenPrefix):20]} {
					if strings.Contains(msg, tok) {
						t.Errorf("error %q holds a credential", msg)
					}
				}
				if !strings.Contains(msg, source(tt.peer.Addr)) {
					t.Errorf("error %q does not name the source %s", msg, source(tt.peer.Addr))
				}
				if got.Name != "" || got.Groups != nil || got.Method != "" {
					t.Errorf("Authenticate = %+v with error %v, want no identity", got, err)
				}
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Authenticate = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestAuthenticateGroupsAreCopies(t *testing.T) {
	fx := newFixture(t)
	a := mustNew(t, Config{Tokens: mustLoad(t, fx.path), Identities: map[string][]string{spiffeBuilder: {"ci"}}})
	for _, tt := range []struct {
		h    http.Header
		peer Peer
	}{
		{bearer(fx.ci), Peer{}},
		{nil, Peer{URISANs: []string{spiffeBuilder}}},
	} {
		id, err := a.Authenticate(t.Context(), tt.h, tt.peer)
		if err != nil {
			t.Fatal(err)
		}
		id.Groups[0] = "admin"
		if id, _ := a.Authenticate(t.Context(), tt.h, tt.peer); id.Groups[0] != "ci" {
			t.Errorf("changing a returned Identity's groups changed the next one: %q", id.Groups)
		}
	}
}

func TestFailureBudget(t *testing.T) {
	fx := newFixture(t)
	clk := &clock{t: created}
	a := mustNew(t, Config{Tokens: mustLoad(t, fx.path), Failures: FailureLimit{Max: 3, Window: time.Minute}, Now: clk.Now})
	wrong := bearer("mgt_wrong")
	v6a := netip.MustParseAddrPort("[2001:db8:1:2::1]:443")
	v6b := netip.MustParseAddrPort("[2001:db8:1:2::ffff]:443") // same /64
	v6c := netip.MustParseAddrPort("[2001:db8:1:3::1]:443")    // another /64
	mapped := netip.MustParseAddrPort("[::ffff:192.0.2.7]:1")  // addr's IPv4 address

	type step struct {
		name    string
		advance time.Duration
		h       http.Header
		peer    netip.AddrPort
		err     error
		retry   time.Duration // for ErrThrottled
	}
	steps := []step{
		{name: "1st failure", h: wrong, peer: addr, err: ErrUnauthenticated},
		{name: "2nd failure", h: wrong, peer: addr, err: ErrUnauthenticated},
		{name: "3rd failure, other port", h: basic("x", "y"), peer: netip.AddrPortFrom(addr.Addr(), 1), err: ErrUnauthenticated},
		{name: "4th failure throttled", h: wrong, peer: addr, err: ErrThrottled, retry: 20 * time.Second},
		{name: "IPv4-mapped is the same source", h: wrong, peer: mapped, err: ErrThrottled, retry: 20 * time.Second},
		{name: "other source not throttled", h: wrong, peer: addr2, err: ErrUnauthenticated},
		{name: "valid token from throttled source", h: bearer(fx.ci), peer: addr},
		{name: "anonymous from throttled source", peer: addr},
		{name: "still throttled", advance: 10 * time.Second, h: wrong, peer: addr, err: ErrThrottled, retry: 10 * time.Second},
		{name: "one failure regained", advance: 10 * time.Second, h: wrong, peer: addr, err: ErrUnauthenticated},
		{name: "and spent", h: wrong, peer: addr, err: ErrThrottled, retry: 20 * time.Second},
		{name: "recovered after the window", advance: time.Minute, h: wrong, peer: addr, err: ErrUnauthenticated},
		{name: "recovered 2", h: wrong, peer: addr, err: ErrUnauthenticated},
		{name: "recovered 3", h: wrong, peer: addr, err: ErrUnauthenticated},
		{name: "throttled again", h: wrong, peer: addr, err: ErrThrottled, retry: 20 * time.Second},

		{name: "v6 1", h: wrong, peer: v6a, err: ErrUnauthenticated},
		{name: "v6 2", h: wrong, peer: v6b, err: ErrUnauthenticated},
		{name: "v6 3", h: wrong, peer: v6a, err: ErrUnauthenticated},
		{name: "v6 same /64 throttled", h: wrong, peer: v6b, err: ErrThrottled, retry: 20 * time.Second},
		{name: "v6 other /64", h: wrong, peer: v6c, err: ErrUnauthenticated},
	}
	for _, s := range steps {
		clk.Advance(s.advance)
		id, err := a.Authenticate(t.Context(), s.h, Peer{Addr: s.peer})
		if !errors.Is(err, s.err) || (s.err == nil) != (err == nil) {
			t.Fatalf("%s: Authenticate = %+v, %v; want %v", s.name, id, err, s.err)
		}
		var te *ThrottledError
		if errors.As(err, &te) != (s.err == ErrThrottled) {
			t.Fatalf("%s: error %v: is a *ThrottledError %v, want %v", s.name, err, !(s.err == ErrThrottled), s.err == ErrThrottled)
		}
		if te != nil && (te.RetryAfter() != s.retry || te.Source != s.peer.String()) {
			t.Errorf("%s: ThrottledError = %+v, want Source %s, RetryAfter %v", s.name, te, s.peer, s.retry)
		}
	}
}

func TestReload(t *testing.T) {
	fx := newFixture(t)
	a := mustNew(t, Config{Tokens: mustLoad(t, fx.path), Failures: FailureLimit{Max: 1000}})
	check := func(when, tok string, want error) {
		t.Helper()
		if _, err := a.Authenticate(t.Context(), bearer(tok), Peer{Addr: addr}); !errors.Is(err, want) || (want == nil) != (err == nil) {
			t.Errorf("%s: Authenticate = %v, want %v", when, err, want)
		}
	}
	check("before", fx.ci, nil)
	if err := Revoke(fx.path, "ci"); err != nil {
		t.Fatal(err)
	}
	check("revoked, not reloaded", fx.ci, nil)
	if err := a.Reload(fx.path); err != nil {
		t.Fatal(err)
	}
	check("revoked and reloaded", fx.ci, ErrUnauthenticated)
	check("other token", fx.alice, nil)
	bob, err := Create(fx.path, "bob", nil, created)
	if err != nil {
		t.Fatal(err)
	}
	check("created, not reloaded", bob, ErrUnauthenticated)
	if err := a.Reload(fx.path); err != nil {
		t.Fatal(err)
	}
	check("created and reloaded", bob, nil)
	if a.Tokens().Len() != 2 {
		t.Errorf("Tokens().Len() = %d, want 2", a.Tokens().Len())
	}

	if err := os.WriteFile(fx.path, []byte("garbage\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := a.Reload(fx.path); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Errorf("Reload(corrupt) = %v, want an error naming line 1", err)
	}
	if err := a.Reload(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Errorf("Reload(missing) = nil, want an error")
	}
	check("after failed reloads", bob, nil)
}

func TestConcurrentReload(t *testing.T) {
	fx := newFixture(t)
	a := mustNew(t, Config{Tokens: mustLoad(t, fx.path), Failures: FailureLimit{Max: 1 << 20}})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 200 {
				if id, err := a.Authenticate(t.Context(), bearer(fx.alice), Peer{Addr: addr}); err != nil || id.Name != "alice" {
					t.Errorf("Authenticate = %+v, %v", id, err)
					return
				}
				a.Authenticate(t.Context(), bearer("mgt_wrong"), Peer{Addr: addr})
			}
		})
	}
	wg.Go(func() {
		for range 20 {
			if err := a.Reload(fx.path); err != nil {
				t.Error(err)
				return
			}
		}
	})
	wg.Wait()
}

func TestNewInvalid(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		err  string
	}{
		{"empty identity", Config{Identities: map[string][]string{"": {"ci"}}}, "identities: empty"},
		{"bad group", Config{Identities: map[string][]string{spiffeBuilder: {"a b"}}}, "identities[\"" + spiffeBuilder + "\"]: group"},
		{"group twice", Config{Identities: map[string][]string{subjectDev: {"a", "a"}}}, "given twice"},
		{"negative max", Config{Failures: FailureLimit{Max: -1}}, "failures.max"},
		{"negative window", Config{Failures: FailureLimit{Window: -time.Second}}, "failures.window"},
	}
	for _, tt := range tests {
		if _, err := New(tt.cfg); err == nil || !strings.Contains(err.Error(), tt.err) {
			t.Errorf("New(%s) = %v, want error containing %q", tt.name, err, tt.err)
		}
	}
	a := mustNew(t, Config{})
	if id, err := a.Authenticate(t.Context(), nil, Peer{}); err != nil || id.Method != MethodAnonymous {
		t.Errorf("zero Config: Authenticate(nothing) = %+v, %v; want anonymous", id, err)
	}
	if _, err := a.Authenticate(t.Context(), bearer("mgt_x"), Peer{}); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("zero Config: Authenticate(token) = %v, want ErrUnauthenticated", err)
	}
}

var authorizationTests = []struct {
	value string
	token string // "" for an error
}{
	{"Bearer mgt_abc", "mgt_abc"},
	{"bearer  mgt_abc", "mgt_abc"},
	{"Basic " + base64.StdEncoding.EncodeToString([]byte("any:mgt_abc")), "mgt_abc"},
	{"BASIC " + base64.StdEncoding.EncodeToString([]byte(":a:b")), "a:b"},
	{"Basic " + base64.StdEncoding.EncodeToString([]byte("any:")), ""},
	{"Basic " + base64.StdEncoding.EncodeToString([]byte("mgt_abc")), ""},
	{"Basic " + base64.RawStdEncoding.EncodeToString([]byte("a:bc")), ""},
	{"Basic !!!", ""},
	{"Bearer", ""},
	{"Bearer ", ""},
	{"Bearer a b", ""},
	{"Bearer a\tb", ""},
	{"Bearer\tmgt_abc", ""},
	{"Digest mgt_abc", ""},
	{"mgt_abc", ""},
	{"", ""},
}

func TestParseAuthorization(t *testing.T) {
	for _, tt := range authorizationTests {
		got, err := parseAuthorization(tt.value)
		if got != tt.token || (err == nil) != (tt.token != "") {
			t.Errorf("parseAuthorization(%q) = %q, %v; want %q", tt.value, got, err, tt.token)
		}
	}
}

func FuzzParseAuthorization(f *testing.F) {
	for _, tt := range authorizationTests {
		f.Add(tt.value)
	}
	f.Fuzz(func(t *testing.T, v string) {
		tok, err := parseAuthorization(v)
		if (err == nil) == (tok == "") {
			t.Fatalf("parseAuthorization(%q) = %q, %v: want a token or an error", v, tok, err)
		}
		if err != nil && len(v) > 8 && strings.Contains(err.Error(), v) {
			t.Errorf("parseAuthorization(%q): error %q repeats the value", v, err)
		}
		if v == "" {
			return
		}
		if got, err := parseAuthorization("Basic " + base64.StdEncoding.EncodeToString([]byte("user:"+v))); got != v || err != nil {
			t.Errorf("basic password %q: parseAuthorization = %q, %v", v, got, err)
		}
		if !strings.ContainsAny(v, " \t") {
			if got, err := parseAuthorization("Bearer " + v); got != v || err != nil {
				t.Errorf("bearer %q: parseAuthorization = %q, %v", v, got, err)
			}
		}
	})
}

// The gate answers 429 with Retry-After for an error with this method.
var _ interface{ RetryAfter() time.Duration } = (*ThrottledError)(nil)
