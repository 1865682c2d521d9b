package store

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// TestDamagedVerbInTheLastTransactionCutsNothing: one bit of the command
// name ("set") of a value of the file's last transaction, a whole and
// acknowledged write of three keys, is damaged. That is damage, not a
// tear (a tear ends the file inside a command): the open either refuses
// the file, leaving it as it was, or keeps every undamaged value. It must
// not cut acknowledged values off the file and then refuse it anyway.
func TestDamagedVerbInTheLastTransactionCutsNothing(t *testing.T) {
	keys := []string{"t/a", "t/b", "t/c"}
	for vi, pos := range []string{"first", "second"} {
		t.Run(pos, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "s.db")
			st := openAcked(t, path)
			setAcked(t, st, "before")
			setAcked(t, st, keys...) // acknowledged: fsynced
			if err := st.CloseUnclean(); err != nil {
				t.Fatal(err)
			}
			// Where the commands of the last transaction start.
			type cmdAt struct {
				key        string
				start, end int64
			}
			var cmds []cmdAt
			var last int64
			if err := Commands(path, func(cmd [][]byte, end int64) bool {
				if len(cmd) == 3 && string(cmd[0]) == "set" {
					cmds = append(cmds, cmdAt{string(cmd[1]), last, end})
				}
				last = end
				return true
			}); err != nil {
				t.Fatal(err)
			}
			tail := cmds[len(cmds)-3:]
			for _, c := range tail {
				if c.key != "t/a" && c.key != "t/b" && c.key != "t/c" {
					t.Fatalf("setup: the file's last three commands are not the last transaction's: %v", tail)
				}
			}
			victim := tail[vi]
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			verb := victim.start + int64(len("*3\r\n$3\r\n"))
			if !bytes.Equal(b[verb:verb+3], []byte("set")) {
				t.Fatalf("setup: no set at byte %d: %q", verb, b[victim.start:victim.start+16])
			}
			flipByte(t, path, verb, 0x01) // "set" → "ret"
			damaged, _ := os.ReadFile(path)

			st, err = Open(path, Options{LockKey: unlocked})
			if err == nil {
				defer st.Close()
				held := heldState(t, st, append([]string{"before"}, keys...)...)
				for _, k := range append([]string{"before"}, keys...) {
					if k != victim.key && held[k] != "ok" {
						t.Errorf("undamaged acknowledged key %s after the command name of %s was damaged: %s (all: %v)", k, victim.key, held[k], held)
					}
				}
				return
			}
			after, rerr := os.ReadFile(path)
			if rerr != nil {
				t.Fatal(rerr)
			}
			if !bytes.Equal(after, damaged) {
				var lost []string
				for _, c := range tail {
					if c.end > int64(len(after)) {
						lost = append(lost, c.key)
					}
				}
				t.Fatalf("Open refused the file (%v) after cutting it from %d to %d bytes: "+
					"acknowledged values %v, whole in the file, are gone from it", err, len(damaged), len(after), lost)
			}
			t.Logf("refused, file unchanged: %v", fmt.Sprint(err))
		})
	}
}
