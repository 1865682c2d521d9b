package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	k8syaml "sigs.k8s.io/yaml"

	"github.com/latticedb/lattice/region/config"
)

// TestServeNodes runs real `lattice serve` processes: a region's single
// node, listed or implicit, runs when --node names it (or is left out),
// and so does a single node of a cluster of several partitions; a node
// the region lacks, or a region of several nodes without --node, is
// refused at start with an error that says so, and nothing is written to
// the data directory.
func TestServeNodes(t *testing.T) {
	bin := buildLattice(t)

	type refusal struct {
		name, cfg string
		args      []string
		want      string
	}
	refusals := []refusal{
		{"several nodes without --node", "partitions: 2\nregions:\n  - name: us-east\n    nodes:\n" +
			"      - {name: n-0, api: \"127.0.0.1:1\", peer: \"127.0.0.1:2\", partitions: 0}\n" +
			"      - {name: n-1, api: \"127.0.0.1:3\", peer: \"127.0.0.1:4\", partitions: 1}\n",
			[]string{"--region", "us-east"}, "lattice serve: region us-east runs on 2 nodes (n-0, n-1): name the one to run with --node"},
		{"unknown node", "regions:\n  - name: us-east\n    nodes:\n      - {name: n-0, api: \"127.0.0.1:1\", peer: \"127.0.0.1:2\"}\n",
			[]string{"--region", "us-east", "--node", "n-9"}, `lattice serve: node "n-9" is not a node of region us-east (nodes: n-0)`},
		{"region name for a listed node", "regions:\n  - name: us-east\n    nodes:\n      - {name: n-0, api: \"127.0.0.1:1\", peer: \"127.0.0.1:2\"}\n",
			[]string{"--region", "us-east", "--node", "us-east"}, `lattice serve: node "us-east" is not a node of region us-east (nodes: n-0)`},
		{"bad node config", "regions:\n  - name: us-east\n    nodes:\n      - {name: N_0, api: \"127.0.0.1:1\", peer: \"127.0.0.1:2\"}\n",
			[]string{"--region", "us-east"}, `lattice serve: config: regions[0].nodes[0].name: "N_0" must be a DNS label`},
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := filepath.Join(dir, "lattice.yaml")
			if err := os.WriteFile(cfg, []byte("cluster: c\ndata_dir: ./data\n"+tc.cfg), 0o644); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			out, err := exec.CommandContext(ctx, bin, append([]string{"serve", "--config", cfg}, tc.args...)...).CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != exitFail {
				t.Fatalf("exit %v, want %d; output:\n%s", err, exitFail, out)
			}
			if !strings.Contains(string(out), tc.want) {
				t.Fatalf("output:\n%s\nwant it to contain %q", out, tc.want)
			}
			if _, err := os.Stat(filepath.Join(dir, "data")); !os.IsNotExist(err) {
				t.Errorf("a refused start wrote its data directory (%v)", err)
			}
		})
	}

	runs := []struct {
		name, regions string
		node          []string
	}{
		{"listed node", "  - name: us-east\n    nodes:\n      - {name: us-east-0, api: %q, peer: \"127.0.0.1:7201\"}\n", []string{"--node", "us-east-0"}},
		{"listed node, --node left out", "  - name: us-east\n    nodes:\n      - {name: us-east-0, api: %q, peer: \"127.0.0.1:7201\", partitions: 0}\n", nil},
		{"implicit node", "  - {name: us-east, api: %q, peer: \"127.0.0.1:7201\"}\n", []string{"--node", "us-east"}},
		{"one node of 4 partitions", "  - {name: us-east, api: %q, peer: \"127.0.0.1:7201\"}\n", nil},
	}
	for _, tc := range runs {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			addr := freeAddr(t)
			cfg := filepath.Join(dir, "lattice.yaml")
			partitions := 1
			if strings.Contains(tc.name, "partitions") {
				partitions = 4
			}
			doc := fmt.Sprintf("cluster: c\ndata_dir: ./data\npartitions: %d\nregions:\n", partitions) + fmt.Sprintf(tc.regions, addr)
			if err := os.WriteFile(cfg, []byte(doc), 0o644); err != nil {
				t.Fatal(err)
			}
			logPath := filepath.Join(dir, "serve.log")
			logf, err := os.Create(logPath)
			if err != nil {
				t.Fatal(err)
			}
			defer logf.Close()
			cmd := exec.Command(bin, append([]string{"serve", "--config", cfg, "--region", "us-east"}, tc.node...)...)
			cmd.Stdout, cmd.Stderr = logf, logf
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan int, 1)
			done := make(chan struct{})
			go func() {
				_ = cmd.Wait()
				exited <- cmd.ProcessState.ExitCode()
				close(done)
			}()
			t.Cleanup(func() {
				select {
				case <-done:
				default:
					_ = cmd.Process.Kill()
					<-done
				}
			})
			base := "http://" + addr
			waitReady(t, base, exited)
			res, err := http.Post(base+"/v1/carts/c1/items", "application/json", strings.NewReader(`{"sku":"book","qty":2}`))
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode/100 != 2 {
				t.Fatalf("add: status %d", res.StatusCode)
			}
			if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			select {
			case code := <-exited:
				if code != 0 {
					b, _ := os.ReadFile(logPath)
					t.Fatalf("exit %d after SIGTERM:\n%s", code, b)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("no exit 30 s after SIGTERM")
			}
			want := filepath.Join(dir, "data", "us-east", "data.db")
			if partitions > 1 {
				want = filepath.Join(dir, "data", "us-east", "p0003", "data.db")
			}
			if _, err := os.Stat(want); err != nil {
				t.Errorf("the node keeps its store in data_dir/REGION (a partition's in data_dir/REGION/pNNNN): %v", err)
			}
		})
	}
}

// k8sEnvRef matches a $(VAR) reference of a Kubernetes container's args.
var k8sEnvRef = regexp.MustCompile(`\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// TestDeployedServeArguments checks that every container the Kubernetes
// manifests in deploy/kubernetes run would start under this version: its
// arguments, with $(POD_NAME) expanded for each pod of its StatefulSet,
// parse with lattice serve's own flags; the config it reads (the
// ConfigMap mounted where --config points) loads; --region and --node
// name a region and one of its nodes this version runs (checkNode, as at
// start); and the container's ports are that node's api and peer ports.
func TestDeployedServeArguments(t *testing.T) {
	dir := filepath.Join("..", "..", "deploy", "kubernetes")
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) < 2 {
		t.Fatalf("manifests %v: %v", files, err)
	}
	configMaps := map[string]*corev1.ConfigMap{}
	var sets []*appsv1.StatefulSet
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, doc := range bytes.Split(b, []byte("\n---\n")) {
			var head struct{ Kind string }
			if err := k8syaml.Unmarshal(doc, &head); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			switch head.Kind {
			case "ConfigMap":
				var cm corev1.ConfigMap
				if err := k8syaml.Unmarshal(doc, &cm); err != nil {
					t.Fatalf("%s: %v", f, err)
				}
				configMaps[cm.Name] = &cm
			case "StatefulSet":
				var sts appsv1.StatefulSet
				if err := k8syaml.Unmarshal(doc, &sts); err != nil {
					t.Fatalf("%s: %v", f, err)
				}
				sets = append(sets, &sts)
			}
		}
	}
	if len(sets) == 0 {
		t.Fatal("no StatefulSet in deploy/kubernetes")
	}
	pods := 0
	for _, sts := range sets {
		spec := sts.Spec.Template.Spec
		volumes := map[string]corev1.Volume{}
		for _, v := range spec.Volumes {
			volumes[v.Name] = v
		}
		for _, c := range spec.Containers {
			for i := range int(*sts.Spec.Replicas) {
				pod := fmt.Sprintf("%s-%d", sts.Name, i)
				t.Run(pod+"/"+c.Name, func(t *testing.T) {
					env := map[string]string{}
					for _, e := range c.Env {
						switch {
						case e.ValueFrom == nil:
							env[e.Name] = e.Value
						case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.name":
							env[e.Name] = pod
						}
					}
					args := make([]string, len(c.Args))
					for k, a := range c.Args {
						args[k] = k8sEnvRef.ReplaceAllStringFunc(a, func(m string) string {
							if m == "$$" {
								return "$"
							}
							v, ok := env[m[2:len(m)-1]]
							if !ok {
								t.Errorf("argument %q refers to an unset variable %s", a, m)
							}
							return v
						})
					}
					// The cluster config the container reads: a ConfigMap
					// mounted at the directory --config names.
					mounted := func(path string) string {
						for _, m := range c.VolumeMounts {
							if filepath.Dir(path) == filepath.Clean(m.MountPath) {
								if v := volumes[m.Name]; v.ConfigMap != nil && configMaps[v.ConfigMap.Name] != nil {
									return configMaps[v.ConfigMap.Name].Data[filepath.Base(path)]
								}
							}
						}
						return ""
					}
					ports := map[string]int32{}
					for _, p := range c.Ports {
						ports[p.Name] = p.ContainerPort
					}
					checkServeArgs(t, args, mounted, ports)
				})
				pods++
			}
		}
	}
	if pods < 3 {
		t.Errorf("%d pods checked", pods)
	}
}

// TestComposeServeArguments checks deploy/compose/compose.yaml as
// TestDeployedServeArguments checks the Kubernetes manifests: every
// service's command parses with lattice serve's flags, the config file
// mounted where --config points loads, this version runs the region and
// node it names (the service is named after its node), the published
// container port is its api port, and every node of the config has its
// service.
func TestComposeServeArguments(t *testing.T) {
	dir := filepath.Join("..", "..", "deploy", "compose")
	b, err := os.ReadFile(filepath.Join(dir, "compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Services map[string]struct {
			Command []string `json:"command"`
			Ports   []string `json:"ports"`
			Volumes []string `json:"volumes"`
		} `json:"services"`
	}
	if err := k8syaml.Unmarshal(b, &file); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(filepath.Join(dir, "lattice.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	want := 0
	for _, r := range cfg.RegionNames() {
		for _, n := range cfg.Nodes(r) {
			want++
			if _, ok := file.Services[n.Name]; !ok {
				t.Errorf("node %s of region %s has no service", n.Name, r)
			}
		}
	}
	if len(file.Services) != want {
		t.Errorf("%d services, want one per node of the config (%d)", len(file.Services), want)
	}
	for name, svc := range file.Services {
		t.Run(name, func(t *testing.T) {
			if n := argValue(svc.Command, "--node"); n != name {
				t.Errorf("service %s runs node %q", name, n)
			}
			ports := map[string]int32{}
			for _, p := range svc.Ports {
				n, err := strconv.Atoi(p[strings.LastIndex(p, ":")+1:])
				if err != nil {
					t.Fatalf("port %q: %v", p, err)
				}
				ports["api"] = int32(n)
			}
			configText := func(path string) string {
				for _, v := range svc.Volumes {
					parts := strings.Split(v, ":")
					if len(parts) >= 2 && parts[1] == path && strings.HasPrefix(parts[0], "./") {
						b, err := os.ReadFile(filepath.Join(dir, parts[0]))
						if err != nil {
							t.Fatal(err)
						}
						return string(b)
					}
				}
				return ""
			}
			checkServeArgs(t, svc.Command, configText, ports)
		})
	}
}

// argValue returns the value after flag in args ("" if absent).
func argValue(args []string, flag string) string {
	for i, a := range args {
		if a == flag && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

// checkServeArgs parses the command line of a deployed container with
// lattice serve's flags, loads the config it names (its text from
// configText), and checks that the region and node it runs are runnable
// by this version and listen on the ports it declares (ports["api"],
// required, and ports["peer"]).
func checkServeArgs(t *testing.T, args []string, configText func(path string) string, ports map[string]int32) {
	t.Helper()
	if len(args) == 0 || args[0] != "serve" {
		t.Fatalf("args %q: want lattice serve", args)
	}
	var stderr syncBuffer
	sa, status := parseServeArgs(cmdIO{stdout: io.Discard, stderr: &stderr}, args[1:])
	if sa == nil {
		t.Fatalf("args %q: exit %d: %s", args, status, stderr.String())
	}
	if _, err := newLogger(io.Discard, sa.level, sa.format); err != nil {
		t.Errorf("args %q: %v", args, err)
	}
	text := configText(sa.config)
	if text == "" {
		t.Fatalf("--config %s: no config is mounted there", sa.config)
	}
	path := filepath.Join(t.TempDir(), filepath.Base(sa.config))
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatalf("--config %s: %v", sa.config, err)
	}
	if _, ok := cfg.Region(sa.region); !ok {
		t.Fatalf("--region %q is not a region of the config", sa.region)
	}
	if err := checkNode(cfg, sa.region, sa.node); err != nil {
		t.Fatalf("this version would refuse to start: %v", err)
	}
	node := cfg.Nodes(sa.region)[0]
	if sa.node != "" {
		node, _ = cfg.Node(sa.region, sa.node)
	}
	if _, ok := ports["api"]; !ok {
		t.Errorf("the container declares no api port")
	}
	for name, addr := range map[string]string{"api": node.API, "peer": node.Peer} {
		if _, ok := ports[name]; !ok {
			continue
		}
		_, p, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatal(err)
		}
		if want, _ := strconv.Atoi(p); ports[name] != int32(want) {
			t.Errorf("node %s listens for %s on %s; the container's %s port is %d", node.Name, name, addr, name, ports[name])
		}
	}
}
