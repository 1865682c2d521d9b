package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/latticedb/lattice/sync/certs"
)

// defaultCluster is the cluster name of `lattice certs` without --cluster.
const defaultCluster = "lattice"

// runCerts writes a cluster CA (or reuses the one in --dir) and a
// certificate and key for every region named. It refuses to replace a
// region's existing certificate or key unless --force is given.
func runCerts(_ context.Context, cio cmdIO, args []string) int {
	cmd, _ := lookup("certs")
	fset := newFlagSet(cio, cmd)
	dir := fset.String("dir", "", "`DIR`ectory to write ca.crt, ca.key, REGION.crt and REGION.key into (the config's tls_dir)")
	cluster := fset.String("cluster", defaultCluster, "cluster `NAME` recorded in the CA; an existing CA in --dir must have it")
	force := fset.Bool("force", false, "replace existing region certificates and keys")
	regions, err := parseFlags(fset, args)
	if err != nil {
		return flagStatus(err)
	}
	switch {
	case *dir == "":
		fmt.Fprintln(cio.stderr, "lattice certs: --dir is required")
		return exitUsage
	case len(regions) == 0:
		fmt.Fprintln(cio.stderr, "lattice certs: name at least one region")
		return exitUsage
	}
	for _, r := range regions {
		if err := certs.ValidateRegionName(r); err != nil {
			fmt.Fprintf(cio.stderr, "lattice certs: %v\n", err)
			return exitFail
		}
	}
	if !*force {
		for _, r := range regions {
			for _, f := range []string{certs.KeyFile(r), certs.CertFile(r)} {
				p := filepath.Join(*dir, f)
				_, err := os.Lstat(p)
				if err == nil {
					fmt.Fprintf(cio.stderr, "lattice certs: %s already exists; pass --force to replace the files of region %s\n", p, r)
					return exitFail
				}
				if !errors.Is(err, fs.ErrNotExist) {
					fmt.Fprintf(cio.stderr, "lattice certs: %v\n", err)
					return exitFail
				}
			}
		}
	}
	if err := certs.Generate(*dir, *cluster, regions); err != nil {
		fmt.Fprintf(cio.stderr, "lattice certs: %v\n", err)
		return exitFail
	}
	for _, r := range regions {
		fmt.Fprintf(cio.stdout, "wrote %s and %s\n", filepath.Join(*dir, certs.CertFile(r)), filepath.Join(*dir, certs.KeyFile(r)))
	}
	fmt.Fprintf(cio.stdout, "cluster CA: %s\n", filepath.Join(*dir, certs.CACertFile))
	return exitOK
}
