// Package bench is the benchmark of SPEC §9, run by `lattice bench`.
//
// Run starts N regions in this process (us-east, eu-west, ap-south, then
// region-4, region-5, …), each a real region server with its BuntDB file,
// replicating over QUIC with mutual TLS on 127.0.0.1 through the emulated
// WAN of sync/wan: the one-way latencies of `lattice dev` between the first
// three (34, 92 and 60 ms) and ExtraRegionLatency between any pair that
// involves a further region, optional loss, and an optional partition that
// cuts one region off from all the others for a while. With
// Config.Partitions P and Config.Nodes K every region runs K nodes, each
// owning a contiguous range of the P partitions (SPEC §10), all in this
// process; the workload's requests for a region go to its nodes in turn
// (RoundRobin), as through a load balancer, and a node forwards a request
// for another node's partition to it.
//
// The workload (Generate) is a pure function of a seed: Poisson arrivals at
// the target rate, each operation sent over HTTP to a region drawn at
// random. Cart adds, sets and removes go to many carts; restocks and
// reservations (hold, then commit or release) contend on a few hot skus,
// one homed at each region, half of the holds sent to the home and half to
// another region. With Config.Escrow each hot sku has an escrow twin homed
// at the same region (a homes rule with escrow: true), and half of the
// restocks and holds go to the twins: EscrowResult sets the two kinds side
// by side — latency of holds granted away from the home, where they were
// decided, refusals while stock was available elsewhere, oversold units. It runs open loop: each operation starts at its target
// time, or as soon after as one of a bounded number of request slots is
// free, however slow earlier answers are.
//
// What is measured:
//
//   - the HTTP latency of local writes (cart writes and restocks) and of
//     reservations sent to the home or elsewhere, as the client sees it;
//   - the convergence of every write, exactly: replication reports when a
//     write is durable at its origin (its acknowledgement) and when each
//     other region durably applies it, and Tracker pairs the two by the
//     write's region-level dot and partition (each partition numbers its
//     dots apart), per ordered pair of regions. A write that
//     reached a region by anti-entropy instead of a delta has no
//     application time; it is counted apart;
//   - the bytes between regions: replication protocol bytes (the regions'
//     lattice_replication_bytes_sent_total), against the ideal of (R−1)
//     times the writes' encoded deltas (lattice_replication_delta_bytes_total),
//     and UDP bytes (what the emulated WAN sent: QUIC framing, encryption,
//     acknowledgements and forwarded home requests included);
//   - correctness, after a settle period in which every region must hold
//     every write and show the same state: oversold units (CheckStock, on a
//     consistent read at each hot sku's home against the acknowledged
//     restocks and commits), lost cart writes (AddModel: carts that only
//     ever receive one-unit adds must hold every acknowledged add at every
//     region), and regions that did not converge (Divergence). Each must be
//     0.
//
// Result.Write writes results.json, summary.md and three PNG plots:
// the convergence CDF of every pair, and histograms of write and
// reservation latency.
package bench
