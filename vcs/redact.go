package vcs

import (
	"bufio"
	"encoding/base64"
	"io"
	"os"
	"regexp"
	"strings"
)

// redacted replaces a credential in text.
const redacted = "REDACTED"

// withheld replaces the whole of a text that still contained a credential
// after redaction, which only happens when a secret overlaps the marker.
const withheld = "[output withheld: it contained a credential]"

var (
	// userinfoRE matches the scheme and userinfo of a URL, up to the last
	// "@" before the host.
	userinfoRE = regexp.MustCompile(`([A-Za-z][A-Za-z0-9+.\-]*://)[^/\s'"?#<>]*@`)
	// authRE matches the value of an Authorization header, as git prints
	// it with GIT_TRACE_CURL.
	authRE = regexp.MustCompile(`(?i)(authorization:\s*)[^\r\n]*`)
)

// A redactor removes credentials from text that came from the go
// command or git: the userinfo of every URL, Authorization header values,
// and every one of its secrets literally (netrc passwords and their
// basic-auth encodings, extra headers from Config.Env).
type redactor struct {
	secrets []string // non-empty, longest first
}

// redact returns s without credentials.
func (r *redactor) redact(s string) string {
	for _, p := range r.secrets {
		s = strings.ReplaceAll(s, p, redacted)
	}
	s = userinfoRE.ReplaceAllString(s, "${1}"+redacted+"@")
	s = authRE.ReplaceAllString(s, "${1}"+redacted)
	// A secret could reappear across the edges of a marker; a URL could
	// not, but check both rather than argue.
	for _, p := range r.secrets {
		if strings.Contains(s, p) {
			return withheld
		}
	}
	for _, m := range userinfoRE.FindAllStringSubmatchIndex(s, -1) {
		if s[m[3]:m[1]] != redacted+"@" {
			return withheld
		}
	}
	return s
}

// newRedactor returns a redactor for the passwords of the netrc file (""
// for none) and the extra secrets. A netrc that cannot be read adds no
// secrets: the go command and git cannot read it either.
func newRedactor(netrc string, extra []string) *redactor {
	var secrets []string
	if netrc != "" {
		for _, e := range readNetrc(netrc) {
			unquoted := strings.Trim(e.password, `"`)
			secrets = append(secrets, e.password, unquoted,
				base64.StdEncoding.EncodeToString([]byte(e.login+":"+e.password)),
				base64.StdEncoding.EncodeToString([]byte(strings.Trim(e.login, `"`)+":"+unquoted)))
		}
	}
	secrets = append(secrets, extra...)
	r := &redactor{}
	for _, s := range secrets {
		if s != "" {
			r.secrets = append(r.secrets, s)
		}
	}
	// Longest first, so that a secret containing another is replaced whole.
	for i := 1; i < len(r.secrets); i++ {
		for j := i; j > 0 && len(r.secrets[j]) > len(r.secrets[j-1]); j-- {
			r.secrets[j], r.secrets[j-1] = r.secrets[j-1], r.secrets[j]
		}
	}
	return r
}

// maxNetrc limits how much of a netrc file is read.
const maxNetrc = 1 << 20

// A netrcEntry is one login and password of a netrc file.
type netrcEntry struct {
	login, password string
}

// readNetrc returns the logins and passwords of the netrc file, as the
// go command and libcurl tokenize it (whitespace-separated tokens;
// "macdef" bodies skipped up to an empty line).
func readNetrc(file string) []netrcEntry {
	f, err := os.Open(file)
	if err != nil {
		return nil
	}
	defer f.Close()
	sc := bufio.NewScanner(io.LimitReader(f, maxNetrc))
	sc.Buffer(make([]byte, 0, 4096), maxNetrc)
	var (
		out   []netrcEntry
		cur   netrcEntry
		key   string
		macro bool
	)
	flush := func() {
		if cur.password != "" {
			out = append(out, cur)
		}
		cur = netrcEntry{}
	}
	for sc.Scan() {
		line := sc.Text()
		if macro {
			if strings.TrimSpace(line) == "" {
				macro = false
			}
			continue
		}
		for _, tok := range strings.Fields(line) {
			switch key {
			case "login":
				cur.login = tok
			case "password":
				cur.password = tok
			case "macdef":
				macro = true
			}
			if key != "" {
				key = ""
				continue
			}
			switch tok {
			case "machine", "default":
				flush()
				if tok == "machine" {
					key = "machine"
				}
			case "login", "password", "account", "macdef":
				key = tok
			}
		}
	}
	flush()
	return out
}

// clean returns the first line of the go command's error output text,
// for a client: without the "go: " prefix, joined with the next line
// when it ends with ":" (the go command puts git's message on the line
// after "exit status 128:"), in printable ASCII only (other bytes
// removed, tabs made spaces), redacted by r, and at most maxLine bytes.
// Bytes are removed before redaction and the joined line is redacted
// again, so that what is shown is exactly what was redacted.
func (r *redactor) clean(text string) string {
	b := make([]byte, 0, len(text))
	for i := 0; i < len(text); i++ {
		switch c := text[i]; {
		case c == '\t':
			b = append(b, ' ')
		case c == '\n' || c >= ' ' && c < 0x7f:
			b = append(b, c)
		}
	}
	var lines []string
	for line := range strings.Lines(r.redact(string(b))) {
		if line = strings.TrimSpace(line); line != "" {
			lines = append(lines, line)
		}
	}
	if len(lines) == 0 {
		return ""
	}
	line := strings.TrimPrefix(lines[0], "go: ")
	if strings.HasSuffix(line, ":") && len(lines) > 1 {
		line += " " + lines[1]
	}
	line = r.redact(line)
	if len(line) > maxLine {
		line = line[:maxLine]
	}
	return line
}

// maxLine limits a cleaned error line, in bytes.
const maxLine = 240
