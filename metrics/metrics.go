// Package metrics holds modgate's Prometheus metrics: what the processor,
// the fills, the ext_proc server, the xDS server and the health registry
// report, and collectors that read the cache's and the audit queue's own
// counters at scrape time. All names start with modgate_. A Metrics is safe for
// concurrent use; a nil *Metrics is not (give the packages nil interfaces
// instead).
package metrics

import (
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/modgate/modgate/audit"
	"github.com/modgate/modgate/cache"
)

// Metrics is the registry and the metrics modgate updates.
type Metrics struct {
	reg *prometheus.Registry

	requests        *prometheus.CounterVec
	refusals        *prometheus.CounterVec
	requestDuration *prometheus.HistogramVec
	upstreamFetch   *prometheus.HistogramVec
	verifications   *prometheus.CounterVec
	upstreamState   *prometheus.GaugeVec
	extprocStreams  *prometheus.CounterVec
	extprocActive   prometheus.Gauge
	extprocPhase    *prometheus.HistogramVec
	xdsNacks        *prometheus.CounterVec

	// The series of every request and ext_proc message, looked up by
	// their labels once each (the label sets are few: kinds, statuses,
	// cache statuses, phases), not hashed on every request.
	requestSeries sync.Map // requestLabels → requestSeries
	phaseSeries   sync.Map // phase → prometheus.Observer
}

// requestLabels are the labels of one request's series.
type requestLabels struct {
	kind   string
	status int
	cache  string
}

// requestSeries are the series one request updates.
type requestSeries struct {
	count    prometheus.Counter
	duration prometheus.Observer
}

// New returns the metrics, registered with the Go runtime's and the
// process's collectors.
func New() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "modgate_requests_total",
		Help: "Requests by kind (list, info, mod, zip, latest, sumdb-…, or none for rejects), HTTP status and cache status.",
	}, []string{"kind", "status", "cache"})
	m.requestDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "modgate_request_duration_seconds",
		Help:    "Time from a request's arrival to its end, by kind and cache status.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
	}, []string{"kind", "cache"})
	m.upstreamFetch = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "modgate_upstream_fetch_duration_seconds",
		Help:    "Time from sending a request to an upstream to its response headers (or failure), by upstream and outcome (ok, not_found, error).",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	}, []string{"upstream", "outcome"})
	m.verifications = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "modgate_verifications_total",
		Help: "Checks of fetched .mod and .zip files by result: verified, ledger, skipped, mismatch, failed.",
	}, []string{"result"})
	m.upstreamState = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "modgate_upstream_state",
		Help: "1 for each upstream's current health state (healthy, draining, removed), 0 for the others.",
	}, []string{"upstream", "state"})
	m.extprocStreams = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "modgate_extproc_streams_total",
		Help: "ext_proc streams from Envoy, by how they ended (ok, error).",
	}, []string{"end"})
	m.extprocActive = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "modgate_extproc_streams_active",
		Help: "ext_proc streams open now.",
	})
	m.extprocPhase = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "modgate_extproc_phase_duration_seconds",
		Help:    "Time to answer one ext_proc message, by phase (request_headers, response_headers, response_body).",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .5, 1, 5, 30},
	}, []string{"phase"})
	m.xdsNacks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "modgate_xds_nacks_total",
		Help: "NACKs (rejected snapshot versions) the xDS server received, by resource type (cds, eds, lds, rds, sds, …, other). A client is not sent a version it rejected again; each rejection is logged and audited once.",
	}, []string{"type"})
	m.refusals = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "modgate_refusals_total",
		Help: "Requests refused (their audit event's decision is deny or reject), by rule: a policy rule's name, cooldown, vulnerability, auth, budget-…, grammar….",
	}, []string{"rule"})
	m.reg.MustRegister(m.requests, m.refusals, m.requestDuration, m.upstreamFetch, m.verifications, m.upstreamState,
		m.extprocStreams, m.extprocActive, m.extprocPhase, m.xdsNacks,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Gatherer is the registry the handler serves, for readers in the
// process (the console's charts): what they read is what /metrics says.
func (m *Metrics) Gatherer() prometheus.Gatherer { return m.reg }

// Register adds a collector (the cache's, the audit queue's).
func (m *Metrics) Register(c prometheus.Collector) { m.reg.MustRegister(c) }

// Request counts one finished request.
func (m *Metrics) Request(kind string, status int, cache string, d time.Duration) {
	if kind == "" {
		kind = "none"
	}
	if cache == "" {
		cache = "bypass"
	}
	l := requestLabels{kind, status, cache}
	v, ok := m.requestSeries.Load(l)
	if !ok {
		v, _ = m.requestSeries.LoadOrStore(l, requestSeries{
			count:    m.requests.WithLabelValues(kind, strconv.Itoa(status), cache),
			duration: m.requestDuration.WithLabelValues(kind, cache),
		})
	}
	rs := v.(requestSeries)
	rs.count.Inc()
	rs.duration.Observe(d.Seconds())
}

// Refusal counts one refused request by the rule that refused it.
func (m *Metrics) Refusal(rule string) {
	if rule == "" {
		rule = "none"
	}
	m.refusals.WithLabelValues(rule).Inc()
}

// UpstreamFetch records one upstream's answer (or failure) time.
func (m *Metrics) UpstreamFetch(upstream, outcome string, d time.Duration) {
	m.upstreamFetch.WithLabelValues(upstream, outcome).Observe(d.Seconds())
}

// Verification counts one check of a fetched artifact.
func (m *Metrics) Verification(result string) {
	m.verifications.WithLabelValues(result).Inc()
}

// UpstreamState records an upstream's health state.
func (m *Metrics) UpstreamState(upstream, state string) {
	for _, s := range []string{"healthy", "draining", "removed"} {
		v := 0.0
		if s == state {
			v = 1
		}
		m.upstreamState.WithLabelValues(upstream, s).Set(v)
	}
}

// StreamStarted and StreamEnded count ext_proc streams.
func (m *Metrics) StreamStarted() { m.extprocActive.Inc() }

// StreamEnded counts a stream's end, ok or not.
func (m *Metrics) StreamEnded(ok bool) {
	m.extprocActive.Dec()
	end := "ok"
	if !ok {
		end = "error"
	}
	m.extprocStreams.WithLabelValues(end).Inc()
}

// Phase records the time to answer one ext_proc message.
func (m *Metrics) Phase(phase string, d time.Duration) {
	v, ok := m.phaseSeries.Load(phase)
	if !ok {
		v, _ = m.phaseSeries.LoadOrStore(phase, m.extprocPhase.WithLabelValues(phase))
	}
	v.(prometheus.Observer).Observe(d.Seconds())
}

// XDSNack counts one NACK the xDS server received for resource type typ.
func (m *Metrics) XDSNack(typ string) {
	m.xdsNacks.WithLabelValues(typ).Inc()
}

// CacheCollector reads a cache's counters at scrape time.
func CacheCollector(stats func() cache.Stats) prometheus.Collector {
	return &cacheCollector{stats: stats}
}

type cacheCollector struct{ stats func() cache.Stats }

var (
	cacheEntries   = prometheus.NewDesc("modgate_cache_entries", "Entries in each cache tier.", []string{"tier"}, nil)
	cacheBytes     = prometheus.NewDesc("modgate_cache_bytes", "Bytes used (disk) or reserved (hot) by each tier.", []string{"tier"}, nil)
	cacheLimit     = prometheus.NewDesc("modgate_cache_limit_bytes", "Size bound of each tier.", []string{"tier"}, nil)
	cacheEvictions = prometheus.NewDesc("modgate_cache_evictions_total", "Entries evicted to make room, by tier.", []string{"tier"}, nil)
	cacheLookups   = prometheus.NewDesc("modgate_cache_hot_lookups_total", "Hot-tier lookups by result (hit, miss).", []string{"result"}, nil)
)

func (c *cacheCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{cacheEntries, cacheBytes, cacheLimit, cacheEvictions, cacheLookups} {
		ch <- d
	}
}

func (c *cacheCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.stats()
	ch <- prometheus.MustNewConstMetric(cacheEntries, prometheus.GaugeValue, float64(s.Hot.Entries), "hot")
	ch <- prometheus.MustNewConstMetric(cacheEntries, prometheus.GaugeValue, float64(s.Disk.Entries), "disk")
	ch <- prometheus.MustNewConstMetric(cacheBytes, prometheus.GaugeValue, float64(s.Hot.Limit), "hot")
	ch <- prometheus.MustNewConstMetric(cacheBytes, prometheus.GaugeValue, float64(s.Disk.Bytes), "disk")
	ch <- prometheus.MustNewConstMetric(cacheLimit, prometheus.GaugeValue, float64(s.Hot.Limit), "hot")
	ch <- prometheus.MustNewConstMetric(cacheLimit, prometheus.GaugeValue, float64(s.Disk.Limit), "disk")
	ch <- prometheus.MustNewConstMetric(cacheEvictions, prometheus.CounterValue, float64(s.Hot.Evictions), "hot")
	ch <- prometheus.MustNewConstMetric(cacheEvictions, prometheus.CounterValue, float64(s.Disk.Evictions), "disk")
	ch <- prometheus.MustNewConstMetric(cacheLookups, prometheus.CounterValue, float64(s.Hot.Hits), "hit")
	ch <- prometheus.MustNewConstMetric(cacheLookups, prometheus.CounterValue, float64(s.Hot.Misses), "miss")
}

// AuditCollector reads the audit writer's queue and counters at scrape
// time: queue depth, events written, dropped and failed.
func AuditCollector(stats func() audit.Stats) prometheus.Collector {
	return &auditCollector{stats: stats}
}

type auditCollector struct{ stats func() audit.Stats }

var (
	auditQueueBytes  = prometheus.NewDesc("modgate_audit_queue_bytes", "Bytes of audit events waiting to be written.", nil, nil)
	auditQueueEvents = prometheus.NewDesc("modgate_audit_queue_events", "Audit events waiting to be written.", nil, nil)
	auditEvents      = prometheus.NewDesc("modgate_audit_events_total", "Audit events by fate: written, dropped (queue full), failed (write error).", []string{"fate"}, nil)
)

func (c *auditCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- auditQueueBytes
	ch <- auditQueueEvents
	ch <- auditEvents
}

func (c *auditCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.stats()
	ch <- prometheus.MustNewConstMetric(auditQueueBytes, prometheus.GaugeValue, float64(s.QueueBytes))
	ch <- prometheus.MustNewConstMetric(auditQueueEvents, prometheus.GaugeValue, float64(s.QueueEvents))
	ch <- prometheus.MustNewConstMetric(auditEvents, prometheus.CounterValue, float64(s.Written), "written")
	ch <- prometheus.MustNewConstMetric(auditEvents, prometheus.CounterValue, float64(s.Dropped), "dropped")
	ch <- prometheus.MustNewConstMetric(auditEvents, prometheus.CounterValue, float64(s.Failed), "failed")
}

// GaugeFunc is a gauge whose value fn reports at each scrape.
func GaugeFunc(name, help string, fn func() float64) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, fn)
}

// CounterFunc is a counter whose value fn reports at each scrape; fn's
// value must never go down.
func CounterFunc(name, help string, fn func() float64) prometheus.Collector {
	return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, fn)
}
