package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/modgate/modgate/upstream"
	"github.com/modgate/modgate/verify"
)

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "modgate.yaml")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadConfig(t *testing.T) {
	cfg, err := loadConfig(writeConfig(t, `
listen: 127.0.0.1:0
upstreams:
  - url: https://proxy.example.test/
  - name: corp
    url: http://10.1.2.3:3000/go
    private: true
private: [corp.example]
sumdb: [sum.example.test]
limits:
  fetch_timeout: 2m
`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "127.0.0.1:0" || cfg.Limits.FetchTimeout != 2*time.Minute {
		t.Errorf("loadConfig: listen %q, fetch_timeout %v", cfg.Listen, cfg.Limits.FetchTimeout)
	}
	set, err := cfg.upstreams(goEnv{GOPROXY: "https://ignored.example.test"})
	if err != nil {
		t.Fatal(err)
	}
	if len(set.Public) != 1 || set.Public[0].Name != "proxy.example.test" || set.Public[0].URL.String() != "https://proxy.example.test" {
		t.Errorf("public upstreams = %+v", set.Public)
	}
	if len(set.Private) != 1 || set.Private[0].Name != "corp" || set.Private[0].URL.Path != "/go" {
		t.Errorf("private upstreams = %+v", set.Private)
	}
}

func TestLoadConfigErrorsNameTheField(t *testing.T) {
	tests := []struct {
		name, text, want string
	}{
		{"unknown field", "listen: x\nlisten_addr: y\n", "listen_addr"},
		{"unknown nested field", "limits:\n  fetch_timout: 1s\n", "fetch_timout"},
		{"bad duration", "limits:\n  fetch_timeout: soon\n", "soon"},
		{"negative limit", "limits:\n  max_target_bytes: -1\n", "limits.max_target_bytes"},
		{"cert without key", "tls:\n  cert: a.pem\n", "tls"},
		{"client ca without cert", "tls:\n  client_ca: ca.pem\n", "tls.client_ca"},
		{"upstream without url", "upstreams:\n  - name: x\n", "upstreams[0].url"},
		{"duplicate key", "listen: a\nlisten: b\n", "listen"},
		{"mesh tls cert without key", "mesh_tls:\n  cert: a.pem\n", "mesh_tls: cert and key"},
		{"admin tls cert without key", "admin_tls:\n  cert: a.pem\n", "admin_tls: cert and key"},
		{"admin tls client ca without cert", "admin_tls:\n  client_ca: ca.pem\n", "admin_tls.client_ca"},
		{"console group not a name", "console:\n  groups: [ops, \"a b\"]\n", "console.groups"},
		{"console sample interval too short", "console:\n  sample_interval: 1ms\n", "console.sample_interval"},
		{"console audit events negative", "console:\n  audit_events: -1\n", "console.audit_events"},
		{"inventory max keys negative", "inventory:\n  max_keys: -1\n", "inventory.max_keys"},
		{"mesh tls without client ca", "mesh_tls:\n  cert: a.pem\n  key: a-key.pem\n  allowed_clients: [spiffe://x/y]\n", "mesh_tls.client_ca"},
		{"mesh tls without allowed clients", "mesh_tls:\n  cert: a.pem\n  key: a-key.pem\n  client_ca: ca.pem\n", "mesh_tls.allowed_clients"},
		{"mesh tls allowed client not a name", "mesh_tls:\n  cert: a.pem\n  key: a-key.pem\n  client_ca: ca.pem\n  allowed_clients: [spiffe://x/y, \"a b\"]\n", "mesh_tls.allowed_clients[1]"},
		{"mesh tls allowed client uri without host", "mesh_tls:\n  cert: a.pem\n  key: a-key.pem\n  client_ca: ca.pem\n  allowed_clients: [\"spiffe:///y\"]\n", "mesh_tls.allowed_clients[0]"},
		{"mesh tls client ca alone", "mesh_tls:\n  client_ca: ca.pem\n", "mesh_tls"},
		{"insecure mesh listeners not a bool", "insecure_mesh_listeners: maybe\n", "insecure_mesh_listeners"},
		{"blob tls without ca", "xds:\n  blob_tls: {cert: c.pem, key: k.pem}\n", "xds.blob_tls.ca"},
		{"blob tls without key", "xds:\n  blob_tls: {cert: c.pem, ca: ca.pem}\n", "xds.blob_tls"},
		{"blob tls san without a blob host", "xds:\n  blob_addr: nohost\n  blob_tls: {cert: c.pem, key: k.pem, ca: ca.pem}\n", "xds.blob_tls.san"},
		{"sumdb url not http", "sumdb_url: ftp://sum.example.test\n", "sumdb_url"},
		{"sumdb url without host", "sumdb_url: https:///sumdb\n", "sumdb_url"},
		{"private not found value", "private_not_found: 404\n", "private_not_found"},
		{"vcs negative timeout", "vcs:\n  timeout: -1s\n", "vcs.timeout"},
		{"vcs env not key=value", "vcs:\n  env: [GOINSECURE]\n", "vcs.env[0]"},
		{"vcs two patterns in one", "vcs:\n  patterns: [\"a.example,b.example\"]\n", "vcs.patterns[0]"},
		{"vcs unknown field", "vcs:\n  netrc_file: x\n", "netrc_file"},
		{"vcs advertise not ip", "vcs:\n  listen: 0.0.0.0:9004\n  advertise: modgate:9004\n", "vcs.advertise"},
		{"vcs advertise without listen", "vcs:\n  advertise: 10.0.0.9:9004\n", "vcs.listen is off"},
		{"private not found contradicted", "private_not_found: pass\npass_private_not_found: false\n", "pass_private_not_found"},
		{"negative verify interval", "cache:\n  verify_interval: -1h\n", "cache.verify_interval"},
		{"store type", "store:\n  type: gcs\n  bucket: b\n", "store: type"},
		{"store without bucket", "store:\n  type: s3\n", "store: bucket"},
		{"store bucket without type", "store:\n  bucket: b\n", "store: bucket or endpoint"},
		{"store prefix without slash", "store:\n  type: s3\n  bucket: b\n  prefix: cache\n", "store: prefix"},
		{"store small parts", "store:\n  type: s3\n  bucket: b\n  part_size: 1MiB\n", "store: part_size"},
		{"store unknown field", "store:\n  type: s3\n  bucket: b\n  secret_key: x\n", "secret_key"},
		{"coordination without store", "coordination:\n  type: nats\n  url: nats://127.0.0.1:4222\n", "coordination: needs a shared store"},
		{"coordination type", "store: {type: s3, bucket: b}\ncoordination:\n  type: redis\n", "coordination: type"},
		{"coordination without url", "store: {type: s3, bucket: b}\ncoordination:\n  type: nats\n", "coordination: url"},
		{"coordination short lease", "store: {type: s3, bucket: b}\ncoordination: {type: nats, url: \"nats://h:4222\", lease_ttl: 10ms}\n", "coordination: lease_ttl"},
		{"coordination user without password", "store: {type: s3, bucket: b}\ncoordination: {type: nats, url: \"nats://h:4222\", user: u}\n", "password_file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := loadConfig(writeConfig(t, tt.text))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("loadConfig(%q) = %v, want an error naming %q", tt.text, err, tt.want)
			}
		})
	}
}

func TestPrivateNotFound(t *testing.T) {
	tests := []struct {
		text   string
		refuse bool
	}{
		{"", false},
		{"private_not_found: pass\n", false},
		{"private_not_found: refuse\n", true},
		{"pass_private_not_found: false\n", true}, // the older spelling keeps working
		{"pass_private_not_found: true\n", false},
		{"private_not_found: refuse\npass_private_not_found: false\n", true},
	}
	for _, tt := range tests {
		path := filepath.Join(t.TempDir(), "modgate.yaml")
		if err := os.WriteFile(path, []byte(tt.text), 0o644); err != nil {
			t.Fatal(err)
		}
		cfg, err := loadConfig(path)
		if err != nil {
			t.Fatalf("loadConfig(%q): %v", tt.text, err)
		}
		if got, err := cfg.refusePrivateNotFound(); err != nil || got != tt.refuse {
			t.Errorf("refusePrivateNotFound(%q) = %v, %v; want %v", tt.text, got, err, tt.refuse)
		}
	}
}

func TestVCSUpstream(t *testing.T) {
	env := goEnv{GOPROXY: "https://proxy.example", GOPRIVATE: "corp.example.com,*.git.corp"}
	tests := []struct {
		text     string
		patterns []string // of the vcs upstream; nil: none
		err      string
	}{
		{text: "", patterns: nil},
		{text: "vcs: {}\n", patterns: []string{"corp.example.com", "*.git.corp"}},
		{text: "vcs:\n  patterns: [corp.example.com/team]\n", patterns: []string{"corp.example.com/team"}},
		{text: "vcs:\n  patterns: [github.com/corp]\n", err: "vcs.patterns[0]"},
		{text: "private: []\nvcs: {}\n", err: "no private patterns"},
		{text: "upstreams:\n  - {name: vcs, url: https://x.example}\nvcs: {}\n", err: "VCS origin"},
		{text: "upstreams:\n  - {name: pub, url: https://p.example}\n  - {name: corp, url: http://10.0.0.2:8080, private: true}\nvcs: {listen: \"0.0.0.0:9004\", advertise: \"10.0.0.9:9004\"}\n", err: "vcs.advertise"},
		{text: "vcs: {listen: \"0.0.0.0:9004\", advertise: \"10.0.0.9:9004\"}\n", patterns: []string{"corp.example.com", "*.git.corp"}},
	}
	for _, tt := range tests {
		path := filepath.Join(t.TempDir(), "modgate.yaml")
		if err := os.WriteFile(path, []byte(tt.text), 0o644); err != nil {
			t.Fatal(err)
		}
		cfg, err := loadConfig(path)
		if err != nil {
			t.Fatalf("loadConfig(%q): %v", tt.text, err)
		}
		set, err := cfg.upstreams(env)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("upstreams(%q) = %v, want an error naming %s", tt.text, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("upstreams(%q): %v", tt.text, err)
		}
		var got []string
		for _, u := range set.Private {
			if u.Name == VCSUpstream {
				got = u.Patterns
				if u.URL.Host != upstream.InProcessHost {
					t.Errorf("the VCS upstream's host = %q, want %q", u.URL.Host, upstream.InProcessHost)
				}
			}
		}
		if !slices.Equal(got, tt.patterns) {
			t.Errorf("upstreams(%q): VCS patterns %q, want %q", tt.text, got, tt.patterns)
		}
	}
}

func TestUpstreamsFromGOPROXY(t *testing.T) {
	tests := []struct {
		goproxy string
		want    []string // names
		wantErr bool
	}{
		{goproxy: "https://a.example.test,direct", want: []string{"a.example.test"}},
		{goproxy: "https://a.example.test|https://b.example.test/sub,off", want: []string{"a.example.test", "b.example.test"}},
		{goproxy: "direct", wantErr: true},
		{goproxy: "off", wantErr: true},
		{goproxy: "", wantErr: true},
		{goproxy: "ftp://a.example.test", wantErr: true},
		{goproxy: "https://a.example.test,https://a.example.test", wantErr: true},
	}
	for _, tt := range tests {
		set, err := new(fileConfig).upstreams(goEnv{GOPROXY: tt.goproxy})
		if tt.wantErr {
			if err == nil {
				t.Errorf("upstreams(GOPROXY=%q) = %+v, want an error", tt.goproxy, set.Public)
			}
			continue
		}
		if err != nil {
			t.Errorf("upstreams(GOPROXY=%q): %v", tt.goproxy, err)
			continue
		}
		var names []string
		for _, u := range set.Public {
			names = append(names, u.Name)
		}
		if !slices.Equal(names, tt.want) {
			t.Errorf("upstreams(GOPROXY=%q) = %q, want %q", tt.goproxy, names, tt.want)
		}
	}
}

func TestDefaultsFromGoEnv(t *testing.T) {
	env := goEnv{GOSUMDB: "sum.example.test+abcd1234+AAAA https://sum.example.test", GOPRIVATE: "corp.example", GONOSUMDB: "other.example"}
	cfg := new(fileConfig)
	if got := cfg.sumDBs(env); !slices.Equal(got, []string{"sum.example.test"}) {
		t.Errorf("sumDBs(%q) = %q", env.GOSUMDB, got)
	}
	if got := cfg.sumDBs(goEnv{GOSUMDB: "off"}); got != nil {
		t.Errorf("sumDBs(off) = %q, want none", got)
	}
	if got := cfg.privatePatterns(env); !slices.Equal(got, []string{"corp.example", "other.example"}) {
		t.Errorf("privatePatterns = %q", got)
	}
	explicit := &fileConfig{Private: []string{}, SumDB: []string{}}
	if got := explicit.privatePatterns(env); len(got) != 0 {
		t.Errorf("explicit empty private = %q, want none", got)
	}
}

func TestRunUsage(t *testing.T) {
	tests := []struct {
		args     []string
		wantCode int
		wantOut  string
	}{
		{nil, 2, "Usage:"},
		{[]string{"help"}, 0, "serve"},
		{[]string{"bogus"}, 2, `unknown command "bogus"`},
		{[]string{"serve", "--help"}, 0, "GOPROXY=http://127.0.0.1:8080"},
		{[]string{"help", "serve"}, 0, "-listen address"},
		{[]string{"serve", "extra"}, 2, "unexpected argument"},
		{[]string{"serve", "--log-level", "loud"}, 2, "--log-level"},
		{[]string{"serve", "--config", "/nonexistent/modgate.yaml"}, 1, "no such file"},
	}
	for _, tt := range tests {
		var out bytes.Buffer
		code := run(context.Background(), tt.args, &out, &out)
		if code != tt.wantCode || !strings.Contains(out.String(), tt.wantOut) {
			t.Errorf("run(%q) = %d, output %q; want %d containing %q", tt.args, code, out.String(), tt.wantCode, tt.wantOut)
		}
	}
}

func TestParseByteSize(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{in: "1024", want: 1024},
		{in: "256MiB", want: 256 << 20},
		{in: "10 GiB", want: 10 << 30},
		{in: "1KB", want: 1000},
		{in: "5B", want: 5},
		{in: "-1", wantErr: true},
		{in: "1.5GiB", wantErr: true},
		{in: "lots", wantErr: true},
		{in: "99999999999TiB", wantErr: true},
	}
	for _, tt := range tests {
		got, err := parseByteSize(tt.in)
		if (err != nil) != tt.wantErr || (!tt.wantErr && got != tt.want) {
			t.Errorf("parseByteSize(%q) = %d, %v; want %d, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestCacheAndBudgetConfig(t *testing.T) {
	cfg, err := loadConfig(writeConfig(t, `
cache_dir: /var/cache/modgate
cache:
  hot_bytes: 64MiB
  disk_bytes: 2GiB
  stale_if_error: 1h
  ttl:
    query: 30s
    negative: 1m
budget:
  client: {rate: 5, burst: 10}
inventory:
  max_keys: 5000
`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Inventory.MaxKeys != 5000 {
		t.Errorf("inventory.max_keys = %d, want 5000", cfg.Inventory.MaxKeys)
	}
	cc, err := cfg.cacheConfig()
	if err != nil {
		t.Fatal(err)
	}
	if cc.Dir != "/var/cache/modgate" || cc.HotBytes != 64<<20 || cc.DiskBytes != 2<<30 || cc.StaleIfError != time.Hour || cc.TTL.Query != 30*time.Second || cc.TTL.Negative != time.Minute {
		t.Errorf("cacheConfig = %+v", cc)
	}
	b, err := cfg.budget(time.Now)
	if err != nil || b == nil {
		t.Fatalf("budget() = %v, %v", b, err)
	}
	for i := range 10 {
		if ok, _, _ := b.Charge("c", "m"); !ok {
			t.Fatalf("charge %d refused within the configured burst of 10", i)
		}
	}
	if ok, which, _ := b.Charge("c", "m"); ok || which != "client" {
		t.Errorf("charge 11 = %v %q, want refused by the client budget", ok, which)
	}
	off, err := loadConfig(writeConfig(t, "budget:\n  off: true\n"))
	if err != nil {
		t.Fatal(err)
	}
	if b, err := off.budget(time.Now); b != nil || err != nil {
		t.Errorf("budget with off: true = %v, %v; want none", b, err)
	}
	if _, err := loadConfig(writeConfig(t, "cache:\n  hot_bytes: huge\n")); err == nil || !strings.Contains(err.Error(), "huge") {
		t.Errorf("bad hot_bytes: %v, want an error naming the value", err)
	}
}

func TestSumDBKey(t *testing.T) {
	_, testKey, err := note.GenerateKey(rand.Reader, "sum.example.test")
	if err != nil {
		t.Fatal(err)
	}
	known := verify.KnownKeys["sum.golang.org"]
	tests := []struct {
		cfgKey, gosumdb string
		wantName        string // of sumDBs() with no sumdb list configured
		wantKey         string
		wantErr         bool
	}{
		{gosumdb: "sum.golang.org", wantName: "sum.golang.org", wantKey: known},
		{gosumdb: "sum.golang.google.cn", wantName: "sum.golang.org", wantKey: known},
		{gosumdb: testKey, wantName: "sum.example.test", wantKey: testKey},
		{gosumdb: testKey + " https://sum.example.test", wantName: "sum.example.test", wantKey: testKey},
		{gosumdb: "off"},
		{gosumdb: ""},
		{gosumdb: "sum.unknown.test", wantName: "sum.unknown.test", wantErr: true},
		{gosumdb: "sum.example.test+zz+garbage", wantName: "sum.example.test", wantErr: true},
		{cfgKey: testKey, gosumdb: "sum.golang.org", wantName: "sum.golang.org", wantKey: testKey},
		{cfgKey: "off", gosumdb: "sum.golang.org", wantName: "sum.golang.org"},
	}
	for _, tt := range tests {
		cfg := &fileConfig{SumDBKey: tt.cfgKey}
		env := goEnv{GOSUMDB: tt.gosumdb}
		key, err := cfg.sumDBKey(env)
		if (err != nil) != tt.wantErr || key != tt.wantKey {
			t.Errorf("sumDBKey(cfg %q, GOSUMDB %q) = %q, %v; want %q, error %v", tt.cfgKey, tt.gosumdb, key, err, tt.wantKey, tt.wantErr)
		}
		var wantNames []string
		if tt.wantName != "" {
			wantNames = []string{tt.wantName}
		}
		if got := cfg.sumDBs(env); !slices.Equal(got, wantNames) {
			t.Errorf("sumDBs(GOSUMDB %q) = %q, want %q", tt.gosumdb, got, wantNames)
		}
	}
}

func TestEveryCommandHasHelp(t *testing.T) {
	var top bytes.Buffer
	run(context.Background(), []string{"help"}, &top, &top)
	for _, c := range commands {
		var out bytes.Buffer
		if code := run(context.Background(), []string{c.name, "--help"}, &out, &out); code != 0 || !strings.Contains(out.String(), "Usage") {
			t.Errorf("modgate %s --help = %d: %q", c.name, code, out.String())
		}
		if !strings.Contains(top.String(), c.name) {
			t.Errorf("modgate help does not list %s", c.name)
		}
	}
}
