namespace Potluck.Protocol.Runtime;

/// <summary>
/// A count of bytes reserved against a limit, shared by everything that reserves from it (the resource manager's
/// memory scope: every muxed connection's receive windows reserve here). Thread-safe; a reservation either fits whole
/// or is refused, and what was reserved is released by whoever reserved it.
/// </summary>
public sealed class MemoryBudget : IMemoryScope
{
    private long _reserved;
    private long _refused;

    public MemoryBudget(long limit, string scope)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(limit);
        Limit = limit;
        Scope = scope;
    }

    /// <summary>What the budget is for, e.g. "muxer memory"; names the scope in a <see cref="ResourceLimitException"/>.</summary>
    public string Scope { get; }

    public long Limit { get; }

    public long Reserved => Interlocked.Read(ref _reserved);

    /// <summary>Reservations refused so far (for metrics).</summary>
    public long Refused => Interlocked.Read(ref _refused);

    /// <summary>Reserves <paramref name="bytes"/> if they fit; false (and counted) otherwise.</summary>
    public bool TryReserve(long bytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bytes);
        while (true)
        {
            var current = Interlocked.Read(ref _reserved);
            if (current + bytes > Limit)
            {
                Interlocked.Increment(ref _refused);
                return false;
            }
            if (Interlocked.CompareExchange(ref _reserved, current + bytes, current) == current)
            {
                return true;
            }
        }
    }

    /// <summary>Returns <paramref name="bytes"/> reserved earlier.</summary>
    public void Release(long bytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bytes);
        var after = Interlocked.Add(ref _reserved, -bytes);
        if (after < 0)
        {
            throw new InvalidOperationException($"{Scope}: released more than was reserved ({after})");
        }
    }
}
