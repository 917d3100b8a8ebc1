package policy

import (
	"testing"

	"github.com/modgate/modgate/goproxy"
)

func TestDecide(t *testing.T) {
	p, err := New(Config{Private: []string{"corp.example,*.internal.example", "github.com/acme/secret"}, SumDBs: []string{"sum.example.test"}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		req  goproxy.Request
		want Verdict
	}{
		{"public module", goproxy.Request{Kind: goproxy.KindZip, Module: "example.com/a", Version: "v1.0.0"}, Verdict{Allow: true, Route: Public}},
		{"private prefix", goproxy.Request{Kind: goproxy.KindList, Module: "corp.example/x/y"}, Verdict{Allow: true, Route: Private}},
		{"private glob", goproxy.Request{Kind: goproxy.KindLatest, Module: "git.internal.example/z"}, Verdict{Allow: true, Route: Private}},
		{"private repo prefix", goproxy.Request{Kind: goproxy.KindMod, Module: "github.com/acme/secret/v2", Version: "v2.0.0"}, Verdict{Allow: true, Route: Private}},
		{"not a prefix match", goproxy.Request{Kind: goproxy.KindMod, Module: "github.com/acme/secretive", Version: "v1.0.0"}, Verdict{Allow: true, Route: Public}},
		{"sumdb supported", goproxy.Request{Kind: goproxy.KindSumDBSupported, SumDB: "sum.example.test"}, Verdict{Allow: true, Route: Local}},
		{"sumdb latest", goproxy.Request{Kind: goproxy.KindSumDBLatest, SumDB: "sum.example.test"}, Verdict{Allow: true, Route: Public}},
		{"sumdb tile", goproxy.Request{Kind: goproxy.KindSumDBTile, SumDB: "sum.example.test"}, Verdict{Allow: true, Route: Public}},
		{"sumdb public lookup", goproxy.Request{Kind: goproxy.KindSumDBLookup, SumDB: "sum.example.test", Module: "example.com/a", Version: "v1.0.0"}, Verdict{Allow: true, Route: Public}},
		{"sumdb private lookup", goproxy.Request{Kind: goproxy.KindSumDBLookup, SumDB: "sum.example.test", Module: "corp.example/a", Version: "v1.0.0"}, Verdict{Rule: RulePrivateSumDB}},
		{"sumdb not allowed", goproxy.Request{Kind: goproxy.KindSumDBSupported, SumDB: "sum.other.test"}, Verdict{Rule: RuleSumDBAllowList}},
		{"sumdb not allowed lookup", goproxy.Request{Kind: goproxy.KindSumDBLookup, SumDB: "sum.other.test", Module: "example.com/a", Version: "v1.0.0"}, Verdict{Rule: RuleSumDBAllowList}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := p.Decide(tt.req)
			if got.Allow != tt.want.Allow || got.Route != tt.want.Route || got.Rule != tt.want.Rule {
				t.Errorf("Decide(%+v) = %+v, want %+v", tt.req, got, tt.want)
			}
			if !got.Allow && got.Reason == "" {
				t.Errorf("Decide(%+v) denies without a reason", tt.req)
			}
		})
	}
}

func TestZeroConfig(t *testing.T) {
	p, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	if v := p.Decide(goproxy.Request{Kind: goproxy.KindList, Module: "corp.example/a"}); !v.Allow || v.Route != Public {
		t.Errorf("zero policy: Decide(list) = %+v, want public", v)
	}
	if v := p.Decide(goproxy.Request{Kind: goproxy.KindSumDBSupported, SumDB: "sum.example.test"}); v.Allow {
		t.Errorf("zero policy: Decide(sumdb supported) = %+v, want denied", v)
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{"malformed glob", Config{Private: []string{"corp.example/["}}},
		{"sumdb name with slash", Config{SumDBs: []string{"sum.example.test/x"}}},
		{"sumdb name upper case", Config{SumDBs: []string{"Sum.Example.test"}}},
		{"empty sumdb name", Config{SumDBs: []string{""}}},
	}
	for _, tt := range tests {
		if _, err := New(tt.cfg); err == nil {
			t.Errorf("New(%s) = nil error, want one", tt.name)
		}
	}
}
