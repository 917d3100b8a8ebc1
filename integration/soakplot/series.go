package main

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
)

// maxCSVBytes bounds the file readSeries reads: a day of samples every
// 10 s is under 2 MiB. A variable for its test.
var maxCSVBytes int64 = 64 << 20

// A sample is one row of soak.csv, in the units the panels show.
type sample struct {
	Minutes    float64 // since the load started
	RSSMiB     float64 // modgate's resident memory
	HeapMiB    float64 // its Go heap in use
	Goroutines float64 // go_goroutines
	FDs        float64 // open file descriptors
	P50ms      float64 // median latency of the interval, ms
	P99ms      float64 // 99th percentile latency of the interval, ms
	ReqPerS    float64 // requests modgate finished per second in the interval
}

// columns are the columns readSeries needs, by header name, and where
// each goes in a sample (after scaling). Others are ignored.
var columns = []struct {
	name  string
	scale float64
	field func(*sample) *float64
}{
	{"t_s", 1.0 / 60, func(s *sample) *float64 { return &s.Minutes }},
	{"rss_bytes", 1.0 / (1 << 20), func(s *sample) *float64 { return &s.RSSMiB }},
	{"heap_bytes", 1.0 / (1 << 20), func(s *sample) *float64 { return &s.HeapMiB }},
	{"goroutines", 1, func(s *sample) *float64 { return &s.Goroutines }},
	{"fds", 1, func(s *sample) *float64 { return &s.FDs }},
	{"p50_ms", 1, func(s *sample) *float64 { return &s.P50ms }},
	{"p99_ms", 1, func(s *sample) *float64 { return &s.P99ms }},
	{"req_per_s", 1, func(s *sample) *float64 { return &s.ReqPerS }},
}

// readSeries reads soak.csv as TestSoak writes it: a header row naming
// the columns, then one row of numbers per interval, t_s strictly
// increasing. It needs the columns t_s, rss_bytes, heap_bytes,
// goroutines, fds, p50_ms, p99_ms and req_per_s, in any order, and at least one row; every
// value it reads must be a finite number, none negative. It reads at most
// maxCSVBytes.
func readSeries(r io.Reader) ([]sample, error) {
	lr := &io.LimitedReader{R: r, N: maxCSVBytes + 1}
	cr := csv.NewReader(lr)
	cr.ReuseRecord = true
	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return nil, errors.New("read series: empty input, want a header row")
	}
	if err != nil {
		return nil, fmt.Errorf("read series: %w", err)
	}
	index := map[string]int{}
	for i, name := range header {
		if _, dup := index[name]; dup {
			return nil, fmt.Errorf("read series: column %q appears twice in the header", name)
		}
		index[name] = i
	}
	at := make([]int, len(columns))
	for i, c := range columns {
		j, ok := index[c.name]
		if !ok {
			return nil, fmt.Errorf("read series: no column %q in the header %q", c.name, header)
		}
		at[i] = j
	}

	var out []sample
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if lr.N <= 0 {
			break // cut at the limit: reported below
		}
		if err != nil {
			// A row of the wrong length is a csv.ParseError naming its line.
			return nil, fmt.Errorf("read series: %w", err)
		}
		line, _ := cr.FieldPos(0)
		var s sample
		for i, c := range columns {
			text := rec[at[i]]
			v, err := strconv.ParseFloat(text, 64)
			if err != nil || math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
				return nil, fmt.Errorf("read series: line %d: column %s: %q is not a finite number ≥ 0", line, c.name, text)
			}
			*c.field(&s) = v * c.scale
		}
		if n := len(out); n > 0 && s.Minutes <= out[n-1].Minutes {
			return nil, fmt.Errorf("read series: line %d: t_s %s is not after the previous row's", line, rec[at[0]])
		}
		out = append(out, s)
	}
	if lr.N <= 0 {
		return nil, fmt.Errorf("read series: input larger than %d bytes", maxCSVBytes)
	}
	if len(out) == 0 {
		return nil, errors.New("read series: a header but no rows")
	}
	return out, nil
}
