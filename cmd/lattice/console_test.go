package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/latticedb/lattice/cmd/server"
)

// chromiumPath finds Debian's chromium (or another Chrome). Without one
// the browser test fails, saying how to install it, except under -short.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if testing.Short() {
		t.Skip("no chromium on this machine; the console's browser test needs one (apt-get install -y chromium)")
	}
	t.Fatal("the console's browser test needs chromium: apt-get install -y chromium (.ci/run installs it), or run with -short to skip it")
	return ""
}

// TestConsoleInABrowser drives the console of a three-region dev cluster
// (real QUIC, emulated WAN) in headless chromium: the page loads without
// console errors and shows the regions connected; a cart added at one
// region appears at the others; the partition control shows a region cut
// off and an edit there as a highlighted difference; after heal the region
// is connected again and the highlight goes once the regions converge.
// On failure a screenshot is written to the test's artifact directory
// (go test -artifacts keeps it).
func TestConsoleInABrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-region cluster and a browser; skipped under -short")
	}
	chrome := chromiumPath(t)
	cfg, _, err := devConfig(t.TempDir(), "wan", 0, freeRun(t, "tcp"), freeRun(t, "udp"), devLayout{partitions: 1, nodes: 1})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	servers, _, err := startDevCluster(ctx, cfg, server.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, s := range servers {
			s.Close()
		}
	}()

	actx, acancel := chromedp.NewExecAllocator(ctx, append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chrome), chromedp.NoSandbox, chromedp.WindowSize(1280, 800),
		chromedp.Flag("disable-dev-shm-usage", true))...)
	defer acancel()
	bctx, bcancel := chromedp.NewContext(actx)
	defer bcancel()

	// The page's console: calls of console.error, uncaught exceptions
	// and the browser's error log (failed loads).
	var mu sync.Mutex
	var consoleErrors []string
	msgs := chromedp.Console(bctx)
	go func() {
		for m, err := range msgs {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.IsException() {
				mu.Lock()
				consoleErrors = append(consoleErrors, m.String()+" ("+m.URL+")")
				mu.Unlock()
			}
		}
	}()
	failed := true
	defer func() {
		if !failed && !t.Failed() {
			return
		}
		sctx, scancel := context.WithTimeout(bctx, 10*time.Second)
		defer scancel()
		png, err := chromedp.Run(sctx, chromedp.FullScreenshot(90))
		if err != nil {
			t.Logf("no screenshot: %v", err)
			return
		}
		path := filepath.Join(t.ArtifactDir(), "console-failure.png")
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Logf("no screenshot: %v", err)
			return
		}
		t.Logf("screenshot of the page: %s", path)
	}()

	url := servers[0].URL() + "/console?cart=shared&sku=book"
	if err := chromedp.Do(bctx, chromedp.Navigate(url), chromedp.WaitVisible(chromedp.CSS(`#regions .card`))); err != nil {
		t.Fatalf("loading %s: %v", url, err)
	}

	// waitFor polls the page until the JavaScript expression is true, for
	// at most d.
	waitFor := func(what, expr string, d time.Duration) {
		t.Helper()
		deadline := time.Now().Add(d)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			ok, err := chromedp.Run(bctx, chromedp.Evaluate[bool](expr))
			if err == nil && ok {
				return
			}
			if time.Now().After(deadline) {
				state, _ := chromedp.Run(bctx, chromedp.Evaluate[string](`document.querySelector("#regions").innerText + "\n" + document.querySelector("#explorer").innerText`))
				t.Fatalf("waited %v for %s (err %v); the page shows:\n%s", d, what, err, state)
			}
			<-tick.C
		}
	}
	click := func(sel string) {
		t.Helper()
		if err := chromedp.Do(bctx, chromedp.Click(chromedp.CSS(sel))); err != nil {
			t.Fatalf("click %s: %v", sel, err)
		}
	}
	cardsIn := func(state string) string {
		return fmt.Sprintf(`(() => { const c = [...document.querySelectorAll("#regions .card")];
			return c.length === 3 && c.every(e => e.dataset.state === %q && e.innerText.includes(%q)); })()`, state, state)
	}
	cell := func(row string) string {
		return fmt.Sprintf(`[...document.querySelectorAll("#compare tbody tr")].find(r => r.dataset.row === %q)`, row)
	}
	qtyEverywhere := func(qty string) string {
		return fmt.Sprintf(`(() => { const r = %s; return !!r && r.dataset.diff === "no" &&
			[...r.querySelectorAll("td")].map(td => td.innerText.trim()).join(",") === %q; })()`, cell("qty of book"), qty+","+qty+","+qty)
	}

	waitFor("the three regions connected", cardsIn("connected"), 30*time.Second)
	waitFor("the three links drawn as connected", `[...document.querySelectorAll("#map line.link")].length === 3 &&
		[...document.querySelectorAll("#map line.link")].every(l => l.dataset.state === "connected")`, 10*time.Second)

	// A cart added at us-east through the page appears at every region.
	click(`#edit button[data-op="add"]`)
	waitFor("the cart at every region", qtyEverywhere("1"), 15*time.Second)

	// Cut ap-south off, and edit the cart there.
	click(`button[data-cut="ap-south"]`)
	waitFor("ap-south shown cut off", `(() => { const c = document.querySelector('#regions .card[data-region="ap-south"]');
		return !!c && c.dataset.state === "cut-off" && c.innerText.includes("cut off"); })()`, 10*time.Second)
	if err := chromedp.Do(bctx, chromedp.SetValue(chromedp.CSS(`#edit-region`), "ap-south"),
		chromedp.SetValue(chromedp.CSS(`#qty`), "3")); err != nil {
		t.Fatal(err)
	}
	click(`#edit button[data-op="set"]`)
	waitFor("the diverged cart highlighted", `document.querySelector("#explorer-status").dataset.diverged === "yes" &&
		document.querySelectorAll("#compare td.diff").length >= 3`, 10*time.Second)

	// Heal: ap-south connects again and the highlight goes once the
	// regions converge.
	click(`button[data-heal="ap-south"]`)
	waitFor("the three regions connected after the heal", cardsIn("connected"), 60*time.Second)
	waitFor("the cart converged, no highlight", qtyEverywhere("3")+` && document.querySelector("#explorer-status").dataset.diverged === "no" &&
		document.querySelectorAll("#compare td.diff").length === 0`, 60*time.Second)

	mu.Lock()
	defer mu.Unlock()
	if len(consoleErrors) > 0 {
		t.Fatalf("the page logged errors:\n%s", strings.Join(consoleErrors, "\n"))
	}
	failed = false
}
