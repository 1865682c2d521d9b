package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestStatusWithoutTokenFails: a region with api_auth answers /readyz
// without a token but refuses /v1/cluster. lattice status without a token
// cannot read the cluster's state, so it must not exit 0 as if every
// region were well: it exits 1 and says why; with the token it exits 0.
func TestStatusWithoutTokenFails(t *testing.T) {
	t.Setenv("LATTICE_TOKEN", "")
	dir := t.TempDir()
	addr := freeAddr(t)
	cfg := writeConfig(t, dir, addr)
	const token = "status-token-0123456789"
	tokens := filepath.Join(dir, "write-tokens")
	if err := os.WriteFile(tokens, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(cfg, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("api_auth:\n  write_tokens: " + tokens + "\n"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	serveInProcess(t, cfg, addr)

	code, stdout, stderr := runCLI(t, "status", "--config", cfg)
	if code != 1 || !strings.Contains(stdout, "cluster status") {
		t.Fatalf("status without a token: exit %d, want 1 naming the unread cluster status\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if code, _, _ := runCLI(t, "status", "--config", cfg, "--output", "json"); code != 1 {
		t.Fatalf("status --output json without a token: exit %d, want 1", code)
	}
	if code, stdout, stderr := runCLI(t, "status", "--config", cfg, "--token", token); code != 0 {
		t.Fatalf("status with the token: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
}
