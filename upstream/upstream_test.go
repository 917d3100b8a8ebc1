package upstream

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name, url string
		wantName  string
		wantURL   string
		wantErr   bool
	}{
		{url: "https://proxy.example.test", wantName: "proxy.example.test", wantURL: "https://proxy.example.test"},
		{url: "https://proxy.example.test/", wantName: "proxy.example.test", wantURL: "https://proxy.example.test"},
		{name: "corp", url: "http://10.0.0.1:3000/go/", wantName: "corp", wantURL: "http://10.0.0.1:3000/go"},
		{url: "ftp://proxy.example.test", wantErr: true},
		{url: "https://", wantErr: true},
		{url: "https://user:pw@proxy.example.test", wantErr: true},
		{url: "https://proxy.example.test/?x=1", wantErr: true},
		{url: "://bad", wantErr: true},
	}
	for _, tt := range tests {
		u, err := Parse(tt.name, tt.url, false)
		if tt.wantErr {
			if err == nil {
				t.Errorf("Parse(%q) = %v, want an error", tt.url, u.URL)
			}
			continue
		}
		if err != nil || u.Name != tt.wantName || u.URL.String() != tt.wantURL {
			t.Errorf("Parse(%q, %q) = %+v, %v; want %s at %s", tt.name, tt.url, u, err, tt.wantName, tt.wantURL)
		}
	}
}

func TestClientTimeouts(t *testing.T) {
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(2 * time.Second):
		case <-r.Context().Done():
		}
	}))
	defer slow.Close()
	u, err := Parse("slow", slow.URL, false)
	if err != nil {
		t.Fatal(err)
	}
	c := NewClient(ClientOptions{HeaderTimeout: 100 * time.Millisecond})
	_, err = c.Do(context.Background(), u, http.MethodGet, "/example.com/a/@v/list", nil)
	if err == nil || !IsTimeout(err) {
		t.Errorf("Do against a slow upstream = %v, want a timeout", err)
	}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	dead, _ := Parse("dead", "http://"+addr, false)
	_, err = c.Do(context.Background(), dead, http.MethodGet, "/x/@v/list", nil)
	if err == nil || IsTimeout(err) {
		t.Errorf("Do against a closed port = %v, want a failure that is not a timeout", err)
	}
	if IsTimeout(errors.New("other")) || !IsTimeout(context.DeadlineExceeded) {
		t.Error("IsTimeout misclassifies plain errors")
	}
}

func TestClientRedirects(t *testing.T) {
	var hops int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hops++
		http.Redirect(w, r, "/again", http.StatusFound)
	}))
	defer srv.Close()
	u, _ := Parse("loop", srv.URL, false)
	_, err := NewClient(ClientOptions{MaxRedirects: 3}).Do(context.Background(), u, http.MethodGet, "/x/@v/list", nil)
	if err == nil || hops != 4 {
		t.Errorf("redirect loop: err %v after %d hops, want an error after 4", err, hops)
	}
}
