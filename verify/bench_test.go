package verify

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"testing/fstest"

	"golang.org/x/mod/module"
	"golang.org/x/tools/txtar"

	"github.com/modgate/modgate/integration/testproxy"
)

// bigModule makes a module whose zip holds one file of size bytes.
func bigModule(b *testing.B, size int) *testproxy.Module {
	b.Helper()
	data := make([]byte, size)
	rand.NewChaCha8([32]byte{1}).Read(data)
	const digits = "0123456789abcdef"
	for i, c := range data {
		data[i] = digits[c&0xf]
	}
	ar := &txtar.Archive{
		Comment: []byte("module example.com/big\nversion v1.0.0\n"),
		Files: []txtar.File{
			{Name: "go.mod", Data: []byte("module example.com/big\n\ngo 1.21\n")},
			{Name: "blob.txt", Data: data},
		},
	}
	mods, err := testproxy.Load(fstest.MapFS{"m.txtar": {Data: txtar.Format(ar)}})
	if err != nil {
		b.Fatal(err)
	}
	return mods[0]
}

// BenchmarkVerifyZip measures checking a zip whose checksum record is
// already known (the record lookup is a one-time cost per version): zip
// structure, dirhash.HashZip and the comparison. It reports the cost per
// MiB of zip.
func BenchmarkVerifyZip(b *testing.B) {
	for _, mib := range []int{1, 16} {
		b.Run(fmt.Sprintf("%dMiB", mib), func(b *testing.B) {
			m := bigModule(b, mib<<20)
			sum, err := m.GoSum()
			if err != nil {
				b.Fatal(err)
			}
			skey, vkey := newKey(b)
			d := newDB(b, skey, map[module.Version]string{{Path: m.Path, Version: m.Version}: sum})
			v := newVerifier(b, opts{key: vkey, dir: b.TempDir(), fetch: d.fetch})
			file := zipFile(b, m.Zip)
			if _, err := v.Zip(context.Background(), m.Path, m.Version, file, false); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(m.Zip)))
			b.ResetTimer()
			for b.Loop() {
				if _, err := v.Zip(context.Background(), m.Path, m.Version, file, false); err != nil {
					b.Fatal(err)
				}
			}
			perOp := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
			b.ReportMetric(perOp/1e6/(float64(len(m.Zip))/(1<<20)), "ms/MiB")
		})
	}
}

// BenchmarkVerifyMod measures checking a go.mod whose record is known:
// the per-request cost of verification apart from the zip's bytes.
func BenchmarkVerifyMod(b *testing.B) {
	mods, sums := fixtures(b)
	skey, vkey := newKey(b)
	d := newDB(b, skey, sums)
	v := newVerifier(b, opts{key: vkey, dir: b.TempDir(), fetch: d.fetch})
	a := mods["example.com/a@v1.0.0"]
	if _, err := v.Mod(context.Background(), a.Path, a.Version, a.Mod, false); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := v.Mod(context.Background(), a.Path, a.Version, a.Mod, false); err != nil {
			b.Fatal(err)
		}
	}
}
