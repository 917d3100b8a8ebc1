package main

import (
	"net/http"
	"net/netip"

	"github.com/modgate/modgate/audit"
)

// audited records one audit event for every request h answers: the
// handlers that serve the GOPROXY listener beside the processor (the
// vulnerability database mirror, the ledger lookup) keep its invariant,
// one event per request, as the processor does for its own.
func (g *standalone) audited(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		aw := &auditWriter{ResponseWriter: w}
		start := g.clock.Now()
		h.ServeHTTP(aw, r)
		client := audit.Client{User: aw.user}
		if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
			client.Addr = ap
		}
		ev := audit.NewRequest(audit.Request{
			Start: start, Duration: g.clock.Since(start),
			Method: r.Method, Target: r.URL.RequestURI(),
			Status: aw.status, Bytes: aw.bytes, Client: client,
			Modgate: audit.ModgateGroup{Module: aw.module, Version: aw.version},
		})
		if err := g.audit.Record(ev); err != nil {
			g.log.Error("audit event not recorded", "err", err)
		}
	})
}

// auditWriter keeps what the audit event of a response needs; a handler
// that knows who asked, and about what, sets user, module and version.
type auditWriter struct {
	http.ResponseWriter
	status          int
	bytes           int64
	user            string
	module, version string
}

func (w *auditWriter) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *auditWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}
