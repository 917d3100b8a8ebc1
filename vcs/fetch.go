package vcs

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/mod/module"

	"github.com/modgate/modgate/internal/files"
)

// A goOutput is the JSON object the go command prints for go list -m
// -json and go mod download -json.
type goOutput struct {
	Path     string
	Version  string
	Versions []string
	Time     time.Time
	GoMod    string          // the go.mod file in the module cache
	Zip      string          // the zip file in the module cache (go mod download)
	Dir      string          // the extracted tree (go mod download)
	Error    json.RawMessage // a string (go mod download) or {"Err": ...} (go list -e)
	Origin   *struct{ URL string }
}

// A flight is one run of the go command that concurrent requests share.
type flight struct {
	done    chan struct{}      // closed when out and err are set
	out     *goOutput          // the result, nil on error
	err     error              // a *fetchError
	cancel  context.CancelFunc // cancels the run
	waiters int                // requests waiting; guarded by Origin.mu
}

// share runs fn under key, or joins the run of fn under key already in
// progress, and returns its result. The run's context is detached from
// ctx, so that one requester giving up does not fail the others, but it
// is cancelled when every requester has given up (also while it waits
// for a slot) and when the origin closes. A requester whose ctx ends
// gets a *fetchError of kind errCanceled at once.
func (o *Origin) share(ctx context.Context, key string, fn func(context.Context) (*goOutput, error)) (*goOutput, error) {
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		return nil, &fetchError{kind: errClosed}
	}
	f := o.flights[key]
	if f == nil {
		fctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		f = &flight{done: make(chan struct{}), cancel: cancel}
		o.flights[key] = f
		o.wg.Add(1)
		go func() {
			defer o.wg.Done()
			defer cancel()
			out, err := fn(fctx)
			o.mu.Lock()
			if o.flights[key] == f {
				delete(o.flights, key)
			}
			f.out, f.err = out, err
			o.mu.Unlock()
			close(f.done)
		}()
	}
	f.waiters++
	o.mu.Unlock()

	select {
	case <-f.done:
		return f.out, f.err
	case <-ctx.Done():
		o.mu.Lock()
		if f.waiters--; f.waiters == 0 {
			// Nobody wants the answer: stop the run, and let the next
			// request start afresh rather than join a dying run.
			if o.flights[key] == f {
				delete(o.flights, key)
			}
			f.cancel()
		}
		o.mu.Unlock()
		return nil, &fetchError{kind: errCanceled, msg: context.Cause(ctx).Error()}
	}
}

// goList runs go list -m -versions -retracted -json for mod.
func (o *Origin) goList(ctx context.Context, mod string) (*goOutput, error) {
	return o.share(ctx, "list "+mod, func(ctx context.Context) (*goOutput, error) {
		return o.goJSON(ctx, mod, "list", "-m", "-versions", "-retracted", "-json", "--", mod)
	})
}

// goQuery runs go list -m -json for mod@query, which resolves a query
// to a version and fetches that version's .info and .mod.
func (o *Origin) goQuery(ctx context.Context, mod, query string) (*goOutput, error) {
	return o.share(ctx, "query "+mod+"@"+query, func(ctx context.Context) (*goOutput, error) {
		return o.goJSON(ctx, mod, "list", "-m", "-json", "--", mod+"@"+query)
	})
}

// goDownload runs go mod download -json for mod@version, and removes
// the extracted tree it leaves, which modgate does not need.
func (o *Origin) goDownload(ctx context.Context, mod, version string) (*goOutput, error) {
	return o.share(ctx, "download "+mod+"@"+version, func(ctx context.Context) (*goOutput, error) {
		out, err := o.goJSON(ctx, mod, "mod", "download", "-json", "--", mod+"@"+version)
		if err == nil && out.Dir != "" && o.inCache(out.Dir) && out.Dir != o.modcache {
			o.removeTree(out.Dir)
		}
		return out, err
	})
}

// goJSON runs the go command with args for module mod and decodes its
// JSON output. A failure is a *fetchError classified from the go
// command's messages, cleaned and redacted.
func (o *Origin) goJSON(ctx context.Context, mod string, args ...string) (*goOutput, error) {
	res, err := o.run(ctx, args...)
	if err != nil {
		if fe, ok := err.(*fetchError); ok && fe.host == "" {
			fe.host = o.hostFor(mod)
		}
		return nil, err
	}
	var out goOutput
	jsonErr := json.Unmarshal(res.stdout, &out)
	text := errorText(out.Error) + "\n" + string(res.stderr)
	if res.err != nil || errorText(out.Error) != "" {
		return nil, o.childError(mod, text)
	}
	switch {
	case res.truncated:
		return nil, &fetchError{kind: errFailed, msg: "the go command printed more than 1 MiB", host: o.hostFor(mod)}
	case jsonErr != nil:
		return nil, &fetchError{kind: errFailed, msg: "unreadable output from the go command: " + o.cleanText(jsonErr.Error()), host: o.hostFor(mod)}
	}
	if out.Origin != nil {
		host := hostOf(out.Origin.URL)
		o.setHost(mod, host)
		o.touchClone(out.Origin.URL)
	}
	o.kickSweeper()
	return &out, nil
}

// maxErrorText bounds the error output that is redacted and classified.
// Only its beginning is shown or logged, and a credential cannot span
// lines, so the text is cut at a line end within the bound.
const maxErrorText = 64 << 10

// childError returns the *fetchError for a go command that failed with
// the error output text.
func (o *Origin) childError(mod, text string) error {
	if len(text) > maxErrorText {
		text = text[:maxErrorText]
		if i := strings.LastIndexByte(text, '\n'); i > 0 {
			text = text[:i]
		}
	}
	red := o.redactor()
	host := hostIn(red.redact(text))
	if host == "" {
		host = o.hostFor(mod)
	}
	fe := &fetchError{kind: classify(text), msg: o.cleanText(text), host: host}
	if fe.msg == "" {
		fe.msg = "the go command failed without a message"
	}
	o.log.Warn("vcs: go command failed", "module", mod, "kind", fe.kind.Error(),
		"output", excerpt(red.redact(o.relative(text))))
	return fe
}

// excerpt returns at most 8 lines and 2 KiB of text, already redacted,
// for the log.
func excerpt(text string) string {
	lines := strings.SplitAfter(strings.TrimSpace(text), "\n")
	if len(lines) > 8 {
		lines = lines[:8]
	}
	s := strings.Join(lines, "")
	if len(s) > 2048 {
		s = s[:2048]
	}
	return s
}

// errorText returns the text of the Error field of the go command's JSON.
func errorText(raw json.RawMessage) string {
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var e struct{ Err string }
	if json.Unmarshal(raw, &e) == nil {
		return e.Err
	}
	return string(raw)
}

// redactor returns a redactor for the current netrc and Config.Env.
func (o *Origin) redactor() *redactor {
	return newRedactor(o.netrc, o.secrets)
}

// cleanText returns text as one cleaned, redacted line for a client.
func (o *Origin) cleanText(text string) string {
	return o.redactor().clean(o.relative(text))
}

// relative replaces CacheDir in s, which is of no use to a client.
func (o *Origin) relative(s string) string {
	return strings.ReplaceAll(s, o.root, "$CACHEDIR")
}

// downloadFile returns the file of mod@version with extension ext (".info",
// ".mod", ".zip") in the download cache of the module cache, which is laid
// out as a GOPROXY file tree, or "" if the path cannot be escaped.
func (o *Origin) downloadFile(mod, version, ext string) string {
	em, err := module.EscapePath(mod)
	if err != nil {
		return ""
	}
	ev, err := module.EscapeVersion(version)
	if err != nil {
		return ""
	}
	return filepath.Join(o.modcache, "cache", "download", filepath.FromSlash(em), "@v", ev+ext)
}

// cachedInfo returns the .info of the canonical version mod@version from
// the module cache, if the go command fetched it before.
func (o *Origin) cachedInfo(mod, version string) (info, bool) {
	file := o.downloadFile(mod, version, ".info")
	if file == "" {
		return info{}, false
	}
	data, err := files.ReadMax(file, maxOutput)
	if err != nil {
		return info{}, false
	}
	var inf struct {
		Version string
		Time    time.Time
		Origin  *struct{ URL string }
	}
	if json.Unmarshal(data, &inf) != nil || inf.Version != version || inf.Time.IsZero() {
		return info{}, false
	}
	if inf.Origin != nil {
		o.setHost(mod, hostOf(inf.Origin.URL))
	}
	return info{Version: inf.Version, Time: inf.Time}, true
}

// inCache reports whether file is inside the module cache.
func (o *Origin) inCache(file string) bool {
	rel, err := filepath.Rel(o.modcache, file)
	return err == nil && filepath.IsAbs(file) && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}
