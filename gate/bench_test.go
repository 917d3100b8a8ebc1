package gate

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/modgate/modgate/audit"
	"github.com/modgate/modgate/auth"
	"github.com/modgate/modgate/cache"
	"github.com/modgate/modgate/policy"
	"github.com/modgate/modgate/upstream"
)

// authAdapter is package auth's authenticator as the processor declares it.
type authAdapter struct{ a *auth.Authenticator }

func (a authAdapter) Authenticate(ctx context.Context, h http.Header, c Client) (Identity, error) {
	id, err := a.a.Authenticate(ctx, h, auth.Peer{Addr: c.Addr, Subject: c.Subject, URISANs: c.URISANs})
	return Identity(id), err
}

// BenchmarkWarmHit measures the processor's work for one warm hit, from
// RequestHeaders to the audit event (written to io.Discard), anonymous
// and with what "who may fetch what" adds: a token checked and five policy
// rules decided. The difference is the per-request cost of auth plus
// policy.
func BenchmarkWarmHit(b *testing.B) {
	const target = "/example.com/a/@v/v1.0.0.info"
	body := []byte(`{"Version":"v1.0.0","Time":"2024-01-01T00:00:00Z"}`)
	for _, tc := range []struct {
		name   string
		secure bool
	}{{"anonymous", false}, {"token+rules", true}} {
		b.Run(tc.name, func(b *testing.B) {
			log := slog.New(slog.DiscardHandler)
			c, err := cache.Open(cache.Config{Dir: b.TempDir(), HotBytes: 1 << 20, Logger: log})
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			w := c.NewWriter(target, cache.Release, http.StatusOK, "application/json")
			w.Write(body)
			if _, err := w.Commit(context.Background()); err != nil {
				b.Fatal(err)
			}
			aw := audit.NewWriter(io.Discard)
			defer aw.Close()
			opts := Options{
				Upstreams: &upstream.Set{Public: []*upstream.Upstream{mustUpstream(b, "pub", "http://127.0.0.1:1", false)}},
				Cache:     c, Verifier: noVerifier{b}, Audit: aw, Logger: log,
			}
			h := http.Header{}
			if tc.secure {
				file := filepath.Join(b.TempDir(), "tokens")
				token, err := auth.Create(file, "ci", []string{"release"}, time.Now())
				if err != nil {
					b.Fatal(err)
				}
				set, err := auth.Load(file)
				if err != nil {
					b.Fatal(err)
				}
				a, err := auth.New(auth.Config{Tokens: set, Required: true})
				if err != nil {
					b.Fatal(err)
				}
				opts.Authenticator = authAdapter{a}
				h.Set("Authorization", "Bearer "+token)
				rc := policy.RulesConfig{Rules: []policy.RuleConfig{
					{Name: "r1", Match: "gopkg.in/yaml.v2", Versions: "<v2.4.0", Action: "deny"},
					{Name: "r2", Match: "github.com/x/*", Action: "deny"},
					{Name: "r3", Match: "example.com/b", Versions: ">=v2.0.0 <v2.3.0", Action: "deny"},
					{Name: "r4", Match: "corp.example.com", Groups: []string{"release"}, Action: "allow"},
					{Name: "r5", Match: "example.com/a", Versions: "<v0.9.0", Action: "deny"},
				}}
				if opts.Rules, err = policy.NewRules(rc); err != nil {
					b.Fatal(err)
				}
			}
			p, err := New(opts)
			if err != nil {
				b.Fatal(err)
			}
			client := Client{Addr: netip.MustParseAddrPort("10.1.2.3:40000")}
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				x := p.Begin(client)
				d := x.RequestHeaders(ctx, Request{Method: "GET", Target: target, Header: h})
				if d.Action != Hit {
					b.Fatalf("RequestHeaders = %v, want a hit", d.Action)
				}
				d.Entry.Close()
				x.Done(ctx, http.StatusOK, int64(len(body)), nil)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1000, "µs/req")
		})
	}
}
