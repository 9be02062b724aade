using System.Globalization;

namespace Potluck.Node.Simulation;

/// <summary>
/// Where a simulation's memory is at one moment, without forcing a collection: the process's resident set (from
/// <c>/proc/self/status</c> where there is one), what the GC has committed and what the heap held after its last
/// collection, and what SQLite's allocator holds (every in-memory database, page cache and statement of every node).
/// </summary>
public readonly record struct SimMemory(double RssMib, double GcCommittedMib, double GcHeapMib, double GcFragmentedMib, double SqliteMib)
{
    private const double Mib = 1024 * 1024;

    /// <summary>Reads the figures now.</summary>
    public static SimMemory Now()
    {
        var gc = GC.GetGCMemoryInfo();
        using var self = System.Diagnostics.Process.GetCurrentProcess();
        return new SimMemory(self.WorkingSet64 / Mib, gc.TotalCommittedBytes / Mib, gc.HeapSizeBytes / Mib,
            gc.FragmentedBytes / Mib, SQLitePCL.raw.sqlite3_memory_used() / Mib);
    }

    /// <summary>One line: the figures and each per node.</summary>
    public string Describe(int nodes, string when) => string.Create(CultureInfo.InvariantCulture,
        $"memory {when}: RSS {RssMib:F0} MiB ({RssMib * 1024 / nodes:F0} KiB per node), GC committed {GcCommittedMib:F0} MiB ({GcCommittedMib * 1024 / nodes:F0} KiB), "
        + $"heap at last GC {GcHeapMib:F0} MiB ({GcHeapMib * 1024 / nodes:F0} KiB; {GcFragmentedMib:F0} MiB fragmented), SQLite {SqliteMib:F1} MiB ({SqliteMib * 1024 / nodes:F0} KiB)");
}

/// <summary>
/// Open connection ends over the nodes that are up (<see cref="SimulatedMesh.CountConnectionEnds"/>): a connection between
/// two nodes is two ends. <paramref name="Young"/>: ends still in their node's trim grace period; <paramref name="Protected"/>:
/// ends to a peer the node protects (gossip's mesh peers); <paramref name="OverCap"/>: nodes holding more than their high watermark.
/// Gossip's meshes, summed over the nodes: <paramref name="MeshTopics"/> meshes (one per topic a node is in),
/// <paramref name="MeshMemberships"/> mesh places, <paramref name="MeshPeers"/> distinct mesh peers per node, and
/// <paramref name="MeshPeersInOneMesh"/> of those in exactly one of their node's meshes.
/// </summary>
public readonly record struct ConnectionEndCensus(int Nodes, long Ends, int Max, long Young, long Protected, int OverCap,
    long MeshTopics = 0, long MeshMemberships = 0, long MeshPeers = 0, long MeshPeersInOneMesh = 0)
{
    /// <summary>Ends per node that is up.</summary>
    public double PerNode => Nodes == 0 ? 0 : (double)Ends / Nodes;

    /// <summary>One line: the figures, per node where it helps.</summary>
    public string Describe(string when) => string.Create(CultureInfo.InvariantCulture,
        $"connection ends {when}: {Ends} ({PerNode:F1} per node, most {Max}); {Young} in their grace period, {Protected} to protected peers; {OverCap}/{Nodes} nodes above their high watermark; "
        + $"meshes per node {PerNodeOf(MeshTopics):F1}, mesh places {PerNodeOf(MeshMemberships):F1}, distinct mesh peers {PerNodeOf(MeshPeers):F1} ({PerNodeOf(MeshPeersInOneMesh):F1} in one mesh only)");

    /// <summary>A sum over the nodes, per node that is up.</summary>
    public double PerNodeOf(long total) => Nodes == 0 ? 0 : (double)total / Nodes;
}

/// <summary>
/// What the nodes that are up remember of other peers (<see cref="SimulatedMesh.CountPerPeerState"/>), summed over the
/// nodes with the largest one node holds: peer store entries and the public keys among them, DHT routing-table entries,
/// gossip score entries, per-peer budgets, peers speaking gossipsub with the node, and live advertisements held.
/// These are the tables that can grow with the number of nodes in the mesh rather than with a node's connections.
/// </summary>
public readonly record struct PerPeerCensus(int Nodes, long PeerStore, int PeerStoreMax, long PublicKeys, long RoutingTable, int RoutingTableMax,
    long GossipScores, long Budgets, long GossipPeers, long Advertisements, int AdvertisementsMax)
{
    private double Per(long total) => Nodes == 0 ? 0 : (double)total / Nodes;

    /// <summary>One line, per node (most in brackets).</summary>
    public string Describe(string when) => string.Create(CultureInfo.InvariantCulture,
        $"per-peer state {when}, per node: peer store {Per(PeerStore):F1} (most {PeerStoreMax}), public keys {Per(PublicKeys):F1}, "
        + $"routing table {Per(RoutingTable):F1} (most {RoutingTableMax}), gossip scores {Per(GossipScores):F1}, budgets {Per(Budgets):F1}, "
        + $"gossip peers {Per(GossipPeers):F1}, advertisements {Per(Advertisements):F1} (most {AdvertisementsMax}) over {Nodes} nodes");
}
