package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestReplayedRemoveAfterKillWaitsForEarlierIncarnation: a remove with
// Lattice-Replicas: 3 times out while ap-south is stopped (SIGSTOP); the
// region that wrote it is then killed (SIGKILL) and, as after a power
// loss (a new boot), starts as a new incarnation. The same remove sent again changes nothing, and must not
// be answered as held by 3 regions while ap-south still lacks the first
// attempt's removal, which the old incarnation wrote. Once ap-south runs
// again, a round of anti-entropy brings it the old incarnation's writes,
// and the retry is met.
func TestReplayedRemoveAfterKillWaitsForEarlierIncarnation(t *testing.T) {
	bin := buildLattice(t)
	dir, cfg, apis := writeWANCluster(t, bin, "replay", "")
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
	allConnected := func() bool {
		for _, r := range clusterRegions {
			peers, ok := clusterPeers(clients[r])
			if !ok || len(peers) != len(clusterRegions)-1 {
				return false
			}
			for _, p := range peers {
				if !p.Connected {
					return false
				}
			}
		}
		return true
	}
	pollUntil(t, 30*time.Second, "every region connected", allConnected)
	replica := func() string {
		var st struct {
			Replica    string `json:"replica"`
			CatchingUp bool   `json:"catching_up"`
		}
		status, _, b, err := clients["us-east"].call("GET", "/v1/cluster", "")
		if err != nil || status != 200 || json.Unmarshal(b, &st) != nil {
			return ""
		}
		return st.Replica
	}
	east := clients["us-east"]
	if status, _, body, err := east.call("POST", "/v1/carts/c/items", `{"sku":"book","qty":1}`, "Lattice-Replicas", "3"); err != nil || status != 200 {
		t.Fatalf("add with Lattice-Replicas: 3, every region up: %d %s %v", status, body, err)
	}
	remove := func() (int, string) {
		status, _, body, err := east.call("DELETE", "/v1/carts/c/items/book", "", "Lattice-Replicas", "3", "Lattice-Wait", "0")
		if err != nil {
			return 0, err.Error()
		}
		return status, string(body)
	}

	children["ap-south"].signal(t, syscall.SIGSTOP)
	if status, body := remove(); status != 503 || !strings.Contains(body, "replication_timeout") {
		t.Fatalf("remove with Lattice-Replicas: 3, ap-south stopped: %d %s; want 503 replication_timeout", status, body)
	}
	before := replica()
	children["us-east"].kill(t)
	emulateReboot(t, filepath.Join(dir, "data"), "us-east")
	children["us-east"] = startRegion(t, bin, cfg, "us-east", "http://"+apis["us-east"], filepath.Join(dir, "us-east.log"))
	after := replica()
	if before == "" || after == before {
		t.Fatalf("test setup: the killed region kept its replica id %q (now %q); the test needs a new incarnation", before, after)
	}
	if status, body := remove(); status == 200 {
		t.Fatalf("the retried remove at %s (the removal was written by %s, which ap-south, stopped, lacks) was answered as held by 3 regions: %s", after, before, body)
	} else if status != 503 || !strings.Contains(body, "replication_timeout") {
		t.Fatalf("the retried remove, ap-south stopped: %d %s; want 503 replication_timeout", status, body)
	}

	children["ap-south"].signal(t, syscall.SIGCONT)
	pollUntil(t, 60*time.Second, "the retried remove to be met once ap-south runs again", func() bool {
		status, _ := remove()
		return status == 200
	})
	status, _, body, err := clients["ap-south"].call("GET", "/v1/carts/c", "")
	if err != nil || status != 200 || strings.Contains(string(body), `"sku":"book"`) {
		t.Fatalf("ap-south, after the retry was met: %d %s %v; want the cart without book", status, body, err)
	}
}
