package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCertsCAKeyApart checks that --ca-key-dir keeps ca.key out of the
// directory regions get, that a second run reuses the CA from both
// directories, and that the output says which files a region needs.
func TestCertsCAKeyApart(t *testing.T) {
	dir, keyDir := filepath.Join(t.TempDir(), "certs"), filepath.Join(t.TempDir(), "offline")
	code, stdout, stderr := runCLI(t, "certs", "--dir", dir, "--ca-key-dir", keyDir, "us-east")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "ca.key")); !os.IsNotExist(err) {
		t.Fatalf("ca.key in the regions' directory: %v", err)
	}
	if _, err := os.Stat(filepath.Join(keyDir, "ca.key")); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"us-east: ca.crt us-east.crt us-east.key", "keep ca.key offline", filepath.Join(keyDir, "ca.key")} {
		if !strings.Contains(stdout, want) {
			t.Errorf("stdout %q lacks %q", stdout, want)
		}
	}
	ca, _ := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if code, _, stderr := runCLI(t, "certs", "--dir", dir, "--ca-key-dir", keyDir, "eu-west"); code != 0 {
		t.Fatalf("second run: exit %d: %s", code, stderr)
	}
	if now, _ := os.ReadFile(filepath.Join(dir, "ca.crt")); string(now) != string(ca) {
		t.Error("the second run made a new CA")
	}
	// Without the key directory, the CA certificate alone is refused.
	if code, _, stderr := runCLI(t, "certs", "--dir", dir, "ap-south"); code != 1 || !strings.Contains(stderr, "only one of") {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
	// Without --ca-key-dir, the key stays in --dir and the output says so.
	plain := t.TempDir()
	code, stdout, _ = runCLI(t, "certs", "--dir", plain, "us-east")
	if code != 0 || !strings.Contains(stdout, "--ca-key-dir writes it elsewhere") {
		t.Errorf("exit %d, stdout %q", code, stdout)
	}
}
