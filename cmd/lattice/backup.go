package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/latticedb/lattice/cmd/server"
	"github.com/latticedb/lattice/region/config"
	storefile "github.com/latticedb/lattice/region/store"
)

// runBackup writes a consistent snapshot of a region's store to --out:
// into a temporary file beside it, fsynced, then renamed over --out and
// the directory fsynced, so --out is either the old file or the whole
// new snapshot. The region may be running.
func runBackup(ctx context.Context, cio cmdIO, args []string) int {
	cmd, _ := lookup("backup")
	fset := newFlagSet(cio, cmd)
	cfgPath := fset.String("config", "", "cluster config `FILE` (YAML, see docs/configuration.md)")
	name := fset.String("region", "", "`NAME` of the region whose store to back up, one of the config's regions")
	out := fset.String("out", "", "`FILE` to write the snapshot to (its directory must exist)")
	part := fset.Int("partition", -1, "`N`: the partition whose store to back up (required when the cluster has several partitions; each has its own store)")
	force := fset.Bool("force", false, "replace --out if it exists")
	pos, err := parseFlags(fset, args)
	if err != nil {
		return flagStatus(err)
	}
	const me = "lattice backup"
	if !required(cio, me, pos, "config", *cfgPath, "region", *name, "out", *out) {
		return exitUsage
	}
	if !partitionFlag(cio, me, fset, *part) {
		return exitUsage
	}
	store, ok := regionStore(cio, me, *cfgPath, *name, *part)
	if !ok {
		return exitFail
	}
	if err := checkStoreExists(store, *name); err != nil {
		fmt.Fprintf(cio.stderr, "%s: %v\n", me, err)
		return exitFail
	}
	dst, err := filepath.Abs(*out)
	if err != nil {
		fmt.Fprintf(cio.stderr, "%s: --out %s: %v\n", me, *out, err)
		return exitFail
	}
	if err := checkOut(dst, store, *force); err != nil {
		fmt.Fprintf(cio.stderr, "%s: %v\n", me, err)
		return exitFail
	}
	// Interrupted (SIGINT, SIGTERM), the copies are removed and --out
	// is left as it was.
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	n, err := writeBackup(ctx, store, dst)
	if err != nil {
		fmt.Fprintf(cio.stderr, "%s: %v\n", me, strings.TrimPrefix(err.Error(), "region: "))
		return exitFail
	}
	fmt.Fprintf(cio.stdout, "wrote %d bytes to %s (a snapshot of region %s's store %s)\n", n, dst, *name, store)
	return exitOK
}

// required reports whether a command got no positional argument and
// every flag of flagValues (name, value pairs) is set, and says what is
// wrong on cio.stderr when not.
func required(cio cmdIO, me string, pos []string, flagValues ...string) bool {
	if len(pos) > 0 {
		fmt.Fprintf(cio.stderr, "%s: unexpected argument %q\n", me, pos[0])
		return false
	}
	for i := 0; i+1 < len(flagValues); i += 2 {
		if flagValues[i+1] == "" {
			fmt.Fprintf(cio.stderr, "%s: --%s is required\n", me, flagValues[i])
			return false
		}
	}
	return true
}

// runRestore puts a snapshot written by `lattice backup` in place of a
// stopped region's store. The region's next start goes on as a new
// incarnation, in catch-up mode (see store.Restore).
func runRestore(ctx context.Context, cio cmdIO, args []string) int {
	cmd, _ := lookup("restore")
	fset := newFlagSet(cio, cmd)
	cfgPath := fset.String("config", "", "cluster config `FILE` (YAML, see docs/configuration.md)")
	name := fset.String("region", "", "`NAME` of the region whose store to replace, one of the config's regions; it must be stopped")
	from := fset.String("from", "", "snapshot `FILE` written by lattice backup")
	part := fset.Int("partition", -1, "`N`: the partition whose store to replace (required when the cluster has several partitions); the node that owns it here must be stopped")
	pos, err := parseFlags(fset, args)
	if err != nil {
		return flagStatus(err)
	}
	const me = "lattice restore"
	if !required(cio, me, pos, "config", *cfgPath, "region", *name, "from", *from) {
		return exitUsage
	}
	if !partitionFlag(cio, me, fset, *part) {
		return exitUsage
	}
	store, ok := regionStore(cio, me, *cfgPath, *name, *part)
	if !ok {
		return exitFail
	}
	src, err := filepath.Abs(*from)
	if err != nil {
		fmt.Fprintf(cio.stderr, "%s: --from %s: %v\n", me, *from, err)
		return exitFail
	}
	fi, err := os.Stat(src)
	switch {
	case err != nil:
		fmt.Fprintf(cio.stderr, "%s: --from: %v\n", me, err)
		return exitFail
	case !fi.Mode().IsRegular():
		fmt.Fprintf(cio.stderr, "%s: --from %s is not a regular file\n", me, src)
		return exitFail
	case sameFile(src, store):
		fmt.Fprintf(cio.stderr, "%s: --from %s is region %s's store itself, not a snapshot of it\n", me, src, *name)
		return exitFail
	case storefile.IsStoreFile(store, src):
		fmt.Fprintf(cio.stderr, "%s: --from %s is a file of region %s's store (the store replaces or removes the files named %s.*), not a snapshot; copy it elsewhere first\n", me, src, *name, filepath.Base(store))
		return exitFail
	}
	// Refuse before touching anything: a running region, then a file
	// that is not a snapshot. store.Restore checks both again.
	running, err := storeLocked(store)
	if err != nil {
		fmt.Fprintf(cio.stderr, "%s: %v\n", me, err)
		return exitFail
	}
	if running {
		fmt.Fprintf(cio.stderr, "%s: region %s is running (another process holds the lock on its store %s); stop it first\n", me, *name, store)
		return exitFail
	}
	// Backup to nowhere checks that the file is a snapshot (the copy
	// loads, every value carries a valid frame), leaving nothing behind;
	// Restore checks it again and also refuses one that ends inside a
	// transaction (cut short).
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	n, err := storefile.CheckSnapshotContext(ctx, src)
	if err != nil {
		fmt.Fprintf(cio.stderr, "%s: --from %s: %s\n", me, src, strings.TrimPrefix(err.Error(), "region: "))
		return exitFail
	}
	if err := storefile.RestoreContext(ctx, store, src); err != nil {
		fmt.Fprintf(cio.stderr, "%s: %s\n", me, strings.TrimPrefix(err.Error(), "region: "))
		return exitFail
	}
	fmt.Fprintf(cio.stdout, "restored region %s's store %s from %s (%d bytes)\n", *name, store, src, n)
	fmt.Fprintf(cio.stdout, "its next start goes on as a new incarnation and catches up with its peers by anti-entropy\n")
	return exitOK
}

// regionStore loads the config and returns the path of region name's
// store file — of partition part's store when the cluster has several
// partitions (part is then required; -1 means not given) —, reporting a
// problem on cio.stderr.
func regionStore(cio cmdIO, me, cfgPath, name string, part int) (string, bool) {
	cfg, err := config.Load(cfgPath)
	if err != nil {
		printLines(cio.stderr, me+": ", err)
		return "", false
	}
	if _, ok := cfg.Region(name); !ok {
		fmt.Fprintf(cio.stderr, "%s: region %q is not in %s (regions: %s)\n",
			me, name, cfgPath, strings.Join(cfg.RegionNames(), ", "))
		return "", false
	}
	p := cfg.PartitionCount()
	switch {
	case p == 1 && part >= 0:
		fmt.Fprintf(cio.stderr, "%s: --partition %d: the cluster has one partition\n", me, part)
		return "", false
	case p == 1:
		return filepath.Join(cfg.RegionDir(name), server.DataFile), true
	case part < 0:
		fmt.Fprintf(cio.stderr, "%s: --partition is required: the cluster has %d partitions, each with a store of its own\n", me, p)
		return "", false
	case part >= p:
		fmt.Fprintf(cio.stderr, "%s: --partition %d: the cluster's partitions are 0..%d\n", me, part, p-1)
		return "", false
	}
	return filepath.Join(cfg.RegionDir(name), server.PartitionDir(part), server.DataFile), true
}

// partitionFlag refuses a --partition given below 0 (its default, -1,
// stands for a flag not given, and is not a value to give).
func partitionFlag(cio cmdIO, me string, fset *flag.FlagSet, part int) bool {
	given := false
	fset.Visit(func(f *flag.Flag) { given = given || f.Name == "partition" })
	if given && part < 0 {
		fmt.Fprintf(cio.stderr, "%s: --partition %d: want a partition number, 0 or more\n", me, part)
		return false
	}
	return true
}

// checkStoreExists reports a store that is not there (a region that
// never ran, or a data_dir that points elsewhere).
func checkStoreExists(store, name string) error {
	fi, err := os.Stat(store)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("region %s has no store at %s (has it ever run with this config's data_dir?)", name, store)
	}
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("region %s's store %s is not a regular file", name, store)
	}
	return nil
}

// checkOut refuses an --out that would replace the store or one of its
// files, a directory, or an existing file without --force, and one whose
// directory does not exist.
func checkOut(out, store string, force bool) error {
	if storefile.IsStoreFile(store, out) {
		return fmt.Errorf("--out %s is a file of the region's store (the store replaces or removes the files named %s.*); write the snapshot elsewhere", out, filepath.Base(store))
	}
	for _, f := range []string{out + ".id", out + ".lock"} {
		if _, err := os.Lstat(f); err == nil {
			return fmt.Errorf("--out %s is a store (%s is beside it): a snapshot over it would replace another partition's or region's data; write the snapshot elsewhere", out, f)
		}
	}
	dir := filepath.Dir(out)
	if fi, err := os.Stat(dir); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("--out %s: directory %s does not exist", out, dir)
		}
		return fmt.Errorf("--out %s: %v", out, err)
	} else if !fi.IsDir() {
		return fmt.Errorf("--out %s: %s is not a directory", out, dir)
	}
	fi, err := os.Lstat(out)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("--out %s: %v", out, err)
	case fi.IsDir():
		return fmt.Errorf("--out %s is a directory; name the snapshot file", out)
	case !fi.Mode().IsRegular():
		return fmt.Errorf("--out %s exists and is not a regular file", out)
	case !force:
		return fmt.Errorf("--out %s already exists; pass --force to replace it", out)
	}
	return nil
}

// sameFile reports whether a and b name one existing file.
func sameFile(a, b string) bool {
	fa, err := os.Stat(a)
	if err != nil {
		return false
	}
	fb, err := os.Stat(b)
	if err != nil {
		return false
	}
	return os.SameFile(fa, fb)
}

// writeBackup writes the snapshot of store to a temporary file beside
// out, fsyncs it, renames it to out and fsyncs the directory. On failure
// it leaves no file behind and out as it was.
func writeBackup(ctx context.Context, store, out string) (n int64, err error) {
	dir := filepath.Dir(out)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(out)+".tmp-*")
	if err != nil {
		return 0, err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if n, err = storefile.BackupContext(ctx, store, tmp); err != nil {
		return 0, err
	}
	if err = tmp.Sync(); err != nil {
		return 0, fmt.Errorf("fsync %s: %w", tmp.Name(), err)
	}
	if err = tmp.Close(); err != nil {
		return 0, err
	}
	if err = os.Chmod(tmp.Name(), 0o644); err != nil {
		return 0, err
	}
	if err = os.Rename(tmp.Name(), out); err != nil {
		return 0, err
	}
	d, err := os.Open(dir)
	if err != nil {
		return n, err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return n, fmt.Errorf("fsync %s: %w", dir, err)
	}
	return n, nil
}

// storeLocked reports whether a process (a running region) holds the
// lock file store.Open takes beside the store (store + ".lock").
// It creates nothing: no lock file means no region has the store open.
func storeLocked(store string) (bool, error) {
	f, err := os.OpenFile(store+".lock", os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("lock %s: %w", store+".lock", err)
	}
	return false, syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
}
