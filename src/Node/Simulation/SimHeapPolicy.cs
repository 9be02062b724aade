using System.Globalization;

namespace Potluck.Node.Simulation;

/// <summary>
/// The harness's cap on how far the managed heap grows past what the last full collection left alive (README "Simulated
/// meshes" → "The heap's gap at scale", stop 37). At scale the runtime lets gen2 grow by about a third of the live heap
/// between its own full collections (10,000 nodes: 3,481 MiB live, 4,729 MiB before the next), and the peak resident set
/// is that high-water mark. <see cref="Check"/> runs on the loop between two moments of virtual time
/// (<see cref="Protocol.Runtime.VirtualTimeDriver.BetweenMoments"/>): when the heap after the latest collection is more
/// than <see cref="Growth"/> (or <see cref="FloorBytes"/>, whichever is more) above the live heap after the latest full
/// one, it asks for a blocking, compacting full collection; and the harness asks for one at the warm-up's end
/// (<see cref="CollectNow"/>), where the live set shrinks. A collection moves no simulated event (nothing of the run
/// runs meanwhile and no node's code sees the heap, as with the runtime's own collections, which fall anywhere), so the
/// run and its trace are the same with it and without it; it costs CPU.
/// </summary>
public sealed class SimHeapPolicy
{
    /// <summary>What the policy reads from and asks of the GC (a fake in tests).</summary>
    public interface IGauge
    {
        /// <summary>Collections of any generation so far (gen0's count).</summary>
        int Collections { get; }

        /// <summary>Full collections so far (gen2's count).</summary>
        int FullCollections { get; }

        /// <summary>The heap's size after the latest collection of any kind, bytes.</summary>
        long HeapAfterLatest { get; }

        /// <summary>The heap's size after the latest full collection, bytes.</summary>
        long HeapAfterLatestFull { get; }

        /// <summary>A blocking, compacting full collection now.</summary>
        void CollectFull();
    }

    private readonly IGauge _gc;
    private int _seen = -1;
    private int _seenFull = -1;
    private long _live;

    /// <param name="growth">How far above the last full collection's live heap the heap may grow, as a fraction (0.2: 20 %).</param>
    /// <param name="floorBytes">The least growth allowed whatever the live heap (so a small heap is not collected over and over).</param>
    /// <param name="gauge">The GC (null: the runtime's).</param>
    public SimHeapPolicy(double growth, long floorBytes = DefaultFloorBytes, IGauge? gauge = null)
    {
        if (!(growth > 0 && growth <= 10))
        {
            throw new ArgumentOutOfRangeException(nameof(growth), growth, "must be above 0 and at most 10");
        }
        ArgumentOutOfRangeException.ThrowIfNegative(floorBytes);
        Growth = growth;
        FloorBytes = floorBytes;
        _gc = gauge ?? RuntimeGauge.Instance;
    }

    /// <summary>64 MiB: the gen0 budget <c>potluck sim</c> runs with, so gen1's churn alone never triggers.</summary>
    public const long DefaultFloorBytes = 64L << 20;

    /// <summary>The growth allowed, as a fraction of the live heap.</summary>
    public double Growth { get; }

    /// <summary>The least growth allowed, bytes.</summary>
    public long FloorBytes { get; }

    /// <summary>Full collections this policy asked for.</summary>
    public int Induced { get; private set; }

    /// <summary>The live heap after the latest full collection (the runtime's or this policy's), bytes; 0 before any.</summary>
    public long Live => _live;

    /// <summary>
    /// True when a heap of <paramref name="heap"/> bytes is past the allowance over <paramref name="live"/> bytes (0 before
    /// any full collection: then the floor alone, so the first full collection sets a baseline).
    /// </summary>
    public static bool Over(long heap, long live, double growth, long floorBytes) =>
        heap - live > Math.Max((long)(live * growth), floorBytes);

    /// <summary>
    /// Looks once (cheap unless a collection happened since the last look) and collects when the heap is over its allowance.
    /// Call between two moments of virtual time, on the loop.
    /// </summary>
    public void Check()
    {
        var collections = _gc.Collections;
        if (collections == _seen)
        {
            return;
        }
        _seen = collections;
        var full = _gc.FullCollections;
        if (full != _seenFull)
        {
            _seenFull = full;
            _live = _gc.HeapAfterLatestFull;
            return;
        }
        if (Over(_gc.HeapAfterLatest, _live, Growth, FloorBytes))
        {
            CollectNow();
        }
    }

    /// <summary>
    /// A full collection now, its live heap the new baseline: the harness calls it where the run's live set has just
    /// changed size (the warm-up's end), so that gen2 is held against what is alive now.
    /// </summary>
    public void CollectNow()
    {
        _gc.CollectFull();
        Induced++;
        _seen = _gc.Collections;
        _seenFull = _gc.FullCollections;
        _live = _gc.HeapAfterLatestFull;
    }

    /// <summary>For the report's runtime line.</summary>
    public string Describe() => string.Create(CultureInfo.InvariantCulture,
        $"gen2 held to +{Growth * 100:0.#} % of the last full GC's live heap (at least {FloorBytes >> 20} MiB; {Induced} full GCs induced)");

    private sealed class RuntimeGauge : IGauge
    {
        public static readonly RuntimeGauge Instance = new();

        public int Collections => GC.CollectionCount(0);

        public int FullCollections => GC.CollectionCount(2);

        public long HeapAfterLatest => GC.GetGCMemoryInfo(GCKind.Any).HeapSizeBytes;

        public long HeapAfterLatestFull
        {
            get
            {
                // potluck sim runs without the background GC (batch latency), so its full collections are blocking ones.
                var blocking = GC.GetGCMemoryInfo(GCKind.FullBlocking);
                var background = GC.GetGCMemoryInfo(GCKind.Background);
                return background.Index > blocking.Index ? background.HeapSizeBytes : blocking.HeapSizeBytes;
            }
        }

        public void CollectFull() => GC.Collect(2, GCCollectionMode.Forced, blocking: true, compacting: true);
    }
}
