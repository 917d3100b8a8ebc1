package console

import (
	"cmp"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/module"
	"golang.org/x/mod/semver"

	"github.com/modgate/modgate/auditindex"
	"github.com/modgate/modgate/console/history"
	"github.com/modgate/modgate/health"
	"github.com/modgate/modgate/inventory"
)

// Bounds of what a page shows and of the query fields it takes.
const (
	pageSize      = 50
	maxSearch     = 100 // modules listed by a search
	maxVersions   = 200 // versions of one module listed
	maxFieldBytes = 1024
	chartWidth    = 360
	chartHeight   = 120
	maxRuleCharts = 6
)

// funcs are the templates' helpers.
var funcs = template.FuncMap{
	"time": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return t.UTC().Format("2006-01-02 15:04:05Z")
	},
	"ago": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return durationWords(time.Since(t)) + " ago"
	},
	"join": strings.Join,
	"inc":  func(i int) int { return i + 1 },
	"pct":  func(f float64) string { return strconv.FormatFloat(100*f, 'f', 1, 64) + " %" },
	"num":  formatNum,
}

// formatNum writes a metric's value as /metrics does, without exponent.
func formatNum(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

// durationWords rounds d for people: 42s, 7m, 3h12m, 2d4h.
func durationWords(d time.Duration) string {
	switch {
	case d < time.Second:
		return d.String()
	case d < time.Minute:
		return d.Round(time.Second).String()
	case d < time.Hour:
		return strconv.Itoa(int(d/time.Minute)) + "m"
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d/time.Hour), int(d%time.Hour/time.Minute))
	}
	return fmt.Sprintf("%dd%dh", int(d/(24*time.Hour)), int(d%(24*time.Hour)/time.Hour))
}

// field returns a query parameter, trimmed and bounded.
func field(r *http.Request, name string) string {
	v := strings.TrimSpace(r.URL.Query().Get(name))
	if len(v) > maxFieldBytes {
		v = v[:maxFieldBytes]
	}
	return v
}

func urlQueryEscape(s string) string { return url.QueryEscape(s) }

// link is a console path with a query, for an href.
func link(path string, kv ...string) string {
	q := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] != "" {
			q.Set(kv[i], kv[i+1])
		}
	}
	if len(q) == 0 {
		return path
	}
	return path + "?" + q.Encode()
}

// Overview.

type overviewData struct {
	Requests, Lookups, Hits float64
	HitRatio                float64
	HasLookups              bool
	VerifyFailures          float64
	Refusals                []ruleCount
	Charts                  []template.HTML
	States                  template.HTML
	Upstreams               []upstreamRow
	Attention               []string
	Since                   time.Time
	Window, Interval        string
}

type ruleCount struct {
	Rule  string
	Count float64
	Link  string
}

type upstreamRow struct {
	health.Status
	StateName string
	Healthy   bool
}

func (c *Console) overview(w http.ResponseWriter, r *http.Request) {
	now := c.cfg.Now()
	from := now.Add(-c.cfg.History.Window())
	samples := c.cfg.History.Samples()
	cur, err := c.cfg.History.Current()
	if err != nil {
		c.cfg.Logger.ErrorContext(r.Context(), "console: reading the metrics", "err", err)
	}
	d := overviewData{
		Requests:       cur.Requests,
		Lookups:        cur.Lookups,
		Hits:           cur.Hits,
		VerifyFailures: cur.VerifyFailures,
	}
	if len(samples) > 0 {
		d.Since = samples[0].Time
	}
	d.Window, d.Interval = durationWords(c.cfg.History.Window()), durationWords(c.cfg.History.Interval())
	d.HitRatio, d.HasLookups = cur.HitRatio()
	for rule, n := range cur.Refusals {
		d.Refusals = append(d.Refusals, ruleCount{Rule: rule, Count: n, Link: link("/ui/refusals", "rule", rule)})
	}
	slices.SortFunc(d.Refusals, func(a, b ruleCount) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), strings.Compare(a.Rule, b.Rule))
	})
	opt := history.ChartOptions{Width: chartWidth, Height: chartHeight}
	d.Charts = append(d.Charts,
		history.Line("Requests per second", history.RequestRate(samples), from, now, withUnit(opt, "req/s")),
		history.Line("Cache hit ratio", history.HitRatio(samples), from, now, ratio(opt)),
	)
	vf := history.VerifyFailureRate(samples)
	vopt := withUnit(opt, "/s")
	vopt.Highlight = d.VerifyFailures > 0
	d.Charts = append(d.Charts, history.Line("Verification failures per second", vf, from, now, vopt))
	rules := history.Rules(samples)
	for _, rule := range rules[:min(len(rules), maxRuleCharts)] {
		d.Charts = append(d.Charts, history.Line("Refused by "+rule+" per second", history.RefusalRate(samples, rule), from, now, withUnit(opt, "/s")))
	}
	if d.VerifyFailures > 0 {
		d.Attention = append(d.Attention, fmt.Sprintf("%s fetched artifacts failed verification since the gateway started: see the audit events with a verification failure.", formatNum(d.VerifyFailures)))
	}
	for _, u := range c.cfg.Gateway.Upstreams() {
		row := upstreamRow{Status: u, StateName: u.State.String(), Healthy: u.State == health.Healthy}
		d.Upstreams = append(d.Upstreams, row)
		if !row.Healthy {
			d.Attention = append(d.Attention, fmt.Sprintf("Upstream %s is %s since %s.", u.Name, row.StateName, u.Since.UTC().Format("2006-01-02 15:04:05Z")))
		}
	}
	sopt := opt
	sopt.Width = 2*chartWidth + 20
	d.States = history.Strip(history.UpstreamStates(samples), from, now, sopt)
	c.render(w, r, "overview", http.StatusOK, d)
}

func withUnit(o history.ChartOptions, unit string) history.ChartOptions {
	o.Unit = unit
	return o
}

func ratio(o history.ChartOptions) history.ChartOptions {
	o.Ratio, o.Unit = true, "%"
	return o
}

// Modules.

type modulesData struct {
	Query   string
	Results []inventory.ModuleCount
	Off     bool
	Module  string
	Error   string
	Rows    []versionRow
	More    int
	Audit   bool
}

type versionRow struct {
	Version      string
	Cached       Cached
	Verification string
	First, Last  time.Time
	Count        int64
	Who          []whoRow
	Vulns        []string
	Decision     Decision
	DecisionErr  string
	AuditLink    string
}

type whoRow struct {
	Identity string
	Count    int64
	Kinds    string
	Last     time.Time
}

func (c *Console) modules(w http.ResponseWriter, r *http.Request) {
	d := modulesData{Query: field(r, "q"), Module: field(r, "module"), Off: c.cfg.Inventory == nil, Audit: c.cfg.Audit != nil}
	if d.Off {
		c.render(w, r, "modules", http.StatusOK, d)
		return
	}
	if d.Module == "" {
		d.Results = c.cfg.Inventory.Search(d.Query, maxSearch)
		c.render(w, r, "modules", http.StatusOK, d)
		return
	}
	if err := module.CheckPath(d.Module); err != nil {
		d.Error = err.Error()
		c.render(w, r, "modules", http.StatusBadRequest, d)
		return
	}
	fetches, err := c.cfg.Inventory.Who(d.Module, "")
	if err != nil {
		d.Error = err.Error()
		c.render(w, r, "modules", http.StatusInternalServerError, d)
		return
	}
	byVersion := map[string]*versionRow{}
	var order []string
	for _, f := range fetches {
		row := byVersion[f.Version]
		if row == nil {
			row = &versionRow{Version: f.Version, First: f.First, Last: f.Last}
			byVersion[f.Version] = row
			order = append(order, f.Version)
		}
		row.First = minTime(row.First, f.First)
		if f.Last.After(row.Last) {
			row.Last = f.Last
		}
		row.Count += f.Count
		row.Who = append(row.Who, whoRow{Identity: f.Identity, Count: f.Count, Kinds: strings.Join(f.Kinds, ", "), Last: f.Last})
	}
	// Newest version first.
	slices.SortFunc(order, func(a, b string) int { return semver.Compare(b, a) })
	if len(order) > maxVersions {
		d.More = len(order) - maxVersions
		order = order[:maxVersions]
	}
	for _, v := range order {
		row := byVersion[v]
		row.Cached = c.cfg.Gateway.Cached(d.Module, v)
		row.Vulns = c.cfg.Gateway.Vulnerabilities(d.Module, v)
		row.Decision, err = c.cfg.Gateway.Check(r.Context(), d.Module, v, "")
		if err != nil {
			row.DecisionErr = err.Error()
		}
		row.Verification = c.verification(r, d.Module, v)
		row.AuditLink = link("/ui/audit", "module", d.Module, "version", v)
		d.Rows = append(d.Rows, *row)
	}
	c.render(w, r, "modules", http.StatusOK, d)
}

// verification is how module@version's files were checked when fetched,
// from the newest audit event that records it: "checksum database",
// "ledger", or what failed.
func (c *Console) verification(r *http.Request, mod, version string) string {
	if c.cfg.Audit == nil {
		return "unknown (the audit log is not in files)"
	}
	p, err := c.cfg.Audit.Query(r.Context(), auditindex.Query{Module: mod, Version: version, HasVerification: true, Limit: 1})
	if err != nil || len(p.Events) == 0 {
		return "not recorded"
	}
	switch v := p.Events[0].Event.Modgate.Verification; v {
	case "verified":
		return "checksum database"
	case "ledger":
		return "ledger (private)"
	default:
		return v
	}
}

func minTime(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

// Refusals and Audit: both views of the audit index.

type eventsData struct {
	Off       bool
	Note      string
	Form      map[string]string
	Rules     []string
	Decisions []string
	Error     string
	Page      auditindex.Page
	Rows      []eventRow
	NextLink  string
	Chain     chainView
}

type eventRow struct {
	Seq                         uint64
	Time                        time.Time
	Action, Identity, Decision  string
	Rule, Module, Version, Kind string
	Status                      int
	Reason, Cache, Verification string
	Vulns                       []string
	Changed                     bool
	ModuleLink                  string
}

type chainView struct {
	OK      bool
	Summary string
}

func (c *Console) refusals(w http.ResponseWriter, r *http.Request) {
	form := map[string]string{"rule": field(r, "rule"), "identity": field(r, "identity"), "module": field(r, "module"), "before": field(r, "before")}
	q := auditindex.Query{
		Decisions:    []string{"deny", "reject"},
		Action:       "request",
		Rule:         form["rule"],
		IdentityLike: form["identity"],
		ModuleLike:   form["module"],
	}
	c.events(w, r, "refusals", form, q)
}

func (c *Console) audit(w http.ResponseWriter, r *http.Request) {
	form := map[string]string{}
	for _, k := range []string{"module", "version", "identity", "decision", "status", "since", "until", "before", "action"} {
		form[k] = field(r, k)
	}
	q := auditindex.Query{ModuleLike: form["module"], Version: form["version"], IdentityLike: form["identity"], Action: form["action"]}
	var errs []string
	if d := form["decision"]; d != "" {
		q.Decisions = []string{d}
	}
	if s := form["status"]; s != "" {
		n, class, err := parseStatus(s)
		if err != nil {
			errs = append(errs, err.Error())
		}
		q.Status, q.StatusClass = n, class
	}
	for _, t := range []struct {
		name string
		dst  *time.Time
	}{{"since", &q.Since}, {"until", &q.Until}} {
		if form[t.name] == "" {
			continue
		}
		v, err := parseTime(form[t.name])
		if err != nil {
			errs = append(errs, t.name+": "+err.Error())
		}
		*t.dst = v
	}
	if len(errs) > 0 {
		c.renderEvents(w, r, "audit", form, nil, strings.Join(errs, "; "))
		return
	}
	c.events(w, r, "audit", form, q)
}

// parseStatus reads a status filter: a code (404) or a class (4xx).
func parseStatus(s string) (code int, class bool, err error) {
	if len(s) == 3 && strings.HasSuffix(strings.ToLower(s), "xx") && s[0] >= '1' && s[0] <= '5' {
		return int(s[0]-'0') * 100, true, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 100 || n > 599 {
		return 0, false, fmt.Errorf("status %q: want a code such as 404, or a class such as 4xx", s)
	}
	return n, false, nil
}

// parseTime reads a time filter: RFC 3339, or the datetime-local input's
// 2006-01-02T15:04, taken as UTC.
func parseTime(s string) (time.Time, error) {
	for _, layout := range []string{time.RFC3339, "2006-01-02T15:04:05", "2006-01-02T15:04", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("%q: want a time such as 2026-12-07T15:04 (UTC)", s)
}

func (c *Console) events(w http.ResponseWriter, r *http.Request, page string, form map[string]string, q auditindex.Query) {
	if b := form["before"]; b != "" {
		n, err := strconv.ParseUint(b, 10, 64)
		if err != nil {
			c.renderEvents(w, r, page, form, nil, fmt.Sprintf("before %q: not a sequence number", b))
			return
		}
		q.Before = n
	}
	q.Limit = pageSize
	if c.cfg.Audit == nil {
		c.renderEvents(w, r, page, form, nil, "")
		return
	}
	p, err := c.cfg.Audit.Query(r.Context(), q)
	if err != nil {
		c.renderEvents(w, r, page, form, nil, err.Error())
		return
	}
	c.renderEvents(w, r, page, form, &p, "")
}

func (c *Console) renderEvents(w http.ResponseWriter, r *http.Request, page string, form map[string]string, p *auditindex.Page, errText string) {
	d := eventsData{Off: c.cfg.Audit == nil, Note: c.cfg.AuditNote, Form: form, Error: errText,
		Decisions: []string{"serve", "forward", "deny", "reject"}}
	d.Rules = c.ruleNames()
	status := http.StatusOK
	if errText != "" {
		status = http.StatusBadRequest
	}
	if p != nil {
		d.Page = *p
		for _, e := range p.Events {
			ev := e.Event
			row := eventRow{
				Seq: e.Seq, Time: ev.Timestamp, Action: ev.Event.Action, Identity: e.Identity,
				Decision: ev.Modgate.Decision, Rule: ev.Modgate.Rule, Module: ev.Modgate.Module, Version: ev.Modgate.Version,
				Kind: ev.Modgate.Kind, Reason: ev.Event.Reason, Cache: ev.Modgate.Cache, Verification: ev.Modgate.Verification,
				Changed: e.Changed,
			}
			if ev.HTTP != nil {
				row.Status = ev.HTTP.Response.StatusCode
			}
			if ev.Vulnerability != nil {
				row.Vulns = ev.Vulnerability.ID
			}
			if row.Module != "" {
				row.ModuleLink = link("/ui/modules", "module", row.Module)
			}
			d.Rows = append(d.Rows, row)
		}
		if p.Next != 0 {
			kv := []string{}
			for k, v := range form {
				if k != "before" {
					kv = append(kv, k, v)
				}
			}
			kv = append(kv, "before", strconv.FormatUint(p.Next, 10))
			d.NextLink = link("/ui/"+page, kv...)
		}
		d.Chain = describeChain(p)
	}
	c.render(w, r, page, status, d)
}

// describeChain says whether the chain verifies up to the newest event
// shown: from the oldest event the index holds through that one, every
// line's hash is in the next line, and the lines shown still hash to what
// was checked.
func describeChain(p *auditindex.Page) chainView {
	ch := p.Chain
	for _, e := range p.Events {
		if e.Changed {
			return chainView{Summary: fmt.Sprintf("The hash chain does NOT verify: event %d (%s:%d) was changed after it was written.", e.Seq, e.File, e.Line)}
		}
	}
	var later string
	if ch.Problem != nil {
		later = " It breaks later, at " + ch.Problem.Error() + "."
	}
	if !ch.Complete {
		later += " (The log is still being read.)"
	}
	if len(p.Events) == 0 {
		if ch.Problem != nil {
			return chainView{Summary: fmt.Sprintf("The hash chain verifies from event %d through %d only: it breaks at %s.", ch.VerifiedFrom, ch.VerifiedThrough, ch.Problem.Error())}
		}
		return chainView{OK: true, Summary: fmt.Sprintf("The hash chain verifies from event %d through %d.", ch.VerifiedFrom, ch.VerifiedThrough)}
	}
	newest := p.Events[0]
	if newest.Verified {
		return chainView{OK: true, Summary: fmt.Sprintf("The hash chain verifies from event %d, the oldest held, through event %d, which includes the newest event shown (%d).%s", ch.VerifiedFrom, ch.VerifiedThrough, newest.Seq, later)}
	}
	if ch.Problem != nil {
		return chainView{Summary: fmt.Sprintf("The hash chain does NOT verify up to the newest event shown (%d): it verifies from event %d through %d, and breaks at %s.", newest.Seq, ch.VerifiedFrom, ch.VerifiedThrough, ch.Problem.Error())}
	}
	return chainView{Summary: fmt.Sprintf("The newest event shown (%d) is not verified yet: the chain verifies from event %d through %d.%s", newest.Seq, ch.VerifiedFrom, ch.VerifiedThrough, later)}
}

// ruleNames are the rules a refusal filter offers: the policy's, the
// built-in ones and those the metrics have seen refuse.
func (c *Console) ruleNames() []string {
	set := map[string]bool{"cooldown": true, "vulnerability": true, "auth": true, "grammar": true}
	for _, r := range c.cfg.Gateway.Policy().Rules {
		set[r.Name] = true
	}
	if cur, err := c.cfg.History.Current(); err == nil {
		for rule := range cur.Refusals {
			set[rule] = true
		}
	}
	names := make([]string, 0, len(set))
	for n := range set {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Policy.

type policyData struct {
	Policy   Policy
	Target   string
	Identity string
	Asked    bool
	Decision Decision
	Error    string
}

func (c *Console) policy(w http.ResponseWriter, r *http.Request) {
	d := policyData{Policy: c.cfg.Gateway.Policy(), Target: field(r, "target"), Identity: field(r, "identity")}
	status := http.StatusOK
	if d.Target != "" {
		d.Asked = true
		mod, version, ok := strings.Cut(d.Target, "@")
		if !ok {
			d.Error = fmt.Sprintf("%q: want MODULE@VERSION, such as golang.org/x/mod@v0.20.0", d.Target)
		} else if dec, err := c.cfg.Gateway.Check(r.Context(), mod, version, d.Identity); err != nil {
			d.Error = err.Error()
		} else {
			d.Decision = dec
		}
		if d.Error != "" {
			status = http.StatusBadRequest
		}
	}
	c.render(w, r, "policy", status, d)
}
