// Command soakplot draws the series TestSoak (make soak) records as one
// PNG of stacked panels sharing a time axis in minutes: modgate's
// resident memory and Go heap in use (MiB), goroutines, open file descriptors, the p50 and
// p99 latency of each interval (ms), and the requests modgate finished
// per second. Every panel's y axis starts at 0, so that a flat line
// looks flat and a leak looks like a ramp; a dashed gray line marks the
// end of the warm-up, after which the soak expects no growth.
//
// Usage, from the module root:
//
//	go run ./integration/soakplot -in soak.csv -out soak.png [-warmup 2] [-title text]
//
// The input is soak.csv as TestSoak writes it (see readSeries): a header
// row, then one row per 10 s interval.
package main

import (
	"flag"
	"fmt"
	"image/color"
	"os"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

func main() {
	in := flag.String("in", "soak.csv", "the series to plot, as TestSoak writes it")
	out := flag.String("out", "soak.png", "the PNG to write")
	warmup := flag.Float64("warmup", 0, "end of the warm-up in minutes, marked on every panel; 0 for none")
	title := flag.String("title", "modgate soak", "the title above the top panel")
	flag.Parse()
	if err := run(*in, *out, *title, *warmup); err != nil {
		fmt.Fprintln(os.Stderr, "soakplot:", err)
		os.Exit(1)
	}
}

func run(in, out, title string, warmup float64) error {
	f, err := os.Open(in)
	if err != nil {
		return err
	}
	defer f.Close()
	series, err := readSeries(f)
	if err != nil {
		return fmt.Errorf("%s: %w", in, err)
	}
	panels, err := makePanels(series, title, warmup)
	if err != nil {
		return err
	}
	return writePNG(out, panels)
}

// A line is one curve of a panel.
type line struct {
	name  string // in the legend, if the panel has more than one line
	value func(sample) float64
	color color.Color
}

var (
	blue   = color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}
	orange = color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff}
	gray   = color.Gray{Y: 0x99}
)

// makePanels makes the five panels, top to bottom.
func makePanels(series []sample, title string, warmup float64) ([]*plot.Plot, error) {
	panels := []struct {
		ylabel string
		lines  []line
	}{
		{"memory (MiB)", []line{
			{"RSS", func(s sample) float64 { return s.RSSMiB }, blue},
			{"Go heap in use", func(s sample) float64 { return s.HeapMiB }, orange},
		}},
		{"goroutines", []line{{"", func(s sample) float64 { return s.Goroutines }, blue}}},
		{"open fds", []line{{"", func(s sample) float64 { return s.FDs }, blue}}},
		{"latency (ms)", []line{
			{"p50", func(s sample) float64 { return s.P50ms }, blue},
			{"p99", func(s sample) float64 { return s.P99ms }, orange},
		}},
		{"requests/s", []line{{"", func(s sample) float64 { return s.ReqPerS }, blue}}},
	}
	var plots []*plot.Plot
	for i, pn := range panels {
		p := plot.New()
		if i == 0 {
			p.Title.Text = title
		}
		if i == len(panels)-1 {
			p.X.Label.Text = "minutes"
		}
		p.Y.Label.Text = pn.ylabel
		p.Y.Min = 0
		p.Y.Tick.Marker = shortTicks{}
		p.X.Tick.Marker = shortTicks{}
		p.Add(plotter.NewGrid())
		top := 0.0
		for _, ln := range pn.lines {
			xys := make(plotter.XYs, len(series))
			for j, s := range series {
				xys[j] = plotter.XY{X: s.Minutes, Y: ln.value(s)}
				top = max(top, xys[j].Y)
			}
			l, err := plotter.NewLine(xys)
			if err != nil {
				return nil, fmt.Errorf("panel %s: %w", pn.ylabel, err)
			}
			l.Color = ln.color
			l.Width = vg.Points(1.2)
			p.Add(l)
			if len(pn.lines) > 1 {
				p.Legend.Add(ln.name, l)
			}
		}
		p.Legend.Top = true
		if len(pn.lines) > 1 {
			p.Y.Max = top * 1.3 // room for the legend above the lines
		}
		if warmup > 0 {
			mark, err := plotter.NewLine(plotter.XYs{{X: warmup, Y: 0}, {X: warmup, Y: max(top, 1)}})
			if err != nil {
				return nil, fmt.Errorf("warm-up mark: %w", err)
			}
			mark.Color = gray
			mark.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
			p.Add(mark)
		}
		// The same time axis on every panel, whatever each one's data.
		p.X.Min, p.X.Max = 0, series[len(series)-1].Minutes
		plots = append(plots, p)
	}
	return plots, nil
}

// shortTicks are plot.DefaultTicks labelled as briefly as their values
// allow: 5000, not 5000.00.
type shortTicks struct{}

func (shortTicks) Ticks(lo, hi float64) []plot.Tick {
	ticks := plot.DefaultTicks{}.Ticks(lo, hi)
	for i, t := range ticks {
		if t.Label != "" {
			ticks[i].Label = strconv.FormatFloat(t.Value, 'g', 6, 64)
		}
	}
	return ticks
}

// writePNG draws panels stacked in one column into a PNG at out.
func writePNG(out string, panels []*plot.Plot) error {
	const width, panelHeight = 8 * vg.Inch, 2 * vg.Inch
	img := vgimg.New(width, panelHeight*vg.Length(len(panels)))
	dc := draw.New(img)
	tiles := draw.Tiles{
		Rows: len(panels), Cols: 1,
		PadTop: vg.Points(6), PadBottom: vg.Points(6), PadLeft: vg.Points(6), PadRight: vg.Points(12),
		PadY: vg.Points(8),
	}
	grid := make([][]*plot.Plot, len(panels))
	for i, p := range panels {
		grid[i] = []*plot.Plot{p}
	}
	canvases := plot.Align(grid, tiles, dc)
	for i, p := range panels {
		p.Draw(canvases[i][0])
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", out, err)
	}
	return f.Close()
}
