package console

import (
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// pageEdit runs the page's edit(op) with the cart id, sku and region typed
// into the page, and returns the method and the URL the browser fetches:
// the page's relative URL resolved against the page's own address as a
// browser's URL parser does (WHATWG URL, which removes dot segments).
func pageEdit(t *testing.T, op, cart, sku, region string) (method, path string) {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("no node (Node.js) on PATH to run the page's script: apt-get install -y nodejs (.ci/run installs it)")
	}
	harness := strings.Replace(pageHarness, "URLSearchParams });", "URLSearchParams, URL });", 1)
	if harness == pageHarness {
		t.Fatal("the page harness no longer has the context this test extends")
	}
	h := t.TempDir() + "/harness.js"
	if err := os.WriteFile(h, []byte(harness), 0o600); err != nil {
		t.Fatal(err)
	}
	args, _ := json.Marshal([]string{op, cart, sku, region})
	script := `
const [op, cart, sku, region] = ` + string(args) + `;
let sent = null;
fetch = (u, o) => { sent = { method: o.method, path: new URL(u, "http://127.0.0.1:7101/console").pathname }; return new Promise(() => {}); };
$("cart-id").value = cart; $("sku").value = sku; $("edit-region").value = region; $("qty").value = "1";
edit(op);
JSON.stringify(sent);
`
	b, err := exec.Command(node, h, "static/console.js", "{}", script).CombinedOutput()
	if err != nil {
		t.Fatalf("node: %v\n%s", err, b)
	}
	var sent *struct {
		Method string `json:"method"`
		Path   string `json:"path"`
	}
	if err := json.Unmarshal(b, &sent); err != nil {
		t.Fatalf("page script output %q: %v", b, err)
	}
	if sent == nil {
		return "", ""
	}
	return sent.Method, sent.Path
}

// TestEditsOfDotIDsReachTheirRoute: "." and ".." are ids (1–128
// characters of [A-Za-z0-9._:-]), so a cart or a sku may be named so. An
// edit of one made on the page either reaches the region's API as that
// edit of that id, or is refused by the page before anything is sent; it
// is never turned by the browser's URL parser (which removes dot
// segments) into a request for another path that the relay answers 404
// "the console relays only edits ...".
func TestEditsOfDotIDsReachTheirRoute(t *testing.T) {
	for _, c := range []struct{ op, cart, sku, want string }{
		{"remove", "c1", "..", "DELETE /v1/carts/c1/items/.."},
		{"set", "c1", "..", "PUT /v1/carts/c1/items/.."},
		{"restock", "", "..", "POST /v1/inventory/../restock"},
		{"add", "..", "book", "POST /v1/carts/../items"},
		{"clear", ".", "", "DELETE /v1/carts/."},
	} {
		h, f := testConsole(t, nil, nil)
		method, path := pageEdit(t, c.op, c.cart, c.sku, "us-east")
		if method == "" {
			continue // the page refused the id and sent nothing
		}
		body := ""
		hdr := map[string]string{}
		if method != "DELETE" {
			body, hdr["Content-Type"] = `{"sku":"book","qty":1}`, "application/json"
		}
		rec := do(h, method, path, body, hdr)
		if len(f.got) != 1 || !strings.HasPrefix(f.got[0], c.want+" ") {
			t.Errorf("%s with cart %q and sku %q: the browser sent %s %s, which the console answered %d %s; the API got %q, want %q",
				c.op, c.cart, c.sku, method, path, rec.Code, strings.TrimSpace(rec.Body.String()), f.got, c.want)
		}
	}
}
