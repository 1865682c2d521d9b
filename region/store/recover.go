package store

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
)

// recoverTail scans the BuntDB file at path and cuts off a final
// transaction that holds fewer values than it declares (or a final
// command that is incomplete). It returns how many bytes it cut.
func recoverTail(path string) (int64, error) {
	at, err := tornAt(path, 0)
	if err != nil || at < 0 {
		return 0, err
	}
	return cutAt(path, at)
}

// tornAt reads the BuntDB file at path, without changing it, and returns
// where a torn final transaction (or an incomplete final command) begins:
// -1 if there is none, or no file. size is how long the file was before
// BuntDB, loading it meanwhile, may have dropped an incomplete final
// command from it: a file that ends before size ended in one.
func tornAt(path string, size int64) (int64, error) {
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
		groupSeen  int
		groupWant  int
	)
	var c command
	for {
		n, err := c.read(r)
		if errors.Is(err, io.EOF) {
			if pos += n; pos >= size {
				break
			}
		}
		if err != nil {
			// An incomplete or unreadable final command: the group it
			// belongs to is torn.
			if groupTx != 0 && groupSeen < groupWant && pos > groupStart {
				pos = groupStart
			}
			return pos, nil
		}
		var txid uint64
		var want uint16
		if c.set {
			// The header is read without checking the value's checksum:
			// a damaged value (found and refused later) must not make its
			// transaction look torn.
			txid, want, _, _, _ = frameHeader(c.head[:c.headLen])
		}
		if txid == 0 || txid != groupTx {
			groupStart, groupTx, groupSeen, groupWant = pos, txid, 0, int(want)
		}
		groupSeen++
		pos += n
	}
	if groupTx != 0 && groupSeen < groupWant {
		return groupStart, nil
	}
	return -1, nil
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
	return cut(f, fi.Size(), at)
}

// recoverBuffer is the read buffer of recoverTail: large reads, since it
// reads the whole file.
const recoverBuffer = 1 << 20

// command is what recoverTail needs of one command of the file, read
// without allocating: whether it is a set of a key to a value, and the
// start of that value (its frame header).
type command struct {
	set     bool
	head    [maxHeader]byte
	headLen int
}

// read reads one RESP array of bulk strings, as BuntDB writes them (as
// readCommand does), and returns its size in the file; at the end of the
// file, io.EOF and the size of the NUL bytes before it.
func (c *command) read(r *bufio.Reader) (int64, error) {
	var size int64
	for {
		b, err := r.ReadByte()
		if err != nil {
			return size, err // the NUL bytes read, and io.EOF at the end
		}
		if b != 0 {
			_ = r.UnreadByte()
			break
		}
		size++
	}
	n, l, err := readLenFast(r, '*')
	if err != nil {
		return 0, unexpected(err)
	}
	size += l
	if n < 1 || n > 16 {
		return 0, fmt.Errorf("store: bad command arity %d", n)
	}
	c.set, c.headLen = false, 0
	for i := range n {
		m, l, err := readLenFast(r, '$')
		if err != nil {
			return 0, unexpected(err)
		}
		size += l
		if m < 0 || m > 1<<30 {
			return 0, fmt.Errorf("store: bad bulk length %d", m)
		}
		switch {
		case i == 0:
			p, err := r.Peek(min(m, 4))
			if err != nil {
				return 0, unexpected(err)
			}
			c.set = n == 3 && bytes.EqualFold(p, []byte("set"))
		case i == 2 && c.set:
			p, err := r.Peek(min(m, maxHeader))
			if err != nil {
				return 0, unexpected(err)
			}
			c.headLen = copy(c.head[:], p)
		}
		if _, err := r.Discard(m); err != nil {
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
