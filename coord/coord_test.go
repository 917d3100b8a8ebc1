package coord

import (
	"context"
	"errors"
	"log/slog"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/modgate/modgate/integration/natsserver"
)

// Test timings: a short lease, so that lapses take well under a second.
const (
	testTTL     = 450 * time.Millisecond
	testTimeout = 300 * time.Millisecond
	testLapse   = testTTL + testTTL/2
	// margin is the slack allowed on top of the times the package
	// promises, for a loaded machine and the race detector.
	margin = 400 * time.Millisecond
)

// logWriter sends log lines to t.Log.
type logWriter struct{ t testing.TB }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// openLeases opens Leases on url, named name, with the test timings and
// fast reconnects, and closes them at t's cleanup.
func openLeases(t testing.TB, url, name string, ttl time.Duration) *Leases {
	t.Helper()
	l, err := Open(t.Context(), Config{
		URL:      url,
		LeaseTTL: ttl,
		Timeout:  testTimeout,
		Name:     name,
		Options:  []nats.Option{nats.ReconnectWait(50 * time.Millisecond)},
		Logger:   slog.New(slog.NewTextHandler(logWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatalf("Open(%s) = %v", url, err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// eventually calls f every 20ms until it reports true, and fails t if
// that takes longer than d. It returns how long it took.
func eventually(t testing.TB, d time.Duration, what string, f func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !f() {
		if time.Since(start) > d {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

func TestOpenConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string // in the error
	}{
		{"no URL", Config{}, "URL is required"},
		{"bad bucket", Config{URL: "nats://127.0.0.1:1", Bucket: "a.b"}, `Bucket "a.b"`},
		{"negative TTL", Config{URL: "nats://127.0.0.1:1", LeaseTTL: -time.Second}, "LeaseTTL -1s is negative"},
		{"short TTL", Config{URL: "nats://127.0.0.1:1", LeaseTTL: time.Millisecond}, "LeaseTTL 1ms is under the minimum 100ms"},
		{"negative timeout", Config{URL: "nats://127.0.0.1:1", Timeout: -time.Second}, "Timeout -1s is negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := Open(t.Context(), tt.cfg)
			if err == nil {
				l.Close()
				t.Fatalf("Open(%+v) = nil error, want %q", tt.cfg, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Open(%+v) = %v, want %q", tt.cfg, err, tt.want)
			}
		})
	}
}

// TestOutage stops the server under a working Leases: Lead fails fast and
// Status says why; once the server is back, both work again.
func TestOutage(t *testing.T) {
	srv := natsserver.Start(t)
	l := openLeases(t, srv.URL, "a", testTTL)
	if ok, detail := l.Status(); !ok {
		t.Fatalf("Status() = false, %q; want true", detail)
	}
	s, err := l.Lead(t.Context(), "example.com/mod/@v/v0.1.0.zip")
	if err != nil || !s.Held() {
		t.Fatalf("Lead = %v, %v; want held", s, err)
	}
	s.Release()

	srv.Stop()
	start := time.Now()
	if s, err := l.Lead(t.Context(), "k"); err == nil {
		s.Release()
		t.Errorf("Lead during an outage = nil error, want one")
	}
	if d := time.Since(start); d > testTimeout+margin {
		t.Errorf("Lead during an outage took %v, want < %v", d, testTimeout+margin)
	}
	eventually(t, 2*time.Second, "Status not ok after Stop", func() bool {
		ok, _ := l.Status()
		return !ok
	})
	_, detail := l.Status()
	start = time.Now()
	_, err = l.Lead(t.Context(), "k")
	d := time.Since(start)
	if err == nil || d > 50*time.Millisecond {
		t.Errorf("Lead after the outage was noticed = %v in %v, want an error at once", err, d)
	}
	t.Logf("down: Lead error %v in %v; Status detail %q", err, d, detail)

	srv.Restart(t)
	d = eventually(t, 5*time.Second, "Lead after Restart", func() bool {
		s, err := l.Lead(t.Context(), "k")
		if err != nil {
			return false
		}
		s.Release()
		return s.Held()
	})
	t.Logf("Lead works %v after Restart", d)
	if ok, detail := l.Status(); !ok {
		t.Errorf("Status() after Restart = false, %q; want true", detail)
	}
}

// TestOpenServerDown opens Leases while the server is down: Open
// succeeds at once, and the Leases work once the server is up.
func TestOpenServerDown(t *testing.T) {
	srv := natsserver.Start(t)
	srv.Stop()
	start := time.Now()
	l := openLeases(t, srv.URL, "a", testTTL)
	if d := time.Since(start); d > testTimeout+margin {
		t.Errorf("Open with the server down took %v, want < %v", d, testTimeout+margin)
	}
	if ok, detail := l.Status(); ok {
		t.Errorf("Status() with the server down = true, %q; want false", detail)
	}
	if _, err := l.Lead(t.Context(), "k"); err == nil {
		t.Errorf("Lead with the server down = nil error, want one")
	}
	srv.Restart(t)
	d := eventually(t, 5*time.Second, "Lead after the server came up", func() bool {
		s, err := l.Lead(t.Context(), "k")
		if err != nil {
			return false
		}
		s.Release()
		return s.Held()
	})
	t.Logf("Lead works %v after the server came up", d)
	if ok, detail := l.Status(); !ok {
		t.Errorf("Status() = false, %q; want true", detail)
	}
}

// clientGoroutines counts the goroutines of this package and of the NATS
// client, but not those of the test or of the embedded server.
func clientGoroutines() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if strings.Contains(g, "testing.tRunner") {
			continue
		}
		if strings.Contains(g, "modgate/modgate/coord.") || strings.Contains(g, "nats-io/nats.go") {
			count++
		}
	}
	return count
}

// TestClose checks that Close releases held leases, wakes waiters, stops
// every goroutine it started, and leaves Lead failing.
func TestClose(t *testing.T) {
	srv := natsserver.Start(t)
	b := openLeases(t, srv.URL, "b", testTTL)
	base := clientGoroutines()

	a := openLeases(t, srv.URL, "a", testTTL)
	held, err := a.Lead(t.Context(), "k")
	if err != nil || !held.Held() {
		t.Fatalf("a.Lead = %v, %v; want held", held, err)
	}
	other, err := b.Lead(t.Context(), "other")
	if err != nil || !other.Held() {
		t.Fatalf("b.Lead = %v, %v; want held", other, err)
	}
	follower, err := a.Lead(t.Context(), "other")
	if err != nil || follower.Held() {
		t.Fatalf("a.Lead(other) = %v, %v; want not held", follower, err)
	}
	woke := make(chan error, 1)
	go func() { woke <- follower.Wait(t.Context()) }()
	time.Sleep(100 * time.Millisecond)

	start := time.Now()
	if err := a.Close(); err != nil {
		t.Errorf("Close() = %v", err)
	}
	if d := time.Since(start); d > testTimeout+margin {
		t.Errorf("Close() took %v, want < %v", d, testTimeout+margin)
	}
	select {
	case err := <-woke:
		if err != nil {
			t.Errorf("Wait during Close = %v, want nil", err)
		}
	case <-time.After(time.Second):
		t.Fatal("Wait did not return after Close")
	}
	if err := a.Close(); err != nil {
		t.Errorf("second Close() = %v", err)
	}
	if _, err := a.Lead(t.Context(), "k"); err == nil {
		t.Errorf("Lead after Close = nil error, want one")
	}
	if ok, detail := a.Status(); ok || detail != "closed" {
		t.Errorf("Status() after Close = %v, %q; want false, \"closed\"", ok, detail)
	}
	held.Release() // after Close: does nothing, does not block

	// Close released a's lease: b takes it at once.
	s, err := b.Lead(t.Context(), "k")
	if err != nil || !s.Held() {
		t.Errorf("b.Lead(k) after a.Close = %v, %v; want held", s, err)
	}
	s.Release()
	other.Release()

	eventually(t, 3*time.Second, "goroutines back to the baseline", func() bool {
		return clientGoroutines() <= base
	})
}

// TestWaitServerGone stops the server while a follower waits: Wait
// returns nil promptly, long before the lease could lapse.
func TestWaitServerGone(t *testing.T) {
	const ttl = 10 * time.Second
	srv := natsserver.Start(t)
	a := openLeases(t, srv.URL, "a", ttl)
	b := openLeases(t, srv.URL, "b", ttl)
	held, err := a.Lead(t.Context(), "k")
	if err != nil || !held.Held() {
		t.Fatalf("a.Lead = %v, %v; want held", held, err)
	}
	defer held.Release()
	s, err := b.Lead(t.Context(), "k")
	if err != nil || s.Held() {
		t.Fatalf("b.Lead = %v, %v; want not held", s, err)
	}
	woke := make(chan error, 1)
	go func() { woke <- s.Wait(t.Context()) }()
	time.Sleep(100 * time.Millisecond)
	srv.Stop()
	start := time.Now()
	select {
	case err := <-woke:
		if err != nil {
			t.Errorf("Wait when the server went away = %v, want nil", err)
		}
		t.Logf("Wait returned %v after the server went away", time.Since(start))
	case <-time.After(time.Second):
		t.Fatal("Wait did not return within 1s of the server going away")
	}
	// Wait on a lease of a Leases that is down returns at once.
	eventually(t, 2*time.Second, "Status not ok", func() bool {
		ok, _ := b.Status()
		return !ok
	})
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	if err := s.Wait(ctx); err != nil || errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Errorf("Wait while down = %v, want nil at once", err)
	}
}
