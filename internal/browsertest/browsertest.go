// Package browsertest runs tests in a real headless Chromium, driven over
// the DevTools protocol (github.com/chromedp/chromedp).
//
// New starts Debian's chromium (or $MODGATE_CHROMIUM) with a fresh
// profile, headless, with every background connection off: the tests'
// machines have no network but 127.0.0.1, and Chromium would otherwise
// keep trying to reach its vendor's services. Without a browser the test
// is skipped with a message, unless $CI is set: CI installs chromium
// (make deps), so there a missing browser fails the test.
//
// Screenshot saves a full-page PNG under the test's temporary directory
// and, when $MODGATE_SCREENSHOTS names a directory (make screenshots),
// there too.
package browsertest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// Timeout bounds each browser's life in a test.
const Timeout = 2 * time.Minute

// Path returns the browser to run: $MODGATE_CHROMIUM, else chromium or
// chromium-browser from PATH, else "".
func Path() string {
	if p := os.Getenv("MODGATE_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// New starts a headless browser for t and returns a context to run
// chromedp actions in, bounded by Timeout. The browser is closed, its
// process ended and its profile removed when t ends.
func New(t testing.TB) context.Context {
	t.Helper()
	path := Path()
	if path == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("browsertest: no chromium (install Debian's chromium package: make deps does, as root)")
		}
		t.Skip("browsertest: no chromium on this machine (install Debian's chromium package, or set MODGATE_CHROMIUM)")
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Headless,
		chromedp.NoSandbox, // CI runs as root, where the sandbox cannot start
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("metrics-recording-only", true),
		chromedp.Flag("no-pings", true),
		chromedp.WindowSize(1400, 1000),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelBrowser := chromedp.NewContext(actx, chromedp.WithErrorf(t.Logf))
	ctx, cancelTimeout := context.WithTimeout(ctx, Timeout)
	t.Cleanup(func() {
		cancelTimeout()
		cancelBrowser() // closes the browser
		cancelAlloc()   // and waits for its process
	})
	// Start it now, so a browser that cannot start fails here.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("browsertest: starting %s: %v", path, err)
	}
	return ctx
}

// Screenshot saves a full-page PNG of what ctx's tab shows as NAME.png in
// t's temporary directory and, if $MODGATE_SCREENSHOTS is set, in that
// directory too. It returns the first file's path.
func Screenshot(t testing.TB, ctx context.Context, name string) string {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // 100: PNG
	if err != nil {
		t.Fatalf("browsertest: screenshot %s: %v", name, err)
	}
	dirs := []string{t.TempDir()}
	if d := os.Getenv("MODGATE_SCREENSHOTS"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		dirs = append(dirs, d)
	}
	for _, d := range dirs {
		if err := os.WriteFile(filepath.Join(d, name+".png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dirs[0], name+".png")
}
