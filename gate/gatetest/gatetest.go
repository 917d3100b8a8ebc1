// Package gatetest is the one behaviour suite of modgate's processor,
// which every front end runs: the standalone HTTP front end (package
// gateway) and the ext_proc server behind the Envoy emulator (package
// extproc). It is modelled on golang.org/x/mod/sumdb/storage's TestStorage:
// one table of behaviours, many implementations.
//
// Each row sets up hermetic upstreams (a module proxy and checksum
// database on 127.0.0.1, package testproxy) and a processor over a fresh
// cache, sends its requests through the front end, and asserts what the
// client got (status, body, cache status), the one audit event per request
// (decision, rule, upstream credited, verification), and what every
// upstream saw: the canonical path only, how often, and modgate's headers
// only, never the client's. A row that cannot hold in one mode carries
// that mode's expectations and says why.
package gatetest

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"golang.org/x/mod/semver"

	"github.com/modgate/modgate/audit"
	"github.com/modgate/modgate/auth"
	"github.com/modgate/modgate/cache"
	"github.com/modgate/modgate/gate"
	"github.com/modgate/modgate/goproxy"
	"github.com/modgate/modgate/integration/testproxy"
	"github.com/modgate/modgate/ledger"
	"github.com/modgate/modgate/policy"
	"github.com/modgate/modgate/upstream"
	"github.com/modgate/modgate/verify"
)

// Mode names a front end's mode; rows may expect different things of each.
type Mode string

// The modes.
const (
	Standalone Mode = "standalone"
	Mesh       Mode = "mesh"
)

// A FrontEnd serves a processor to clients, as one mode does.
type FrontEnd interface {
	// Mode says which of a row's expectations apply.
	Mode() Mode
	// Start serves env.Processor until t ends and returns its client.
	Start(t testing.TB, env *Env) Client
}

// Env is what a front end serves: the processor and what it was built on.
type Env struct {
	Processor *gate.Processor
	Cache     *cache.Cache
	// Public and Private are the configured upstreams, in order. Where a
	// router picks the upstream (Envoy's, in mesh mode), the route's
	// upstream is Public[Route] / Private[0], as the control plane
	// publishes the first healthy one.
	Public, Private []*upstream.Upstream
	Route           int
	Logger          *slog.Logger
}

// A Client sends requests through a front end.
type Client interface {
	// Do sends one request; an error is a transport failure, not a status.
	Do(ctx context.Context, r Request) (*Response, error)
	// SourceIP is the client address the audit records for this client.
	SourceIP() string
}

// A Request is what the go command (or an attacker) sends.
type Request struct {
	Method string
	Target string      // the request target, sent as written
	Header http.Header // the client's headers
	// ResetAfterChunks, in mesh mode, resets the stream once that many
	// response body chunks went downstream: the client left mid-body.
	ResetAfterChunks int
}

// A Response is what the client got.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
	// Reset reports a stream reset after the headers went out: the client
	// saw an error, not a complete response.
	Reset bool
}

// clientHeader is what every row's client sends beside the request:
// credentials and identity that must never reach an upstream.
var clientHeader = http.Header{
	"Authorization":   {"Bearer client-secret-token"},
	"Cookie":          {"session=client-secret-cookie"},
	"X-Client-Secret": {"do-not-forward"},
	"User-Agent":      {"Go-http-client/1.1 (the client's own)"},
}

// fault makes an upstream answer every module request with a status;
// checksum-database requests are served, so verification still works.
type fault int

// setup is a row's upstreams and processor options.
type setup struct {
	public     []fault // one per public upstream; 0 serves (default: one upstream that serves)
	deadPublic bool    // a public upstream before the others that refuses connections
	route      int     // the public upstream Envoy's route uses (mesh)
	noPrivate  bool
	refusePriv bool
	tamper     map[string][]byte // module path → body, served by every public upstream
	delay      time.Duration     // every public module request waits this long
	drained    bool              // after before, every upstream is drained (configured, none healthy)
	rules      policy.RulesConfig
	// auth requires a token: the row's client presents a valid one
	// (Bearer) unless credentials says otherwise.
	auth        bool
	credentials string // "none": no Authorization; "wrong": the client's own bogus one
	// vulns is the known-vulnerability gate's action for example.com/a
	// v1.0.0 (GO-2026-0001, fixed in v1.1.0): "deny" or "warn".
	vulns string
	// cooldown holds back example.com/a v1.1.0 and later: too new.
	cooldown bool
	// claim gives the private upstream module patterns it alone serves
	// (as the VCS origin has).
	claim []string
	// lease is how the other replicas' fill coordination behaves (see
	// fakeLeases): "elsewhere", "down", "lapsed" or "slow". "": none.
	lease string
	// storeDown gives the cache a shared tier that cannot be reached.
	storeDown bool
	// diskBroken leaves the disk tier unable to write a body (its
	// temporary directory replaced by a file), as a full or read-only
	// filesystem would.
	diskBroken bool
	// portal is an upstream path every public upstream answers with a
	// captive portal's page: 200, and HTML.
	portal string
	// faultFirst arms the portal for the requests before, and takes it
	// away for the row's own: what a fault left behind.
	faultFirst bool
}

// want is what a row expects in one mode.
type want struct {
	status      int
	auditStatus int    // the audited status when it differs from status (-1: none sent)
	body        string // substring of the body
	notBody     string // not a substring of the body
	cache       string // X-Modgate-Cache and the audit's cache status
	decision    string
	rule        string
	upstream    string   // the upstream the audit credits
	verified    string   // the audit's verification value
	reset       bool     // the stream is reset mid-body
	user        string   // the audit's user.name
	vulnIDs     []string // the audit's vulnerability.id
	warning     bool     // the answer carries a Warning header
	// saw counts, per upstream name, the requests for the row's canonical
	// path (all its requests, before and after).
	saw map[string]int
}

// row is one behaviour.
type row struct {
	name   string
	method string
	target string
	setup  setup
	// before are targets requested first, through the same front end,
	// with no fault installed: the cache state the row starts from.
	before []string
	// advance moves the clock after before.
	advance time.Duration
	// concurrent sends the row's request this many times at once.
	concurrent int
	want       want
	// mesh replaces want in mesh mode; why says why the modes differ.
	mesh *want
	why  string
}

// Run runs every row, and the scenarios, through fe.
func Run(t *testing.T, fe FrontEnd) {
	mods := modules(t)
	for _, r := range rows() {
		t.Run(r.name, func(t *testing.T) {
			t.Parallel()
			r.run(t, fe, mods)
		})
	}
	t.Run("stream ends mid-fill", func(t *testing.T) { t.Parallel(); streamEnd(t, fe, mods) })
}

const (
	sumdbName = testproxy.DefaultSumDB
	bigPath   = "example.com/big"
	// bigModPath's go.mod is over 20 KiB.
	bigModPath = "example.com/bigmod"
)

// Policy rules of the rows that test them.
var (
	denyOld = policy.RulesConfig{Rules: []policy.RuleConfig{
		{Name: "old-a", Match: "example.com/a", Versions: "<v1.1.0", Action: "deny", Reason: "use v1.1.0 or later"},
	}}
	blockMod = policy.RulesConfig{Rules: []policy.RuleConfig{
		{Name: "old-a", Match: "example.com/a", Versions: "<v1.1.0", Action: "deny", BlockMod: true},
	}}
	denyNew = policy.RulesConfig{Rules: []policy.RuleConfig{
		{Name: "new-a", Match: "example.com/a", Versions: ">=v1.1.0", Action: "deny"},
	}}
)

func rows() []row {
	one := func(name string, n int) map[string]int { return map[string]int{name: n} }
	multi := "Envoy's router sends a miss to one upstream cluster: trying the next upstream is the control plane's job (drain) and Envoy's, not the fill's"
	return []row{
		{name: "zip miss", target: "/example.com/a/@v/v1.0.0.zip",
			want: want{status: 200, cache: "miss", decision: "forward", upstream: "pub0", verified: "verified", saw: one("pub0", 1)}},
		{name: "mod miss", target: "/example.com/a/@v/v1.0.0.mod",
			want: want{status: 200, body: "module example.com/a", cache: "miss", decision: "forward", upstream: "pub0", verified: "verified", saw: one("pub0", 1)}},
		{name: "head info", method: "HEAD", target: "/example.com/a/@v/v1.0.0.info",
			want: want{status: 200, cache: "miss", decision: "forward", upstream: "pub0", saw: one("pub0", 1)}},
		{name: "list", target: "/example.com/a/@v/list",
			want: want{status: 200, body: "v1.1.0", cache: "miss", decision: "forward", upstream: "pub0", saw: one("pub0", 1)}},
		{name: "latest", target: "/example.com/a/@latest",
			want: want{status: 200, body: `"v1.1.0"`, cache: "miss", decision: "forward", upstream: "pub0", saw: one("pub0", 1)}},
		{name: "go.mod larger than the hot tier's largest entry", target: "/" + bigModPath + "/@v/v1.0.0.mod",
			want: want{status: 200, body: "module " + bigModPath, cache: "miss", decision: "forward", upstream: "pub0", verified: "verified", saw: one("pub0", 1)}},
		{name: "escaped upper case", target: "/example.com/!upper/m/@v/v1.0.0.mod",
			want: want{status: 200, body: "module example.com/Upper/m", cache: "miss", decision: "forward", upstream: "pub0", verified: "verified", saw: one("pub0", 1)}},
		{name: "query refused", target: "/example.com/a/@v/v1.0.0.info?x=1",
			want: want{status: 400, cache: "bypass", decision: "reject", rule: "grammar", saw: one("pub0", 0)}},
		{name: "public not found", target: "/example.com/nope/@v/list",
			want: want{status: 404, body: "not found", cache: "miss", decision: "forward", upstream: "pub0", saw: one("pub0", 1)}},
		{name: "percent-encoded at marker", target: "/example.com/a/%40v/list",
			want: want{status: 400, body: "percent-encoding", cache: "bypass", decision: "reject", rule: "grammar"}},
		{name: "percent-encoded letter", target: "/example.com/%61/@v/v1.0.0.mod",
			want: want{status: 400, body: "percent-encoding", cache: "bypass", decision: "reject", rule: "grammar"}},
		{name: "grammar reject", target: "/example.com/a/@v/v1.0.0/../../x",
			want: want{status: 400, cache: "bypass", decision: "reject", rule: "grammar"}},
		{name: "no endpoint", target: "/favicon.ico",
			want: want{status: 404, cache: "bypass", decision: "reject", rule: "no-endpoint"}},
		{name: "method", method: "POST", target: "/example.com/a/@v/list",
			want: want{status: 405, cache: "bypass", decision: "reject", rule: "method", saw: one("pub0", 0)}},
		{name: "upstream 500 is 502", target: "/example.com/a/@v/list", setup: setup{public: []fault{500}},
			want: want{status: 502, body: "answered 500 Internal Server Error: testproxy: injected fault", cache: "miss", decision: "forward", rule: "upstream", upstream: "pub0", saw: one("pub0", 1)}},
		{name: "upstream 504 is 504", target: "/example.com/a/@v/list", setup: setup{public: []fault{504}},
			want: want{status: 504, cache: "miss", decision: "forward", rule: "upstream", upstream: "pub0", saw: one("pub0", 1)}},
		{name: "upstream 429 is 503", target: "/example.com/a/@v/list", setup: setup{public: []fault{429}},
			want: want{status: 503, cache: "miss", decision: "forward", rule: "upstream", upstream: "pub0", saw: one("pub0", 1)}},
		{name: "upstream 403 is 502", target: "/example.com/a/@v/list", setup: setup{public: []fault{403}},
			want: want{status: 502, cache: "miss", decision: "forward", rule: "upstream", upstream: "pub0", saw: one("pub0", 1)}},
		{name: "two healthy upstreams, not found", target: "/example.com/nope/@v/list", setup: setup{public: []fault{0, 0}},
			want: want{status: 404, body: "not found", cache: "miss", decision: "forward", upstream: "pub1", saw: map[string]int{"pub0": 1, "pub1": 1}},
			mesh: &want{status: 404, body: "not found", cache: "miss", decision: "forward", upstream: "pub0", saw: map[string]int{"pub0": 1, "pub1": 0}},
			why:  "standalone asks each upstream before it says not found; in mesh Envoy's route has one upstream, whose 404 is the answer"},
		{name: "the upstream Envoy used is credited", target: "/example.com/a/@v/v1.0.0.mod", setup: setup{public: []fault{0, 0}, route: 1},
			want: want{status: 200, cache: "miss", decision: "forward", upstream: "pub0", verified: "verified", saw: map[string]int{"pub0": 1, "pub1": 0}},
			mesh: &want{status: 200, cache: "miss", decision: "forward", upstream: "pub1", verified: "verified", saw: map[string]int{"pub0": 0, "pub1": 1}},
			why:  "the control plane published the second upstream to Envoy; standalone asks in configured order"},
		{name: "failover after 500", target: "/example.com/a/@v/v1.0.0.mod", setup: setup{public: []fault{500, 0}},
			want: want{status: 200, cache: "miss", decision: "forward", upstream: "pub1", verified: "verified", saw: map[string]int{"pub0": 1, "pub1": 1}},
			mesh: &want{status: 502, cache: "miss", decision: "forward", rule: "upstream", upstream: "pub0", saw: map[string]int{"pub0": 1, "pub1": 0}},
			why:  multi},
		{name: "fall through 404", target: "/example.com/a/@v/v1.0.0.mod", setup: setup{public: []fault{404, 0}},
			want: want{status: 200, cache: "miss", decision: "forward", upstream: "pub1", verified: "verified", saw: map[string]int{"pub0": 1, "pub1": 1}},
			mesh: &want{status: 404, cache: "miss", decision: "forward", upstream: "pub0", saw: map[string]int{"pub0": 1, "pub1": 0}},
			why:  multi},
		{name: "500 then 404 is 502", target: "/example.com/a/@v/v1.0.0.mod", setup: setup{public: []fault{500, 404}},
			want: want{status: 502, cache: "miss", decision: "forward", rule: "upstream", upstream: "pub1", saw: map[string]int{"pub0": 1, "pub1": 1}},
			mesh: &want{status: 502, cache: "miss", decision: "forward", rule: "upstream", upstream: "pub0", saw: map[string]int{"pub0": 1, "pub1": 0}},
			why:  multi},
		{name: "connection refused", target: "/example.com/a/@v/list", setup: setup{deadPublic: true, public: []fault{}},
			want: want{status: 502, cache: "miss", decision: "forward", rule: "upstream", upstream: "dead"},
			mesh: &want{status: 503, auditStatus: -1, cache: "miss", decision: "forward"},
			why:  "Envoy answers a connection failure itself (503) and does not send it to ext_proc: the processor audits a stream that ended before any response; Envoy's access log has the 503"},
		{name: "failover after refused", target: "/example.com/a/@v/list", setup: setup{deadPublic: true, public: []fault{0}, route: 1},
			want: want{status: 200, cache: "miss", decision: "forward", upstream: "pub0", saw: one("pub0", 1)}},
		{name: "private", target: "/corp.example/private/@v/v1.0.0.info",
			want: want{status: 200, cache: "miss", decision: "forward", upstream: "priv0", saw: map[string]int{"priv0": 1, "pub0": 0}}},
		{name: "private mod in the ledger", target: "/corp.example/private/@v/v1.0.0.mod",
			want: want{status: 200, cache: "miss", decision: "forward", upstream: "priv0", verified: "ledger", saw: map[string]int{"priv0": 1, "pub0": 0}}},
		{name: "private not found is 404", target: "/corp.example/nope/@v/list",
			want: want{status: 404, body: "not found", cache: "miss", decision: "forward", upstream: "priv0", saw: map[string]int{"priv0": 1, "pub0": 0}}},
		{name: "private package path probe is 404", target: "/corp.example/private/pkg/sub/@v/v1.0.0.info",
			want: want{status: 404, cache: "miss", decision: "forward", upstream: "priv0", saw: map[string]int{"priv0": 1, "pub0": 0}}},
		{name: "private not found refused", target: "/corp.example/nope/@v/list", setup: setup{refusePriv: true},
			want: want{status: 403, cache: "miss", decision: "deny", rule: "private-not-found", upstream: "priv0", saw: map[string]int{"priv0": 1, "pub0": 0}}},
		{name: "private negative hit refused", target: "/corp.example/nope/@v/list", before: []string{"/corp.example/nope/@v/list"}, setup: setup{refusePriv: true},
			want: want{status: 403, cache: "negative", decision: "deny", rule: "private-not-found", saw: map[string]int{"priv0": 1, "pub0": 0}}},
		{name: "private upstream claiming the module", target: "/corp.example/private/@v/v1.0.0.info", setup: setup{claim: []string{"corp.example/private"}},
			want: want{status: 200, cache: "miss", decision: "forward", upstream: "priv0", saw: map[string]int{"priv0": 1, "pub0": 0}}},
		{name: "no private upstream claims the module", target: "/corp.example/private/@v/v1.0.0.info", setup: setup{claim: []string{"corp.example/other"}},
			want: want{status: 403, body: "no private upstream serves corp.example/private", cache: "miss", decision: "deny", rule: "private-no-upstream", saw: map[string]int{"priv0": 0, "pub0": 0}}},
		{name: "private without upstream", target: "/corp.example/private/@v/list", setup: setup{noPrivate: true},
			want: want{status: 403, cache: "bypass", decision: "deny", rule: "private-no-upstream", saw: one("pub0", 0)}},
		{name: "sumdb supported", target: "/sumdb/" + sumdbName + "/supported",
			want: want{status: 200, cache: "bypass", decision: "serve"}},
		{name: "sumdb lookup", target: "/sumdb/" + sumdbName + "/lookup/example.com/a@v1.0.0",
			want: want{status: 200, body: "example.com/a v1.0.0 h1:", cache: "miss", decision: "forward", upstream: "pub0"}},
		{name: "sumdb lookup of a version modgate verified is a hit", target: "/sumdb/" + sumdbName + "/lookup/example.com/a@v1.0.0", before: []string{"/example.com/a/@v/v1.0.0.mod"},
			want: want{status: 200, body: "example.com/a v1.0.0 h1:", cache: "hit", decision: "serve", saw: one("pub0", 1)}},
		{name: "sumdb lookup from a captive portal is 502", target: "/sumdb/" + sumdbName + "/lookup/example.com/a@v1.0.0", setup: setup{portal: "/sumdb/" + sumdbName + "/lookup/example.com/a@v1.0.0"},
			want: want{status: 502, body: "checksum database answer for /lookup/example.com/a@v1.0.0: lookup answer: malformed record data", cache: "miss", decision: "forward", rule: "verify-mismatch", upstream: "pub0", verified: "mismatch", saw: one("pub0", 1)}},
		{name: "sumdb tile from a captive portal is 502", target: "/sumdb/" + sumdbName + "/tile/8/0/000.p/1", setup: setup{portal: "/sumdb/" + sumdbName + "/tile/8/0/000.p/1"},
			want: want{status: 502, body: "want 32 for 1 hashes", cache: "miss", decision: "forward", rule: "verify-mismatch", upstream: "pub0", verified: "mismatch", saw: one("pub0", 1)}},
		{name: "sumdb latest from a captive portal is 502", target: "/sumdb/" + sumdbName + "/latest", setup: setup{portal: "/sumdb/" + sumdbName + "/latest"},
			want: want{status: 502, body: "signed tree head", cache: "miss", decision: "forward", rule: "verify-mismatch", upstream: "pub0", verified: "mismatch", saw: one("pub0", 1)}},
		{name: "a captive portal's sumdb answer is not kept", target: "/sumdb/" + sumdbName + "/lookup/example.com/a@v1.0.0", before: []string{"/sumdb/" + sumdbName + "/lookup/example.com/a@v1.0.0"},
			setup: setup{portal: "/sumdb/" + sumdbName + "/lookup/example.com/a@v1.0.0", faultFirst: true},
			want:  want{status: 200, body: "example.com/a v1.0.0 h1:", cache: "miss", decision: "forward", upstream: "pub0", saw: one("pub0", 2)}},
		{name: "a proven sumdb tile is kept", target: "/sumdb/" + sumdbName + "/tile/8/0/000.p/1", before: []string{"/sumdb/" + sumdbName + "/lookup/example.com/a@v1.0.0", "/sumdb/" + sumdbName + "/tile/8/0/000.p/1"},
			want: want{status: 200, cache: "hit", decision: "serve", saw: one("pub0", 1)}},
		{name: "a sumdb data tile is served, not kept", target: "/sumdb/" + sumdbName + "/tile/8/data/000.p/1", before: []string{"/sumdb/" + sumdbName + "/lookup/example.com/a@v1.0.0", "/sumdb/" + sumdbName + "/tile/8/data/000.p/1"},
			want: want{status: 200, cache: "miss", decision: "forward", upstream: "pub0", saw: one("pub0", 2)}},
		{name: "sumdb other name", target: "/sumdb/sum.other.test/supported",
			want: want{status: 403, cache: "bypass", decision: "deny", rule: policy.RuleSumDBAllowList}},
		{name: "sumdb private lookup", target: "/sumdb/" + sumdbName + "/lookup/corp.example/private@v1.0.0",
			want: want{status: 403, cache: "bypass", decision: "deny", rule: policy.RulePrivateSumDB}},
		{name: "hit", target: "/example.com/a/@v/v1.0.0.mod", before: []string{"/example.com/a/@v/v1.0.0.mod"},
			want: want{status: 200, body: "module example.com/a", cache: "hit", decision: "serve", saw: one("pub0", 1)}},
		{name: "large hit", target: "/" + bigPath + "/@v/v1.0.0.zip", before: []string{"/" + bigPath + "/@v/v1.0.0.zip"},
			want: want{status: 200, cache: "hit", decision: "serve", saw: one("pub0", 1)}},
		{name: "negative hit", target: "/example.com/nope/@v/list", before: []string{"/example.com/nope/@v/list"},
			want: want{status: 404, body: "not found", cache: "negative", decision: "serve", saw: one("pub0", 1)}},
		{name: "stale", target: "/example.com/a/@v/list", before: []string{"/example.com/a/@v/list"}, advance: 2 * time.Minute, setup: setup{public: []fault{500}},
			want: want{status: 200, body: "v1.1.0", cache: "stale", decision: "forward", upstream: "pub0", warning: true, saw: one("pub0", 2)}},
		{name: "hit while every upstream is drained", target: "/example.com/a/@v/v1.0.0.zip", before: []string{"/example.com/a/@v/v1.0.0.zip"}, setup: setup{drained: true},
			want: want{status: 200, cache: "hit", decision: "serve", saw: one("pub0", 1)}},
		{name: "negative hit while drained", target: "/example.com/nope/@v/list", before: []string{"/example.com/nope/@v/list"}, setup: setup{drained: true},
			want: want{status: 404, cache: "negative", decision: "serve", saw: one("pub0", 1)}},
		{name: "stale while drained", target: "/example.com/a/@v/list", before: []string{"/example.com/a/@v/list"}, advance: 2 * time.Minute, setup: setup{drained: true},
			want: want{status: 200, body: "v1.1.0", cache: "stale", decision: "forward", warning: true, saw: one("pub0", 1)}},
		{name: "miss while drained is 503", target: "/example.com/a/@v/v1.0.0.mod", setup: setup{drained: true},
			want: want{status: 503, body: "drained", cache: "miss", decision: "forward", rule: "upstream", saw: one("pub0", 0)}},
		{name: "private miss while drained is 503", target: "/corp.example/private/@v/list", setup: setup{drained: true},
			want: want{status: 503, cache: "miss", decision: "forward", rule: "upstream", saw: map[string]int{"priv0": 0}}},
		{name: "version denied by a rule", target: "/example.com/a/@v/v1.0.0.zip", setup: setup{rules: denyOld},
			want: want{status: 403, body: `example.com/a v1.0.0 is denied by rule "old-a": use v1.1.0 or later`, cache: "bypass", decision: "deny", rule: "old-a", saw: one("pub0", 0)}},
		{name: "info of a denied version", target: "/example.com/a/@v/v1.0.0.info", setup: setup{rules: denyOld},
			want: want{status: 403, cache: "bypass", decision: "deny", rule: "old-a", saw: one("pub0", 0)}},
		{name: "go.mod of a denied version stays servable", target: "/example.com/a/@v/v1.0.0.mod", setup: setup{rules: denyOld},
			want: want{status: 200, body: "module example.com/a", cache: "miss", decision: "forward", rule: "old-a", upstream: "pub0", verified: "verified", saw: one("pub0", 1)}},
		{name: "go.mod refused with block_mod", target: "/example.com/a/@v/v1.0.0.mod", setup: setup{rules: blockMod},
			want: want{status: 403, cache: "bypass", decision: "deny", rule: "old-a", saw: one("pub0", 0)}},
		{name: "list filtered", target: "/example.com/a/@v/list", setup: setup{rules: denyOld},
			want: want{status: 200, body: "v1.1.0", notBody: "v1.0.0", cache: "miss", decision: "forward", upstream: "pub0", saw: one("pub0", 1)}},
		{name: "cached list filtered", target: "/example.com/a/@v/list", before: []string{"/example.com/a/@v/list"}, setup: setup{rules: denyNew},
			want: want{status: 200, body: "v1.0.0", notBody: "v1.1.0", cache: "hit", decision: "serve", saw: one("pub0", 1)}},
		{name: "latest denied is the highest allowed", target: "/example.com/a/@latest", before: []string{"/example.com/a/@v/list"}, setup: setup{rules: denyNew},
			want: want{status: 200, body: `"v1.0.0"`, cache: "miss", decision: "forward", upstream: "pub0", saw: one("pub0", 1)}},
		{name: "token accepted", target: "/example.com/a/@v/v1.0.0.mod", setup: setup{auth: true},
			want: want{status: 200, cache: "miss", decision: "forward", upstream: "pub0", verified: "verified", user: "ci", saw: one("pub0", 1)}},
		{name: "no token when required", target: "/example.com/a/@v/v1.0.0.mod", setup: setup{auth: true, credentials: "none"},
			want: want{status: 401, cache: "bypass", decision: "deny", rule: "auth", saw: one("pub0", 0)},
			mesh: &want{status: 200, cache: "miss", decision: "forward", upstream: "pub0", verified: "verified", user: "spiffe://modgate.test/ns/ci/sa/builder", saw: one("pub0", 1)},
			why:  "in the mesh every client comes through its sidecar's mTLS, whose verified SPIFFE ID is an identity; the standalone client here has no certificate"},
		{name: "wrong token", target: "/example.com/a/@v/v1.0.0.mod", setup: setup{auth: true, credentials: "wrong"},
			want: want{status: 401, cache: "bypass", decision: "deny", rule: "auth", saw: one("pub0", 0)}},
		{name: "vulnerable version denied", target: "/example.com/a/@v/v1.0.0.zip", setup: setup{vulns: "deny"},
			want: want{status: 403, body: "GO-2026-0001; fixed in v1.1.0", cache: "bypass", decision: "deny", rule: "vulnerability", vulnIDs: []string{"GO-2026-0001"}, saw: one("pub0", 0)}},
		{name: "go.mod of a vulnerable version stays servable", target: "/example.com/a/@v/v1.0.0.mod", setup: setup{vulns: "deny"},
			want: want{status: 200, cache: "miss", decision: "forward", upstream: "pub0", verified: "verified", saw: one("pub0", 1)}},
		{name: "vulnerable version warned", target: "/example.com/a/@v/v1.0.0.zip", setup: setup{vulns: "warn"},
			want: want{status: 200, cache: "miss", decision: "forward", upstream: "pub0", verified: "verified", vulnIDs: []string{"GO-2026-0001"}, warning: true, saw: one("pub0", 1)}},
		{name: "vulnerable versions left out of the list", target: "/example.com/a/@v/list", setup: setup{vulns: "deny"},
			want: want{status: 200, body: "v1.1.0", notBody: "v1.0.0", cache: "miss", decision: "forward", upstream: "pub0", saw: one("pub0", 1)}},
		{name: "version held back by the cooldown", target: "/example.com/a/@v/v1.1.0.zip", setup: setup{cooldown: true},
			want: want{status: 403, body: "available after", cache: "bypass", decision: "deny", rule: "cooldown", saw: one("pub0", 0)}},
		{name: "go.mod of a version held back stays servable", target: "/example.com/a/@v/v1.1.0.mod", setup: setup{cooldown: true},
			want: want{status: 200, cache: "miss", decision: "forward", upstream: "pub0", verified: "verified", saw: one("pub0", 1)}},
		{name: "versions held back left out of the list", target: "/example.com/a/@v/list", setup: setup{cooldown: true},
			want: want{status: 200, body: "v1.0.0", notBody: "v1.1.0", cache: "miss", decision: "forward", upstream: "pub0", saw: one("pub0", 1)}},
		{name: "latest held back is the newest admitted", target: "/example.com/a/@latest", before: []string{"/example.com/a/@v/list"}, setup: setup{cooldown: true},
			want: want{status: 200, body: `"v1.0.0"`, cache: "miss", decision: "forward", upstream: "pub0", saw: one("pub0", 1)}},
		{name: "another replica fills the miss", target: "/example.com/a/@v/v1.0.0.mod", setup: setup{lease: "elsewhere"},
			want: want{status: 200, body: "module example.com/a", cache: "hit", decision: "serve", saw: one("pub0", 0)}},
		{name: "fill coordination down: the replica fills alone", target: "/example.com/a/@v/v1.0.0.mod", setup: setup{lease: "down"},
			want: want{status: 200, cache: "miss", decision: "forward", upstream: "pub0", verified: "verified", saw: one("pub0", 1)}},
		{name: "another replica's lease lapses: this one fills", target: "/example.com/a/@v/v1.0.0.mod", setup: setup{lease: "lapsed"},
			want: want{status: 200, cache: "miss", decision: "forward", upstream: "pub0", verified: "verified", saw: one("pub0", 1)}},
		{name: "another replica's fill is too slow: this one fills too", target: "/example.com/a/@v/v1.0.0.mod", setup: setup{lease: "slow"},
			want: want{status: 200, cache: "miss", decision: "forward", upstream: "pub0", verified: "verified", saw: one("pub0", 1)}},
		{name: "miss while the shared store is down is 503", target: "/example.com/a/@v/v1.0.0.mod", setup: setup{storeDown: true},
			want: want{status: 503, body: "shared cache tier unavailable", cache: "miss", decision: "forward", rule: "store-unavailable", saw: one("pub0", 0)}},
		{name: "miss the cache cannot store is 503", target: "/example.com/a/@v/v1.0.0.zip", setup: setup{diskBroken: true},
			want: want{status: 503, body: "modgate could not store /example.com/a/@v/v1.0.0.zip", cache: "miss", decision: "forward", rule: "cache-storage", upstream: "pub0", saw: one("pub0", 1)}},
		{name: "coalesced", target: "/example.com/a/@v/v1.0.0.zip", concurrent: 3, setup: setup{delay: 300 * time.Millisecond},
			want: want{status: 200, cache: "miss|coalesced", decision: "forward|serve", upstream: "pub0", verified: "verified", saw: one("pub0", 1)}},
		{name: "tampered zip", target: "/example.com/a/@v/v1.0.0.zip", setup: setup{tamper: map[string][]byte{"example.com/a": nil}},
			want: want{status: 502, cache: "miss", decision: "forward", rule: "verify-mismatch", upstream: "pub0", verified: "mismatch", saw: one("pub0", 1)}},
		{name: "tampered large zip", target: "/" + bigPath + "/@v/v1.0.0.zip", setup: setup{tamper: map[string][]byte{bigPath: nil}},
			want: want{status: 502, cache: "miss", decision: "forward", rule: "verify-mismatch", upstream: "pub0", verified: "mismatch", saw: one("pub0", 1)},
			mesh: &want{status: 200, reset: true, cache: "miss", decision: "forward", rule: "verify-mismatch", upstream: "pub0", verified: "mismatch", saw: one("pub0", 1), auditStatus: 200},
			why:  "a large body streams through Envoy as it arrives; the final chunk is withheld and the stream reset, so the client sees an error after the headers, never a complete zip; standalone checks before the first byte"},
	}
}

// run runs one row through fe.
func (r row) run(t *testing.T, fe FrontEnd, mods []*testproxy.Module) {
	w := r.want
	if fe.Mode() == Mesh && r.mesh != nil {
		w = *r.mesh
		t.Logf("mesh mode differs: %s", r.why)
	}
	h := start(t, fe, r.setup, mods)
	if r.setup.faultFirst {
		h.arm(r.setup)
	}
	for _, target := range r.before {
		resp := h.do(t, Request{Method: "GET", Target: target})
		if resp.Status >= 500 && !r.setup.faultFirst {
			t.Fatalf("before: GET %s = %d %q", target, resp.Status, resp.Body)
		}
	}
	if r.setup.faultFirst {
		h.disarm(r.setup)
	}
	// The events of the requests before come first: in mesh mode a
	// request's event is recorded as its stream ends, which may be after
	// the next request has begun.
	h.audit.Wait(t, len(r.before))
	h.clock.Add(r.advance)
	if !r.setup.faultFirst {
		h.arm(r.setup)
	}

	method := r.method
	if method == "" {
		method = "GET"
	}
	n := max(r.concurrent, 1)
	resps := make([]*Response, n)
	var wg sync.WaitGroup
	header := clientHeader.Clone()
	switch {
	case r.setup.credentials == "none":
		header.Del("Authorization")
	case r.setup.auth && r.setup.credentials == "":
		header.Set("Authorization", "Bearer "+h.token)
	}
	for i := range n {
		wg.Go(func() {
			resps[i] = h.do(t, Request{Method: method, Target: r.target, Header: header.Clone()})
		})
	}
	wg.Wait()

	caches := map[string]bool{}
	for _, resp := range resps {
		if got := resp.Header.Get("Warning") != ""; got != w.warning && !w.reset {
			t.Errorf("Warning header %q, want one: %v", resp.Header.Get("Warning"), w.warning)
		}
		if w.notBody != "" && strings.Contains(string(resp.Body), w.notBody) {
			t.Errorf("%s %s = %q, which must not contain %q", method, r.target, clip(resp.Body), w.notBody)
		}
		if resp.Status != w.status || !strings.Contains(string(resp.Body), w.body) || resp.Reset != w.reset {
			t.Errorf("%s %s = %d %q (reset %v), want %d containing %q (reset %v)", method, r.target, resp.Status, clip(resp.Body), resp.Reset, w.status, w.body, w.reset)
		}
		if resp.Status >= 400 && bytes.Count(bytes.TrimSuffix(resp.Body, []byte("\n")), []byte("\n")) >= 8 {
			t.Errorf("error body has more than 8 lines: %q", resp.Body)
		}
		if got := resp.Header.Get("X-Modgate-Cache"); w.auditStatus != -1 && !w.reset {
			caches[got] = true
			if !oneOf(w.cache, got) {
				t.Errorf("X-Modgate-Cache = %q, want %q", got, w.cache)
			}
		}
	}
	if n > 1 && strings.Contains(w.cache, "|") && len(caches) < 2 {
		t.Errorf("cache statuses of %d concurrent requests = %v, want each of %q", n, caches, w.cache)
	}

	evs := h.audit.Wait(t, len(r.before)+n)
	if len(evs) != len(r.before)+n {
		t.Fatalf("%d audit events for %d requests: %+v", len(evs), len(r.before)+n, evs)
	}
	for _, ev := range evs[len(r.before):] {
		checkEvent(t, ev, method, r.target, w, h.client.SourceIP())
	}
	h.checkUpstreams(t, r.target, w.saw)
	h.checkHealth(t, w)
}

// checkHealth checks the passive health reports the row's fills made:
// the upstream credited is among them, and every one names an upstream
// that was asked, never one that was not.
func (h *harness) checkHealth(t *testing.T, w want) {
	t.Helper()
	got := h.health.names()
	if w.upstream != "" && w.upstream != "dead" && !got[w.upstream] {
		t.Errorf("passive health reports for %v, want one for %s", got, w.upstream)
	}
	for name := range got {
		if n, ok := w.saw[name]; ok && n == 0 {
			t.Errorf("passive health report for %s, which was not asked", name)
		}
	}
}

// healthLog records passive health reports.
type healthLog struct {
	mu      sync.Mutex
	reports map[string]bool
}

func (l *healthLog) Report(name string, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.reports == nil {
		l.reports = map[string]bool{}
	}
	l.reports[name] = ok
}

func (l *healthLog) names() map[string]bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]bool{}
	for k := range l.reports {
		out[k] = true
	}
	return out
}

// checkEvent checks the audit event of one of the row's requests.
func checkEvent(t *testing.T, ev audit.Event, method, target string, w want, ip string) {
	t.Helper()
	status := w.status
	switch {
	case w.auditStatus == -1:
		status = 0
	case w.auditStatus != 0:
		status = w.auditStatus
	}
	if ev.HTTP == nil || ev.HTTP.Response.StatusCode != status || ev.HTTP.Request.Method != method {
		t.Errorf("audit http = %+v, want status %d, method %s", ev.HTTP, status, method)
	}
	if !oneOf(w.decision, ev.Modgate.Decision) || ev.Modgate.Rule != w.rule {
		t.Errorf("audit decision, rule = %q, %q; want %q, %q", ev.Modgate.Decision, ev.Modgate.Rule, w.decision, w.rule)
	}
	if !oneOf(w.cache, ev.Modgate.Cache) {
		t.Errorf("audit cache = %q, want %q", ev.Modgate.Cache, w.cache)
	}
	if ev.Modgate.Upstream != w.upstream || ev.Modgate.Verification != w.verified {
		t.Errorf("audit upstream, verification = %q, %q; want %q, %q", ev.Modgate.Upstream, ev.Modgate.Verification, w.upstream, w.verified)
	}
	if got := ""; ev.User != nil || w.user != "" {
		if ev.User != nil {
			got = ev.User.Name
		}
		if got != w.user {
			t.Errorf("audit user.name = %q, want %q", got, w.user)
		}
	}
	var ids []string
	if ev.Vulnerability != nil {
		ids = ev.Vulnerability.ID
	}
	if !slices.Equal(ids, w.vulnIDs) {
		t.Errorf("audit vulnerability.id = %q, want %q", ids, w.vulnIDs)
	}
	if ev.Source == nil || ev.Source.IP != ip || ev.URL == nil || ev.URL.Path != target {
		t.Errorf("audit source, url = %+v, %+v; want %s and %q", ev.Source, ev.URL, ip, target)
	}
	failed := status == 0 || status >= 400 || w.reset
	if (ev.Event.Outcome == audit.OutcomeFailure) != failed {
		t.Errorf("audit outcome = %q (reason %q) for status %d (reset %v)", ev.Event.Outcome, ev.Event.Reason, status, w.reset)
	}
	if failed && ev.Event.Reason == "" {
		t.Errorf("audit event of a failure has no reason")
	}
}

// streamEnd: the client leaves while the request it sent leads a fill.
// The key must not wedge: the next request is answered at once, from a
// fill that completed (standalone, where the fill outlives its client) or
// a fresh one (mesh, where the fill's body arrives on the stream that
// ended), and the result is the real zip.
func streamEnd(t *testing.T, fe FrontEnd, mods []*testproxy.Module) {
	h := start(t, fe, setup{}, mods)
	target := "/" + bigPath + "/@v/v1.0.0.zip"
	first := Request{Method: "GET", Target: target, Header: clientHeader.Clone(), ResetAfterChunks: 1}
	want := map[Mode]int{Standalone: 1, Mesh: 2} // upstream requests in all
	if fe.Mode() == Standalone {
		// The HTTP client leaves before the (delayed) fill completes.
		h.pub[0].Delay(func(p string) time.Duration {
			if strings.HasSuffix(p, ".zip") {
				return 300 * time.Millisecond
			}
			return 0
		})
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		_, err := h.client.Do(ctx, first)
		cancel()
		if err == nil {
			t.Fatalf("the first request completed; the test needs its client to leave")
		}
	} else if resp := h.do(t, first); !resp.Reset {
		t.Fatalf("first request = %d (reset %v), want a reset mid-body", resp.Status, resp.Reset)
	}

	start := time.Now()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	resp, err := h.client.Do(ctx, Request{Method: "GET", Target: target})
	if err != nil {
		t.Fatalf("the second request: %v (after %v): the key is wedged", err, time.Since(start))
	}
	if resp.Status != 200 || resp.Reset || !bytes.Equal(resp.Body, h.big.Zip) {
		t.Errorf("second request = %d, %d bytes, reset %v; want 200 and the zip's %d bytes", resp.Status, len(resp.Body), resp.Reset, len(h.big.Zip))
	}
	if n := h.pub[0].Count(target); n != want[fe.Mode()] {
		t.Errorf("upstream saw %d requests for %s, want %d", n, target, want[fe.Mode()])
	}
	evs := h.audit.Wait(t, 2)
	if len(evs) != 2 || evs[0].Event.Outcome != audit.OutcomeFailure || evs[0].Event.Reason == "" {
		t.Errorf("audit events = %+v, want 2, the first a failure that says why", evs)
	}
}

// harness is one row's world.
type harness struct {
	env    *Env
	client Client
	pub    []*testproxy.Server
	priv   *testproxy.Server
	names  map[*testproxy.Server]string
	big    *testproxy.Module
	clock  *clock
	audit  *AuditLog
	health *healthLog
	set    *drainable
	token  string // a valid token, when the row requires one
	mods   []*testproxy.Module
}

func start(t *testing.T, fe FrontEnd, s setup, mods []*testproxy.Module) *harness {
	t.Helper()
	log := slog.New(slog.NewTextHandler(TBWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h := &harness{clock: &clock{}, audit: new(AuditLog), health: new(healthLog), names: map[*testproxy.Server]string{}, mods: mods}
	h.clock.t.Store(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).UnixNano())
	for _, m := range mods {
		if m.Path == bigPath {
			h.big = m
		}
	}
	var public, private []*testproxy.Module
	for _, m := range mods {
		if strings.HasPrefix(m.Path, "corp.example/") {
			private = append(private, m)
		} else {
			public = append(public, m)
		}
	}
	key := testproxy.NewKey(t)
	env := &Env{Route: s.route, Logger: log}
	if s.deadPublic {
		u, err := upstream.Parse("dead", closedURL(t), false)
		if err != nil {
			t.Fatal(err)
		}
		env.Public = append(env.Public, u)
	}
	n := len(s.public)
	if n == 0 && !s.deadPublic {
		n = 1
	}
	for i := range n {
		p := testproxy.StartWith(t, public, testproxy.Options{Key: key})
		name := fmt.Sprintf("pub%d", i)
		u, err := upstream.Parse(name, p.URL, false)
		if err != nil {
			t.Fatal(err)
		}
		h.pub = append(h.pub, p)
		h.names[p] = name
		env.Public = append(env.Public, u)
	}
	h.priv = testproxy.Start(t, private)
	h.names[h.priv] = "priv0"
	if !s.noPrivate {
		u, err := upstream.Parse("priv0", h.priv.URL, true)
		if err != nil {
			t.Fatal(err)
		}
		u.Patterns = s.claim
		env.Private = append(env.Private, u)
	}
	set := &drainable{set: upstream.Set{Public: env.Public, Private: env.Private}}
	h.set = set

	pol, err := policy.New(policy.Config{Private: []string{"corp.example"}, SumDBs: []string{sumdbName}})
	if err != nil {
		t.Fatal(err)
	}
	cc := cache.Config{Dir: t.TempDir(), HotBytes: 8 << 20, DiskBytes: 1 << 30, Now: h.clock.Now, Logger: log}
	if s.storeDown {
		cc.Shared = downStore{}
	}
	c, err := cache.Open(cc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if s.diskBroken {
		tmp := filepath.Join(cc.Dir, "tmp")
		if err := os.Remove(tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(tmp, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	aw := audit.NewWriter(h.audit)
	t.Cleanup(func() { aw.Close() })
	led, err := ledger.Open(filepath.Join(t.TempDir(), "ledger"), log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { led.Close() })
	uc := upstream.NewClient(upstream.ClientOptions{})
	v, err := verify.New(t.Context(), verify.Config{
		Key: key.Verifier, Dir: t.TempDir(), Ledger: led, Logger: log,
		// Through the cache, as modgate serve reads it.
		Fetch: c.SumDBFetch(sumdbName, func(ctx context.Context, p string) ([]byte, error) {
			return uc.Get(ctx, h.serving(env.Public), "/sumdb/"+sumdbName+p, gate.MaxSumDBBytes)
		}),
		OnVerified: func(file string, data []byte) { c.StoreSumDB(t.Context(), file, data) },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	rules, err := policy.NewRules(s.rules)
	if err != nil {
		t.Fatal(err)
	}
	var authn gate.Authenticator
	if s.auth {
		tokens := filepath.Join(t.TempDir(), "tokens")
		if h.token, err = auth.Create(tokens, "ci", []string{"release"}, time.Now()); err != nil {
			t.Fatal(err)
		}
		set, err := auth.Load(tokens)
		if err != nil {
			t.Fatal(err)
		}
		a, err := auth.New(auth.Config{Tokens: set, Required: true})
		if err != nil {
			t.Fatal(err)
		}
		authn = authenticator{a}
	}
	var vulns gate.Vulnerabilities
	if s.vulns != "" {
		vulns = fakeVulns{action: s.vulns}
	}
	var cooldown gate.Cooldown
	if s.cooldown {
		cooldown = fakeCooldown{}
	}
	var leases gate.Leases
	if s.lease != "" {
		fl := &fakeLeases{t: t, mode: s.lease, cache: c, mods: mods}
		t.Cleanup(fl.check)
		leases = fl
	}
	proc, err := gate.New(gate.Options{
		Leases:          leases,
		FollowTimeout:   200 * time.Millisecond,
		Cooldown:        cooldown,
		Vulnerabilities: vulns,
		Authenticator:   authn,
		Rules:           rules,
		Policy:          pol, Upstreams: set, Cache: c, Verifier: v, Audit: aw, Logger: log, Now: h.clock.Now, Health: h.health,
		RefusePrivateNotFound: s.refusePriv,
	})
	if err != nil {
		t.Fatal(err)
	}
	env.Processor, env.Cache = proc, c
	h.env = env
	h.client = fe.Start(t, env)
	return h
}

// serving returns the upstreams whose checksum database answers (not the
// dead one), for the verifier.
func (h *harness) serving(ups []*upstream.Upstream) []*upstream.Upstream {
	var out []*upstream.Upstream
	for _, u := range ups {
		if u.Name != "dead" {
			out = append(out, u)
		}
	}
	return out
}

// fakeVulns is a known-vulnerability gate that knows one vulnerability:
// GO-2026-0001 in example.com/a before v1.1.0. (Package vulndb's matching
// has its own tests; this is the processor's seam.)
type fakeVulns struct{ action string }

func (f fakeVulns) Check(path, version string) ([]string, bool, string, string) {
	if path != "example.com/a" || semver.Compare(version, "v1.1.0") >= 0 {
		return nil, false, "", ""
	}
	ids := []string{"GO-2026-0001"}
	if f.action == "deny" {
		return ids, true, path + " " + version + " has known vulnerabilities: GO-2026-0001; fixed in v1.1.0", ""
	}
	return ids, false, "", `299 modgate "GO-2026-0001: fixed in v1.1.0"`
}

func (f fakeVulns) Filter(path string, versions []string) []string {
	return slices.DeleteFunc(slices.Clone(versions), func(v string) bool {
		_, deny, _, _ := f.Check(path, v)
		return deny
	})
}

// fakeCooldown holds back example.com/a v1.1.0 and later, as too new.
// (Package cooldown proves ages from the checksum database and has its
// own tests; this is the processor's seam.)
type fakeCooldown struct{}

func (fakeCooldown) Admit(_ context.Context, path, version string, _ bool) (bool, string, string) {
	if path == "example.com/a" && semver.Compare(version, "v1.1.0") >= 0 {
		return false, "cooldown", path + " " + version + " was published within the last 72h; available after 2026-01-05T03:04Z"
	}
	return true, "", ""
}

func (c fakeCooldown) Filter(ctx context.Context, path string, versions []string, private bool) []string {
	return slices.DeleteFunc(slices.Clone(versions), func(v string) bool {
		ok, _, _ := c.Admit(ctx, path, v, private)
		return !ok
	})
}

// fakeLeases stands for the other replicas, as the fill coordination
// (package coord, with its own tests against a real NATS server) shows
// them to the processor:
//
//   - "elsewhere": another replica holds the lease; while this request
//     waits, it commits the entry, which this replica then reads (here:
//     into the cache directly, as a read through the shared tier leaves it);
//   - "down": coordination is unreachable;
//   - "lapsed": another replica held the lease and died: its lease ends
//     with nothing committed, and the next Lead is this replica's;
//   - "slow": another replica holds the lease past the follow timeout.
//
// check fails the test unless every held lease was released once, after
// its fill's commit.
type fakeLeases struct {
	t     *testing.T
	mode  string
	cache *cache.Cache
	mods  []*testproxy.Module

	mu             sync.Mutex
	leads          int
	held, released int
}

func (f *fakeLeases) Lead(ctx context.Context, key string) (gate.Lease, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.leads++
	switch {
	case f.mode == "down":
		return nil, errors.New("nats: no servers available")
	case f.mode == "lapsed" && f.leads > 1:
		f.held++
		return &fakeLease{f: f, key: key, held: true}, nil
	}
	return &fakeLease{f: f, key: key}, nil
}

func (f *fakeLeases) check() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.released != f.held {
		f.t.Errorf("leases: %d held, %d released", f.held, f.released)
	}
}

type fakeLease struct {
	f    *fakeLeases
	key  string
	held bool
	once sync.Once
}

func (l *fakeLease) Held() bool { return l.held }

func (l *fakeLease) Wait(ctx context.Context) error {
	switch l.f.mode {
	case "slow":
		<-ctx.Done()
		return ctx.Err()
	case "elsewhere":
		// example.com/a v1.0.0's go.mod, as the other replica stored it.
		for _, m := range l.f.mods {
			if "/"+m.Path+"/@v/"+m.Version+".mod" == l.key {
				w := l.f.cache.NewWriter(l.key, cache.Release, http.StatusOK, "text/plain; charset=utf-8")
				w.Write(m.Mod)
				if _, err := w.Commit(ctx); err != nil {
					l.f.t.Errorf("the other replica's commit: %v", err)
				}
			}
		}
	}
	return nil
}

func (l *fakeLease) Release() {
	if !l.held {
		return
	}
	l.once.Do(func() {
		if e, err := l.f.cache.Get(context.Background(), l.key); err != nil {
			l.f.t.Errorf("lease on %s released before its fill committed: %v", l.key, err)
		} else {
			e.Close()
		}
		l.f.mu.Lock()
		l.f.released++
		l.f.mu.Unlock()
	})
}

// downStore is a shared cache tier that cannot be reached: every call
// fails as a refused connection would.
type downStore struct{}

var errStoreDown = errors.New("dial tcp 127.0.0.1:9: connect: connection refused")

func (downStore) Get(context.Context, string, int64) ([]byte, error)       { return nil, errStoreDown }
func (downStore) Put(context.Context, string, []byte, bool) error          { return errStoreDown }
func (downStore) Upload(context.Context, string, io.ReaderAt, int64) error { return errStoreDown }
func (downStore) Download(context.Context, string, int64, io.Writer) error { return errStoreDown }

// authenticator is package auth's, as the processor declares it.
type authenticator struct{ a *auth.Authenticator }

func (a authenticator) Authenticate(ctx context.Context, h http.Header, c gate.Client) (gate.Identity, error) {
	id, err := a.a.Authenticate(ctx, h, auth.Peer{Addr: c.Addr, Subject: c.Subject, URISANs: c.URISANs, CertSHA256: c.CertSHA256})
	return gate.Identity(id), err
}

// drainable is the processor's upstreams, which a row can drain: all
// configured, none healthy, as the health registry reports an outage.
type drainable struct {
	set     upstream.Set
	drained atomic.Bool
}

func (d *drainable) Candidates(private bool) []*upstream.Upstream {
	if d.drained.Load() {
		return nil
	}
	return d.set.Candidates(private)
}

func (d *drainable) Configured(private bool) bool { return d.set.Configured(private) }

// arm installs the row's faults, tampering, delays and drain.
func (h *harness) arm(s setup) {
	h.set.drained.Store(s.drained)
	for i, p := range h.pub {
		if i < len(s.public) && s.public[i] != 0 {
			status := int(s.public[i])
			p.Fault(func(path string) int {
				if strings.HasPrefix(path, "/sumdb/") {
					return 0
				}
				return status
			})
		}
		for mpath := range s.tamper {
			for _, m := range h.mods {
				if m.Path == mpath {
					bad := bytes.Clone(m.Zip)
					bad[len(bad)/2] ^= 1
					esc, _ := escape(m.Path)
					p.Replace("/"+esc+"/@v/"+m.Version+".zip", bad)
				}
			}
		}
		if s.portal != "" {
			p.Replace(s.portal, []byte("<html><body>Sign in to the network</body></html>\n"))
		}
		if s.delay > 0 {
			p.Delay(func(path string) time.Duration {
				if strings.HasPrefix(path, "/sumdb/") {
					return 0
				}
				return s.delay
			})
		}
	}
}

// disarm takes away what arm installed for a faultFirst row: the portal.
func (h *harness) disarm(s setup) {
	for _, p := range h.pub {
		p.Replace(s.portal, nil)
	}
}

func (h *harness) do(t *testing.T, r Request) *Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	resp, err := h.client.Do(ctx, r)
	if err != nil {
		t.Fatalf("%s %s: %v", r.Method, r.Target, err)
	}
	return resp
}

// checkUpstreams checks what every upstream received: modgate's headers
// only, canonical paths only, no private path at a public upstream, and
// saw's counts of the row's canonical path.
func (h *harness) checkUpstreams(t *testing.T, target string, saw map[string]int) {
	t.Helper()
	canonical := ""
	if req, err := goproxy.Parse("GET", target, 0); err == nil {
		canonical = req.Path()
	}
	all := append([]*testproxy.Server{h.priv}, h.pub...)
	for _, p := range all {
		name := h.names[p]
		count := 0
		for _, rc := range p.Received() {
			if rc.Path == canonical {
				count++
			}
			if rc.Query != "" {
				t.Errorf("%s received a query: %s?%s", name, rc.Path, rc.Query)
			}
			if req, err := goproxy.Parse("GET", rc.Path, 0); !strings.HasPrefix(rc.Path, "/sumdb/") && (err != nil || req.Path() != rc.Path) {
				t.Errorf("%s received a non-canonical path %q", name, rc.Path)
			}
			if p != h.priv && strings.Contains(rc.Path, "corp.example") {
				t.Errorf("public upstream %s received the private path %q", name, rc.Path)
			}
			for k, vs := range rc.Header {
				if !forwardable(k) {
					t.Errorf("%s received the header %s: %q", name, k, vs)
				}
			}
			if ua := rc.Header.Get("User-Agent"); ua != "modgate" {
				t.Errorf("%s received User-Agent %q, want modgate", name, ua)
			}
		}
		if want, ok := saw[name]; ok && count != want {
			t.Errorf("%s received %d requests for %s, want %d", name, count, canonical, want)
		}
	}
}

// forwardable reports whether an upstream may see header k: modgate's own
// and the transport's, never one of the client's.
func forwardable(k string) bool {
	k = http.CanonicalHeaderKey(k)
	if _, ok := gate.UpstreamHeader[k]; ok {
		return true
	}
	switch k {
	case "Accept-Encoding", "X-Request-Id", "X-Forwarded-Proto", "X-Forwarded-For", "Content-Length":
		return true
	}
	return strings.HasPrefix(k, "X-Envoy-")
}

// modules are the fixtures plus a module whose zip is large enough to
// stream through Envoy (over its 1 MiB buffer) and to hit through the blob
// listener.
func modules(t *testing.T) []*testproxy.Module {
	t.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	data := make([]byte, 1200<<10)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	ar := fmt.Sprintf("module %s\nversion v1.0.0\n-- go.mod --\nmodule %s\n\ngo 1.21\n-- data.txt --\n%s\n", bigPath, bigPath, hex.EncodeToString(data))
	// A go.mod larger than the hot tier's largest entry (HotBytes/1024):
	// it is received into a temporary file, and checked from there.
	comment := strings.Repeat("// a long comment line, as generated go.mod files have\n", 400)
	bigmod := fmt.Sprintf("module %s\nversion v1.0.0\n-- go.mod --\nmodule %s\n\n%sgo 1.21\n-- a.go --\npackage bigmod\n", bigModPath, bigModPath, comment)
	big, err := testproxy.Load(fstest.MapFS{"big.txtar": {Data: []byte(ar)}, "bigmod.txtar": {Data: []byte(bigmod)}})
	if err != nil {
		t.Fatal(err)
	}
	return append(testproxy.Fixtures(t), big...)
}

func escape(path string) (string, error) {
	req, err := goproxy.Parse("GET", "/"+path+"/@v/list", 0)
	if err != nil {
		return "", err
	}
	return strings.TrimSuffix(strings.TrimPrefix(req.Path(), "/"), "/@v/list"), nil
}

func closedURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}

// oneOf reports whether got is one of the |-separated values of want.
func oneOf(want, got string) bool {
	for w := range strings.SplitSeq(want, "|") {
		if w == got {
			return true
		}
	}
	return false
}

func clip(b []byte) string {
	if len(b) > 200 {
		return string(b[:200]) + "…"
	}
	return string(b)
}

// clock is a settable clock shared by the cache and the processor.
type clock struct{ t atomic.Int64 }

func (c *clock) Now() time.Time      { return time.Unix(0, c.t.Load()) }
func (c *clock) Add(d time.Duration) { c.t.Add(int64(d)) }

// An AuditLog collects audit lines in memory: an audit.Writer's
// destination in tests.
type AuditLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *AuditLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// Wait returns the events once there are at least n, or after 5s (an
// event is recorded as its response ends, which may be just after the
// client has it), waiting a little longer so a duplicate would show.
func (l *AuditLog) Wait(t testing.TB, n int) []audit.Event {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		evs := l.List(t)
		if len(evs) >= n || time.Now().After(deadline) {
			time.Sleep(20 * time.Millisecond)
			return l.List(t)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// List returns the events recorded so far.
func (l *AuditLog) List(t testing.TB) []audit.Event {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []audit.Event
	dec := json.NewDecoder(bytes.NewReader(l.buf.Bytes()))
	for dec.More() {
		var ev audit.Event
		if err := dec.Decode(&ev); err != nil {
			t.Fatalf("decode audit event: %v", err)
		}
		out = append(out, ev)
	}
	return out
}

// TBWriter sends what is written to it (log lines) to the test's log.
type TBWriter struct{ T testing.TB }

func (w TBWriter) Write(p []byte) (int, error) {
	w.T.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}
