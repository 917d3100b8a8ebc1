package s3store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/modgate/modgate/integration/s3server"
)

// TestStore runs the store against a real S3 server (SeaweedFS), one
// server for all subtests, each in a prefix of its own.
func TestStore(t *testing.T) {
	srv := s3server.Start(t, "modgate-test")
	srv.Setenv(t)
	t.Run("semantics", func(t *testing.T) {
		for _, tt := range []struct {
			name string
			test func(*testing.T, *s3server.Server)
		}{
			{"PutGet", testPutGet},
			{"PutIfAbsentRace", testPutIfAbsentRace},
			{"UploadDownload", testUploadDownload},
			{"UploadRace", testUploadRace},
			{"UploadFailure", testUploadFailure},
			{"CompleteIfAbsent", testCompleteIfAbsent},
			{"Download", testDownload},
			{"List", testList},
			{"Delete", testDelete},
			{"AbortUploads", testAbortUploads},
			{"Open", testOpen},
		} {
			t.Run(tt.name, func(t *testing.T) {
				t.Parallel()
				tt.test(t, srv)
			})
		}
	})
	// Last: it takes the server down for good.
	t.Run("Down", func(t *testing.T) { testDown(t, srv) })
}

// open opens a store with 5 MiB parts in a prefix named after t.
func open(t *testing.T, srv *s3server.Server) *Store {
	t.Helper()
	s, err := Open(t.Context(), Config{
		Bucket:   srv.Bucket,
		Prefix:   t.Name() + "/",
		Endpoint: srv.Endpoint,
		PartSize: minPartSize,
		Timeout:  20 * time.Second,
		Logger:   slog.New(slog.NewTextHandler(t.Output(), nil)),
	})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

// content returns n pseudo-random bytes determined by seed.
func content(n int, seed uint64) []byte {
	b := make([]byte, n)
	var s [32]byte
	s[0] = byte(seed)
	s[1] = byte(seed >> 8)
	rand.NewChaCha8(s).Read(b)
	return b
}

// mustGet returns the content of name, failing t if Get fails.
func mustGet(t *testing.T, s *Store, name string) []byte {
	t.Helper()
	data, err := s.Get(t.Context(), name, 1<<30)
	if err != nil {
		t.Fatalf("Get(%s) = %v", name, err)
	}
	return data
}

func testPutGet(t *testing.T, srv *s3server.Server) {
	s := open(t, srv)
	ctx := t.Context()
	if err := s.Put(ctx, "a/b", []byte("hello"), false); err != nil {
		t.Fatalf("Put(a/b) = %v", err)
	}
	if err := s.Put(ctx, "empty", nil, false); err != nil {
		t.Fatalf("Put(empty) = %v", err)
	}
	tests := []struct {
		name    string
		max     int64
		want    string
		wantErr error // nil: any error if want is "-"
	}{
		{"a/b", 5, "hello", nil},
		{"a/b", 1 << 20, "hello", nil},
		{"empty", 0, "", nil},
		{"a/b", 4, "-", nil},
		{"a/b", 0, "-", nil},
		{"missing", 10, "-", fs.ErrNotExist},
		{"a", 10, "-", fs.ErrNotExist}, // a "directory"
	}
	for _, tt := range tests {
		got, err := s.Get(ctx, tt.name, tt.max)
		switch {
		case tt.want != "-" && (err != nil || string(got) != tt.want):
			t.Errorf("Get(%s, %d) = %q, %v, want %q", tt.name, tt.max, got, err, tt.want)
		case tt.want == "-" && err == nil:
			t.Errorf("Get(%s, %d) = %q, want error", tt.name, tt.max, got)
		case tt.want == "-" && tt.wantErr != nil && !errors.Is(err, tt.wantErr):
			t.Errorf("Get(%s, %d) = %v, want %v", tt.name, tt.max, err, tt.wantErr)
		case tt.want == "-" && tt.wantErr == nil && errors.Is(err, fs.ErrNotExist):
			t.Errorf("Get(%s, %d) = %v, want an error that is not fs.ErrNotExist", tt.name, tt.max, err)
		}
	}

	// Overwrite, and conditional writes.
	if err := s.Put(ctx, "a/b", []byte("world"), false); err != nil {
		t.Fatalf("Put(a/b) again = %v", err)
	}
	if err := s.Put(ctx, "a/b", []byte("other"), true); !errors.Is(err, fs.ErrExist) {
		t.Errorf("Put(a/b, ifAbsent) = %v, want fs.ErrExist", err)
	}
	if err := s.Put(ctx, "new", []byte("first"), true); err != nil {
		t.Errorf("Put(new, ifAbsent) = %v", err)
	}
	if got := mustGet(t, s, "a/b"); string(got) != "world" {
		t.Errorf("Get(a/b) = %q, want %q", got, "world")
	}
	if got := mustGet(t, s, "new"); string(got) != "first" {
		t.Errorf("Get(new) = %q, want %q", got, "first")
	}
}

func testPutIfAbsentRace(t *testing.T, srv *s3server.Server) {
	s := open(t, srv)
	const racers = 16
	var wg sync.WaitGroup
	errs := make([]error, racers)
	for r := range racers {
		wg.Go(func() {
			errs[r] = s.Put(t.Context(), "race", fmt.Appendf(nil, "racer %d", r), true)
		})
	}
	wg.Wait()
	winner := -1
	for r, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Errorf("Put(race, ifAbsent): racers %d and %d both won", winner, r)
		case err == nil:
			winner = r
		case !errors.Is(err, fs.ErrExist):
			t.Errorf("Put(race, ifAbsent) by racer %d = %v, want nil or fs.ErrExist", r, err)
		}
	}
	if winner < 0 {
		t.Fatalf("Put(race, ifAbsent): no racer won")
	}
	if got, want := string(mustGet(t, s, "race")), fmt.Sprintf("racer %d", winner); got != want {
		t.Errorf("Get(race) = %q, want the winner's %q", got, want)
	}
}

func testUploadDownload(t *testing.T, srv *s3server.Server) {
	for _, size := range []int{0, 1, 1000, minPartSize, minPartSize + 1, 12 << 20} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			t.Parallel()
			s := open(t, srv)
			ctx := t.Context()
			name := fmt.Sprintf("blobs/%d", size)
			data := content(size, uint64(size))
			if err := s.Upload(ctx, name, bytes.NewReader(data), int64(size)); err != nil {
				t.Fatalf("Upload(%s) = %v", name, err)
			}
			var buf bytes.Buffer
			if err := s.Download(ctx, name, int64(size), &buf); err != nil {
				t.Fatalf("Download(%s) = %v", name, err)
			}
			if !bytes.Equal(buf.Bytes(), data) {
				t.Fatalf("Download(%s) = %d different bytes, want the %d uploaded", name, buf.Len(), size)
			}
			// Present already: success, and the content stays.
			other := content(size, uint64(size)+1)
			if err := s.Upload(ctx, name, bytes.NewReader(other), int64(size)); err != nil {
				t.Fatalf("Upload(%s) again = %v, want nil", name, err)
			}
			if got := mustGet(t, s, name); !bytes.Equal(got, data) {
				t.Errorf("after a second Upload, Get(%s) = other bytes, want the first", name)
			}
		})
	}
}

func testUploadRace(t *testing.T, srv *s3server.Server) {
	for _, size := range []int{1000, minPartSize + 1000} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			t.Parallel()
			s := open(t, srv)
			const racers = 16
			name := fmt.Sprintf("race/%d", size)
			data := content(size, 7)
			var wg sync.WaitGroup
			errs := make([]error, racers)
			for r := range racers {
				wg.Go(func() {
					errs[r] = s.Upload(t.Context(), name, bytes.NewReader(data), int64(size))
				})
			}
			wg.Wait()
			for r, err := range errs {
				if err != nil {
					t.Errorf("Upload(%s) by racer %d = %v", name, r, err)
				}
			}
			if got := mustGet(t, s, name); !bytes.Equal(got, data) {
				t.Errorf("Get(%s) = %d bytes, not the %d uploaded", name, len(got), size)
			}
			checkNoUploads(t, s)
		})
	}
}

// failingReader fails every read at or after offset from.
type failingReader struct {
	r    io.ReaderAt
	from int64
}

var errRead = errors.New("test read error")

func (f failingReader) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > f.from {
		return 0, errRead
	}
	return f.r.ReadAt(p, off)
}

// checkNoUploads checks that s has no unfinished multipart upload.
func checkNoUploads(t *testing.T, s *Store) {
	t.Helper()
	n, err := s.AbortUploads(t.Context(), time.Now().Add(time.Hour))
	if err != nil || n != 0 {
		t.Errorf("AbortUploads = %d, %v, want 0 left behind", n, err)
	}
}

func testUploadFailure(t *testing.T, srv *s3server.Server) {
	s := open(t, srv)
	ctx := t.Context()
	const size = 12 << 20
	data := content(size, 1)
	r := failingReader{bytes.NewReader(data), minPartSize} // fails in part 2

	err := s.Upload(ctx, "blob", r, size)
	if err == nil || errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrExist) {
		t.Fatalf("Upload(failing reader) = %v, want an error", err)
	}
	if _, err := s.Get(ctx, "blob", size); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("after a failed Upload, Get = %v, want fs.ErrNotExist", err)
	}
	checkNoUploads(t, s)

	// A failing upload of an existing name must leave it alone: Upload
	// finds it and reads nothing, multipart (below Upload) fails and aborts.
	if err := s.Upload(ctx, "blob", bytes.NewReader(data), size); err != nil {
		t.Fatalf("Upload = %v", err)
	}
	if err := s.Upload(ctx, "blob", r, size); err != nil {
		t.Errorf("Upload(existing, failing reader) = %v, want nil", err)
	}
	if err := s.multipart(ctx, s.prefix+"blob", r, size); err == nil {
		t.Errorf("multipart(existing, failing reader) = nil, want error")
	}
	if got := mustGet(t, s, "blob"); !bytes.Equal(got, data) {
		t.Errorf("after failed uploads, Get(blob) = other bytes, want the first")
	}
	checkNoUploads(t, s)

	// A cancelled context fails the upload, which is still aborted.
	cctx, cancel := context.WithCancel(ctx)
	cancelAt := readerFunc(func(p []byte, off int64) (int, error) {
		if off >= minPartSize {
			cancel()
		}
		return bytes.NewReader(data).ReadAt(p, off)
	})
	if err := s.Upload(cctx, "cancelled", cancelAt, size); err == nil {
		t.Errorf("Upload(cancelled) = nil, want error")
	}
	if _, err := s.Get(ctx, "cancelled", size); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("after a cancelled Upload, Get = %v, want fs.ErrNotExist", err)
	}
	checkNoUploads(t, s)
}

type readerFunc func(p []byte, off int64) (int, error)

func (f readerFunc) ReadAt(p []byte, off int64) (int, error) { return f(p, off) }

// testCompleteIfAbsent checks what Upload's HEAD hides: that the server
// refuses to complete a multipart upload over an existing object.
func testCompleteIfAbsent(t *testing.T, srv *s3server.Server) {
	s := open(t, srv)
	ctx := t.Context()
	const size = minPartSize + 1000
	if err := s.Put(ctx, "blob", []byte("first"), false); err != nil {
		t.Fatalf("Put = %v", err)
	}
	err := s.multipart(ctx, s.prefix+"blob", bytes.NewReader(content(size, 2)), size)
	if !preconditionFailed(err) {
		t.Errorf("multipart(existing) = %v, want 412 PreconditionFailed", err)
	}
	if got := mustGet(t, s, "blob"); string(got) != "first" {
		t.Errorf("Get(blob) = %d bytes, want the first", len(got))
	}
	checkNoUploads(t, s)
}

// countingWriter counts what is written to it, and calls hook first.
type countingWriter struct {
	n    int64
	hook func()
}

func (w *countingWriter) Write(p []byte) (int, error) {
	if w.hook != nil {
		w.hook()
		w.hook = nil
	}
	w.n += int64(len(p))
	return len(p), nil
}

func testDownload(t *testing.T, srv *s3server.Server) {
	s := open(t, srv)
	ctx := t.Context()
	const size = 12 << 20
	data := content(size, 3)
	if err := s.Upload(ctx, "blob", bytes.NewReader(data), size); err != nil {
		t.Fatalf("Upload = %v", err)
	}
	if err := s.Put(ctx, "small", []byte("small"), false); err != nil {
		t.Fatalf("Put = %v", err)
	}
	tests := []struct {
		name string
		size int64
		want error // nil: any error but fs.ErrNotExist
	}{
		{"blob", size - 1, nil},
		{"blob", size + 1, nil},
		{"blob", minPartSize, nil},
		{"blob", 0, nil},
		{"small", 4, nil},
		{"small", 6, nil},
		{"small", 0, nil},
		{"missing", 10, fs.ErrNotExist},
		{"missing", 0, fs.ErrNotExist},
		{"missing", size, fs.ErrNotExist},
	}
	for _, tt := range tests {
		var w countingWriter
		err := s.Download(ctx, tt.name, tt.size, &w)
		switch {
		case err == nil:
			t.Errorf("Download(%s, %d) = nil, want error", tt.name, tt.size)
		case tt.want != nil && !errors.Is(err, tt.want):
			t.Errorf("Download(%s, %d) = %v, want %v", tt.name, tt.size, err, tt.want)
		case tt.want == nil && errors.Is(err, fs.ErrNotExist):
			t.Errorf("Download(%s, %d) = %v, want an error that is not fs.ErrNotExist", tt.name, tt.size, err)
		}
		if w.n > tt.size {
			t.Errorf("Download(%s, %d) wrote %d bytes", tt.name, tt.size, w.n)
		}
	}

	// The object is replaced (same size) while the first part is written.
	w := &countingWriter{hook: func() {
		if err := s.Put(ctx, "blob", content(size, 4), false); err != nil {
			t.Errorf("Put(blob) = %v", err)
		}
	}}
	if err := s.Download(ctx, "blob", size, w); err == nil || errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Download(blob) replaced while read = %v, want an error, not fs.ErrNotExist", err)
	}
}

func testList(t *testing.T, srv *s3server.Server) {
	s := open(t, srv)
	ctx := t.Context()
	s.pageSize = 2
	var want []Object
	for i := range 7 {
		name := fmt.Sprintf("l/%d/x", i)
		if err := s.Put(ctx, name, make([]byte, i), false); err != nil {
			t.Fatalf("Put(%s) = %v", name, err)
		}
		want = append(want, Object{Name: name, Size: int64(i)})
	}
	if err := s.Put(ctx, "m", []byte("m"), false); err != nil {
		t.Fatalf("Put(m) = %v", err)
	}
	list := func(prefix string) []Object {
		var got []Object
		err := s.List(ctx, prefix, func(o Object) error {
			if o.Modified.IsZero() || time.Since(o.Modified) > time.Hour {
				t.Errorf("List(%s): %s modified %v", prefix, o.Name, o.Modified)
			}
			o.Modified = time.Time{}
			got = append(got, o)
			return nil
		})
		if err != nil {
			t.Fatalf("List(%s) = %v", prefix, err)
		}
		return got
	}
	if got := list("l/"); !slices.Equal(got, want) {
		t.Errorf("List(l/) = %v, want %v", got, want)
	}
	if got := list("l/3"); !slices.Equal(got, want[3:4]) {
		t.Errorf("List(l/3) = %v, want %v", got, want[3:4])
	}
	if got, want := list(""), append(want, Object{Name: "m", Size: 1}); !slices.Equal(got, want) {
		t.Errorf("List() = %v, want %v", got, want)
	}
	if got := list("nothing/"); len(got) != 0 {
		t.Errorf("List(nothing/) = %v, want none", got)
	}

	stop := errors.New("stop")
	calls := 0
	err := s.List(ctx, "", func(Object) error {
		calls++
		if calls == 3 {
			return stop
		}
		return nil
	})
	if err != stop || calls != 3 {
		t.Errorf("List with fn failing at the 3rd object = %v after %d calls, want %v after 3", err, calls, stop)
	}

	// Another prefix sees none of it.
	other, err := Open(ctx, Config{Bucket: srv.Bucket, Prefix: t.Name() + "-other/", Endpoint: srv.Endpoint})
	if err != nil {
		t.Fatalf("Open = %v", err)
	}
	if err := other.List(ctx, "", func(o Object) error {
		t.Errorf("List in another prefix: %v", o)
		return nil
	}); err != nil {
		t.Errorf("List in another prefix = %v", err)
	}
}

func testDelete(t *testing.T, srv *s3server.Server) {
	s := open(t, srv)
	ctx := t.Context()
	if err := s.Put(ctx, "d/x", []byte("x"), false); err != nil {
		t.Fatalf("Put = %v", err)
	}
	for i, name := range []string{"d/x", "d/x", "never"} {
		if err := s.Delete(ctx, name); err != nil {
			t.Errorf("Delete(%s) #%d = %v, want nil", name, i, err)
		}
		if _, err := s.Get(ctx, name, 10); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("after Delete, Get(%s) = %v, want fs.ErrNotExist", name, err)
		}
	}
}

func testAbortUploads(t *testing.T, srv *s3server.Server) {
	s := open(t, srv)
	ctx := t.Context()
	s.pageSize = 1
	// Abandoned uploads: three here (one with a part), one in another prefix.
	create := func(key string) string {
		out, err := s.client.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: &s.bucket, Key: &key})
		if err != nil {
			t.Fatalf("CreateMultipartUpload = %v", err)
		}
		return *out.UploadId
	}
	id := create(s.prefix + "abandoned/1")
	if _, err := s.client.UploadPart(ctx, &s3.UploadPartInput{
		Bucket: &s.bucket, Key: aws.String(s.prefix + "abandoned/1"), UploadId: &id,
		PartNumber: aws.Int32(1), Body: bytes.NewReader(content(minPartSize, 5)),
	}); err != nil {
		t.Fatalf("UploadPart = %v", err)
	}
	create(s.prefix + "abandoned/2")
	create(s.prefix + "abandoned/2")
	other := create(s.prefix[:len(s.prefix)-1] + "-other/abandoned")
	defer s.client.AbortMultipartUpload(context.WithoutCancel(ctx), &s3.AbortMultipartUploadInput{
		Bucket: &s.bucket, Key: aws.String(s.prefix[:len(s.prefix)-1] + "-other/abandoned"), UploadId: &other,
	})

	for _, tt := range []struct {
		olderThan time.Time
		want      int
	}{
		{time.Now().Add(-time.Hour), 0}, // too young
		{time.Now().Add(time.Minute), 3},
		{time.Now().Add(time.Minute), 0}, // all gone
	} {
		n, err := s.AbortUploads(ctx, tt.olderThan)
		if err != nil || n != tt.want {
			t.Errorf("AbortUploads(%v) = %d, %v, want %d", tt.olderThan, n, err, tt.want)
		}
	}
	out, err := s.client.ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: &s.bucket})
	if err != nil {
		t.Fatalf("ListMultipartUploads = %v", err)
	}
	if !slices.ContainsFunc(out.Uploads, func(u types.MultipartUpload) bool { return aws.ToString(u.UploadId) == other }) {
		t.Errorf("AbortUploads aborted an upload outside its prefix")
	}
}

func testOpen(t *testing.T, srv *s3server.Server) {
	for _, tt := range []struct {
		name string
		cfg  Config
	}{
		{"missing bucket", Config{Bucket: "no-such-bucket", Endpoint: srv.Endpoint}},
		{"no server", Config{Bucket: srv.Bucket, Endpoint: "http://127.0.0.1:1", Timeout: 5 * time.Second}},
	} {
		_, err := Open(t.Context(), tt.cfg)
		if err == nil || errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Open(%s) = %v, want an error, not fs.ErrNotExist", tt.name, err)
		}
	}
	s := open(t, srv)
	if got, want := s.Name(), "s3://"+srv.Bucket+"/"+t.Name()+"/"; got != want {
		t.Errorf("Name() = %q, want %q", got, want)
	}
}

// testDown checks that a store that is down is an error, never "absent"
// or "exists". (integration/s3server's tests restart a server.)
func testDown(t *testing.T, srv *s3server.Server) {
	s := open(t, srv)
	ctx := t.Context()
	if err := s.Put(ctx, "kept", []byte("kept"), false); err != nil {
		t.Fatalf("Put = %v", err)
	}
	srv.Stop(t)
	ops := []struct {
		name string
		op   func() error
	}{
		{"Get(kept)", func() error { _, err := s.Get(ctx, "kept", 10); return err }},
		{"Get(missing)", func() error { _, err := s.Get(ctx, "missing", 10); return err }},
		{"Put(kept, ifAbsent)", func() error { return s.Put(ctx, "kept", nil, true) }},
		{"Upload(kept)", func() error { return s.Upload(ctx, "kept", bytes.NewReader(nil), 0) }},
		{"Upload(large)", func() error { return s.Upload(ctx, "large", bytes.NewReader(make([]byte, 6<<20)), 6<<20) }},
		{"Download(kept)", func() error { return s.Download(ctx, "kept", 4, io.Discard) }},
		{"Download(missing)", func() error { return s.Download(ctx, "missing", 4, io.Discard) }},
		{"List", func() error { return s.List(ctx, "", func(Object) error { return nil }) }},
		{"Delete(missing)", func() error { return s.Delete(ctx, "missing") }},
		{"AbortUploads", func() error { _, err := s.AbortUploads(ctx, time.Now()); return err }},
	}
	for _, tt := range ops {
		start := time.Now()
		err := tt.op()
		if err == nil || errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrExist) {
			t.Errorf("%s while down = %v, want an error, neither fs.ErrNotExist nor fs.ErrExist", tt.name, err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("%s while down took %v", tt.name, d)
		}
	}
}
