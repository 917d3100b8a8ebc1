package goproxy

import (
	"errors"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/tlog"
)

var acceptTests = []struct {
	name   string
	method string // "" means GET
	target string
	max    int // maxTarget argument; 0 means default
	want   Request
	path   string // want.Path(); "" means target
}{
	{
		name:   "list",
		target: "/golang.org/x/text/@v/list",
		want:   Request{Kind: KindList, Module: "golang.org/x/text"},
	},
	{
		name:   "info",
		target: "/golang.org/x/text/@v/v0.3.8.info",
		want:   Request{Kind: KindInfo, Module: "golang.org/x/text", Version: "v0.3.8"},
	},
	{
		name:   "mod",
		target: "/golang.org/x/text/@v/v0.3.8.mod",
		want:   Request{Kind: KindMod, Module: "golang.org/x/text", Version: "v0.3.8"},
	},
	{
		name:   "zip",
		target: "/golang.org/x/text/@v/v0.3.8.zip",
		want:   Request{Kind: KindZip, Module: "golang.org/x/text", Version: "v0.3.8"},
	},
	{
		name:   "latest",
		target: "/golang.org/x/text/@latest",
		want:   Request{Kind: KindLatest, Module: "golang.org/x/text"},
	},
	{
		name:   "head",
		method: "HEAD",
		target: "/golang.org/x/text/@v/v0.3.8.zip",
		want:   Request{Kind: KindZip, Module: "golang.org/x/text", Version: "v0.3.8"},
	},
	{
		name:   "bang escaped path raw",
		target: "/github.com/!burnt!sushi/toml/@v/v1.3.2.mod",
		want:   Request{Kind: KindMod, Module: "github.com/BurntSushi/toml", Version: "v1.3.2"},
		path:   "/github.com/%21burnt%21sushi/toml/@v/v1.3.2.mod",
	},

	{
		name:   "bang escaped path as the go command sends it",
		target: "/github.com/%21burnt%21sushi/toml/@v/v1.3.2.mod",
		want:   Request{Kind: KindMod, Module: "github.com/BurntSushi/toml", Version: "v1.3.2"},
	},
	{
		name:   "bang escaped path list",
		target: "/github.com/!azure/azure-sdk-for-go/@v/list",
		want:   Request{Kind: KindList, Module: "github.com/Azure/azure-sdk-for-go"},
		path:   "/github.com/%21azure/azure-sdk-for-go/@v/list",
	},
	{
		name:   "incompatible zip",
		target: "/github.com/docker/docker/@v/v20.10.7+incompatible.zip",
		want:   Request{Kind: KindZip, Module: "github.com/docker/docker", Version: "v20.10.7+incompatible"},
	},
	{
		name:   "incompatible info",
		target: "/github.com/docker/docker/@v/v20.10.7+incompatible.info",
		want:   Request{Kind: KindInfo, Module: "github.com/docker/docker", Version: "v20.10.7+incompatible"},
	},
	{
		name:   "pseudo-version mod",
		target: "/golang.org/x/tools/@v/v0.0.0-20191109021931-daa7c04131f5.mod",
		want:   Request{Kind: KindMod, Module: "golang.org/x/tools", Version: "v0.0.0-20191109021931-daa7c04131f5"},
	},
	{
		name:   "pseudo-version after prerelease",
		target: "/example.com/m/@v/v1.2.4-pre.0.20200101000000-abcdefabcdef.zip",
		want:   Request{Kind: KindZip, Module: "example.com/m", Version: "v1.2.4-pre.0.20200101000000-abcdefabcdef"},
	},
	{
		name:   "gopkg.in",
		target: "/gopkg.in/yaml.v3/@v/v3.0.1.zip",
		want:   Request{Kind: KindZip, Module: "gopkg.in/yaml.v3", Version: "v3.0.1"},
	},
	{
		name:   "gopkg.in latest",
		target: "/gopkg.in/yaml.v3/@latest",
		want:   Request{Kind: KindLatest, Module: "gopkg.in/yaml.v3"},
	},
	{
		name:   "major version suffix",
		target: "/github.com/go-chi/chi/v5/@v/v5.0.12.mod",
		want:   Request{Kind: KindMod, Module: "github.com/go-chi/chi/v5", Version: "v5.0.12"},
	},
	{
		name:   "v2 module list",
		target: "/example.com/m/v2/@v/list",
		want:   Request{Kind: KindList, Module: "example.com/m/v2"},
	},
	{
		name:   "prerelease",
		target: "/example.com/m/v2/@v/v2.0.0-rc.1.info",
		want:   Request{Kind: KindInfo, Module: "example.com/m/v2", Version: "v2.0.0-rc.1"},
	},
	{
		name:   "info query branch",
		target: "/golang.org/x/text/@v/master.info",
		want:   Request{Kind: KindInfo, Module: "golang.org/x/text", Version: "master"},
	},
	{
		name:   "info query upper-case branch",
		target: "/example.com/m/@v/!feature-!x.info",
		want:   Request{Kind: KindInfo, Module: "example.com/m", Version: "Feature-X"},
		path:   "/example.com/m/@v/%21feature-%21x.info",
	},
	{
		name:   "info query partial version",
		target: "/example.com/m/@v/v1.2.info",
		want:   Request{Kind: KindInfo, Module: "example.com/m", Version: "v1.2"},
	},
	{
		name:   "info query build metadata",
		target: "/example.com/m/@v/v1.2.3+meta.info",
		want:   Request{Kind: KindInfo, Module: "example.com/m", Version: "v1.2.3+meta"},
	},
	{
		name:   "info query latest",
		target: "/example.com/m/@v/latest.info",
		want:   Request{Kind: KindInfo, Module: "example.com/m", Version: "latest"},
	},
	{
		name:   "info query list",
		target: "/example.com/m/@v/list.info",
		want:   Request{Kind: KindInfo, Module: "example.com/m", Version: "list"},
	},
	{
		name:   "info query commit hash",
		target: "/example.com/m/@v/daa7c04131f5.info",
		want:   Request{Kind: KindInfo, Module: "example.com/m", Version: "daa7c04131f5"},
	},
	{
		name:   "info query punctuation",
		target: "/a.com/m/@v/a$b(c)[d]{e}^f,g=h&i~j!k.info",
		want:   Request{Kind: KindInfo, Module: "a.com/m", Version: "a$b(c)[d]{e}^f,g=h&i~jK"},
		path:   "/a.com/m/@v/a$b(c)[d]{e}^f,g=h&i~j%21k.info",
	},

	{
		name:   "tilde and underscore",
		target: "/example.com/~user/my_mod/@latest",
		want:   Request{Kind: KindLatest, Module: "example.com/~user/my_mod"},
	},
	{
		name:   "target at custom limit",
		target: "/golang.org/x/text/@v/list",
		max:    len("/golang.org/x/text/@v/list"),
		want:   Request{Kind: KindList, Module: "golang.org/x/text"},
	},
	{
		name:   "sumdb supported",
		target: "/sumdb/sum.golang.org/supported",
		want:   Request{Kind: KindSumDBSupported, SumDB: "sum.golang.org"},
	},
	{
		name:   "sumdb latest",
		target: "/sumdb/sum.golang.org/latest",
		want:   Request{Kind: KindSumDBLatest, SumDB: "sum.golang.org"},
	},
	{
		name:   "sumdb lookup",
		target: "/sumdb/sum.golang.org/lookup/golang.org/x/text@v0.3.8",
		want:   Request{Kind: KindSumDBLookup, SumDB: "sum.golang.org", Module: "golang.org/x/text", Version: "v0.3.8"},
	},
	{
		name:   "sumdb lookup escaped",
		target: "/sumdb/sum.golang.org/lookup/github.com/!burnt!sushi/toml@v1.3.2",
		want:   Request{Kind: KindSumDBLookup, SumDB: "sum.golang.org", Module: "github.com/BurntSushi/toml", Version: "v1.3.2"},
		path:   "/sumdb/sum.golang.org/lookup/github.com/%21burnt%21sushi/toml@v1.3.2",
	},
	{
		name:   "sumdb lookup incompatible",
		target: "/sumdb/sum.golang.org/lookup/github.com/docker/docker@v20.10.7+incompatible",
		want:   Request{Kind: KindSumDBLookup, SumDB: "sum.golang.org", Module: "github.com/docker/docker", Version: "v20.10.7+incompatible"},
	},
	{
		name:   "sumdb tile",
		target: "/sumdb/sum.golang.org/tile/8/0/001",
		want:   Request{Kind: KindSumDBTile, SumDB: "sum.golang.org", Tile: tlog.Tile{H: 8, L: 0, N: 1, W: 256}},
	},
	{
		name:   "sumdb partial tile",
		target: "/sumdb/sum.golang.org/tile/8/0/x001/234.p/5",
		want:   Request{Kind: KindSumDBTile, SumDB: "sum.golang.org", Tile: tlog.Tile{H: 8, L: 0, N: 1234, W: 5}},
	},
	{
		name:   "sumdb data tile",
		target: "/sumdb/sum.golang.org/tile/8/data/000",
		want:   Request{Kind: KindSumDBTile, SumDB: "sum.golang.org", Tile: tlog.Tile{H: 8, L: -1, N: 0, W: 256}},
	},
	{
		name:   "sumdb partial data tile",
		target: "/sumdb/sum.golang.org/tile/8/data/x002/x345/678.p/255",
		want:   Request{Kind: KindSumDBTile, SumDB: "sum.golang.org", Tile: tlog.Tile{H: 8, L: -1, N: 2345678, W: 255}},
	},
	{
		name:   "sumdb level 2 tile",
		target: "/sumdb/sum.golang.org/tile/8/2/000.p/7",
		want:   Request{Kind: KindSumDBTile, SumDB: "sum.golang.org", Tile: tlog.Tile{H: 8, L: 2, N: 0, W: 7}},
	},
	{
		name:   "sumdb other name",
		target: "/sumdb/sum.example-corp.com/latest",
		want:   Request{Kind: KindSumDBLatest, SumDB: "sum.example-corp.com"},
	},
}

func TestParseAccepted(t *testing.T) {
	for _, tt := range acceptTests {
		t.Run(tt.name, func(t *testing.T) {
			method := tt.method
			if method == "" {
				method = "GET"
			}
			r, err := Parse(method, tt.target, tt.max)
			if err != nil {
				t.Fatalf("Parse(%q, %q) = %v, want %+v", method, tt.target, err, tt.want)
			}
			if r != tt.want {
				t.Fatalf("Parse(%q, %q) = %+v, want %+v", method, tt.target, r, tt.want)
			}
			wantPath := tt.path
			if wantPath == "" {
				wantPath = tt.target
			}
			if p := r.Path(); p != wantPath {
				t.Errorf("Parse(%q).Path() = %q, want %q", tt.target, p, wantPath)
			}
			checkRoundTrip(t, r)
		})
	}
}

var hostileTests = []struct {
	name   string
	method string // "" means GET
	target string
	max    int // maxTarget argument; 0 means default
	want   error
}{
	// Versions an origin could pass to git as options (CVE-2025-68119).
	{name: "query beginning with a dash", target: "/corp.example.com/lib/@v/-uploadpack=touch.info", want: ErrMalformed},
	{name: "query with dot-dot", target: "/corp.example.com/lib/@v/main..x.info", want: ErrMalformed},
	{name: "lookup version with a dash", target: "/sumdb/sum.golang.org/lookup/corp.example.com/lib@-x", want: ErrMalformed},
	// Percent-encoding is never sent by the go command: every spelling of
	// a resource but the canonical one is refused.
	{name: "encoded at marker", target: "/golang.org/x/mod/%40v/list", want: ErrMalformed},
	{name: "encoded letter", target: "/golang.org/x/m%6Fd/@v/list", want: ErrMalformed},
	{name: "encoded dot before the extension", target: "/golang.org/x/mod/@v/v0.22.0%2Einfo", want: ErrMalformed},
	{name: "encoded at marker of a mod", target: "/github.com/stretchr/testify/%40v/v1.9.0.mod", want: ErrMalformed},
	{name: "encoded bang in lower-case hex", target: "/github.com/%21burnt/toml/@v/v1.3.2.mod%2e", want: ErrMalformed},
	{name: "encoded exclamation the other way", target: "/github.com/%2521burnt/toml/@v/list", want: ErrMalformed},
	{name: "encoded unreserved bytes", target: "/golang.org/x/tex%74/%40v/v0%2E3.8.zip", want: ErrMalformed},
	{name: "encoded sumdb lookup", target: "/sumdb/sum.golang.org/lookup/golang.org/x/mod%40v0.22.0", want: ErrMalformed},
	{name: "encoded sumdb tile", target: "/sumdb/sum.golang.org/tile/8/0/%30%30%31", want: ErrMalformed},
	{name: "encoded sumdb name", target: "/sumdb/sum.golang%2Eorg/latest", want: ErrMalformed},
	// Methods.
	{name: "POST", method: "POST", target: "/golang.org/x/text/@v/list", want: ErrMethod},
	{name: "PUT", method: "PUT", target: "/golang.org/x/text/@v/v0.3.8.zip", want: ErrMethod},
	{name: "DELETE", method: "DELETE", target: "/golang.org/x/text/@v/list", want: ErrMethod},
	{name: "OPTIONS", method: "OPTIONS", target: "*", want: ErrMethod},
	{name: "PATCH", method: "PATCH", target: "/golang.org/x/text/@v/list", want: ErrMethod},
	{name: "lower-case get", method: "get", target: "/golang.org/x/text/@v/list", want: ErrMethod},
	{name: "GET with space", method: "GET ", target: "/golang.org/x/text/@v/list", want: ErrMethod},
	{name: "control bytes in method", method: "G\x00ET\r\nX: y", target: "/golang.org/x/text/@v/list", want: ErrMethod},
	{name: "long method", method: strings.Repeat("GET\n", 200), target: "/", want: ErrMethod},

	// Length.
	{name: "overlong default", target: "/" + strings.Repeat("a", DefaultMaxTarget), want: ErrMalformed},
	{name: "overlong default valid", target: "/example.com/" + strings.Repeat("a", DefaultMaxTarget) + "/@v/list", want: ErrMalformed},
	{name: "overlong custom", target: "/golang.org/x/text/@v/list", max: 25, want: ErrMalformed},

	// Target shape.
	{name: "empty target", target: "", want: ErrMalformed},
	{name: "no leading slash", target: "golang.org/x/text/@v/list", want: ErrMalformed},
	{name: "absolute form", target: "http://proxy.example.test/golang.org/x/text/@v/list", want: ErrMalformed},
	{name: "asterisk form", target: "*", want: ErrMalformed},
	{name: "empty query", target: "/golang.org/x/text/@v/list?", want: ErrMalformed},
	{name: "query", target: "/golang.org/x/text/@v/list?go-get=1", want: ErrMalformed},
	{name: "fragment", target: "/golang.org/x/text/@v/list#x", want: ErrMalformed},

	// Traversal and non-canonical structure.
	{name: "dot-dot", target: "/golang.org/x/../x/text/@v/list", want: ErrMalformed},
	{name: "dot", target: "/golang.org/./x/text/@v/list", want: ErrMalformed},
	{name: "leading double slash", target: "//golang.org/x/text/@v/list", want: ErrMalformed},
	{name: "inner double slash", target: "/golang.org//x/text/@v/list", want: ErrMalformed},
	{name: "trailing slash", target: "/golang.org/x/text/@v/list/", want: ErrMalformed},
	{name: "trailing slash no endpoint", target: "/golang.org/x/text/", want: ErrMalformed},
	{name: "encoded dot-dot", target: "/golang.org/x/%2e%2e/text/@v/list", want: ErrMalformed},
	{name: "encoded dot-dot upper", target: "/golang.org/%2E%2E/@v/list", want: ErrMalformed},
	{name: "half encoded dot-dot", target: "/golang.org/.%2e/x/@v/list", want: ErrMalformed},
	{name: "encoded dot", target: "/golang.org/x/%2E/text/@v/list", want: ErrMalformed},
	{name: "traversal after zip", target: "/golang.org/x/text/@v/v0.3.8.zip/../../../etc/passwd", want: ErrMalformed},
	{name: "traversal after version", target: "/golang.org/x/text/@v/v1.0.0/../..", want: ErrMalformed},
	{name: "traversal only", target: "/..", want: ErrMalformed},

	// Raw and encoded bytes.
	{name: "raw NUL", target: "/golang.org/x/text\x00/@v/list", want: ErrMalformed},
	{name: "encoded NUL", target: "/golang.org/x/text%00/@v/list", want: ErrMalformed},
	{name: "raw CRLF", target: "/golang.org/x/text/@v/list\r\nX-Evil: 1", want: ErrMalformed},
	{name: "encoded CRLF", target: "/golang.org/x/text/@v/list%0d%0aX-Evil:%201", want: ErrMalformed},
	{name: "raw tab", target: "/golang.org/x/\ttext/@v/list", want: ErrMalformed},
	{name: "encoded tab", target: "/golang.org/x/%09text/@v/list", want: ErrMalformed},
	{name: "raw escape", target: "/golang.org/x/text/@v/\x1b[31m.info", want: ErrMalformed},
	{name: "encoded escape", target: "/golang.org/x/text/@v/%1b%5b31m.info", want: ErrMalformed},
	{name: "raw DEL", target: "/golang.org/x/text\x7f/@v/list", want: ErrMalformed},
	{name: "encoded DEL", target: "/golang.org/x/text%7F/@v/list", want: ErrMalformed},
	{name: "raw space", target: "/golang.org/x/text/@v/my branch.info", want: ErrMalformed},
	{name: "encoded space", target: "/golang.org/x/text/@v/my%20branch.info", want: ErrMalformed},
	{name: "encoded slash upper", target: "/golang.org%2Fx%2Ftext/@v/list", want: ErrMalformed},
	{name: "encoded slash lower", target: "/golang.org/x/text/@v/..%2f..%2fetc.info", want: ErrMalformed},
	{name: "encoded backslash", target: "/golang.org/x/text/@v/..%5C..%5cetc.info", want: ErrMalformed},
	{name: "raw backslash", target: "/golang.org\\x/text/@v/list", want: ErrMalformed},
	{name: "double encoded slash", target: "/golang.org%252Fx/text/@v/list", want: ErrMalformed},
	{name: "encoded percent", target: "/golang.org/x/text/@v/100%25.info", want: ErrMalformed},
	{name: "encoded question mark", target: "/golang.org/x/text/@v/list%3F", want: ErrMalformed},
	{name: "encoded hash", target: "/golang.org/x/text/@v/a%23b.info", want: ErrMalformed},
	{name: "lone percent", target: "/golang.org/x/text/@v/v1%.info", want: ErrMalformed},
	{name: "truncated escape", target: "/golang.org/x/text/@v/list%2", want: ErrMalformed},
	{name: "non-hex escape", target: "/golang.org/x/te%zzt/@v/list", want: ErrMalformed},
	{name: "raw non-ASCII", target: "/golang.org/x/t\u00e9xt/@v/list", want: ErrMalformed},
	{name: "encoded non-ASCII", target: "/golang.org/x/t%C3%A9xt/@v/list", want: ErrMalformed},
	{name: "encoded high byte", target: "/golang.org/x/text/@v/%ff.info", want: ErrMalformed},
	{name: "invalid UTF-8", target: "/golang.org/x/text/@v/\xff\xfe.info", want: ErrMalformed},

	// Endpoint markers.
	{name: "second endpoint after zip", target: "/a.com/m/@v/v1.0.0.zip/@v/list", want: ErrMalformed},
	{name: "latest then list", target: "/a.com/m/@latest/@v/list", want: ErrMalformed},
	{name: "at in module segment", target: "/a.com/m@v1.0.0/@v/list", want: ErrMalformed},
	{name: "at in module no marker", target: "/a.com/m@v1.0.0", want: ErrMalformed},
	{name: "at in version", target: "/a.com/m/@v/v1.0.0@v2.0.0.info", want: ErrMalformed},
	{name: "at module segment prefix", target: "/a.com/@m/@v/list", want: ErrMalformed},
	{name: "encoded at marker twice", target: "/a.com/m/%40v/%40latest", want: ErrMalformed},
	{name: "double at marker", target: "/a.com/m/@@v/list", want: ErrMalformed},
	{name: "unknown marker", target: "/a.com/m/@x/list", want: ErrMalformed},
	{name: "latest with suffix", target: "/a.com/m/@latest.info", want: ErrMalformed},
	{name: "latest with extra", target: "/a.com/m/@latest/extra", want: ErrMalformed},
	{name: "@v alone", target: "/a.com/m/@v", want: ErrMalformed},
	{name: "@v with two files", target: "/a.com/m/@v/v1.0.0/v1.0.0.zip", want: ErrMalformed},
	{name: "missing module list", target: "/@v/list", want: ErrMalformed},
	{name: "missing module latest", target: "/@latest", want: ErrMalformed},

	// Module paths.
	{name: "upper-case without bang", target: "/github.com/Foo/bar/@v/list", want: ErrMalformed},
	{name: "upper-case host", target: "/GitHub.com/foo/bar/@latest", want: ErrMalformed},
	{name: "double bang", target: "/github.com/!!foo/bar/@v/list", want: ErrMalformed},
	{name: "bang upper-case", target: "/github.com/!Foo/bar/@v/list", want: ErrMalformed},
	{name: "bang digit", target: "/github.com/!1foo/bar/@v/list", want: ErrMalformed},
	{name: "trailing bang", target: "/github.com/foo/bar!/@v/list", want: ErrMalformed},
	{name: "trailing encoded bang", target: "/github.com/foo/bar%21/@v/list", want: ErrMalformed},
	{name: "no dot in host", target: "/example/m/@v/list", want: ErrMalformed},
	{name: "leading dash", target: "/-example.com/m/@v/list", want: ErrMalformed},
	{name: "leading dot element", target: "/example.com/.git/@v/list", want: ErrMalformed},
	{name: "v1 suffix", target: "/example.com/m/v1/@v/list", want: ErrMalformed},
	{name: "windows short name", target: "/example.com/progra~1/@v/list", want: ErrMalformed},
	{name: "bad char in path", target: "/example.com/a:b/@v/list", want: ErrMalformed},
	{name: "huge bad module path", target: "/example.com/" + strings.Repeat("X", 900) + "/@v/list", want: ErrMalformed},

	// Versions.
	{name: "empty version info", target: "/a.com/m/@v/.info", want: ErrMalformed},
	{name: "empty version zip", target: "/a.com/m/@v/.zip", want: ErrMalformed},
	{name: "dot version", target: "/a.com/m/@v/..zip", want: ErrMalformed},
	{name: "short version mod", target: "/a.com/m/@v/v1.0.mod", want: ErrMalformed},
	{name: "major-only version zip", target: "/a.com/m/@v/v1.zip", want: ErrMalformed},
	{name: "build metadata zip", target: "/a.com/m/@v/v1.0.0+build.zip", want: ErrMalformed},
	{name: "no v prefix", target: "/a.com/m/@v/1.0.0.zip", want: ErrMalformed},
	{name: "leading zero", target: "/a.com/m/@v/v01.0.0.mod", want: ErrMalformed},
	{name: "major mismatch", target: "/a.com/m/@v/v2.0.0.mod", want: ErrMalformed},
	{name: "major mismatch info", target: "/a.com/m/@v/v2.0.0.info", want: ErrMalformed},
	{name: "major mismatch v2 path", target: "/a.com/m/v2/@v/v1.0.0.zip", want: ErrMalformed},
	{name: "gopkg.in mismatch", target: "/gopkg.in/yaml.v3/@v/v2.4.0.mod", want: ErrMalformed},
	{name: "query for zip", target: "/a.com/m/@v/master.zip", want: ErrMalformed},
	{name: "latest for mod", target: "/a.com/m/@v/latest.mod", want: ErrMalformed},
	{name: "upper-case version", target: "/a.com/m/@v/V1.0.0.info", want: ErrMalformed},
	{name: "bad bang in version", target: "/a.com/m/@v/!V1.0.0.info", want: ErrMalformed},
	{name: "shell char in query", target: "/a.com/m/@v/<v1.2.info", want: ErrMalformed},
	{name: "quote in query", target: "/a.com/m/@v/a%22b.info", want: ErrMalformed},

	// Unknown files.
	{name: "txt suffix", target: "/a.com/m/@v/v1.0.0.txt", want: ErrMalformed},
	{name: "no suffix", target: "/a.com/m/@v/v1.0.0", want: ErrMalformed},
	{name: "upper-case suffix", target: "/a.com/m/@v/v1.0.0.ZIP", want: ErrMalformed},
	{name: "list with suffix", target: "/a.com/m/@v/list.json", want: ErrMalformed},
	{name: "upper-case list", target: "/a.com/m/@v/LIST", want: ErrMalformed},

	// Checksum database.
	{name: "sumdb alone", target: "/sumdb", want: ErrMalformed},
	{name: "sumdb slash", target: "/sumdb/", want: ErrMalformed},
	{name: "sumdb name only", target: "/sumdb/sum.golang.org", want: ErrMalformed},
	{name: "sumdb name slash", target: "/sumdb/sum.golang.org/", want: ErrMalformed},
	{name: "sumdb upper-case name", target: "/sumdb/SUM.golang.org/latest", want: ErrMalformed},
	{name: "sumdb name without dot", target: "/sumdb/localhost/latest", want: ErrMalformed},
	{name: "sumdb name with dash", target: "/sumdb/-sum.golang.org/latest", want: ErrMalformed},
	{name: "sumdb name with port", target: "/sumdb/sum.golang.org:443/latest", want: ErrMalformed},
	{name: "sumdb name traversal", target: "/sumdb/../latest", want: ErrMalformed},
	{name: "sumdb unknown endpoint", target: "/sumdb/sum.golang.org/signed", want: ErrMalformed},
	{name: "sumdb latest extra", target: "/sumdb/sum.golang.org/latest/extra", want: ErrMalformed},
	{name: "sumdb supported extra", target: "/sumdb/sum.golang.org/supported/x", want: ErrMalformed},
	{name: "sumdb tile alone", target: "/sumdb/sum.golang.org/tile", want: ErrMalformed},
	{name: "sumdb tile short", target: "/sumdb/sum.golang.org/tile/8/0", want: ErrMalformed},
	{name: "sumdb tile non-canonical N", target: "/sumdb/sum.golang.org/tile/8/0/1", want: ErrMalformed},
	{name: "sumdb tile needless x", target: "/sumdb/sum.golang.org/tile/8/0/x000/001", want: ErrMalformed},
	{name: "sumdb tile N too big", target: "/sumdb/sum.golang.org/tile/8/0/1000", want: ErrMalformed},
	{name: "sumdb tile plus height", target: "/sumdb/sum.golang.org/tile/+8/0/001", want: ErrMalformed},
	{name: "sumdb tile height zero", target: "/sumdb/sum.golang.org/tile/0/0/001", want: ErrMalformed},
	{name: "sumdb tile height 31", target: "/sumdb/sum.golang.org/tile/31/0/001", want: ErrMalformed},
	{name: "sumdb tile negative level", target: "/sumdb/sum.golang.org/tile/8/-1/001", want: ErrMalformed},
	{name: "sumdb tile full width", target: "/sumdb/sum.golang.org/tile/8/0/001.p/256", want: ErrMalformed},
	{name: "sumdb tile zero width", target: "/sumdb/sum.golang.org/tile/8/0/001.p/0", want: ErrMalformed},
	{name: "sumdb tile extra", target: "/sumdb/sum.golang.org/tile/8/0/001.p/5/extra", want: ErrMalformed},
	{name: "sumdb tile letters", target: "/sumdb/sum.golang.org/tile/8/0/abc", want: ErrMalformed},
	{name: "sumdb lookup empty", target: "/sumdb/sum.golang.org/lookup", want: ErrMalformed},
	{name: "sumdb lookup no version", target: "/sumdb/sum.golang.org/lookup/golang.org/x/text", want: ErrMalformed},
	{name: "sumdb lookup non-canonical", target: "/sumdb/sum.golang.org/lookup/golang.org/x/text@v0.3", want: ErrMalformed},
	{name: "sumdb lookup query", target: "/sumdb/sum.golang.org/lookup/golang.org/x/text@master", want: ErrMalformed},
	{name: "sumdb lookup build", target: "/sumdb/sum.golang.org/lookup/golang.org/x/text@v0.3.8+build", want: ErrMalformed},
	{name: "sumdb lookup two at", target: "/sumdb/sum.golang.org/lookup/golang.org/x/text@v0.3.8@v0.3.9", want: ErrMalformed},
	{name: "sumdb lookup at mid path", target: "/sumdb/sum.golang.org/lookup/golang.org/x@v0.3.8/text", want: ErrMalformed},
	{name: "sumdb lookup upper-case", target: "/sumdb/sum.golang.org/lookup/github.com/Foo/bar@v1.0.0", want: ErrMalformed},
	{name: "sumdb lookup major mismatch", target: "/sumdb/sum.golang.org/lookup/a.com/m@v2.0.0", want: ErrMalformed},

	// Not endpoints at all.
	{name: "root", target: "/", want: ErrNotFound},
	{name: "favicon", target: "/favicon.ico", want: ErrNotFound},
	{name: "module without endpoint", target: "/example.com/m", want: ErrNotFound},
	{name: "robots", target: "/robots.txt", want: ErrNotFound},
	{name: "healthz", target: "/healthz", want: ErrNotFound},
	{name: "deep path", target: "/golang.org/x/text/v2/internal", want: ErrNotFound},
}

func TestParseHostile(t *testing.T) {
	for _, tt := range hostileTests {
		t.Run(tt.name, func(t *testing.T) {
			method := tt.method
			if method == "" {
				method = "GET"
			}
			r, err := Parse(method, tt.target, tt.max)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Parse(%q, %q) = %+v, %v; want error %v", method, tt.target, r, err, tt.want)
			}
			if r != (Request{}) {
				t.Errorf("Parse(%q, %q) returned non-zero Request %+v with error", method, tt.target, r)
			}
			checkError(t, err)
		})
	}
}

// checkRoundTrip checks that a parsed request has exactly one canonical path:
// r.Path() parses back to r, and that request's Path is the same path.
func checkRoundTrip(t testing.TB, r Request) {
	t.Helper()
	p := r.Path()
	if !strings.HasPrefix(p, "/") {
		t.Fatalf("%+v.Path() = %q, want a path beginning with /", r, p)
	}
	r2, err := Parse("GET", p, len(p))
	if err != nil {
		t.Fatalf("Parse(%q) = %v, want %+v", p, err, r)
	}
	if r2 != r {
		t.Fatalf("Parse(%q) = %+v, want %+v", p, r2, r)
	}
	if p2 := r2.Path(); p2 != p {
		t.Fatalf("Parse(%q).Path() = %q, want %q", p, p2, p)
	}
}

// checkError checks that err is an *Error of a known class with a clean,
// one-line Reason.
func checkError(t testing.TB, err error) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not an *Error", err, err)
	}
	if e.Class != ErrMethod && e.Class != ErrMalformed && e.Class != ErrNotFound {
		t.Errorf("error %q has unknown class %v", e.Reason, e.Class)
	}
	if !errors.Is(err, e.Class) || e.Error() != e.Reason {
		t.Errorf("error %q does not unwrap to its class %v", e.Reason, e.Class)
	}
	if e.Reason == "" || len(e.Reason) > 200 {
		t.Errorf("Reason %q has %d bytes, want 1 to 200", e.Reason, len(e.Reason))
	}
	for i := 0; i < len(e.Reason); i++ {
		if b := e.Reason[i]; b < 0x20 || b >= 0x7f {
			t.Errorf("Reason %q has byte %#x at %d, want printable ASCII", e.Reason, b, i)
			break
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, tt := range acceptTests {
		f.Add("GET", tt.target)
	}
	for _, tt := range hostileTests {
		method := tt.method
		if method == "" {
			method = "GET"
		}
		f.Add(method, tt.target)
	}
	f.Fuzz(func(t *testing.T, method, target string) {
		r, err := Parse(method, target, 0)
		if err != nil {
			if r != (Request{}) {
				t.Errorf("Parse(%q, %q) returned non-zero Request %+v with error", method, target, r)
			}
			checkError(t, err)
			return
		}
		checkRoundTrip(t, r)
	})
}

func TestKind(t *testing.T) {
	tests := []struct {
		k     Kind
		name  string
		sumdb bool
	}{
		{0, "Kind(0)", false},
		{KindList, "list", false},
		{KindInfo, "info", false},
		{KindMod, "mod", false},
		{KindZip, "zip", false},
		{KindLatest, "latest", false},
		{KindSumDBSupported, "sumdb-supported", true},
		{KindSumDBLatest, "sumdb-latest", true},
		{KindSumDBLookup, "sumdb-lookup", true},
		{KindSumDBTile, "sumdb-tile", true},
		{KindSumDBTile + 1, "Kind(10)", false},
	}
	for _, tt := range tests {
		if got := tt.k.String(); got != tt.name {
			t.Errorf("Kind(%d).String() = %q, want %q", tt.k, got, tt.name)
		}
		if got := tt.k.IsSumDB(); got != tt.sumdb {
			t.Errorf("Kind(%d).IsSumDB() = %v, want %v", tt.k, got, tt.sumdb)
		}
	}
}

func TestPathInvalid(t *testing.T) {
	tests := []struct {
		name string
		r    Request
	}{
		{"zero", Request{}},
		{"bad module", Request{Kind: KindList, Module: "not a path"}},
		{"bad version", Request{Kind: KindZip, Module: "a.com/m", Version: "v1/../x"}},
		{"bad lookup", Request{Kind: KindSumDBLookup, SumDB: "sum.golang.org", Module: "A!"}},
		{"empty sumdb name", Request{Kind: KindSumDBLatest}},
		{"sumdb name with slash", Request{Kind: KindSumDBLatest, SumDB: "sum.golang.org/x"}},
		{"bad tile height", Request{Kind: KindSumDBTile, SumDB: "sum.golang.org", Tile: tlog.Tile{H: 31, W: 1}}},
		{"bad tile width", Request{Kind: KindSumDBTile, SumDB: "sum.golang.org", Tile: tlog.Tile{H: 8, W: 300}}},
	}
	for _, tt := range tests {
		if p := tt.r.Path(); p != "" {
			t.Errorf("%s: %+v.Path() = %q, want \"\"", tt.name, tt.r, p)
		}
	}
}

func BenchmarkParse(b *testing.B) {
	for _, target := range []string{
		"/github.com/%21burnt%21sushi/toml/@v/v1.3.2.zip",
		"/golang.org/x/mod/@v/list",
		"/sumdb/sum.example.test/lookup/golang.org/x/mod@v0.42.0",
	} {
		b.Run(target, func(b *testing.B) {
			for b.Loop() {
				if _, err := Parse("GET", target, 0); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
