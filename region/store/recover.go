package store

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"strconv"
)

// recoverTail scans the BuntDB file at path and cuts off a final
// transaction that holds fewer values than it declares (or a final
// command that is incomplete). It returns how many bytes it cut.
func recoverTail(path string) (int64, error) {
	at, err := tornAt(path)
	if err != nil || at < 0 {
		return 0, err
	}
	return cutAt(path, at)
}

// tornAt reads the BuntDB file at path, without changing it, and returns
// where a torn final transaction (or an incomplete final command) begins:
// -1 if there is none, or no file. Open runs it before BuntDB reads the
// file, so that BuntDB only ever loads whole commands of sane lengths.
//
// What a crash leaves at the end of the file is a tear: a prefix of the
// commands written after the last fsync, possibly ending inside one, and,
// on file systems that extend a file before its blocks are written, runs
// of NUL bytes where those blocks should be. Everything from the first
// NUL byte where a command should start on is therefore after the last
// fsync (an fsync would have written those blocks too) and is cut as torn,
// whole commands after it included: BuntDB would skip the NUL bytes and
// then count the file's size without them, so that its next writes would
// land short of the end. A command that is not well formed, or an
// incomplete one followed by what looks like whole commands (a damaged
// length rather than a tear), is damage instead: tornAt returns an error
// and the store does not open, rather than cut acknowledged writes.
//
// A value whose checksum fails is damage too, not a tear: it counts as a
// value of the transaction it sits in, and its own header (transaction id
// and size) is not trusted, so that it cannot make a whole transaction
// look torn. One or more damaged values just before a transaction's first
// good one may be its own first values: the transaction is torn only if
// it lacks values even counting them.
func tornAt(path string) (int64, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return -1, nil
	}
	if err != nil {
		return 0, fmt.Errorf("store: %w", err)
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, recoverBuffer)
	var (
		pos        int64 // start of the next command
		groupStart int64 // start of the last group of commands
		groupTx    uint64
		groupSeen  int // its values, with the damaged ones among them
		groupWant  int
		damaged    int // damaged values in a row just before pos
		groupSlack int // damaged values just before the group
	)
	torn := func() bool { return groupTx != 0 && groupSeen+groupSlack < groupWant }
	// A delete and its record (delMarkKey), next to each other in either
	// order: where the first of a pair not yet matched starts (-1: none)
	// and the CRC-32C of the key it names (markBad: the record failed its
	// checksum). A record may stand alone (a rewrite writes the last one
	// as a value); a delete may not, once the file says that its deletes
	// carry records (strict: deletesKey, or a pair, seen). Deletes of
	// files written before records are bare.
	var (
		delAt, markAt   int64 = -1, -1
		delSum, markSum uint32
		markBad, strict bool
		// prevBad: the last command was a set whose value failed its
		// checksum; delAfterBad: the pending delete came right after
		// one, which may have been its record with its key damaged.
		prevBad, delAfterBad bool
	)
	// tear returns where a tear at at begins, reaching back to a delete
	// whose record it cut off.
	tear := func(at int64) int64 {
		if delAt >= 0 && strict {
			at = min(at, delAt)
		}
		return at
	}
	damagedDel := func(format string, a ...any) error {
		return fmt.Errorf("store: damaged file %s: %s", path, fmt.Sprintf(format, a...))
	}
	var c command
	for {
		n, err := c.read(r)
		switch {
		case errors.Is(err, io.EOF) && n == 0:
			if torn() {
				return tear(groupStart), nil
			}
			if delAt >= 0 && strict {
				if delAfterBad {
					return 0, damagedDel("the delete at byte %d has no record but a damaged value before it", delAt)
				}
				return tear(pos), nil
			}
			return -1, nil
		case errors.Is(err, errNUL), errors.Is(err, io.ErrUnexpectedEOF):
			if errors.Is(err, io.ErrUnexpectedEOF) {
				if at, ok, err := wholeCommandAfter(path, pos); err != nil {
					return 0, err
				} else if ok {
					return 0, fmt.Errorf("store: damaged file %s: the command at byte %d runs past the end, but a whole command starts at byte %d", path, pos, at)
				}
			}
			// A tear: the group it belongs to goes with it.
			if torn() && pos > groupStart {
				return tear(groupStart), nil
			}
			return tear(pos), nil
		case err != nil:
			// A command that runs into NUL bytes filling the rest of the
			// file is torn, not damaged: a crash extended the file, and
			// the blocks past the command's start were never written (a
			// run of NULs that starts inside a command rather than where
			// one starts). Unless a whole command follows it: then its
			// length is damaged.
			if z, zerr := nulTailStart(path); zerr != nil {
				return 0, zerr
			} else if z > pos {
				if at, ok, werr := wholeCommandAfter(path, pos); werr != nil {
					return 0, werr
				} else if !ok || at >= z {
					if torn() && pos > groupStart {
						return tear(groupStart), nil
					}
					return tear(pos), nil
				}
			}
			return 0, fmt.Errorf("store: damaged file %s at byte %d: %w", path, pos, err)
		}
		if !c.set && !c.del {
			// The store writes sets and deletes only: a command that
			// reads whole but is neither is damage (a verb's bytes),
			// never a tear, and nothing after it may be cut.
			return 0, fmt.Errorf("store: damaged file %s at byte %d: a command that is neither a set nor a delete", path, pos)
		}
		switch mark, bad := c.delMark(); {
		case c.del && markAt >= 0:
			switch {
			case markBad:
				return 0, damagedDel("the record at byte %d of the delete at byte %d failed its checksum", markAt, pos)
			case c.keyCRC != markSum:
				return 0, damagedDel("the delete at byte %d does not name the key its record at byte %d names", pos, markAt)
			}
			markAt, strict = -1, true
		case c.del:
			if delAt >= 0 && strict {
				return 0, damagedDel("the delete at byte %d has no record", delAt)
			}
			delAt, delSum, delAfterBad = pos, c.keyCRC, prevBad
		case (mark || bad) && delAt >= 0 && (strict || bad || c.markSum == delSum):
			switch {
			case bad:
				return 0, damagedDel("the record at byte %d of the delete at byte %d failed its checksum", pos, delAt)
			case c.markSum != delSum:
				return 0, damagedDel("the delete at byte %d does not name the key its record at byte %d names", delAt, pos)
			}
			delAt, strict = -1, true
		case mark || bad:
			delAt, markAt, markSum, markBad = -1, pos, c.markSum, bad
		default:
			if delAt >= 0 && strict {
				return 0, damagedDel("the delete at byte %d has no record", delAt)
			}
			delAt, markAt = -1, -1
			if c.deletesMarker() {
				strict = true
			}
		}
		prevBad = c.set && !c.sound
		if c.set && !c.sound {
			// Damaged: one more value of the group it is in, or of the
			// one that starts next.
			groupSeen++
			damaged++
			pos += n
			continue
		}
		var txid uint64
		var want uint16
		if c.set {
			txid, want, _, _, _ = frameHeader(c.head[:c.headLen])
		}
		if txid == 0 || txid != groupTx {
			groupStart, groupTx, groupSeen, groupWant = pos, txid, 0, int(want)
			groupSlack = damaged
		}
		damaged = 0
		groupSeen++
		pos += n
	}
}

// nulTailStart returns where the run of NUL bytes that ends the file at
// path starts: its size if the last byte is not NUL.
func nulTailStart(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("store: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("store: %w", err)
	}
	end := fi.Size()
	buf := make([]byte, 64<<10)
	for end > 0 {
		n := min(int64(len(buf)), end)
		if _, err := f.ReadAt(buf[:n], end-n); err != nil {
			return 0, fmt.Errorf("store: %w", err)
		}
		for i := n - 1; i >= 0; i-- {
			if buf[i] != 0 {
				return end - n + i + 1, nil
			}
		}
		end -= n
	}
	return 0, nil
}

// errNUL is command.read's error for a NUL byte where a command should
// start.
var errNUL = errors.New("store: NUL byte where a command should start")

// tailPatterns are the starts of the commands BuntDB writes.
var tailPatterns = [][]byte{
	[]byte("\r\n*3\r\n$3\r\nset\r\n"),
	[]byte("\r\n*5\r\n$3\r\nset\r\n"),
	[]byte("\r\n*2\r\n$3\r\ndel\r\n"),
}

// wholeCommandAfter reports whether the file at path holds, after the
// incomplete command at byte from, the start of a command followed by its
// end of line: a tear ends the file, so that is a damaged length, not a
// tear. It reads from from to the end in blocks.
func wholeCommandAfter(path string, from int64) (int64, bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, false, fmt.Errorf("store: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, false, fmt.Errorf("store: %w", err)
	}
	// Every candidate is read through one small buffer, and all of them
	// together read at most a few times the bytes after from: a file
	// crafted with a command start every few bytes, each declaring a long
	// value, costs neither memory nor time beyond its size.
	cand := &candidates{f: f, size: fi.Size(), budget: 4*(fi.Size()-from) + recoverBuffer}
	cand.r = bufio.NewReaderSize(cand, candidateBuffer)
	const overlap = 32
	buf := make([]byte, recoverBuffer+overlap)
	off, kept := from, 0
	for {
		n, err := f.ReadAt(buf[kept:], off+int64(kept))
		m := kept + n
		for _, p := range tailPatterns {
			// A command's start without the line end before it: that
			// line end may be the damaged bytes (the end of the command
			// at from).
			p = p[2:]
			for j := 0; j < m; {
				i := bytes.Index(buf[j:m], p)
				if i < 0 {
					break
				}
				at := off + int64(j+i)
				if at <= from {
					j += i + 1
					continue
				}
				// Only a command that reads whole, with a sound value,
				// counts: the torn command's own value may hold bytes
				// that look like a command's start.
				if whole, verr := cand.wholeAt(at); verr != nil {
					return 0, false, fmt.Errorf("store: damaged file %s: the command at byte %d runs past the end: %w", path, from, verr)
				} else if whole {
					return at, true, nil
				}
				j += i + 1
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return 0, false, nil
			}
			return 0, false, fmt.Errorf("store: %w", err)
		}
		kept = min(overlap, m)
		copy(buf, buf[m-kept:m])
		off += int64(m - kept)
	}
}

// candidates reads the commands wholeCommandAfter tries, one at a time,
// through one buffer, within a budget of bytes read.
type candidates struct {
	f      *os.File
	size   int64
	at     int64 // the next byte Read reads
	budget int64
	r      *bufio.Reader
}

// errCandidates is the error of a search for a whole command that read
// its budget: too many command starts to tell a tear from damage.
var errCandidates = errors.New("store: too many command starts after it to tell a tear from damage")

// Read reads from the file at c.at, within the budget.
func (c *candidates) Read(p []byte) (int, error) {
	if c.budget <= 0 {
		return 0, errCandidates
	}
	if c.at >= c.size {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), c.budget, c.size-c.at)]
	n, err := c.f.ReadAt(p, c.at)
	c.at += int64(n)
	c.budget -= int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}

// wholeAt reports whether a whole command, whose value (for a set)
// passes its checksum, starts at byte at; it fails only once the search
// has read its budget.
func (c *candidates) wholeAt(at int64) (bool, error) {
	c.at = at
	c.r.Reset(c)
	var cmd command
	n, err := cmd.read(c.r)
	if c.budget <= 0 {
		return false, errCandidates
	}
	if err != nil || n == 0 {
		return false, nil
	}
	return !cmd.set || cmd.sound, nil
}

// cutAt truncates the file at path to at bytes, if it is longer, and
// fsyncs it; it returns how many bytes it cut.
func cutAt(path string, at int64) (int64, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return 0, fmt.Errorf("store: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("store: %w", err)
	}
	if at < fi.Size() {
		// The cut loses writes of the run that wrote them: the record
		// of its boot goes first (forgetBoot).
		if err := forgetBoot(path); err != nil {
			return 0, err
		}
	}
	return cut(f, fi.Size(), at)
}

// recoverBuffer is the read buffer of recoverTail: large reads, since it
// reads the whole file.
const recoverBuffer = 1 << 20

// candidateBuffer is the read buffer of a command wholeCommandAfter
// tries: small, since most candidates fail within their first bytes.
const candidateBuffer = 4 << 10

// command is what recoverTail needs of one command of the file, read
// without allocating: whether it is a set of a key to a value, the start
// of that value (its frame header), and whether the value passes its
// checksum.
type command struct {
	set     bool
	del     bool
	sound   bool
	keyCRC  uint32 // CRC-32C of a set's or a delete's key
	keyLen  int
	keyHead [len(deletesKey)]byte // the key's first bytes
	head    [maxHeader]byte
	headLen int
	valLen  int
	markSum uint32 // a delete record's payload (delMark)
}

// delMark reports whether c sets the delete record (delMarkKey): mark
// if it is sound, with c.markSum the checksum of the key it names, bad
// if it is not (its checksum failed, or its payload is not a checksum).
func (c *command) delMark() (mark, bad bool) {
	if !c.set || c.keyLen != len(delMarkKey) || string(c.keyHead[:len(delMarkKey)]) != delMarkKey {
		return false, false
	}
	if !c.sound {
		return false, true
	}
	_, _, _, payload, ok := frameHeader(c.head[:c.headLen])
	if !ok || len(payload) < 4 || c.valLen != c.headLen-len(payload)+4 {
		return false, true
	}
	c.markSum = binary.BigEndian.Uint32(payload)
	return true, false
}

// deletesMarker reports whether c sets deletesKey, soundly.
func (c *command) deletesMarker() bool {
	return c.set && c.sound && c.keyLen == len(deletesKey) && string(c.keyHead[:]) == deletesKey
}

// read reads one RESP array of bulk strings, as BuntDB writes them (as
// readCommand does), and returns its size in the file: io.EOF and 0 at
// the end of the file, errNUL for a NUL byte where the command should
// start, io.ErrUnexpectedEOF if the file ends inside it.
func (c *command) read(r *bufio.Reader) (int64, error) {
	if b, err := r.Peek(1); err != nil {
		return 0, err
	} else if b[0] == 0 {
		return 0, errNUL
	}
	var size int64
	n, l, err := readLenFast(r, '*')
	if err != nil {
		return 0, unexpected(err)
	}
	size += l
	if n < 1 || n > 16 {
		return 0, fmt.Errorf("store: bad command arity %d", n)
	}
	c.set, c.del, c.sound, c.headLen, c.keyLen = false, false, false, 0, 0
	for i := range n {
		m, l, err := readLenFast(r, '$')
		if err != nil {
			return 0, unexpected(err)
		}
		size += l
		if m < 0 || m > 1<<30 {
			return 0, fmt.Errorf("store: bad bulk length %d", m)
		}
		skip := m
		switch {
		case i == 0:
			p, err := r.Peek(min(m, 4))
			if err != nil {
				return 0, unexpected(err)
			}
			c.set = n == 3 && bytes.EqualFold(p, []byte("set"))
			c.del = n == 2 && bytes.EqualFold(p, []byte("del"))
		case i == 1 && (c.set || c.del):
			p, err := r.Peek(min(m, len(c.keyHead)))
			if err != nil {
				return 0, unexpected(err)
			}
			c.keyLen = m
			copy(c.keyHead[:], p)
			d, err := c.checksum(r, m, 0, &c.keyCRC)
			if err != nil {
				return 0, err
			}
			skip = m - d
		case i == 2 && c.set:
			c.valLen = m
			d, err := c.value(r, m)
			if err != nil {
				return 0, err
			}
			skip = m - d
		}
		if _, err := r.Discard(skip); err != nil {
			return 0, unexpected(err)
		}
		p, err := r.Peek(2)
		if err != nil {
			return 0, unexpected(err)
		}
		if p[0] != '\r' || p[1] != '\n' {
			return 0, errors.New("store: bad bulk terminator")
		}
		r.Discard(2)
		size += int64(m + 2)
	}
	return size, nil
}

// value reads a set's value of m bytes but its last block, which it
// leaves for read to discard, and returns how many bytes it discarded: it
// keeps the value's header and checks its checksum (as unframe does).
func (c *command) value(r *bufio.Reader, m int) (int, error) {
	p, err := r.Peek(min(m, maxHeader))
	if err != nil {
		return 0, unexpected(err)
	}
	c.headLen = copy(c.head[:], p)
	if len(p) < 5 {
		c.sound = false
		return 0, nil
	}
	var crc uint32
	if p[4] == frameKeyed {
		crc = c.keyCRC
	}
	var sum uint32
	d, err := c.checksum(r, m-4, 4, &sum, crc)
	if err != nil {
		return 0, err
	}
	_, _, _, _, ok := frameHeader(c.head[:c.headLen])
	c.sound = ok && sum == binary.BigEndian.Uint32(c.head[:4])
	return d, nil
}

// checksum reads the m bytes after the first skip of a bulk string but
// its last block, which it leaves for read to discard, into *sum (CRC-32C
// from the state from, if given), and returns how many bytes it
// discarded, skip included.
func (c *command) checksum(r *bufio.Reader, m, skip int, sum *uint32, from ...uint32) (int, error) {
	crc := uint32(0)
	if len(from) > 0 {
		crc = from[0]
	}
	if skip > 0 {
		if _, err := r.Discard(skip); err != nil {
			return 0, unexpected(err)
		}
	}
	done := skip
	for {
		p, err := r.Peek(min(m-(done-skip), r.Size()))
		if err != nil {
			return 0, unexpected(err)
		}
		crc = crc32.Update(crc, crcTable, p)
		if done-skip+len(p) == m {
			*sum = crc
			return done, nil
		}
		r.Discard(len(p))
		done += len(p)
	}
}

// readLenFast is readLen without allocating.
func readLenFast(r *bufio.Reader, prefix byte) (int, int64, error) {
	line, err := r.ReadSlice('\n')
	if err != nil {
		return 0, 0, err
	}
	if len(line) < 4 || line[0] != prefix || line[len(line)-2] != '\r' {
		return 0, 0, fmt.Errorf("store: bad header %q", line)
	}
	digits := line[1 : len(line)-2]
	if len(digits) > 10 {
		return 0, 0, fmt.Errorf("store: bad length %q", line)
	}
	n, neg := 0, false
	if digits[0] == '-' {
		neg, digits = true, digits[1:]
	}
	if len(digits) == 0 {
		return 0, 0, fmt.Errorf("store: bad length %q", line)
	}
	for _, d := range digits {
		if d < '0' || d > '9' {
			return 0, 0, fmt.Errorf("store: bad length %q", line)
		}
		n = n*10 + int(d-'0')
	}
	if neg {
		n = -n
	}
	return n, int64(len(line)), nil
}

func cut(f *os.File, size, at int64) (int64, error) {
	if at >= size {
		return 0, nil
	}
	if err := f.Truncate(at); err != nil {
		return 0, fmt.Errorf("store: truncate torn tail: %w", err)
	}
	if err := f.Sync(); err != nil {
		return 0, fmt.Errorf("store: %w", err)
	}
	return size - at, nil
}

// readCommand reads one RESP array of bulk strings, as BuntDB writes them.
func readCommand(r *bufio.Reader) ([][]byte, int64, error) {
	var size int64
	for {
		c, err := r.ReadByte()
		if err != nil {
			return nil, 0, err
		}
		if c != 0 {
			_ = r.UnreadByte()
			break
		}
		size++
	}
	n, l, err := readLen(r, '*')
	if err != nil {
		return nil, 0, unexpected(err)
	}
	size += l
	if n < 1 || n > 16 {
		return nil, 0, fmt.Errorf("store: bad command arity %d", n)
	}
	parts := make([][]byte, n)
	for i := range parts {
		m, l, err := readLen(r, '$')
		if err != nil {
			return nil, 0, unexpected(err)
		}
		size += l
		if m < 0 || m > 1<<30 {
			return nil, 0, fmt.Errorf("store: bad bulk length %d", m)
		}
		b := make([]byte, m+2)
		if _, err := io.ReadFull(r, b); err != nil {
			return nil, 0, unexpected(err)
		}
		if b[m] != '\r' || b[m+1] != '\n' {
			return nil, 0, errors.New("store: bad bulk terminator")
		}
		parts[i] = b[:m]
		size += int64(m + 2)
	}
	return parts, size, nil
}

func unexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

func readLen(r *bufio.Reader, prefix byte) (int, int64, error) {
	line, err := r.ReadSlice('\n')
	if err != nil {
		return 0, 0, err
	}
	if len(line) < 4 || line[0] != prefix || line[len(line)-2] != '\r' {
		return 0, 0, fmt.Errorf("store: bad header %q", line)
	}
	n, err := strconv.Atoi(string(line[1 : len(line)-2]))
	if err != nil {
		return 0, 0, fmt.Errorf("store: bad length %q", line)
	}
	return n, int64(len(line)), nil
}
