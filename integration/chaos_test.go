package integration

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// The fault matrix: tests named TestChaos… inject one fault each during
// load and record a chaosRow of what it cost and what it left behind.
// make test runs the short version (seconds a row); make chaos runs the
// long one (CHAOS=long) and prints the matrix, also written as Markdown to
// $MODGATE_CHAOS_TABLE when set.

// A chaosRow is one fault of the matrix and its outcome.
type chaosRow struct {
	// Group and Fault name it: "upstream", "disk", "process",
	// "control plane", "clock"; what was injected.
	Group, Fault string
	// ClientSaw is what clients got during the fault: status codes and
	// counts, or the go command's result and message.
	ClientSaw string
	// Unverified counts responses that were unverified or partial bytes
	// served as whole (a body that differs from the upstream's, a 200 cut
	// short). It must be 0.
	Unverified int
	// ChainOK says the audit log's hash chain verifies afterwards
	// (modgate audit verify).
	ChainOK bool
	// Recovery is the time from the fault's removal to the first good
	// answer; negative when the row has nothing to recover from.
	Recovery time.Duration
	// Note is anything else worth saying: what was fixed, what is
	// expected.
	Note string
}

var chaosMatrix struct {
	mu   sync.Mutex
	rows []chaosRow
}

// chaosLong reports whether this is make chaos's long run.
func chaosLong() bool { return os.Getenv("CHAOS") == "long" }

// chaosDuration is d in the short run and long in the long one.
func chaosDuration(d, long time.Duration) time.Duration {
	if chaosLong() {
		return long
	}
	return d
}

// recordChaos adds row to the matrix, and fails t if the row breaks a
// guarantee: something unverified or partial served, or an audit chain
// that no longer verifies.
func recordChaos(t *testing.T, row chaosRow) {
	t.Helper()
	chaosMatrix.mu.Lock()
	chaosMatrix.rows = append(chaosMatrix.rows, row)
	chaosMatrix.mu.Unlock()
	t.Logf("chaos: %s / %s: client saw %s; unverified %d; chain ok %v; recovery %s; %s", row.Group, row.Fault, row.ClientSaw, row.Unverified, row.ChainOK, recoveryText(row.Recovery), row.Note)
	if row.Unverified != 0 {
		t.Errorf("%s: %d unverified or partial responses served", row.Fault, row.Unverified)
	}
	if !row.ChainOK {
		t.Errorf("%s: the audit chain does not verify afterwards", row.Fault)
	}
}

func recoveryText(d time.Duration) string {
	if d < 0 {
		return "n/a"
	}
	return d.Round(time.Millisecond).String()
}

// printChaos writes the matrix as a Markdown table to w, if any test
// recorded a row.
func printChaos(w io.Writer) {
	chaosMatrix.mu.Lock()
	defer chaosMatrix.mu.Unlock()
	if len(chaosMatrix.rows) == 0 {
		return
	}
	cell := func(s string) string { return strings.ReplaceAll(strings.ReplaceAll(s, "|", `\|`), "\n", " ") }
	fmt.Fprintln(w, "| group | fault | what the client saw | unverified or partial served | audit chain | recovery | note |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|")
	for _, r := range chaosMatrix.rows {
		chain := "verifies"
		if !r.ChainOK {
			chain = "BROKEN"
		}
		fmt.Fprintf(w, "| %s | %s | %s | %d | %s | %s | %s |\n", cell(r.Group), cell(r.Fault), cell(r.ClientSaw), r.Unverified, chain, recoveryText(r.Recovery), cell(r.Note))
	}
}

// finishChaos prints the matrix after the tests ran (TestMain calls it):
// to stdout, and to $MODGATE_CHAOS_TABLE if set.
func finishChaos() {
	printChaos(os.Stdout)
	if file := os.Getenv("MODGATE_CHAOS_TABLE"); file != "" {
		var b strings.Builder
		printChaos(&b)
		if b.Len() > 0 {
			length := "short"
			if chaosLong() {
				length = "long"
			}
			head := fmt.Sprintf("# The fault matrix\n\nWritten by the TestChaos tests (%s rows; `make chaos` runs the long ones) on %s: each fault is injected while clients load the gateway. See the README's Reliability section.\n\n",
				length, time.Now().UTC().Format(time.DateOnly))
			if err := os.WriteFile(file, []byte(head+b.String()), 0o644); err != nil {
				fmt.Fprintln(os.Stderr, "chaos table:", err)
			}
		}
	}
}

// chainVerifies runs `modgate audit verify` over g's audit log, rotated
// files included (PATH.N … PATH.1, PATH), and reports whether the chain
// verifies; what it printed is logged.
func chainVerifies(t *testing.T, g *gatewayProc) bool {
	t.Helper()
	out, err := exec.Command(modgateBin, append([]string{"audit", "verify"}, auditFiles(g)...)...).CombinedOutput()
	t.Logf("modgate audit verify: %s", strings.TrimSpace(string(out)))
	return err == nil
}
