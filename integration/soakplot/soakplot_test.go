package main

import (
	"bytes"
	"fmt"
	"image/png"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

const header = "t_s,rss_bytes,heap_bytes,goroutines,fds,p50_ms,p99_ms,req_per_s\n"

func TestReadSeries(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []sample
	}{
		{
			name: "two rows",
			in:   header + "10,104857600,52428800,120,40,0.5,3.25,9000\n20,106954752,53477376,121,41,0.6,4,9100.5\n",
			want: []sample{
				{Minutes: 10.0 / 60, RSSMiB: 100, HeapMiB: 50, Goroutines: 120, FDs: 40, P50ms: 0.5, P99ms: 3.25, ReqPerS: 9000},
				{Minutes: 20.0 / 60, RSSMiB: 102, HeapMiB: 51, Goroutines: 121, FDs: 41, P50ms: 0.6, P99ms: 4, ReqPerS: 9100.5},
			},
		},
		{
			name: "columns in another order, extra ones ignored",
			in:   "req_per_s,audit_written,p99_ms,p50_ms,fds,goroutines,heap_bytes,rss_bytes,t_s\n5,77,2,1,9,8,524288,1048576,60\n",
			want: []sample{{Minutes: 1, RSSMiB: 1, HeapMiB: 0.5, Goroutines: 8, FDs: 9, P50ms: 1, P99ms: 2, ReqPerS: 5}},
		},
		{
			name: "no final newline",
			in:   header + "0,0,0,0,0,0,0,0",
			want: []sample{{}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readSeries(strings.NewReader(tt.in))
			if err != nil {
				t.Fatalf("readSeries(%q) = %v", tt.in, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("readSeries(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
		})
	}
}

func TestReadSeriesRejects(t *testing.T) {
	tests := []struct {
		name, in string
		want     string // in the error
	}{
		{"empty", "", "empty input"},
		{"header only", header, "no rows"},
		{"missing column", "t_s,rss_bytes,heap_bytes,goroutines,fds,p50_ms,req_per_s\n1,2,3,4,5,6,7\n", `no column "p99_ms"`},
		{"duplicate column", "t_s,t_s,rss_bytes,heap_bytes,goroutines,fds,p50_ms,p99_ms,req_per_s\n", `"t_s" appears twice`},
		{"not a number", header + "10,1,1,2,3,4,abc,6\n", `line 2: column p99_ms: "abc"`},
		{"empty field", header + "10,1,1,2,,4,5,6\n", `line 2: column fds: ""`},
		{"negative", header + "10,-1,1,2,3,4,5,6\n", "line 2: column rss_bytes"},
		{"negative heap", header + "10,1,-1,2,3,4,5,6\n", "line 2: column heap_bytes"},
		{"not finite", header + "10,1,1,NaN,3,4,5,6\n", "line 2: column goroutines"},
		{"infinite", header + "10,1,1,2,3,4,5,+Inf\n", "line 2: column req_per_s"},
		{"short row", header + "10,1,2,3\n", "wrong number of fields"},
		{"time going back", header + "20,1,1,2,3,4,5,6\n10,1,1,2,3,4,5,6\n", "line 3: t_s 10 is not after"},
		{"time standing still", header + "20,1,1,2,3,4,5,6\n20,1,1,2,3,4,5,6\n", "line 3: t_s 20 is not after"},
		{"bad quoting", header + "10,\"1,1,2,3,4,5,6\n", "read series"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readSeries(strings.NewReader(tt.in))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("readSeries(%q) = %v, %v; want an error containing %q", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestReadSeriesLimit(t *testing.T) {
	defer func(n int64) { maxCSVBytes = n }(maxCSVBytes)
	maxCSVBytes = 64 << 10
	// Long rows (an ignored column of padding), each valid, so that only
	// the size is wrong.
	var b bytes.Buffer
	b.WriteString("pad," + header)
	pad := strings.Repeat("x", 1000)
	for i := 1; int64(b.Len()) <= maxCSVBytes; i++ {
		fmt.Fprintf(&b, "%s,%d,1,1,2,3,4,5,6\n", pad, i)
	}
	if _, err := readSeries(&b); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("readSeries of %d bytes = %v, want an error naming the limit", b.Len(), err)
	}
}

// TestRun draws a small series and checks that the PNG decodes.
func TestRun(t *testing.T) {
	dir := t.TempDir()
	in, out := filepath.Join(dir, "soak.csv"), filepath.Join(dir, "soak.png")
	csv := header + "10,104857600,52428800,120,40,0.5,3,9000\n20,106954752,53477376,121,41,0.6,4,9100\n30,105906176,52428800,119,40,0.5,3.5,9050\n"
	if err := os.WriteFile(in, []byte(csv), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := run(in, out, "test", 0.25); err != nil {
		t.Fatalf("run = %v", err)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("png.Decode(%s) = %v", out, err)
	}
	if b := img.Bounds(); b.Dx() < 500 || b.Dy() < 500 {
		t.Errorf("the PNG is %v, want at least 500×500", b)
	}
}
