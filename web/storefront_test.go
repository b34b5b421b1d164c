package web

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"testing"
)

// TestServeStorefront is the storefront that the browser test drives, not a
// test of its own. The browser test lives in web/browsertest, a module of its
// own so that chromedp stays out of clickrec's go.mod; it runs this package's
// test binary with CLICKREC_WEB_STOREFRONT=1, and then this starts the
// pipeline of the end-to-end tests (embedded broker, hot path worker serving
// the random model, web server), prints one line
//
//	storefront {"base":"http://127.0.0.1:port","model_version":"…"}
//
// and serves until its standard input closes. Without the variable it skips.
func TestServeStorefront(t *testing.T) {
	if os.Getenv("CLICKREC_WEB_STOREFRONT") != "1" {
		t.Skip("serves the storefront for web/browsertest; only with CLICKREC_WEB_STOREFRONT=1")
	}
	p := startPipeline(t, nil)
	line, err := json.Marshal(struct {
		Base         string `json:"base"`
		ModelVersion string `json:"model_version"`
	}{p.base, testModelVersion})
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("storefront %s\n", line)
	_, _ = io.Copy(io.Discard, os.Stdin)
}
