package vcs

import (
	"errors"
	"net/url"
	"regexp"
	"strings"
)

// The kinds of a *fetchError, for errors.Is. ServeHTTP maps them to
// status codes in one place, (*Origin).fail.
var (
	errInvalid  = errors.New("invalid request")                // the request can never succeed as written
	errNotFound = errors.New("not found")                      // the repository or version does not exist
	errAuth     = errors.New("the Git host refused the login") // credentials missing or refused
	errTimeout  = errors.New("fetch timed out")                // Config.Timeout expired
	errCanceled = errors.New("request canceled")               // every requester went away before an answer
	errClosed   = errors.New("origin closed")                  // Close was called
	errFailed   = errors.New("fetch failed")                   // anything else
)

// A fetchError is a request that got no artifact. Its message is safe to
// show a client: one cleaned, redacted line.
type fetchError struct {
	kind error  // one of the kinds above
	msg  string // cleaned and redacted, "" for none
	host string // the repository host, "" if unknown
}

func (e *fetchError) Error() string {
	if e.msg == "" {
		return e.kind.Error()
	}
	return e.kind.Error() + ": " + e.msg
}

func (e *fetchError) Unwrap() error { return e.kind }

// Signals in the go command's error output, checked in this order:
// credentials first, then transport failures (an outage is never "not
// found"), then positive evidence that the repository or version does
// not exist. Anything else is a plain failure.
var (
	authSignals = []string{
		"Authentication failed",
		"could not read Username",
		"could not read Password",
		"terminal prompts disabled",
		"The requested URL returned error: 401",
		"The requested URL returned error: 403",
		"HTTP Basic: Access denied",
		"Permission denied (publickey",
	}
	outageSignals = []string{
		"unable to access",
		"Could not resolve",
		"Connection refused",
		"connection refused",
		"connection reset",
		"RPC failed",
		"early EOF",
		"remote end hung up",
		"timed out",
		"i/o timeout",
		"no such host",
		"TLS handshake",
		"certificate",
		"The requested URL returned error: 5",
		": 500 ",
		": 502 ",
		": 503 ",
		": 504 ",
	}
	notFoundSignals = []*regexp.Regexp{
		regexp.MustCompile(`unknown revision `),
		regexp.MustCompile(`no matching versions for query`),
		regexp.MustCompile(`\?go-get=1: (404 Not Found|410 Gone)`),
		regexp.MustCompile(`repository '[^']*' not found`),
		regexp.MustCompile(`module declares its path as`),
		regexp.MustCompile(`go\.mod has (post-v[0-9]+|non-\.\.\./v[0-9]+) module path`),
		regexp.MustCompile(`module contains a go\.mod file, so (module path must match|major version must be compatible)`),
		regexp.MustCompile(`invalid pseudo-version`),
		regexp.MustCompile(`\+incompatible suffix not allowed`),
	}
)

// classify returns the kind of a failed go command run from its error
// output text (the Error field of its JSON and its standard error).
func classify(text string) error {
	for _, s := range authSignals {
		if strings.Contains(text, s) {
			return errAuth
		}
	}
	for _, s := range outageSignals {
		if strings.Contains(text, s) {
			return errFailed
		}
	}
	for _, re := range notFoundSignals {
		if re.MatchString(text) {
			return errNotFound
		}
	}
	return errFailed
}

// urlRE matches the URLs in the go command's and git's messages.
var urlRE = regexp.MustCompile(`[A-Za-z][A-Za-z0-9+.\-]*://[^\s'"<>]+`)

// hostIn returns the host of the first URL in text that is not a go-get
// discovery URL, or "".
func hostIn(text string) string {
	for _, u := range urlRE.FindAllString(text, -1) {
		if strings.Contains(u, "go-get=1") {
			continue
		}
		if h := hostOf(u); h != "" {
			return h
		}
	}
	return ""
}

// hostOf returns the host (with port, without userinfo) of the URL
// rawURL, or "" if it has none.
func hostOf(rawURL string) string {
	u, err := url.Parse(strings.TrimRight(rawURL, ".:,;"))
	if err != nil {
		return ""
	}
	return u.Host
}
