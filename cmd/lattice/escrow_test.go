package main

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/latticedb/lattice/region/regiontest"
)

// TestEscrowWithRealProcesses runs three regions as `lattice serve`
// processes over QUIC with an escrow sku homed at us-east: eu-west
// reserves from rights it was granted, without the home; with the home
// stopped (SIGSTOP), eu-west keeps reserving and committing within its
// rights, then refuses; resumed, no unit is oversold; eu-west killed with
// SIGKILL while it holds rights gets them back with its store.
func TestEscrowWithRealProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three processes; skipped with -short")
	}
	bin := buildLattice(t)
	dir, cfg, apis := writeWANCluster(t, bin, "escrow",
		"homes:\n  - {prefix: es-, region: us-east, escrow: true}\n  - {prefix: hd-, region: us-east}\n")
	children := map[string]*child{}
	clients := map[string]*api{}
	for _, r := range clusterRegions {
		children[r] = startRegion(t, bin, cfg, r, "http://"+apis[r], filepath.Join(dir, r+".log"))
		clients[r] = newAPI("http://" + apis[r])
	}
	defer func() {
		if t.Failed() {
			for _, r := range clusterRegions {
				t.Logf("%s log:\n%s", r, children[r].logTail())
			}
		}
	}()
	for _, r := range clusterRegions {
		waitCaughtUp(t, "http://"+apis[r])
	}
	home, eu := clients["us-east"], clients["eu-west"]
	const sku, stock = "es-1", 60
	type item struct {
		Stock     int64  `json:"stock"`
		Available int64  `json:"available"`
		Granted   *int64 `json:"granted"`
		Rights    *int64 `json:"rights"`
	}
	read := func(a *api) item {
		var it item
		a.get(t, "/v1/inventory/"+sku, &it)
		return it
	}
	if status, _, body, err := home.call("POST", "/v1/inventory/"+sku+"/restock", fmt.Sprintf(`{"qty":%d}`, stock)); err != nil || status != 200 {
		t.Fatalf("restock: %d %s %v", status, body, err)
	}
	regiontest.WaitFor(t, 30*time.Second, "eu-west sees the stock", func() bool { return read(eu).Stock == stock })
	reserve := func(a *api, qty int) (string, int) {
		status, _, body, err := a.call("POST", "/v1/reservations", fmt.Sprintf(`{"sku":%q,"qty":%d,"ttl_ms":600000}`, sku, qty))
		if err != nil {
			return "", 0
		}
		var r struct {
			ID string `json:"reservation_id"`
		}
		_ = json.Unmarshal(body, &r)
		return r.ID, status
	}
	first, status := reserve(eu, 2)
	if status != 201 || !strings.HasPrefix(first, "eu-west:") {
		t.Fatalf("first reservation at eu-west: %d %s", status, first)
	}
	// Within its rights, eu-west answers faster than the round trip to
	// the home (30 ms): it does not ask.
	start := time.Now()
	if id, status := reserve(eu, 1); status != 201 || !strings.HasPrefix(id, "eu-west:") {
		t.Fatalf("second reservation at eu-west: %d %s", status, id)
	}
	t.Logf("a reservation decided from rights took %v (round trip to the home: 30 ms)", time.Since(start))

	// The home stopped: eu-west goes on within its rights.
	rights := *read(eu).Rights
	children["us-east"].signal(t, syscall.SIGSTOP)
	var held []string
	for range rights {
		id, status := reserve(eu, 1)
		if status != 201 || !strings.HasPrefix(id, "eu-west:") {
			t.Fatalf("reservation %d of the %d eu-west holds rights to, with the home stopped: %d", len(held)+1, rights, status)
		}
		held = append(held, id)
	}
	if _, status := reserve(eu, 1); status != 503 {
		t.Fatalf("a reservation beyond eu-west's rights with the home stopped: %d, want 503", status)
	}
	committed := int64(0)
	for _, id := range held[:len(held)/2] {
		if status, _, body, err := eu.call("POST", "/v1/reservations/"+id+"/commit", ""); err != nil || status != 200 {
			t.Fatalf("commit %s at eu-west with the home stopped: %d %s %v", id, status, body, err)
		}
		committed++
	}
	children["us-east"].signal(t, syscall.SIGCONT)
	regiontest.WaitFor(t, 30*time.Second, "the home sees eu-west's commits", func() bool { return read(home).Stock == stock-committed })

	// No oversell: every region asks for the rest at once, from every
	// side; the units held and committed never exceed the stock.
	var mu sync.Mutex
	total := int64(len(held)) + 3 // eu-west's holds (committed or not) and its first two
	var wg sync.WaitGroup
	for _, r := range clusterRegions {
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					_, status := reserve(clients[r], 3)
					if status != 201 {
						return
					}
					mu.Lock()
					total += 3
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	if total > stock {
		t.Fatalf("%d units held or committed of %d", total, stock)
	}
	t.Logf("%d of %d units held or committed after every region reserved what it could", total, stock)

	// eu-west killed while it holds rights gets them back with its store.
	if s, _, body, err := home.call("POST", "/v1/inventory/"+sku+"/restock", `{"qty":40}`); err != nil || s != 200 {
		t.Fatalf("restock: %d %s %v", s, body, err)
	}
	regiontest.WaitFor(t, 30*time.Second, "eu-west sees the restock", func() bool { return read(eu).Stock == stock+40-committed })
	// eu-west may have kept a unit or two of rights from before; a few
	// reservations make it ask for a new batch.
	var before int64
	for i := 0; before == 0 && i < 5; i++ {
		if _, status := reserve(eu, 1); status != 201 {
			t.Fatalf("a reservation after the restock: %d", status)
		}
		before = *read(eu).Rights
	}
	if before == 0 {
		t.Fatal("eu-west holds no rights before the kill")
	}
	children["eu-west"].kill(t)
	children["eu-west"] = startRegion(t, bin, cfg, "eu-west", "http://"+apis["eu-west"], filepath.Join(dir, "eu-west.log"))
	if after := read(eu).Rights; after == nil || *after != before {
		t.Fatalf("eu-west held %d rights before SIGKILL, %v after", before, after)
	}
	regiontest.WaitFor(t, 30*time.Second, "eu-west reserves from its rights again after its restart", func() bool {
		id, status := reserve(eu, 1)
		return status == 201 && strings.HasPrefix(id, "eu-west:")
	})
}
