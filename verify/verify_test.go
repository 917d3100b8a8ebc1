package verify

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/mod/module"
	"golang.org/x/mod/sumdb"
	"golang.org/x/mod/sumdb/note"

	"github.com/modgate/modgate/integration/testproxy"
	"github.com/modgate/modgate/ledger"
)

// db is an in-process checksum database for the fixtures.
type db struct {
	handler http.Handler
	down    atomic.Bool // Fetch fails while set
	fetches atomic.Int32
}

func newDB(t testing.TB, skey string, sums map[module.Version]string) *db {
	t.Helper()
	lookup := func(path, version string) ([]byte, error) {
		if s, ok := sums[module.Version{Path: path, Version: version}]; ok {
			return []byte(s), nil
		}
		return nil, &fs.PathError{Op: "lookup", Path: path + "@" + version, Err: fs.ErrNotExist}
	}
	return &db{handler: sumdb.NewServer(sumdb.NewTestServer(skey, lookup))}
}

func (d *db) fetch(ctx context.Context, p string) ([]byte, error) {
	d.fetches.Add(1)
	if d.down.Load() {
		return nil, fmt.Errorf("GET %s: connection refused", p)
	}
	rec := httptest.NewRecorder()
	d.handler.ServeHTTP(rec, httptest.NewRequestWithContext(ctx, "GET", p, nil))
	if rec.Code != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %d", p, rec.Code)
	}
	return rec.Body.Bytes(), nil
}

// fixtures returns the fixture modules and the honest go.sum lines.
func fixtures(t testing.TB) (map[string]*testproxy.Module, map[module.Version]string) {
	t.Helper()
	mods := map[string]*testproxy.Module{}
	sums := map[module.Version]string{}
	for _, m := range testproxy.Fixtures(t) {
		mods[m.Path+"@"+m.Version] = m
		s, err := m.GoSum()
		if err != nil {
			t.Fatal(err)
		}
		sums[module.Version{Path: m.Path, Version: m.Version}] = s
	}
	return mods, sums
}

func newKey(t testing.TB) (skey, vkey string) {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, "sum.verify.test")
	if err != nil {
		t.Fatal(err)
	}
	return skey, vkey
}

type opts struct {
	key, dir string
	fetch    func(context.Context, string) ([]byte, error)
	onSec    func(string)
	// onVerified is Config.OnVerified.
	onVerified func(file string, data []byte)
}

func newVerifier(t testing.TB, o opts) *Verifier {
	t.Helper()
	led, err := ledger.Open(filepath.Join(t.TempDir(), "ledger"), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { led.Close() })
	v, err := New(t.Context(), Config{Key: o.key, Dir: o.dir, Fetch: o.fetch, Ledger: led, OnSecurityError: o.onSec, OnVerified: o.onVerified, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	return v
}

func zipFile(t testing.TB, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "m.zip")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestVerify(t *testing.T) {
	mods, sums := fixtures(t)
	skey, vkey := newKey(t)
	d := newDB(t, skey, sums)
	v := newVerifier(t, opts{key: vkey, dir: t.TempDir(), fetch: d.fetch})
	a, a11, b := mods["example.com/a@v1.0.0"], mods["example.com/a@v1.1.0"], mods["example.com/b@v1.0.0"]

	tests := []struct {
		name     string
		run      func() (Result, error)
		want     Result
		mismatch string // What of the *MismatchError expected
		invalid  bool   // an *InvalidZipError expected
		errText  string
	}{
		{name: "go.mod", run: func() (Result, error) { return v.Mod(context.Background(), a.Path, a.Version, a.Mod, false) }, want: Verified},
		{name: "zip", run: func() (Result, error) {
			return v.Zip(context.Background(), a.Path, a.Version, zipFile(t, a.Zip), false)
		}, want: Verified},
		{name: "upper-case path", run: func() (Result, error) {
			m := mods["example.com/Upper/m@v1.0.0"]
			return v.Zip(context.Background(), m.Path, m.Version, zipFile(t, m.Zip), false)
		}, want: Verified},
		{name: "tampered go.mod", run: func() (Result, error) {
			return v.Mod(context.Background(), a.Path, a.Version, append(a.Mod, "require example.com/evil v1.0.0\n"...), false)
		}, mismatch: "go.mod"},
		{name: "go.mod of another module", run: func() (Result, error) { return v.Mod(context.Background(), a.Path, a.Version, b.Mod, false) }, mismatch: "go.mod"},
		{name: "zip of another version", run: func() (Result, error) {
			return v.Zip(context.Background(), a.Path, a.Version, zipFile(t, a11.Zip), false)
		}, invalid: true},
		{name: "not a zip", run: func() (Result, error) {
			return v.Zip(context.Background(), a.Path, a.Version, zipFile(t, []byte("PK no")), false)
		}, invalid: true},
		{name: "unknown to the database", run: func() (Result, error) { return v.Mod(context.Background(), "example.com/nope", "v1.0.0", a.Mod, false) }, errText: "example.com/nope"},
	}
	for _, tt := range tests {
		got, err := tt.run()
		var me *MismatchError
		var ze *InvalidZipError
		switch {
		case tt.mismatch != "":
			if !errors.As(err, &me) || me.What != tt.mismatch || !strings.Contains(me.Source, "checksum database") {
				t.Errorf("%s: = %v, %v; want a %s mismatch", tt.name, got, err, tt.mismatch)
			}
		case tt.invalid:
			if !errors.As(err, &ze) {
				t.Errorf("%s: = %v, %v; want an invalid zip", tt.name, got, err)
			}
		case tt.errText != "":
			if err == nil || !strings.Contains(err.Error(), tt.errText) || errors.As(err, &me) {
				t.Errorf("%s: = %v, %v; want an error naming %s", tt.name, got, err, tt.errText)
			}
		default:
			if err != nil || got != tt.want {
				t.Errorf("%s: = %v, %v; want %v", tt.name, got, err, tt.want)
			}
		}
	}
}

func TestPrivateAndSkipped(t *testing.T) {
	mods, _ := fixtures(t)
	p := mods["corp.example/private@v1.0.0"]
	v := newVerifier(t, opts{}) // no database
	if got, err := v.Mod(context.Background(), p.Path, p.Version, p.Mod, true); got != Ledger || err != nil {
		t.Errorf("private go.mod, first use = %v, %v; want ledger", got, err)
	}
	if got, err := v.Mod(context.Background(), p.Path, p.Version, p.Mod, true); got != Ledger || err != nil {
		t.Errorf("private go.mod, again = %v, %v; want ledger", got, err)
	}
	var me *MismatchError
	if _, err := v.Mod(context.Background(), p.Path, p.Version, append(p.Mod, '\n'), true); !errors.As(err, &me) || me.Source != "private ledger" {
		t.Errorf("private go.mod, changed = %v; want a mismatch against the private ledger", err)
	}
	a := mods["example.com/a@v1.0.0"]
	if got, err := v.Mod(context.Background(), a.Path, a.Version, a.Mod, false); got != Skipped || err != nil {
		t.Errorf("public go.mod without a database = %v, %v; want skipped", got, err)
	}
}

func TestDatabaseUnreachable(t *testing.T) {
	mods, sums := fixtures(t)
	skey, vkey := newKey(t)
	d := newDB(t, skey, sums)
	dir := t.TempDir()
	v := newVerifier(t, opts{key: vkey, dir: dir, fetch: d.fetch})
	a, b := mods["example.com/a@v1.0.0"], mods["example.com/b@v1.0.0"]
	if _, err := v.Mod(context.Background(), a.Path, a.Version, a.Mod, false); err != nil {
		t.Fatal(err)
	}

	d.down.Store(true)
	// What was fetched before is verified from what the Verifier kept.
	if got, err := v.Zip(context.Background(), a.Path, a.Version, zipFile(t, a.Zip), false); got != Verified || err != nil {
		t.Errorf("with the database down, a known record = %v, %v; want verified", got, err)
	}
	// Something new cannot be verified, and is refused.
	if _, err := v.Mod(context.Background(), b.Path, b.Version, b.Mod, false); err == nil {
		t.Error("with the database down, an unknown record verified")
	}
	// The failure is not remembered: once the database is back, it verifies.
	d.down.Store(false)
	if got, err := v.Mod(context.Background(), b.Path, b.Version, b.Mod, false); got != Verified || err != nil {
		t.Errorf("database back: %v, %v; want verified", got, err)
	}

	// A restarted Verifier on the same directory needs no database for
	// what it has verified.
	v.Close()
	d.down.Store(true)
	v2 := newVerifier(t, opts{key: vkey, dir: dir, fetch: d.fetch})
	for _, m := range []*testproxy.Module{a, b} {
		if got, err := v2.Mod(context.Background(), m.Path, m.Version, m.Mod, false); got != Verified || err != nil {
			t.Errorf("restarted, database down, %s@%s = %v, %v; want verified", m.Path, m.Version, got, err)
		}
	}
}

func TestForkAcrossRestart(t *testing.T) {
	mods, sums := fixtures(t)
	skey, vkey := newKey(t)
	dir := t.TempDir()
	a, b, c := mods["example.com/a@v1.0.0"], mods["example.com/b@v1.0.0"], mods["example.com/c/v2@v2.0.0"]

	honest := newDB(t, skey, sums)
	v := newVerifier(t, opts{key: vkey, dir: dir, fetch: honest.fetch})
	if _, err := v.Mod(context.Background(), a.Path, a.Version, a.Mod, false); err != nil {
		t.Fatal(err)
	}
	v.Close()

	// Same key, another history: the database forked.
	forkedSums := map[module.Version]string{}
	for k, s := range sums {
		forkedSums[k] = s
	}
	forkedSums[module.Version{Path: a.Path, Version: a.Version}] = "example.com/a v1.0.0 h1:" + strings.Repeat("A", 43) + "=\nexample.com/a v1.0.0/go.mod h1:" + strings.Repeat("B", 43) + "=\n"
	forked := newDB(t, skey, forkedSums)
	var mu sync.Mutex
	var alarms []string
	v2 := newVerifier(t, opts{key: vkey, dir: dir, fetch: forked.fetch, onSec: func(msg string) {
		mu.Lock()
		alarms = append(alarms, msg)
		mu.Unlock()
	}})
	if _, err := v2.Mod(context.Background(), b.Path, b.Version, b.Mod, false); !errors.Is(err, ErrSecurity) {
		t.Errorf("verifying through a forked database = %v, want ErrSecurity", err)
	}
	if _, err := v2.Mod(context.Background(), c.Path, c.Version, c.Mod, false); !errors.Is(err, ErrSecurity) {
		t.Errorf("verifying after a security error = %v, want ErrSecurity (fail closed)", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(alarms) != 1 {
		t.Errorf("OnSecurityError called %d times, want once", len(alarms))
	}
}

func TestNewConfig(t *testing.T) {
	led, err := ledger.Open(filepath.Join(t.TempDir(), "ledger"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer led.Close()
	fetch := func(context.Context, string) ([]byte, error) { return nil, errors.New("offline") }
	v, err := New(t.Context(), Config{Key: "sum.golang.org", Dir: t.TempDir(), Fetch: fetch, Ledger: led})
	if err != nil || v.Name() != "sum.golang.org" {
		t.Errorf("New with a known database name = %v, %v", v, err)
	}
	v.Close()
	for _, bad := range []Config{
		{Key: "sum.unknown.test", Dir: t.TempDir(), Fetch: fetch, Ledger: led},
		{Key: KnownKeys["sum.golang.org"], Ledger: led},
	} {
		if v, err := New(t.Context(), bad); err == nil {
			v.Close()
			t.Errorf("New(%+v) = nil error", bad)
		}
	}
	// Without a ledger, private artifacts are never accepted.
	v, err = New(t.Context(), Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if _, err := v.Mod(t.Context(), "corp.example/m", "v1.0.0", []byte("module corp.example/m\n"), true); err == nil {
		t.Errorf("a private go.mod without a ledger: nil error")
	}
	if _, err := v.Lookup("example.com/m", "v1.0.0"); err == nil {
		t.Errorf("Lookup without a database: nil error")
	}
}

func TestWriteConfigConflict(t *testing.T) {
	o, err := newOps(t.Context(), Config{Dir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)}, "k", func(string) {})
	if err != nil {
		t.Fatal(err)
	}
	defer o.close()
	if err := o.WriteConfig("db/latest", nil, []byte("one")); err != nil {
		t.Fatal(err)
	}
	if err := o.WriteConfig("db/latest", []byte("stale"), []byte("two")); !errors.Is(err, sumdb.ErrWriteConflict) {
		t.Errorf("WriteConfig with a stale old value = %v, want ErrWriteConflict", err)
	}
	if got, _ := o.ReadConfig("db/latest"); string(got) != "one" {
		t.Errorf("ReadConfig = %q, want %q", got, "one")
	}
	if _, err := o.ReadCache("../../etc/passwd"); err == nil {
		t.Error("ReadCache escaped the state directory")
	}
}

// TestConfigWrittenSoon checks that the latest tree head, held in
// memory, reaches the disk without waiting for close, the newest one
// last, and that the next ops over the directory starts from it.
func TestConfigWrittenSoon(t *testing.T) {
	dir := t.TempDir()
	o, err := newOps(t.Context(), Config{Dir: dir, Logger: slog.New(slog.DiscardHandler)}, "k", func(string) {})
	if err != nil {
		t.Fatal(err)
	}
	prev := []byte(nil)
	for _, v := range []string{"one", "two", "three"} {
		if err := o.WriteConfig("db/latest", prev, []byte(v)); err != nil {
			t.Fatal(err)
		}
		prev = []byte(v)
	}
	file := filepath.Join(dir, "config", "db", "latest")
	deadline := time.Now().Add(5 * time.Second)
	for {
		data, _ := os.ReadFile(file)
		if string(data) == "three" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s holds %q 5s after the last WriteConfig, want %q", file, data, "three")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := o.WriteConfig("db/latest", []byte("three"), []byte("four")); err != nil {
		t.Fatal(err)
	}
	o.close()
	o, err = newOps(t.Context(), Config{Dir: dir, Logger: slog.New(slog.DiscardHandler)}, "k", func(string) {})
	if err != nil {
		t.Fatal(err)
	}
	defer o.close()
	if got, err := o.ReadConfig("db/latest"); string(got) != "four" || err != nil {
		t.Errorf("after a restart, ReadConfig = %q, %v; want %q, written by close", got, err, "four")
	}
}

// OnTree hears each verified signed tree head the Client stores.
func TestOnTree(t *testing.T) {
	mods, sums := fixtures(t)
	skey, vkey := newKey(t)
	d := newDB(t, skey, sums)
	led, err := ledger.Open(filepath.Join(t.TempDir(), "ledger"), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { led.Close() })
	var trees [][]byte
	v, err := New(t.Context(), Config{Key: vkey, Dir: t.TempDir(), Fetch: d.fetch, Ledger: led, Logger: slog.New(slog.DiscardHandler),
		OnTree: func(n []byte) { trees = append(trees, n) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	a := mods["example.com/a@v1.0.0"]
	if _, err := v.Mod(context.Background(), a.Path, a.Version, a.Mod, false); err != nil {
		t.Fatal(err)
	}
	if len(trees) != 1 {
		t.Fatalf("OnTree called %d times, want once", len(trees))
	}
	verifier, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := note.Open(trees[0], note.VerifierList(verifier)); err != nil {
		t.Errorf("OnTree got %q, which does not open as a signed note of the database: %v", trees[0], err)
	}
}

// TestClientRenewed: after clientLookups lookups the Verifier starts a new
// sumdb.Client, so the records and tiles one Client keeps in memory stay
// bounded; lookups keep verifying across the change.
func TestClientRenewed(t *testing.T) {
	defer func(n int) { clientLookups = n }(clientLookups)
	clientLookups = 3
	mods, sums := fixtures(t)
	skey, vkey := newKey(t)
	d := newDB(t, skey, sums)
	v := newVerifier(t, opts{key: vkey, dir: t.TempDir(), fetch: d.fetch})
	a := mods["example.com/a@v1.0.0"]
	seen := map[*sumdb.Client]bool{}
	for i := range 7 {
		v.mu.Lock()
		seen[v.client] = true
		v.mu.Unlock()
		if got, err := v.Mod(t.Context(), a.Path, a.Version, a.Mod, false); err != nil || got != Verified {
			t.Fatalf("lookup %d: %v, %v; want verified", i, got, err)
		}
	}
	if len(seen) != 3 {
		t.Errorf("%d clients served 7 lookups with clientLookups 3, want 3", len(seen))
	}
}
