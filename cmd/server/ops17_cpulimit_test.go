package server

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// cgroupV1CPU is where the cgroup v1 cpu controller is mounted, when it is.
const cgroupV1CPU = "/sys/fs/cgroup/cpu"

// ownCPUCgroup returns the process's cgroup of the v1 cpu controller
// (from /proc/self/cgroup), or false.
func ownCPUCgroup() (string, bool) {
	f, err := os.Open("/proc/self/cgroup")
	if err != nil {
		return "", false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) == 3 && slices.Contains(strings.Split(parts[1], ","), "cpu") {
			return parts[2], true
		}
	}
	return "", false
}

// TestProcsStayWithinCPULimit runs the process under a CPU limit of half
// a CPU less than its CPUs (a cgroup's CFS quota), a limit the runtime
// rounds up to the CPU count, and opens four stores' worth of the
// processor tuner. configuration.md (Environment) and operations.md
// (Processors) say the extra Ps are added only without a CPU limit below
// the CPUs, since more Ps than the quota let the process exceed it and be
// throttled: GOMAXPROCS must stay at the runtime's own number here.
//
// It needs a writable cgroup v1 cpu controller (root) and is skipped
// without one.
func TestProcsStayWithinCPULimit(t *testing.T) {
	if _, env := os.LookupEnv("GOMAXPROCS"); env {
		t.Skip("GOMAXPROCS is set in the environment")
	}
	cpus := runtime.NumCPU()
	if cpus < 2 {
		t.Skip("needs at least 2 CPUs")
	}
	orig, ok := ownCPUCgroup()
	if !ok {
		t.Skip("no cgroup v1 cpu controller")
	}
	if _, err := os.Stat(filepath.Join(cgroupV1CPU, orig, "cpu.cfs_quota_us")); err != nil {
		t.Skipf("no cgroup v1 cpu controller: %v", err)
	}
	cg := filepath.Join(cgroupV1CPU, orig, fmt.Sprintf("lattice-procs-test-%d", os.Getpid()))
	if err := os.Mkdir(cg, 0o755); err != nil {
		t.Skipf("cannot make a cgroup: %v", err)
	}
	pid := []byte(strconv.Itoa(os.Getpid()))
	t.Cleanup(func() {
		if err := os.WriteFile(filepath.Join(cgroupV1CPU, orig, "cgroup.procs"), pid, 0); err != nil {
			t.Errorf("moving the process back to its cgroup: %v", err)
		}
		if err := os.Remove(cg); err != nil {
			t.Errorf("removing the test cgroup: %v", err)
		}
		runtime.SetDefaultGOMAXPROCS()
	})
	const period = 100_000
	quota := cpus*period - period/2 // cpus − 0.5 CPUs
	for _, w := range []struct{ file, value string }{
		{"cpu.cfs_period_us", strconv.Itoa(period)},
		{"cpu.cfs_quota_us", strconv.Itoa(quota)},
		{"cgroup.procs", string(pid)},
	} {
		if err := os.WriteFile(filepath.Join(cg, w.file), []byte(w.value), 0); err != nil {
			t.Skipf("cannot set %s: %v", w.file, err)
		}
	}
	runtime.SetDefaultGOMAXPROCS()
	base := runtime.GOMAXPROCS(0)
	t.Logf("%d CPUs, CPU limit %.1f, the runtime's GOMAXPROCS %d", cpus, float64(quota)/period, base)

	var tuner procTuner
	got := 0
	for range 4 {
		got = tuner.add(1)
	}
	tuner.add(-4)
	if limit := float64(quota) / period; float64(got) > limit+0.5 {
		t.Errorf("four stores open under a CPU limit of %.1f CPUs (of %d): GOMAXPROCS %d, above the runtime's own %d; the extra Ps let the process use more CPU than its quota", limit, cpus, got, base)
	}
}
