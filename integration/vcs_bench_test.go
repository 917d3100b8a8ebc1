package integration

import (
	"testing"
	"time"

	"github.com/modgate/modgate/integration/gitserver"
	"github.com/modgate/modgate/integration/testproxy"
)

// BenchmarkVCSDownload measures `go mod download` of private modules (a
// module and its /v2 in one repository, and a nested module) from the
// hermetic Git server: through modgate's VCS origin with everything cold
// (modgate, its fetcher and the client all empty), through modgate warm
// (only the client empty), and with GOPROXY=direct from the same server
// (the client empty, as every fresh CI job is). Each iteration starts
// from nothing.
func BenchmarkVCSDownload(b *testing.B) {
	public := testproxy.Start(b, testproxy.Fixtures(b))
	git := gitserver.Start(b, gitserver.Options{})
	git.Standard(b)
	mods := []string{git.Domain + "/lib@v1.1.0", git.Domain + "/lib/v2@v2.0.0", git.Domain + "/lib/sub@v1.0.0"}
	download := func(env []string) time.Duration {
		b.Helper()
		start := time.Now()
		args := append([]string{"mod", "download"}, mods...)
		if out, stderr, err := testproxy.RunGo(b, b.TempDir(), env, args...); err != nil {
			b.Fatalf("go mod download: %v\n%s\n%s", err, out, stderr)
		}
		return time.Since(start)
	}
	var cold, warm, direct time.Duration
	n := 0
	for b.Loop() {
		g := startModgate(b, vcsConfig(b, public, git, git.Netrc(b, ""), ""))
		env := append(testproxy.GoEnv(b, g.URL, public.VerifierKey), "GONOSUMDB="+git.Domain)
		cold += download(env)
		warm += download(append(testproxy.GoEnv(b, g.URL, public.VerifierKey), "GONOSUMDB="+git.Domain))
		g.stop(b)
		direct += download(git.ClientEnv(b))
		n++
	}
	ms := func(d time.Duration) float64 { return float64(d.Milliseconds()) / float64(n) }
	b.ReportMetric(ms(cold), "modgate-cold-ms")
	b.ReportMetric(ms(warm), "modgate-warm-ms")
	b.ReportMetric(ms(direct), "direct-ms")
}
