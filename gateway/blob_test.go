package gateway_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modgate/modgate/cache"
	"github.com/modgate/modgate/capability"
	"github.com/modgate/modgate/gateway"
)

// countingGetter counts the cache reads of the blob handler.
type countingGetter struct {
	c *cache.Cache
	n atomic.Int64
}

func (g *countingGetter) Get(ctx context.Context, key string) (*cache.Entry, error) {
	g.n.Add(1)
	return g.c.Get(ctx, key)
}

// syncBuffer is a bytes.Buffer safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// manualClock is a clock tests move by hand.
type manualClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *manualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *manualClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// storeBlob puts body into c as the blob of key.
func storeBlob(t testing.TB, c *cache.Cache, key string, body []byte) {
	t.Helper()
	w := c.NewBlobWriter(key, cache.Release, "application/zip")
	if _, err := w.Write(body); err != nil {
		t.Fatal(err)
	}
	e, err := w.Commit(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	e.Close()
}

func TestBlobHandlerCapability(t *testing.T) {
	const zip = "/example.com/a/@v/v1.0.0.zip"
	const other = "/example.com/a/@v/v1.1.0.zip"
	body := bytes.Repeat([]byte("0123456789"), 100)

	c, err := cache.Open(cache.Config{Dir: t.TempDir(), HotBytes: 1 << 20, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	storeBlob(t, c, zip, body)
	storeBlob(t, c, other, body)

	clock := &manualClock{now: time.Unix(1_700_000_000, 0)}
	key := capability.NewKey(30*time.Second, clock.Now)
	otherKey := capability.NewKey(30*time.Second, clock.Now)
	expired := key.Token(zip)
	clock.Add(31 * time.Second)

	getter := &countingGetter{c: c}
	var logs syncBuffer
	srv := httptest.NewServer(gateway.NewBlobHandler(getter, key, slog.New(slog.NewTextHandler(&logs, nil))))
	t.Cleanup(srv.Close)

	tests := []struct {
		name      string
		path      string
		token     string // "" sends no header
		rangeHdr  string
		want      int
		wantBody  []byte // nil: not checked beyond "not the blob"
		wantReads int64  // cache reads this request may cause
	}{
		{name: "no token", path: zip, want: http.StatusForbidden},
		{name: "token for another path", path: zip, token: key.Token(other), want: http.StatusForbidden},
		{name: "expired token", path: zip, token: expired, want: http.StatusForbidden},
		{name: "token of another key", path: zip, token: otherKey.Token(zip), want: http.StatusForbidden},
		{name: "garbage token", path: zip, token: "garbage", want: http.StatusForbidden},
		{name: "valid token", path: zip, token: key.Token(zip), want: http.StatusOK, wantBody: body, wantReads: 1},
		{name: "valid token with Range", path: zip, token: key.Token(zip), rangeHdr: "bytes=10-19", want: http.StatusPartialContent, wantBody: body[10:20], wantReads: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := getter.n.Load()
			req, err := http.NewRequest(http.MethodGet, srv.URL+tt.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tt.token != "" {
				req.Header.Set(capability.Header, tt.token)
			}
			if tt.rangeHdr != "" {
				req.Header.Set("Range", tt.rangeHdr)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tt.want {
				t.Fatalf("GET %s = %d %q, want %d", tt.path, resp.StatusCode, got, tt.want)
			}
			if reads := getter.n.Load() - before; reads != tt.wantReads {
				t.Errorf("GET %s read the cache %d times, want %d", tt.path, reads, tt.wantReads)
			}
			if tt.wantBody != nil {
				if !bytes.Equal(got, tt.wantBody) {
					t.Errorf("GET %s body = %d bytes, want %d", tt.path, len(got), len(tt.wantBody))
				}
				return
			}
			if bytes.Contains(got, body[:20]) {
				t.Errorf("refused GET %s sent the blob's bytes", tt.path)
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
				t.Errorf("refused GET %s Content-Type = %q, want text/plain", tt.path, ct)
			}
		})
	}
	if l := logs.String(); strings.Count(l, "level=INFO msg=\"blob listener: request refused\"") != 5 {
		t.Errorf("log = %q, want 5 refusals at INFO", l)
	}
}

func TestBlobHandlerWithoutChecker(t *testing.T) {
	const zip = "/example.com/a/@v/v1.0.0.zip"
	c, err := cache.Open(cache.Config{Dir: t.TempDir(), HotBytes: 1 << 20, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	storeBlob(t, c, zip, []byte("zip bytes"))
	srv := httptest.NewServer(gateway.NewBlobHandler(c, nil, slog.New(slog.DiscardHandler)))
	t.Cleanup(srv.Close)
	req, _ := http.NewRequest(http.MethodGet, srv.URL+zip, nil)
	req.Header.Set(capability.Header, "1.x")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("GET %s with no checker = %d, want 403", zip, resp.StatusCode)
	}
}
