package api_test

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/latticedb/lattice/api"
)

// TestCheckoutReservationConformsToSchema checks the reservation a
// checkout makes for a cart line of more than 1,000,000 units (docs/api.md,
// Carts: "A sku's quantity can exceed 1,000,000 through several adds";
// docs/checkout.md: a line may hold more than one reservation request
// may) against the Reservation schema of the document the region serves.
// GET /v1/reservations/{id} and POST …/commit answer that reservation with
// its qty, but the schema declares qty at most 1,000,000, so a client that
// validates answers against the document refuses a real answer.
func TestCheckoutReservationConformsToSchema(t *testing.T) {
	east, _ := startPair(t)
	doc := servedDocument(t, east)
	for i := 0; i < 2; i++ {
		if a := send(t, http.MethodPost, east+"/v1/inventory/us-big/restock", `{"qty":1000000}`); a.status != http.StatusOK {
			t.Fatalf("restock: %d %s", a.status, a.body)
		}
		if a := send(t, http.MethodPost, east+"/v1/carts/us-cart/items", `{"sku":"us-big","qty":1000000}`); a.status != http.StatusOK {
			t.Fatalf("add: %d %s", a.status, a.body)
		}
	}
	a := send(t, http.MethodPost, east+"/v1/carts/us-cart/checkout", "")
	if a.status != http.StatusCreated {
		t.Fatalf("checkout: %d %s", a.status, a.body)
	}
	var order struct {
		Lines []struct {
			Qty           int64  `json:"qty"`
			ReservationID string `json:"reservation_id"`
		} `json:"lines"`
	}
	if err := json.Unmarshal(a.body, &order); err != nil {
		t.Fatal(err)
	}
	if len(order.Lines) != 1 || order.Lines[0].Qty != 2000000 {
		t.Fatalf("checkout answered %s, want one line of 2000000", a.body)
	}
	id := order.Lines[0].ReservationID
	for _, r := range []struct{ method, path string }{
		{http.MethodGet, "/v1/reservations/" + id},
		{http.MethodPost, "/v1/reservations/" + id + "/commit"},
	} {
		a := send(t, r.method, east+r.path, "")
		if a.status != http.StatusOK {
			t.Fatalf("%s %s: %d %s", r.method, r.path, a.status, a.body)
		}
		v, err := api.DecodeJSON(a.body)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range api.SchemaErrors(doc, "#/components/schemas/Reservation", v) {
			t.Errorf("%s %s answered %s; against the served Reservation schema: %s", r.method, r.path, a.body, e)
		}
	}
}
