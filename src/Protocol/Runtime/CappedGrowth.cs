namespace Potluck.Protocol.Runtime;

/// <summary>
/// A dictionary that never holds more than a known number of entries grows as it would (3, 7, 17, 37, 89, 197, ...
/// slots), but its last step stops at that number's prime instead of doubling past it: a book capped at 256 ends with
/// 293 slots, not 431. Resizing keeps the entries' order, so what enumerates it sees the same sequence.
/// </summary>
public static class CappedGrowth
{
    /// <summary>
    /// Call before adding a key that <paramref name="dictionary"/> does not hold, when it never holds more than
    /// <paramref name="cap"/>: if it is full (its next add would double it), grows it to at most <paramref name="cap"/> now.
    /// </summary>
    public static void BeforeAdd<TKey, TValue>(Dictionary<TKey, TValue> dictionary, int cap)
        where TKey : notnull
    {
        var count = dictionary.Count;
        if (count > 0 && count == dictionary.Capacity && count < cap)
        {
            dictionary.EnsureCapacity(Math.Min(cap, 2 * count));
        }
    }
}
