package browsertest

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"

	"github.com/chromedp/chromedp"
)

// TestPage loads a page from a local server, reads its text, clicks a
// button and saves a screenshot: what the console's tests do.
func TestPage(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("clicked") != "" {
			io.WriteString(w, `<!doctype html><p id="out">clicked</p>`)
			return
		}
		io.WriteString(w, `<!doctype html><h1 id="title">hello</h1><form><input type="hidden" name="clicked" value="1"><button id="go">go</button></form>`)
	}))
	defer srv.Close()
	ctx := New(t)
	if err := chromedp.Do(ctx, chromedp.Navigate(srv.URL)); err != nil {
		t.Fatal(err)
	}
	title, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#title")))
	if err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#go")), chromedp.WaitVisible(chromedp.CSS("#out"))); err != nil {
		t.Fatal(err)
	}
	out, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#out")))
	if err != nil {
		t.Fatal(err)
	}
	if title != "hello" || out != "clicked" {
		t.Errorf("title %q, then %q; want hello, then clicked", title, out)
	}
	file := Screenshot(t, ctx, "page")
	data, err := os.ReadFile(file)
	if err != nil || !bytes.HasPrefix(data, []byte("\x89PNG\r\n\x1a\n")) {
		t.Errorf("screenshot %s: %v, %d bytes; want a PNG", file, err, len(data))
	}
}
