using System.Globalization;

namespace Potluck.Node.Simulation;

/// <summary>
/// Where a simulation's memory is at one moment, without forcing a collection: the process's resident set (from
/// <c>/proc/self/status</c> where there is one), what the GC has committed and what the heap held after its last
/// collection, what SQLite's allocator holds (every in-memory database, page cache and statement of every node), and,
/// with glibc, what the C allocator (<c>malloc</c>: SQLite, Wasmtime, the runtime's own native parts) has in use and
/// holds free in its arenas (<see cref="NativeHeap"/>; NaN elsewhere).
/// </summary>
public readonly record struct SimMemory(double RssMib, double GcCommittedMib, double GcHeapMib, double GcFragmentedMib, double SqliteMib,
    double MallocInUseMib = double.NaN, double MallocFreeMib = double.NaN, long SqliteAllocations = -1)
{
    private const double Mib = 1024 * 1024;

    /// <summary>Reads the figures now.</summary>
    public static SimMemory Now()
    {
        Scheduler.Storage.SqliteMemory.EnsureNative(); // a mesh whose stores hold no connection yet has opened none
        var gc = GC.GetGCMemoryInfo();
        using var self = System.Diagnostics.Process.GetCurrentProcess();
        var malloc = NativeHeap.Read();
        return new SimMemory(self.WorkingSet64 / Mib, gc.TotalCommittedBytes / Mib, gc.HeapSizeBytes / Mib,
            gc.FragmentedBytes / Mib, SQLitePCL.raw.sqlite3_memory_used() / Mib,
            malloc is { } m ? m.InUse / Mib : double.NaN, malloc is { } f ? f.Free / Mib : double.NaN,
            SQLitePCL.raw.sqlite3_status(SQLitePCL.raw.SQLITE_STATUS_MALLOC_COUNT, out var count, out _, 0) == SQLitePCL.raw.SQLITE_OK ? count : -1);
    }

    /// <summary>One line: the figures and each per node.</summary>
    public string Describe(int nodes, string when) => string.Create(CultureInfo.InvariantCulture,
        $"memory {when}: RSS {RssMib:F0} MiB ({RssMib * 1024 / nodes:F0} KiB per node), GC committed {GcCommittedMib:F0} MiB ({GcCommittedMib * 1024 / nodes:F0} KiB), "
        + $"heap at last GC {GcHeapMib:F0} MiB ({GcHeapMib * 1024 / nodes:F0} KiB; {GcFragmentedMib:F0} MiB fragmented), SQLite {SqliteMib:F1} MiB ({SqliteMib * 1024 / nodes:F0} KiB, {SqliteAllocations / (double)nodes:F0} allocations)")
        + (double.IsNaN(MallocInUseMib) ? "" : string.Create(CultureInfo.InvariantCulture,
            $", malloc in use {MallocInUseMib:F0} MiB ({MallocInUseMib * 1024 / nodes:F0} KiB per node), free in its arenas {MallocFreeMib:F0} MiB"));
}

/// <summary>
/// glibc's allocator totals over all its arenas (<c>mallinfo2</c>, glibc 2.33 and later): bytes in use (allocated
/// chunks, mmapped ones included) and bytes it holds free (freed chunks it keeps in its arenas: resident where touched
/// and not trimmed). Null where there is no glibc or no <c>mallinfo2</c>.
/// </summary>
internal static class NativeHeap
{
    public readonly record struct Totals(long InUse, long Free);

    public static Totals? Read()
    {
        if (!OperatingSystem.IsLinux())
        {
            return null;
        }
        try
        {
            var info = MallInfo2();
            return new Totals((long)(info.Uordblks + info.Hblkhd), (long)info.Fordblks);
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return null;
        }
    }

    /// <summary>
    /// Hands the pages glibc holds free back to the kernel (<c>malloc_trim(0)</c>: the top of every arena and every whole
    /// free page inside one, by <c>madvise</c>); false where there is no glibc. The allocator's state is otherwise as
    /// before: nothing allocated moves and no allocation fails for it.
    /// </summary>
    public static bool Trim()
    {
        if (!OperatingSystem.IsLinux())
        {
            return false;
        }
        try
        {
            _ = MallocTrim(0);
            return true;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return false;
        }
    }

    /// <summary>
    /// Trims (<see cref="Trim"/>) every <paramref name="every"/> of wall time until disposed; null where there is no glibc.
    /// The wall clock is right here: the trim is the process's housekeeping, outside any node and any simulated time.
    /// </summary>
    public static IDisposable? StartTrimming(TimeSpan every)
    {
        if (every <= TimeSpan.Zero || !Trim())
        {
            return null;
        }
        return new Timer(_ => Trim(), null, every, every);
    }

    [System.Runtime.InteropServices.StructLayout(System.Runtime.InteropServices.LayoutKind.Sequential)]
    private struct MallInfo2Struct
    {
        public nuint Arena;     // non-mmapped space allocated (bytes)
        public nuint Ordblks;   // free chunks
        public nuint Smblks;    // free fastbin blocks
        public nuint Hblks;     // mmapped regions
        public nuint Hblkhd;    // space in mmapped regions (bytes)
        public nuint Usmblks;   // unused
        public nuint Fsmblks;   // space in freed fastbin blocks (bytes)
        public nuint Uordblks;  // total allocated space (bytes)
        public nuint Fordblks;  // total free space (bytes)
        public nuint Keepcost;  // top-most, releasable space (bytes)
    }

#pragma warning disable SYSLIB1054 // LibraryImport generates unsafe code, which this project does not allow.
    [System.Runtime.InteropServices.DllImport("libc.so.6", EntryPoint = "mallinfo2")]
    private static extern MallInfo2Struct MallInfo2();

    [System.Runtime.InteropServices.DllImport("libc.so.6", EntryPoint = "malloc_trim")]
    private static extern int MallocTrim(nuint pad);
#pragma warning restore SYSLIB1054
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
