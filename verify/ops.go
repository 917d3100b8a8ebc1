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

	"github.com/modgate/modgate/internal/writeback"
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
// access goes through an os.Root, so no name can reach outside it. The
// files are written by a goroutine of their own, off the path of the
// request being verified: records and tiles in order, after WriteCache
// returns (the Client keeps what it verified in memory too, and a cache
// file lost to a crash costs a later fetch); the latest tree head, which
// ops holds in memory, as soon as it changes, the newest one only. A crash
// may so leave an older tree head on disk than the last one verified:
// the next start proves the newer trees consistent with that one, as it
// would any newer tree, so what a rollback of the log could hide is at
// most the trees of the crash's last moments.
type ops struct {
	ctx        context.Context // bounds every fetch; see New
	key        string
	fetch      func(ctx context.Context, path string) ([]byte, error)
	timeout    time.Duration
	log        *slog.Logger
	onSecurity func(msg string)
	onTree     func(signedNote []byte)
	onVerified func(file string, data []byte)
	root       *os.Root

	mu     sync.Mutex        // guards config, dirty and configQueued
	config map[string][]byte // config files, as last written or read
	dirty  map[string][]byte // config files to write (their latest content)
	// configQueued is set while writer has a config write to do.
	configQueued bool

	// writer writes the files behind the calls that ask for them.
	writer *writeback.Queue[fileWrite]
}

// A fileWrite is a record or tile to write under cache/ or, config set,
// the config files changed since they were last written.
type fileWrite struct {
	name   string
	data   []byte
	config bool
}

// maxWrites bounds the files waiting to be written.
const maxWrites = 256

func newOps(ctx context.Context, cfg Config, key string, onSecurity func(string)) (*ops, error) {
	if err := os.MkdirAll(cfg.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	root, err := os.OpenRoot(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	o := &ops{
		ctx:        ctx,
		key:        key,
		fetch:      cfg.Fetch,
		timeout:    cfg.FetchTimeout,
		log:        cfg.Logger,
		onSecurity: onSecurity,
		onTree:     cfg.OnTree,
		onVerified: cfg.OnVerified,
		root:       root,
		config:     map[string][]byte{},
		dirty:      map[string][]byte{},
	}
	o.writer = writeback.New(maxWrites, o.write)
	return o, nil
}

// close writes the files still to be written, then closes the root.
func (o *ops) close() error {
	o.writer.Close()
	return o.root.Close()
}

// write is writer's work: one fileWrite.
func (o *ops) write(w fileWrite) {
	if w.config {
		o.writeConfig()
		return
	}
	if err := o.writeFile(path.Join("cache", w.name), w.data); err != nil {
		o.log.Warn("verify: caching checksum database data", "file", w.name, "err", err)
	}
}

// writeConfig writes the config files changed since it last ran.
func (o *ops) writeConfig() {
	o.mu.Lock()
	dirty := o.dirty
	o.dirty, o.configQueued = map[string][]byte{}, false
	o.mu.Unlock()
	for file, data := range dirty {
		if err := o.writeFile(path.Join("config", file), data); err != nil {
			o.log.Error("verify: saving the checksum database's latest tree", "file", file, "err", err)
		}
	}
}

// ReadRemote fetches a path of the database through the upstreams.
func (o *ops) ReadRemote(p string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(o.ctx, o.timeout)
	defer cancel()
	return o.fetch(ctx, p)
}

// ReadConfig returns the key, or the latest tree head (empty if there is
// none yet: the Client then starts from an empty tree).
func (o *ops) ReadConfig(file string) ([]byte, error) {
	if file == "key" {
		return []byte(o.key), nil
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.configLocked(file)
}

// configLocked returns a config file's content, read from disk the first
// time. o.mu is held.
func (o *ops) configLocked(file string) ([]byte, error) {
	if data, ok := o.config[file]; ok {
		return data, nil
	}
	data, err := o.root.ReadFile(path.Join("config", file))
	if errors.Is(err, fs.ErrNotExist) {
		data, err = nil, nil
	}
	if err != nil {
		return nil, err
	}
	o.config[file] = data
	return data, nil
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

// swapConfig replaces old with new in memory, and has writer write it:
// one config write queued at a time, which writes the newest content.
func (o *ops) swapConfig(file string, old, new []byte) error {
	if file == "key" {
		return errors.New("verify: the checksum database's key is not written")
	}
	o.mu.Lock()
	cur, err := o.configLocked(file)
	if err == nil && !bytes.Equal(cur, old) {
		err = sumdb.ErrWriteConflict
	}
	if err != nil {
		o.mu.Unlock()
		return err
	}
	new = bytes.Clone(new)
	o.config[file], o.dirty[file] = new, new
	queue := !o.configQueued
	o.configQueued = true
	o.mu.Unlock()
	if queue {
		o.writer.Add(fileWrite{config: true}) // may write now: o.mu is not held
	}
	return nil
}

// ReadCache reads a cached record or tile.
func (o *ops) ReadCache(file string) ([]byte, error) {
	return o.root.ReadFile(path.Join("cache", file))
}

// WriteCache stores a record or tile the Client has verified, soon (see
// writeback.Queue.Add), and hands it to OnVerified. Failing to cache
// costs a later fetch, nothing more, so it is only logged.
func (o *ops) WriteCache(file string, data []byte) {
	if o.onVerified != nil {
		o.onVerified(file, data)
	}
	o.writer.Add(fileWrite{name: file, data: data})
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
