package main

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestCLI18ServeStopsCleanlyWhenItsLogReaderIsGone runs `lattice serve`
// with its log (stderr) going into a pipe, as under `lattice serve ...
// 2>&1 | tee region.log` or a log shipper, and closes the pipe's reading
// end (tee killed with the terminal by SIGHUP, which serve itself
// ignores so as to survive a closed terminal; a shipper restarted).
// configuration.md: on SIGTERM serve "stops cleanly (...records a clean
// stop in the store)" and exits 0. It must not be killed instead by the
// first log line it can no longer write.
func TestCLI18ServeStopsCleanlyWhenItsLogReaderIsGone(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	cfg := writeConfig(t, dir, addr)
	bin := buildLattice(t)

	cmd := exec.Command(bin, "serve", "--config", cfg, "--region", "us-east")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		// Wait closes the pipe's reading end if it is still open.
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			cmd.Process.Kill()
			<-exited
		}
	})

	serving := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "region serving") {
				serving <- true
				return
			}
		}
		serving <- false
	}()
	select {
	case ok := <-serving:
		if !ok {
			t.Fatal("serve ended its log before serving")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not start serving")
	}
	waitReady(t, "http://"+addr, nil)

	// The log's reader goes away; then the region is stopped.
	if f, ok := stderr.(*os.File); ok {
		f.Close()
	} else {
		t.Fatalf("stderr pipe is a %T", stderr)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not exit after SIGTERM")
	}
	ps := cmd.ProcessState
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		t.Errorf("serve was killed by %v instead of stopping cleanly on SIGTERM (exit 0)", ws.Signal())
	} else if ps.ExitCode() != 0 {
		t.Errorf("serve exited %d after SIGTERM, want 0", ps.ExitCode())
	}
	b, err := os.ReadFile(filepath.Join(dir, "data", "us-east", "data.db.id"))
	if err != nil {
		t.Fatal(err)
	}
	var id struct {
		Clean bool `json:"clean"`
	}
	if err := json.Unmarshal(b, &id); err != nil {
		t.Fatal(err)
	}
	if !id.Clean {
		t.Errorf("the store records no clean stop: %s", b)
	}
}
