package main

import (
	"cmp"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/mod/module"
	"golang.org/x/mod/semver"

	"github.com/modgate/modgate/audit"
	"github.com/modgate/modgate/inventory"
	"github.com/modgate/modgate/vulndb"
)

const inventoryUsage = `Usage:

	modgate inventory rebuild FILE… [--dir D] [--unverified] [--as-given]
	modgate inventory who MODULE[@VERSION|@RANGE] [--dir D] [--json]
	modgate inventory top [-n N] [--dir D] [--json]
	modgate inventory affected MODULE --range RANGE [--dir D] [--json]
	modgate inventory affected ID|--all --vulndb URL [--dir D] [--json]

The inventory records, for every module version the gateway served, who
fetched it (the authenticated user, else the client certificate's first
URI SAN, else its subject, else the client address), when first and
last, how often, and which kinds (info, mod, zip, sumdb-lookup…). A fetch
is a request event of the audit log with a module, a version and a 2xx
status. The store lives in D, by default the modgate cache directory's
inventory/ ($XDG_CACHE_HOME/modgate/inventory or ~/.cache/modgate/inventory
on Linux).

rebuild builds the store anew from audit files (the rotated set, as
'modgate audit verify' takes it: FILE.N … FILE.1 FILE, sorted so unless
--as-given). It verifies their hash chain first and refuses a broken one
(an inventory of a tampered log would name the wrong people) unless
--unverified; it prints what it counted and the lines it skipped (not an
audit event, or longer than 1 MiB). Run it while no gateway is writing
to D, or into another D.

who lists who fetched MODULE: every version, one version (@v1.2.3), or
a range (@"<v1.2.4", @">=v1.0.0 <v1.2.0": comparators as in policy
rules). top lists the most fetched modules. affected lists who fetched
the versions of MODULE in RANGE, and since when.

Queries read D without changing it, so they may run beside a gateway.
Output is aligned columns, or with --json a JSON array.

Flags:
`

// defaultInventoryDir is where the inventory lives without --dir.
func defaultInventoryDir() (string, error) {
	dir, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("inventory: no --dir, and %w", err)
	}
	return filepath.Join(dir, "modgate", "inventory"), nil
}

// inventoryCmd runs `modgate inventory`.
func inventoryCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var (
		dir, rng, vulnURL                   string
		asJSON, unverified, asGiven, allIDs bool
		n                                   int
	)
	flags := newFlagSet("inventory", inventoryUsage, stderr)
	flags.StringVar(&dir, "dir", "", "the inventory's `directory` (default: the modgate cache directory's inventory/)")
	flags.BoolVar(&asJSON, "json", false, "who, top, affected: print a JSON array")
	flags.IntVar(&n, "n", 20, "top: how many modules")
	flags.StringVar(&rng, "range", "", "affected: the version `RANGE`, such as \"<v1.2.4\"")
	flags.StringVar(&vulnURL, "vulndb", "", "affected ID|--all: the vulnerability database `URL` (https://… or file:///dir; default GOVULNDB)")
	flags.BoolVar(&allIDs, "all", false, "affected: every served version any known vulnerability touches")
	flags.BoolVar(&unverified, "unverified", false, "rebuild: rebuild even if the audit chain is broken")
	flags.BoolVar(&asGiven, "as-given", false, "rebuild: read the files in the order given, not sorted by rotation suffix")
	sub, err := parseSub(flags, args, "rebuild", "who", "top", "affected")
	if err != nil {
		return flagError("inventory", err)
	}
	pos, err := interspersed(flags)
	if err != nil {
		return flagError("inventory", err)
	}
	set := map[string]bool{}
	flags.Visit(func(f *flag.Flag) { set[f.Name] = true })
	owner := map[string]string{"json": "who, top and affected", "n": "top", "range": "affected", "vulndb": "affected", "all": "affected", "unverified": "rebuild", "as-given": "rebuild"}
	allowed := map[string][]string{"rebuild": {"unverified", "as-given"}, "who": {"json"}, "top": {"json", "n"}, "affected": {"json", "range", "vulndb", "all"}}
	for name := range set {
		if name == "dir" || slices.Contains(allowed[sub], name) {
			continue
		}
		return usageError{fmt.Sprintf("inventory %s: --%s is a flag of %s", sub, name, owner[name])}
	}
	if dir == "" {
		if dir, err = defaultInventoryDir(); err != nil {
			return err
		}
	}

	switch sub {
	case "rebuild":
		if len(pos) == 0 {
			return usageError{"inventory rebuild: want at least one audit FILE"}
		}
		return inventoryRebuild(dir, pos, unverified, asGiven, stdout, stderr)
	case "top":
		if len(pos) > 0 {
			return usageError{fmt.Sprintf("inventory top: unexpected argument %q", pos[0])}
		}
		if n < 1 {
			return usageError{fmt.Sprintf("inventory top: -n %d: want at least 1", n)}
		}
		inv, err := openInventory(dir)
		if err != nil {
			return err
		}
		return printTop(stdout, inv.Top(n), asJSON)
	}

	// affected ID and affected --all: the served versions the vulnerability
	// database says are affected.
	if sub == "affected" && (allIDs || (len(pos) == 1 && vulnIDRE.MatchString(pos[0]))) {
		if allIDs && len(pos) > 0 {
			return usageError{"inventory affected: --all takes no ID or MODULE"}
		}
		id := ""
		if !allIDs {
			id = pos[0]
		}
		return inventoryAffectedByVulns(ctx, dir, vulnURL, id, asJSON, stdout)
	}
	// who and affected
	if len(pos) != 1 {
		if sub == "who" {
			return usageError{"inventory who: want one MODULE[@VERSION|@RANGE]"}
		}
		return usageError{"inventory affected: want one MODULE and --range RANGE"}
	}
	mod, vers, _ := strings.Cut(pos[0], "@")
	if sub == "affected" {
		// affected ID and affected --all come with the vulnerability
		// database; until then MODULE --range RANGE is the one form.
		if vers != "" {
			return usageError{"inventory affected: give the range with --range, not @"}
		}
		if rng == "" {
			return usageError{"inventory affected: want --range RANGE, a vulnerability ID, or --all"}
		}
		vers = rng
	}
	if err := module.CheckPath(mod); err != nil {
		return usageError{fmt.Sprintf("inventory %s: %v", sub, err)}
	}
	match, err := inventory.ParseVersionMatch(vers)
	if err != nil {
		return usageError{fmt.Sprintf("inventory %s: %v", sub, err)}
	}
	inv, err := openInventory(dir)
	if err != nil {
		return err
	}
	return printFetches(stdout, inv.Affected(mod, match.Contains), asJSON)
}

// vulnIDRE matches a Go vulnerability ID.
var vulnIDRE = regexp.MustCompile(`^GO-\d{4}-\d{4,}$`)

// inventoryAffectedByVulns prints the served versions that the
// vulnerability id (every known one, if id is "") touches, with who
// fetched them and since when.
func inventoryAffectedByVulns(ctx context.Context, dir, url, id string, asJSON bool, stdout io.Writer) error {
	if url == "" {
		url = os.Getenv("GOVULNDB")
	}
	if url == "" {
		return usageError{"inventory affected: give --vulndb URL (or set GOVULNDB)"}
	}
	db, err := vulndb.Load(ctx, vulndb.Source{URL: url})
	if err != nil {
		return fmt.Errorf("inventory affected: %w", err)
	}
	if id != "" && !slices.Contains(db.IDs(), id) {
		return fmt.Errorf("inventory affected: %s is not in the vulnerability database at %s", id, url)
	}
	inv, err := openInventory(dir)
	if err != nil {
		return err
	}
	var out []inventory.Fetch
	for _, m := range inv.Top(math.MaxInt32) {
		out = append(out, inv.Affected(m.Module, func(v string) bool {
			for _, vu := range db.Vulns(m.Module, v) {
				if id == "" || vu.ID == id {
					return true
				}
			}
			return false
		})...)
	}
	slices.SortFunc(out, func(a, b inventory.Fetch) int {
		return cmp.Or(strings.Compare(a.Module, b.Module), semver.Compare(a.Version, b.Version), strings.Compare(a.Identity, b.Identity))
	})
	return printFetches(stdout, out, asJSON)
}

// openInventory opens the inventory in dir to query it, read-only.
func openInventory(dir string) (*inventory.Inventory, error) {
	inv, err := inventory.Open(inventory.Options{Dir: dir, ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("%w (build it with 'modgate inventory rebuild', or give --dir)", err)
	}
	return inv, nil
}

// inventoryRebuild runs `modgate inventory rebuild`.
func inventoryRebuild(dir string, files []string, unverified, asGiven bool, stdout, stderr io.Writer) error {
	if !asGiven {
		files = chainOrder(files)
	}
	rep, err := audit.Verify(files)
	if err != nil {
		return fmt.Errorf("inventory rebuild: %w", err)
	}
	switch {
	case rep.Problem != nil && !unverified:
		return fmt.Errorf("inventory rebuild: audit chain broken at %v (after %d intact events): not rebuilt; check the log, or rebuild anyway with --unverified", rep.Problem, rep.Events)
	case rep.Problem != nil:
		fmt.Fprintf(stderr, "modgate inventory rebuild: warning: audit chain broken at %v; rebuilding anyway (--unverified)\n", rep.Problem)
	}
	inv, got, err := inventory.Rebuild(inventory.Options{Dir: dir, FlushInterval: -1}, files...)
	if err != nil {
		return err
	}
	if err := inv.Close(); err != nil {
		return fmt.Errorf("inventory rebuild: %w", err)
	}
	st := inv.Stats()
	fmt.Fprintf(stdout, "%s: %d fetches of %d module versions by identity, %d modules, from %d lines in %d files",
		dir, got.Fetches, st.Keys, st.Modules, got.Lines, len(files))
	if rep.Problem == nil {
		fmt.Fprintf(stdout, " (chain intact")
		if rep.Events > 0 {
			fmt.Fprintf(stdout, ", seq %d to %d", rep.FirstSeq, rep.LastSeq)
		}
		fmt.Fprint(stdout, ")")
	}
	fmt.Fprintf(stdout, "; %d other events\n", got.Ignored)
	if got.Malformed > 0 {
		fmt.Fprintf(stdout, "%d lines skipped, not audit events: %s\n", got.Malformed, locations(got.MalformedAt))
	}
	if got.Refused > 0 {
		fmt.Fprintf(stdout, "%d fetches not recorded: the inventory is full (%d keys)\n", got.Refused, st.Keys)
	}
	return nil
}

func printFetches(w io.Writer, fs []inventory.Fetch, asJSON bool) error {
	if asJSON {
		return writeJSONArray(w, fs)
	}
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "MODULE\tVERSION\tIDENTITY\tFIRST\tLAST\tCOUNT\tKINDS")
	for _, f := range fs {
		id := f.Identity
		if id == "" {
			id = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", f.Module, f.Version, id,
			f.First.Format(time.RFC3339), f.Last.Format(time.RFC3339), f.Count, strings.Join(f.Kinds, ","))
	}
	return tw.Flush()
}

func printTop(w io.Writer, top []inventory.ModuleCount, asJSON bool) error {
	if asJSON {
		return writeJSONArray(w, top)
	}
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "MODULE\tFETCHES\tVERSIONS\tIDENTITIES")
	for _, m := range top {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\n", m.Module, m.Count, m.Versions, m.Identities)
	}
	return tw.Flush()
}

// writeJSONArray writes s as an indented JSON array, [] when empty.
func writeJSONArray[T any](w io.Writer, s []T) error {
	if s == nil {
		s = []T{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(s)
}
