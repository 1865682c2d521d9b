package store

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// scanKeys are keys around the edges of ranges and prefixes: cart lines
// ("e/ID/SKU") of ids that are prefixes of one another, one followed by
// bytes that sort before "/" ("ab-x", "ab.y") and after it ("ab0"), the
// bare prefix, and keys just outside it on both sides.
var scanKeys = []string{
	"d", "d\xff", "e", "e.", "e/", "e/a", "e/a/1", "e/ab", "e/ab/", "e/ab/x", "e/ab/x/y", "e/ab/y",
	"e/ab-x/z", "e/ab.y/z", "e/ab0/z", "e/abc/z", "e/b/z", "e0", "e\xff", "e\xff\xff", "f", "}", "~a",
}

// scanBounds are the bounds the tests scan between: every key, the
// prefixes of the line keys of "ab" and of "a" and what follows them,
// keys that are stored nowhere, and "" (no bound).
var scanBounds = []string{"", "a", "e", "e/", "e0", "e/a", "e/a/", "e/a0", "e/ab", "e/ab/", "e/ab0", "e/ab-", "e/ab-x/", "e/ab.", "e/b", "e/zz", "z", "\xff", "\xff\xff", "\xff\xff\xff"}

func scanAll(t *testing.T, scan func(fn func(k string, v []byte, err error) bool) error) []string {
	t.Helper()
	var got []string
	if err := scan(func(k string, v []byte, err error) bool {
		if err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		if k != epochKey && k != deletesKey && string(v) != "v:"+k {
			t.Fatalf("%s: value %q", k, v)
		}
		got = append(got, k)
		return true
	}); err != nil {
		t.Fatal(err)
	}
	return got
}

// TestScanRange checks that ScanRange lists exactly the keys from lo to
// hi (excluded; "" no bound) in key order, and Scan those with a prefix,
// for every pair of bounds, in a store of keys at the edges of ranges
// and prefixes; that a scan stops when told; and PrefixEnd.
func TestScanRange(t *testing.T) {
	s, err := Open(":memory:", Options{LockKey: unlocked})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Update(nil, func(tx *Tx) error {
		for _, k := range scanKeys {
			tx.Set(k, []byte("v:"+k))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	stored := append(slices.Clone(scanKeys), deletesKey, epochKey)
	slices.Sort(stored)
	for _, lo := range scanBounds {
		for _, hi := range scanBounds {
			var want []string
			for _, k := range stored {
				if k >= lo && (hi == "" || k < hi) {
					want = append(want, k)
				}
			}
			got := scanAll(t, func(fn func(string, []byte, error) bool) error { return s.ScanRange(lo, hi, fn) })
			if !slices.Equal(got, want) {
				t.Errorf("ScanRange(%q, %q) = %q, want %q", lo, hi, got, want)
			}
		}
		var want []string
		for _, k := range stored {
			if strings.HasPrefix(k, lo) {
				want = append(want, k)
			}
		}
		got := scanAll(t, func(fn func(string, []byte, error) bool) error { return s.Scan(lo, fn) })
		if !slices.Equal(got, want) {
			t.Errorf("Scan(%q) = %q, want %q", lo, got, want)
		}
	}

	var got []string
	if err := s.ScanRange("e/", "e0", func(k string, _ []byte, _ error) bool {
		got = append(got, k)
		return len(got) < 3
	}); err != nil || !slices.Equal(got, []string{"e/", "e/a", "e/a/1"}) {
		t.Errorf("a scan told to stop after 3 keys listed %q, %v", got, err)
	}

	for prefix, want := range map[string]string{
		"": "", "e/": "e0", "e/ab": "e/ac", "a\xff": "b", "a\xff\xff": "b", "\xff": "", "\xff\xff": "", "e/\xff": "e0",
	} {
		if got := PrefixEnd(prefix); got != want {
			t.Errorf("PrefixEnd(%q) = %q, want %q", prefix, got, want)
		}
	}
}

// TestKeySample checks that the sample of a store's keys taken at open
// holds every every-th key in key order, no more than 2×maxSample keys
// and no fewer than maxSample once the store has that many, and that a
// range of it is the sampled keys in the range.
func TestKeySample(t *testing.T) {
	for _, n := range []int{0, 1, 5, 2 * maxSample, 2*maxSample + 1, 1000, 5000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "data.db")
			s, err := Open(path, Options{LockKey: unlocked})
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Update(nil, func(tx *Tx) error {
				for i := range n {
					tx.Set(fmt.Sprintf("k/%05d", i), []byte{1})
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if s, err = Open(path, Options{LockKey: unlocked}); err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			all := []string{}
			for i := range n {
				all = append(all, fmt.Sprintf("k/%05d", i))
			}
			var stored []string // and the store's own keys
			if err := s.ScanRange("", "", func(k string, _ []byte, _ error) bool {
				stored = append(stored, k)
				return true
			}); err != nil {
				t.Fatal(err)
			}
			sample, every := s.KeySample("", "")
			var want []string
			for i := 0; i < len(stored); i += every {
				want = append(want, stored[i])
			}
			if !slices.Equal(sample, want) {
				t.Fatalf("sample (every %d) = %q, want %q", every, sample, want)
			}
			if len(sample) > 2*maxSample || len(stored) >= maxSample && len(sample) < maxSample {
				t.Fatalf("%d keys sampled of %d", len(sample), len(stored))
			}
			if n == 0 {
				return
			}
			lo, hi := all[n/3], all[2*n/3]
			got, every2 := s.KeySample(lo, hi)
			want = want[:0]
			for _, k := range sample {
				if k >= lo && k < hi {
					want = append(want, k)
				}
			}
			if every2 != every || !slices.Equal(got, want) {
				t.Fatalf("KeySample(%q, %q) = %q, %d; want %q, %d", lo, hi, got, every2, want, every)
			}
		})
	}
}
