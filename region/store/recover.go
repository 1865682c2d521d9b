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
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("store: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("store: %w", err)
	}
	r := bufio.NewReaderSize(f, 1<<16)
	var (
		pos        int64 // start of the next command
		groupStart int64 // start of the last group of commands
		groupTx    uint64
		groupSeen  int
		groupWant  int
	)
	for {
		cmd, size, err := readCommand(r)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			// An incomplete or unreadable final command: the group it
			// belongs to is torn.
			if groupTx != 0 && groupSeen < groupWant && pos > groupStart {
				pos = groupStart
			}
			return cut(f, fi.Size(), pos)
		}
		var txid uint64
		var n uint16
		if len(cmd) == 3 && bytes.EqualFold(cmd[0], []byte("set")) {
			// The header is read without checking the value's checksum:
			// a damaged value (found and refused later) must not make its
			// transaction look torn.
			txid, n, _, _, _ = frameHeader(cmd[2])
		}
		if txid == 0 || txid != groupTx {
			groupStart, groupTx, groupSeen, groupWant = pos, txid, 0, int(n)
		}
		groupSeen++
		pos += size
	}
	if groupTx != 0 && groupSeen < groupWant {
		return cut(f, fi.Size(), groupStart)
	}
	return 0, nil
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
