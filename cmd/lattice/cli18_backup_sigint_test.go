package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/latticedb/lattice/region/config"
	storefile "github.com/latticedb/lattice/region/store"
)

// cli18BigStore writes a store of about mb MiB at path (values of 64 KiB,
// 32 to a transaction) and closes it cleanly.
func cli18BigStore(t *testing.T, path string, mb int) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	st, err := storefile.Open(path, storefile.Options{Durability: config.DurabilityEverySec, ShrinkMinBytes: 1 << 40})
	if err != nil {
		t.Fatal(err)
	}
	val := bytes.Repeat([]byte("0123456789abcdef"), 4096) // 64 KiB
	n := 0
	for tx := 0; n*64 < mb*1024; tx++ {
		keys := make([]string, 32)
		for i := range keys {
			keys[i] = fmt.Sprintf("big:%06d", n)
			n++
		}
		if err := st.Update(keys, func(tx *storefile.Tx) error {
			for _, k := range keys {
				tx.Set(k, val)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
}

// cli18Glob lists the files of dir whose names match pattern.
func cli18Glob(t *testing.T, dir, pattern string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, pattern))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// cli18Largest is the size of the largest file of dir matching pattern.
func cli18Largest(dir, pattern string) int64 {
	m, _ := filepath.Glob(filepath.Join(dir, pattern))
	var n int64
	for _, f := range m {
		if fi, err := os.Stat(f); err == nil {
			n = max(n, fi.Size())
		}
	}
	return n
}

// cli18Interrupt runs bin with args, sends it SIGINT once a file of dir
// matching pattern holds minSize bytes, and returns its exit status and
// stderr. It skips the test if the command ends before that.
func cli18Interrupt(t *testing.T, bin string, args []string, dir, pattern string, minSize int64) (int, string) {
	t.Helper()
	var stderr bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.Now().Add(60 * time.Second)
	for cli18Largest(dir, pattern) < minSize {
		select {
		case err := <-exited:
			t.Skipf("%s finished (%v) before it could be interrupted; stderr: %s", args[0], err, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-exited
			t.Fatalf("no %s of %d bytes appeared in %s", pattern, minSize, dir)
		}
		time.Sleep(time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		<-exited
		t.Fatalf("%s did not exit after SIGINT", args[0])
	}
	code := cmd.ProcessState.ExitCode()
	t.Logf("%s exited %d (%v); stderr: %q", args[0], code, cmd.ProcessState, stderr.String())
	if code == 0 {
		t.Skipf("%s completed before SIGINT took effect", args[0])
	}
	return code, stderr.String()
}

// cli18Leftovers reports every file of files that exists, and removes it.
func cli18Leftovers(t *testing.T, what string, files []string) {
	t.Helper()
	for _, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			continue
		}
		t.Errorf("an interrupted %s left %s (%d bytes)", what, f, fi.Size())
		os.Remove(f)
	}
}

// TestCLI18BackupInterruptedLeavesNoTemporaryCopies interrupts `lattice
// backup` with SIGINT (an operator's Ctrl-C) while it copies a region's
// store. configuration.md names `data_dir/NAME/.backup-*` a "temporary
// copy of the store while a backup runs", and backup writes "to a
// temporary file beside --out": once the command has exited, neither
// may be left behind — the first is a copy of the store in the region's
// own data directory, where nothing ever removes it (each interrupted
// backup adds one).
func TestCLI18BackupInterruptedLeavesNoTemporaryCopies(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, dir, freeAddr(t))
	regionDir := filepath.Join(dir, "data", "us-east")
	cli18BigStore(t, filepath.Join(regionDir, "data.db"), 256)
	bin := buildLattice(t)
	outDir := filepath.Join(dir, "snaps")
	if err := os.Mkdir(outDir, 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(outDir, "snap.db")

	cli18Interrupt(t, bin, []string{"backup", "--config", cfg, "--region", "us-east", "--out", out}, regionDir, ".backup-*", 64<<20)
	if _, err := os.Stat(out); err == nil {
		t.Errorf("an interrupted backup left %s", out)
	}
	var left []string
	left = append(left, cli18Glob(t, regionDir, ".backup-*")...)
	left = append(left, cli18Glob(t, outDir, ".*")...)
	cli18Leftovers(t, "backup", left)
}

// TestCLI18RestoreInterruptedLeavesNoTemporaryCopy interrupts `lattice
// restore` with SIGINT while it copies the snapshot into place
// (data.db.restore, "the snapshot being put in place"). The store is
// left as it was, as it should be, but the partial copy stays in the
// region's directory: nothing removes it, neither the command nor the
// region's next start.
func TestCLI18RestoreInterruptedLeavesNoTemporaryCopy(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, dir, freeAddr(t))
	regionDir := filepath.Join(dir, "data", "us-east")
	store := filepath.Join(regionDir, "data.db")
	cli18BigStore(t, store, 256)
	snapDir := filepath.Join(dir, "snaps")
	if err := os.Mkdir(snapDir, 0o755); err != nil {
		t.Fatal(err)
	}
	snap := filepath.Join(snapDir, "snap.db")
	if code, _, stderr := runCLI(t, "backup", "--config", cfg, "--region", "us-east", "--out", snap); code != 0 {
		t.Fatalf("backup: exit %d: %s", code, stderr)
	}
	bin := buildLattice(t)

	cli18Interrupt(t, bin, []string{"restore", "--config", cfg, "--region", "us-east", "--from", snap}, regionDir, "data.db.restore", 64<<20)
	var left []string
	left = append(left, cli18Glob(t, regionDir, "data.db.restore")...)
	left = append(left, cli18Glob(t, regionDir, ".backup-*")...)
	left = append(left, cli18Glob(t, snapDir, ".*")...)
	cli18Leftovers(t, "restore", left)
}
