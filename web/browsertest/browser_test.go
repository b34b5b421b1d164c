// Package browsertest drives clickrec's storefront page in headless Chromium.
// It is a module of its own (web/browsertest/go.mod) so that chromedp, which
// only this test needs, stays out of clickrec's go.mod. The storefront it
// drives is package web's test pipeline, served by web's test binary (see
// TestServeStorefront in web/storefront_test.go).
package browsertest

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/clickrec/clickrec/internal/testenv"
)

// repoRoot is the clickrec repository (the main module), two levels up from
// this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// chromium returns the path of a Chromium (or Chrome) binary:
// CLICKREC_CHROMIUM, else the first of chromium, chromium-browser,
// google-chrome on PATH.
func chromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("CLICKREC_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	testenv.Missing(t, "Chromium", "install the Debian package chromium (scripts/deps.sh does), or set CLICKREC_CHROMIUM")
	return ""
}

// artifactDir is where browser tests leave screenshots: out/web at the
// repository root (ignored by git), or CLICKREC_TEST_ARTIFACTS.
func artifactDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("CLICKREC_TEST_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(repoRoot(t), "out", "web")
	}
	dir, err := filepath.Abs(dir)
	if err == nil {
		err = os.MkdirAll(dir, 0o755)
	}
	if err != nil {
		t.Fatalf("artifact directory: %v", err)
	}
	return dir
}

// storefront is what package web's TestServeStorefront serves.
type storefront struct {
	Base         string `json:"base"`          // http://127.0.0.1:port
	ModelVersion string `json:"model_version"` // of the random model the hot path serves
}

// startStorefront builds package web's test binary and runs its
// TestServeStorefront: the embedded broker, a hot path worker and the web
// server of web's end-to-end tests. It stops when the test ends (standard
// input closed; killed if it has not exited 30 s later).
func startStorefront(t *testing.T) storefront {
	t.Helper()
	root := repoRoot(t)
	bin := filepath.Join(t.TempDir(), "web.test")
	build := exec.Command("go", "test", "-c", "-o", bin, "./web")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go test -c ./web: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "-test.run", "^TestServeStorefront$", "-test.count", "1")
	cmd.Dir = filepath.Join(root, "web")
	cmd.Env = append(os.Environ(), "CLICKREC_WEB_STOREFRONT=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting the storefront: %v", err)
	}
	found := make(chan storefront, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			line := sc.Text()
			if js, ok := strings.CutPrefix(line, "storefront "); ok {
				var s storefront
				if json.Unmarshal([]byte(js), &s) == nil {
					found <- s
					continue
				}
			}
			t.Logf("[storefront] %s", line)
		}
		_, _ = io.Copy(io.Discard, out)
	}()
	t.Cleanup(func() {
		stdin.Close()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("the storefront did not stop within 30 s of closing its input")
			_ = cmd.Process.Kill()
			<-done
		}
		_ = cmd.Wait()
	})
	select {
	case s := <-found:
		return s
	case <-done:
		t.Fatal("the storefront exited before serving")
	case <-time.After(60 * time.Second):
		t.Fatal("the storefront did not start within 60 s")
	}
	return storefront{}
}

// TestStorefrontInBrowser loads the storefront in headless Chromium against
// the embedded broker, a hot path worker and the web server, clicks a product
// and checks that the recommendations panel fills with the model's items and
// shows the click→recommendation latency; then adds another product to the
// cart and checks that the panel changes again. It saves a screenshot.
func TestStorefrontInBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("drives a browser; skipped with -short")
	}
	exe := chromium(t)
	p := startStorefront(t)

	actx, cancelAlloc := chromedp.NewExecAllocator(testenv.Context(t, 50*time.Second),
		chromedp.ExecPath(exe),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1400, 1000),
	)
	defer cancelAlloc()
	var (
		mu         sync.Mutex
		exceptions []string
	)
	ctx, cancel := chromedp.NewContext(actx,
		chromedp.WithErrorf(func(string, ...any) {}),
		chromedp.WithListener(func(ev any) {
			var e *runtime.EventExceptionThrown
			switch ev := ev.(type) {
			case *runtime.EventExceptionThrown:
				e = ev
			case runtime.EventExceptionThrown:
				e = &ev
			default:
				return
			}
			msg := e.ExceptionDetails.Text
			if x := e.ExceptionDetails.Exception; x != nil {
				msg += " " + x.Description
			}
			mu.Lock()
			exceptions = append(exceptions, msg)
			mu.Unlock()
		}))
	defer cancel()

	css := func(sel string) chromedp.CSS { return chromedp.CSS(sel) }
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, steps...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	text := func(sel string) string {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Text(css(sel)))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return v
	}
	attr := func(sel, name string) string {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.AttributeValue(css(sel), name))
		if err != nil {
			t.Fatalf("attribute %s of %s: %v", name, sel, err)
		}
		return v.Value
	}

	start := time.Now()
	do("loading the page",
		chromedp.Navigate(p.Base+"/"),
		chromedp.WaitVisible(css(`#grid .product`)),
		chromedp.WaitVisible(css(`body[data-stream="open"]`)), // the stream is subscribed
	)
	user, err := chromedp.Run(ctx, chromedp.Value(css(`#user-id`)))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("page loaded and stream open in %v; shopper %s", time.Since(start).Round(time.Millisecond), user)
	if !strings.HasPrefix(user, "web-") {
		t.Fatalf("user id %q: want a random web-… id", user)
	}
	firstItem := attr(`#grid .product`, "data-item")
	before := text(`#latency`)

	// A view: click the first product's picture.
	start = time.Now()
	do("clicking a product",
		chromedp.Click(css(`#grid .product .tile`), chromedp.NodeVisible),
		chromedp.WaitVisible(css(`#latency.fresh`)),
	)
	latency, strategy, modelVersion, updates := text(`#latency`), text(`#strategy`), text(`#model`), text(`#updates`)
	recEvent := attr(`#recs`, "data-event-id")
	recs, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("#recs li.rec").length`))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("view of item %s → panel after %v: %d items, latency %q, strategy %q, model %q",
		firstItem, time.Since(start).Round(time.Millisecond), recs, latency, strategy, modelVersion)
	if before != "–" || !strings.HasSuffix(latency, " ms") || recs != 10 || strategy != "model" || modelVersion != p.ModelVersion || updates != "1" || recEvent == "" {
		t.Fatalf("after the click: latency %q (was %q), %d items, strategy %q, model %q, updates %q, event %q", latency, before, recs, strategy, modelVersion, updates, recEvent)
	}
	if attr(`#recs li.rec`, "data-item") == firstItem {
		t.Fatal("the clicked item is recommended to itself")
	}

	// A cart of the second product: the panel changes to that event's recommendation.
	do("adding to the cart",
		chromedp.Click(css(`#grid .product:nth-child(2) .cart`), chromedp.NodeVisible),
		chromedp.Steps(func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
			_, err := chromedp.Poll[bool](`document.getElementById("updates").textContent === "2"`, chromedp.WithPollingTimeout(20*time.Second))(ctx, t)
			return chromedp.Void{}, err
		}),
		chromedp.WaitVisible(css(`#activity li .kind.cart`)), // the activity list shows the cart
	)
	recEvent2, latency2, note := attr(`#recs`, "data-event-id"), text(`#latency`), text(`#recs-note`)
	if recEvent2 == recEvent || !strings.HasSuffix(latency2, " ms") || !strings.HasPrefix(note, "After your cart of ") {
		t.Fatalf("after the cart: event %q (was %q), latency %q, note %q", recEvent2, recEvent, latency2, note)
	}
	t.Logf("cart → panel changed to %s, latency %q", recEvent2, latency2)

	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	path := filepath.Join(artifactDir(t), "storefront.png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d KiB)", path, len(png)>>10)

	mu.Lock()
	defer mu.Unlock()
	if len(exceptions) > 0 {
		t.Fatalf("JavaScript exceptions on the page: %s", strings.Join(exceptions, "; "))
	}
}
