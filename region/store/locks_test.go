package store

import (
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"testing"

	"github.com/latticedb/lattice/region/config"
)

// counter reads the decimal counter under key in tx (0 if none).
func counter(t *testing.T, tx *Tx, key string) (int, error) {
	b, ok, err := tx.Get(key)
	if err != nil || !ok {
		return 0, err
	}
	return strconv.Atoi(string(b))
}

// TestConcurrentReadModifyWriteLosesNoUpdate runs concurrent increments of
// one counter (and of a second counter some of them name too, locked in
// the other order) through Update, each a read, a yield and a write: the
// store's locks must serialise them, so no increment is lost, with either
// durability and in memory.
func TestConcurrentReadModifyWriteLosesNoUpdate(t *testing.T) {
	for _, path := range []string{"file", ":memory:"} {
		t.Run(path, func(t *testing.T) {
			if path == "file" {
				path = filepath.Join(t.TempDir(), "s.db")
			}
			st, err := Open(path, Options{Durability: config.DurabilityEverySec})
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			const writers, rounds = 16, 50
			var wg sync.WaitGroup
			errs := make(chan error, writers)
			for w := range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					keys := []string{"c/a"}
					if w%2 == 1 {
						keys = []string{"c/b", "c/a"} // both, named in either order
					} else if w%4 == 2 {
						keys = []string{"c/a", "c/b"}
					}
					for range rounds {
						err := st.Update(keys, func(tx *Tx) error {
							for _, k := range keys {
								v, err := counter(t, tx, k)
								if err != nil {
									return err
								}
								runtime.Gosched() // let another writer read the same value, if it may
								tx.Set(k, []byte(strconv.Itoa(v+1)))
							}
							return nil
						})
						if err != nil {
							errs <- err
							return
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			err = st.View([]string{"c/a", "c/b"}, func(r Reader) error {
				for k, want := range map[string]int{"c/a": writers * rounds, "c/b": writers/2*rounds + writers/4*rounds} {
					b, _, err := r.Get(k)
					if err != nil {
						return err
					}
					if got, _ := strconv.Atoi(string(b)); got != want {
						t.Errorf("%s = %d after %d increments", k, got, want)
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestUnnamedKeyFails checks that a transaction or view touching a key it
// did not name fails with ErrUnnamedKey and writes nothing, and that a
// key guarded by a named key (Options.LockKey) or left unlocked may be
// touched.
func TestUnnamedKeyFails(t *testing.T) {
	st, err := Open(":memory:", Options{LockKey: func(k string) string {
		switch k {
		case "l/x":
			return "i/x" // guarded by i/x
		case "free":
			return ""
		}
		return k
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for name, fn := range map[string]func(tx *Tx) error{
		"set":    func(tx *Tx) error { tx.Set("c/a", []byte("1")); tx.Set("c/b", []byte("1")); return nil },
		"delete": func(tx *Tx) error { tx.Delete("c/b"); return nil },
		"get": func(tx *Tx) error {
			tx.Set("c/a", []byte("1"))
			_, _, err := tx.Get("c/b")
			return err
		},
		"get-ignored": func(tx *Tx) error {
			tx.Set("c/a", []byte("1"))
			_, _, _ = tx.Get("c/b") // the error is dropped: Update still fails
			return nil
		},
		"guard-not-named": func(tx *Tx) error { tx.Set("l/y", []byte("1")); return nil },
	} {
		if err := st.Update([]string{"c/a"}, fn); !errors.Is(err, ErrUnnamedKey) {
			t.Errorf("%s: Update = %v, want ErrUnnamedKey", name, err)
		}
	}
	err = st.View([]string{"c/a"}, func(r Reader) error {
		_, ok, err := r.Get("c/a")
		if ok || err != nil {
			t.Errorf("c/a was written by a failed transaction (ok=%v, err=%v)", ok, err)
		}
		_, _, err = r.Get("c/b")
		return err
	})
	if !errors.Is(err, ErrUnnamedKey) {
		t.Errorf("View of an unnamed key = %v, want ErrUnnamedKey", err)
	}
	err = st.Update([]string{"i/x"}, func(tx *Tx) error {
		tx.Set("i/x", []byte("1"))
		tx.Set("l/x", []byte("1"))
		tx.Set("free", []byte("1"))
		return nil
	})
	if err != nil {
		t.Fatalf("guarded and unlocked keys: %v", err)
	}
	lk := st.RLock("c/a")
	if err := lk.Update(func(tx *Tx) error { tx.Set("c/a", nil); return nil }); err == nil {
		t.Error("a write under shared locks succeeded")
	}
	lk.Unlock()
	func() {
		defer func() {
			if recover() == nil {
				t.Error("a view on released keys did not panic")
			}
		}()
		_ = lk.View(func(Reader) error { return nil })
	}()
	// Many names (a set rather than a list): the named ones and their
	// guarded keys pass, an unnamed one fails and nothing is written.
	many := []string{"i/x"}
	for i := range 3 * manyNames {
		many = append(many, fmt.Sprintf("c/m%d", i))
	}
	err = st.Update(many, func(tx *Tx) error {
		tx.Set("l/x", []byte("2"))
		tx.Set(many[len(many)-1], []byte("2"))
		return nil
	})
	if err != nil {
		t.Fatalf("%d names: %v", len(many), err)
	}
	err = st.Update(many, func(tx *Tx) error {
		tx.Set("c/m0", []byte("3"))
		tx.Set("c/other", []byte("3"))
		return nil
	})
	if !errors.Is(err, ErrUnnamedKey) {
		t.Errorf("%d names, an unnamed key: Update = %v, want ErrUnnamedKey", len(many), err)
	}
	err = st.View([]string{"c/m0"}, func(r Reader) error {
		if v, _, err := r.Get("c/m0"); err != nil || v != nil {
			t.Errorf("c/m0 = %q, %v after a failed transaction, want none", v, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestWriteLockExcludesReads checks that a view of a key waits while a
// transaction holds the key's lock, and reads what it wrote.
func TestWriteLockExcludesReads(t *testing.T) {
	st, err := Open(":memory:", Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	lk := st.Lock("c/a")
	read := make(chan string)
	go func() {
		var v []byte
		verr := st.View([]string{"c/a"}, func(r Reader) error {
			var err error
			v, _, err = r.Get("c/a")
			return err
		})
		if verr != nil {
			read <- verr.Error()
			return
		}
		read <- string(v)
	}()
	if err := lk.Update(func(tx *Tx) error { tx.Set("c/a", []byte("written")); return nil }); err != nil {
		t.Fatal(err)
	}
	lk.Unlock()
	if v := <-read; v != "written" {
		t.Fatalf("the view read %q, want the value written under the lock it waited for", v)
	}
}
