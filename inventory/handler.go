package inventory

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
)

// maxTop bounds n of /inventory/top.
const maxTop = 1000

// Handler answers queries of inv with JSON, for the admin listener:
//
//	GET /inventory/who?module=M[&version=V]   Who(M, V): a JSON array of Fetch
//	GET /inventory/affected?module=M&range=R  Who(M, R) with R required
//	GET /inventory/top[?n=N]                  Top(N), N from 1 to 1000 (default 20)
//
// A missing module, a malformed range or n is 400 with a text/plain
// message. The answers may be large (every identity that fetched every
// version of a module); mount the handler only where its callers are
// trusted.
func (inv *Inventory) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /inventory/who", func(w http.ResponseWriter, r *http.Request) {
		inv.serveWho(w, r, "version", false)
	})
	mux.HandleFunc("GET /inventory/affected", func(w http.ResponseWriter, r *http.Request) {
		inv.serveWho(w, r, "range", true)
	})
	mux.HandleFunc("GET /inventory/top", func(w http.ResponseWriter, r *http.Request) {
		n := 20
		if s := r.URL.Query().Get("n"); s != "" {
			var err error
			if n, err = strconv.Atoi(s); err != nil || n < 1 || n > maxTop {
				writeError(w, errors.New("n: want a number from 1 to 1000"))
				return
			}
		}
		writeJSON(w, orEmpty(inv.Top(n)))
	})
	return mux
}

func (inv *Inventory) serveWho(w http.ResponseWriter, r *http.Request, param string, required bool) {
	q := r.URL.Query()
	module, vers := q.Get("module"), q.Get(param)
	switch {
	case module == "":
		writeError(w, errors.New("module: missing"))
		return
	case required && vers == "":
		writeError(w, errors.New(param+": missing"))
		return
	}
	fetches, err := inv.Who(module, vers)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, orEmpty(fetches))
}

// orEmpty makes a nil slice an empty one, which encodes as [] not null.
func orEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v) // an error is the client gone
}

// writeError is the one place a query error becomes a response: every
// error a query returns is the request's fault.
func writeError(w http.ResponseWriter, err error) {
	http.Error(w, err.Error(), http.StatusBadRequest)
}
