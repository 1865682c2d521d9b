package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// freeRun returns the first of three consecutive free ports of network on
// 127.0.0.1 (free a moment ago).
func freeRun(t *testing.T, network string) int {
	t.Helper()
	for range 50 {
		var base int
		if network == "tcp" {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			base = ln.Addr().(*net.TCPAddr).Port
			ln.Close()
		} else {
			pc, err := net.ListenPacket("udp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			base = pc.LocalAddr().(*net.UDPAddr).Port
			pc.Close()
		}
		free := base+2 < 65536
		for p := base; free && p < base+3; p++ {
			addr := fmt.Sprintf("127.0.0.1:%d", p)
			if network == "tcp" {
				ln, err := net.Listen("tcp", addr)
				if free = err == nil; free {
					ln.Close()
				}
			} else {
				pc, err := net.ListenPacket("udp", addr)
				if free = err == nil; free {
					pc.Close()
				}
			}
		}
		if free {
			return base
		}
	}
	t.Fatal("no three consecutive free ports")
	return 0
}

// runDevUntilSignal starts `lattice dev` with extra flags and TMPDIR at
// tmp, waits until it serves, sends SIGINT and waits for it to exit; it
// returns the data directory the cluster printed.
func runDevUntilSignal(t *testing.T, bin, tmp string, extra ...string) string {
	t.Helper()
	args := append([]string{"dev", "--latency", "none", "--log-level", "warn",
		"--api-port", fmt.Sprint(freeRun(t, "tcp")), "--peer-port", fmt.Sprint(freeRun(t, "udp"))}, extra...)
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	dataCh := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if _, dir, ok := strings.Cut(sc.Text(), ", data in "); ok {
				dataCh <- dir
			}
		}
		exited <- cmd.Wait()
	}()
	var dir string
	select {
	case dir = <-dataCh:
	case err := <-exited:
		t.Fatalf("lattice dev exited before serving: %v\n%s", err, stderr.String())
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("lattice dev did not serve within 60 s\n%s", stderr.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "certs")); err != nil {
		t.Fatalf("the data directory %s lacks its certificates while the cluster runs: %v", dir, err)
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("lattice dev after SIGINT: %v\n%s", err, stderr.String())
		}
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("lattice dev did not stop within 60 s of SIGINT\n%s", stderr.String())
	}
	return dir
}

// TestDevRemovesItsTemporaryData runs `lattice dev` as a real process and
// stops it with SIGINT: without --data its temporary data directory is
// gone afterwards; with --data the directory and its data stay.
func TestDevRemovesItsTemporaryData(t *testing.T) {
	bin := buildLattice(t)
	tmp := t.TempDir()

	dir := runDevUntilSignal(t, bin, tmp)
	if !strings.HasPrefix(dir, tmp) {
		t.Fatalf("data directory %s is not under TMPDIR %s", dir, tmp)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("the temporary data directory %s is still there after exit (stat: %v)", dir, err)
	}

	kept := filepath.Join(t.TempDir(), "kept")
	if got := runDevUntilSignal(t, bin, tmp, "--data", kept); got != kept {
		t.Fatalf("data directory %s, want %s", got, kept)
	}
	for _, f := range []string{"certs", "us-east"} {
		if _, err := os.Stat(filepath.Join(kept, f)); err != nil {
			t.Errorf("--data %s lost %s after exit: %v", kept, f, err)
		}
	}
}
