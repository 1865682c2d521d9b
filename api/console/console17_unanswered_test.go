package console

import (
	"encoding/json"
	"io"
	"net/http"
	"testing"
)

// TestRelayedEditSentButUnansweredIsNotUnreachable: a relay answers 502
// region_unreachable when the region could not be asked, which tells the
// user the edit was not made. When the edit was sent and the region
// applied it, but its answer never came back (the connection dropped),
// the relay must not say so: an add retried on that word is made twice.
func TestRelayedEditSentButUnansweredIsNotUnreachable(t *testing.T) {
	applied := make(chan struct{}, 1)
	h, _ := consoleWithPeer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body)
		applied <- struct{}{} // the region applies the add...
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close() // ...and its answer is lost
		}
	}))
	rec := do(h, "POST", "/console/api/regions/eu-west/v1/carts/c1/items", `{"sku":"book","qty":1}`,
		map[string]string{"Content-Type": "application/json"})
	select {
	case <-applied:
	default:
		t.Fatalf("the edit did not reach eu-west: %d %s", rec.Code, rec.Body)
	}
	var p struct {
		Code   string `json:"code"`
		Detail string `json:"detail"`
	}
	json.Unmarshal(rec.Body.Bytes(), &p)
	if rec.Code < 500 {
		t.Fatalf("an edit whose answer was lost: %d %s, want a 5xx problem", rec.Code, rec.Body)
	}
	if p.Code == "region_unreachable" {
		t.Errorf("an edit eu-west applied but whose answer was lost is answered %d %s (%q): as if eu-west could not be asked, so the user retries the add",
			rec.Code, p.Code, p.Detail)
	}
}
