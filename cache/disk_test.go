package cache

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestEviction(t *testing.T) {
	const limit = 64 << 10
	c := openCache(t, Config{DiskBytes: limit})
	key := func(i int) string { return fmt.Sprintf("/example.com/m/@v/v1.0.%d.zip", i) }
	body := func(i int) []byte { return testBody(key(i), 10<<10) }
	checkBound := func() {
		t.Helper()
		if s := c.Stats().Disk; s.Bytes > limit || s.Limit != limit {
			t.Fatalf("disk stats %+v, want at most %d bytes", s, limit)
		}
	}
	for i := range 6 {
		put(t, c, key(i), Release, body(i))
		checkBound()
	}
	if s := c.Stats().Disk; s.Entries != 6 || s.Evictions != 0 {
		t.Fatalf("after 6 stores, disk stats %+v, want 6 entries, no evictions", s)
	}
	// Use 0 and 1: 2 and 3 are now the least recently used.
	mustGet(t, c, key(0), body(0))
	mustGet(t, c, key(1), body(1))
	put(t, c, key(6), Release, body(6))
	checkBound()
	put(t, c, key(7), Release, body(7))
	checkBound()

	c.Sync() // entry files are written after the store returns
	evicted := map[int]bool{2: true, 3: true}
	for i := range 8 {
		p, b := c.disk.entryPath(key(i)), c.disk.blobPath(sha256.Sum256(body(i)))
		if evicted[i] {
			wantAbsent(t, c, key(i))
			if exists(t, p) || exists(t, b) {
				t.Errorf("files of evicted %q remain (entry %v, blob %v)", key(i), exists(t, p), exists(t, b))
			}
			continue
		}
		if !exists(t, p) || !exists(t, b) {
			t.Errorf("files of %q missing (entry %v, blob %v)", key(i), exists(t, p), exists(t, b))
		}
		mustGet(t, c, key(i), body(i))
	}
	if s := c.Stats().Disk; s.Entries != 6 || s.Blobs != 6 || s.Evictions != 2 {
		t.Errorf("disk stats %+v, want 6 entries, 6 blobs, 2 evictions", s)
	}

	// Many more: the bound holds and the newest survive.
	for i := 8; i < 20; i++ {
		put(t, c, key(i), Release, body(i))
		checkBound()
	}
	for i := 14; i < 20; i++ {
		mustGet(t, c, key(i), body(i))
	}
	c.Sync()
	if got := len(dirFiles(t, c.disk.dir, "blobs")); got != c.Stats().Disk.Blobs {
		t.Errorf("%d blob files, stats say %d", got, c.Stats().Disk.Blobs)
	}
	if got := len(dirFiles(t, c.disk.dir, "entries")); got != c.Stats().Disk.Entries {
		t.Errorf("%d entry files, stats say %d", got, c.Stats().Disk.Entries)
	}
}

func TestDedup(t *testing.T) {
	for _, size := range []int{100, 5 * hotLimit} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			c := openCache(t, Config{})
			const a, b = "/example.com/a/@v/v1.0.0.mod", "/example.com/b/@v/v1.0.0.mod"
			body := testBody("shared", size)
			put(t, c, a, Release, body)
			put(t, c, b, Release, body)
			s := c.Stats().Disk
			if s.Entries != 2 || s.Blobs != 1 {
				t.Errorf("disk stats %+v, want 2 entries sharing 1 blob", s)
			}
			blob := c.disk.blobPath(sha256.Sum256(body))
			if n := c.Purge(func(k string) bool { return k == a }); n != 1 {
				t.Errorf("Purge(%q) = %d, want 1", a, n)
			}
			wantAbsent(t, c, a)
			mustGet(t, c, b, body)
			if !exists(t, blob) {
				t.Fatalf("shared blob removed while %q still uses it", b)
			}
			if s := c.Stats().Disk; s.Entries != 1 || s.Blobs != 1 {
				t.Errorf("disk stats after one purge %+v, want 1 entry, 1 blob", s)
			}
			c.Purge(func(k string) bool { return k == b })
			wantAbsent(t, c, b)
			if exists(t, blob) {
				t.Errorf("blob remains after both its entries were purged")
			}
			if s := c.Stats().Disk; s != (DiskStats{Limit: DefaultDiskBytes}) {
				t.Errorf("disk stats after both purges %+v, want empty", s)
			}
		})
	}
}

// TestRestart stores entries, closes the cache and opens it again.
func TestRestart(t *testing.T) {
	dir := t.TempDir()
	clock := newFakeClock()
	c := openCache(t, Config{Dir: dir, Now: clock.Now})
	type item struct {
		key     string
		class   Class
		size    int
		durable bool
	}
	items := []item{
		{"/example.com/a/@v/v1.0.0.info", Release, 60, true},
		{"/example.com/a/@v/v1.0.0.zip", Release, 5 * hotLimit, true},
		{"/example.com/a/@v/v1.1.0-rc.1.mod", Prerelease, 300, true},
		{"/example.com/a/@v/v0.0.0-20240101000000-abcdefabcdef.zip", Pseudo, 3 * hotLimit, true},
		{"/sumdb/sum.x.test/lookup/example.com/a@v1.0.0", SumDB, 200, true},
		{"/sumdb/sum.x.test/tile/8/0/1", SumDB, 8 * 32, true},
		{"/example.com/a/@v/list", Query, 30, false},
		{"/example.com/a/@v/v9.0.0.info", Negative, 10, false},
		{"/sumdb/sum.x.test/latest", SumDBLatest, 100, false},
	}
	metas := map[string]Meta{}
	for _, it := range items {
		metas[it.key] = put(t, c, it.key, it.class, testBody(it.key, it.size))
		clock.Advance(time.Second)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	c = openCache(t, Config{Dir: dir, Now: clock.Now})
	for _, it := range items {
		if !it.durable {
			wantAbsent(t, c, it.key) // only ever in memory
			continue
		}
		e := mustGet(t, c, it.key, testBody(it.key, it.size))
		m := metas[it.key]
		if e.Tier != Disk || !e.Fresh {
			t.Errorf("Get(%q) after restart: tier %s fresh %v, want disk, fresh", it.key, e.Tier, e.Fresh)
		}
		if e.Key != m.Key || e.Class != m.Class || e.Status != m.Status || e.ContentType != m.ContentType ||
			e.Size != m.Size || e.SHA256 != m.SHA256 || !e.Stored.Equal(m.Stored) {
			t.Errorf("Get(%q) after restart: meta %+v, want %+v", it.key, e.Meta, m)
		}
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	// The LRU order is rebuilt from the entry files' times: give the large
	// entries distinct ones, oldest first, and reopen with room for only
	// the two newest of them.
	large := []string{items[3].key, items[1].key, items[0].key}
	base := time.Now().Add(-time.Hour)
	for _, it := range items {
		if it.durable {
			if err := os.Chtimes(entryPathIn(dir, it.key), base, base); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i, k := range large {
		tm := base.Add(time.Duration(i+1) * time.Minute)
		if err := os.Chtimes(entryPathIn(dir, k), tm, tm); err != nil {
			t.Fatal(err)
		}
	}
	// items[0] (60 bytes) + items[1] (5 KiB) + two entry files fit; adding
	// items[3] (3 KiB) does not.
	c = openCache(t, Config{Dir: dir, Now: clock.Now, DiskBytes: 5*hotLimit + 60 + 1000})
	wantAbsent(t, c, items[3].key)
	mustGet(t, c, items[1].key, testBody(items[1].key, items[1].size))
	mustGet(t, c, items[0].key, testBody(items[0].key, items[0].size))
	if s := c.Stats().Disk; s.Entries != 2 || s.Bytes > s.Limit || s.Evictions == 0 {
		t.Errorf("disk stats after a restart with a smaller limit %+v, want 2 entries within the limit", s)
	}
}

// entryPathIn is disk.entryPath for the directory dir.
func entryPathIn(dir, key string) string {
	d := &disk{dir: dir}
	return d.entryPath(key)
}

func blobPathIn(dir string, body []byte) string {
	d := &disk{dir: dir}
	return d.blobPath(sha256.Sum256(body))
}

// TestRecovery damages the disk tier between two runs.
func TestRecovery(t *testing.T) {
	dir := t.TempDir()
	c := openCache(t, Config{Dir: dir})
	keys := map[string]int{
		"/corrupt/@v/v1.0.0.zip":   3 * hotLimit,
		"/noblob/@v/v1.0.0.zip":    3 * hotLimit,
		"/truncated/@v/v1.0.0.zip": 3 * hotLimit,
		"/smallbad/@v/v1.0.0.mod":  100,
		"/good/@v/v1.0.0.zip":      3 * hotLimit,
		"/good/@v/v1.0.0.mod":      100,
	}
	for k, n := range keys {
		put(t, c, k, Release, testBody(k, n))
	}
	c.Close()

	write := func(p string, data []byte) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	write(entryPathIn(dir, "/corrupt/@v/v1.0.0.zip"), []byte("{not json"))
	if err := os.Remove(blobPathIn(dir, testBody("/noblob/@v/v1.0.0.zip", 3*hotLimit))); err != nil {
		t.Fatal(err)
	}
	truncated := blobPathIn(dir, testBody("/truncated/@v/v1.0.0.zip", 3*hotLimit))
	if err := os.Truncate(truncated, hotLimit); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(blobPathIn(dir, testBody("/smallbad/@v/v1.0.0.mod", 100)), 0); err != nil {
		t.Fatal(err)
	}
	write(filepath.Join(dir, "tmp", "blob-12345"), []byte("half a body"))
	orphan := blobPathIn(dir, []byte("orphan"))
	write(orphan, []byte("orphan"))
	junkBlob := filepath.Join(dir, "blobs", "zz", "not-a-sum")
	write(junkBlob, []byte("junk"))
	misplaced := filepath.Join(dir, "entries", "00", strings.Repeat("0", 64))
	good, err := os.ReadFile(entryPathIn(dir, "/good/@v/v1.0.0.mod"))
	if err != nil {
		t.Fatal(err)
	}
	write(misplaced, good) // a valid entry under the wrong name

	c = openCache(t, Config{Dir: dir})
	for k, n := range keys {
		if strings.HasPrefix(k, "/good/") {
			mustGet(t, c, k, testBody(k, n))
			continue
		}
		wantAbsent(t, c, k)
		if exists(t, entryPathIn(dir, k)) {
			t.Errorf("entry file of damaged %q remains", k)
		}
	}
	if files := dirFiles(t, dir, "tmp"); len(files) != 0 {
		t.Errorf("tmp holds %v after Open, want nothing", files)
	}
	for _, p := range []string{orphan, junkBlob, truncated, misplaced, blobPathIn(dir, testBody("/corrupt/@v/v1.0.0.zip", 3*hotLimit))} {
		if exists(t, p) {
			t.Errorf("%s remains after Open", p)
		}
	}
	if s := c.Stats().Disk; s.Entries != 2 || s.Blobs != 2 {
		t.Errorf("disk stats %+v, want the 2 good entries", s)
	}
	if got := len(dirFiles(t, dir, "blobs")); got != 2 {
		t.Errorf("%d blob files, want 2", got)
	}
}

func TestLock(t *testing.T) {
	dir := t.TempDir()
	c := openCache(t, Config{Dir: dir})
	c2, err := Open(Config{Dir: dir, HotBytes: testHotBytes})
	if err == nil {
		c2.Close()
		t.Fatalf("second Open(%q) succeeded while the first is open", dir)
	}
	if !strings.Contains(err.Error(), "in use") {
		t.Errorf("second Open(%q) = %v, want an error mentioning \"in use\"", dir, err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	openCache(t, Config{Dir: dir})
}

// The crash tests run this test binary again as a helper process, which
// stores entries until it is killed.
const (
	helperEnv    = "MODGATE_CACHE_HELPER"
	helperDirEnv = "MODGATE_CACHE_HELPER_DIR"
	loopMax      = 5000
)

func crashBody(key string) []byte {
	if strings.HasPrefix(key, "/loop/") {
		var i int
		fmt.Sscanf(key, "/loop/%d", &i)
		n := 50 + i%700
		if i%7 == 3 {
			n = 2*hotLimit + i // spills to disk
		}
		return testBody(key, n)
	}
	return testBody(key, 256<<10)
}

func loopKey(i int) string { return fmt.Sprintf("/loop/%05d", i) }

func TestHelperProcess(t *testing.T) {
	mode := os.Getenv(helperEnv)
	if mode == "" {
		t.Skip("helper process for the crash tests")
	}
	if err := runHelper(mode, os.Getenv(helperDirEnv)); err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(2)
	}
	os.Exit(3) // not killed in time
}

func runHelper(mode, dir string) error {
	c, err := Open(Config{Dir: dir, HotBytes: testHotBytes})
	if err != nil {
		return err
	}
	storeAll := func(key string) error {
		e, err := store(c, key, Release, crashBody(key))
		if err != nil {
			return err
		}
		return e.Close()
	}
	switch mode {
	case "partial":
		if err := storeAll("/committed"); err != nil {
			return err
		}
		w := c.NewWriter("/partial", Release, 200, "application/zip")
		body := crashBody("/partial")
		if _, err := w.Write(body[:len(body)/2]); err != nil {
			return err
		}
		c.Sync() // "/committed" is persisted
		fmt.Println("ready")
		time.Sleep(30 * time.Second)
	case "loop":
		for i := range loopMax {
			if err := storeAll(loopKey(i)); err != nil {
				return err
			}
			if i == 9 {
				c.Sync() // the first 10 are persisted; the others may not be
				fmt.Println("ready")
			}
		}
		time.Sleep(30 * time.Second)
	default:
		return fmt.Errorf("unknown mode %q", mode)
	}
	return nil
}

// killHelper runs the helper in mode on dir, waits for it to say it is
// ready, waits delay more, and kills it with SIGKILL.
func killHelper(t *testing.T, mode, dir string, delay time.Duration) {
	t.Helper()
	if testing.Short() {
		t.Skip("crash test in -short mode")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), helperEnv+"="+mode, helperDirEnv+"="+dir)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting helper: %v", err)
	}
	ready := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(out).ReadString('\n')
		if err == nil && line != "ready\n" {
			err = fmt.Errorf("helper said %q", line)
		}
		ready <- err
	}()
	select {
	case err = <-ready:
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("waiting for the helper: %v\nstderr:\n%s", err, stderr.String())
	}
	time.Sleep(delay)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("killing helper: %v", err)
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("helper exited with %v, want killed\nstderr:\n%s", err, stderr.String())
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("helper exited with %v, want killed by SIGKILL\nstderr:\n%s", err, stderr.String())
	}
}

func TestCrashMidWrite(t *testing.T) {
	dir := t.TempDir()
	killHelper(t, "partial", dir, 0)
	if files := dirFiles(t, dir, "tmp"); len(files) == 0 {
		t.Errorf("no temporary file left by the killed writer; the test does not test a partial write")
	}

	c := openCache(t, Config{Dir: dir})
	mustGet(t, c, "/committed", crashBody("/committed"))
	wantAbsent(t, c, "/partial")
	body := crashBody("/partial")
	for _, p := range []string{entryPathIn(dir, "/partial"), blobPathIn(dir, body), blobPathIn(dir, body[:len(body)/2])} {
		if exists(t, p) {
			t.Errorf("%s exists after the crash", p)
		}
	}
	if files := dirFiles(t, dir, "tmp"); len(files) != 0 {
		t.Errorf("tmp holds %v after Open, want nothing", files)
	}
	if files := dirFiles(t, dir, "blobs"); len(files) != 1 {
		t.Errorf("blobs holds %v, want only the committed blob", files)
	}
	if files := dirFiles(t, dir, "entries"); len(files) != 1 {
		t.Errorf("entries holds %v, want only the committed entry", files)
	}
}

func TestCrashWhileCommitting(t *testing.T) {
	dir := t.TempDir()
	killHelper(t, "loop", dir, 50*time.Millisecond)

	c := openCache(t, Config{Dir: dir})
	want := c.Stats().Disk.Entries
	if want < 10 {
		t.Errorf("%d entries after the crash, want at least the 10 committed before \"ready\"", want)
	}
	found, last := 0, -1
	for i := range loopMax {
		k := loopKey(i)
		e, got, err := get(t, c, k)
		if err != nil {
			if i < 10 || !errors.Is(err, ErrNotCached) {
				t.Errorf("Get(%q) = %v, want an entry committed before the crash or ErrNotCached", k, err)
			}
			continue
		}
		found, last = found+1, i
		if body := crashBody(k); string(got) != string(body) || e.Size != int64(len(body)) {
			t.Errorf("Get(%q) after the crash: %d bytes, want its own %d", k, len(got), len(body))
		}
	}
	if found != want {
		t.Errorf("found %d entries by key, the disk tier has %d", found, want)
	}
	if last == loopMax-1 {
		t.Logf("the helper finished its loop before it was killed")
	}
	t.Logf("%d entries survived the crash", found)
	if files := dirFiles(t, dir, "tmp"); len(files) != 0 {
		t.Errorf("tmp holds %v after Open, want nothing", files)
	}
	if got := len(dirFiles(t, dir, "blobs")); got != c.Stats().Disk.Blobs {
		t.Errorf("%d blob files after Open, stats say %d", got, c.Stats().Disk.Blobs)
	}
}

// TestConcurrentUse stores, reads and purges from several goroutines on a
// small disk tier: every read gives the key's own body or ErrNotCached.
func TestConcurrentUse(t *testing.T) {
	const limit = 64 << 10
	c := openCache(t, Config{DiskBytes: limit})
	key := func(i int) string { return fmt.Sprintf("/example.com/c/@v/v1.0.%d.zip", i%20) }
	body := func(k string) []byte {
		n := 100 + len(k)*7
		if strings.HasSuffix(k, "1.zip") || strings.HasSuffix(k, "5.zip") {
			n = 9 << 10 // several large ones
		}
		return testBody(k, n)
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 60 {
				k := key(g*7 + i)
				switch i % 5 {
				case 0, 1:
					e, err := store(c, k, Release, body(k))
					if err != nil {
						t.Errorf("storing %q: %v", k, err)
						return
					}
					e.Close()
				case 4:
					if g == 0 {
						c.Purge(func(s string) bool { return s == k })
					}
				default:
					_, got, err := get(t, c, k)
					if err != nil && !errors.Is(err, ErrNotCached) {
						t.Errorf("Get(%q) = %v", k, err)
					}
					if err == nil && !bytes.Equal(got, body(k)) {
						t.Errorf("Get(%q) = %d bytes, want its own %d", k, len(got), len(body(k)))
					}
				}
				if s := c.Stats().Disk; s.Bytes > limit {
					t.Errorf("disk stats %+v over the limit", s)
				}
			}
		})
	}
	wg.Wait()
	c.Sync()
	s := c.Stats().Disk
	if got := len(dirFiles(t, c.disk.dir, "blobs")); got != s.Blobs {
		t.Errorf("%d blob files, stats say %d", got, s.Blobs)
	}
	if got := len(dirFiles(t, c.disk.dir, "entries")); got != s.Entries {
		t.Errorf("%d entry files, stats say %d", got, s.Entries)
	}
}

// TestPersistAfterStore checks what the persister writes after stores
// that are served at once: a key replaced before its entry file was
// written comes back after a restart with its newest body, a key purged
// or evicted before then does not come back, and Close persists the
// rest. Each runs with the entry files still pending: the test holds the
// persister up.
func TestPersistAfterStore(t *testing.T) {
	dir := t.TempDir()
	c := openCache(t, Config{Dir: dir})
	const (
		replaced = "/example.com/r/@v/list"
		purged   = "/example.com/p/@v/v1.0.0.zip"
		kept     = "/example.com/k/@v/v1.0.0.zip"
	)
	old, newer := testBody("old", 5*hotLimit), testBody("new", 5*hotLimit)
	body := func(k string) []byte { return testBody(k, 3*hotLimit) }

	// The persister waits until every store below is made and served.
	hold := make(chan struct{})
	c.disk.testHookPersist = func() { <-hold }
	put(t, c, replaced, Query, old)
	put(t, c, replaced, Query, newer)
	put(t, c, purged, Release, body(purged))
	put(t, c, kept, Release, body(kept))
	if n := c.Purge(func(k string) bool { return k == purged }); n != 1 {
		t.Fatalf("Purge = %d, want 1", n)
	}
	mustGet(t, c, replaced, newer)
	mustGet(t, c, kept, body(kept))
	if files := dirFiles(t, dir, "entries"); len(files) != 0 {
		t.Errorf("entries holds %v before the persister ran, want nothing (the test does not test pending stores)", files)
	}
	close(hold)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	c = openCache(t, Config{Dir: dir})
	mustGet(t, c, replaced, newer)
	mustGet(t, c, kept, body(kept))
	wantAbsent(t, c, purged)
	if files := dirFiles(t, dir, "entries"); len(files) != 2 {
		t.Errorf("entries holds %v, want the 2 kept", files)
	}
	if files := dirFiles(t, dir, "blobs"); len(files) != 2 {
		t.Errorf("blobs holds %v, want the 2 kept", files)
	}
}
