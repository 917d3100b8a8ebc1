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
// concurrent use; lines never interleave, and none is dropped.
package audit

import (
	"errors"
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
	Cache    string `json:"cache,omitempty"`    // X-Modgate-Cache: hit, miss, coalesced, stale, negative, bypass
	// Verification is how a fetched .mod or .zip was checked: verified,
	// ledger, skipped, mismatch, or failed (could not be checked).
	Verification string `json:"verification,omitempty"`
	// OriginalDestination is where a redirected connection was going
	// (host:port), for connections the transparent listener accepted.
	OriginalDestination string `json:"original_destination,omitempty"`
}

// A Writer writes events as JSON lines to an io.Writer with group commit:
// Record encodes an event on the caller's goroutine and queues the line;
// one goroutine of the Writer writes whatever is queued in one Write, as
// soon as the previous Write returns. Under load many events share a
// write; idle, each event is written at once. The queue is bounded: when
// it holds MaxPending bytes, Record waits for room rather than drop an
// event. Close writes what is queued and stops the goroutine.
type Writer struct {
	w          io.Writer
	maxPending int
	done       chan struct{} // closed when run returns

	mu      sync.Mutex
	cond    *sync.Cond // broadcast on every change of the fields below
	pending []byte     // lines queued, not yet handed to w
	spare   []byte     // the previous batch, reused
	queued  int64      // bytes ever queued
	written int64      // bytes ever handed to w (successfully or not)
	err     error      // the first write error; sticky
	closed  bool
}

// MaxPending is the most bytes a Writer queues before Record waits.
const MaxPending = 4 << 20

// lineBuf holds one encoded event between Record's encoding and queueing.
type lineBuf struct{ b []byte }

var bufPool = sync.Pool{New: func() any { return new(lineBuf) }}

// NewWriter returns a Writer writing to w. The caller must Close it.
func NewWriter(w io.Writer) *Writer {
	aw := &Writer{w: w, maxPending: MaxPending, done: make(chan struct{})}
	aw.cond = sync.NewCond(&aw.mu)
	go aw.run()
	return aw
}

// Record queues e as one line. It returns an error if the Writer is
// closed, or if an earlier write failed (the event is still queued in that
// case, but the sink is suspect).
func (w *Writer) Record(e *Event) error {
	buf := bufPool.Get().(*lineBuf)
	defer bufPool.Put(buf)
	buf.b = append(e.appendJSON(buf.b[:0]), '\n')
	w.mu.Lock()
	defer w.mu.Unlock()
	for len(w.pending) >= w.maxPending && !w.closed {
		w.cond.Wait()
	}
	if w.closed {
		return errors.New("audit: writer closed")
	}
	w.pending = append(w.pending, buf.b...)
	w.queued += int64(len(buf.b))
	w.cond.Broadcast()
	if w.err != nil {
		return fmt.Errorf("write audit event: %w", w.err)
	}
	return nil
}

// run writes queued lines until the Writer is closed and drained.
func (w *Writer) run() {
	defer close(w.done)
	w.mu.Lock()
	defer w.mu.Unlock()
	for {
		for len(w.pending) == 0 && !w.closed {
			w.cond.Wait()
		}
		if len(w.pending) == 0 {
			return // closed and drained
		}
		batch := w.pending
		w.pending, w.spare = w.spare[:0], nil
		w.mu.Unlock()
		_, err := w.w.Write(batch)
		w.mu.Lock()
		if err != nil && w.err == nil {
			w.err = err
		}
		w.written += int64(len(batch))
		if cap(batch) <= 2*w.maxPending {
			w.spare = batch[:0]
		}
		w.cond.Broadcast()
	}
}

// Flush waits until every event recorded before it has been written, and
// returns the first write error, if any.
func (w *Writer) Flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	target := w.queued
	for w.written < target {
		w.cond.Wait()
	}
	return w.err
}

// Close writes what is queued, stops the Writer, and returns the first
// write error, if any. Record fails after Close.
func (w *Writer) Close() error {
	w.mu.Lock()
	w.closed = true
	w.cond.Broadcast()
	w.mu.Unlock()
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}
