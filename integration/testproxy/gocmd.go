package testproxy

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// GoEnv returns a complete environment for running the go command against
// the module proxy at proxyURL and nothing else: only PATH is inherited,
// and HOME, GOPATH, GOMODCACHE and GOCACHE are fresh temporary directories
// of t, with telemetry off. sumdb is the GOSUMDB value, normally [Server.VerifierKey], which
// makes the go command reach the checksum database through the proxy;
// "" sets GOSUMDB=off.
func GoEnv(t testing.TB, proxyURL, sumdb string) []string {
	t.Helper()
	if sumdb == "" {
		sumdb = "off"
	}
	// Turn telemetry off, as "go telemetry off" would: otherwise the go
	// command leaves a process behind that writes below HOME after it
	// exits, racing with the removal of the temporary directory.
	home := t.TempDir()
	config := filepath.Join(home, ".config")
	modeFile := filepath.Join(config, "go", "telemetry", "mode")
	if err := os.MkdirAll(filepath.Dir(modeFile), 0o777); err != nil {
		t.Fatalf("testproxy: %v", err)
	}
	if err := os.WriteFile(modeFile, []byte("off"), 0o666); err != nil {
		t.Fatalf("testproxy: %v", err)
	}
	return []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + home,
		"XDG_CONFIG_HOME=" + config,
		"GOPROXY=" + proxyURL,
		"GOSUMDB=" + sumdb,
		"GONOSUMDB=",
		"GOPRIVATE=",
		"GONOPROXY=",
		"GOINSECURE=",
		"GOMODCACHE=" + t.TempDir(),
		"GOPATH=" + t.TempDir(),
		"GOCACHE=" + t.TempDir(),
		"GOTOOLCHAIN=local",
		"GOFLAGS=-modcacherw",
		"GOENV=off",
		"GOWORK=off",
		"GO111MODULE=on",
	}
}

// RunGo runs the go command found in PATH with args in dir and env,
// for at most two minutes, and returns its standard output and error.
// It skips t if there is no go command.
func RunGo(t testing.TB, dir string, env []string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("testproxy: no go command: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	var outBuf, errBuf bytes.Buffer
	cmd := exec.CommandContext(ctx, goCmd, args...)
	cmd.Dir = dir
	cmd.Env = env
	cmd.Stdout = &outBuf
	cmd.Stderr = &errBuf
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", err, ctx.Err())
		}
		return outBuf.String(), errBuf.String(), fmt.Errorf("go %s: %w", strings.Join(args, " "), err)
	}
	return outBuf.String(), errBuf.String(), nil
}
