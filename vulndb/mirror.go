package vulndb

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io/fs"
	"net/http"
	"path/filepath"
	"strings"

	"github.com/modgate/modgate/internal/files"
)

// mirrorPrefix is where Handler serves the database.
const mirrorPrefix = "/vulndb/"

// Handler serves the copy of the database the Store holds under /vulndb/,
// in the database's own layout, for govulncheck -db: index/db.json,
// index/modules.json and ID/GO-….json, each also as .json.gz. Other
// paths are 404; without data held on disk (no Dir, or nothing loaded
// yet), 503. Mount it as mux.Handle("/vulndb/", store.Handler()).
func (s *Store) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		rel, ok := strings.CutPrefix(r.URL.Path, mirrorPrefix)
		if !ok {
			http.NotFound(w, r)
			return
		}
		rel, gz := strings.CutSuffix(rel, ".gz")
		if !mirrorPath(rel) {
			http.NotFound(w, r)
			return
		}
		h := s.cur.Load()
		if h == nil || h.snap == "" {
			http.Error(w, "the vulnerability database is not loaded yet", http.StatusServiceUnavailable)
			return
		}
		name := filepath.Join(s.dir, h.snap, filepath.FromSlash(rel))
		max := int64(maxEntryBytes)
		if strings.HasPrefix(rel, "index/") {
			max = maxIndexBytes
		}
		data, err := files.ReadMax(name, max)
		if errors.Is(err, fs.ErrNotExist) {
			http.NotFound(w, r)
			return
		}
		if err != nil {
			s.log.Error("vulndb: mirror read", "path", rel, "err", err)
			http.Error(w, "internal error", http.StatusInternalServerError)
			return
		}
		ctype := "application/json"
		if gz {
			var b bytes.Buffer
			zw := gzip.NewWriter(&b)
			zw.Write(data) // writes to a bytes.Buffer do not fail
			zw.Close()
			data, ctype = b.Bytes(), "application/gzip"
		}
		w.Header().Set("Content-Type", ctype)
		http.ServeContent(w, r, "", h.db.modified, bytes.NewReader(data))
	})
}

// mirrorPath reports whether rel is a file of the database's layout.
func mirrorPath(rel string) bool {
	switch rel {
	case "index/db.json", "index/modules.json":
		return true
	}
	id, ok := strings.CutPrefix(rel, "ID/")
	if !ok {
		return false
	}
	id, ok = strings.CutSuffix(id, ".json")
	return ok && idPattern.MatchString(id)
}
