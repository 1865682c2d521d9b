package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The tests of the damage10 files run `lattice serve` processes (the
// reconfCluster of reconfig5_test.go) and take one region through a
// value of its store file that fails its checksum, as operations.md
// ("Damaged values", "Incarnations", "Catch-up", "Backup and restore")
// and the README's Limitations describe it: the region goes on as a new
// incarnation, catches up with every peer, holds the damaged keys back
// until then, and serves them afterwards.

// damageStatus is the part of /v1/cluster these tests read.
type damageStatus struct {
	Replica       string   `json:"replica"`
	CatchingUp    bool     `json:"catching_up"`
	DivergentKeys []string `json:"divergent_keys"`
	Store         struct {
		CorruptKeys []string `json:"corrupt_keys"`
	} `json:"store"`
	Peers []clusterPeer `json:"peers"`
}

func (c *reconfCluster) damageStatus(r string) damageStatus {
	c.t.Helper()
	var st damageStatus
	c.api(r).get(c.t, "/v1/cluster", &st)
	return st
}

// storePath is the path of region r's store file.
func (c *reconfCluster) storePath(r string) string {
	return filepath.Join(c.dir, "data", r, "data.db")
}

// flipLastValueByte flips a bit of the last byte of the latest value
// stored under key in the BuntDB file at path (a `set` command:
// "$len\r\nkey\r\n$len\r\nvalue\r\n"), so that the value fails its
// checksum and everything else in the file stays as it was.
func flipLastValueByte(t *testing.T, path, key string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	head := []byte(fmt.Sprintf("$%d\r\n%s\r\n$", len(key), key))
	i := bytes.LastIndex(b, head)
	if i < 0 {
		t.Fatalf("%s not found in %s", key, path)
	}
	rest := b[i+len(head):]
	end := bytes.Index(rest, []byte("\r\n"))
	if end < 0 {
		t.Fatalf("%s: no value length after %s", path, key)
	}
	n, err := strconv.Atoi(string(rest[:end]))
	if err != nil || n < 8 {
		t.Fatalf("%s: value of %s has length %q", path, key, rest[:end])
	}
	j := i + len(head) + end + 2 // the value's first byte
	b[j+n-1] ^= 0x40
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// pause stops region r with SIGSTOP (its peers' packets go unanswered)
// and returns a function that continues it; the test's end continues it
// too.
func (c *reconfCluster) pause(r string) func() {
	c.t.Helper()
	p := c.children[r].cmd.Process
	if err := p.Signal(syscall.SIGSTOP); err != nil {
		c.t.Fatal(err)
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			if err := p.Signal(syscall.SIGCONT); err != nil {
				c.t.Fatal(err)
			}
		}
	}
	c.t.Cleanup(func() { _ = p.Signal(syscall.SIGCONT) })
	return resume
}

// callOf sends a request to region r and returns the status, the
// Retry-After header and the trimmed body ("" and status 0 on a transport
// error).
func (c *reconfCluster) callOf(r, method, path, body string) (int, string, string) {
	c.t.Helper()
	a := c.api(r)
	a.hc.Timeout = 10 * time.Second
	status, hdr, b, err := a.call(method, path, body)
	if err != nil {
		return 0, "", err.Error()
	}
	return status, hdr.Get("Retry-After"), string(bytes.TrimSpace(b))
}

// cartOf returns cart id at region r as sku → qty, and the status of the
// read.
func (c *reconfCluster) cartOf(r, id string) (map[string]int, int, string) {
	c.t.Helper()
	status, _, body := c.callOf(r, "GET", "/v1/carts/"+id, "")
	if status != 200 {
		return nil, status, body
	}
	var v struct {
		Items []struct {
			SKU string `json:"sku"`
			Qty int    `json:"qty"`
		} `json:"items"`
	}
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		c.t.Fatalf("cart %s at %s: %v: %s", id, r, err, body)
	}
	out := map[string]int{}
	for _, it := range v.Items {
		out[it.SKU] = it.Qty
	}
	return out, status, body
}

// metric returns the sum of the samples of metric name at region r.
func (c *reconfCluster) metric(r, name string) float64 {
	c.t.Helper()
	status, _, body := c.callOf(r, "GET", "/metrics", "")
	if status != 200 {
		c.t.Fatalf("metrics of %s: %d", r, status)
	}
	var sum float64
	for line := range strings.Lines(body) {
		if strings.HasPrefix(line, name+" ") || strings.HasPrefix(line, name+"{") {
			f := strings.Fields(line)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			sum += v
		}
	}
	return sum
}

// backup runs `lattice backup` of region r to a new file and returns its
// exit code and output.
func (c *reconfCluster) backup(r, name string) (int, string) {
	c.t.Helper()
	out := filepath.Join(c.dir, name)
	code, stdout, stderr := runCLI(c.t, "backup", "--config", c.cfg, "--region", r, "--out", out)
	return code, strings.TrimSpace(stdout + stderr)
}

// everyRegion waits until cond holds at every region of c.
func (c *reconfCluster) everyRegion(what string, cond func(r string) bool) {
	c.t.Helper()
	pollUntil(c.t, 20*time.Second, what, func() bool {
		for _, r := range c.regions {
			if !cond(r) {
				return false
			}
		}
		return true
	})
}
