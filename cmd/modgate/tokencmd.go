package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"time"

	"github.com/modgate/modgate/auth"
)

const tokenUsage = `Usage:

	modgate token create --name NAME [--group G]... [--tokens FILE | --config F]
	modgate token list [--tokens FILE | --config F]
	modgate token revoke NAME [--tokens FILE | --config F]

Client tokens authenticate go commands to the gateway. create makes a
token, prints it once on stdout (it is not stored and cannot be shown
again), and adds its name, groups and SHA-256 to the tokens file, creating
the file (mode 0600) if needed. list prints each token's name, groups and
creation time. revoke removes a token. The tokens file is --tokens, else
auth.tokens in the --config file.

A running 'modgate serve' reads the tokens file again on SIGHUP (kill -HUP
PID): created and revoked tokens take effect then. Run these commands as
the user the gateway runs as, so that it can read the file they write.

The go command sends a token as the password of HTTP basic authentication
(any user name works), from a netrc file ($HOME/.netrc, or the file the
NETRC variable names) or a GOAUTH command, and only over HTTPS: the
gateway's listener needs TLS (tls.cert and tls.key). The netrc machine is
the gateway's host exactly as GOPROXY writes it, port included:

	machine modgate.corp.example:8443 login any password mgt_...

Other clients may send "Authorization: Bearer mgt_..." instead.

Flags:
`

// tokenCmd runs `modgate token`.
func tokenCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var (
		name, tokensFile, configFile string
		groups                       []string
	)
	flags := newFlagSet("token", tokenUsage, stderr)
	flags.StringVar(&name, "name", "", "create, revoke: the token's `name`, 1 to 64 of a-z A-Z 0-9 . _ @ -")
	flags.Func("group", "create: add the token to this `group`; repeat for more", func(g string) error {
		groups = append(groups, g)
		return nil
	})
	flags.StringVar(&tokensFile, "tokens", "", "the tokens `file` (default: auth.tokens in --config)")
	flags.StringVar(&configFile, "config", "", "read the tokens file's name, auth.tokens, from this modgate.yaml `file`")
	sub, err := parseSub(flags, args, "create", "list", "revoke")
	if err != nil {
		return flagError("token", err)
	}
	pos, err := interspersed(flags)
	if err != nil {
		return flagError("token", err)
	}

	switch sub {
	case "create":
		if len(pos) > 0 {
			return usageError{fmt.Sprintf("token create: unexpected argument %q: the name is --name NAME", pos[0])}
		}
		if name == "" {
			return usageError{"token create: --name is required"}
		}
		if err := checkTokenNames(name, groups); err != nil {
			return usageError{"token create: " + err.Error()}
		}
	case "list":
		if len(pos) > 0 {
			return usageError{fmt.Sprintf("token list: unexpected argument %q", pos[0])}
		}
		if name != "" || len(groups) > 0 {
			return usageError{"token list: --name and --group are flags of create and revoke"}
		}
	case "revoke":
		switch {
		case len(pos) > 1:
			return usageError{fmt.Sprintf("token revoke: unexpected argument %q: revoke one token at a time", pos[1])}
		case len(pos) == 1 && name != "" && name != pos[0]:
			return usageError{fmt.Sprintf("token revoke: two names, %q and --name %q", pos[0], name)}
		case len(pos) == 1:
			name = pos[0]
		case name == "":
			return usageError{"token revoke: want the NAME of the token to revoke"}
		}
		if len(groups) > 0 {
			return usageError{"token revoke: --group is a flag of create"}
		}
	}

	path, err := tokensPath(tokensFile, configFile)
	if err != nil {
		return err
	}
	switch sub {
	case "create":
		token, err := auth.Create(path, name, groups, time.Now())
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, token)
		fmt.Fprintf(stderr, `Created token %q in %s, which keeps only its hash: save the token now.
Send SIGHUP to a running modgate serve to make it accept the token.
For the go command (HTTPS only), add to ~/.netrc or the file NETRC names:
	machine HOST:PORT login any password TOKEN
with HOST:PORT the gateway as GOPROXY writes it (the port only if the URL has one).
`, name, path)
	case "list":
		recs, err := auth.List(path)
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("token list: no tokens file %s: 'modgate token create' makes it", path)
		}
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, "NAME\tGROUPS\tCREATED")
		for _, r := range recs {
			groups := strings.Join(r.Groups, ",")
			if groups == "" {
				groups = "-"
			}
			fmt.Fprintf(stdout, "%s\t%s\t%s\n", r.Name, groups, r.Created.Format(time.RFC3339))
		}
	case "revoke":
		if err := auth.Revoke(path, name); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "Revoked token %q in %s. Send SIGHUP to a running modgate serve to make it refuse the token.\n", name, path)
	}
	return nil
}

// checkTokenNames checks a new token's name and groups.
func checkTokenNames(name string, groups []string) error {
	if err := auth.CheckName(name); err != nil {
		return fmt.Errorf("--name %w", err)
	}
	if err := auth.CheckGroups(groups); err != nil {
		return fmt.Errorf("--%w", err)
	}
	return nil
}

// tokensPath returns the tokens file: tokensFile if set, else auth.tokens
// in configFile.
func tokensPath(tokensFile, configFile string) (string, error) {
	if tokensFile != "" {
		return tokensFile, nil
	}
	if configFile == "" {
		return "", usageError{"token: no tokens file: give --tokens FILE, or --config F with auth.tokens"}
	}
	c, err := loadConfig(configFile) // as serve reads it
	if err != nil {
		return "", err
	}
	if c.Auth.Tokens == "" {
		return "", usageError{fmt.Sprintf("token: config %s sets no auth.tokens: give --tokens FILE", configFile)}
	}
	return c.Auth.Tokens, nil
}
