package console

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// Sessions: what the login form gives a browser instead of the token.
const (
	sessionCookie   = "modgate_console"
	sessionLifetime = 12 * time.Hour
	// maxSessions bounds the sessions held; past it, the oldest ends.
	maxSessions = 1000
	// maxTokenField bounds the login form's token field.
	maxTokenField = 4 << 10
)

// sessions holds the console's sessions: random ids, by their SHA-256 (a
// memory dump shows no usable cookie), with when each expires.
type sessions struct {
	now func() time.Time

	mu      sync.Mutex
	expires map[[32]byte]time.Time
}

func newSessions(now func() time.Time) *sessions {
	return &sessions{now: now, expires: map[[32]byte]time.Time{}}
}

// create makes a session and returns its id, for the cookie.
func (s *sessions) create() string {
	var b [32]byte
	rand.Read(b[:]) // never fails (crypto/rand)
	id := hex.EncodeToString(b[:])
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, exp := range s.expires {
		if !now.Before(exp) {
			delete(s.expires, k)
		}
	}
	if len(s.expires) >= maxSessions {
		var oldest [32]byte
		var at time.Time
		for k, exp := range s.expires {
			if at.IsZero() || exp.Before(at) {
				oldest, at = k, exp
			}
		}
		delete(s.expires, oldest)
	}
	s.expires[sha256.Sum256([]byte(id))] = now.Add(sessionLifetime)
	return id
}

// valid reports whether id is a live session.
func (s *sessions) valid(id string) bool {
	if id == "" {
		return false
	}
	k := sha256.Sum256([]byte(id))
	s.mu.Lock()
	defer s.mu.Unlock()
	exp, ok := s.expires[k]
	if ok && !s.now().Before(exp) {
		delete(s.expires, k)
		return false
	}
	return ok
}

// end ends the session id.
func (s *sessions) end(id string) {
	s.mu.Lock()
	delete(s.expires, sha256.Sum256([]byte(id)))
	s.mu.Unlock()
}

// tokenOK compares a presented token with the admin token in constant
// time (over their hashes, so independent of the lengths too).
func (c *Console) tokenOK(tok string) bool {
	if c.cfg.Token == "" || tok == "" {
		return false
	}
	got, want := sha256.Sum256([]byte(tok)), sha256.Sum256([]byte(c.cfg.Token))
	return subtle.ConstantTimeCompare(got[:], want[:]) == 1
}

// allowed reports whether r may see the console: a loopback client when
// that is allowed, the admin token as a bearer token, or a session.
func (c *Console) allowed(r *http.Request) bool {
	if c.cfg.AnonymousLoopback && isLoopback(r.RemoteAddr) {
		return true
	}
	if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		return c.tokenOK(tok)
	}
	ck, err := r.Cookie(sessionCookie)
	return err == nil && c.sessions.valid(ck.Value)
}

func isLoopback(remote string) bool {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap().IsLoopback()
}

// guard serves h to allowed requests and sends the others to the login
// page, which returns them where they were going.
func (c *Console) guard(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !c.allowed(r) {
			if r.Header.Get("Authorization") != "" {
				c.cfg.Logger.Warn("console: request with a wrong token refused", "path", r.URL.Path, "remote", r.RemoteAddr)
				w.Header().Set("WWW-Authenticate", `Bearer realm="modgate-admin"`)
				http.Error(w, "unauthorized: the console needs the admin token", http.StatusUnauthorized)
				return
			}
			http.Redirect(w, r, "/ui/login?next="+urlQueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		h(w, r)
	})
}

type loginData struct {
	Next, Error string
}

func (c *Console) loginPage(w http.ResponseWriter, r *http.Request) {
	c.render(w, r, "login", http.StatusOK, loginData{Next: safeNext(r.URL.Query().Get("next"))})
}

// login checks the token of the login form and, if it is the admin token,
// starts a session.
func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxTokenField+1024)
	if err := r.ParseForm(); err != nil {
		http.Error(w, "console: login: "+err.Error(), http.StatusBadRequest)
		return
	}
	next := safeNext(r.PostForm.Get("next"))
	if !c.tokenOK(strings.TrimSpace(r.PostForm.Get("token"))) {
		c.cfg.Logger.Warn("console: login with a wrong token refused", "remote", r.RemoteAddr)
		c.render(w, r, "login", http.StatusUnauthorized, loginData{Next: next, Error: "That is not the admin token."})
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name:     sessionCookie,
		Value:    c.sessions.create(),
		Path:     Prefix,
		MaxAge:   int(sessionLifetime / time.Second),
		HttpOnly: true,
		Secure:   r.TLS != nil,
		SameSite: http.SameSiteStrictMode,
	})
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (c *Console) logout(w http.ResponseWriter, r *http.Request) {
	if ck, err := r.Cookie(sessionCookie); err == nil {
		c.sessions.end(ck.Value)
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Path: Prefix, MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
}

// safeNext is where to go after the login: a console path, never another
// site ("//evil.example/" or "/\evil" would be one).
func safeNext(next string) string {
	if !strings.HasPrefix(next, Prefix) || strings.ContainsAny(next, "\\\r\n") || strings.HasPrefix(next, "//") {
		return Prefix
	}
	return next
}
