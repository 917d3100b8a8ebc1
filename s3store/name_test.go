package s3store

import (
	"context"
	"strings"
	"testing"
)

var nameTests = []struct {
	name string
	ok   bool
}{
	{"entries/github.com/!foo/bar/@v/v1.2.3.zip", true},
	{"blobs/" + strings.Repeat("0123456789abcdef", 4), true},
	{"ledger/corp.example/m@v1.2.3/go.mod", true},
	{"entries/golang.org/x/text/@v/list", true},
	{"a", true},
	{"a/.b/c..d/...", true}, // dots inside elements are fine
	{"ünïcode/名前", true},
	{"", false},
	{"/a", false},
	{"a/", false},
	{"a//b", false},
	{".", false},
	{"..", false},
	{"../a", false},
	{"a/../b", false},
	{"a/..", false},
	{"a/./b", false},
	{"a\\b", false},
	{"a\x00b", false},
	{"a\nb", false},
	{"a\x7fb", false},
	{"a\xffb", false},
}

func TestCheckName(t *testing.T) {
	for _, tt := range nameTests {
		err := checkName(tt.name)
		if (err == nil) != tt.ok {
			t.Errorf("checkName(%q) = %v, want ok %v", tt.name, err, tt.ok)
		}
	}
}

func TestCheckPrefix(t *testing.T) {
	tests := []struct {
		prefix string
		ok     bool
	}{
		{"", true},
		{"cache/", true},
		{"cache", true},
		{"entries/github.com/!foo/", true},
		{"blobs/ab", true},
		{"/", false},
		{"/cache/", false},
		{"cache//", false},
		{"../", false},
		{"a/../", false},
		{"a\x00/", false},
	}
	for _, tt := range tests {
		err := checkPrefix(tt.prefix)
		if (err == nil) != tt.ok {
			t.Errorf("checkPrefix(%q) = %v, want ok %v", tt.prefix, err, tt.ok)
		}
	}
}

func TestKeyTooLong(t *testing.T) {
	s := &Store{prefix: "cache/"}
	name := strings.Repeat("x", maxKeyLen-len(s.prefix))
	if _, err := s.key("get", name); err != nil {
		t.Errorf("key(%d bytes) = %v, want ok", len(name), err)
	}
	if _, err := s.key("get", name+"x"); err == nil {
		t.Errorf("key(%d bytes) = ok, want error", len(name)+1)
	}
}

// TestInvalidNames checks that every operation refuses an invalid name
// before it makes a request: the Store has no client, so a request would
// panic.
func TestInvalidNames(t *testing.T) {
	s := &Store{prefix: "cache/", partSize: minPartSize}
	ctx := context.Background()
	ops := map[string]func(name string) error{
		"get": func(name string) error {
			_, err := s.Get(ctx, name, 10)
			return err
		},
		"put":      func(name string) error { return s.Put(ctx, name, nil, true) },
		"upload":   func(name string) error { return s.Upload(ctx, name, strings.NewReader(""), 0) },
		"download": func(name string) error { return s.Download(ctx, name, 0, nil) },
		"delete":   func(name string) error { return s.Delete(ctx, name) },
		"list":     func(name string) error { return s.List(ctx, name+"/", nil) },
	}
	for op, f := range ops {
		for _, tt := range nameTests {
			if tt.ok || tt.name == "" && op == "list" {
				continue
			}
			err := f(tt.name)
			if err == nil || !strings.Contains(err.Error(), "invalid") || !strings.HasPrefix(err.Error(), "s3store: "+op) {
				t.Errorf("%s(%q) = %v, want an invalid-name error", op, tt.name, err)
			}
		}
	}
}

func TestOpenConfig(t *testing.T) {
	tests := []struct {
		name  string
		cfg   Config
		field string // in the error
	}{
		{"no bucket", Config{}, "Config.Bucket"},
		{"prefix without slash", Config{Bucket: "b", Prefix: "cache"}, "Config.Prefix"},
		{"prefix with dot-dot", Config{Bucket: "b", Prefix: "../"}, "Config.Prefix"},
		{"part too small", Config{Bucket: "b", PartSize: 1 << 20}, "Config.PartSize"},
		{"negative timeout", Config{Bucket: "b", Timeout: -1}, "Config.Timeout"},
		{"endpoint not a URL", Config{Bucket: "b", Endpoint: "127.0.0.1:9000"}, "Config.Endpoint"},
		{"endpoint not http", Config{Bucket: "b", Endpoint: "ftp://127.0.0.1"}, "Config.Endpoint"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Open(t.Context(), tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.field) {
				t.Errorf("Open(%+v) = %v, want an error naming %s", tt.cfg, err, tt.field)
			}
		})
	}
}

func TestCheckRange(t *testing.T) {
	const size = 12 << 20
	tests := []struct {
		name          string
		contentRange  string
		length        int64
		off, n, total int64
		ok            bool
	}{
		{"first part", "bytes 0-5242879/12582912", 5 << 20, 0, 5 << 20, size, true},
		{"last part", "bytes 10485760-12582911/12582912", 2 << 20, 10 << 20, 2 << 20, size, true},
		{"whole object without range", "", size, 0, size, size, true},
		{"part without range", "", size, 0, 5 << 20, size, false},
		{"larger object", "bytes 0-5242879/12582913", 5 << 20, 0, 5 << 20, size, false},
		{"smaller object", "bytes 0-5242879/5242880", 5 << 20, 0, 5 << 20, size, false},
		{"other range", "bytes 1-5242880/12582912", 5 << 20, 0, 5 << 20, size, false},
		{"short body", "bytes 0-5242879/12582912", 5<<20 - 1, 0, 5 << 20, size, false},
		{"unknown size", "bytes 0-5242879/*", 5 << 20, 0, 5 << 20, size, false},
		{"garbage", "pages 1-2/3", 5 << 20, 0, 5 << 20, size, false},
	}
	for _, tt := range tests {
		err := checkRange(tt.contentRange, tt.length, tt.off, tt.n, tt.total)
		if (err == nil) != tt.ok {
			t.Errorf("%s: checkRange(%q, %d, %d, %d, %d) = %v, want ok %v", tt.name, tt.contentRange, tt.length, tt.off, tt.n, tt.total, err, tt.ok)
		}
	}
}
