package audit

import (
	"net/netip"
	"time"
)

// ActionRequest is the action of the one event every request yields.
const ActionRequest = "request"

// A Request is what is known of one request when it ends: the facts its
// audit event records.
type Request struct {
	Start    time.Time
	Duration time.Duration
	ID       string // the request id, as sent in X-Request-Id
	Method   string
	Target   string // the request target as received
	Status   int    // what the client was sent, 0 if nothing
	Bytes    int64  // body bytes the client was sent
	// Failed marks a request that did not succeed although its status
	// says nothing of it: cut short, or answered nothing.
	Failed bool
	Reason string
	Client Client
	// Modgate holds what the processor decided.
	Modgate ModgateGroup
	// Vulnerabilities are the IDs of the known vulnerabilities of the
	// module version the request touched.
	Vulnerabilities []string
}

// A Client is who sent a request, as far as the front end could verify.
type Client struct {
	Addr        netip.AddrPort // the peer's address
	Subject     string         // verified client certificate's subject
	URISANs     []string       // its URI SANs (SPIFFE IDs)
	CertSHA256  string         // hex SHA-256 of its DER encoding
	User        string         // an authenticated user name
	Roles       []string       // its groups
	OriginalDst netip.AddrPort // where a redirected connection was going
}

// NewRequest returns the audit event of r. Its outcome is a failure for a
// status of 0 or at least 400, or when r.Failed.
func NewRequest(r Request) *Event {
	outcome := OutcomeSuccess
	if r.Status >= 400 || r.Status == 0 || r.Failed {
		outcome = OutcomeFailure
	}
	// One allocation for the groups every request event has.
	g := &requestGroups{
		Event: Event{
			Timestamp: r.Start.UTC(),
			Event: EventFields{
				Action:   ActionRequest,
				Outcome:  outcome,
				Reason:   r.Reason,
				Duration: r.Duration.Nanoseconds(),
			},
			Modgate: r.Modgate,
		},
		url: URL{Path: r.Target},
		http: HTTP{
			Request:  HTTPRequest{ID: r.ID, Method: r.Method},
			Response: HTTPResponse{StatusCode: r.Status, Bytes: r.Bytes},
		},
	}
	e := &g.Event
	e.URL, e.HTTP = &g.url, &g.http
	if r.Client.Addr.IsValid() {
		e.Source = &g.source
	}
	if len(r.Vulnerabilities) > 0 {
		e.Vulnerability = &Vulnerability{ID: r.Vulnerabilities}
	}
	e.setClient(r.Client)
	return e
}

// requestGroups are a request event and the groups it always has,
// allocated together.
type requestGroups struct {
	Event
	url    URL
	http   HTTP
	source Source
}

// setClient fills in the groups that identify c: source, tls.client, user,
// and the original destination.
func (e *Event) setClient(c Client) {
	if c.Addr.IsValid() {
		if e.Source == nil {
			e.Source = new(Source)
		}
		*e.Source = Source{IP: c.Addr.Addr().Unmap().String(), Port: c.Addr.Port()}
	}
	if c.Subject != "" || len(c.URISANs) > 0 || c.CertSHA256 != "" {
		e.TLS = &TLS{Client: TLSClient{Subject: c.Subject}}
		if len(c.URISANs) > 0 {
			e.TLS.Client.X509 = &X509{SAN: X509SAN{URI: c.URISANs}}
		}
		if c.CertSHA256 != "" {
			e.TLS.Client.Hash = &ClientHash{SHA256: c.CertSHA256}
		}
	}
	if c.User != "" {
		e.User = &User{Name: c.User, Roles: c.Roles}
	}
	if c.OriginalDst.IsValid() {
		e.Modgate.OriginalDestination = c.OriginalDst.String()
	}
}
