// Package verify checks module artifacts before modgate caches or serves
// them.
//
// A public module's go.mod and zip are checked against a checksum database
// with golang.org/x/mod/sumdb's Client: the go.mod's h1: hash, the zip's
// dirhash.HashZip (its files inflated in parallel), and zip.CheckZip's rules (paths, sizes, the module and
// version the files belong to). The Client's state — the latest signed
// tree head, the tiles and records it has fetched — is kept under a
// directory, so verification survives restarts, works from the records and
// tiles it has when the database is briefly unreachable, and detects a
// database that forks or rolls back its log, across restarts too. Such a
// security error is sticky: from then on every public verification fails
// until modgate is restarted and an operator has looked.
//
// A private module (one no public database may be asked about) is checked
// against the ledger instead: trust on first use.
//
// A Verifier is safe for concurrent use.
package verify

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"golang.org/x/mod/module"
	"golang.org/x/mod/sumdb"
	"golang.org/x/mod/sumdb/dirhash"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
	"golang.org/x/mod/zip"

	"github.com/modgate/modgate/ledger"
)

// Result says how an artifact was checked, as audit events record it.
type Result string

// The results.
const (
	Verified Result = "verified" // matched the checksum database
	Ledger   Result = "ledger"   // matched (or was first recorded in) the private ledger
	Skipped  Result = "skipped"  // no checksum database is configured
)

// KnownKeys are the verifier keys of well-known checksum databases, by
// name, as the go command knows them.
var KnownKeys = map[string]string{
	"sum.golang.org": "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8",
}

// A MismatchError is an artifact whose hash is not the one it must have.
type MismatchError struct {
	Module, Version string
	What            string // "go.mod" or "zip"
	Want, Got       string
	Source          string // "checksum database NAME" or "private ledger"
}

func (e *MismatchError) Error() string {
	return fmt.Sprintf("verifying %s@%s: %s hash %s does not match %s from the %s", e.Module, e.Version, e.What, e.Got, e.Want, e.Source)
}

// An InvalidZipError is a zip that breaks golang.org/x/mod/zip's rules for
// the module version it was served as.
type InvalidZipError struct {
	Module, Version string
	Err             error
}

func (e *InvalidZipError) Error() string {
	return fmt.Sprintf("verifying %s@%s: invalid module zip: %v", e.Module, e.Version, e.Err)
}

func (e *InvalidZipError) Unwrap() error { return e.Err }

// ErrSecurity is the error of every public verification after the
// checksum database misbehaved (sumdb.ErrSecurity wraps into it too).
var ErrSecurity = sumdb.ErrSecurity

// Config configures a Verifier.
type Config struct {
	// Key is the checksum database's note verifier key
	// ("name+hash+keydata"), or just the name of a database in KnownKeys.
	// Empty: public artifacts are not checked (Skipped).
	Key string
	// Dir keeps the database's state. Required with Key.
	Dir string
	// Fetch reads a path of the database ("/lookup/…", "/tile/…",
	// "/latest"): the caller turns it into requests to the upstreams'
	// /sumdb/NAME endpoints. Required with Key.
	Fetch func(ctx context.Context, path string) ([]byte, error)
	// FetchTimeout bounds one Fetch. Default 30s.
	FetchTimeout time.Duration
	// Ledger records private module hashes. Without one, private
	// artifacts cannot be verified (an error), as for a tool that checks
	// only public ones.
	Ledger *ledger.Ledger
	// OnTree, if set, is called with each newer signed tree head the
	// Client has verified and stored (the note's text): evidence that the
	// log had that many records by now, which the cooldown keeps.
	OnTree func(signedNote []byte)
	// OnVerified, if set, is called with each record or tile the Client
	// (or Answer) has verified, named as the Client names them
	// ("NAME/lookup/M@V", "NAME/tile/…"), so that the caller may share it
	// with clients: only proven data is handed to it. It runs on the
	// path of the lookup that verified the data: it must be short.
	OnVerified func(file string, data []byte)
	// OnSecurityError is called, once, with the database's own account of
	// its misbehaviour. Default: nothing beyond the error log.
	OnSecurityError func(msg string)
	// Logger receives operational logs. Default slog.Default().
	Logger *slog.Logger
}

// A Verifier checks artifacts. Create it with New.
type Verifier struct {
	ledger *ledger.Ledger
	name   string // database name, "" when none
	ops    *ops   // nil when no database
	// noteVerifier checks the database's signed tree heads.
	noteVerifier note.Verifier

	mu sync.Mutex
	// seen is the largest signed tree known: the Client's latest, or one
	// an Answer proved (see newestTree).
	seen   tlog.Tree
	client *sumdb.Client
	// lookups counts the current client's successful lookups: a Client
	// keeps every record and tile it has read for its whole life, so
	// after clientLookups of them the Verifier starts a new one (which
	// reads its state from disk and its tiles through Fetch again).
	lookups     int
	compromised string // the security message, once there is one
}

// clientLookups bounds the lookups one sumdb.Client serves, and so the
// memory it holds (a variable for tests).
var clientLookups = 4096

// New checks cfg and returns a Verifier. ctx bounds the Verifier's fetches
// for its whole life: the sumdb.Client's operations take no context.
func New(ctx context.Context, cfg Config) (*Verifier, error) {
	v := &Verifier{ledger: cfg.Ledger}
	if cfg.Key == "" {
		return v, nil
	}
	key := cfg.Key
	if k, ok := KnownKeys[key]; ok {
		key = k
	}
	verifier, err := note.NewVerifier(key)
	if err != nil {
		return nil, fmt.Errorf("verify: checksum database key %q: %w (want name+hash+keydata, or a known name)", cfg.Key, err)
	}
	if cfg.Dir == "" || cfg.Fetch == nil {
		return nil, errors.New("verify: Dir and Fetch are required with a checksum database key")
	}
	if cfg.FetchTimeout <= 0 {
		cfg.FetchTimeout = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	v.name, v.noteVerifier = verifier.Name(), verifier
	// Answer proves tiles against the tree heads the Client verifies: the
	// last one it kept on disk, read below, and each newer one.
	onTree := cfg.OnTree
	cfg.OnTree = func(n []byte) {
		v.sawNote(n)
		if onTree != nil {
			onTree(n)
		}
	}
	v.ops, err = newOps(ctx, cfg, key, func(msg string) { v.securityError(msg, cfg) })
	if err != nil {
		return nil, err
	}
	if latest, err := v.ops.ReadConfig(v.name + "/latest"); err == nil && len(latest) > 0 {
		v.sawNote(latest)
	}
	v.client = sumdb.NewClient(v.ops)
	return v, nil
}

// Close releases the Verifier's state directory.
func (v *Verifier) Close() error {
	if v.ops == nil {
		return nil
	}
	return v.ops.close()
}

// Name returns the checksum database's name, "" if there is none.
func (v *Verifier) Name() string { return v.name }

// Mod checks data, the go.mod file of path at version.
func (v *Verifier) Mod(ctx context.Context, path, version string, data []byte, private bool) (Result, error) {
	h, err := dirhash.Hash1([]string{"go.mod"}, func(string) (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	})
	if err != nil {
		return "", fmt.Errorf("verifying %s@%s: hashing go.mod: %w", path, version, err)
	}
	return v.check(ctx, path, version, "/go.mod", h, private)
}

// Zip checks the module zip in file, served as path at version.
func (v *Verifier) Zip(ctx context.Context, path, version, file string, private bool) (Result, error) {
	cf, err := zip.CheckZip(module.Version{Path: path, Version: version}, file)
	if err == nil {
		err = cf.Err()
	}
	if err != nil {
		return "", &InvalidZipError{Module: path, Version: version, Err: err}
	}
	h, err := hashZip(file)
	if err != nil {
		return "", &InvalidZipError{Module: path, Version: version, Err: err}
	}
	return v.check(ctx, path, version, "", h, private)
}

// check compares hash with the database's or the ledger's for path at
// version; suffix is "/go.mod" for a go.mod hash.
func (v *Verifier) check(ctx context.Context, path, version, suffix, hash string, private bool) (Result, error) {
	what := "zip"
	if suffix != "" {
		what = "go.mod"
	}
	if private {
		if v.ledger == nil {
			return "", fmt.Errorf("verifying %s@%s: a private module, and no ledger to check it against", path, version)
		}
		_, err := v.ledger.Check(ctx, path, version+suffix, hash)
		var me *ledger.MismatchError
		if errors.As(err, &me) {
			return "", &MismatchError{Module: path, Version: version, What: what, Want: me.Recorded, Got: hash, Source: "private ledger"}
		}
		if err != nil {
			return "", err
		}
		return Ledger, nil
	}
	if v.client == nil {
		return Skipped, nil
	}
	lines, err := v.lookup(path, version+suffix)
	if err != nil {
		return "", err
	}
	for _, line := range lines {
		f := strings.Fields(line)
		if len(f) != 3 || f[0] != path || f[1] != version+suffix {
			continue
		}
		if f[2] != hash {
			return "", &MismatchError{Module: path, Version: version, What: what, Want: f[2], Got: hash, Source: "checksum database " + v.name}
		}
		return Verified, nil
	}
	return "", fmt.Errorf("verifying %s@%s: checksum database %s has no %s hash for it", path, version, v.name, what)
}

// lookup asks the database through the current Client. The Client
// remembers a failed lookup for its whole life, so after a failure that is
// not a security error the Verifier starts a new Client (it picks up the
// state kept on disk) and the next request asks afresh.
func (v *Verifier) lookup(path, version string) ([]string, error) {
	v.mu.Lock()
	c, bad := v.client, v.compromised
	v.mu.Unlock()
	if bad != "" {
		return nil, fmt.Errorf("verifying %s@%s: checksum database %s misbehaved earlier in this process; refusing until an operator restarts modgate: %w", path, version, v.name, ErrSecurity)
	}
	lines, err := c.Lookup(path, version)
	if err == nil {
		v.mu.Lock()
		if v.client == c {
			if v.lookups++; v.lookups >= clientLookups {
				v.client, v.lookups = sumdb.NewClient(v.ops), 0
			}
		}
		v.mu.Unlock()
		return lines, nil
	}
	// The Client reports its security errors through SecurityError, which
	// marks the Verifier, and returns them without wrapping ErrSecurity.
	v.mu.Lock()
	bad = v.compromised
	if bad == "" && v.client == c {
		v.client, v.lookups = sumdb.NewClient(v.ops), 0
	}
	v.mu.Unlock()
	if bad != "" || errors.Is(err, sumdb.ErrSecurity) {
		return nil, fmt.Errorf("verifying %s@%s: checksum database %s: %v: %w", path, version, v.name, err, ErrSecurity)
	}
	return nil, fmt.Errorf("verifying %s@%s: checksum database %s: %w", path, version, v.name, err)
}

// Lookup returns the checksum database's lines for path at version (its
// zip's and its go.mod's hashes, in go.sum's form), verified against the
// signed tree this Verifier trusts. It fails if there is no database (Key
// empty).
func (v *Verifier) Lookup(path, version string) ([]string, error) {
	if v.client == nil {
		return nil, errors.New("verify: no checksum database")
	}
	return v.lookup(path, version)
}

// securityError records the database's misbehaviour, once.
func (v *Verifier) securityError(msg string, cfg Config) {
	v.mu.Lock()
	first := v.compromised == ""
	if first {
		v.compromised = msg
	}
	v.mu.Unlock()
	cfg.Logger.Error("SECURITY ERROR: the checksum database misbehaved; every public module verification now fails", "sumdb", v.name, "detail", msg)
	if first && cfg.OnSecurityError != nil {
		cfg.OnSecurityError(msg)
	}
}
