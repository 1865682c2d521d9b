package server

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/latticedb/lattice/region/config"
)

// TestEveryEndpoint walks through every route of SPEC §6 on a real region
// (BuntDB file, HTTP over a loopback listener) and checks each answer's
// status, exact shape and Lattice-Token.
func TestEveryEndpoint(t *testing.T) {
	r := startRegion(t, testConfig(t.TempDir(), config.DurabilityAlways), "us-east", Options{})

	t.Run("health", func(t *testing.T) {
		for _, path := range []string{"/healthz", "/readyz"} {
			res := r.do("GET", path, "")
			if res.status != http.StatusOK {
				t.Fatalf("%v", res)
			}
			m := decode(t, res)
			if m["region"] != "us-east" {
				t.Errorf("%v: region %v", res, m["region"])
			}
		}
	})

	t.Run("carts", func(t *testing.T) {
		checkCart(t, r.ok(200, "GET", "/v1/carts/c1", ""), "c1")
		checkCart(t, r.ok(200, "POST", "/v1/carts/c1/items", `{"sku":"us-b","qty":2}`), "c1", "us-b", 2)
		checkCart(t, r.ok(200, "POST", "/v1/carts/c1/items", `{"sku":"us-a","qty":1}`), "c1", "us-a", 1, "us-b", 2)
		checkCart(t, r.ok(200, "POST", "/v1/carts/c1/items", `{"sku":"us-a","qty":3}`), "c1", "us-a", 4, "us-b", 2)
		checkCart(t, r.ok(200, "PUT", "/v1/carts/c1/items/us-b", `{"qty":5}`), "c1", "us-a", 4, "us-b", 5)
		checkCart(t, r.ok(200, "PUT", "/v1/carts/c1/items/us-a", `{"qty":0}`), "c1", "us-b", 5)
		checkCart(t, r.ok(200, "DELETE", "/v1/carts/c1/items/us-b", ""), "c1")
		checkCart(t, r.ok(200, "DELETE", "/v1/carts/c1/items/us-b", ""), "c1") // removing nothing is fine
		checkCart(t, r.ok(200, "POST", "/v1/carts/c1/items", `{"sku":"us-c","qty":7}`), "c1", "us-c", 7)
		checkCart(t, r.ok(200, "PUT", "/v1/carts/c1/items/us-d", `{"qty":1}`), "c1", "us-c", 7, "us-d", 1)
		checkCart(t, r.ok(200, "GET", "/v1/carts/c1", ""), "c1", "us-c", 7, "us-d", 1)
		checkCart(t, r.ok(200, "DELETE", "/v1/carts/c1", ""), "c1")
		checkCart(t, r.ok(200, "GET", "/v1/carts/c1", ""), "c1")
	})

	t.Run("inventory", func(t *testing.T) {
		checkItem(t, r.ok(200, "GET", "/v1/inventory/us-x", ""), "us-x", "us-east", 0, 0)
		checkItem(t, r.ok(200, "GET", "/v1/inventory/us-x?consistent=true", ""), "us-x", "us-east", 0, 0)
		checkItem(t, r.ok(200, "POST", "/v1/inventory/us-x/restock", `{"qty":10}`), "us-x", "us-east", 10, 0)
		checkItem(t, r.ok(200, "POST", "/v1/inventory/us-x/adjust", `{"delta":5}`), "us-x", "us-east", 15, 0)
		checkItem(t, r.ok(200, "POST", "/v1/inventory/us-x/adjust", `{"delta":-3,"reason":"damaged in transit"}`), "us-x", "us-east", 12, 0)
		checkItem(t, r.ok(200, "GET", "/v1/inventory/us-x?consistent=false", ""), "us-x", "us-east", 12, 0)
	})

	t.Run("reservations", func(t *testing.T) {
		before := time.Now()
		res := r.do("POST", "/v1/reservations", `{"sku":"us-x","qty":4,"ttl_ms":60000}`)
		m := expectOK(t, res, 201)
		checkKeys(t, "reservation", m, reservationKeys)
		id, _ := m["reservation_id"].(string)
		if !strings.HasPrefix(id, "us-east:") {
			t.Fatalf("reservation id %q does not name its home", id)
		}
		if loc := res.header.Get("Location"); loc != "/v1/reservations/"+id {
			t.Errorf("Location %q", loc)
		}
		if m["sku"] != "us-x" || m["qty"] != 4.0 || m["home"] != "us-east" || m["state"] != "held" {
			t.Errorf("reservation %v", m)
		}
		exp, err := time.Parse(time.RFC3339Nano, m["expires_at"].(string))
		if err != nil || exp.Before(before.Add(59*time.Second)) || exp.After(time.Now().Add(61*time.Second)) {
			t.Errorf("expires_at %v (%v), want about a minute from now", m["expires_at"], err)
		}
		checkItem(t, r.ok(200, "GET", "/v1/inventory/us-x", ""), "us-x", "us-east", 12, 4)

		got := r.ok(200, "GET", "/v1/reservations/"+id, "")
		checkKeys(t, "reservation", got, reservationKeys)
		if got["state"] != "held" || got["reservation_id"] != id || got["expires_at"] != m["expires_at"] {
			t.Errorf("GET reservation %v, made %v", got, m)
		}

		c := r.ok(200, "POST", "/v1/reservations/"+id+"/commit", "")
		if c["state"] != "committed" {
			t.Errorf("commit: %v", c)
		}
		checkItem(t, r.ok(200, "GET", "/v1/inventory/us-x", ""), "us-x", "us-east", 8, 0)
		if again := r.ok(200, "POST", "/v1/reservations/"+id+"/commit", "{}"); again["state"] != "committed" {
			t.Errorf("repeated commit: %v", again)
		}
		checkItem(t, r.ok(200, "GET", "/v1/inventory/us-x", ""), "us-x", "us-east", 8, 0)
		expectProblem(t, r.do("POST", "/v1/reservations/"+id+"/release", ""), 409, "reservation_committed", "")

		m2 := r.ok(201, "POST", "/v1/reservations", `{"sku":"us-x","qty":2}`)
		id2 := m2["reservation_id"].(string)
		if id2 == id {
			t.Fatalf("two reservations share id %s", id)
		}
		exp2, _ := time.Parse(time.RFC3339Nano, m2["expires_at"].(string))
		if d := time.Until(exp2); d < 9*time.Minute || d > 11*time.Minute {
			t.Errorf("default ttl: expires in %v, want 10 min", d)
		}
		checkItem(t, r.ok(200, "GET", "/v1/inventory/us-x", ""), "us-x", "us-east", 8, 2)
		if rel := r.ok(200, "POST", "/v1/reservations/"+id2+"/release", ""); rel["state"] != "released" {
			t.Errorf("release: %v", rel)
		}
		if rel := r.ok(200, "POST", "/v1/reservations/"+id2+"/release", ""); rel["state"] != "released" {
			t.Errorf("repeated release: %v", rel)
		}
		checkItem(t, r.ok(200, "GET", "/v1/inventory/us-x", ""), "us-x", "us-east", 8, 0)
		expectProblem(t, r.do("POST", "/v1/reservations/"+id2+"/commit", ""), 409, "reservation_released", "")
	})

	t.Run("checkout", func(t *testing.T) {
		r.ok(200, "POST", "/v1/inventory/us-y/restock", `{"qty":3}`)
		r.ok(200, "POST", "/v1/carts/c2/items", `{"sku":"us-y","qty":1}`)
		r.ok(200, "POST", "/v1/carts/c2/items", `{"sku":"us-x","qty":2}`)
		o := r.ok(201, "POST", "/v1/carts/c2/checkout", `{"ttl_ms":30000}`)
		checkKeys(t, "order", o, orderKeys)
		if o["cart_id"] != "c2" || !strings.HasPrefix(o["order_id"].(string), "o-") {
			t.Errorf("order %v", o)
		}
		lines := o["lines"].([]any)
		if len(lines) != 2 {
			t.Fatalf("order lines %v", lines)
		}
		for i, want := range []struct {
			sku string
			qty float64
		}{{"us-x", 2}, {"us-y", 1}} {
			checkKeys(t, "order line", lines[i], orderLineKeys)
			l := lines[i].(map[string]any)
			if l["sku"] != want.sku || l["qty"] != want.qty || l["home"] != "us-east" {
				t.Errorf("order line %d: %v, want %s x%v", i, l, want.sku, want.qty)
			}
			res := r.ok(200, "GET", "/v1/reservations/"+l["reservation_id"].(string), "")
			if res["state"] != "committed" || res["sku"] != want.sku || res["qty"] != want.qty {
				t.Errorf("reservation of line %d: %v", i, res)
			}
		}
		checkCart(t, r.ok(200, "GET", "/v1/carts/c2", ""), "c2")
		checkItem(t, r.ok(200, "GET", "/v1/inventory/us-x", ""), "us-x", "us-east", 6, 0)
		checkItem(t, r.ok(200, "GET", "/v1/inventory/us-y", ""), "us-y", "us-east", 2, 0)
		// A body is optional.
		r.ok(200, "POST", "/v1/carts/c3/items", `{"sku":"us-y","qty":2}`)
		r.ok(201, "POST", "/v1/carts/c3/checkout", "")
		checkItem(t, r.ok(200, "GET", "/v1/inventory/us-y", ""), "us-y", "us-east", 0, 0)
	})

	t.Run("cluster", func(t *testing.T) {
		m := r.ok(200, "GET", "/v1/cluster", "")
		checkKeys(t, "cluster", m, sorted("region", "replica", "catching_up", "divergent_keys", "version_vector", "store", "peers"))
		if m["region"] != "us-east" {
			t.Errorf("cluster region %v", m["region"])
		}
		vv, _ := m["version_vector"].(map[string]any)
		// A new store of a region of several starts as a new incarnation,
		// us-east+K.
		if n, _ := vv[m["replica"].(string)].(float64); n < 20 || !strings.HasPrefix(m["replica"].(string), "us-east+") {
			t.Errorf("version vector %v of replica %v: us-east made more writes", vv, m["replica"])
		}
		st := m["store"].(map[string]any)
		checkKeys(t, "store", st, sorted("file_bytes", "live_bytes", "durability", "corrupt_keys"))
		if st["durability"] != "always" || st["file_bytes"].(float64) <= 0 || len(st["corrupt_keys"].([]any)) != 0 {
			t.Errorf("store %v", st)
		}
		peers := m["peers"].([]any)
		if len(peers) != 1 {
			t.Fatalf("peers %v, want eu-west", peers)
		}
		p := peers[0].(map[string]any)
		// Without replication a configured peer has the shape replication
		// serves (region.PeerStatus), never connected.
		checkKeys(t, "peer", p, sorted("region", "connected", "pending_deltas", "pending_bytes", "inflight_messages", "lag_ms",
			"peer_version_vector", "anti_entropy", "anti_entropy_rounds", "unrepaired_keys", "anti_entropy_keys_pushed",
			"anti_entropy_keys_pulled", "anti_entropy_rate_bytes_per_sec", "bytes_sent", "delta_messages_sent", "stream_bytes_sent"))
		if p["region"] != "eu-west" || p["connected"] != false || p["anti_entropy"] != "idle" {
			t.Errorf("peer %v", p)
		}
	})

	t.Run("openapi", func(t *testing.T) {
		res := r.do("GET", "/v1/openapi.json", "")
		if res.status != 200 {
			t.Fatalf("%v", res)
		}
		var doc struct {
			OpenAPI string                     `json:"openapi"`
			Paths   map[string]json.RawMessage `json:"paths"`
		}
		if err := json.Unmarshal(res.body, &doc); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(doc.OpenAPI, "3.") {
			t.Errorf("openapi %q", doc.OpenAPI)
		}
		for _, p := range []string{"/v1/carts/{cart_id}", "/v1/carts/{cart_id}/items", "/v1/carts/{cart_id}/items/{sku}",
			"/v1/carts/{cart_id}/checkout", "/v1/inventory/{sku}", "/v1/inventory/{sku}/restock", "/v1/inventory/{sku}/adjust",
			"/v1/reservations", "/v1/reservations/{id}", "/v1/reservations/{id}/commit", "/v1/reservations/{id}/release",
			"/v1/cluster"} {
			if _, ok := doc.Paths[p]; !ok {
				t.Errorf("the OpenAPI document lacks %s", p)
			}
		}
	})

	t.Run("metrics", func(t *testing.T) {
		res := r.do("GET", "/metrics", "")
		if res.status != 200 || !strings.HasPrefix(res.header.Get("Content-Type"), "text/plain") {
			t.Fatalf("%d %s", res.status, res.header.Get("Content-Type"))
		}
		body := string(res.body)
		for _, want := range []string{
			`lattice_store_fsync_batch_size_bucket{region="us-east",le="1"}`,
			`lattice_store_fsync_batch_size_count{region="us-east"}`,
			`lattice_http_requests_total{method="POST",region="us-east",route="/v1/carts/{cart_id}/items",status="200"}`,
			`lattice_http_requests_total{method="POST",region="us-east",route="/v1/reservations/{id}/release",status="409"}`,
			`lattice_http_request_duration_seconds_bucket{method="GET",region="us-east",route="/v1/carts/{cart_id}"`,
			`lattice_reservations_total{op="reserve",region="us-east",result="ok"}`,
			"go_goroutines ",
			"process_open_fds ",
		} {
			if !strings.Contains(body, want) {
				t.Errorf("/metrics lacks %s", want)
			}
		}
	})
}
