package store

import (
	"encoding/binary"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/tidwall/buntdb"

	"github.com/latticedb/lattice/region/config"
)

// fileCmd is one whole command of a store file: bytes [start, end), its
// name ("set", "del") and key.
type fileCmd struct {
	start, end int64
	name, key  string
	val        []byte
}

// fileCmds lists the whole commands of the store file at path.
func fileCmds(t *testing.T, path string) []fileCmd {
	t.Helper()
	var out []fileCmd
	var pos int64
	err := Commands(path, func(cmd [][]byte, end int64) bool {
		c := fileCmd{start: pos, end: end, name: strings.ToLower(string(cmd[0]))}
		if len(cmd) > 1 {
			c.key = string(cmd[1])
		}
		if len(cmd) > 2 {
			c.val = slices.Clone(cmd[2])
		}
		out = append(out, c)
		pos = end
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// names reports whether c is a record of the delete of key.
func (c fileCmd) names(key string) bool {
	if c.name != "set" || c.key != delMarkKey {
		return false
	}
	p, err := Payload(delMarkKey, c.val)
	return err == nil && len(p) == 4 && binary.BigEndian.Uint32(p) == keyCRC(key)
}

// deletePairs returns, for every delete of the file with a record, the
// delete and the record beside it (the set of delMarkKey right before or
// after it that names its key).
func deletePairs(t *testing.T, path string) (pairs [][2]fileCmd) {
	t.Helper()
	cmds := fileCmds(t, path)
	for i, c := range cmds {
		if c.name != "del" {
			continue
		}
		switch {
		case i+1 < len(cmds) && cmds[i+1].names(c.key):
			pairs = append(pairs, [2]fileCmd{c, cmds[i+1]})
		case i > 0 && cmds[i-1].names(c.key):
			pairs = append(pairs, [2]fileCmd{c, cmds[i-1]})
		}
	}
	return pairs
}

// orderPair puts the delete of the pair p of the file at path before its
// record (delFirst) or after it, as BuntDB writes the two commands of a
// transaction in either order, and returns the pair as it now lies.
func orderPair(t *testing.T, path string, p [2]fileCmd, delFirst bool) (del, rec fileCmd) {
	t.Helper()
	del, rec = p[0], p[1]
	if (del.start < rec.start) == delFirst {
		return del, rec
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lo, hi := min(del.start, rec.start), max(del.end, rec.end)
	db, rb := slices.Clone(b[del.start:del.end]), slices.Clone(b[rec.start:rec.end])
	var mid []byte
	if delFirst {
		mid = append(db, rb...)
		del.start, rec.start = lo, lo+int64(len(db))
	} else {
		mid = append(rb, db...)
		rec.start, del.start = lo, lo+int64(len(rb))
	}
	del.end, rec.end = del.start+int64(len(db)), rec.start+int64(len(rb))
	copy(b[lo:hi], mid)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return del, rec
}

// openState opens the store at path and returns heldState of keys, or
// the open's error.
func openState(t *testing.T, path string, keys ...string) (map[string]string, error) {
	t.Helper()
	st, err := Open(path, Options{LockKey: unlocked})
	if err != nil {
		return nil, err
	}
	defer st.Close()
	return heldState(t, st, keys...), nil
}

// sameState reports whether got holds want's states for want's keys.
func sameState(got, want map[string]string) bool {
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}

// TestStoreReopensAfterRewritesWhileDeleting: a store that deletes keys
// while its file is rewritten (the store's own shrink, run every second
// once the file passes ShrinkMinBytes and twice the live data) is a
// healthy store: closed cleanly, it opens again with every acknowledged
// key as it was. A rewrite writes every live key once, the record of the
// last delete (~del) among them, with no delete beside it.
func TestStoreReopensAfterRewritesWhileDeleting(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	m := newMetrics()
	st, err := Open(path, Options{LockKey: unlocked, ShrinkMinBytes: 1, Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; counterValue(t, m.Shrinks) < 2; i++ {
		if time.Now().After(deadline) {
			t.Fatalf("no two rewrites within 10 s (%v)", counterValue(t, m.Shrinks))
		}
		k, gone := fmt.Sprintf("k/%d", i), fmt.Sprintf("k/%d", i-1)
		setAcked(t, st, k)
		want[k] = "ok"
		if i%2 == 1 {
			deleteAcked(t, st, gone)
			want[gone] = "absent"
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	keys := slices.Sorted(maps.Keys(want))
	got, err := openState(t, path, keys...)
	if err != nil {
		t.Fatalf("a store rewritten twice while deleting (%d keys written, %d deleted), closed cleanly, does not open: %v",
			len(keys), len(keys)/2, err)
	}
	if !sameState(got, want) {
		t.Fatalf("reopened: %v; want %v", got, want)
	}
}

// counterValue reads a counter of the store's metrics.
func counterValue(t *testing.T, c interface{ Write(*dto.Metric) error }) float64 {
	t.Helper()
	var pb dto.Metric
	if err := c.Write(&pb); err != nil {
		t.Fatal(err)
	}
	return pb.GetCounter().GetValue()
}

// TestBackupOfARewrittenStoreWithDeletes: a store that deleted a key and
// then rewrote its file is backed up (Backup checks its copy as Open
// would), the snapshot passes CheckSnapshot, is restored elsewhere and
// opens with the store's keys.
func TestBackupOfARewrittenStoreWithDeletes(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "s.db")
	st := openAcked(t, path)
	defer st.Close()
	setAcked(t, st, "k/a", "k/b")
	deleteAcked(t, st, "k/b")
	if err := st.Shrink(); err != nil {
		t.Fatal(err)
	}
	setAcked(t, st, "k/c")
	snap := filepath.Join(dir, "snap.db")
	f, err := os.Create(snap)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Backup(path, f)
	f.Close()
	if err != nil {
		t.Fatalf("backup of a store that deleted k/b and rewrote its file: %v", err)
	}
	if _, err := CheckSnapshot(snap); err != nil {
		t.Fatalf("its snapshot: %v", err)
	}
	target := filepath.Join(dir, "restored", "s.db")
	if err := Restore(target, snap); err != nil {
		t.Fatalf("restore: %v", err)
	}
	want := map[string]string{"k/a": "ok", "k/b": "absent", "k/c": "ok"}
	got, err := openState(t, target, "k/a", "k/b", "k/c")
	if err != nil || !sameState(got, want) {
		t.Fatalf("restored store: %v, %v; want %v", got, err, want)
	}
}

// TestDamagedKeyOfAFilesFirstDeleteRefused: the first delete of a file
// is its last command but its record (the store was killed right after
// the write; BuntDB wrote the delete before its record), and a bit of
// the delete's key is damaged on disk, "k/b" into "k/a", the key of
// another live value. The record names k/b: the store must refuse the
// file as damaged, or open with k/a kept and k/b deleted, never with k/a
// deleted and k/b back.
func TestDamagedKeyOfAFilesFirstDeleteRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	st := openAcked(t, path)
	setAcked(t, st, "k/a")
	setAcked(t, st, "k/b")
	deleteAcked(t, st, "k/b")
	if err := st.CloseUnclean(); err != nil {
		t.Fatal(err)
	}
	pairs := deletePairs(t, path)
	if len(pairs) != 1 {
		t.Fatalf("%d deletes in the file; want 1", len(pairs))
	}
	del, _ := orderPair(t, path, pairs[0], true)
	flipByte(t, path, del.end-2-1, 'b'^'a') // the last byte of the key
	got, err := openState(t, path, "k/a", "k/b")
	if err != nil {
		if !strings.Contains(err.Error(), "damaged file") {
			t.Fatalf("refused with %v; want the damage named", err)
		}
		return
	}
	if want := map[string]string{"k/a": "ok", "k/b": "absent"}; !sameState(got, want) {
		t.Fatalf("the file whose only delete (of k/b) was damaged into k/a opened with %v; want it refused as damaged, or %v", got, want)
	}
}

// TestDamagedRecordOfTheLastDeleteKeepsTheDelete: the last write of a
// file is an acknowledged delete of k/b (BuntDB wrote its record first),
// after an earlier delete with its record; a bit of the record's value is
// damaged on disk, so that it fails its checksum. The delete itself is
// whole and was acknowledged: the store must refuse the file as damaged
// or open with k/b deleted, not cut the delete as a torn write and bring
// k/b back.
func TestDamagedRecordOfTheLastDeleteKeepsTheDelete(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	st := openAcked(t, path)
	setAcked(t, st, "k/a", "k/b", "k/c")
	deleteAcked(t, st, "k/c")
	deleteAcked(t, st, "k/b")
	if err := st.CloseUnclean(); err != nil {
		t.Fatal(err)
	}
	pairs := deletePairs(t, path)
	if len(pairs) != 2 {
		t.Fatalf("%d deletes in the file; want 2", len(pairs))
	}
	_, rec := orderPair(t, path, pairs[1], false)
	size := fileSize(t, path)
	if rec.end >= size {
		t.Fatalf("record at [%d, %d) of %d bytes; want the delete after it", rec.start, rec.end, size)
	}
	flipByte(t, path, rec.end-2-1, 0x01) // the record's payload, the deleted key's checksum
	got, err := openState(t, path, "k/a", "k/b", "k/c")
	if err != nil {
		if !strings.Contains(err.Error(), "damaged file") {
			t.Fatalf("refused with %v; want the damage named", err)
		}
		return
	}
	if want := map[string]string{"k/a": "ok", "k/b": "absent", "k/c": "absent"}; !sameState(got, want) {
		t.Fatalf("a file whose last delete (of k/b at byte %d, acknowledged) has a damaged record opened with %v; want it refused as damaged, or %v",
			rec.end, got, want)
	}
}

// TestDeleteOfTheRecordKeyKeepsTheStoreOpenable: the record key "~del"
// sorts before the epoch key, so a transaction may name it like any of
// its keys; Scan("") lists it once a delete has been made. A caller that
// deletes every key it lists deletes it too. Whatever the store then
// writes, the file must open again with the caller's keys as they were.
func TestDeleteOfTheRecordKeyKeepsTheStoreOpenable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	st := openAcked(t, path)
	setAcked(t, st, "k/a", "k/b")
	deleteAcked(t, st, "k/b")
	var listed []string
	if err := st.Scan("", func(k string, _ []byte, _ error) bool {
		listed = append(listed, k)
		return true
	}); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(listed, delMarkKey) {
		t.Fatalf("Scan(\"\") listed %v", listed)
	}
	if err := st.Update(nil, func(tx *Tx) error { tx.Delete(delMarkKey); return nil }); err != nil {
		t.Logf("deleting %q: %v", delMarkKey, err) // refusing it is fine
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := openState(t, path, "k/a", "k/b")
	if err != nil {
		t.Fatalf("after a delete of %q, closed cleanly, the store does not open: %v", delMarkKey, err)
	}
	if want := map[string]string{"k/a": "ok", "k/b": "absent"}; !sameState(got, want) {
		t.Fatalf("reopened: %v; want %v", got, want)
	}
}

// TestCallerValueUnderTheRecordKey: a caller's transaction sets the key
// "~del" (it sorts before the epoch key, so the store accepts it) to a
// 4-byte value. The store must either refuse the write, or keep it and
// open again afterwards with it.
func TestCallerValueUnderTheRecordKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	st := openAcked(t, path)
	setAcked(t, st, "k/a")
	err := st.Update(nil, func(tx *Tx) error {
		tx.Set(delMarkKey, []byte("abcd"))
		return nil
	})
	if cerr := st.Close(); cerr != nil {
		t.Fatal(cerr)
	}
	if err != nil {
		return // refused: fine
	}
	st, err = Open(path, Options{LockKey: unlocked})
	if err != nil {
		t.Fatalf("after an acknowledged set of %q to 4 bytes, closed cleanly, the store does not open: %v", delMarkKey, err)
	}
	defer st.Close()
	if err := st.View(nil, func(r Reader) error {
		v, ok, err := r.Get(delMarkKey)
		if err != nil || !ok || string(v) != "abcd" {
			t.Errorf("%q reads %q, %v, %v; want the acknowledged \"abcd\"", delMarkKey, v, ok, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// TestEveryByteFlipOfADeleteIsCaught: one bit pattern (xor 0x01, 0x03)
// at every byte of the acknowledged delete of k/b and of its record,
// for the file's first delete and a later one, written in either order,
// as the file's last write or followed by two more. The store must refuse
// the file as damaged, or open with k/b deleted and every other key as it
// was. Only a flip in the framing (not in a key or a value) of the file's
// final delete may also read as a tear, with k/b kept. Never another key
// deleted, nor k/b back after damage to a key or a value.
func TestEveryByteFlipOfADeleteIsCaught(t *testing.T) {
	var bad []string
	for _, second := range []bool{false, true} {
		for _, delFirst := range []bool{true, false} {
			for _, last := range []bool{true, false} {
				name := fmt.Sprintf("second=%v/delFirst=%v/last=%v", second, delFirst, last)
				path := filepath.Join(t.TempDir(), "s.db")
				st := openAcked(t, path)
				setAcked(t, st, "k/a", "k/b", "k/c")
				want := map[string]string{"k/a": "ok", "k/b": "absent", "k/c": "ok", "k/d": "absent", "k/e": "absent"}
				if second {
					deleteAcked(t, st, "k/c")
					want["k/c"] = "absent"
				}
				deleteAcked(t, st, "k/b")
				if !last {
					setAcked(t, st, "k/d")
					setAcked(t, st, "k/e")
					want["k/d"], want["k/e"] = "ok", "ok"
				}
				if err := st.CloseUnclean(); err != nil {
					t.Fatal(err)
				}
				pairs := deletePairs(t, path)
				del, rec := orderPair(t, path, pairs[len(pairs)-1], delFirst)
				undone := maps.Clone(want)
				undone["k/b"] = "ok"
				// The bytes of the keys and of the record's value.
				data := func(off int64) bool {
					if off >= del.end-2-int64(len(del.key)) && off < del.end-2 {
						return true
					}
					valStart := rec.end - 2 - int64(len(rec.val))
					keyEnd := valStart - int64(len(fmt.Sprint(len(rec.val)))) - 3 - 2
					return off >= keyEnd-int64(len(delMarkKey)) && off < rec.end-2 && !(off >= keyEnd && off < valStart)
				}
				base, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				var refused, intended, tear, otherErr int
				for _, c := range []fileCmd{del, rec} {
					for off := c.start; off < c.end; off++ {
						for _, mask := range []byte{0x01, 0x03} {
							b := slices.Clone(base)
							b[off] ^= mask
							if err := os.WriteFile(path, b, 0o644); err != nil {
								t.Fatal(err)
							}
							os.Remove(identityPath(path))
							got, err := openState(t, path, "k/a", "k/b", "k/c", "k/d", "k/e")
							switch {
							case err != nil && strings.Contains(err.Error(), "damaged file"):
								refused++
							case err != nil:
								otherErr++ // BuntDB's "invalid database": a command it does not know
							case sameState(got, want):
								intended++
							case last && !data(off) && sameState(got, undone):
								tear++
							default:
								bad = append(bad, fmt.Sprintf("%s: byte %d (%s %q, [%d, %d), data %v) ^ %#x: opened with %v",
									name, off, c.name, c.key, c.start, c.end, data(off), mask, got))
							}
						}
					}
				}
				t.Logf("%s: refused %d, intended state %d, read as a tear %d, refused by BuntDB %d", name, refused, intended, tear, otherErr)
			}
		}
	}
	if len(bad) > 0 {
		t.Fatalf("%d flips opened with another state than k/b deleted and the rest as acknowledged:\n%s", len(bad), strings.Join(bad, "\n"))
	}
}

// TestDamagedTerminatorBeforeTheLastWriteIsRefused: three acknowledged
// writes, k/a, k/b, k/d; one bit of the line end that closes k/b's
// command is damaged on disk. That is damage in the middle of the file,
// with a whole acknowledged write after it: the store must refuse the
// file as damaged (or open with all three), not cut k/b and k/d off as a
// torn tail.
func TestDamagedTerminatorBeforeTheLastWriteIsRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	st := openAcked(t, path)
	setAcked(t, st, "k/a")
	setAcked(t, st, "k/b")
	setAcked(t, st, "k/d")
	if err := st.CloseUnclean(); err != nil {
		t.Fatal(err)
	}
	cmds := fileCmds(t, path)
	b := cmds[len(cmds)-2]
	if b.key != "k/b" {
		t.Fatalf("second last command %+v", b)
	}
	flipByte(t, path, b.end-2, 0x01) // its "\r"
	got, err := openState(t, path, "k/a", "k/b", "k/d")
	if err != nil {
		if !strings.Contains(err.Error(), "damaged file") {
			t.Fatalf("refused with %v; want the damage named", err)
		}
		return
	}
	if want := map[string]string{"k/a": "ok", "k/b": "ok", "k/d": "ok"}; !sameState(got, want) {
		t.Fatalf("with the line end of k/b's command (at byte %d) damaged, the store opened with %v: acknowledged writes cut as a torn tail; want it refused as damaged",
			b.end-2, got)
	}
}

// fileTx is one transaction of a store file as the model replays it: its
// bytes [start, end), the keys it sets and the key it deletes.
type fileTx struct {
	start, end int64
	sets       []string
	del        string
}

// fileTxs groups the commands of a store file into transactions: sets
// carrying one transaction id, a delete with the record beside it that
// names it, a bare delete alone. The store's record sets are left out of
// the keys.
func fileTxs(cmds []fileCmd) []fileTx {
	var out []fileTx
	for i := 0; i < len(cmds); i++ {
		c := cmds[i]
		switch {
		case c.name == "del" && i+1 < len(cmds) && cmds[i+1].names(c.key):
			out = append(out, fileTx{start: c.start, end: cmds[i+1].end, del: c.key})
			i++
		case c.name == "del":
			out = append(out, fileTx{start: c.start, end: c.end, del: c.key})
		case c.name == "set" && c.key == delMarkKey && i+1 < len(cmds) && cmds[i+1].name == "del" && c.names(cmds[i+1].key):
			out = append(out, fileTx{start: c.start, end: cmds[i+1].end, del: cmds[i+1].key})
			i++
		case c.name == "set":
			id, _, _, _, _ := frameHeader(c.val)
			tx := fileTx{start: c.start, end: c.end, sets: []string{c.key}}
			for i+1 < len(cmds) && cmds[i+1].name == "set" && id != 0 {
				if nid, _, _, _, _ := frameHeader(cmds[i+1].val); nid != id {
					break
				}
				i++
				tx.sets, tx.end = append(tx.sets, cmds[i].key), cmds[i].end
			}
			out = append(out, tx)
		default:
			out = append(out, fileTx{start: c.start, end: c.end})
		}
	}
	return out
}

// replay returns the states ("ok", "absent") of the keys with prefix
// after each prefix of txs: states[j] after the first j.
func replay(txs []fileTx, prefix string) []map[string]string {
	cur := map[string]string{}
	for _, tx := range txs {
		for _, k := range append(tx.sets, tx.del) {
			if strings.HasPrefix(k, prefix) {
				cur[k] = "absent"
			}
		}
	}
	states := []map[string]string{maps.Clone(cur)}
	for _, tx := range txs {
		for _, k := range tx.sets {
			if strings.HasPrefix(k, prefix) {
				cur[k] = "ok"
			}
		}
		if strings.HasPrefix(tx.del, prefix) {
			cur[tx.del] = "absent"
		}
		states = append(states, maps.Clone(cur))
	}
	return states
}

// checkEveryCut writes the store file b cut at every byte offset from
// from to its end, then NUL-filled from that offset instead (a crash
// that extended the file), opens each and checks that the store opens
// with the keys with prefix as after the whole transactions before the
// cut, or as after the one the cut falls in (never acknowledged: it may
// be there or not). It returns how many cuts it checked.
func checkEveryCut(t *testing.T, b []byte, from int64, prefix string) int {
	t.Helper()
	dir := t.TempDir()
	whole := filepath.Join(dir, "whole.db")
	if err := os.WriteFile(whole, b, 0o644); err != nil {
		t.Fatal(err)
	}
	txs := fileTxs(fileCmds(t, whole))
	states := replay(txs, prefix)
	keys := slices.Sorted(maps.Keys(states[0]))
	path := filepath.Join(dir, "s.db")
	n := 0
	for at := from; at < int64(len(b)); at++ {
		j := 0
		for j < len(txs) && txs[j].end <= at {
			j++
		}
		for _, nul := range []bool{false, true} {
			cut := slices.Clone(b[:at])
			if nul {
				cut = append(cut, make([]byte, int64(len(b))-at)...)
			}
			if err := os.WriteFile(path, cut, 0o644); err != nil {
				t.Fatal(err)
			}
			os.Remove(identityPath(path))
			got, err := openState(t, path, keys...)
			if err != nil {
				t.Fatalf("cut at byte %d of %d (NUL-filled %v): %v", at, len(b), nul, err)
			}
			if !sameState(got, states[j]) && (j+1 >= len(states) || !sameState(got, states[j+1])) {
				t.Fatalf("cut at byte %d of %d (NUL-filled %v), inside transaction %d [%d, %d) of %d: opened with %v; want %v or %v",
					at, len(b), nul, j, txs[min(j, len(txs)-1)].start, txs[min(j, len(txs)-1)].end, len(txs), got, states[j], states[min(j+1, len(states)-1)])
			}
			n++
		}
	}
	return n
}

// flipLastPair returns b with the two commands of the delete at the end
// of b in the other order (BuntDB writes them in either).
func flipLastPair(t *testing.T, b []byte) []byte {
	t.Helper()
	path := filepath.Join(t.TempDir(), "s.db")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	pairs := deletePairs(t, path)
	p := pairs[len(pairs)-1]
	orderPair(t, path, p, p[0].start > p[1].start)
	out, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestConcurrentDeletesReopenAndSurviveEveryCut: eight goroutines each
// set and delete keys of their own (deletes of absent keys among them,
// transactions of one to three keys) under group commit, with durability
// always and everysec; the store is killed, reopened ten times (cleanly
// closed or killed in turn) and holds every key as its goroutine left it.
// Then the file as the kill left it, after a last few sets and deletes,
// is cut at every byte of its last five transactions, and NUL-filled from
// there instead (and its last delete, written in the other order, cut at
// every byte): each opens with the keys as after the whole transactions
// before the cut (or the one cut, which was never acknowledged).
func TestConcurrentDeletesReopenAndSurviveEveryCut(t *testing.T) {
	for _, d := range []config.Durability{config.DurabilityAlways, config.DurabilityEverySec} {
		t.Run(string(d), func(t *testing.T) {
			const seed = 20261206
			t.Logf("seed %d", seed)
			path := filepath.Join(t.TempDir(), "s.db")
			st, err := Open(path, Options{LockKey: unlocked, Durability: d})
			if err != nil {
				t.Fatal(err)
			}
			const goroutines, keysEach, ops = 8, 4, 60
			want := map[string]string{}
			var mu sync.Mutex
			var wg sync.WaitGroup
			errs := make(chan error, goroutines)
			for g := range goroutines {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rng := rand.New(rand.NewPCG(seed, uint64(g)))
					mine := map[string]string{}
					for i := range keysEach {
						mine[fmt.Sprintf("k/%d/%d", g, i)] = "absent"
					}
					for range ops {
						k := fmt.Sprintf("k/%d/%d", g, rng.IntN(keysEach))
						var err error
						if rng.IntN(2) == 0 {
							err = st.Update(nil, func(tx *Tx) error { tx.Delete(k); return nil })
							mine[k] = "absent"
						} else {
							ks := []string{k}
							for range rng.IntN(3) {
								ks = append(ks, fmt.Sprintf("k/%d/%d", g, rng.IntN(keysEach)))
							}
							err = st.Update(nil, func(tx *Tx) error {
								for _, k := range ks {
									tx.Set(k, []byte("value of "+k))
								}
								return nil
							})
							for _, k := range ks {
								mine[k] = "ok"
							}
						}
						if err != nil {
							errs <- err
							return
						}
					}
					mu.Lock()
					maps.Copy(want, mine)
					mu.Unlock()
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			// The last writes: deletes between sets, one of a key not there.
			deleteAcked(t, st, "k/0/0")
			setAcked(t, st, "k/0/0", "k/1/1")
			deleteAcked(t, st, "k/1/1")
			deleteAcked(t, st, "k/none")
			deleteAcked(t, st, "k/0/0")
			want["k/0/0"], want["k/1/1"] = "absent", "absent"
			if _, err := st.SyncNow(); err != nil {
				t.Fatal(err)
			}
			if err := st.CloseUnclean(); err != nil {
				t.Fatal(err)
			}
			killed, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			keys := slices.Sorted(maps.Keys(want))
			for i := range 10 {
				st, err := Open(path, Options{LockKey: unlocked, Durability: d})
				if err != nil {
					t.Fatalf("open %d: %v", i+1, err)
				}
				if got := heldState(t, st, keys...); !sameState(got, want) {
					t.Fatalf("open %d: %v; want %v", i+1, got, want)
				}
				if i%2 == 0 {
					err = st.Close()
				} else {
					err = st.CloseUnclean()
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			txs := fileTxs(fileCmds(t, path))
			if len(txs) < 8 {
				t.Fatalf("%d transactions", len(txs))
			}
			// From the start of the fifth last transaction of the killed file.
			k := fileTxs(func() []fileCmd {
				p := filepath.Join(t.TempDir(), "k.db")
				if err := os.WriteFile(p, killed, 0o644); err != nil {
					t.Fatal(err)
				}
				return fileCmds(t, p)
			}())
			from := k[len(k)-5].start
			n := checkEveryCut(t, killed, from, "k/")
			n += checkEveryCut(t, flipLastPair(t, killed), k[len(k)-1].start, "k/")
			t.Logf("%d cuts checked, from byte %d of %d", n, from, len(killed))
		})
	}
}

// TestBareDeletesThenRecordedDeletesSurviveEveryCut: a file written
// before deletes carried records (bare deletes, written here by BuntDB
// itself) is opened by this version, which deletes right away (its first
// delete and record follow the bare deletes directly), sets, and deletes
// again. The store opens again and again with every key as acknowledged,
// and the file cut at every byte from the first bare delete on (or NUL
// filled from there), with either delete of this version written in
// either order, opens with the keys as after the whole transactions
// before the cut, or as after the one cut.
func TestBareDeletesThenRecordedDeletesSurviveEveryCut(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	st := openAcked(t, path)
	setAcked(t, st, "k/a", "k/b", "k/c", "k/d", "k/e")
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	stripDeletesMarker(t, path) // as a file of an earlier version
	old := fileSize(t, path)
	db, err := buntdb.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"k/b", "k/c"} {
		if err := db.Update(func(tx *buntdb.Tx) error { _, err := tx.Delete(k); return err }); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if fileSize(t, path) == old {
		t.Fatal("BuntDB wrote no delete")
	}
	st = openAcked(t, path)
	deleteAcked(t, st, "k/d")
	setAcked(t, st, "k/b")
	deleteAcked(t, st, "k/e")
	if err := st.CloseUnclean(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"k/a": "ok", "k/b": "ok", "k/c": "absent", "k/d": "absent", "k/e": "absent"}
	for i := range 6 {
		st := openAcked(t, path)
		if got := heldState(t, st, "k/a", "k/b", "k/c", "k/d", "k/e"); !sameState(got, want) {
			t.Fatalf("open %d: %v; want %v", i+1, got, want)
		}
		if i%2 == 0 {
			err = st.Close()
		} else {
			err = st.CloseUnclean()
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	// The first delete of this version in the other order.
	tmp := filepath.Join(t.TempDir(), "s.db")
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		t.Fatal(err)
	}
	pairs := deletePairs(t, tmp)
	if len(pairs) != 2 {
		t.Fatalf("%d recorded deletes; want 2", len(pairs))
	}
	orderPair(t, tmp, pairs[0], pairs[0][0].start > pairs[0][1].start)
	swapped, err := os.ReadFile(tmp)
	if err != nil {
		t.Fatal(err)
	}
	n := checkEveryCut(t, b, old, "k/")
	n += checkEveryCut(t, flipLastPair(t, swapped), old, "k/")
	t.Logf("%d cuts checked from byte %d of %d", n, old, len(b))
}

// TestOnlyDeleteAsTheLastCommandSurvivesEveryCut: a new store's only
// delete is the last write of its file (the process was killed right
// after), written in either order: every cut of its last transactions
// opens with the keys as before the cut transaction or after it, and the
// whole file opens with the delete made, over many reopens.
func TestOnlyDeleteAsTheLastCommandSurvivesEveryCut(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	st := openAcked(t, path)
	setAcked(t, st, "k/a", "k/b")
	setAcked(t, st, "k/c")
	deleteAcked(t, st, "k/b")
	if err := st.CloseUnclean(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cmds := fileCmds(t, path)
	from := cmds[len(cmds)-4].start
	n := checkEveryCut(t, b, from, "k/")
	n += checkEveryCut(t, flipLastPair(t, b), from, "k/")
	t.Logf("%d cuts checked from byte %d of %d", n, from, len(b))
	for _, bb := range [][]byte{b, flipLastPair(t, b)} {
		if err := os.WriteFile(path, bb, 0o644); err != nil {
			t.Fatal(err)
		}
		for i := range 8 {
			st, err := Open(path, Options{LockKey: unlocked})
			if err != nil {
				t.Fatalf("open %d: %v", i+1, err)
			}
			got := heldState(t, st, "k/a", "k/b", "k/c")
			if i%2 == 0 {
				err = st.Close()
			} else {
				err = st.CloseUnclean()
			}
			if err != nil {
				t.Fatal(err)
			}
			if want := map[string]string{"k/a": "ok", "k/b": "absent", "k/c": "ok"}; !sameState(got, want) {
				t.Fatalf("open %d: %v; want %v", i+1, got, want)
			}
		}
	}
}

// TestBackupAndRestoreOfAStoreThatDeletes: a store whose last write is a
// delete (in either order of its two commands) is backed up while open;
// the snapshot passes CheckSnapshot, is not taken for a file of the
// store (IsStoreFile), restores, and opens with the keys as acknowledged.
func TestBackupAndRestoreOfAStoreThatDeletes(t *testing.T) {
	for _, delFirst := range []bool{true, false} {
		t.Run(fmt.Sprintf("delFirst=%v", delFirst), func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "s.db")
			st := openAcked(t, path)
			setAcked(t, st, "k/a", "k/b", "k/c")
			deleteAcked(t, st, "k/c")
			deleteAcked(t, st, "k/b")
			if err := st.CloseUnclean(); err != nil {
				t.Fatal(err)
			}
			pairs := deletePairs(t, path)
			orderPair(t, path, pairs[len(pairs)-1], delFirst)
			st = openAcked(t, path)
			defer st.Close()
			setAcked(t, st, "k/d")
			deleteAcked(t, st, "k/a")
			snap := filepath.Join(dir, "snap.db")
			f, err := os.Create(snap)
			if err != nil {
				t.Fatal(err)
			}
			_, err = Backup(path, f)
			f.Close()
			if err != nil {
				t.Fatal(err)
			}
			if IsStoreFile(path, snap) {
				t.Fatalf("%s taken for a file of the store", snap)
			}
			if _, err := CheckSnapshot(snap); err != nil {
				t.Fatal(err)
			}
			target := filepath.Join(dir, "r", "s.db")
			if err := Restore(target, snap); err != nil {
				t.Fatal(err)
			}
			want := map[string]string{"k/a": "absent", "k/b": "absent", "k/c": "absent", "k/d": "ok"}
			got, err := openState(t, target, "k/a", "k/b", "k/c", "k/d")
			if err != nil || !sameState(got, want) {
				t.Fatalf("restored: %v, %v; want %v", got, err, want)
			}
		})
	}
}

// TestDeletesOfKeysSortingNearTheRecordKey: keys sorting around "~del"
// ("~", "~d", "~de", "~dek", "~del\x00", "~dela", "~delete", "~dem") are
// set, some deleted, and deletes of keys that are not there are made
// (they write nothing: the file does not grow); the store opens again
// with each as acknowledged, killed or closed cleanly.
func TestDeletesOfKeysSortingNearTheRecordKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	st := openAcked(t, path)
	near := []string{"~", "~d", "~de", "~dek", "~del\x00", "~dela", "~delete", "~dem"}
	setAcked(t, st, near...)
	want := map[string]string{}
	for i, k := range near {
		want[k] = "ok"
		if i%2 == 1 {
			deleteAcked(t, st, k)
			want[k] = "absent"
		}
	}
	size := fileSize(t, path)
	for _, k := range []string{"~dek", "~del\x01", "k/none", "~dem"} {
		deleteAcked(t, st, k)
	}
	if got := fileSize(t, path); got != size {
		t.Fatalf("deletes of keys not there grew the file from %d to %d bytes", size, got)
	}
	for i := range 4 {
		var err error
		if i%2 == 0 {
			err = st.CloseUnclean()
		} else {
			err = st.Close()
		}
		if err != nil {
			t.Fatal(err)
		}
		st, err = Open(path, Options{LockKey: unlocked})
		if err != nil {
			t.Fatalf("open %d: %v", i+1, err)
		}
		if got := heldState(t, st, near...); !sameState(got, want) {
			t.Fatalf("open %d: %v; want %v", i+1, got, want)
		}
	}
	st.Close()
}

// TestLiveBytesCountTheStoreAsItIs: the live data size the store keeps
// as it sets and deletes (Sizes) is the size of the keys and values it
// holds, the delete record among them, and the same after a reopen.
func TestLiveBytesCountTheStoreAsItIs(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	st := openAcked(t, path)
	held := func() int64 {
		var n int64
		if err := st.db.View(func(tx *buntdb.Tx) error {
			return tx.Ascend("", func(k, v string) bool { n += int64(len(k) + len(v)); return true })
		}); err != nil {
			t.Fatal(err)
		}
		return n
	}
	for i := range 40 {
		setAcked(t, st, fmt.Sprintf("k/%d", i%7), fmt.Sprintf("k/%d", (i+3)%7))
		deleteAcked(t, st, fmt.Sprintf("k/%d", (i*5)%7))
		deleteAcked(t, st, "k/none")
	}
	if _, live := st.Sizes(); live != held() {
		t.Fatalf("live bytes %d; the store holds %d", live, held())
	}
	if err := st.CloseUnclean(); err != nil {
		t.Fatal(err)
	}
	st = openAcked(t, path)
	defer st.Close()
	if _, live := st.Sizes(); live != held() {
		t.Fatalf("reopened: live bytes %d; the store holds %d", live, held())
	}
}

// TestDeleteAsTheFirstCommandOfAFile: a file that begins with a delete
// and its record (in either order), of a key set later in the file, is
// read in file order: the store opens with the key set.
func TestDeleteAsTheFirstCommandOfAFile(t *testing.T) {
	for _, delFirst := range []bool{true, false} {
		t.Run(fmt.Sprintf("delFirst=%v", delFirst), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "s.db")
			st := openAcked(t, path)
			setAcked(t, st, "k/a", "k/b")
			deleteAcked(t, st, "k/b")
			if err := st.CloseUnclean(); err != nil {
				t.Fatal(err)
			}
			pairs := deletePairs(t, path)
			del, rec := orderPair(t, path, pairs[0], delFirst)
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			lo, hi := min(del.start, rec.start), max(del.end, rec.end)
			moved := slices.Concat(b[lo:hi], b[:lo], b[hi:])
			if err := os.WriteFile(path, moved, 0o644); err != nil {
				t.Fatal(err)
			}
			os.Remove(identityPath(path))
			got, err := openState(t, path, "k/a", "k/b")
			if err != nil {
				t.Fatal(err)
			}
			if want := map[string]string{"k/a": "ok", "k/b": "ok"}; !sameState(got, want) {
				t.Fatalf("opened with %v; want %v", got, want)
			}
		})
	}
}
