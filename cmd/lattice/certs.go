package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/latticedb/lattice/sync/certs"
)

// defaultCluster is the cluster name of `lattice certs` without --cluster.
const defaultCluster = "lattice"

// runCerts writes a cluster CA (or reuses the one in --dir and
// --ca-key-dir) and a certificate and key for every region named, and
// says which files a region needs and that the CA key belongs offline. It
// refuses to replace a region's existing certificate or key unless
// --force is given.
func runCerts(_ context.Context, cio cmdIO, args []string) int {
	cmd, _ := lookup("certs")
	fset := newFlagSet(cio, cmd)
	dir := fset.String("dir", "", "`DIR`ectory to write ca.crt, REGION.crt and REGION.key into (the config's tls_dir), and ca.key unless --ca-key-dir is given")
	caKeyDir := fset.String("ca-key-dir", "", "`DIR`ectory to keep the CA's private key ca.key in, apart from what regions get (default: --dir)")
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
	if *caKeyDir == "" {
		*caKeyDir = *dir
	}
	if err := certs.GenerateSplit(*dir, *caKeyDir, *cluster, regions); err != nil {
		fmt.Fprintf(cio.stderr, "lattice certs: %v\n", err)
		return exitFail
	}
	for _, r := range regions {
		fmt.Fprintf(cio.stdout, "wrote %s and %s\n", filepath.Join(*dir, certs.CertFile(r)), filepath.Join(*dir, certs.KeyFile(r)))
	}
	fmt.Fprintf(cio.stdout, "cluster CA: %s\n", filepath.Join(*dir, certs.CACertFile))
	fmt.Fprintf(cio.stdout, "CA private key: %s\n", filepath.Join(*caKeyDir, certs.CAKeyFile))
	fmt.Fprintln(cio.stdout, "\neach region needs only these files in its tls_dir:")
	for _, r := range regions {
		fmt.Fprintf(cio.stdout, "  %s: %s\n", r, strings.Join(certs.RegionFiles(r), " "))
	}
	fmt.Fprintf(cio.stdout, "keep %s offline: it is needed only to issue certificates, never by a region\n", certs.CAKeyFile)
	if *caKeyDir == *dir {
		fmt.Fprintf(cio.stdout, "(it is in %s now; --ca-key-dir writes it elsewhere)\n", *dir)
	}
	return exitOK
}
