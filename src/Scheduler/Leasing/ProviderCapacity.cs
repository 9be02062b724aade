namespace Potluck.Scheduler.Leasing;

/// <summary>
/// Cores and memory a provider has advertised, and what live leases hold. A lease holds one core and its memory
/// limit from the moment it is offered until it ends, so a provider never runs more leases at once than it
/// advertised cores, nor more memory than it advertised. Not thread-safe: the shell serialises calls.
/// </summary>
public sealed class ProviderCapacity
{
    public ProviderCapacity(int cores, long memoryBytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(cores);
        ArgumentOutOfRangeException.ThrowIfNegative(memoryBytes);
        Cores = cores;
        MemoryBytes = memoryBytes;
    }

    public int Cores { get; private set; }

    public long MemoryBytes { get; private set; }

    /// <summary>Why no new lease is taken (the operator's preferences: machine in use, outside hours, on battery); null when open.</summary>
    public string? PausedBecause { get; private set; }

    public int CoresInUse { get; private set; }

    /// <summary>
    /// Cores requesters without standing (strangers, debtors) may hold at once: they are served only from capacity nobody
    /// in good standing is using, and preemptibly. Default: every core.
    /// </summary>
    public int StrangerCores { get; set; } = int.MaxValue;

    /// <summary>Cores held by leases of requesters without standing.</summary>
    public int StrangerCoresInUse { get; private set; }

    public long MemoryInUse { get; private set; }

    public int AvailableCores => PausedBecause is null ? Math.Max(0, Cores - CoresInUse) : 0;

    /// <summary>Stops (reason non-null) or resumes taking new leases; leases already held keep their core.</summary>
    public void Pause(string? reason) => PausedBecause = reason;

    /// <summary>Changes what is offered; leases already held keep theirs (in use may exceed the new offer until they end).</summary>
    public void Resize(int cores, long memoryBytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(cores);
        ArgumentOutOfRangeException.ThrowIfNegative(memoryBytes);
        Cores = cores;
        MemoryBytes = memoryBytes;
    }

    /// <summary>Most cores ever in use at once: for tests and metrics.</summary>
    public int PeakCoresInUse { get; private set; }

    /// <summary>Holds one core and <paramref name="memoryBytes"/>; false when either is short.</summary>
    public bool TryReserve(long memoryBytes, out CapacityReservation reservation) => TryReserve(memoryBytes, stranger: false, out reservation);

    /// <summary>
    /// Holds one core and <paramref name="memoryBytes"/> for a requester with (<paramref name="stranger"/> false) or without
    /// standing; false when either is short, or when a stranger would hold more than <see cref="StrangerCores"/>.
    /// </summary>
    public bool TryReserve(long memoryBytes, bool stranger, out CapacityReservation reservation)
    {
        reservation = null!;
        if (memoryBytes < 0 || PausedBecause is not null || CoresInUse >= Cores || memoryBytes > MemoryBytes - MemoryInUse
            || (stranger && StrangerCoresInUse >= StrangerCores))
        {
            return false;
        }
        CoresInUse++;
        MemoryInUse += memoryBytes;
        StrangerCoresInUse += stranger ? 1 : 0;
        PeakCoresInUse = Math.Max(PeakCoresInUse, CoresInUse);
        reservation = new CapacityReservation(this, memoryBytes, stranger);
        return true;
    }

    internal void Release(long memoryBytes, bool stranger)
    {
        CoresInUse--;
        MemoryInUse -= memoryBytes;
        StrangerCoresInUse -= stranger ? 1 : 0;
    }
}

/// <summary>One core and some memory held by a lease; released once, however often disposed.</summary>
public sealed class CapacityReservation : IDisposable
{
    private readonly ProviderCapacity _capacity;
    private readonly long _memory;

    internal CapacityReservation(ProviderCapacity capacity, long memory, bool stranger)
    {
        _capacity = capacity;
        _memory = memory;
        Stranger = stranger;
    }

    public bool IsReleased { get; private set; }

    /// <summary>Held for a requester without standing: counted against <see cref="ProviderCapacity.StrangerCores"/>, preemptible.</summary>
    public bool Stranger { get; }

    /// <summary>The memory held.</summary>
    public long MemoryBytes => _memory;

    public void Dispose()
    {
        if (!IsReleased)
        {
            IsReleased = true;
            _capacity.Release(_memory, Stranger);
        }
    }
}
