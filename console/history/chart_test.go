package history

import (
	"encoding/xml"
	"errors"
	"io"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"
)

const hostile = `"><script>alert(1)</script>`

// numeric are the attributes that hold numbers, or lists of them.
var numeric = map[string]bool{
	"width": true, "height": true, "x": true, "y": true, "x1": true, "y1": true, "x2": true, "y2": true,
	"cx": true, "cy": true, "r": true, "points": true, "viewBox": true,
}

// checkSVG checks that out is one well-formed svg element with no script,
// no style, no event handlers and only finite numbers in its numeric
// attributes, and returns its character data and attribute values.
func checkSVG(t testing.TB, out string) (text []string) {
	t.Helper()
	if strings.Contains(strings.ToLower(out), "<script") {
		t.Fatalf("output has <script:\n%s", out)
	}
	d := xml.NewDecoder(strings.NewReader(out))
	depth, roots := 0, 0
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("output is not well-formed XML: %v\n%s", err, out)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			if depth == 0 {
				roots++
				if tok.Name.Local != "svg" {
					t.Fatalf("root element is %s, want svg", tok.Name.Local)
				}
			}
			switch tok.Name.Local {
			case "script", "style", "foreignObject", "a", "use", "image":
				t.Fatalf("output has a %s element:\n%s", tok.Name.Local, out)
			}
			depth++
			for _, a := range tok.Attr {
				name := a.Name.Local
				if name == "style" || strings.HasPrefix(strings.ToLower(name), "on") || strings.Contains(name, "href") {
					t.Fatalf("output has a %s attribute:\n%s", name, out)
				}
				if numeric[name] {
					for _, f := range strings.FieldsFunc(a.Value, func(r rune) bool { return r == ' ' || r == ',' }) {
						v, err := strconv.ParseFloat(f, 64)
						if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
							t.Fatalf("attribute %s=%q is not finite numbers:\n%s", name, a.Value, out)
						}
					}
				}
				text = append(text, a.Value)
			}
		case xml.EndElement:
			depth--
		case xml.CharData:
			if depth == 0 && strings.TrimSpace(string(tok)) != "" {
				t.Fatalf("text outside the svg element: %q", tok)
			}
			text = append(text, string(tok))
		}
	}
	if roots != 1 {
		t.Fatalf("output has %d root elements, want 1", roots)
	}
	return text
}

func TestLine(t *testing.T) {
	from, to := at(0), at(3600)
	ramp := []Point{{at(600), 0}, {at(1200), 1.5}, {at(1800), 3}}
	tests := []struct {
		name     string
		title    string
		pts      []Point
		from, to time.Time
		opt      ChartOptions
		want     []string // in the output
		notWant  []string
	}{
		{name: "no points", title: "Requests", want: []string{"no data yet", ">Requests<"}, notWant: []string{"polyline"}},
		{name: "points outside the window", title: "Requests", pts: []Point{{at(-10), 1}, {at(3601), 1}},
			want: []string{"no data yet"}},
		{name: "not finite", title: "Requests", pts: []Point{{at(10), math.NaN()}, {at(20), math.Inf(1)}, {at(30), math.Inf(-1)}},
			want: []string{"no data yet"}},
		{name: "ramp", title: "Requests", pts: ramp, opt: ChartOptions{Unit: "req/s"},
			want:    []string{`class="mg-line"`, ">3.00 req/s<", ">5<", "peak 3.00 req/s", "14:00:00", "15:00:00"},
			notWant: []string{"mg-alert", "no data yet"}},
		{name: "all zero", title: "Failures", pts: []Point{{at(10), 0}, {at(20), 0}},
			want: []string{">0<", ">1<"}},
		{name: "one point", title: "Requests", pts: []Point{{at(3600), 7}},
			want: []string{"<circle", ">10<", ">7.00<"}},
		{name: "negative", title: "Requests", pts: []Point{{at(10), -5}}, want: []string{">0<"}},
		{name: "ratio", title: "Hit ratio", pts: []Point{{at(10), 0.5}, {at(20), 0.973}}, opt: ChartOptions{Ratio: true, Unit: "ignored"},
			want: []string{">97.3%<", ">100%<", ">0%<"}, notWant: []string{"ignored"}},
		{name: "highlight", title: "Verification failures", pts: []Point{{at(10), 0.1}}, opt: ChartOptions{Highlight: true},
			want: []string{`class="mg-line mg-alert"`, ">0.100<"}},
		{name: "huge", title: "Requests", pts: []Point{{at(10), math.MaxFloat64}, {at(20), 1e300}}},
		{name: "tiny", title: "Requests", pts: []Point{{at(10), math.SmallestNonzeroFloat64}}},
		{name: "empty window", title: "Requests", pts: ramp, from: at(600), to: at(600)},
		{name: "reversed window", title: "Requests", pts: ramp, from: at(3600), to: at(0), want: []string{"no data yet"}},
		{name: "odd sizes", title: "Requests", pts: ramp, opt: ChartOptions{Width: -1, Height: 1 << 40}},
		{name: "hostile title and unit", title: hostile, pts: ramp, opt: ChartOptions{Unit: hostile}},
		{name: "control characters", title: "a\x00b\x01c\x1b\ufffed\xff", pts: ramp},
		{name: "long title", title: strings.Repeat("x", 200), want: []string{strings.Repeat("x", maxTitle-1) + "…<"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, tto := from, to
			if !tt.from.IsZero() || !tt.to.IsZero() {
				f, tto = tt.from, tt.to
			}
			out := string(Line(tt.title, tt.pts, f, tto, tt.opt))
			text := checkSVG(t, out)
			if !strings.Contains(tt.title, "NaN") && (strings.Contains(out, "NaN") || strings.Contains(out, "Inf")) {
				t.Errorf("Line(%q) has NaN or Inf:\n%s", tt.title, out)
			}
			if out == fallback {
				t.Errorf("Line(%q) = the fallback", tt.title)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("Line(%q) lacks %q:\n%s", tt.title, w, out)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(out, w) {
					t.Errorf("Line(%q) has %q:\n%s", tt.title, w, out)
				}
			}
			if !contains(text, clean(tt.title)) {
				t.Errorf("Line(%q): no text or attribute reads back as the title; got %q", tt.title, text)
			}
		})
	}
}

// contains reports whether any of text is s.
func contains(text []string, s string) bool {
	for _, x := range text {
		if x == s {
			return true
		}
	}
	return false
}

func TestStrip(t *testing.T) {
	from, to := at(0), at(3600)
	tests := []struct {
		name    string
		spans   map[string][]StateSpan
		want    []string
		notWant []string
	}{
		{name: "nil", want: []string{"no data yet"}},
		{name: "no spans", spans: map[string][]StateSpan{"a": nil}, want: []string{"no data yet"}},
		{name: "states", spans: map[string][]StateSpan{
			"b": {{"healthy", at(0), at(1200)}, {"draining", at(1200), at(2400)}, {"removed", at(2400), at(3000)}, {"healthy", at(3000), at(3590)}},
			"a": {{"healthy", at(0), at(3590)}},
		}, want: []string{
			`class="mg-healthy"`, `class="mg-draining"`, `class="mg-removed"`,
			"healthy since 14:50:00", "healthy, unchanged since 14:00:00", "b: draining 14:20:00-14:40:00",
		}, notWant: []string{"no data yet", "mg-unknown"}},
		{name: "outside the window", spans: map[string][]StateSpan{
			"a": {{"healthy", at(-100), at(-50)}, {"draining", at(4000), at(5000)}},
		}, notWant: []string{"mg-healthy", "mg-draining"}},
		{name: "zero width", spans: map[string][]StateSpan{"a": {{"healthy", at(3600), at(3600)}}},
			want: []string{`width="1.0"`}},
		{name: "hostile", spans: map[string][]StateSpan{hostile: {{hostile, at(10), at(20)}}},
			want: []string{`class="mg-unknown"`}},
		{name: "control characters", spans: map[string][]StateSpan{"a\x00\x01\xfe": {{"\x02", at(10), at(20)}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := string(Strip(tt.spans, from, to, ChartOptions{}))
			text := checkSVG(t, out)
			if strings.Contains(out, "NaN") || strings.Contains(out, "Inf") {
				t.Errorf("Strip() has NaN or Inf:\n%s", out)
			}
			if out == fallback {
				t.Error("Strip() = the fallback")
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("Strip() lacks %q:\n%s", w, out)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(out, w) {
					t.Errorf("Strip() has %q:\n%s", w, out)
				}
			}
			for name, ss := range tt.spans {
				if len(ss) > 0 && !contains(text, clean(name)) {
					t.Errorf("Strip(): no text reads back as the name %q; got %q", name, text)
				}
			}
		})
	}
}

func TestNiceCeil(t *testing.T) {
	tests := []struct{ in, want float64 }{
		{0, 1}, {-3, 1}, {math.NaN(), 1}, {math.Inf(1), 1}, {1e-12, 1},
		{0.3, 0.5}, {1, 1}, {1.01, 2}, {2, 2}, {3, 5}, {7, 10}, {10, 10}, {11, 20}, {4500, 5000},
		{math.MaxFloat64, math.MaxFloat64},
	}
	for _, tt := range tests {
		if got := niceCeil(tt.in); got != tt.want {
			t.Errorf("niceCeil(%v) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestAmount(t *testing.T) {
	tests := []struct {
		v     float64
		unit  string
		ratio bool
		want  string
	}{
		{0, "req/s", false, "0 req/s"},
		{0.5, "", false, "0.500"},
		{3, "req/s", false, "3.00 req/s"},
		{42.25, "req/s", false, "42.2 req/s"},
		{1234, "req/s", false, "1234 req/s"},
		{2.5e7, "req/s", false, "2.50e+07 req/s"},
		{0.0001, "", false, "1.00e-04"},
		{math.NaN(), "", false, "0"},
		{0.9734, "%", true, "97.3%"},
		{1, "%", true, "100.0%"},
	}
	for _, tt := range tests {
		if got := amount(tt.v, tt.unit, tt.ratio); got != tt.want {
			t.Errorf("amount(%v, %q, %v) = %q, want %q", tt.v, tt.unit, tt.ratio, got, tt.want)
		}
	}
}

func FuzzLine(f *testing.F) {
	f.Add("Requests", "req/s", 1.5, 3.0, int64(600), int64(3600), false, false, 320, 100)
	f.Add(hostile, hostile, math.NaN(), math.Inf(1), int64(-1), int64(1<<62), true, true, -1, 0)
	f.Add("a\x00\xff\ufffe", "", 0.0, -1.0, int64(0), int64(0), true, false, 1<<30, 1)
	f.Fuzz(func(t *testing.T, title, unit string, v1, v2 float64, s1, s2 int64, ratio, highlight bool, w, h int) {
		pts := []Point{{time.Unix(s1, 0), v1}, {time.Unix(s2, 0), v2}, {at(1800), v1 + v2}}
		out := string(Line(title, pts, at(0), at(3600), ChartOptions{Width: w, Height: h, Unit: unit, Ratio: ratio, Highlight: highlight}))
		checkSVG(t, out)
		if out == fallback {
			t.Errorf("Line(%q) = the fallback", title)
		}
	})
}

func FuzzStrip(f *testing.F) {
	f.Add("a", "healthy", int64(0), int64(600), "b", "draining", 320)
	f.Add(hostile, hostile, int64(-1), int64(1<<62), "", "\x00", -1)
	f.Fuzz(func(t *testing.T, name1, state1 string, s1, s2 int64, name2, state2 string, w int) {
		spans := map[string][]StateSpan{
			name1: {{state1, time.Unix(s1, 0), time.Unix(s2, 0)}, {state2, time.Unix(s2, 0), at(3600)}},
			name2: {{state2, at(60), time.Unix(s1, 0)}},
		}
		out := string(Strip(spans, at(0), at(3600), ChartOptions{Width: w}))
		checkSVG(t, out)
		if out == fallback {
			t.Error("Strip() = the fallback")
		}
	})
}
