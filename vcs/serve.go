package vcs

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/mod/module"
	"golang.org/x/mod/semver"
	modzip "golang.org/x/mod/zip"

	"github.com/modgate/modgate/goproxy"
	"github.com/modgate/modgate/internal/files"
)

// ServeHTTP answers one GOPROXY request; see the package documentation.
func (o *Origin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	target := r.RequestURI
	if target == "" {
		target = r.URL.RequestURI()
	}
	logTarget := target
	if len(logTarget) > goproxy.DefaultMaxTarget {
		logTarget = logTarget[:goproxy.DefaultMaxTarget] + "..."
	}
	log := o.log.With("method", r.Method, "target", logTarget)
	req, err := goproxy.Parse(r.Method, target, 0)
	if err != nil {
		o.fail(w, r, log, req, err)
		return
	}
	if req.Kind.IsSumDB() {
		o.fail(w, r, log, req, &fetchError{kind: errNotFound, msg: "the VCS origin serves no checksum database"})
		return
	}
	if req.Version != "" {
		if err := checkQuery(req.Version); err != nil {
			o.fail(w, r, log, req, &fetchError{kind: errInvalid, msg: err.Error()})
			return
		}
	}
	if err := o.hold(req.Module); err != nil {
		o.fail(w, r, log, req, err)
		return
	}
	defer o.release(req.Module)

	start := time.Now()
	switch req.Kind {
	case goproxy.KindList:
		err = o.serveList(w, r, req)
	case goproxy.KindInfo, goproxy.KindLatest:
		err = o.serveInfo(w, r, req)
	case goproxy.KindMod:
		err = o.serveMod(w, r, req)
	case goproxy.KindZip:
		err = o.serveZip(w, r, req)
	}
	if err != nil {
		o.fail(w, r, log, req, err)
		return
	}
	log.Debug("vcs: served", "module", req.Module, "version", req.Version, "duration", time.Since(start))
}

// fail writes the response for err, the one place where errors become
// status codes, and logs it. err's text is safe to show: it is a
// goproxy.Error reason or a fetchError, cleaned and redacted.
func (o *Origin) fail(w http.ResponseWriter, r *http.Request, log *slog.Logger, req goproxy.Request, err error) {
	var fe *fetchError
	errors.As(err, &fe)
	if fe != nil && fe.host != "" {
		w.Header().Set(HostHeader, fe.host)
	} else if h := o.hostFor(req.Module); h != "" {
		w.Header().Set(HostHeader, h)
	}
	what := req.Module
	if req.Version != "" {
		what += "@" + req.Version
	}
	var status int
	var body string
	switch {
	case errors.Is(err, goproxy.ErrMethod):
		status, body = http.StatusMethodNotAllowed, err.Error()
		w.Header().Set("Allow", "GET, HEAD")
	case errors.Is(err, goproxy.ErrMalformed):
		status, body = http.StatusBadRequest, err.Error()
	case errors.Is(err, goproxy.ErrNotFound):
		status, body = http.StatusNotFound, "not found: "+err.Error()
	case errors.Is(err, errInvalid):
		status, body = http.StatusBadRequest, "invalid version: "+fe.msg
	case errors.Is(err, errNotFound):
		status, body = http.StatusNotFound, "not found: "+fe.msg
	case errors.Is(err, errAuth):
		status, body = http.StatusBadGateway, "the Git host refused modgate's credentials for "+req.Module
	case errors.Is(err, errTimeout):
		status, body = http.StatusGatewayTimeout, fmt.Sprintf("timed out after %v fetching %s", o.timeout, what)
	case errors.Is(err, errCanceled):
		status, body = http.StatusGatewayTimeout, "gave up waiting for "+what
	case errors.Is(err, errClosed):
		status, body = http.StatusServiceUnavailable, "the VCS origin is shutting down"
	case fe != nil && fe.msg != "":
		status, body = http.StatusBadGateway, fe.msg
	default:
		status, body = http.StatusBadGateway, "fetching "+what+" failed"
	}
	level := slog.LevelInfo
	if status >= 500 {
		level = slog.LevelWarn
	}
	log.Log(r.Context(), level, "vcs: request failed", "status", status, "err", err.Error())
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		io.WriteString(w, body+"\n")
	}
}

// hold records a request in progress for module, so that the sweeper
// leaves its files alone; release undoes it.
func (o *Origin) hold(mod string) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return &fetchError{kind: errClosed}
	}
	o.held[mod]++
	return nil
}

// release ends a hold.
func (o *Origin) release(mod string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.held[mod]--; o.held[mod] <= 0 {
		delete(o.held, mod)
	}
}

// setHost records the Git host of module, from the URL of its
// repository.
func (o *Origin) setHost(mod, host string) {
	if host == "" {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.hosts) >= maxHosts {
		clear(o.hosts)
	}
	o.hosts[mod] = host
}

// hostFor returns the Git host last seen for module, or the one recorded
// in a .info file of the module in the module cache, or "".
func (o *Origin) hostFor(mod string) string {
	o.mu.Lock()
	host := o.hosts[mod]
	o.mu.Unlock()
	if host != "" {
		return host
	}
	file := o.downloadFile(mod, "v0.0.0", ".info")
	if file == "" {
		return ""
	}
	entries, err := os.ReadDir(filepath.Dir(file))
	if err != nil {
		return ""
	}
	for _, e := range entries {
		if v, ok := strings.CutSuffix(e.Name(), ".info"); ok {
			if uv, err := module.UnescapeVersion(v); err == nil {
				if _, ok := o.cachedInfo(mod, uv); ok {
					o.mu.Lock()
					host = o.hosts[mod]
					o.mu.Unlock()
					return host
				}
			}
		}
	}
	return ""
}

// An info is the body of a .info or @latest answer.
type info struct {
	Version string
	Time    time.Time
}

// serveList answers @v/list.
func (o *Origin) serveList(w http.ResponseWriter, r *http.Request, req goproxy.Request) error {
	out, err := o.goList(r.Context(), req.Module)
	if err != nil {
		return err
	}
	var b bytes.Buffer
	for _, v := range out.Versions {
		if module.Check(req.Module, v) != nil || module.CanonicalVersion(v) != v {
			return &fetchError{kind: errFailed, msg: fmt.Sprintf("the go command listed an invalid version %q", v)}
		}
		b.WriteString(v + "\n")
	}
	o.reply(w, r, req.Module, "text/plain; charset=utf-8", b.Bytes())
	return nil
}

// serveInfo answers .info and @latest.
func (o *Origin) serveInfo(w http.ResponseWriter, r *http.Request, req goproxy.Request) error {
	var inf info
	if canonical(req) {
		if cached, ok := o.cachedInfo(req.Module, req.Version); ok {
			inf = cached
		}
	}
	if inf.Version == "" {
		query := req.Version
		if req.Kind == goproxy.KindLatest {
			query = "latest"
		}
		out, err := o.goQuery(r.Context(), req.Module, query)
		if err != nil {
			return err
		}
		inf = info{Version: out.Version, Time: out.Time}
	}
	if err := module.Check(req.Module, inf.Version); err != nil || inf.Time.IsZero() {
		return &fetchError{kind: errFailed, msg: fmt.Sprintf("the go command resolved %s to an invalid version %q", req.Module, inf.Version)}
	}
	o.touchVersion(req.Module, inf.Version)
	body, err := json.Marshal(inf)
	if err != nil {
		return &fetchError{kind: errFailed, msg: err.Error()}
	}
	o.reply(w, r, req.Module, "application/json", body)
	return nil
}

// serveMod answers .mod.
func (o *Origin) serveMod(w http.ResponseWriter, r *http.Request, req goproxy.Request) error {
	file := o.downloadFile(req.Module, req.Version, ".mod")
	if !exists(file) {
		out, err := o.goQuery(r.Context(), req.Module, req.Version)
		if err != nil {
			return err
		}
		if out.Version != req.Version || out.GoMod == "" {
			return &fetchError{kind: errFailed, msg: fmt.Sprintf("the go command gave no go.mod for %s@%s", req.Module, req.Version)}
		}
		file = out.GoMod
	}
	if !o.inCache(file) {
		return &fetchError{kind: errFailed, msg: "the go command named a go.mod outside its module cache"}
	}
	data, err := files.ReadMax(file, modzip.MaxGoMod)
	if err != nil {
		return &fetchError{kind: errFailed, msg: "read go.mod of " + req.Module + "@" + req.Version + ": " + o.relative(err.Error())}
	}
	o.touchVersion(req.Module, req.Version)
	o.reply(w, r, req.Module, "text/plain; charset=utf-8", data)
	return nil
}

// serveZip answers .zip, streaming the file after checking it.
func (o *Origin) serveZip(w http.ResponseWriter, r *http.Request, req goproxy.Request) error {
	file := o.downloadFile(req.Module, req.Version, ".zip")
	if !exists(file) {
		out, err := o.goDownload(r.Context(), req.Module, req.Version)
		if err != nil {
			return err
		}
		if out.Version != req.Version || out.Zip == "" {
			return &fetchError{kind: errFailed, msg: fmt.Sprintf("the go command gave no zip for %s@%s", req.Module, req.Version)}
		}
		file = out.Zip
	}
	if !o.inCache(file) {
		return &fetchError{kind: errFailed, msg: "the go command named a zip outside its module cache"}
	}
	f, err := os.Open(file)
	if err != nil {
		return &fetchError{kind: errFailed, msg: "open zip: " + o.relative(err.Error())}
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return &fetchError{kind: errFailed, msg: "stat zip: " + o.relative(err.Error())}
	}
	if fi.Size() > modzip.MaxZipFile {
		return &fetchError{kind: errFailed, msg: fmt.Sprintf("module zip of %s@%s is %d bytes, over the limit of %d", req.Module, req.Version, fi.Size(), int64(modzip.MaxZipFile))}
	}
	mv := module.Version{Path: req.Module, Version: req.Version}
	if _, err := modzip.CheckZip(mv, file); err != nil {
		return &fetchError{kind: errFailed, msg: "invalid module zip for " + mv.String() + ": " + o.relative(err.Error())}
	}
	// The file checked must be the file open, not one put in its place.
	if now, err := os.Stat(file); err != nil || !os.SameFile(fi, now) {
		return &fetchError{kind: errFailed, msg: "module zip of " + mv.String() + " changed while being checked"}
	}
	o.touchVersion(req.Module, req.Version)
	if h := o.hostFor(req.Module); h != "" {
		w.Header().Set(HostHeader, h)
	}
	w.Header().Set("Content-Type", "application/zip")
	http.ServeContent(w, r, "", time.Time{}, f)
	return nil
}

// reply writes a 200 answer with body (no body for HEAD).
func (o *Origin) reply(w http.ResponseWriter, r *http.Request, mod, contentType string, body []byte) {
	if h := o.hostFor(mod); h != "" {
		w.Header().Set(HostHeader, h)
	}
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Content-Length", fmt.Sprint(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		w.Write(body)
	}
}

// canonical reports whether req names a canonical version rather than a
// query.
func canonical(req goproxy.Request) bool {
	return req.Version != "" && semver.IsValid(req.Version) && module.CanonicalVersion(req.Version) == req.Version
}

// exists reports whether file exists.
func exists(file string) bool {
	_, err := os.Stat(file)
	return err == nil
}
