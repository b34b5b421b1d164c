package web

import (
	"context"
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
		dir = filepath.Join("..", "out", "web")
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
	p := startPipeline(t, nil)

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
		chromedp.Navigate(p.base+"/"),
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
	if before != "–" || !strings.HasSuffix(latency, " ms") || recs != 10 || strategy != "model" || modelVersion != testModelVersion || updates != "1" || recEvent == "" {
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
