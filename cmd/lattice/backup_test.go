package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestBackupRestoreUsage(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, dir, freeAddr(t))
	snap := filepath.Join(dir, "snap.db")
	if err := os.WriteFile(snap, []byte("not a snapshot"), 0o644); err != nil {
		t.Fatal(err)
	}
	badCfg := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(badCfg, []byte("cluster: c\nreplicas: 3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out.db")
	cases := []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{"help backup", []string{"help", "backup"}, 0, "Usage: lattice backup --config FILE --region NAME [--partition N] --out FILE", ""},
		{"help restore", []string{"help", "restore"}, 0, "Usage: lattice restore --config FILE --region NAME [--partition N] --from FILE", ""},
		{"usage lists backup", []string{"help"}, 0, "lattice backup --config FILE", ""},
		{"usage lists restore", []string{"help"}, 0, "lattice restore --config FILE", ""},
		{"backup -h", []string{"backup", "-h"}, 0, "", "-force"},
		{"restore -h", []string{"restore", "-h"}, 0, "", "-from FILE"},
		{"backup without flags", []string{"backup"}, 2, "", "--config is required"},
		{"backup without region", []string{"backup", "--config", cfg, "--out", out}, 2, "", "--region is required"},
		{"backup without out", []string{"backup", "--config", cfg, "--region", "us-east"}, 2, "", "--out is required"},
		{"backup with an argument", []string{"backup", "--config", cfg, "--region", "us-east", "--out", out, "extra"}, 2, "", `unexpected argument "extra"`},
		{"backup with an unknown flag", []string{"backup", "--from", out}, 2, "", "flag provided but not defined: -from"},
		{"backup a missing config", []string{"backup", "--config", "/nonexistent/l.yaml", "--region", "us-east", "--out", out}, 1, "", "no such file"},
		{"backup with a bad config", []string{"backup", "--config", badCfg, "--region", "us-east", "--out", out}, 1, "", "lattice backup: "},
		{"backup an unknown region", []string{"backup", "--config", cfg, "--region", "mars", "--out", out}, 1, "", `region "mars" is not in`},
		{"backup a region that never ran", []string{"backup", "--config", cfg, "--region", "us-east", "--out", out}, 1, "", "has no store at"},
		{"restore without flags", []string{"restore"}, 2, "", "--config is required"},
		{"restore without region", []string{"restore", "--config", cfg, "--from", snap}, 2, "", "--region is required"},
		{"restore without from", []string{"restore", "--config", cfg, "--region", "us-east"}, 2, "", "--from is required"},
		{"restore with an argument", []string{"restore", "extra", "--config", cfg, "--region", "us-east", "--from", snap}, 2, "", `unexpected argument "extra"`},
		{"restore with an unknown flag", []string{"restore", "--out", snap}, 2, "", "flag provided but not defined: -out"},
		{"restore an unknown region", []string{"restore", "--config", cfg, "--region", "mars", "--from", snap}, 1, "", `region "mars" is not in`},
		{"restore from a missing file", []string{"restore", "--config", cfg, "--region", "us-east", "--from", filepath.Join(dir, "nope.db")}, 1, "", "no such file"},
		{"restore from a directory", []string{"restore", "--config", cfg, "--region", "us-east", "--from", dir}, 1, "", "is not a regular file"},
		{"restore from a file that is no snapshot", []string{"restore", "--config", cfg, "--region", "us-east", "--from", snap}, 1, "", "--from " + snap},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(t, tc.args...)
			if code != tc.code {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, stdout, stderr)
			}
			if !strings.Contains(stdout, tc.stdout) {
				t.Errorf("stdout %q lacks %q", stdout, tc.stdout)
			}
			if !strings.Contains(stderr, tc.stderr) {
				t.Errorf("stderr %q lacks %q", stderr, tc.stderr)
			}
			if code != 0 && stdout != "" {
				t.Errorf("a refused command printed %q", stdout)
			}
		})
	}
	// Nothing was written by any of them: no snapshot, no data directory.
	if _, err := os.Stat(out); err == nil {
		t.Errorf("a refused backup wrote %s", out)
	}
	if _, err := os.Stat(filepath.Join(dir, "data")); err == nil {
		t.Errorf("a refused command created the data directory")
	}
	if b, _ := os.ReadFile(snap); string(b) != "not a snapshot" {
		t.Errorf("the --from file changed")
	}
}

// inProcessRegion is `lattice serve` run in this process.
type inProcessRegion struct {
	base   string
	cancel context.CancelFunc
	done   chan int
	stderr *syncBuffer
}

func serveInProcess(t *testing.T, cfg, addr string) *inProcessRegion {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &inProcessRegion{base: "http://" + addr, cancel: cancel, done: make(chan int, 1), stderr: &syncBuffer{}}
	go func() {
		r.done <- run(ctx, []string{"serve", "--config", cfg, "--region", "us-east"}, &syncBuffer{}, r.stderr)
	}()
	waitReady(t, r.base, r.done)
	t.Cleanup(func() { r.stop(t) })
	return r
}

func (r *inProcessRegion) stop(t *testing.T) {
	t.Helper()
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	select {
	case code := <-r.done:
		if code != 0 {
			t.Errorf("serve exited %d:\n%s", code, r.stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop")
	}
}

func (r *inProcessRegion) add(t *testing.T, cart, sku string) {
	t.Helper()
	res, err := http.Post(r.base+"/v1/carts/"+cart+"/items", "application/json", strings.NewReader(fmt.Sprintf(`{"sku":%q,"qty":1}`, sku)))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("add %s to %s: %d", sku, cart, res.StatusCode)
	}
}

func (r *inProcessRegion) skus(t *testing.T, cart string) []string {
	t.Helper()
	var c struct {
		Items []struct {
			SKU string `json:"sku"`
		} `json:"items"`
	}
	newAPI(r.base).get(t, "/v1/carts/"+cart, &c)
	var out []string
	for _, it := range c.Items {
		out = append(out, it.SKU)
	}
	return out
}

// TestBackupAndRestore backs up a running region, refuses to restore
// over it while it runs and to write over what it should not, restores it
// once stopped, and checks that the restarted region holds the snapshot's
// writes, not the later ones, and goes on as a new incarnation.
func TestBackupAndRestore(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	cfg := writeConfig(t, dir, addr)
	store := filepath.Join(dir, "data", "us-east", "data.db")
	r := serveInProcess(t, cfg, addr)
	r.add(t, "bk", "before")

	backups := filepath.Join(dir, "backups")
	if err := os.Mkdir(backups, 0o755); err != nil {
		t.Fatal(err)
	}
	snap := filepath.Join(backups, "us-east.db")
	code, stdout, stderr := runCLI(t, "backup", "--config", cfg, "--region", "us-east", "--out", snap)
	if code != 0 {
		t.Fatalf("backup: exit %d: %s", code, stderr)
	}
	fi, err := os.Stat(snap)
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("wrote %d bytes to %s", fi.Size(), snap); !strings.Contains(stdout, want) {
		t.Errorf("stdout %q lacks %q", stdout, want)
	}
	snapBytes, _ := os.ReadFile(snap)
	onlySnap := func() {
		t.Helper()
		ents, _ := os.ReadDir(backups)
		if len(ents) != 1 || ents[0].Name() != "us-east.db" {
			var names []string
			for _, e := range ents {
				names = append(names, e.Name())
			}
			t.Errorf("backups directory holds %v, want only us-east.db", names)
		}
		if b, _ := os.ReadFile(snap); !bytes.Equal(b, snapBytes) {
			t.Errorf("the snapshot changed")
		}
	}
	onlySnap()

	r.add(t, "bk", "after")

	// Refusals that leave the snapshot and the store alone.
	storeBytes, _ := os.ReadFile(store)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"existing out", []string{"backup", "--config", cfg, "--region", "us-east", "--out", snap}, "already exists; pass --force"},
		{"out a directory", []string{"backup", "--config", cfg, "--region", "us-east", "--out", backups, "--force"}, "is a directory"},
		{"out in a missing directory", []string{"backup", "--config", cfg, "--region", "us-east", "--out", filepath.Join(dir, "nope", "x.db")}, "does not exist"},
		{"out the store", []string{"backup", "--config", cfg, "--region", "us-east", "--out", store, "--force"}, "is a file of the region's store"},
		{"out the identity file", []string{"backup", "--config", cfg, "--region", "us-east", "--out", store + ".id", "--force"}, "is a file of the region's store"},
		{"restore while running", []string{"restore", "--config", cfg, "--region", "us-east", "--from", snap}, "region us-east is running"},
	} {
		code, stdout, stderr := runCLI(t, tc.args...)
		if code != 1 || !strings.Contains(stderr, tc.want) || stdout != "" {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want 1 and %q", tc.name, code, stdout, stderr, tc.want)
		}
	}
	onlySnap()
	if b, _ := os.ReadFile(store); len(b) < len(storeBytes) || !bytes.Equal(b[:len(storeBytes)], storeBytes) {
		t.Errorf("a refused command changed the store")
	}

	// --force replaces the snapshot, atomically (no temporary file left).
	code, _, stderr = runCLI(t, "backup", "--config", cfg, "--region", "us-east", "--out", snap, "--force")
	if code != 0 {
		t.Fatalf("backup --force: exit %d: %s", code, stderr)
	}
	snapBytes, _ = os.ReadFile(snap)
	onlySnap()

	r.add(t, "bk", "later")
	r.stop(t)
	idBefore, _ := os.ReadFile(store + ".id")

	// Bad input to restore writes nothing.
	junk := filepath.Join(dir, "junk.db")
	if err := os.WriteFile(junk, []byte("*3\r\n$3\r\nset\r\n$1\r\nk\r\n$1\r\nv\r\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	storeBytes, _ = os.ReadFile(store)
	for _, tc := range []struct {
		name, from, want string
	}{
		{"from junk", junk, "not a store snapshot"},
		{"from the store", store, "is region us-east's store itself"},
	} {
		code, stdout, stderr := runCLI(t, "restore", "--config", cfg, "--region", "us-east", "--from", tc.from)
		if code != 1 || !strings.Contains(stderr, tc.want) || stdout != "" {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want 1 and %q", tc.name, code, stdout, stderr, tc.want)
		}
	}
	if b, _ := os.ReadFile(store); !bytes.Equal(b, storeBytes) {
		t.Errorf("a refused restore changed the store")
	}
	if b, _ := os.ReadFile(store + ".id"); !bytes.Equal(b, idBefore) {
		t.Errorf("a refused restore changed the identity file: %s, was %s", b, idBefore)
	}
	if _, err := os.Stat(store + ".restore"); err == nil {
		t.Errorf("a refused restore left %s.restore", store)
	}

	code, stdout, stderr = runCLI(t, "restore", "--config", cfg, "--region", "us-east", "--from", snap)
	if code != 0 {
		t.Fatalf("restore: exit %d: %s", code, stderr)
	}
	if !strings.Contains(stdout, "restored region us-east") || !strings.Contains(stdout, snap) {
		t.Errorf("stdout %q does not say what was restored", stdout)
	}
	if b, _ := os.ReadFile(snap); !bytes.Equal(b, snapBytes) {
		t.Errorf("restore changed the snapshot")
	}

	r = serveInProcess(t, cfg, addr)
	got := strings.Join(r.skus(t, "bk"), ",")
	if got != "after,before" {
		t.Errorf("restored cart holds %s, want after,before (the snapshot's)", got)
	}
	r.add(t, "bk", "restored")
	var cl struct {
		VersionVector map[string]uint64 `json:"version_vector"`
	}
	newAPI(r.base).get(t, "/v1/cluster", &cl)
	b, _ := json.Marshal(cl.VersionVector)
	if !newIncarnation(cl.VersionVector, "us-east") {
		t.Errorf("after the restore, the version vector %s has no new incarnation of us-east", b)
	}
	if !strings.Contains(r.stderr.String(), "the store was restored from a backup") {
		t.Errorf("the log does not say the store was restored:\n%s", r.stderr.String())
	}
	r.stop(t)

	// A restore onto a machine with no store yet (a fresh data_dir).
	fresh := t.TempDir()
	cfg2 := writeConfig(t, fresh, freeAddr(t))
	if code, _, stderr := runCLI(t, "restore", "--config", cfg2, "--region", "us-east", "--from", snap); code != 0 {
		t.Errorf("restore into a fresh data_dir: exit %d: %s", code, stderr)
	}
}

// newIncarnation reports whether vv has an entry of a later incarnation
// of region (region+K).
func newIncarnation(vv map[string]uint64, region string) bool {
	for k := range vv {
		if strings.HasPrefix(k, region+"+") {
			return true
		}
	}
	return false
}
