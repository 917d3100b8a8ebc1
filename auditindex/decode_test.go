package auditindex

import (
	"bytes"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"github.com/modgate/modgate/audit"
)

// sameFields reports whether a and b are the same fields.
func sameFields(a, b fields) bool {
	ta, tb := a.ts, b.ts
	a.ts, b.ts = ta.UTC(), tb.UTC()
	return ta.Equal(tb) && a.module == b.module && a.version == b.version && a.identity == b.identity &&
		a.rule == b.rule && a.decision == b.decision && a.kind == b.kind && a.action == b.action &&
		a.verification == b.verification && a.status == b.status
}

// checkDecode checks that what the index makes of line — fields and
// chain, by the fast path or encoding/json — is what encoding/json and
// audit.Checker make of it. It reports whether the fast path took it.
func checkDecode(t testing.TB, line []byte) bool {
	t.Helper()
	var (
		d    decoder
		f    fields
		c    audit.Chain
		want fields
	)
	fast := d.decode(line, &f, &c)
	decodeSlow(line, &want)

	var ck1, ck2 audit.Checker
	c1, _, err1 := ck1.Add(audit.Line{Bytes: line, Complete: true})
	l := audit.Line{Bytes: line, Complete: true}
	if fast {
		l.Chain = &c
	}
	c2, _, err2 := ck2.Add(l)
	if (err1 == nil) != (err2 == nil) || err1 == nil && *c1 != *c2 {
		t.Fatalf("line %q: chain %+v, %v; with the fast path's, %+v, %v", line, c1, err1, c2, err2)
	}
	if !fast {
		return false
	}
	var e audit.Event
	var syntax *json.SyntaxError
	if err := json.Unmarshal(line, &e); errors.As(err, &syntax) {
		t.Fatalf("line %q: the fast path took what encoding/json does not parse: %v", line, err)
	}
	if !sameFields(f, want) {
		t.Fatalf("line %q:\nfast path %+v\nencoding/json %+v", line, f, want)
	}
	return true
}

// seedLines returns the lines of a generated log.
func seedLines(t testing.TB) [][]byte {
	t.Helper()
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	writeEvents(t, path, audit.FileOptions{}, 0, 60)
	return fileLines(t, path)
}

func TestDecode(t *testing.T) {
	lines := seedLines(t)
	for i, l := range lines {
		if !checkDecode(t, l) {
			t.Errorf("line %d, as the Writer writes it, left to encoding/json: %s", i+1, l)
		}
	}
	base := string(lines[0]) // user, source, modgate, http, chain
	sub := func(old, new string) string {
		if !strings.Contains(base, old) {
			t.Fatalf("%q not in %s", old, base)
		}
		return strings.Replace(base, old, new, 1)
	}
	tests := []struct {
		name string
		line string
		fast bool
	}{
		{"as written", base, true},
		{"spaces", " " + strings.ReplaceAll(base, `,"`, " ,\t\"") + "\r ", true},
		{"unknown keys", sub(`{"@timestamp"`, `{"extra":[1,-2.5e+3,true,null,{"a":"\u00e9\\n"}],"@timestamp"`), true},
		{"non-ASCII value", sub(`"example.com/Mod0"`, `"example.com/Mød0"`), true},
		{"no identity", sub(`"user":{"name":"Alice0"},`, ``), true},
		{"empty user", sub(`"user":{"name":"Alice0"}`, `"user":{}`), true},
		{"an escape in a kept string", sub(`"example.com/Mod0"`, `"example.com/\u004dod0"`), false},
		{"invalid UTF-8 in a kept string", sub(`"example.com/Mod0"`, "\"example.com/M\xffod0\""), false},
		{"a key of another case", sub(`"modgate":`, `"Modgate":`), false},
		{"a key of another case, inside", sub(`"module":`, `"MODULE":`), false},
		{"an escaped key", sub(`"modgate":`, `"modg\u0061te":`), false},
		{"a non-ASCII key", sub(`{"@timestamp"`, `{"ſource":{"ip":"1.2.3.4"},"@timestamp"`), false},
		{"a repeated key", sub(`"modgate":`, `"modgate":{"rule":"x"},"modgate":`), false},
		{"null", sub(`"module":"example.com/Mod0"`, `"module":null`), false},
		{"a number for a string", sub(`"module":"example.com/Mod0"`, `"module":5`), false},
		{"a fraction for a status", sub(`"status_code":200`, `"status_code":200.0`), false},
		{"an exponent for a status", sub(`"status_code":200`, `"status_code":2e2`), false},
		{"a negative seq", sub(`"seq":1,`, `"seq":-1,`), false},
		{"a huge seq", sub(`"seq":1,`, `"seq":99999999999999999999,`), false},
		{"a bad timestamp", sub(`"2026-03-01T12:00:00Z"`, `"2026-13-01T12:00:00Z"`), false},
		{"no chain", sub(`,"chain":{"seq":1,`, `,"chainx":{"seq":1,`), false},
		{"trailing garbage", base + "x", false},
		{"two objects", base + base, false},
		{"an array", "[" + base + "]", false},
		{"cut short", base[:len(base)-1], false},
		{"a control character", sub(`"Alice0"`, "\"Ali\tce0\""), false},
		{"a bad escape", sub(`"req-0"`, `"req-\x"`), false},
		{"deep", sub(`{"@timestamp"`, `{"deep":`+strings.Repeat("[", 100)+strings.Repeat("]", 100)+`,"@timestamp"`), false},
		{"empty", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := checkDecode(t, []byte(tt.line)); got != tt.fast {
				t.Errorf("fast path took it: %v, want %v", got, tt.fast)
			}
		})
	}
}

func TestDecodeMutations(t *testing.T) {
	// Lines as written, changed at random: the fast path agrees with
	// encoding/json, or leaves the line to it.
	lines := seedLines(t)
	rnd := rand.New(rand.NewPCG(1, 2))
	tokens := []string{`"`, `\`, `{`, `}`, `[`, `]`, `,`, `:`, ` `, `null`, `0`, `-`, `.`, `e`, `\u0041`, "\xff", "é", `"Modgate"`, `"module"`, `"chain"`, `"seq"`}
	fast := 0
	for i := range 20000 {
		l := bytes.Clone(lines[rnd.IntN(len(lines))])
		for range 1 + rnd.IntN(3) {
			at := rnd.IntN(len(l) + 1)
			switch rnd.IntN(4) {
			case 0: // flip a byte
				if at < len(l) {
					l[at] ^= byte(1 << rnd.IntN(8))
				}
			case 1: // insert a token
				l = append(l[:at], append([]byte(tokens[rnd.IntN(len(tokens))]), l[at:]...)...)
			case 2: // delete a few bytes
				l = append(l[:at], l[min(len(l), at+1+rnd.IntN(4)):]...)
			case 3: // change the case of a letter
				if at < len(l) && ('a' <= l[at] && l[at] <= 'z') {
					l[at] -= 'a' - 'A'
				}
			}
		}
		if checkDecode(t, l) {
			fast++
		}
		if t.Failed() {
			t.Fatalf("mutation %d", i)
		}
	}
	t.Logf("%d of 20000 mutated lines took the fast path", fast)
}

func FuzzDecode(f *testing.F) {
	for _, l := range seedLines(f) {
		f.Add(l)
	}
	f.Add([]byte(`{"chain":{"seq":1,"prev":"` + audit.GenesisPrev + `"}}`))
	f.Add([]byte(`{"Chain":{"seq":1,"prev":"` + audit.GenesisPrev + `"},"chain":{"seq":2}}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		checkDecode(t, line)
	})
}

func BenchmarkDecode(b *testing.B) {
	lines := seedLines(b)
	b.Run("fast", func(b *testing.B) {
		var (
			d decoder
			f fields
			c audit.Chain
		)
		for i := 0; b.Loop(); i++ {
			if !d.decode(lines[i%len(lines)], &f, &c) {
				b.Fatal("left to encoding/json")
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		var f fields
		for i := 0; b.Loop(); i++ {
			decodeSlow(lines[i%len(lines)], &f)
		}
	})
}
