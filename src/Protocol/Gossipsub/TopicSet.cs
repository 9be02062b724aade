namespace Potluck.Protocol.Gossipsub;

/// <summary>
/// The topics one peer subscribed to: a set of strings (ordinal), inline in the peer's state, that enumerates in exactly
/// the order a <see cref="HashSet{T}"/> of strings gives: slots in index order, a removed entry's slot reused by the next
/// add, the last freed first. The router's choices follow that order (a peer's removal walks its topics), so the same
/// order keeps the same runs. A peer holds a few topics and at most <see cref="GossipsubOptions.MaxTopicsPerPeer"/>, so a
/// lookup is a scan; one array of the topics' references (and, after a removal, a stack of free slots) is all it keeps,
/// where a <see cref="HashSet{T}"/> kept itself, its buckets and its entries (~250 bytes for six topics against ~90).
/// </summary>
internal struct TopicSet
{
    private string?[]? _slots;
    private int[]? _free;
    private int _used;
    private int _freeCount;

    public readonly int Count => _used - _freeCount;

    public readonly bool Contains(string topic) => IndexOf(topic) >= 0;

    /// <summary>Adds <paramref name="topic"/>; false when it is already there.</summary>
    public bool Add(string topic)
    {
        ArgumentNullException.ThrowIfNull(topic);
        if (IndexOf(topic) >= 0)
        {
            return false;
        }
        int index;
        if (_freeCount > 0)
        {
            index = _free![--_freeCount];
        }
        else
        {
            if (_slots is null || _used == _slots.Length)
            {
                Array.Resize(ref _slots, _slots is null ? 4 : _slots.Length * 2);
            }
            index = _used++;
        }
        _slots![index] = topic;
        return true;
    }

    /// <summary>Removes <paramref name="topic"/>; false when it was not there.</summary>
    public bool Remove(string topic)
    {
        var index = IndexOf(topic);
        if (index < 0)
        {
            return false;
        }
        _slots![index] = null;
        if (_free is null || _freeCount == _free.Length)
        {
            Array.Resize(ref _free, _free is null ? 2 : _free.Length * 2);
        }
        _free[_freeCount++] = index;
        return true;
    }

    private readonly int IndexOf(string topic)
    {
        for (var i = 0; i < _used; i++)
        {
            if (_slots![i] is { } t && string.Equals(t, topic, StringComparison.Ordinal))
            {
                return i;
            }
        }
        return -1;
    }

    public readonly Enumerator GetEnumerator() => new(_slots, _used);

    public struct Enumerator(string?[]? slots, int used)
    {
        private int _index = -1;

        public readonly string Current => slots![_index]!;

        public bool MoveNext()
        {
            while (++_index < used)
            {
                if (slots![_index] is not null)
                {
                    return true;
                }
            }
            return false;
        }
    }
}
