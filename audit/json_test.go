package audit

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
)

// stdJSON is what encoding/json writes for v, without the newline.
func stdJSON(t testing.TB, v any) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		t.Fatal(err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

func TestAppendJSONMatchesEncodingJSON(t *testing.T) {
	ts := time.Date(2026, 11, 21, 8, 55, 18, 1234, time.UTC)
	tests := []struct {
		name string
		e    Event
	}{
		{"minimal", Event{Timestamp: ts}},
		{"request", Event{
			Timestamp: ts,
			Event:     EventFields{Action: "request", Outcome: OutcomeSuccess, Duration: 1646676},
			Source:    &Source{IP: "127.0.0.1", Port: 44192},
			URL:       &URL{Path: "/golang.org/x/mod/@v/v0.42.0.info"},
			HTTP:      &HTTP{Request: HTTPRequest{ID: "427eced0761e2972", Method: "GET"}, Response: HTTPResponse{StatusCode: 200, Bytes: 54}},
			Modgate:   ModgateGroup{Module: "golang.org/x/mod", Version: "v0.42.0", Kind: "info", Decision: "serve", Cache: "hit"},
		}},
		{"every field", Event{
			Timestamp: ts.In(time.FixedZone("x", 3600)),
			Event:     EventFields{Action: "request", Outcome: OutcomeFailure, Reason: "upstream p: answered 500", Duration: -1},
			Source:    &Source{},
			TLS: &TLS{Client: TLSClient{
				Subject: "CN=builder,O=ci",
				X509:    &X509{SAN: X509SAN{URI: []string{"spiffe://corp.example/ns/ci/sa/builder", "spiffe://x"}}},
				Hash:    &ClientHash{SHA256: "ab"},
			}},
			User:          &User{Name: "alice", Roles: []string{"ci", "release"}},
			Vulnerability: &Vulnerability{ID: []string{"GO-2026-0001", "GO-2026-0002"}},
			URL:           &URL{},
			HTTP:          &HTTP{},
			Modgate:       ModgateGroup{Module: "m", Version: "v", Kind: "k", SumDB: "s", Decision: "d", Rule: "r", Upstream: "u", OriginHost: "git.corp.example:8443", Cache: "c", Verification: "verified", OriginalDestination: "203.0.113.10:80", TraceID: "4bf92f3577b34da6a3ce929d0e0e4736"},
		}},
		{"chain", Event{Timestamp: ts, Chain: &Chain{Seq: 1, Prev: GenesisPrev}}},
		{"chain with drops and torn", Event{
			Timestamp: ts,
			Event:     EventFields{Action: ActionRecovered, Outcome: OutcomeFailure},
			Chain:     &Chain{Seq: 18446744073709551615, Prev: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", Dropped: 12, Torn: "ab"},
		}},
		{"chain with hostile prev", Event{Timestamp: ts, Chain: &Chain{Prev: "\"\n<\u2028\xff"}}},
		{"empty nested", Event{Timestamp: ts, TLS: &TLS{Client: TLSClient{X509: &X509{}, Hash: &ClientHash{}}}, User: &User{}}},
		{"hostile strings", Event{
			Timestamp: ts,
			Event:     EventFields{Reason: "quote \" backslash \\ nul \x00 bell \x07 newline \n tab \t del \x7f <html>&amp; \u2028\u2029 bad \xff\xfe utf8 é 日本"},
			URL:       &URL{Path: "/a\x1b[31m/b"},
		}},
	}
	for _, tt := range tests {
		want := stdJSON(t, &tt.e)
		if got := tt.e.appendJSON(nil); !bytes.Equal(got, want) {
			t.Errorf("%s: appendJSON =\n%s\nwant\n%s", tt.name, got, want)
		}
	}
}

func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "plain", "\"\\", "\x00\x1f\x7f", "\u2028\u2029", "\xff", "é日本", "<>&"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := appendString(nil, s)
		if want := stdJSON(t, s); !bytes.Equal(got, want) {
			t.Errorf("appendString(%q) = %s, want %s", s, got, want)
		}
	})
}

func BenchmarkRecordEncode(b *testing.B) {
	e := Event{
		Timestamp: time.Now(),
		Event:     EventFields{Action: "request", Outcome: OutcomeSuccess, Duration: 1646676},
		Source:    &Source{IP: "127.0.0.1", Port: 44192},
		URL:       &URL{Path: "/golang.org/x/mod/@v/v0.42.0.info"},
		HTTP:      &HTTP{Request: HTTPRequest{ID: "427eced0761e2972", Method: "GET"}, Response: HTTPResponse{StatusCode: 200, Bytes: 54}},
		Modgate:   ModgateGroup{Module: "golang.org/x/mod", Version: "v0.42.0", Kind: "info", Decision: "serve", Cache: "hit"},
	}
	b.Run("appendJSON", func(b *testing.B) {
		var buf []byte
		for b.Loop() {
			buf = e.appendJSON(buf[:0])
		}
	})
	b.Run("encoding/json", func(b *testing.B) {
		for b.Loop() {
			json.Marshal(&e)
		}
	})
}

func TestWrittenLinesAreEncodingJSON(t *testing.T) {
	// What the Writer writes, chain included, is what encoding/json
	// writes for the Event it decodes to.
	sink := &syncBuffer{}
	w := NewWriter(sink)
	for i := range 20 {
		w.Record(event(i))
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	for l := range bytes.Lines(sink.bytes()) {
		l = bytes.TrimSuffix(l, []byte("\n"))
		var e Event
		if err := json.Unmarshal(l, &e); err != nil {
			t.Fatal(err)
		}
		if want := stdJSON(t, &e); !bytes.Equal(l, want) {
			t.Errorf("written line =\n%s\nencoding/json writes\n%s", l, want)
		}
		if got := e.appendJSON(nil); !bytes.Equal(l, got) {
			t.Errorf("written line =\n%s\nappendJSON writes\n%s", l, got)
		}
	}
}
