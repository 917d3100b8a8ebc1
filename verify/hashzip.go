package verify

import (
	"archive/zip"
	"bytes"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"sync"

	"github.com/klauspost/compress/flate"
	"golang.org/x/mod/sumdb/dirhash"
)

// Bounds of what hashZip inflates ahead of the hash.
const (
	// maxAhead is the largest file inflated ahead, by its header's
	// uncompressed size; larger ones are read as the hash reaches them.
	maxAhead = 256 << 10
	// aheadPerProc is how many files per CPU may wait inflated for the
	// hash: with maxAhead, at most 2 MiB per CPU per zip being hashed.
	aheadPerProc = 8
)

// hashZip returns the h1: hash of the module zip in file, exactly as
// dirhash.HashZip(file, dirhash.Hash1) does: x/mod's Hash1 hashes the
// files, in its order. Inflating them is most of the work, and Hash1 does
// it one file after another, so hashZip inflates the small files ahead of
// it on the other CPUs: a lone cold zip is verified in a fraction of the
// time. The zip must have passed zip.CheckZip, which bounds its sizes.
func hashZip(file string) (string, error) {
	z, err := zip.OpenReader(file)
	if err != nil {
		return "", err
	}
	defer z.Close()
	z.RegisterDecompressor(zip.Deflate, newDecompressor)
	var names []string
	byName := make(map[string]*zip.File, len(z.File))
	for _, f := range z.File {
		names = append(names, f.Name)
		byName[f.Name] = f // the last of a name, as HashZip
	}
	procs := runtime.GOMAXPROCS(0)
	if procs < 2 {
		return dirhash.Hash1(names, func(name string) (io.ReadCloser, error) {
			f := byName[name]
			if f == nil {
				return nil, fmt.Errorf("file %q not found in zip", name) // as HashZip
			}
			return f.Open()
		})
	}
	in := startInflater(byName, slices.Sorted(slices.Values(names)), procs)
	defer in.stop()
	return dirhash.Hash1(names, in.open)
}

// newDecompressor is the Deflate decompressor hashZip reads zips with:
// klauspost/compress's, which inflates about twice as fast as the standard
// library's, the work that dominates hashing a zip. archive/zip still
// checks every file's CRC-32 and size, and the hash is x/mod's.
// Its readers are pooled, as archive/zip pools its own: a reader holds a
// 32 KiB window, and a module has many small files.
func newDecompressor(r io.Reader) io.ReadCloser {
	if fr, ok := decompressors.Get().(io.ReadCloser); ok {
		if fr.(flate.Resetter).Reset(r, nil) == nil {
			return &pooledDecompressor{fr}
		}
	}
	return &pooledDecompressor{flate.NewReader(r)}
}

var decompressors sync.Pool

// pooledDecompressor returns its reader to the pool on Close.
type pooledDecompressor struct {
	io.ReadCloser
}

func (p *pooledDecompressor) Close() error {
	if p.ReadCloser == nil {
		return nil
	}
	err := p.ReadCloser.Close()
	decompressors.Put(p.ReadCloser)
	p.ReadCloser = nil
	return err
}

func (p *pooledDecompressor) Read(b []byte) (int, error) {
	if p.ReadCloser == nil {
		return 0, errors.New("verify: read after close")
	}
	return p.ReadCloser.Read(b)
}

// An inflater inflates a zip's small files, in the order Hash1 opens them
// (sorted by name), a bounded window ahead of it.
type inflater struct {
	files map[string]*zip.File
	order []string
	slots []chan inflated // one per name of order, each sent to once
	next  int             // the index in order Hash1 opens next
	ahead chan struct{}   // a token per file inflated and not yet opened
	quit  chan struct{}   // closed by stop
	done  chan struct{}   // closed when every worker has returned
}

// inflated is one file's content, or why there is none.
type inflated struct {
	data   []byte
	err    error
	stream bool // too large to inflate ahead: Hash1 reads it itself
}

func startInflater(files map[string]*zip.File, order []string, workers int) *inflater {
	in := &inflater{
		files: files,
		order: order,
		slots: make([]chan inflated, len(order)),
		ahead: make(chan struct{}, workers*aheadPerProc),
		quit:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	for i := range in.slots {
		in.slots[i] = make(chan inflated, 1)
	}
	go in.run(workers)
	return in
}

// run hands the files to workers, in order, as the window allows.
func (in *inflater) run(workers int) {
	defer close(in.done)
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range jobs {
				in.slots[i] <- inflate(in.files[in.order[i]])
			}
		})
	}
	defer wg.Wait()
	defer close(jobs)
	for i, name := range in.order {
		if in.files[name].UncompressedSize64 > maxAhead {
			in.slots[i] <- inflated{stream: true}
			continue
		}
		select {
		case in.ahead <- struct{}{}:
		case <-in.quit:
			return
		}
		select {
		case jobs <- i:
		case <-in.quit:
			return
		}
	}
}

// inflate reads f whole; f is at most maxAhead bytes by its header, which
// archive/zip holds its content to.
func inflate(f *zip.File) inflated {
	rc, err := f.Open()
	if err != nil {
		return inflated{err: err}
	}
	defer rc.Close()
	buf := bytes.NewBuffer(make([]byte, 0, f.UncompressedSize64))
	if _, err := buf.ReadFrom(io.LimitReader(rc, maxAhead+1)); err != nil {
		return inflated{err: err}
	}
	if uint64(buf.Len()) > f.UncompressedSize64 {
		return inflated{err: fmt.Errorf("zip: %s is larger than its header says: %w", f.Name, zip.ErrFormat)}
	}
	return inflated{data: buf.Bytes()}
}

// open is Hash1's open function: it returns the content of the next file
// in order, inflated ahead or not.
func (in *inflater) open(name string) (io.ReadCloser, error) {
	f := in.files[name]
	if f == nil {
		return nil, fmt.Errorf("file %q not found in zip", name) // as HashZip
	}
	if in.next >= len(in.order) || in.order[in.next] != name {
		// Not the order inflated in; never so with Hash1.
		return nil, errors.New("verify: zip files hashed out of order")
	}
	r := <-in.slots[in.next]
	in.next++
	if r.stream {
		return f.Open()
	}
	<-in.ahead
	if r.err != nil {
		return nil, r.err
	}
	return io.NopCloser(bytes.NewReader(r.data)), nil
}

// stop ends the inflation, whether or not Hash1 opened every file, and
// waits for its goroutines.
func (in *inflater) stop() {
	close(in.quit)
	<-in.done
}
