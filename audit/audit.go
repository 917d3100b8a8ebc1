// Package audit defines modgate's audit event and writes events as JSON
// lines.
//
// An Event uses Elastic Common Schema (ECS) field names, nested as ECS's
// canonical JSON form: "@timestamp", "event.outcome", "source.ip",
// "url.path", "http.response.status_code" and so on, plus a "modgate" group
// for what ECS has no field for (module, version, kind, upstream, cache
// status, decision).
//
// The processor emits exactly one Event per request, whatever happened to
// it; this package only encodes and writes them. A Writer is safe for
// concurrent use, and writes each event with a single Write call so lines
// from concurrent requests never interleave.
package audit

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"time"
)

// Outcome values for Event.Event.Outcome (ECS event.outcome).
const (
	OutcomeSuccess = "success"
	OutcomeFailure = "failure"
)

// An Event is one audit record. Empty fields are omitted from the JSON.
type Event struct {
	Timestamp time.Time    `json:"@timestamp"`
	Event     EventFields  `json:"event"`
	Source    *Source      `json:"source,omitempty"`
	TLS       *TLS         `json:"tls,omitempty"`
	User      *User        `json:"user,omitempty"`
	URL       *URL         `json:"url,omitempty"`
	HTTP      *HTTP        `json:"http,omitempty"`
	Modgate   ModgateGroup `json:"modgate"`
}

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

// User is ECS's user.* group: a basic-auth identity.
type User struct {
	Name string `json:"name,omitempty"`
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

// ModgateGroup holds the fields ECS has no name for.
type ModgateGroup struct {
	Module   string `json:"module,omitempty"`
	Version  string `json:"version,omitempty"`
	Kind     string `json:"kind,omitempty"`     // goproxy.Kind's name, e.g. "zip", "sumdb-lookup"
	SumDB    string `json:"sumdb,omitempty"`    // checksum database name, for sumdb kinds
	Decision string `json:"decision,omitempty"` // reject, deny, serve or forward
	Rule     string `json:"rule,omitempty"`     // the policy or grammar rule behind a reject or deny
	Upstream string `json:"upstream,omitempty"` // upstream that answered (or last failed)
	Cache    string `json:"cache,omitempty"`    // cache status; "bypass" while no cache is consulted
}

// A Writer writes events as JSON lines to an io.Writer.
type Writer struct {
	mu sync.Mutex
	w  io.Writer
}

// NewWriter returns a Writer writing to w.
func NewWriter(w io.Writer) *Writer {
	return &Writer{w: w}
}

// Record writes e as one line. It returns an error only if e cannot be
// encoded or the underlying write fails; the caller decides what that means.
func (w *Writer) Record(e *Event) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(e); err != nil { // Encode appends the newline.
		return fmt.Errorf("encode audit event: %w", err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, err := w.w.Write(buf.Bytes()); err != nil {
		return fmt.Errorf("write audit event: %w", err)
	}
	return nil
}
