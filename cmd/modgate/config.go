package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/module"
	"golang.org/x/mod/sumdb/note"
	"gopkg.in/yaml.v3"

	"github.com/modgate/modgate/auth"
	"github.com/modgate/modgate/budget"
	"github.com/modgate/modgate/cache"
	"github.com/modgate/modgate/policy"
	"github.com/modgate/modgate/upstream"
	"github.com/modgate/modgate/verify"
	"github.com/modgate/modgate/vulndb"
)

// fileConfig is modgate.yaml. Its zero value works: every default comes
// from `go env` or is stated on the field. Command-line flags override it.
type fileConfig struct {
	// Listen is the GOPROXY listener. Default 127.0.0.1:8080; "off"
	// disables it; port 0 picks a free port.
	Listen string `yaml:"listen"`
	// Admin is the admin listener (/healthz, /readyz). Default
	// 127.0.0.1:9100; "off" disables it.
	Admin string `yaml:"admin"`
	// AdminTokenFile is a file holding the bearer token that the admin
	// listener's state-changing endpoints (POST /cache/purge) and
	// /debug/pprof/ require; read-only ones (/healthz, /readyz, /metrics,
	// /cache/stats) stay open. The token is the file's content without
	// surrounding white space, at least 16 bytes. Default: a fresh random
	// token written at every start to admin-token (mode 0600) in the cache
	// directory, where `modgate cache` looks for it.
	AdminTokenFile string `yaml:"admin_token_file"`
	// AdminTLS turns the admin listener into HTTPS; with client_ca, a
	// client may present a certificate (it is not required: tokens still
	// work), which the console takes for an identity (console.groups).
	// Default: plain HTTP.
	AdminTLS tlsConfig `yaml:"admin_tls"`
	// Console is the web console on the admin listener, under /ui/.
	// Default: on, for the admin token's holders.
	Console consoleConfig `yaml:"console"`
	// ExtProcListen is the ext_proc gRPC listener Envoy streams requests
	// to. Default 127.0.0.1:9002; "off" disables it.
	ExtProcListen string `yaml:"extproc_listen"`
	// BlobListen is the blob listener: large cache hits that Envoy is
	// routed to. Default 127.0.0.1:9003; "off" disables it.
	BlobListen string `yaml:"blob_listen"`
	// MeshTLS authenticates the gateway Envoy on the mesh listeners
	// (extproc_listen, blob_listen, xds_listen) with mutual TLS. Default:
	// off, and then the ext_proc and blob listeners must be on a loopback
	// address (see insecure_mesh_listeners).
	MeshTLS meshTLSConfig `yaml:"mesh_tls"`
	// InsecureMeshListeners lets the ext_proc and blob listeners listen on
	// an address other than loopback without mesh_tls: whoever reaches
	// them can then write identities into the audit log and read every
	// cached module. Default false: modgate refuses to start.
	InsecureMeshListeners bool `yaml:"insecure_mesh_listeners"`
	// ImmediateMaxBytes is the largest cache hit the ext_proc server answers
	// in an ImmediateResponse (Envoy holds it in memory); larger hits are
	// routed to the blob listener. Default 256KiB.
	ImmediateMaxBytes byteSize `yaml:"immediate_max_bytes"`
	// TransparentListen is the transparent listener: connections the eBPF
	// redirect (modgate redirect) hands over, served as plain-HTTP GOPROXY
	// requests with their original destination audited. It must be a
	// wildcard address (0.0.0.0:PORT, [::]:PORT or :PORT): the redirect
	// finds no socket bound to one address. Default off.
	TransparentListen string `yaml:"transparent_listen"`
	// UpstreamMark is the socket mark (SO_MARK) on modgate's own upstream
	// connections, which the redirect exempts. Default 0x539 when the
	// transparent listener is on, else none.
	UpstreamMark uint32 `yaml:"upstream_mark"`
	// XDSListen is the xDS (ADS) listener the gateway Envoy gets its
	// upstream clusters from. Default 127.0.0.1:18000; "off" disables it.
	XDSListen string `yaml:"xds_listen"`
	// XDS configures the control plane.
	XDS xdsConfig `yaml:"xds"`
	// Health configures the upstream health checks.
	Health healthConfig `yaml:"health"`
	// Tracing configures OpenTelemetry tracing. Default off, unless the
	// standard OTEL_EXPORTER_OTLP_ENDPOINT or
	// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set.
	Tracing tracingConfig `yaml:"tracing"`
	// Audit is the audit file (JSON lines, appended, hash-chained,
	// rotated by size). Default: stdout.
	Audit string `yaml:"audit"`
	// AuditLog bounds the audit queue and the files.
	AuditLog auditConfig `yaml:"audit_log"`
	// TLS turns the GOPROXY listener into HTTPS. Default: plain HTTP.
	TLS tlsConfig `yaml:"tls"`
	// Upstreams are the GOPROXY servers to fetch from, in order of
	// preference. Default: the proxies in `go env GOPROXY` ("direct" and
	// "off" are not upstreams).
	Upstreams []upstreamConfig `yaml:"upstreams"`
	// Private lists module path patterns (GOPRIVATE syntax) that only
	// private upstreams may see. Default: the patterns in `go env`
	// GOPRIVATE, GONOPROXY and GONOSUMDB. An explicit empty list means none.
	Private []string `yaml:"private"`
	// Auth authenticates clients: tokens, and identities of certificates.
	// Default: none; every client anonymous.
	Auth authConfig `yaml:"auth"`
	// VulnDB is the Go vulnerability database the vulnerabilities policy
	// gates with. Default: GOVULNDB's URL, refreshed hourly.
	VulnDB vulndb.Config `yaml:"vulndb"`
	// Policy is the rules of who may fetch which module versions.
	// Default: every version of every allowed module, for everyone.
	Policy policy.RulesConfig `yaml:"policy"`
	// VCS makes modgate the origin of private modules that live in Git:
	// requests for modules matching vcs.patterns are filled by running the
	// go command against their repositories. Default: none (absent).
	VCS *vcsConfig `yaml:"vcs"`
	// PrivateNotFound says what a client gets when the private upstreams
	// do not have a private path: "pass" (the default) passes their
	// 404/410, which the go command needs to probe the module path
	// prefixes of a package path (go get corp.example/mod/pkg); "refuse"
	// answers 403 instead, for clients whose GOPROXY lists other proxies
	// after modgate (a 404 would send them the private path), at the price
	// of go get of private package paths.
	PrivateNotFound string `yaml:"private_not_found"`
	// PassPrivateNotFound is the older spelling: false is "refuse", true
	// is "pass". Unset, private_not_found decides.
	PassPrivateNotFound *bool `yaml:"pass_private_not_found"`
	// SumDB lists the checksum database names served under /sumdb/.
	// Default: the name in `go env GOSUMDB` (none if it is "off").
	SumDB []string `yaml:"sumdb"`
	// SumDBURL is where the verifier fetches the checksum database from:
	// the base URL of the database's own endpoints, to which it appends
	// /latest, /lookup/MODULE@VERSION and /tile/...; for a GOPROXY-protocol
	// proxy that proxies the database, that is its /sumdb/NAME URL, e.g.
	// https://egress.corp.example/sumdb/sum.golang.org. Only the verifier
	// uses it (clients' own /sumdb/ requests still go to the upstreams).
	// Default: /sumdb/NAME on the healthy public upstreams, in order.
	SumDBURL string `yaml:"sumdb_url"`
	// SumDBKey is the note verifier key ("name+hash+keydata") of the
	// checksum database every public .mod and .zip is verified against
	// before it is cached or served; a known database may be given by name.
	// "off" turns verification of public modules off. Default: from
	// `go env GOSUMDB`.
	SumDBKey string `yaml:"sumdb_key"`
	// CacheDir holds the disk tier. Default: modgate/ under the user cache
	// directory ($XDG_CACHE_HOME or ~/.cache).
	CacheDir string `yaml:"cache_dir"`
	// Store is a tier that several replicas share: an S3-compatible
	// bucket, with credentials from the AWS SDK's standard chain. The
	// local tiers then cache it. Default: none, one machine's cache.
	Store storeConfig `yaml:"store"`
	// Coordination lets replicas share fills through NATS JetStream, so
	// that a miss asked of all of them reaches the upstream once. Needs
	// store. Default: none.
	Coordination coordinationConfig `yaml:"coordination"`
	// Cache sizes the tiers and sets lifetimes.
	Cache cacheConfig `yaml:"cache"`
	// Budget rations cache misses per client and per module.
	Budget budgetConfig `yaml:"budget"`
	// Limits bound what clients and upstreams may cost.
	Limits limitsConfig `yaml:"limits"`
	// Inventory bounds the index of who fetched what.
	Inventory inventoryConfig `yaml:"inventory"`
}

type inventoryConfig struct {
	// MaxKeys bounds the (module, version, identity) keys the inventory
	// holds in memory, about 90 bytes each plus their strings; once it
	// is full, fetches of new keys are counted but not indexed (the audit
	// log still has them). Default 2,000,000.
	MaxKeys int `yaml:"max_keys"`
}

type cacheConfig struct {
	// HotBytes is the memory hot tier's size. Default: an eighth of the
	// memory the process may use (GOMEMLIMIT, the cgroup's limit, else the
	// machine's), between 16MiB and 256MiB (see sizeMemory).
	HotBytes byteSize `yaml:"hot_bytes"`
	// DiskBytes bounds the disk tier. Default 10GiB.
	DiskBytes byteSize `yaml:"disk_bytes"`
	// StaleIfError is how long past its TTL a list, @latest or query answer
	// may be served when every upstream fails. Default 24h.
	StaleIfError time.Duration `yaml:"stale_if_error"`
	// VerifyInterval runs `modgate cache verify` in the background this
	// often: every stored .mod and .zip re-verified, what fails
	// quarantined. Default 0: off.
	VerifyInterval time.Duration `yaml:"verify_interval"`
	// VerifyRate bounds the bytes a scrub reads per second, so that it
	// cannot starve serving. Default 32MiB.
	VerifyRate byteSize `yaml:"verify_rate"`
	// TTL per class; defaults: release 24h, prerelease 2h, pseudo 24h,
	// query 60s, negative 5m, sumdb 24h, sumdb_latest 1h.
	TTL struct {
		Release     time.Duration `yaml:"release"`
		Prerelease  time.Duration `yaml:"prerelease"`
		Pseudo      time.Duration `yaml:"pseudo"`
		Query       time.Duration `yaml:"query"`
		Negative    time.Duration `yaml:"negative"`
		SumDB       time.Duration `yaml:"sumdb"`
		SumDBLatest time.Duration `yaml:"sumdb_latest"`
	} `yaml:"ttl"`
}

type budgetConfig struct {
	// Off disables both budgets.
	Off bool `yaml:"off"`
	// Client is the per-client miss budget: default rate 100/s, burst 2000.
	Client limitConfig `yaml:"client"`
	// Module is the per-module miss budget: default rate 20/s, burst 400.
	Module limitConfig `yaml:"module"`
	// MaxKeys bounds the buckets remembered per budget. Default 65536.
	MaxKeys int `yaml:"max_keys"`
}

type limitConfig struct {
	Rate  float64 `yaml:"rate"`  // misses per second
	Burst int     `yaml:"burst"` // misses at once
}

type tlsConfig struct {
	// Cert and Key are PEM files of the listener's certificate chain and key.
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	// ClientCA, if set, is a PEM file of CAs; every client must present a
	// certificate that chains to one of them.
	ClientCA string `yaml:"client_ca"`
}

type meshTLSConfig struct {
	// Cert and Key are PEM files of the mesh listeners' certificate chain
	// and key, which the gateway Envoy checks (its SAN matcher). Setting
	// them turns mesh TLS on.
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	// ClientCA is a PEM file of the CAs the gateway Envoy's client
	// certificate must chain to. Required with cert.
	ClientCA string `yaml:"client_ca"`
	// AllowedClients are the identities accepted from client_ca: a URI SAN
	// such as spiffe://modgate.local/ns/modgate/sa/gateway, or a DNS SAN,
	// compared exactly. A certificate from client_ca with none of them (a
	// client pod's, say) is refused. Required with cert.
	AllowedClients []string `yaml:"allowed_clients"`
}

type upstreamConfig struct {
	// Name labels the upstream in logs and audit. Default: the URL's host.
	Name string `yaml:"name"`
	// URL is the base URL of a GOPROXY-protocol server.
	URL string `yaml:"url"`
	// Private marks an upstream for private module paths only.
	Private bool `yaml:"private"`
}

type xdsConfig struct {
	// NodeID is the gateway Envoy's node id. Default modgate-gateway.
	NodeID string `yaml:"node_id"`
	// BlobAddr is the blob listener as the gateway reaches it. Default modgate:9003.
	BlobAddr string `yaml:"blob_addr"`
	// BlobTLS makes the published modgate_blob cluster use mutual TLS to
	// the blob listener (whose side is mesh_tls). Default: plain HTTP,
	// for a blob listener on loopback.
	BlobTLS blobTLSConfig `yaml:"blob_tls"`
}

// blobTLSConfig names files as the gateway Envoy sees them: the xDS
// server only writes the paths into the cluster.
type blobTLSConfig struct {
	// Cert and Key are the gateway Envoy's client certificate chain and
	// key (PEM files). Setting them turns blob TLS on.
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	// CA is the PEM file of CAs the blob listener's certificate must chain
	// to. Required with cert.
	CA string `yaml:"ca"`
	// SAN is the name the blob listener's certificate must carry: a DNS
	// name, an IP address, or a URI (spiffe://...). Default: the host of
	// xds.blob_addr.
	SAN string `yaml:"san"`
}

// consoleConfig is the console section.
type consoleConfig struct {
	// Disabled turns the console off. Default false.
	Disabled bool `yaml:"disabled"`
	// AnonymousLoopback lets clients on a loopback address see the
	// console without the admin token. Default false.
	AnonymousLoopback bool `yaml:"anonymous_loopback"`
	// Groups lets identities in one of these groups (auth.tokens' groups,
	// and auth.identities' for client certificates on an admin_tls
	// listener) see the console with their own credentials. Default:
	// none, only the admin token.
	Groups []string `yaml:"groups"`
	// SampleInterval is how often the overview's charts sample the
	// metrics; they show the last 360 samples. Default 10s (an hour).
	SampleInterval time.Duration `yaml:"sample_interval"`
	// AuditEvents bounds the audit events the console's index holds,
	// newest kept (about 60 bytes of memory each, plus their distinct
	// strings). Default 1,000,000.
	AuditEvents int `yaml:"audit_events"`
}

type auditConfig struct {
	// MaxBytes rotates the audit file past this size. Default 100MiB.
	MaxBytes byteSize `yaml:"max_bytes"`
	// Keep is how many rotated files are kept. Default 10.
	Keep int `yaml:"keep"`
	// QueueBytes bounds the events waiting to be written. Default 4MiB.
	QueueBytes byteSize `yaml:"queue_bytes"`
	// Overflow is what happens when the queue is full: "block" (the
	// request waits up to block_for, then the event is dropped and counted)
	// or "drop" (dropped and counted at once). Default block.
	Overflow string `yaml:"overflow"`
	// BlockFor bounds the wait in block mode. Default 10s.
	BlockFor time.Duration `yaml:"block_for"`
}

type tracingConfig struct {
	// OTLPEndpoint is the OTLP/HTTP traces endpoint URL, e.g.
	// http://collector:4318/v1/traces. Empty: the OTEL_* environment decides.
	OTLPEndpoint string `yaml:"otlp_endpoint"`
	// SampleRatio is the share of requests traced (parent-based). Default 1.
	SampleRatio float64 `yaml:"sample_ratio"`
}

type healthConfig struct {
	// ProbePath is the request each probe sends. Default /golang.org/x/mod/@v/list.
	ProbePath string `yaml:"probe_path"`
	// Interval between probes. Default 5s.
	Interval time.Duration `yaml:"interval"`
	// Timeout of a probe. Default 8s.
	Timeout time.Duration `yaml:"timeout"`
	// FailThreshold consecutive failures drain an upstream. Default 3.
	FailThreshold int `yaml:"fail_threshold"`
	// RecoverThreshold consecutive successes bring it back. Default 2.
	RecoverThreshold int `yaml:"recover_threshold"`
	// DrainPeriod after which a draining upstream is removed. Default 11m,
	// longer than the longest route timeout (10m).
	DrainPeriod time.Duration `yaml:"drain_period"`
}

type limitsConfig struct {
	// MaxTargetBytes limits a request's path. Default 1024.
	MaxTargetBytes int `yaml:"max_target_bytes"`
	// UpstreamHeaderTimeout bounds the wait for an upstream's response
	// headers. Default 30s.
	UpstreamHeaderTimeout time.Duration `yaml:"upstream_header_timeout"`
	// FetchTimeout bounds a whole upstream fetch, body included. Default 10m.
	FetchTimeout time.Duration `yaml:"fetch_timeout"`
	// MaxHeaderBytes limits a client's request headers. Default 32 KiB.
	MaxHeaderBytes int `yaml:"max_header_bytes"`
}

// authConfig is the auth: section.
type authConfig struct {
	// Tokens is the tokens file (modgate token create writes it); it is
	// reloaded on SIGHUP. Default: none.
	Tokens string `yaml:"tokens"`
	// Required refuses anonymous requests with 401 and a Basic challenge.
	// Default false. The go command sends credentials only over HTTPS.
	Required bool `yaml:"required"`
	// Identities gives groups to verified client certificates, by SPIFFE
	// ID or subject. Default: none.
	Identities map[string][]string `yaml:"identities"`
	// Failures rations wrong credentials per source: Max in Window, then
	// 429. Default 10 a minute.
	Failures struct {
		Max    int           `yaml:"max"`
		Window time.Duration `yaml:"window"`
	} `yaml:"failures"`
}

// vcsConfig is the vcs: section: the VCS origin and its fetcher.
type vcsConfig struct {
	// Patterns (GOPRIVATE syntax) are the module paths fetched from their
	// repositories. Each must also be a private pattern: a public path is
	// never fetched from VCS. Default: every private pattern.
	Patterns []string `yaml:"patterns"`
	// Netrc is a file of credentials for HTTPS Git hosts. Default: none.
	Netrc string `yaml:"netrc"`
	// Env are extra KEY=VALUE variables for the fetcher (GIT_SSH_COMMAND,
	// GOVCS, GOINSECURE for a lab...); nothing else of modgate's own
	// environment reaches it.
	Env []string `yaml:"env"`
	// Go is the go binary the fetcher runs. Default: go on PATH.
	Go string `yaml:"go"`
	// Timeout bounds one fetch; its whole process group is killed then.
	// Default 10m.
	Timeout time.Duration `yaml:"timeout"`
	// MaxConcurrent bounds the fetches at once. Default 4.
	MaxConcurrent int `yaml:"max_concurrent"`
	// CacheDir is the fetcher's scratch space (clones, its module cache).
	// Default: vcs/ in the cache directory.
	CacheDir string `yaml:"cache_dir"`
	// MaxCacheBytes bounds CacheDir; the least recently used is evicted.
	// Default 10GiB.
	MaxCacheBytes byteSize `yaml:"max_cache_bytes"`
	// Listen serves the origin on a listener of its own, for mesh mode:
	// the gateway Envoy reaches it as an upstream_private endpoint, behind
	// mesh_tls like the blob listener. Default off (standalone mode reaches
	// it in process).
	Listen string `yaml:"listen"`
	// Advertise is the IP:PORT at which the gateway Envoy reaches Listen:
	// the endpoint the control plane publishes in upstream_private.
	// Default: none published.
	Advertise string `yaml:"advertise"`
}

// check checks the section on its own; patterns are checked against the
// private ones by vcsPatterns.
func (v *vcsConfig) check() error {
	if v == nil {
		return nil
	}
	switch {
	case v.Timeout < 0:
		return fmt.Errorf("vcs.timeout: %v is negative", v.Timeout)
	case v.MaxConcurrent < 0:
		return fmt.Errorf("vcs.max_concurrent: %d is negative", v.MaxConcurrent)
	case v.MaxCacheBytes < 0:
		return fmt.Errorf("vcs.max_cache_bytes: %d is negative", v.MaxCacheBytes)
	}
	if v.Advertise != "" {
		ap, err := netip.ParseAddrPort(v.Advertise)
		if err != nil {
			return fmt.Errorf("vcs.advertise: %q: want IP:PORT, the address the gateway Envoy reaches vcs.listen at", v.Advertise)
		}
		if v.Listen == "" || v.Listen == "off" {
			return fmt.Errorf("vcs.advertise: %s, but vcs.listen is off", ap)
		}
	}
	for i, kv := range v.Env {
		k, _, ok := strings.Cut(kv, "=")
		if !ok || k == "" || strings.ContainsAny(k, " \t\n\x00") {
			return fmt.Errorf("vcs.env[%d]: %q is not KEY=VALUE", i, kv)
		}
	}
	for i, p := range v.Patterns {
		if strings.TrimSpace(p) == "" || strings.Contains(p, ",") {
			return fmt.Errorf("vcs.patterns[%d]: %q is not one pattern", i, p)
		}
	}
	return nil
}

// vcsPatterns returns the VCS origin's patterns (default: every private
// pattern), refusing one that no private pattern covers.
func (c *fileConfig) vcsPatterns(env goEnv) ([]string, error) {
	private := splitPatterns(c.privatePatterns(env))
	if c.VCS.Patterns == nil {
		if len(private) == 0 {
			return nil, errors.New("vcs: no private patterns (private, or go env GOPRIVATE): the VCS origin would serve nothing")
		}
		return private, nil
	}
	joined := strings.Join(private, ",")
	for i, p := range c.VCS.Patterns {
		if !module.MatchPrefixPatterns(joined, p) {
			return nil, fmt.Errorf("vcs.patterns[%d]: %q is not a private pattern (private: %q): a public path is never fetched from VCS", i, p, joined)
		}
	}
	return c.VCS.Patterns, nil
}

// splitPatterns splits comma-separated pattern lists into patterns, once
// each.
func splitPatterns(lists []string) []string {
	var out []string
	for _, l := range lists {
		for p := range strings.SplitSeq(l, ",") {
			if p = strings.TrimSpace(p); p != "" && !slices.Contains(out, p) {
				out = append(out, p)
			}
		}
	}
	return out
}

// byteSize is a size in bytes, written as a number or with a unit:
// 512KiB, 256MiB, 10GiB (or KB, MB, GB, TB in powers of 1000).
type byteSize int64

func (b *byteSize) UnmarshalYAML(n *yaml.Node) error {
	v, err := parseByteSize(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*b = byteSize(v)
	return nil
}

func parseByteSize(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{
		{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
		{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"B", 1},
	}
	num, mult := strings.TrimSpace(s), int64(1)
	for _, u := range units {
		if rest, ok := strings.CutSuffix(num, u.suffix); ok {
			num, mult = strings.TrimSpace(rest), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("bad size %q: want bytes, or a number with KiB, MiB, GiB, TiB", s)
	}
	return n * mult, nil
}

// loadConfig reads the YAML file at path; an empty path yields the zero
// config. Unknown fields and duplicate keys are errors.
func loadConfig(path string) (*fileConfig, error) {
	cfg := new(fileConfig)
	if path == "" {
		return cfg, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) { // io.EOF: an empty file
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	if err := cfg.check(); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// refusePrivateNotFound reports whether a private 404/410 becomes a 403,
// from private_not_found or, if only it is set, pass_private_not_found.
func (c *fileConfig) refusePrivateNotFound() (bool, error) {
	var refuse bool
	switch c.PrivateNotFound {
	case "", "pass":
	case "refuse":
		refuse = true
	default:
		return false, fmt.Errorf("private_not_found: %q: want pass or refuse", c.PrivateNotFound)
	}
	if p := c.PassPrivateNotFound; p != nil {
		if c.PrivateNotFound != "" && *p == refuse {
			return false, fmt.Errorf("pass_private_not_found: %v contradicts private_not_found: %s; set only private_not_found", *p, c.PrivateNotFound)
		}
		refuse = !*p
	}
	return refuse, nil
}

// check validates the fields that are not checked by the constructors they
// feed.
func (c *fileConfig) check() error {
	for _, g := range c.Console.Groups {
		if err := policy.CheckGroup(g); err != nil {
			return fmt.Errorf("console.groups: %w", err)
		}
	}
	if (c.AdminTLS.Cert == "") != (c.AdminTLS.Key == "") {
		return errors.New("admin_tls: cert and key go together")
	}
	if c.AdminTLS.ClientCA != "" && c.AdminTLS.Cert == "" {
		return errors.New("admin_tls.client_ca: needs admin_tls.cert and admin_tls.key")
	}
	if c.Console.AuditEvents < 0 {
		return errors.New("console.audit_events: negative")
	}
	if c.Inventory.MaxKeys < 0 {
		return errors.New("inventory.max_keys: negative")
	}
	if c.Console.SampleInterval < 0 || (c.Console.SampleInterval > 0 && c.Console.SampleInterval < 100*time.Millisecond) {
		return fmt.Errorf("console.sample_interval: %s: want at least 100ms", c.Console.SampleInterval)
	}
	if (c.TLS.Cert == "") != (c.TLS.Key == "") {
		return errors.New("tls: cert and key go together")
	}
	if c.TLS.ClientCA != "" && c.TLS.Cert == "" {
		return errors.New("tls.client_ca: needs tls.cert and tls.key")
	}
	if err := c.MeshTLS.check(); err != nil {
		return err
	}
	if err := c.XDS.BlobTLS.check(); err != nil {
		return err
	}
	if c.XDS.BlobTLS.Cert != "" && c.XDS.BlobTLS.SAN == "" && blobHost(c.XDS.BlobAddr) == "" {
		return fmt.Errorf("xds.blob_tls.san: not set, and xds.blob_addr %q has no host to take it from", c.XDS.BlobAddr)
	}
	if _, err := c.refusePrivateNotFound(); err != nil {
		return err
	}
	if err := c.VCS.check(); err != nil {
		return err
	}
	if c.Cache.VerifyInterval < 0 {
		return errors.New("cache.verify_interval: negative")
	}
	if err := c.Store.check(); err != nil {
		return err
	}
	if err := c.Coordination.check(&c.Store); err != nil {
		return err
	}
	if _, err := policy.NewRules(c.Policy); err != nil {
		return err
	}
	if err := c.Policy.Cooldown.Check(); err != nil {
		return err
	}
	if err := c.Policy.Vulnerabilities.Check(); err != nil {
		return err
	}
	if err := c.VulnDB.Check(); err != nil {
		return err
	}
	if c.Auth.Required && c.Auth.Tokens == "" && len(c.Auth.Identities) == 0 {
		return errors.New("auth.required: no auth.tokens and no auth.identities: nobody could authenticate")
	}
	for id, groups := range c.Auth.Identities {
		if err := auth.CheckGroups(groups); err != nil {
			return fmt.Errorf("auth.identities[%q]: %w", id, err)
		}
	}
	if c.SumDBURL != "" {
		if _, err := upstream.Parse("sumdb_url", c.SumDBURL, false); err != nil {
			return fmt.Errorf("sumdb_url: %w", err)
		}
	}
	for i, u := range c.Upstreams {
		if u.URL == "" {
			return fmt.Errorf("upstreams[%d].url: missing", i)
		}
	}
	switch c.AuditLog.Overflow {
	case "", "block", "drop":
	default:
		return fmt.Errorf("audit_log.overflow: %q: want block or drop", c.AuditLog.Overflow)
	}
	if c.AuditLog.Keep < 0 || c.AuditLog.BlockFor < 0 {
		return errors.New("audit_log: negative keep or block_for")
	}
	if r := c.Tracing.SampleRatio; r < 0 || r > 1 {
		return errors.New("tracing.sample_ratio: want 0 to 1")
	}
	h := c.Health
	switch {
	case h.Interval < 0, h.Timeout < 0, h.DrainPeriod < 0:
		return errors.New("health: negative duration")
	case h.FailThreshold < 0, h.RecoverThreshold < 0:
		return errors.New("health: negative threshold")
	case h.ProbePath != "" && !strings.HasPrefix(h.ProbePath, "/"):
		return errors.New("health.probe_path: must begin with /")
	}
	switch {
	case c.Cache.StaleIfError < 0:
		return errors.New("cache.stale_if_error: negative")
	case c.Budget.Client.Rate < 0 || c.Budget.Client.Burst < 0:
		return errors.New("budget.client: negative")
	case c.Budget.Module.Rate < 0 || c.Budget.Module.Burst < 0:
		return errors.New("budget.module: negative")
	}
	l := c.Limits
	switch {
	case l.MaxTargetBytes < 0:
		return errors.New("limits.max_target_bytes: negative")
	case l.UpstreamHeaderTimeout < 0:
		return errors.New("limits.upstream_header_timeout: negative")
	case l.FetchTimeout < 0:
		return errors.New("limits.fetch_timeout: negative")
	case l.MaxHeaderBytes < 0:
		return errors.New("limits.max_header_bytes: negative")
	}
	return nil
}

// goEnv is what `go env` reports for the variables modgate defaults from.
type goEnv struct {
	GOPROXY   string
	GOSUMDB   string
	GOPRIVATE string
	GONOPROXY string
	GONOSUMDB string
	// GOMODCACHE is the module cache (modgate check reads zips there).
	GOMODCACHE string
}

// readGoEnv asks the go command; without one it reads the environment.
func readGoEnv(ctx context.Context) (goEnv, error) {
	var env goEnv
	gobin, err := exec.LookPath("go")
	if err != nil {
		env = goEnv{
			GOPROXY:    os.Getenv("GOPROXY"),
			GOSUMDB:    os.Getenv("GOSUMDB"),
			GOPRIVATE:  os.Getenv("GOPRIVATE"),
			GONOPROXY:  os.Getenv("GONOPROXY"),
			GONOSUMDB:  os.Getenv("GONOSUMDB"),
			GOMODCACHE: os.Getenv("GOMODCACHE"),
		}
		return env, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, gobin, "env", "-json", "GOPROXY", "GOSUMDB", "GOPRIVATE", "GONOPROXY", "GONOSUMDB", "GOMODCACHE").Output()
	if err != nil {
		return env, fmt.Errorf("go env: %w", err)
	}
	if err := json.Unmarshal(out, &env); err != nil {
		return env, fmt.Errorf("go env: %w", err)
	}
	return env, nil
}

// upstreams returns the configured upstreams, or those of GOPROXY, and
// the VCS origin when the vcs section is present.
func (c *fileConfig) upstreams(env goEnv) (*upstream.Set, error) {
	set := new(upstream.Set)
	seen := map[string]bool{}
	add := func(field string, uc upstreamConfig) error {
		u, err := upstream.Parse(uc.Name, uc.URL, uc.Private)
		if err != nil {
			return fmt.Errorf("%s: %w", field, err)
		}
		if seen[u.Name] {
			return fmt.Errorf("%s: duplicate upstream name %q", field, u.Name)
		}
		seen[u.Name] = true
		if u.Private {
			set.Private = append(set.Private, u)
		} else {
			set.Public = append(set.Public, u)
		}
		return nil
	}
	if c.Upstreams != nil {
		for i, uc := range c.Upstreams {
			if err := add(fmt.Sprintf("upstreams[%d]", i), uc); err != nil {
				return nil, err
			}
		}
		return set, c.withVCS(set, env)
	}
	for entry := range strings.FieldsFuncSeq(env.GOPROXY, func(r rune) bool { return r == ',' || r == '|' }) {
		entry = strings.TrimSpace(entry)
		if entry == "direct" || entry == "off" {
			continue
		}
		if err := add("GOPROXY", upstreamConfig{URL: entry}); err != nil {
			return nil, err
		}
	}
	if len(set.Public) == 0 {
		return nil, fmt.Errorf("GOPROXY=%q names no proxy (\"direct\" and \"off\" are not upstreams): list upstreams in the config file", env.GOPROXY)
	}
	return set, c.withVCS(set, env)
}

// VCSUpstream is the name of the VCS origin as an upstream: in the audit
// (modgate.upstream), the metrics and the logs.
const VCSUpstream = "vcs"

// withVCS adds the VCS origin to set as a private upstream for its
// patterns, reached in this process, when the vcs section is present.
func (c *fileConfig) withVCS(set *upstream.Set, env goEnv) error {
	if c.VCS == nil {
		return nil
	}
	patterns, err := c.vcsPatterns(env)
	if err != nil {
		return err
	}
	for _, u := range append(set.Public, set.Private...) {
		if u.Name == VCSUpstream {
			return fmt.Errorf("upstreams: the name %q is the VCS origin's", VCSUpstream)
		}
	}
	if c.VCS.Advertise != "" && len(set.Private) > 0 {
		return fmt.Errorf("vcs.advertise: the VCS origin would share the gateway's upstream_private cluster with the private upstream %s; in mesh mode use one or the other", set.Private[0].Name)
	}
	u, err := upstream.Parse(VCSUpstream, "http://"+upstream.InProcessHost, true)
	if err != nil {
		return err
	}
	u.Patterns = patterns
	set.Private = append(set.Private, u)
	return nil
}

// privatePatterns returns the configured private patterns, or those of go env.
func (c *fileConfig) privatePatterns(env goEnv) []string {
	if c.Private != nil {
		return c.Private
	}
	var ps []string
	for _, v := range []string{env.GOPRIVATE, env.GONOPROXY, env.GONOSUMDB} {
		if v != "" {
			ps = append(ps, v)
		}
	}
	return ps
}

// sumDBs returns the configured checksum database names, or GOSUMDB's.
func (c *fileConfig) sumDBs(env goEnv) []string {
	if c.SumDB != nil {
		return c.SumDB
	}
	name, _ := parseGOSUMDB(env.GOSUMDB)
	if name == "" {
		return nil
	}
	return []string{name}
}

// sumDBKey returns the verifier key of the checksum database to verify
// public modules against, "" for none.
func (c *fileConfig) sumDBKey(env goEnv) (string, error) {
	key := c.SumDBKey
	field := "sumdb_key"
	if key == "" {
		key, field = strings.TrimSpace(env.GOSUMDB), "GOSUMDB"
	}
	name, key := parseGOSUMDB(key)
	switch {
	case name == "":
		return "", nil
	case key == "":
		return "", fmt.Errorf("%s: no verifier key known for checksum database %q: give its key (name+hash+keydata)", field, name)
	}
	if _, err := note.NewVerifier(key); err != nil {
		return "", fmt.Errorf("%s: %w", field, err)
	}
	return key, nil
}

// parseGOSUMDB reads a GOSUMDB value — "off", "name", "name+hash+keydata",
// either followed by a URL — as the go command does, and returns the
// database name and verifier key ("" if off, or if unknown for a bare
// name).
func parseGOSUMDB(v string) (name, key string) {
	f := strings.Fields(v)
	if len(f) == 0 || f[0] == "off" {
		return "", ""
	}
	if f[0] == "sum.golang.google.cn" {
		f[0] = "sum.golang.org" // the go command's own special case: a mirror
	}
	if k, ok := verify.KnownKeys[f[0]]; ok {
		return f[0], k
	}
	name, _, hasKey := strings.Cut(f[0], "+")
	if !hasKey {
		return name, ""
	}
	return name, f[0]
}

// cacheConfig returns the cache's configuration.
func (c *fileConfig) cacheConfig() (cache.Config, error) {
	dir := c.CacheDir
	if dir == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			return cache.Config{}, fmt.Errorf("cache_dir: not set, and no user cache directory: %w", err)
		}
		dir = filepath.Join(base, "modgate")
	}
	cc := cache.Config{
		Dir:          dir,
		HotBytes:     int64(c.Cache.HotBytes),
		DiskBytes:    int64(c.Cache.DiskBytes),
		StaleIfError: c.Cache.StaleIfError,
	}
	t := c.Cache.TTL
	cc.TTL = cache.TTLs{
		Release: t.Release, Prerelease: t.Prerelease, Pseudo: t.Pseudo, Query: t.Query,
		Negative: t.Negative, SumDB: t.SumDB, SumDBLatest: t.SumDBLatest,
	}
	return cc, nil
}

// budget returns the miss budget, or nil if it is off; now is its clock.
func (c *fileConfig) budget(now func() time.Time) (*budget.Budget, error) {
	b := c.Budget
	if b.Off {
		return nil, nil
	}
	limit := func(l limitConfig, rate float64, burst int) budget.Limit {
		if l.Rate == 0 {
			l.Rate = rate
		}
		if l.Burst == 0 {
			l.Burst = burst
		}
		return budget.Limit{Rate: l.Rate, Burst: l.Burst}
	}
	return budget.New(budget.Config{
		Client:  limit(b.Client, 100, 2000),
		Module:  limit(b.Module, 20, 400),
		MaxKeys: b.MaxKeys,
		Now:     now,
	})
}

// check validates mesh_tls: all or nothing, and never without a client
// identity to accept.
func (m *meshTLSConfig) check() error {
	if m.Cert == "" && m.Key == "" && m.ClientCA == "" && len(m.AllowedClients) == 0 {
		return nil
	}
	switch {
	case m.Cert == "" || m.Key == "":
		return errors.New("mesh_tls: cert and key go together, and client_ca and allowed_clients need them")
	case m.ClientCA == "":
		return errors.New("mesh_tls.client_ca: missing: the CAs the gateway Envoy's client certificate chains to")
	case len(m.AllowedClients) == 0:
		return errors.New("mesh_tls.allowed_clients: missing: the gateway Envoy's identity (a URI SAN such as spiffe://..., or a DNS SAN); without it any certificate from client_ca would do")
	}
	for i, id := range m.AllowedClients {
		if err := checkIdentity(id); err != nil {
			return fmt.Errorf("mesh_tls.allowed_clients[%d]: %w", i, err)
		}
	}
	return nil
}

// checkIdentity checks an allowed client identity: a URI with a scheme
// and a host (spiffe://trust-domain/path), or a DNS name.
func checkIdentity(id string) error {
	if strings.Contains(id, "://") {
		u, err := url.Parse(id)
		if err != nil || u.Scheme == "" || u.Host == "" {
			return fmt.Errorf("%q: want a URI such as spiffe://trust-domain/path, or a DNS name", id)
		}
		return nil
	}
	if id == "" || strings.ContainsAny(id, " /:@*") {
		return fmt.Errorf("%q: want a DNS name, or a URI such as spiffe://trust-domain/path", id)
	}
	return nil
}

// check validates xds.blob_tls: all or nothing (san has a default).
func (b *blobTLSConfig) check() error {
	if b.Cert == "" && b.Key == "" && b.CA == "" && b.SAN == "" {
		return nil
	}
	switch {
	case b.Cert == "" || b.Key == "":
		return errors.New("xds.blob_tls: cert and key go together, and ca and san need them")
	case b.CA == "":
		return errors.New("xds.blob_tls.ca: missing: the CAs the blob listener's certificate chains to")
	}
	return nil
}
