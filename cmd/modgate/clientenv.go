package main

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"strings"
)

const clientEnvUsage = `Usage: modgate client-env [--config F] [--gateway URL]

Prints the 'go env -w' line that configures a go command to fetch
everything, private modules included, through this gateway:

	GOPROXY=URL        modgate alone: no fallback proxy after it, and no
	                   "direct", so a private path never leaves for another
	                   proxy and a 404 is safe to pass on (the go command
	                   needs 404s to probe package paths inside modules)
	GONOSUMDB=PATTERNS the gateway's private patterns: their checksums are
	                   not looked up in the public checksum database
	GOPRIVATE= GONOPROXY=
	                   empty: GOPRIVATE and GONOPROXY would make the go
	                   command fetch private modules directly, around the
	                   gateway

The patterns are the ones the gateway itself uses: the config file's
private list, else go env GOPRIVATE, GONOPROXY and GONOSUMDB, exactly as
'modgate serve' reads them. The gateway URL defaults to the config's
listener (http://127.0.0.1:8080 by default).

Flags:
`

// clientEnvCmd runs `modgate client-env`.
func clientEnvCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var configPath, gateway string
	fs := newFlagSet("client-env", clientEnvUsage, stderr)
	fs.StringVar(&configPath, "config", "", "the gateway's YAML config `file`; none: defaults from go env")
	fs.StringVar(&gateway, "gateway", "", "the gateway's GOPROXY `URL` as clients reach it (default: from the config's listener)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("client-env: unexpected argument %q", fs.Arg(0))}
	}
	cfg, err := loadConfig(configPath)
	if err != nil {
		return err
	}
	env, err := readGoEnv(ctx)
	if err != nil {
		return err
	}
	if gateway == "" {
		gateway = listenerURL(cfg)
	}
	u, err := url.Parse(gateway)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || strings.ContainsAny(gateway, ", |") {
		return usageError{fmt.Sprintf("client-env: --gateway %q: want an http or https URL", gateway)}
	}
	fmt.Fprintln(stdout, clientEnvLine(gateway, cfg.privatePatterns(env)))
	return nil
}

// clientEnvLine is the go env -w line for a client of the gateway at url
// with the private patterns.
func clientEnvLine(gateway string, patterns []string) string {
	return fmt.Sprintf("go env -w GOPROXY=%s GONOSUMDB=%s GOPRIVATE= GONOPROXY=", gateway, strings.Join(splitPatterns(patterns), ","))
}

// listenerURL is the GOPROXY listener's URL from the config, for clients
// on the same machine.
func listenerURL(cfg *fileConfig) string {
	addr := cfg.Listen
	if addr == "" || addr == "off" {
		addr = "127.0.0.1:8080"
	}
	scheme := "http"
	if cfg.TLS.Cert != "" {
		scheme = "https"
	}
	return scheme + "://" + addr
}
