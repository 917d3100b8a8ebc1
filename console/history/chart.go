package history

import (
	"html/template"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// ChartOptions shape a chart.
type ChartOptions struct {
	// Width and Height are the chart's size in px. Defaults 320 and 100;
	// at least 120 and 60, at most 4000. Strip ignores Height: its height
	// follows from its number of upstreams.
	Width, Height int
	// Unit follows the last value ("req/s"). Ignored when Ratio is set.
	Unit string
	// Ratio fixes the y axis to 0..1 and shows values as percentages.
	Ratio bool
	// Highlight draws the line in the alert colour (class mg-alert), for
	// a series that should be zero, such as verification failures.
	Highlight bool
}

// The chart's layout, in px.
const (
	defaultWidth  = 320
	defaultHeight = 100
	minWidth      = 120
	minHeight     = 60
	maxSize       = 4000

	padTop    = 20 // the title's row
	padBottom = 16 // the time axis' labels
	padLeft   = 36 // the y axis' labels
	padRight  = 6

	stripRow = 28 // one upstream: its name and state, then its band
	stripBar = 8  // the band's height

	maxTitle = 48 // runes of a title shown (the tooltip has all of it)
	maxName  = 40 // runes of an upstream name shown
)

// stateFill is each known state's class and fallback colour; any other
// state is drawn as unknown.
var stateFill = map[string][2]string{
	"healthy":  {"mg-healthy", "#2e7d32"},
	"draining": {"mg-draining", "#f9a825"},
	"removed":  {"mg-removed", "#c62828"},
}

var unknownFill = [2]string{"mg-unknown", "#9e9e9e"}

// chartTemplates are the SVG of both charts. Every value is escaped by
// html/template; the strings in them were made valid XML by clean first.
var chartTemplates = template.Must(template.New("").Parse(`
{{- define "line" -}}
<svg xmlns="http://www.w3.org/2000/svg" class="mg-chart" width="{{.W}}" height="{{.H}}" viewBox="0 0 {{.W}} {{.H}}" role="img" aria-label="{{.Title}}" font-family="sans-serif" font-size="11">
<title>{{.Tip}}</title>
<text class="mg-title" x="4" y="13" fill="currentColor">{{.Label}}</text>
{{- if .Empty}}
<text class="mg-chart-empty" x="{{.MidX}}" y="{{.MidY}}" text-anchor="middle" fill="currentColor">no data yet</text>
{{- else}}
<text class="mg-chart-last{{if .Alert}} mg-alert{{end}}" x="{{.X1}}" y="13" text-anchor="end" fill="currentColor">{{.Last}}</text>
{{- end}}
<line class="mg-grid" x1="{{.X0}}" y1="{{.Y0}}" x2="{{.X1}}" y2="{{.Y0}}" stroke="currentColor" stroke-opacity="0.2" stroke-dasharray="2,2"/>
<line class="mg-axis" x1="{{.X0}}" y1="{{.Y0}}" x2="{{.X0}}" y2="{{.Y1}}" stroke="currentColor" stroke-opacity="0.4"/>
<line class="mg-axis" x1="{{.X0}}" y1="{{.Y1}}" x2="{{.X1}}" y2="{{.Y1}}" stroke="currentColor" stroke-opacity="0.4"/>
<text class="mg-tick" x="{{.TickX}}" y="{{.TopTickY}}" text-anchor="end" fill="currentColor">{{.YMax}}</text>
<text class="mg-tick" x="{{.TickX}}" y="{{.Y1}}" text-anchor="end" fill="currentColor">{{.YZero}}</text>
<text class="mg-tick" x="{{.X0}}" y="{{.TimeY}}" fill="currentColor">{{.From}}</text>
<text class="mg-tick" x="{{.X1}}" y="{{.TimeY}}" text-anchor="end" fill="currentColor">{{.To}}</text>
{{- if not .Empty}}
<polyline class="mg-line{{if .Alert}} mg-alert{{end}}" points="{{.Points}}" fill="none" stroke="{{.Stroke}}" stroke-width="1.5" stroke-linejoin="round"/>
<circle class="mg-dot{{if .Alert}} mg-alert{{end}}" cx="{{.DotX}}" cy="{{.DotY}}" r="2" fill="{{.Stroke}}"/>
{{- end}}
</svg>
{{- end}}

{{- define "strip" -}}
<svg xmlns="http://www.w3.org/2000/svg" class="mg-chart mg-strip" width="{{.W}}" height="{{.H}}" viewBox="0 0 {{.W}} {{.H}}" role="img" aria-label="Upstream states" font-family="sans-serif" font-size="11">
<title>Upstream states {{.From}}-{{.To}}</title>
<text class="mg-title" x="4" y="13" fill="currentColor">Upstreams</text>
{{- if .Empty}}
<text class="mg-chart-empty" x="{{.MidX}}" y="{{.MidY}}" text-anchor="middle" fill="currentColor">no data yet</text>
{{- end}}
{{- range .Rows}}
<g class="mg-upstream">
<text x="{{$.X0}}" y="{{.TextY}}" fill="currentColor"><tspan class="mg-upstream-name" font-weight="bold">{{.Name}}</tspan> <tspan class="mg-upstream-since">{{.Status}}</tspan></text>
<rect class="mg-band" x="{{$.X0}}" y="{{.BarY}}" width="{{$.BandW}}" height="{{$.BarH}}" fill="currentColor" fill-opacity="0.08"/>
{{- range .Rects}}
<rect class="{{.Class}}" x="{{.X}}" y="{{.Y}}" width="{{.W}}" height="{{$.BarH}}" fill="{{.Fill}}"><title>{{.Tip}}</title></rect>
{{- end}}
</g>
{{- end}}
{{- if not .Empty}}
<text class="mg-tick" x="{{.X0}}" y="{{.TimeY}}" fill="currentColor">{{.From}}</text>
<text class="mg-tick" x="{{.X1}}" y="{{.TimeY}}" text-anchor="end" fill="currentColor">{{.To}}</text>
{{- end}}
</svg>
{{- end}}
`))

// fallback is drawn if a chart's template fails, which would be a bug.
const fallback = `<svg xmlns="http://www.w3.org/2000/svg" class="mg-chart" width="120" height="20" role="img" aria-label="chart unavailable"><text x="4" y="14" fill="currentColor">chart unavailable</text></svg>`

// lineView is what the line template draws; coordinates are formatted.
type lineView struct {
	W, H                       int
	Title, Label, Tip, Last    string
	Empty, Alert               bool
	X0, X1, Y0, Y1             string
	TickX, TopTickY, TimeY     string
	MidX, MidY                 string
	YMax, YZero, From, To      string
	Points, DotX, DotY, Stroke string
}

// Line renders pts as an inline SVG line chart: a time axis spanning
// [from, to], a y axis from 0 to a round maximum (1, 2 or 5 × 10^k at or
// above the largest value; 0..1 shown as % for a Ratio), the title, the
// last value as text and a tooltip (an SVG title) with the title, the last
// and the peak value. Points outside [from, to] or not finite are left
// out, negative values are drawn as 0. With no points left the chart says
// "no data yet".
func Line(title string, pts []Point, from, to time.Time, opt ChartOptions) template.HTML {
	w, h := size(opt.Width, defaultWidth, minWidth), size(opt.Height, defaultHeight, minHeight)
	title = clean(title)
	unit := clean(opt.Unit)
	if opt.Ratio {
		unit = "%"
	}
	v := lineView{
		W: w, H: h,
		Title: title, Label: truncate(title, maxTitle),
		Alert: opt.Highlight,
		X0:    coord(padLeft), X1: coord(float64(w - padRight)),
		Y0: coord(padTop), Y1: coord(float64(h - padBottom)),
		TickX: coord(padLeft - 3), TopTickY: coord(padTop + 4), TimeY: coord(float64(h - 3)),
		MidX: coord(float64(padLeft+w-padRight) / 2), MidY: coord(float64(padTop+h-padBottom)/2 + 4),
		From: clock(from), To: clock(to),
		YZero: "0", Stroke: "currentColor",
	}
	if opt.Highlight {
		v.Stroke = stateFill["removed"][1]
	}

	var in []Point
	for _, p := range pts {
		if finite(p.Value) && !p.Time.Before(from) && !p.Time.After(to) {
			in = append(in, Point{p.Time, math.Max(p.Value, 0)})
		}
	}
	slices.SortStableFunc(in, func(a, b Point) int { return a.Time.Compare(b.Time) })

	var top, peak float64
	for _, p := range in {
		peak = math.Max(peak, p.Value)
	}
	if opt.Ratio {
		top = 1
		v.YMax, v.YZero = "100%", "0%"
	} else {
		top = niceCeil(peak)
		v.YMax = strconv.FormatFloat(top, 'g', 3, 64)
	}
	if len(in) == 0 {
		v.Empty = true
		v.Tip = title + ": no data yet"
		return render("line", v)
	}

	x0, x1 := float64(padLeft), float64(w-padRight)
	y0, y1 := float64(padTop), float64(h-padBottom)
	var b strings.Builder
	var x, y float64
	for i, p := range in {
		x = x0 + (x1-x0)*fraction(p.Time, from, to)
		y = y1 - (y1-y0)*math.Min(p.Value/top, 1)
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(coord(x))
		b.WriteByte(',')
		b.WriteString(coord(y))
	}
	v.Points, v.DotX, v.DotY = b.String(), coord(x), coord(y)
	last := in[len(in)-1].Value
	v.Last = amount(last, unit, opt.Ratio)
	v.Tip = title + ": last " + v.Last + ", peak " + amount(peak, unit, opt.Ratio) + ", " + v.From + "-" + v.To
	return render("line", v)
}

// stripView is what the strip template draws.
type stripView struct {
	W, H          int
	Empty         bool
	X0, X1, BandW string
	BarH, TimeY   string
	MidX, MidY    string
	From, To      string
	Rows          []stripRowView
}

type stripRowView struct {
	Name, Status string
	TextY, BarY  string
	Rects        []stripRectView
}

type stripRectView struct {
	Class, Fill, Tip string
	X, Y, W          string
}

// Strip renders upstream state spans as one band per upstream, sorted by
// name, across a time axis spanning [from, to]: healthy green, draining
// amber, removed red (classes mg-healthy, mg-draining, mg-removed; any
// other state mg-unknown, grey). Above each band are the upstream's name
// and its newest state with the time it started ("healthy since 14:03:05",
// in the location of the spans' times); when the window shows no change,
// "unchanged since" the oldest sample. Each span has a tooltip. With no
// spans the chart says "no data yet".
func Strip(spans map[string][]StateSpan, from, to time.Time, opt ChartOptions) template.HTML {
	w := size(opt.Width, defaultWidth, minWidth)
	x0, x1 := float64(4), float64(w-padRight)
	v := stripView{
		W: w, X0: coord(x0), X1: coord(x1), BandW: coord(x1 - x0),
		BarH: coord(stripBar), From: clock(from), To: clock(to),
	}

	names := make([]string, 0, len(spans))
	for name, ss := range spans {
		if len(ss) > 0 {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	if len(names) == 0 {
		v.Empty, v.H = true, minHeight
		v.MidX, v.MidY = coord(float64(w)/2), coord(float64(minHeight)/2+8)
		return render("strip", v)
	}

	y := float64(padTop)
	for _, name := range names {
		ss := spans[name]
		shown := clean(name)
		row := stripRowView{
			Name:  truncate(shown, maxName),
			TextY: coord(y + 11), BarY: coord(y + 15),
		}
		newest := ss[len(ss)-1]
		if len(ss) == 1 {
			row.Status = clean(newest.State) + ", unchanged since " + clock(newest.From)
		} else {
			row.Status = clean(newest.State) + " since " + clock(newest.From)
		}
		for _, sp := range ss {
			if sp.To.Before(from) || sp.From.After(to) {
				continue
			}
			a := x0 + (x1-x0)*fraction(sp.From, from, to)
			b := x0 + (x1-x0)*fraction(sp.To, from, to)
			fill, ok := stateFill[sp.State]
			if !ok {
				fill = unknownFill
			}
			row.Rects = append(row.Rects, stripRectView{
				Class: fill[0], Fill: fill[1],
				Tip: shown + ": " + clean(sp.State) + " " + clock(sp.From) + "-" + clock(sp.To),
				X:   coord(a), Y: row.BarY, W: coord(math.Max(b-a, 1)),
			})
		}
		v.Rows = append(v.Rows, row)
		y += stripRow
	}
	v.H = int(y) + padBottom
	v.TimeY = coord(float64(v.H - 3))
	return render("strip", v)
}

// render executes one of the chart templates.
func render(name string, v any) template.HTML {
	var b strings.Builder
	if err := chartTemplates.ExecuteTemplate(&b, name, v); err != nil {
		return template.HTML(fallback)
	}
	return template.HTML(b.String())
}

// size is a chart dimension: def if n is not positive, else n within
// [lo, maxSize].
func size(n, def, lo int) int {
	if n <= 0 {
		return def
	}
	return min(max(n, lo), maxSize)
}

// fraction is where t lies in [from, to], from 0 to 1; 1 if the span is
// empty.
func fraction(t, from, to time.Time) float64 {
	span := to.Sub(from)
	if span <= 0 {
		return 1
	}
	f := float64(t.Sub(from)) / float64(span)
	if !finite(f) {
		return 1
	}
	return math.Min(math.Max(f, 0), 1)
}

// niceCeil is the least of 1, 2 and 5 × 10^k at or above v; 1 for values
// too small to draw, v itself where that would overflow.
func niceCeil(v float64) float64 {
	if !finite(v) || v < 1e-9 {
		return 1
	}
	base := math.Pow10(int(math.Floor(math.Log10(v))))
	for _, m := range []float64{1, 2, 5, 10} {
		if n := m * base; n >= v && finite(n) {
			return n
		}
	}
	return v
}

// coord formats a coordinate with one decimal; 0 if it is not finite.
func coord(f float64) string {
	if !finite(f) {
		f = 0
	}
	return strconv.FormatFloat(f, 'f', 1, 64)
}

// amount formats a value with its unit: a ratio as a percentage with one
// decimal, else with three significant digits or so.
func amount(v float64, unit string, ratio bool) string {
	if !finite(v) {
		v = 0
	}
	if ratio {
		return strconv.FormatFloat(v*100, 'f', 1, 64) + "%"
	}
	var s string
	switch a := math.Abs(v); {
	case a == 0:
		s = "0"
	case a >= 1e6 || a < 0.001:
		s = strconv.FormatFloat(v, 'e', 2, 64)
	case a >= 100:
		s = strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		s = strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 1:
		s = strconv.FormatFloat(v, 'f', 2, 64)
	default:
		s = strconv.FormatFloat(v, 'f', 3, 64)
	}
	if unit == "" {
		return s
	}
	return s + " " + unit
}

// clock formats a time of day for the axis and the tooltips.
func clock(t time.Time) string { return t.Format("15:04:05") }

// clean makes s one line of valid XML character data: invalid UTF-8 and
// characters XML forbids become U+FFFD, line breaks and tabs spaces. It
// does not escape; html/template does.
func clean(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r == '\t' || r == '\n' || r == '\r':
			return ' '
		case r >= 0x20 && r <= 0xD7FF, r >= 0xE000 && r <= 0xFFFD, r >= 0x10000 && r <= 0x10FFFF:
			return r
		}
		return utf8.RuneError
	}, strings.ToValidUTF8(s, string(utf8.RuneError)))
}

// truncate shortens s to n runes, the last an ellipsis.
func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}
