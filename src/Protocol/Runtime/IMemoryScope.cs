namespace Potluck.Protocol.Runtime;

/// <summary>
/// Somewhere memory is reserved before it can be used (a muxer's receive windows reserve here): a reservation either
/// fits whole or is refused (and counted by whoever refuses it), and what was reserved is released by whoever reserved it.
/// </summary>
public interface IMemoryScope
{
    /// <summary>Reserves <paramref name="bytes"/> if they fit; false otherwise.</summary>
    bool TryReserve(long bytes);

    /// <summary>Returns <paramref name="bytes"/> reserved earlier.</summary>
    void Release(long bytes);

    /// <summary>A reservation was refused before it reached this scope (by the connection's own limit); counts it where refusals are counted.</summary>
    void CountConnectionRefusal()
    {
    }
}
