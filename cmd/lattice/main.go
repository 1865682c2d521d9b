// Command lattice runs Lattice regions, a local three-region cluster, the
// certificate generator and the benchmark.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "lattice: commands dev, serve, certs and bench are not built yet")
	os.Exit(2)
}
