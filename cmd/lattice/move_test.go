package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/latticedb/lattice/region/config"
	"github.com/latticedb/lattice/region/regiontest"
)

// TestMovePartition moves a partition between the nodes of a region the
// way docs/operations.md says, with real processes that each keep their
// files in a directory of their own (as pods with a volume each): stop
// the owner, back the partition's store up, restore it on the new owner,
// change the config of every node, restart. Nothing acknowledged is lost,
// the moved partition serves from its new node, and the restored store
// goes on as a new incarnation (no dot reused).
func TestMovePartition(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three processes; skipped with -short")
	}
	bin := buildLattice(t)
	dir := t.TempDir()
	const partitions = 4
	if out, err := exec.Command(bin, "certs", "--dir", filepath.Join(dir, "certs"), "--cluster", "move", "us-east", "eu-west").CombinedOutput(); err != nil {
		t.Fatalf("lattice certs: %v\n%s", err, out)
	}
	type proc struct {
		region, node, dir, api, peer string
		n                            *partNode
	}
	procs := []*proc{
		{region: "us-east", node: "n-0"},
		{region: "us-east", node: "n-1"},
		{region: "eu-west", node: "eu-west"},
	}
	for _, p := range procs {
		p.dir = filepath.Join(dir, p.region+"-"+p.node)
		if err := os.MkdirAll(p.dir, 0o755); err != nil {
			t.Fatal(err)
		}
		p.api, p.peer = freeAddr(t), freeUDPAddr(t)
		p.n = &partNode{region: p.region, node: p.node, base: "http://" + p.api, log: filepath.Join(p.dir, "serve.log")}
		p.n.a = newAPI(p.n.base)
	}
	// writeConfigs gives every process its own copy of the cluster's
	// config (data_dir ./data is its own directory), us-east's n-0 owning
	// own0 and n-1 the other partitions.
	writeConfigs := func(own0, own1 string) {
		var b strings.Builder
		fmt.Fprintf(&b, "cluster: move\ndata_dir: ./data\ntls_dir: %s\ndurability: always\npartitions: %d\nregions:\n", filepath.Join(dir, "certs"), partitions)
		fmt.Fprintf(&b, "  - name: us-east\n    nodes:\n      - {name: n-0, api: %q, peer: %q, partitions: %s}\n      - {name: n-1, api: %q, peer: %q, partitions: %s}\n",
			procs[0].api, procs[0].peer, own0, procs[1].api, procs[1].peer, own1)
		fmt.Fprintf(&b, "  - {name: eu-west, api: %q, peer: %q}\n", procs[2].api, procs[2].peer)
		for _, p := range procs {
			if err := os.WriteFile(filepath.Join(p.dir, "lattice.yaml"), []byte(b.String()), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	writeConfigs(`"0-1"`, `"2-3"`)
	start := func(p *proc) {
		startNode(t, bin, filepath.Join(p.dir, "lattice.yaml"), p.n)
		waitReady(t, p.n.base, p.n.c.exited)
	}
	for _, p := range procs {
		start(p)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, p := range procs {
				t.Logf("%s/%s log tail:\n%s", p.region, p.node, p.n.c.logTail())
			}
		}
	})

	// Carts of partition 3, written through both us-east nodes and
	// eu-west.
	var moved []string
	for i := 0; len(moved) < 6; i++ {
		if id := fmt.Sprintf("mv-%d", i); config.PartitionOf(id, partitions) == 3 {
			moved = append(moved, id)
		}
	}
	add := func(n *partNode, cart, sku string) {
		t.Helper()
		if status, _, body, err := n.a.call("POST", "/v1/carts/"+cart+"/items", fmt.Sprintf(`{"sku":%q,"qty":1}`, sku)); err != nil || status != 200 {
			t.Fatalf("add %s to %s at %s/%s: %d %s %v", sku, cart, n.region, n.node, status, body, err)
		}
	}
	for i, cart := range moved {
		add(procs[i%3].n, cart, "before")
	}
	has := func(n *partNode, cart string, skus ...string) bool {
		status, _, body, err := n.a.call("GET", "/v1/carts/"+cart, "")
		if err != nil || status != 200 {
			return false
		}
		for _, s := range skus {
			if !strings.Contains(string(body), fmt.Sprintf("%q", s)) {
				return false
			}
		}
		return true
	}
	for _, cart := range moved {
		regiontest.WaitFor(t, 20*time.Second, "eu-west has "+cart, func() bool { return has(procs[2].n, cart, "before") })
	}
	replicaOf := func(n *partNode, part int) string {
		var st struct {
			Partitions []struct {
				Partition int    `json:"partition"`
				Replica   string `json:"replica"`
			} `json:"partitions"`
		}
		n.a.get(t, "/v1/cluster", &st)
		for _, p := range st.Partitions {
			if p.Partition == part {
				return p.Replica
			}
		}
		return ""
	}
	oldReplica := replicaOf(procs[1].n, 3)
	if oldReplica == "" {
		t.Fatal("n-1 does not list partition 3 in /v1/cluster")
	}

	// 1. Stop the owner (SIGTERM: a clean stop).
	if err := procs[1].n.c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := <-procs[1].n.c.exited; code != 0 {
		t.Fatalf("n-1 exited %d after SIGTERM", code)
	}
	// 2. Back partition 3 up from n-1's files and restore it into n-0's.
	snap := filepath.Join(dir, "p3.snapshot")
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
			t.Fatalf("lattice %v: %v\n%s", args, err, out)
		}
	}
	run("backup", "--config", filepath.Join(procs[1].dir, "lattice.yaml"), "--region", "us-east", "--partition", "3", "--out", snap)
	// n-0 must be stopped while its store for partition 3 is put in
	// place (restore refuses a running store; n-0 holds no partition 3
	// yet, but the procedure stops it for the config change anyway).
	if err := procs[0].n.c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-procs[0].n.c.exited
	run("restore", "--config", filepath.Join(procs[0].dir, "lattice.yaml"), "--region", "us-east", "--partition", "3", "--from", snap)
	// 3. Every node's config: n-0 owns 0-1 and 3, n-1 owns 2. Roll all.
	writeConfigs(`["0-1", "3"]`, `"2"`)
	start(procs[0])
	start(procs[1])
	if err := procs[2].n.c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-procs[2].n.c.exited
	start(procs[2])

	// The moved partition serves from n-0, through either us-east node,
	// with everything written before the move, and takes new writes.
	newReplica := replicaOf(procs[0].n, 3)
	if newReplica == "" || newReplica == oldReplica {
		t.Fatalf("partition 3 at its new node is replica %q (before the move %q): a restored store must go on as a new incarnation", newReplica, oldReplica)
	}
	for _, cart := range moved {
		for _, p := range procs[:2] {
			if !has(p.n, cart, "before") {
				t.Fatalf("after the move, %s at %s/%s lacks what was acknowledged before", cart, p.region, p.node)
			}
		}
	}
	// The restored partition decides again once it caught up with
	// eu-west; carts take writes at once.
	for i, cart := range moved {
		add(procs[i%2].n, cart, "after")
	}
	for _, cart := range moved {
		regiontest.WaitFor(t, 30*time.Second, "eu-west has the write made after the move to "+cart, func() bool { return has(procs[2].n, cart, "before", "after") })
	}
	var st struct {
		Partitions []struct {
			Partition int `json:"partition"`
		} `json:"partitions"`
	}
	procs[1].n.a.get(t, "/v1/cluster", &st)
	if len(st.Partitions) != 1 || st.Partitions[0].Partition != 2 {
		b, _ := json.Marshal(st)
		t.Fatalf("n-1 after the move lists %s, want partition 2 only", b)
	}
}
