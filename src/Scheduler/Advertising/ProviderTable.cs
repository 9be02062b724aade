using System.Numerics;
using Potluck.Protocol.Identity;

namespace Potluck.Scheduler.Advertising;

/// <summary>
/// The advertisement book's table (<see cref="AdvertisementBook"/>): each held provider's advertisement, keyed by
/// <see cref="VerifiedAdvertisement.Provider"/>, enumerated in exactly the order the
/// <c>Dictionary&lt;PeerId, VerifiedAdvertisement&gt;</c> it replaces gave (slots in index order, a replaced
/// provider's advertisement in its own slot, a removed provider's slot reused by the next add, the last freed first):
/// the book's choices follow that order (which stranger makes way is a seeded draw over it), so the same order keeps
/// the same runs. One array of the advertisements (8 bytes a slot, grown by doubling to the book's cap and never past
/// it) and an open-addressing index of slot numbers (4 bytes, twice the slots; linear probing, backward-shift deletion),
/// where the dictionary spent 24 bytes an entry and 4 a bucket over a prime above the count (293 slots, ≈ 8.2 KiB, at
/// the cap of 256, against ≈ 4.1 KiB here). Every node of a simulated mesh keeps one (the advertisements themselves are
/// shared between nodes: <see cref="Protocol.Runtime.SharedValues"/>), so at 10,000 nodes, with 1,000 providers and
/// every book at its cap, this is the book's whole per-node cost. Not thread-safe (the book is not); adding to it while
/// enumerating throws, as with a dictionary.
/// </summary>
internal sealed class ProviderTable
{
    private readonly int _cap;
    private VerifiedAdvertisement?[] _slots = [];
    /// <summary>Slot number + 1 of the provider hashed here (linear probing); 0: empty. Length a power of two, twice the slots'.</summary>
    private int[] _index = [];
    /// <summary>Slots freed by removals, the last freed on top (null while there is no hole).</summary>
    private int[]? _free;
    private int _freeCount;
    private int _used;
    private int _version;

    /// <param name="cap">The most entries it holds at once (the book's <see cref="AdvertisementOptions.MaxProviders"/>): the array stops growing there.</param>
    public ProviderTable(int cap)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(cap, 1);
        _cap = cap;
    }

    public int Count => _used - _freeCount;

    /// <summary>Slots of the advertisements' array (for tests and diagnostics).</summary>
    public int Capacity => _slots.Length;

    /// <summary>Bytes of the two arrays and the free stack, headers included (for tests and diagnostics).</summary>
    internal int ArrayBytes => Bytes(_slots.Length, 8) + Bytes(_index.Length, 4) + (_free is null ? 0 : Bytes(_free.Length, 4));

    private static int Bytes(int length, int each) => length == 0 ? 0 : 24 + ((length * each + 7) & ~7);

    public bool ContainsKey(PeerId provider) => Find(provider) >= 0;

    public bool TryGetValue(PeerId provider, out VerifiedAdvertisement ad)
    {
        var at = Find(provider);
        if (at < 0)
        {
            ad = null!;
            return false;
        }
        ad = _slots[_index[at] - 1]!;
        return true;
    }

    /// <summary>Stores <paramref name="ad"/> as its provider's: in the provider's slot when held, else in a new one.</summary>
    public void Set(VerifiedAdvertisement ad)
    {
        var at = Find(ad.Provider);
        if (at >= 0)
        {
            _slots[_index[at] - 1] = ad; // a dictionary's indexer overwrites in place: same slot, same order, no version change
            return;
        }
        int slot;
        if (_freeCount > 0)
        {
            slot = _free![--_freeCount];
            if (_freeCount == 0)
            {
                _free = null;
            }
        }
        else
        {
            if (_used == _slots.Length)
            {
                Grow();
            }
            slot = _used++;
        }
        _slots[slot] = ad;
        Place(ad.Provider, slot);
        _version++;
    }

    /// <summary>Removes the provider's entry; false when it is not held.</summary>
    public bool Remove(PeerId provider)
    {
        var at = Find(provider);
        if (at < 0)
        {
            return false;
        }
        var slot = _index[at] - 1;
        _slots[slot] = null;
        Unplace(at);
        if (_free is null || _freeCount == _free.Length)
        {
            Array.Resize(ref _free, _free is null ? 4 : _free.Length * 2);
        }
        _free[_freeCount++] = slot;
        return true;
    }

    public Enumerator GetEnumerator() => new(this);

    /// <summary>The entries in slot order, as (provider, advertisement) pairs.</summary>
    public struct Enumerator
    {
        private readonly ProviderTable _table;
        private readonly int _version;
        private int _at;

        internal Enumerator(ProviderTable table)
        {
            _table = table;
            _version = table._version;
            _at = -1;
        }

        public readonly KeyValuePair<PeerId, VerifiedAdvertisement> Current
        {
            get
            {
                var ad = _table._slots[_at]!;
                return new(ad.Provider, ad);
            }
        }

        public bool MoveNext()
        {
            if (_version != _table._version)
            {
                throw new InvalidOperationException("The provider table was added to while it was being enumerated");
            }
            while (++_at < _table._used)
            {
                if (_table._slots[_at] is not null)
                {
                    return true;
                }
            }
            return false;
        }
    }

    private void Grow()
    {
        var length = _slots.Length == 0 ? Math.Min(4, _cap) : _slots.Length * 2;
        if (_slots.Length < _cap)
        {
            length = Math.Min(length, _cap);
        }
        Array.Resize(ref _slots, length);
        _index = new int[(int)BitOperations.RoundUpToPowerOf2((uint)length * 2)];
        for (var slot = 0; slot < _used; slot++)
        {
            if (_slots[slot] is { } ad)
            {
                Place(ad.Provider, slot);
            }
        }
    }

    private int Home(PeerId provider) => provider.GetHashCode() & (_index.Length - 1);

    /// <summary>Where in the index the provider is, or −1.</summary>
    private int Find(PeerId provider)
    {
        if (_index.Length == 0 || provider.IsEmpty)
        {
            return -1;
        }
        var mask = _index.Length - 1;
        for (var at = Home(provider); ; at = (at + 1) & mask)
        {
            var entry = _index[at];
            if (entry == 0)
            {
                return -1;
            }
            if (_slots[entry - 1]!.Provider.Equals(provider))
            {
                return at;
            }
        }
    }

    private void Place(PeerId provider, int slot)
    {
        var mask = _index.Length - 1;
        var at = Home(provider);
        while (_index[at] != 0)
        {
            at = (at + 1) & mask;
        }
        _index[at] = slot + 1;
    }

    /// <summary>Empties index position <paramref name="at"/>, shifting later entries of its run back (Knuth's algorithm R): no tombstones.</summary>
    private void Unplace(int at)
    {
        var mask = _index.Length - 1;
        var hole = at;
        for (var next = (hole + 1) & mask; _index[next] != 0; next = (next + 1) & mask)
        {
            var home = Home(_slots[_index[next] - 1]!.Provider);
            // The entry at next may fill the hole unless its home lies cyclically in (hole, next].
            var stays = hole <= next ? home > hole && home <= next : home > hole || home <= next;
            if (!stays)
            {
                _index[hole] = _index[next];
                hole = next;
            }
        }
        _index[hole] = 0;
    }
}
