package capability

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestCheck(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { return now }
	k := NewKey(10*time.Second, clock)
	other := NewKey(10*time.Second, clock)
	const path = "/example.com/a/@v/v1.0.0.zip"
	tok := k.Token(path)
	exp, mac, _ := strings.Cut(tok, ".")

	tests := []struct {
		name  string
		token string
		path  string
		after time.Duration
		want  error
	}{
		{"valid", tok, path, 0, nil},
		{"valid at expiry", tok, path, 10 * time.Second, nil},
		{"expired", tok, path, 11 * time.Second, ErrExpired},
		{"missing", "", path, 0, ErrMissing},
		{"other path", tok, "/example.com/b/@v/v1.0.0.zip", 0, ErrInvalid},
		{"other key", other.Token(path), path, 0, ErrInvalid},
		{"no dot", exp + mac, path, 0, ErrInvalid},
		{"expiry moved", "9" + exp + "." + mac, path, 0, ErrInvalid},
		{"expiry with a plus", "+" + exp + "." + mac, path, 0, ErrInvalid},
		{"mac cut", exp + "." + mac[:len(mac)-1], path, 0, ErrInvalid},
		{"oversize", strings.Repeat("1", maxToken+1), path, 0, ErrInvalid},
	}
	for _, tt := range tests {
		now = time.Unix(1_800_000_000, 0).Add(tt.after)
		if err := k.Check(tt.token, tt.path); !errors.Is(err, tt.want) {
			t.Errorf("%s: Check(%q, %q) = %v, want %v", tt.name, tt.token, tt.path, err, tt.want)
		}
	}
}

func FuzzCheck(f *testing.F) {
	k := NewKey(time.Hour, nil)
	const seedPath = "/x/@v/list"
	seed := k.Token(seedPath)
	f.Add(seed, seedPath)
	f.Add(seed, "/x/@v/list/")
	f.Add("1.2", "/")
	f.Add("", "")
	f.Fuzz(func(t *testing.T, token, path string) {
		err := k.Check(token, path)
		// Only the token Token made admits anything, and only for its path:
		// forging one means forging an HMAC.
		if err == nil && (token != seed || path != seedPath) {
			t.Errorf("Check(%q, %q) admitted a token Token did not make for that path", token, path)
		}
		if err != nil && !errors.Is(err, ErrMissing) && !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrExpired) {
			t.Errorf("Check(%q, %q) = %v, not one of the package's errors", token, path, err)
		}
	})
}
