package console

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net"
	"net/http"
	"net/netip"
	"slices"
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
// memory dump shows no usable cookie), with who logged in and when each
// expires.
type sessions struct {
	now func() time.Time

	mu   sync.Mutex
	held map[[32]byte]session
}

type session struct {
	who     string
	expires time.Time
}

func newSessions(now func() time.Time) *sessions {
	return &sessions{now: now, held: map[[32]byte]session{}}
}

// create makes a session for who and returns its id, for the cookie.
func (s *sessions) create(who string) string {
	var b [32]byte
	rand.Read(b[:]) // never fails (crypto/rand)
	id := hex.EncodeToString(b[:])
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, se := range s.held {
		if !now.Before(se.expires) {
			delete(s.held, k)
		}
	}
	if len(s.held) >= maxSessions {
		var oldest [32]byte
		var at time.Time
		for k, se := range s.held {
			if at.IsZero() || se.expires.Before(at) {
				oldest, at = k, se.expires
			}
		}
		delete(s.held, oldest)
	}
	s.held[sha256.Sum256([]byte(id))] = session{who: who, expires: now.Add(sessionLifetime)}
	return id
}

// lookup returns who holds the live session id.
func (s *sessions) lookup(id string) (string, bool) {
	if id == "" {
		return "", false
	}
	k := sha256.Sum256([]byte(id))
	s.mu.Lock()
	defer s.mu.Unlock()
	se, ok := s.held[k]
	if ok && !s.now().Before(se.expires) {
		delete(s.held, k)
		return "", false
	}
	return se.who, ok
}

// end ends the session id.
func (s *sessions) end(id string) {
	s.mu.Lock()
	delete(s.held, sha256.Sum256([]byte(id)))
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

// adminName is who the admin token's holder is, on pages and in logs.
const adminName = "admin token"

// credential checks a token given to the console: the admin token, or a
// client token of an identity in one of Config.Groups. It returns who
// holds it.
func (c *Console) credential(r *http.Request, tok string) (string, bool) {
	if c.tokenOK(tok) {
		return adminName, true
	}
	if tok == "" || len(c.cfg.Groups) == 0 {
		return "", false
	}
	name, groups, ok := c.cfg.Identifier.Identify(r.Context(), r, tok)
	return name, ok && c.inGroups(groups)
}

func (c *Console) inGroups(groups []string) bool {
	for _, g := range groups {
		if slices.Contains(c.cfg.Groups, g) {
			return true
		}
	}
	return false
}

// who reports who r is if it may see the console: a loopback client when
// that is allowed, a bearer token (see credential), a verified client
// certificate in one of Config.Groups, or a session.
func (c *Console) who(r *http.Request) (string, bool) {
	if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		return c.credential(r, tok)
	}
	if ck, err := r.Cookie(sessionCookie); err == nil {
		if who, ok := c.sessions.lookup(ck.Value); ok {
			return who, true
		}
	}
	if len(c.cfg.Groups) > 0 && r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
		if name, groups, ok := c.cfg.Identifier.Identify(r.Context(), r, ""); ok && c.inGroups(groups) {
			return name, true
		}
	}
	if c.cfg.AnonymousLoopback && isLoopback(r.RemoteAddr) {
		return "anonymous (loopback)", true
	}
	return "", false
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
		who, ok := c.who(r)
		if !ok {
			if r.Header.Get("Authorization") != "" {
				c.cfg.Logger.Warn("console: request with a wrong token refused", "path", r.URL.Path, "remote", r.RemoteAddr)
				w.Header().Set("WWW-Authenticate", `Bearer realm="modgate-admin"`)
				http.Error(w, "unauthorized: the console needs the admin token", http.StatusUnauthorized)
				return
			}
			http.Redirect(w, r, "/ui/login?next="+urlQueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), whoKey{}, who)))
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
	who, ok := c.credential(r, strings.TrimSpace(r.PostForm.Get("token")))
	if !ok {
		c.cfg.Logger.Warn("console: login with a wrong token refused", "remote", r.RemoteAddr)
		c.render(w, r, "login", http.StatusUnauthorized, loginData{Next: next, Error: "That is not the admin token, nor the token of an identity in the console's groups."})
		return
	}
	c.cfg.Logger.Info("console: logged in", "who", who, "remote", r.RemoteAddr)
	http.SetCookie(w, &http.Cookie{
		Name:     sessionCookie,
		Value:    c.sessions.create(who),
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

// whoKey is the context key of who a guarded request's sender is.
type whoKey struct{}

// whoOf returns who sent r, as guard found.
func whoOf(r *http.Request) string {
	s, _ := r.Context().Value(whoKey{}).(string)
	return s
}

// safeNext is where to go after the login: a console path, never another
// site ("//evil.example/" or "/\evil" would be one).
func safeNext(next string) string {
	if !strings.HasPrefix(next, Prefix) || strings.ContainsAny(next, "\\\r\n") || strings.HasPrefix(next, "//") {
		return Prefix
	}
	return next
}
