package vulndb

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
)

func TestHandler(t *testing.T) {
	up := newUpstream(t, copyDB(t))
	clk := newClock(t0)
	s := openStore(t, Options{Config: Config{URL: up.srv.URL}, Dir: t.TempDir()}, clk)
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	get := func(path string) (int, []byte) {
		t.Helper()
		resp, err := srv.Client().Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, body
	}
	if code, _ := get("/vulndb/index/db.json"); code != http.StatusServiceUnavailable {
		t.Errorf("GET before a load = %d, want 503", code)
	}
	if err := s.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"index/db.json", "index/modules.json", "ID/GO-2026-0001.json"} {
		want, _ := os.ReadFile("testdata/db/" + p)
		if code, body := get("/vulndb/" + p); code != http.StatusOK || !bytes.Equal(body, want) {
			t.Errorf("GET /vulndb/%s = %d, %d bytes, want 200 and the file", p, code, len(body))
		}
		code, body := get("/vulndb/" + p + ".gz")
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if code != http.StatusOK || err != nil {
			t.Fatalf("GET /vulndb/%s.gz = %d, %v", p, code, err)
		}
		if got, _ := io.ReadAll(zr); !bytes.Equal(got, want) {
			t.Errorf("GET /vulndb/%s.gz: not the file", p)
		}
	}
	for _, p := range []string{"/vulndb/state.json", "/vulndb/ID/../state.json", "/vulndb/ID/GO-2026-9999.json", "/vulndb/index/vulns.json", "/other"} {
		if code, _ := get(p); code != http.StatusNotFound {
			t.Errorf("GET %s = %d, want 404", p, code)
		}
	}
}
