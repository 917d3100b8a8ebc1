package cache

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestScrub: bytes changed on disk, and bytes the check refuses, are
// quarantined and never served again; a check that cannot be made keeps
// the entry; lists and other keys are not read.
func TestScrub(t *testing.T) {
	c := openCache(t, Config{})
	const (
		zip     = "/example.com/m/@v/v1.0.0.zip"
		mod     = "/example.com/m/@v/v1.0.0.mod"
		refused = "/example.com/r/@v/v1.0.0.mod"
		offline = "/example.com/o/@v/v1.0.0.mod"
		list    = "/example.com/m/@v/list"
	)
	zm := put(t, c, zip, Release, testBody("zip", 300<<10))
	put(t, c, mod, Release, testBody("mod", 100))
	put(t, c, refused, Release, testBody("refused", 100))
	put(t, c, offline, Release, testBody("offline", 100))
	put(t, c, list, Query, testBody("list", 70<<10)) // never scrubbed: not a .mod or .zip

	// Bit rot in the zip's blob.
	blob := c.disk.blobPath(zm.SHA256)
	data, err := os.ReadFile(blob)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 1
	if err := os.WriteFile(blob, data, 0o640); err != nil {
		t.Fatal(err)
	}

	var checked []string
	var told []string
	check := func(_ context.Context, m Meta, file string) (string, error) {
		checked = append(checked, m.Key)
		if _, err := os.Stat(file); err != nil {
			t.Errorf("check got a file that is not there: %v", err)
		}
		switch m.Key {
		case refused:
			return "go.mod hash differs from the checksum database's", nil
		case offline:
			return "", errors.New("checksum database state has no record")
		}
		return "", nil
	}
	r, err := c.Scrub(t.Context(), check, ScrubOptions{OnQuarantine: func(m Meta, _ string) { told = append(told, m.Key) }})
	if err != nil {
		t.Fatal(err)
	}
	if r.Checked != 4 || len(r.Quarantined) != 2 || len(r.Unchecked) != 1 || len(told) != 2 {
		t.Fatalf("Scrub = %+v (told %v), want 4 checked, 2 quarantined, 1 unchecked", r, told)
	}
	if strings.Join(checked, " ") != strings.Join([]string{mod, offline, refused}, " ") {
		t.Errorf("check saw %v: want the .mod files whose bytes match, not the rotten zip, not the list", checked)
	}
	for _, q := range r.Quarantined {
		if q.Key != zip && q.Key != refused {
			t.Errorf("quarantined %s", q.Key)
		}
		if _, err := os.Stat(q.File); err != nil {
			t.Errorf("quarantined bytes of %s not kept: %v", q.Key, err)
		}
		if filepath.Dir(q.File) != filepath.Join(c.disk.dir, "quarantine") {
			t.Errorf("quarantine file %s outside quarantine/", q.File)
		}
	}
	for _, k := range []string{zip, refused} {
		if _, err := c.Get(t.Context(), k); !errors.Is(err, ErrNotCached) {
			t.Errorf("Get(%s) after quarantine: %v, want ErrNotCached", k, err)
		}
	}
	for _, k := range []string{mod, offline, list} {
		if _, _, err := get(t, c, k); err != nil {
			t.Errorf("Get(%s) after the scrub: %v", k, err)
		}
	}
	// A second scrub finds nothing more.
	if r, err := c.Scrub(t.Context(), nil, ScrubOptions{}); err != nil || len(r.Quarantined) != 0 || r.Checked != 2 {
		t.Errorf("second Scrub = %+v, %v", r, err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := c.Scrub(ctx, nil, ScrubOptions{}); !errors.Is(err, context.Canceled) {
		t.Errorf("Scrub with a cancelled context: %v", err)
	}
}
