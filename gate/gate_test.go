package gate

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/modgate/modgate/audit"
	"github.com/modgate/modgate/cache"
	"github.com/modgate/modgate/goproxy"
	"github.com/modgate/modgate/policy"
	"github.com/modgate/modgate/upstream"
	"github.com/modgate/modgate/verify"
)

// noVerifier refuses to be asked: the tests here store nothing that needs
// checking.
type noVerifier struct{ t testing.TB }

func (v noVerifier) Mod(_ context.Context, path, version string, _ []byte, _ bool) (verify.Result, error) {
	v.t.Errorf("Mod(%s, %s) called", path, version)
	return "", nil
}

func (v noVerifier) Zip(_ context.Context, path, version, _ string, _ bool) (verify.Result, error) {
	v.t.Errorf("Zip(%s, %s) called", path, version)
	return "", nil
}

// Answer proves nothing: checksum database answers are served, not kept.
func (v noVerifier) Answer(context.Context, string, string, []byte) (bool, error) {
	return false, nil
}

func mustUpstream(t testing.TB, name, rawURL string, private bool) *upstream.Upstream {
	t.Helper()
	u, err := upstream.Parse(name, rawURL, private)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func newProcessor(t testing.TB, set *upstream.Set) *Processor {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	c, err := cache.Open(cache.Config{Dir: t.TempDir(), HotBytes: 1 << 20, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	aw := audit.NewWriter(io.Discard)
	t.Cleanup(func() { aw.Close() })
	pol, err := policy.New(policy.Config{Private: []string{"corp.example"}})
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(Options{Policy: pol, Upstreams: set, Cache: c, Verifier: noVerifier{t}, Audit: aw, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestVia(t *testing.T) {
	a := mustUpstream(t, "a", "http://127.0.0.1:1000", false)
	b := mustUpstream(t, "b", "http://127.0.0.1:2000/prefix", false)
	tls := mustUpstream(t, "tls", "https://proxy.example", false)
	tests := []struct {
		name          string
		candidates    []*upstream.Upstream
		addr, cluster string
		want          string
	}{
		{"the second by address", []*upstream.Upstream{a, b}, "127.0.0.1:2000", "upstream_public", "b"},
		{"the first by address", []*upstream.Upstream{a, b}, "127.0.0.1:1000", "upstream_public", "a"},
		{"https default port", []*upstream.Upstream{a, tls}, "proxy.example:443", "", "tls"},
		{"the only one, by a resolved address", []*upstream.Upstream{tls}, "192.0.2.7:443", "upstream_public", "tls"},
		{"unknown among several is not guessed", []*upstream.Upstream{a, b}, "192.0.2.7:443", "upstream_public", "upstream_public@192.0.2.7:443"},
		{"nothing reported among several", []*upstream.Upstream{a, b}, "", "", "envoy"},
	}
	for _, tt := range tests {
		f := &Fill{candidates: tt.candidates}
		got := f.Via(tt.addr, tt.cluster)
		if got.Name != tt.want || len(f.Candidates()) != 1 || f.Candidates()[0] != got {
			t.Errorf("%s: Via(%q, %q) = %s, candidates %v; want %s alone", tt.name, tt.addr, tt.cluster, got, f.Candidates(), tt.want)
		}
	}
}

// A leader whose stream ended abandons its fill: the request waiting for
// it does not wait out its time but leads a fresh fill.
func TestAbandonWakesFollowers(t *testing.T) {
	set := &upstream.Set{Public: []*upstream.Upstream{mustUpstream(t, "pub", "http://127.0.0.1:1", false)}}
	p := newProcessor(t, set)
	const target = "/example.com/a/@v/v1.0.0.zip"
	leader := p.Begin(Client{})
	d := leader.RequestHeaders(t.Context(), Request{Method: "GET", Target: target})
	if d.Action != Forward {
		t.Fatalf("first request: %v, want forward", d.Action)
	}
	got := make(chan Decision, 1)
	go func() {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		got <- p.Begin(Client{}).RequestHeaders(ctx, Request{Method: "GET", Target: target})
	}()
	time.Sleep(20 * time.Millisecond) // the follower waits for the flight
	d.Fill.Abandon(t.Context(), io.ErrUnexpectedEOF)
	select {
	case fd := <-got:
		if fd.Action != Forward {
			t.Errorf("follower after the leader abandoned: %v, want forward (a fresh fill)", fd.Action)
		}
		fd.Fill.Abandon(t.Context(), io.ErrUnexpectedEOF)
	case <-time.After(2 * time.Second):
		t.Fatal("the follower is still waiting: the key is wedged")
	}
	if res := d.Fill.Finish(t.Context(), nil); !res.retry {
		t.Errorf("Finish after Abandon = %+v, want the abandoned result", res)
	}
}

func TestCheckInfo(t *testing.T) {
	parse := func(target string) goproxy.Request {
		r, err := goproxy.Parse("GET", target, 0)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	tests := []struct {
		target, body string
		ok           bool
	}{
		{"/example.com/a/@v/v1.0.0.info", `{"Version":"v1.0.0"}`, true},
		{"/example.com/a/@v/v1.0.0.info", `{"Version":"v1.0.1"}`, false},
		{"/example.com/a/@v/master.info", `{"Version":"v0.0.0-20240101000000-abcdefabcdef"}`, true},
		{"/example.com/a/@latest", `{"Version":"v1.2.3"}`, true},
		{"/example.com/a/@latest", `{"Version":"1.2.3"}`, false},
		{"/example.com/a/v2/@latest", `{"Version":"v1.2.3"}`, false},
		{"/example.com/a/@latest", `not json`, false},
	}
	for _, tt := range tests {
		err := checkInfo(parse(tt.target), []byte(tt.body))
		if (err == nil) != tt.ok {
			t.Errorf("checkInfo(%s, %s) = %v, want ok %v", tt.target, tt.body, err, tt.ok)
		}
	}
}

func TestIdentity(t *testing.T) {
	addr := netip.MustParseAddrPort("[::ffff:10.1.2.3]:5000")
	tests := []struct {
		c    Client
		want string
	}{
		{Client{Addr: addr}, "10.1.2.3"},
		{Client{Addr: addr, User: "ci"}, "user:ci"},
		{Client{Addr: addr, Subject: "CN=x"}, "CN=x"},
		{Client{Addr: addr, Subject: "CN=x", URISANs: []string{"spiffe://a/b"}, User: "ci"}, "user:ci"}, // authenticated first
		{Client{Addr: addr, Subject: "CN=x", URISANs: []string{"spiffe://a/b", "spiffe://c"}}, "spiffe://a/b"},
	}
	for _, tt := range tests {
		if got := identity(tt.c); got != tt.want {
			t.Errorf("identity(%+v) = %q, want %q", tt.c, got, tt.want)
		}
	}
}
