// Package audit defines modgate's audit event and writes events as JSON
// lines that form a hash chain, so that editing, deleting, reordering or
// truncating the log afterwards can be detected (Verify).
//
// An Event uses Elastic Common Schema (ECS) field names, nested as ECS's
// canonical JSON form: "@timestamp", "event.outcome", "source.ip",
// "url.path", "http.response.status_code" and so on, plus a "modgate" group
// for what ECS has no field for (module, version, kind, upstream, cache
// status, decision).
//
// # The chain
//
// Every line a Writer writes ends with a top-level "chain" object:
//
//	{"@timestamp":…,"event":{…},…,"modgate":{…},"chain":{"seq":42,"prev":"9f86d0…"}}
//
// seq counts lines from 1; prev is the lower-case hex SHA-256 of the
// previous line's bytes, without its newline ("000…0", 64 zeros, for the
// first line ever). The chain is assigned by the Writer's one writing
// goroutine in file order, so concurrent Records cannot interleave it. Two
// optional members record what is not tampering but is worth knowing:
// "dropped", the events dropped since the previous line because the queue
// was full (see Overflow) or lost to a failed write (the disk full), and
// "torn", the hex SHA-256 of a torn line that a restart, or the write
// after a failed one, recovered (see OpenFile). Each line is exactly what
// encoding/json writes for the Event with its Chain.
//
// A file Writer (OpenFile) rotates by size and continues one chain across
// rotated files and restarts; Verify checks a set of files in chain order
// and names the first line that was edited, deleted, moved or cut short,
// and the first missing file.
//
// The chain has no secret: it makes tampering evident to whoever holds an
// earlier anchor (a seq and line hash, such as Report.LastHash, kept
// elsewhere), not impossible. Without one, someone who can rewrite the
// files could rewrite a consistent chain; the last lines of a log, and
// lines removed from its very start or end, can only be checked against
// such an anchor.
//
// The processor emits exactly one Event per request, whatever happened to
// it; this package only encodes and writes them. A Writer is safe for
// concurrent use; lines never interleave, and none is lost silently: an
// event that cannot be queued, or whose write fails (the disk full), is
// counted, reported to the caller, and recorded in the chain of the next
// line written.
package audit

import "time"

// Outcome values for Event.Event.Outcome (ECS event.outcome).
const (
	OutcomeSuccess = "success"
	OutcomeFailure = "failure"
)

// An Event is one audit record. Empty fields are omitted from the JSON.
type Event struct {
	Timestamp time.Time   `json:"@timestamp"`
	Event     EventFields `json:"event"`
	Source    *Source     `json:"source,omitempty"`
	TLS       *TLS        `json:"tls,omitempty"`
	User      *User       `json:"user,omitempty"`
	URL       *URL        `json:"url,omitempty"`
	HTTP      *HTTP       `json:"http,omitempty"`
	// Vulnerability names the known vulnerabilities of the module version
	// a request touched, whatever was decided (ECS vulnerability.id).
	Vulnerability *Vulnerability `json:"vulnerability,omitempty"`
	Modgate       ModgateGroup   `json:"modgate"`
	// Chain links the line to the one before it. The Writer sets it as it
	// writes the line; Record ignores it.
	Chain *Chain `json:"chain,omitempty"`
}

// Chain is the "chain" object every written line ends with.
type Chain struct {
	// Seq numbers the lines of a log from 1, across rotated files and
	// restarts.
	Seq uint64 `json:"seq"`
	// Prev is the lower-case hex SHA-256 of the previous line, without its
	// newline; GenesisPrev for the first line.
	Prev string `json:"prev"`
	// Dropped is how many events the Writer dropped, queue full, or lost
	// to failed writes, between the previous line and this one.
	Dropped uint64 `json:"dropped,omitempty"`
	// Torn is the hex SHA-256 of a torn line (a crash mid-write, no
	// newline) just before this one, which a restart ended with a newline;
	// it is set on the ActionRecovered event that follows it.
	Torn string `json:"torn,omitempty"`
}

// GenesisPrev is Chain.Prev of the first line of a log.
const GenesisPrev = "0000000000000000000000000000000000000000000000000000000000000000"

// Actions of the events the audit package writes itself.
const (
	// ActionRecovered records a torn final line found on OpenFile: the
	// previous writer stopped mid-line. Its Chain.Torn names the line.
	ActionRecovered = "audit-recovered"
	// ActionChainStarted records that OpenFile could not continue the chain
	// of the existing log (its last line is not a chained audit event) and
	// started a new one.
	ActionChainStarted = "audit-chain-started"
	// ActionDropped records, on Close, events dropped since the last line.
	ActionDropped = "audit-dropped"
)

// EventFields is ECS's event.* group.
type EventFields struct {
	Action   string `json:"action"`             // what happened, e.g. "request"
	Outcome  string `json:"outcome"`            // OutcomeSuccess or OutcomeFailure
	Reason   string `json:"reason,omitempty"`   // why, in words, for anything but a plain success
	Duration int64  `json:"duration,omitempty"` // nanoseconds
}

// Source is ECS's source.* group: the client's address.
type Source struct {
	IP   string `json:"ip,omitempty"`
	Port uint16 `json:"port,omitempty"`
}

// TLS is the part of ECS's tls.* group that identifies a client certificate.
type TLS struct {
	Client TLSClient `json:"client"`
}

// TLSClient is ECS's tls.client.* group.
type TLSClient struct {
	Subject string      `json:"subject,omitempty"`
	X509    *X509       `json:"x509,omitempty"`
	Hash    *ClientHash `json:"hash,omitempty"`
}

// X509 carries the client certificate's URI SANs (SPIFFE IDs).
type X509 struct {
	SAN X509SAN `json:"san"`
}

// X509SAN is ECS's tls.client.x509.san.* group.
type X509SAN struct {
	URI []string `json:"uri,omitempty"`
}

// ClientHash is ECS's tls.client.hash.* group.
type ClientHash struct {
	SHA256 string `json:"sha256,omitempty"`
}

// User is ECS's user.* group: an authenticated identity (a token's name,
// or a certificate's identity mapped to groups) and its groups.
type User struct {
	Name  string   `json:"name,omitempty"`
	Roles []string `json:"roles,omitempty"` // its groups
}

// URL is ECS's url.* group.
type URL struct {
	Path string `json:"path,omitempty"`
}

// HTTP is ECS's http.* group.
type HTTP struct {
	Request  HTTPRequest  `json:"request"`
	Response HTTPResponse `json:"response"`
}

// HTTPRequest is ECS's http.request.* group.
type HTTPRequest struct {
	ID     string `json:"id,omitempty"`
	Method string `json:"method,omitempty"`
}

// HTTPResponse is ECS's http.response.* group.
type HTTPResponse struct {
	StatusCode int   `json:"status_code,omitempty"`
	Bytes      int64 `json:"bytes"`
}

// Vulnerability is ECS's vulnerability.* group.
type Vulnerability struct {
	ID []string `json:"id,omitempty"` // e.g. GO-2026-0001
}

// ModgateGroup holds the fields ECS has no name for.
type ModgateGroup struct {
	Module   string `json:"module,omitempty"`
	Version  string `json:"version,omitempty"`
	Kind     string `json:"kind,omitempty"`     // goproxy.Kind's name, e.g. "zip", "sumdb-lookup"
	SumDB    string `json:"sumdb,omitempty"`    // checksum database name, for sumdb kinds
	Decision string `json:"decision,omitempty"` // reject, deny, serve or forward
	Rule     string `json:"rule,omitempty"`     // the policy or grammar rule behind a reject or deny
	Upstream string `json:"upstream,omitempty"` // upstream that answered (or last failed)
	// OriginHost is the host of the repository a private origin (the VCS
	// origin) fetched from, without credentials.
	OriginHost string `json:"origin_host,omitempty"`
	Cache      string `json:"cache,omitempty"` // X-Modgate-Cache: hit, miss, coalesced, stale, negative, bypass
	// Verification is how a fetched .mod or .zip was checked: verified,
	// ledger, skipped, mismatch, or failed (could not be checked).
	Verification string `json:"verification,omitempty"`
	// OriginalDestination is where a redirected connection was going
	// (host:port), for connections the transparent listener accepted.
	OriginalDestination string `json:"original_destination,omitempty"`
	// TraceID is the request's OpenTelemetry trace id, when it is traced.
	TraceID string `json:"trace_id,omitempty"`
}
