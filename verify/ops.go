package verify

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"strings"
	"sync"
	"time"

	"golang.org/x/mod/sumdb"
)

// ops is the sumdb.ClientOps of a Verifier: remote reads through Fetch,
// and the Client's configuration (its latest tree head) and cache (tiles,
// records) in files under the state directory:
//
//	config/NAME/latest       the latest signed tree head seen
//	cache/NAME/lookup/…      records fetched
//	cache/NAME/tile/…        tiles fetched
//
// Every file is written through a synced temporary file and a rename; all
// access goes through an os.Root, so no name can reach outside it.
type ops struct {
	ctx        context.Context // bounds every fetch; see New
	key        string
	fetch      func(ctx context.Context, path string) ([]byte, error)
	timeout    time.Duration
	log        *slog.Logger
	onSecurity func(msg string)
	onTree     func(signedNote []byte)
	root       *os.Root

	mu sync.Mutex // serializes WriteConfig's compare-and-swap
}

func newOps(ctx context.Context, cfg Config, key string, onSecurity func(string)) (*ops, error) {
	if err := os.MkdirAll(cfg.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	root, err := os.OpenRoot(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	return &ops{
		ctx:        ctx,
		key:        key,
		fetch:      cfg.Fetch,
		timeout:    cfg.FetchTimeout,
		log:        cfg.Logger,
		onSecurity: onSecurity,
		onTree:     cfg.OnTree,
		root:       root,
	}, nil
}

func (o *ops) close() error { return o.root.Close() }

// ReadRemote fetches a path of the database through the upstreams.
func (o *ops) ReadRemote(p string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(o.ctx, o.timeout)
	defer cancel()
	return o.fetch(ctx, p)
}

// ReadConfig returns the key, or the stored latest tree head (empty if
// there is none yet: the Client then starts from an empty tree).
func (o *ops) ReadConfig(file string) ([]byte, error) {
	if file == "key" {
		return []byte(o.key), nil
	}
	data, err := o.root.ReadFile(path.Join("config", file))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return data, err
}

// WriteConfig replaces old with new, atomically, or reports a conflict.
func (o *ops) WriteConfig(file string, old, new []byte) error {
	if err := o.swapConfig(file, old, new); err != nil {
		return err
	}
	// The Client writes NAME/latest only with a signed tree head it has
	// verified (signature, and consistency with the one before).
	if o.onTree != nil && strings.HasSuffix(file, "/latest") {
		o.onTree(new)
	}
	return nil
}

func (o *ops) swapConfig(file string, old, new []byte) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	cur, err := o.ReadConfig(file)
	if err != nil {
		return err
	}
	if !bytes.Equal(cur, old) {
		return sumdb.ErrWriteConflict
	}
	return o.writeFile(path.Join("config", file), new)
}

// ReadCache reads a cached record or tile.
func (o *ops) ReadCache(file string) ([]byte, error) {
	return o.root.ReadFile(path.Join("cache", file))
}

// WriteCache stores a record or tile the Client has verified. Failing to
// cache costs a later fetch, nothing more, so it is only logged.
func (o *ops) WriteCache(file string, data []byte) {
	if err := o.writeFile(path.Join("cache", file), data); err != nil {
		o.log.Warn("verify: caching checksum database data", "file", file, "err", err)
	}
}

// Log logs the Client's chatter.
func (o *ops) Log(msg string) { o.log.Debug("verify: sumdb", "msg", strings.TrimSpace(msg)) }

// SecurityError reports a misbehaving database.
func (o *ops) SecurityError(msg string) { o.onSecurity(strings.TrimSpace(msg)) }

// writeFile writes name through a synced temporary file and a rename.
func (o *ops) writeFile(name string, data []byte) error {
	dir := path.Dir(name)
	if err := o.root.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	tmp := fmt.Sprintf("%s.tmp-%d", name, time.Now().UnixNano())
	f, err := o.root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = o.root.Rename(tmp, name)
	}
	if err != nil {
		o.root.Remove(tmp)
		return fmt.Errorf("verify: writing %s: %w", name, err)
	}
	if d, err := o.root.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

var _ sumdb.ClientOps = (*ops)(nil)
