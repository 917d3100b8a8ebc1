// Package console serves modgate's web console: read-only pages, for the
// people who run the gateway, of what it holds and what it did.
//
//   - Overview (/ui/): requests per second, hit ratio, refusals by rule and
//     verification failures over the last hour, from the process's own
//     metrics (package history samples the registry /metrics serves), and
//     every upstream's health state and since when.
//   - Modules (/ui/modules): the inventory searched by module path; for each
//     version fetched, whether it is cached, how it was verified, who
//     fetched it and when, its known vulnerabilities, and whether policy
//     would allow it now.
//   - Refusals (/ui/refusals): the latest denials (policy rules, cooldown
//     holds, vulnerability blocks, authentication) and rejects, filtered by
//     rule, identity and module.
//   - Audit (/ui/audit): the audit events, newest first, paged and filtered,
//     with whether the hash chain verifies up to the newest event shown.
//   - Policy (/ui/policy): the rules in force and where they came from, and
//     a "would this be allowed?" form that decides as `modgate policy check`.
//
// Pages are HTML rendered on the server from templates and a stylesheet
// embedded in the binary; they need no network and no script (charts are
// inline SVG). Everything shown that came from outside (module paths,
// identities, rule names, reasons) is escaped by html/template. Every
// response carries a Content-Security-Policy that allows only the
// console's own stylesheet, so injected markup could not run even if it
// slipped through.
//
// Access is the admin listener's: the admin token, sent as "Authorization:
// Bearer TOKEN" or given once to the login form, which sets a session
// cookie (HttpOnly, SameSite=Strict, 12 hours). With Config.Groups, the
// gateway's own identities in one of those groups get in too: a client
// token (as a bearer token or to the login form), or a verified client
// certificate on an HTTPS admin listener, with no login. With
// Config.AnonymousLoopback, clients on a loopback address need nothing.
//
// The console reads; it changes nothing. Its figures are the sources'
// own: the inventory's answers, the metrics registry's counters, the
// audit files.
package console

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"time"

	"github.com/modgate/modgate/auditindex"
	"github.com/modgate/modgate/console/history"
	"github.com/modgate/modgate/health"
	"github.com/modgate/modgate/inventory"
)

// Prefix is the path the console's handler is mounted at.
const Prefix = "/ui/"

// Inventory is who fetched what (package inventory). Both methods are
// safe for concurrent use.
type Inventory interface {
	// Search returns the n most fetched modules whose path contains
	// substr, case-insensitively.
	Search(substr string, n int) []inventory.ModuleCount
	// Who returns who fetched the versions of module (every version for
	// ""), sorted by version and identity.
	Who(module, versionOrRange string) ([]inventory.Fetch, error)
}

// AuditLog answers queries over the audit files (package auditindex).
type AuditLog interface {
	Query(ctx context.Context, q auditindex.Query) (auditindex.Page, error)
}

// Gateway is what the running gateway knows now. Its methods are safe for
// concurrent use and answer from memory, except Check, which may ask the
// checksum database (the cooldown).
type Gateway interface {
	// Upstreams returns every configured upstream's health.
	Upstreams() []health.Status
	// Cached reports what the cache holds of module@version.
	Cached(module, version string) Cached
	// Vulnerabilities returns the IDs of module@version's known
	// vulnerabilities, nil if none or if the vulnerability policy is off.
	Vulnerabilities(module, version string) []string
	// Check decides for the .zip of module@version as a request by the
	// identity name (anonymous if ""), as `modgate policy check` does.
	Check(ctx context.Context, module, version, name string) (Decision, error)
	// Policy describes the policy in force.
	Policy() Policy
}

// Identifier tells who holds credentials other than the admin token, as
// the gateway authenticates its clients (package auth).
type Identifier interface {
	// Identify returns the identity and groups of r's verified client
	// certificate if token is "", else of the client token; ok is false
	// for neither (a wrong token, no certificate).
	Identify(ctx context.Context, r *http.Request, token string) (name string, groups []string, ok bool)
}

// Cached is what the cache holds of one module version.
type Cached struct {
	Info, Mod, Zip bool
}

// A Decision is Gateway.Check's answer.
type Decision struct {
	Allow bool
	// Line is what `modgate policy check` prints for it.
	Line string
	// Rule decided; Reason is what a go command would be told (denials).
	Rule, Reason string
	// Groups are the identity's groups, as the gateway knows them.
	Groups []string
	// Vulnerabilities are the version's known vulnerabilities and
	// VulnAction what the vulnerability policy does with it (allow,
	// warn, deny; "" when it is off).
	Vulnerabilities []string
	VulnAction      string
}

// Policy describes the policy in force.
type Policy struct {
	// Source is the config file it was read from ("" for the defaults)
	// and Loaded when.
	Source string
	Loaded time.Time
	// Default is what happens when no rule applies: allow or deny.
	Default string
	Rules   []Rule
	// Private are the private module patterns; SumDBs the checksum
	// databases allowed.
	Private []string
	SumDBs  []string
	// Cooldown and Vulnerabilities summarize those policies in words
	// ("off" when off).
	Cooldown, Vulnerabilities string
}

// A Rule is one policy rule, as configured.
type Rule struct {
	Name, Match, Versions, Action, Reason string
	Groups                                []string
	BlockMod                              bool
}

// Config configures New.
type Config struct {
	// Token is the admin token. Required unless AnonymousLoopback.
	Token string
	// AnonymousLoopback lets clients on a loopback address in without a
	// token. Default false.
	AnonymousLoopback bool
	// Groups admits the identities Identifier establishes that are in one
	// of them. Default: none, only the admin token.
	Groups     []string
	Identifier Identifier
	// History is the sampled metrics the overview charts. Required.
	History *history.Sampler
	// Gateway is the running gateway. Required.
	Gateway Gateway
	// Inventory is who fetched what; nil: the modules page says it is off.
	Inventory Inventory
	// Audit is the audit files' index; nil when the audit log is not
	// written to files (AuditNote then says where it goes).
	Audit     AuditLog
	AuditNote string
	// Logger logs refused logins. Default slog.Default().
	Logger *slog.Logger
	// Now returns the current time. Default time.Now.
	Now func() time.Time
}

// A Console serves the pages. Create it with New.
type Console struct {
	cfg      Config
	pages    map[string]*template.Template
	sessions *sessions
}

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// New checks cfg and parses the templates.
func New(cfg Config) (*Console, error) {
	if cfg.Token == "" && !cfg.AnonymousLoopback && (len(cfg.Groups) == 0 || cfg.Identifier == nil) {
		return nil, errors.New("console: no admin token, no groups and anonymous loopback access is off: nobody could log in")
	}
	if len(cfg.Groups) > 0 && cfg.Identifier == nil {
		return nil, errors.New("console: groups without an Identifier")
	}
	if cfg.History == nil || cfg.Gateway == nil {
		return nil, errors.New("console: History and Gateway are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	c := &Console{cfg: cfg, pages: map[string]*template.Template{}, sessions: newSessions(cfg.Now)}
	for _, page := range []string{"login", "overview", "modules", "refusals", "audit", "policy"} {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/events.html", "templates/"+page+".html")
		if err != nil {
			return nil, fmt.Errorf("console: template %s: %w", page, err)
		}
		c.pages[page] = t
	}
	return c, nil
}

// Handler serves the console under Prefix.
func (c *Console) Handler() http.Handler {
	static, _ := fs.Sub(staticFS, "static") // embedded: cannot fail
	mux := http.NewServeMux()
	mux.Handle("GET /ui/static/", http.StripPrefix("/ui/static/", http.FileServerFS(static)))
	mux.HandleFunc("GET /ui/login", c.loginPage)
	mux.HandleFunc("POST /ui/login", c.login)
	mux.HandleFunc("POST /ui/logout", c.logout)
	mux.Handle("GET /ui/{$}", c.guard(c.overview))
	mux.Handle("GET /ui/modules", c.guard(c.modules))
	mux.Handle("GET /ui/refusals", c.guard(c.refusals))
	mux.Handle("GET /ui/audit", c.guard(c.audit))
	mux.Handle("GET /ui/policy", c.guard(c.policy))
	return secure(mux)
}

// csp allows the console's own stylesheet and images, and nothing else:
// no script at all, no inline style, no frames, forms only to itself.
const csp = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// secure sets the headers every console response carries.
func secure(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", csp)
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("Cache-Control", "no-store")
		h.ServeHTTP(w, r)
	})
}

// render writes a page, or a plain 500 if its template fails (a bug): the
// page is rendered whole before anything is sent.
func (c *Console) render(w http.ResponseWriter, r *http.Request, page string, status int, data any) {
	t := c.pages[page]
	var buf bytes.Buffer
	if err := t.Execute(&buf, struct {
		Page, Who string
		Data      any
	}{page, whoOf(r), data}); err != nil {
		c.cfg.Logger.ErrorContext(r.Context(), "console: rendering a page", "page", page, "err", err)
		http.Error(w, "console: the page could not be rendered; see the server log", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	buf.WriteTo(w)
}
