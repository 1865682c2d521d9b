package replication_test

import (
	"encoding/json"
	"fmt"
	"testing"
)

// TestCheckoutStatusFromEveryRegion checks out a cart (keyed) at a region
// that is not its coordinator and reads the checkout's status at every
// region: each forwards to the coordinator and answers the settled order
// with its steps; an unknown key is 404 everywhere.
func TestCheckoutStatusFromEveryRegion(t *testing.T) {
	c := newCluster(t, map[string]int{"us-east/eu-west": 5, "us-east/ap-south": 5, "eu-west/ap-south": 5})
	cl := newClients(c)
	var cart string
	for i := 0; cart == ""; i++ {
		if id := fmt.Sprintf("status-%d", i); c.cfg.Home(id) == "eu-west" {
			cart = id
		}
	}
	sku := skuHomedAt(c.cfg, "ap-south", "status")
	cl.must(t, 200, "ap-south", "POST", "/v1/inventory/"+sku+"/restock", map[string]any{"qty": 5}, nil)
	cl.must(t, 200, "us-east", "POST", "/v1/carts/"+cart+"/items", map[string]any{"sku": sku, "qty": 2}, nil)
	key := []string{"Idempotency-Key", "status-1"}
	var order orderJSON
	cl.must(t, 201, "us-east", "POST", "/v1/carts/"+cart+"/checkout", nil, &order, key...)
	for _, r := range regions {
		res := cl.send(r, "GET", "/v1/carts/"+cart+"/checkout", nil, key...)
		var st struct {
			OrderID string `json:"order_id"`
			Phase   string `json:"phase"`
			Order   *struct {
				OrderID string `json:"order_id"`
			} `json:"order"`
			Steps []struct {
				Step, SKU, Result string
			} `json:"steps"`
		}
		if !res.is(200, "") || json.Unmarshal(res.body, &st) != nil {
			t.Fatalf("status at %s: %s", r, res)
		}
		if st.Phase != "settled" || st.Order == nil || st.Order.OrderID != order.OrderID || st.OrderID != order.OrderID || len(st.Steps) != 2 {
			t.Errorf("status at %s: %s, want the settled order %s with its reserve and commit", r, res.body, order.OrderID)
		}
		if res := cl.send(r, "GET", "/v1/carts/"+cart+"/checkout", nil, "Idempotency-Key", "no-such-key"); !res.is(404, "not_found") {
			t.Errorf("status of an unknown key at %s: %s, want 404 not_found", r, res)
		}
	}
}
