// Package capability makes and checks the short-lived tokens that let a
// routed request into the sidecar's blob listener.
//
// In mesh mode the ext_proc server decides and audits a large cache hit,
// then routes the request to the blob listener, which only sends bytes.
// The token it puts in the routed request (in Header) binds that one
// decision to that one canonical path for a short time, so the blob
// listener serves nothing that the processor did not decide: a request
// without a token, with a token for another path, with an expired token or
// with one made under another key is refused.
//
// A token is "EXPIRY.MAC": EXPIRY is the Unix second after which it is no
// longer valid, and MAC the unpadded base64url HMAC-SHA256, under the
// key, of the path, a zero byte, and EXPIRY. The key never leaves the
// process: the ext_proc server and the blob listener it routes to run in
// the same process, so a fresh random key at every start is enough.
//
// A Key is safe for concurrent use.
package capability

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Header is the request header that carries a token to the blob listener.
const Header = "X-Modgate-Capability"

// DefaultTTL is how long a token is valid: long enough for Envoy to route
// the request and connect, far too short to be worth replaying.
const DefaultTTL = 30 * time.Second

// maxToken bounds a token presented to Check: an expiry and a MAC.
const maxToken = 128

// A Key makes and checks tokens.
type Key struct {
	secret [32]byte
	ttl    time.Duration
	now    func() time.Time
}

// NewKey returns a Key with a fresh random secret, whose tokens are valid
// for ttl (DefaultTTL if 0). now is the clock (time.Now if nil).
func NewKey(ttl time.Duration, now func() time.Time) *Key {
	k := &Key{ttl: ttl, now: now}
	rand.Read(k.secret[:]) // never fails (crypto/rand)
	if k.ttl <= 0 {
		k.ttl = DefaultTTL
	}
	if k.now == nil {
		k.now = time.Now
	}
	return k
}

// Token returns a token for path, valid for the Key's TTL from now.
func (k *Key) Token(path string) string {
	exp := strconv.FormatInt(k.now().Add(k.ttl).Unix(), 10)
	return exp + "." + k.mac(path, exp)
}

// Errors of Check.
var (
	ErrMissing = errors.New("capability: no token")
	ErrInvalid = errors.New("capability: token not valid for this path")
	ErrExpired = errors.New("capability: token expired")
)

// Check reports whether token admits a request for path now.
func (k *Key) Check(token, path string) error {
	if token == "" {
		return ErrMissing
	}
	if len(token) > maxToken {
		return fmt.Errorf("%w: %d bytes", ErrInvalid, len(token))
	}
	exp, mac, ok := strings.Cut(token, ".")
	if !ok {
		return ErrInvalid
	}
	unix, err := strconv.ParseInt(exp, 10, 64)
	if err != nil || strconv.FormatInt(unix, 10) != exp {
		return ErrInvalid
	}
	if !hmac.Equal([]byte(mac), []byte(k.mac(path, exp))) {
		return ErrInvalid
	}
	if k.now().Unix() > unix {
		return ErrExpired
	}
	return nil
}

func (k *Key) mac(path, exp string) string {
	h := hmac.New(sha256.New, k.secret[:])
	h.Write([]byte(path))
	h.Write([]byte{0})
	h.Write([]byte(exp))
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil))
}
