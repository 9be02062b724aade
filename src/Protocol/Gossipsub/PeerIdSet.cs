using System.Collections;
using Potluck.Protocol.Identity;

namespace Potluck.Protocol.Gossipsub;

/// <summary>
/// A set of peer ids (a topic's subscribers, a mesh, a fanout) that enumerates in exactly the order a
/// <see cref="HashSet{T}"/> of them gives: slots in index order, a removed member's slot reused by the next add, the last
/// freed first (as <see cref="TopicSet"/> does for topics). The router's choices follow that order (candidates are
/// shuffled from it, prunes walk it), so the same order keeps the same runs. It keeps one array of the members (8 bytes
/// each) and, while a removal has left a hole, a stack of the free slots, where a <see cref="HashSet{T}"/> kept itself (64 bytes), its
/// buckets (4 bytes a slot) and its entries (16 bytes a slot, slots a prime above the count): ~850 bytes for a topic of
/// 30 subscribers against ~300. Sets of up to 64 are scanned (a node's topic has at most its connections: 45 at most in
/// a 1,000-node mesh at cap 32, where an index of 32 cost ~1.2 KiB a node); above <see cref="IndexedAbove"/> members a dictionary from member
/// to slot is kept beside the array, so a daemon with hundreds of connections still looks a peer up in constant time.
/// Not thread-safe (the router is not). Adding to it or clearing it while enumerating throws; removing does not, as with a
/// <see cref="HashSet{T}"/>.
/// </summary>
internal sealed class PeerIdSet : IReadOnlyCollection<PeerId>
{
    /// <summary>Members above which lookups go through an index (dropped again at half of it).</summary>
    internal const int IndexedAbove = 64;

    private PeerId[]? _slots;
    private int[]? _free;
    private Dictionary<PeerId, int>? _index;
    private int _used;
    private int _freeCount;
    private int _version;

    public int Count => _used - _freeCount;

    /// <summary>For tests: whether lookups go through the index now.</summary>
    internal bool IsIndexed => _index is not null;

    /// <summary>For tests: the slots the members' array has (its length).</summary>
    internal int Capacity => _slots?.Length ?? 0;

    public bool Contains(PeerId peer) => IndexOf(peer) >= 0;

    /// <summary>Adds <paramref name="peer"/>; false when it is already there.</summary>
    public bool Add(PeerId peer)
    {
        if (peer.IsEmpty)
        {
            throw new ArgumentException("An empty peer id cannot be a member", nameof(peer));
        }
        if (IndexOf(peer) >= 0)
        {
            return false;
        }
        int index;
        if (_freeCount > 0)
        {
            index = _free![--_freeCount];
            if (_freeCount == 0)
            {
                _free = null; // no hole left: most sets spend most of their life without one
            }
        }
        else
        {
            if (_slots is null || _used == _slots.Length)
            {
                Array.Resize(ref _slots, _slots is null ? 4 : _slots.Length * 2);
            }
            index = _used++;
        }
        _slots![index] = peer;
        _version++;
        if (_index is not null)
        {
            _index.Add(peer, index);
        }
        else if (Count > IndexedAbove)
        {
            BuildIndex();
        }
        return true;
    }

    /// <summary>Removes <paramref name="peer"/>; false when it was not there.</summary>
    public bool Remove(PeerId peer)
    {
        var index = IndexOf(peer);
        if (index < 0)
        {
            return false;
        }
        RemoveAt(index);
        return true;
    }

    /// <summary>Removes every member <paramref name="match"/> says yes to, in slot order (as <see cref="HashSet{T}.RemoveWhere"/>); returns how many.</summary>
    public int RemoveWhere(Predicate<PeerId> match)
    {
        var removed = 0;
        for (var i = 0; i < _used; i++)
        {
            var p = _slots![i];
            if (!p.IsEmpty && match(p))
            {
                RemoveAt(i);
                removed++;
            }
        }
        return removed;
    }

    /// <summary>Empties the set and lets go of its arrays (a <see cref="HashSet{T}"/> after <c>Clear</c> enumerates in insertion order again, as this does).</summary>
    public void Clear()
    {
        _slots = null;
        _free = null;
        _index = null;
        _used = 0;
        _freeCount = 0;
        _version++;
    }

    private void RemoveAt(int index)
    {
        var peer = _slots![index];
        _slots[index] = default;
        _index?.Remove(peer);
        if (_free is null || _freeCount == _free.Length)
        {
            Array.Resize(ref _free, _free is null ? 2 : _free.Length * 2);
        }
        _free[_freeCount++] = index;
        if (_index is not null && Count <= IndexedAbove / 2)
        {
            _index = null;
        }
    }

    private void BuildIndex()
    {
        var index = new Dictionary<PeerId, int>(Count);
        for (var i = 0; i < _used; i++)
        {
            if (!_slots![i].IsEmpty)
            {
                index.Add(_slots[i], i);
            }
        }
        _index = index;
    }

    private int IndexOf(PeerId peer)
    {
        if (_index is not null)
        {
            return _index.TryGetValue(peer, out var i) ? i : -1;
        }
        if (peer.IsEmpty)
        {
            return -1;
        }
        for (var i = 0; i < _used; i++)
        {
            if (_slots![i] == peer)
            {
                return i;
            }
        }
        return -1;
    }

    public Enumerator GetEnumerator() => new(this);

    IEnumerator<PeerId> IEnumerable<PeerId>.GetEnumerator() => GetEnumerator();

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();

    public struct Enumerator : IEnumerator<PeerId>
    {
        private readonly PeerIdSet _set;
        private readonly int _version;
        private int _index;

        internal Enumerator(PeerIdSet set)
        {
            _set = set;
            _version = set._version;
            _index = -1;
        }

        public readonly PeerId Current => _set._slots![_index];

        readonly object IEnumerator.Current => Current;

        public bool MoveNext()
        {
            if (_version != _set._version)
            {
                throw new InvalidOperationException("The set was changed while it was enumerated");
            }
            while (++_index < _set._used)
            {
                if (!_set._slots![_index].IsEmpty)
                {
                    return true;
                }
            }
            return false;
        }

        public void Reset() => _index = -1;

        public readonly void Dispose()
        {
        }
    }
}
