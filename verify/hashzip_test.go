package verify

import (
	"archive/zip"
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"golang.org/x/mod/sumdb/dirhash"
)

// testZipFile is one file of a test zip.
type testZipFile struct {
	name   string
	size   int
	method uint16 // zip.Deflate or zip.Store
	random bool   // incompressible
}

// writeTestZip writes a zip of files, their contents made up, to a
// temporary file and returns its name.
func writeTestZip(t testing.TB, files []testZipFile) string {
	t.Helper()
	var entries []zipEntry
	for i, f := range files {
		data := bytes.Repeat([]byte(fmt.Sprintf("package p // %d %s\n", i, f.name)), f.size/20+1)[:f.size]
		if f.random {
			rand.NewChaCha8([32]byte{byte(i)}).Read(data)
		}
		entries = append(entries, zipEntry{f.name, f.method, data})
	}
	return writeZip(t, entries)
}

// zipEntry is one file of a zip as written.
type zipEntry struct {
	name   string
	method uint16
	data   []byte
}

// writeZip writes a zip of entries, in order, to a temporary file and
// returns its name.
func writeZip(t testing.TB, entries []zipEntry) string {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range entries {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: e.name, Method: e.method})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(e.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	name := filepath.Join(t.TempDir(), "m.zip")
	if err := os.WriteFile(name, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return name
}

// sameAsHashZip fails t unless hashZip and x/mod's dirhash.HashZip agree
// on file: the same hash, or both an error.
func sameAsHashZip(t testing.TB, file string) {
	t.Helper()
	want, wantErr := dirhash.HashZip(file, dirhash.Hash1)
	got, err := hashZip(file)
	if got != want || (err == nil) != (wantErr == nil) {
		t.Fatalf("hashZip = %q, %v; dirhash.HashZip = %q, %v", got, err, want, wantErr)
	}
}

func TestHashZip(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(4)) // inflate ahead on any machine
	m := "example.com/m@v1.0.0/"
	many := make([]testZipFile, 300)
	for i := range many {
		many[i] = testZipFile{name: fmt.Sprintf("%sp%03d/f.go", m, 299-i), size: 100 + i*37, method: zip.Deflate}
	}
	for _, tc := range []struct {
		name  string
		files []testZipFile
	}{
		{"empty", nil},
		{"one", []testZipFile{{name: m + "go.mod", size: 30, method: zip.Deflate}}},
		{"many small, out of order", many},
		{"stored", []testZipFile{{name: m + "a", size: 5000, method: zip.Store}, {name: m + "b", size: 7, method: zip.Store}}},
		{"large ones streamed", []testZipFile{
			{name: m + "big", size: maxAhead + 1, method: zip.Deflate, random: true},
			{name: m + "small", size: 100, method: zip.Deflate},
			{name: m + "huge", size: 3 * maxAhead, method: zip.Deflate},
			{name: m + "edge", size: maxAhead, method: zip.Deflate, random: true},
		}},
		{"duplicate names", []testZipFile{{name: m + "x", size: 10, method: zip.Deflate}, {name: m + "x", size: 20, method: zip.Deflate}}},
		{"newline in a name", []testZipFile{{name: m + "a\nb", size: 10, method: zip.Deflate}}},
		{"empty files", []testZipFile{{name: m + "e1", method: zip.Deflate}, {name: m + "e2", method: zip.Store}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sameAsHashZip(t, writeTestZip(t, tc.files))
		})
	}
}

// TestHashZipCorrupt checks that a file whose bytes were changed after
// its CRC was written fails the hash, wherever it is in the order, as it
// does for x/mod.
func TestHashZipCorrupt(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(4))
	var files []testZipFile
	for i := range 40 {
		files = append(files, testZipFile{name: fmt.Sprintf("m@v1.0.0/f%02d", i), size: 2000, method: zip.Store})
	}
	clean, err := os.ReadFile(writeTestZip(t, files))
	if err != nil {
		t.Fatal(err)
	}
	for _, at := range []int{0, 20, 39} {
		data := bytes.Clone(clean)
		i := bytes.Index(data, []byte(fmt.Sprintf("// %d m@v1.0.0/f%02d", at, at)))
		if i < 0 {
			t.Fatalf("file %d not found in the zip", at)
		}
		data[i] ^= 1
		file := filepath.Join(t.TempDir(), "bad.zip")
		if err := os.WriteFile(file, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := hashZip(file); err == nil {
			t.Errorf("file %d corrupted: hashZip succeeded", at)
		}
		sameAsHashZip(t, file)
	}
}

// FuzzHashZip checks hashZip against x/mod's dirhash.HashZip on arbitrary
// bytes: the same hash or both an error.
func FuzzHashZip(f *testing.F) {
	for _, files := range [][]testZipFile{
		nil,
		{{name: "m@v1.0.0/go.mod", size: 20, method: zip.Deflate}, {name: "m@v1.0.0/a.go", size: 300, method: zip.Store}},
	} {
		data, err := os.ReadFile(writeTestZip(f, files))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		file := filepath.Join(t.TempDir(), "f.zip")
		if err := os.WriteFile(file, data, 0o644); err != nil {
			t.Fatal(err)
		}
		sameAsHashZip(t, file)
	})
}

// BenchmarkHashZip compares hashZip with x/mod's dirhash.HashZip on a zip
// shaped like a module's (400 source files of 1 to 20 KB) and on one of
// a single 2 MB file of random hex digits (BenchmarkVsPeers's modules).
func BenchmarkHashZip(b *testing.B) {
	var files []testZipFile
	for i := range 400 {
		files = append(files, testZipFile{name: fmt.Sprintf("example.com/m@v1.0.0/p%d/f%d.go", i%20, i), size: 1000 + (i*7919)%19000, method: zip.Deflate})
	}
	hex := make([]byte, 2<<20)
	rand.NewChaCha8([32]byte{}).Read(hex)
	for i, c := range hex {
		hex[i] = "0123456789abcdef"[c&0xf]
	}
	for _, z := range []struct {
		name string
		file string
	}{
		{"module", writeTestZip(b, files)},
		{"one-file", writeZip(b, []zipEntry{
			{"example.com/m@v1.0.0/go.mod", zip.Deflate, []byte("module example.com/m\n")},
			{"example.com/m@v1.0.0/blob.txt", zip.Deflate, hex},
		})},
	} {
		fi, err := os.Stat(z.file)
		if err != nil {
			b.Fatal(err)
		}
		for _, bc := range []struct {
			name string
			hash func(string) (string, error)
		}{
			{"x-mod", func(f string) (string, error) { return dirhash.HashZip(f, dirhash.Hash1) }},
			{"hashZip", hashZip},
		} {
			b.Run(z.name+"/"+bc.name, func(b *testing.B) {
				b.SetBytes(fi.Size())
				for b.Loop() {
					if _, err := bc.hash(z.file); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
