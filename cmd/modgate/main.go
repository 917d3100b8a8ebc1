// Command modgate is a private Go module gateway: a GOPROXY server that
// checks each request, fetches and forwards what it may, and records who
// fetched what.
//
// Flags, environment and configuration files are read here and nowhere
// else; the packages take values.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
)

// A command is one of modgate's subcommands.
type command struct {
	name, summary string
	run           func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

// commands are modgate's subcommands, in the order the help lists them.
var commands = []command{
	{"serve", "run the standalone gateway: a GOPROXY server on 127.0.0.1:8080", serve},
	{"extproc", "run the mesh sidecar: the ext_proc gRPC server Envoy streams requests to", extprocCmd},
	{"xds", "run the control plane alone: upstream clusters for the gateway Envoy over ADS", xdsCmd},
	{"cache", "show cache statistics, purge a module, or re-verify every cached .mod and .zip", cacheCmd},
	{"ledger", "list or verify the private-module checksum ledger", ledgerCmd},
	{"check", "prove a repository's go.sum and vendor/ are what the world published", checkCmd},
	{"store", "tidy the store that replicas share: orphaned blobs and unfinished uploads", storeCmd},
	{"client-env", "print the go env -w line that points a go command at this gateway", clientEnvCmd},
	{"token", "create, list or revoke the client tokens go commands authenticate with", tokenCmd},
	{"policy", "check which module versions an identity may fetch, or validate the policy rules", policyCmd},
	{"certs", "create a development CA and mesh certificates", certsCmd},
	{"audit", "verify the hash chain of audit files", auditCmd},
	{"inventory", "show who fetched which module versions, or rebuild that inventory from audit files", inventoryCmd},
	{"redirect", "attach, detach or inspect the eBPF transparent redirect (root)", redirectCmd},
	{"envoy-config", "validate Envoy bootstraps strictly, without Envoy", envoyConfigCmd},
}

// usage is the top-level help, listing the commands.
func usage() string {
	var b strings.Builder
	b.WriteString("modgate is a private Go module gateway.\n\nUsage:\n\n\tmodgate <command> [flags]\n\nCommands:\n\n")
	for _, c := range commands {
		fmt.Fprintf(&b, "\t%-13s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(&b, "\t%-13s %s\n", "help", "print this help, or a command's: modgate help serve")
	b.WriteString("\nRun 'modgate <command> --help' for a command's flags.\n")
	return b.String()
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// run runs the command line args and returns the exit code: 0 success,
// 1 failure, 2 bad usage.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage())
		return 2
	}
	name, rest := args[0], args[1:]
	if name == "help" || name == "-h" || name == "-help" || name == "--help" {
		if len(rest) > 0 {
			return run(ctx, []string{rest[0], "--help"}, stdout, stderr)
		}
		fmt.Fprint(stdout, usage())
		return 0
	}
	i := slices.IndexFunc(commands, func(c command) bool { return c.name == name })
	if i < 0 {
		fmt.Fprintf(stderr, "modgate: unknown command %q\n\n%s", name, usage())
		return 2
	}
	err := commands[i].run(ctx, rest, stdout, stderr)
	var ue usageError
	var ee exitError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ee):
		switch {
		case ee.err == nil:
		case errors.As(ee.err, &ue):
			fmt.Fprintf(stderr, "modgate %s\n", ee.err)
		default:
			fmt.Fprintf(stderr, "modgate: %v\n", ee.err)
		}
		return ee.code
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "modgate %s\n", err)
		return 2
	}
	fmt.Fprintf(stderr, "modgate: %v\n", err)
	return 1
}

// usageError is a command line that cannot be run as written.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// newFlagSet returns the flag set of a command whose --help prints usage
// and then the flags.
func newFlagSet(name, usage string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	return fs
}

// parseSub parses the arguments of a command with subcommands, `SUB
// [flags]`: it returns SUB, one of subs, with fs parsed from the rest.
func parseSub(fs *flag.FlagSet, args []string, subs ...string) (string, error) {
	want := strings.Join(subs, " or ")
	if len(args) == 0 {
		fs.Usage()
		return "", usageError{fmt.Sprintf("%s: missing subcommand: %s", fs.Name(), want)}
	}
	sub := args[0]
	if sub == "-h" || sub == "-help" || sub == "--help" {
		fs.Usage()
		return "", flag.ErrHelp
	}
	if !slices.Contains(subs, sub) {
		return "", usageError{fmt.Sprintf("%s: unknown subcommand %q: want %s", fs.Name(), sub, want)}
	}
	return sub, fs.Parse(args[1:])
}

// interspersed continues parsing flags after the first positional
// argument, so that flags may also follow positional arguments (policy
// check MODULE@VERSION --as NAME). It returns the positional arguments;
// every argument that begins with "-" is a flag.
func interspersed(flags *flag.FlagSet) ([]string, error) {
	var pos []string
	for args := flags.Args(); len(args) > 0; args = flags.Args() {
		pos = append(pos, args[0])
		if err := flags.Parse(args[1:]); err != nil {
			return nil, err
		}
	}
	return pos, nil
}

// flagError makes an error of cmd's flag parsing a usage error (exit
// status 2); the flag package has printed it and the usage already.
func flagError(cmd string, err error) error {
	var ue usageError
	if errors.Is(err, flag.ErrHelp) || errors.As(err, &ue) {
		return err
	}
	return usageError{cmd + ": " + err.Error()}
}
