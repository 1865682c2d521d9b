package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/latticedb/lattice/bench"
)

// TestNegativePartitionFlagRefused: a negative --partition is malformed,
// not taken for the flag left out (with one partition backup and restore
// would go on; with several they said --partition is required).
func TestNegativePartitionFlagRefused(t *testing.T) {
	dir := t.TempDir()
	one := writeConfig(t, dir, freeAddr(t))
	four := filepath.Join(dir, "four.yaml")
	if err := os.WriteFile(four, []byte("cluster: c\npartitions: 4\nregions:\n  - {name: us-east, api: \"127.0.0.1:1\", peer: \"127.0.0.1:2\"}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	snap := filepath.Join(dir, "snap.db")
	if err := os.WriteFile(snap, []byte("not a snapshot"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"backup", "--config", one, "--region", "us-east", "--partition", "-3", "--out", filepath.Join(dir, "out.db")},
		{"restore", "--config", one, "--region", "us-east", "--partition", "-3", "--from", snap},
		{"restore", "--config", four, "--region", "us-east", "--partition", "-3", "--from", snap},
	} {
		code, _, stderr := runCLI(t, args...)
		if code == 0 || !strings.Contains(stderr, "--partition -3") {
			t.Errorf("%v: exit %d, stderr %q; want a refusal naming --partition -3", args, code, stderr)
		}
	}
}

// TestCertsRefusalLeavesNoDirectory: a refused `lattice certs` writes
// nothing, not even --dir or --ca-key-dir, which it would make only once
// the CA can be used.
func TestCertsRefusalLeavesNoDirectory(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "certs")
	if code, _, stderr := runCLI(t, "certs", "--dir", dir, "us-east"); code != 0 {
		t.Fatalf("first run: exit %d: %s", code, stderr)
	}
	// The CA key is in dir; a mistyped --ca-key-dir does not hold it.
	typo := filepath.Join(base, "ofline")
	code, _, stderr := runCLI(t, "certs", "--dir", dir, "--ca-key-dir", typo, "eu-west")
	if code != 1 || !strings.Contains(stderr, "only one of") {
		t.Fatalf("exit %d, stderr %q; want the refusal", code, stderr)
	}
	if _, err := os.Stat(typo); err == nil {
		t.Errorf("the refused run created --ca-key-dir %s", typo)
	}
	// The same with a new --dir and the key directory of another run.
	newDir := filepath.Join(base, "new-certs")
	code, _, stderr = runCLI(t, "certs", "--dir", newDir, "--ca-key-dir", dir, "eu-west")
	if code != 1 {
		t.Fatalf("exit %d, stderr %q; want a refusal", code, stderr)
	}
	if _, err := os.Stat(newDir); err == nil {
		t.Errorf("the refused run created --dir %s (%s)", newDir, strings.TrimSpace(stderr))
	}
}

// TestBenchFlagsBounded: flags that would make `lattice bench` allocate
// without bound before its first request (Generate names every cart and
// makes the whole schedule up front) are refused. Only Validate is called
// here: the benchmark is never run.
func TestBenchFlagsBounded(t *testing.T) {
	cases := map[string]func(*bench.Config){
		// Generate makes two cart ids per cart up front: 2·10¹² strings.
		"--carts 1000000000000": func(c *bench.Config) { c.Carts = 1_000_000_000_000 },
		// The schedule of rate × duration operations is made up front.
		"--duration 100000h": func(c *bench.Config) { c.Duration = 100000 * time.Hour },
	}
	for name, set := range cases {
		t.Run(name, func(t *testing.T) {
			c := bench.DefaultConfig()
			set(&c)
			if err := c.Validate(); err == nil {
				t.Errorf("lattice bench %s passes validation", name)
			}
		})
	}
}
