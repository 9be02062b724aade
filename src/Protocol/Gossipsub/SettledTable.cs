using System.Runtime.InteropServices;

namespace Potluck.Protocol.Gossipsub;

/// <summary>
/// The seen table's settled entries (<see cref="SeenCache"/>): valid messages past every mesh delivery window, of which
/// only "seen?" and the expiry are asked. An open-addressing table (linear probing; at most three quarters full, grown
/// by half, shrunk to half full once a quarter or less is in use: half to three quarters full as it grows, where a
/// dictionary's doubling leaves it half to wholly full of larger entries) of 12-byte slots: 64 bits of the id's keyed digest and the
/// expiry as 32 bits of UTC ticks after the table's epoch (0: an empty slot), exact to the tick. 2³² ticks are 429 s: the
/// epoch moves (every slot's offset rewritten, once in a few minutes) when an expiry would fall past it, to just before
/// the earliest expiry held; an expiry that fits no epoch with what is held (a TTL of more than about 7 minutes) is kept
/// beside the slots, whole. A <c>Dictionary&lt;SeenKey, long&gt;</c> spent 36 bytes a slot (the whole 128-bit digest, the
/// expiry, a hash code, a chain link and a bucket) and never shrank; 16-byte slots with the whole expiry came next.
/// <para>
/// 64 bits of a keyed digest (<see cref="SeenKeys"/>: nobody without the node's secret can aim an id at another's): two
/// distinct ids held at once share them with a chance of about n²/2⁶⁵ (1,500 held: ~10⁻¹³; a 2,000-a-second flood's
/// 240,000: ~2·10⁻⁹), and a shared 64 bits costs the later message's delivery to this one node (taken as seen), as
/// a chance collision of the full digest would.
/// </para>
/// <para>Deletion shifts later entries of a run back (Knuth's algorithm R), so no tombstones build up.</para>
/// </summary>
internal sealed class SettledTable
{
    private const int MinCapacity = 16;

    private Slot[] _slots = new Slot[MinCapacity];
    private int _count;
    /// <summary>UTC ticks; a slot's expiry is this plus its offset (1 to <see cref="uint.MaxValue"/>).</summary>
    private long _epoch;
    /// <summary>Entries whose expiry fits no epoch with the slots' (null while none: with the default TTL, never).</summary>
    private Dictionary<ulong, long>? _far;

    public int Count => _count + (_far?.Count ?? 0);

    /// <summary>Slots held (for tests and diagnostics).</summary>
    public int Capacity => _slots.Length;

    /// <summary>Bytes one slot takes (for tests and diagnostics).</summary>
    internal static int SlotBytes => Marshal.SizeOf<Slot>();

    /// <summary>Entries kept beside the slots, their expiry too far from the others' (for tests and diagnostics).</summary>
    internal int FarCount => _far?.Count ?? 0;

    public bool Contains(ulong key) => IndexOf(key) >= 0 || (_far?.ContainsKey(key) ?? false);

    /// <summary>Adds the key with its expiry; a key already there keeps the later of the two expiries.</summary>
    public void Add(ulong key, long expiry)
    {
        if (expiry == 0)
        {
            expiry = 1; // 0 marks an empty slot (no real UTC expiry is 0001-01-01)
        }
        if (_far is not null && _far.TryGetValue(key, out var far))
        {
            _far[key] = Math.Max(far, expiry);
            return;
        }
        var i = IndexOf(key);
        if (i >= 0)
        {
            var later = Math.Max(ExpiryAt(i), expiry);
            if (TryOffset(later, out var offset))
            {
                _slots[i].Offset = offset;
            }
            else
            {
                RemoveAt(i);
                (_far ??= [])[key] = later;
            }
            return;
        }
        if (!TryOffset(expiry, out var added))
        {
            (_far ??= [])[key] = expiry;
            return;
        }
        if ((_count + 1) * 4 > _slots.Length * 3)
        {
            Resize(_slots.Length + _slots.Length / 2);
        }
        Insert(key, added);
        _count++;
    }

    /// <summary>Removes the key; its expiry comes out.</summary>
    public bool Remove(ulong key, out long expiry)
    {
        if (_far is not null && _far.Remove(key, out expiry))
        {
            if (_far.Count == 0)
            {
                _far = null;
            }
            return true;
        }
        var i = IndexOf(key);
        if (i < 0)
        {
            expiry = 0;
            return false;
        }
        expiry = ExpiryAt(i);
        RemoveAt(i);
        return true;
    }

    private long ExpiryAt(int i) => _epoch + _slots[i].Offset;

    /// <summary>
    /// The expiry as an offset from the epoch, which moves (to just before the earliest expiry held or given) when it
    /// must; false when no epoch holds both it and every expiry held.
    /// </summary>
    private bool TryOffset(long expiry, out uint offset)
    {
        if (expiry - _epoch is > 0 and <= uint.MaxValue)
        {
            offset = (uint)(expiry - _epoch);
            return true;
        }
        var (low, high) = (expiry, expiry);
        foreach (var slot in _slots)
        {
            if (slot.Offset != 0)
            {
                low = Math.Min(low, _epoch + slot.Offset);
                high = Math.Max(high, _epoch + slot.Offset);
            }
        }
        if (high - (low - 1) > uint.MaxValue)
        {
            offset = 0;
            return false;
        }
        var epoch = low - 1;
        var slots = _slots;
        for (var i = 0; i < slots.Length; i++)
        {
            if (slots[i].Offset != 0)
            {
                slots[i].Offset = (uint)(_epoch + slots[i].Offset - epoch);
            }
        }
        _epoch = epoch;
        offset = (uint)(expiry - epoch);
        return true;
    }

    /// <summary>
    /// Removes every entry whose expiry is at or before <paramref name="ticks"/>; returns the earliest expiry left
    /// (<see cref="long.MaxValue"/> when none). Shrinks the slots to twice the entries once a quarter or less is in use.
    /// </summary>
    public long RemoveExpired(long ticks)
    {
        var earliest = long.MaxValue;
        if (_far is not null)
        {
            foreach (var (key, expiry) in _far)
            {
                if (expiry <= ticks)
                {
                    _far.Remove(key);
                }
                else if (expiry < earliest)
                {
                    earliest = expiry;
                }
            }
            if (_far.Count == 0)
            {
                _far = null;
            }
        }
        var i = 0;
        // Algorithm R moves a later entry of the run into the freed slot: look at the same slot again. An entry that
        // wraps from the front of the array to its end was looked at already (and is not expired): seen twice, harmless.
        while (i < _slots.Length)
        {
            var offset = _slots[i].Offset;
            var expiry = _epoch + offset;
            if (offset != 0 && expiry <= ticks)
            {
                RemoveAt(i);
                continue;
            }
            if (offset != 0 && expiry < earliest)
            {
                earliest = expiry;
            }
            i++;
        }
        if (_slots.Length > MinCapacity && _count * 4 <= _slots.Length)
        {
            Resize(Math.Max(MinCapacity, _count * 2));
        }
        return earliest;
    }

    /// <summary>The key's home slot: its upper 32 bits scaled to the table (any size, no power of two needed).</summary>
    private static int Home(ulong key, int capacity) => (int)(((key >> 32) * (ulong)capacity) >> 32);

    private int IndexOf(ulong key)
    {
        var slots = _slots;
        for (var i = Home(key, slots.Length); ; i = i + 1 == slots.Length ? 0 : i + 1)
        {
            if (slots[i].Offset == 0)
            {
                return -1;
            }
            if (slots[i].Key == key)
            {
                return i;
            }
        }
    }

    private void Insert(ulong key, uint offset)
    {
        var slots = _slots;
        var i = Home(key, slots.Length);
        while (slots[i].Offset != 0)
        {
            i = i + 1 == slots.Length ? 0 : i + 1;
        }
        slots[i] = new Slot(key, offset);
    }

    /// <summary>Empties slot <paramref name="i"/> and moves back the entries after it that its emptiness would hide.</summary>
    private void RemoveAt(int i)
    {
        var slots = _slots;
        var j = i;
        while (true)
        {
            j = j + 1 == slots.Length ? 0 : j + 1;
            if (slots[j].Offset == 0)
            {
                break;
            }
            var home = Home(slots[j].Key, slots.Length);
            // Slot j's entry may move to i when its home is not cyclically within (i, j].
            var stays = i <= j ? i < home && home <= j : i < home || home <= j;
            if (!stays)
            {
                slots[i] = slots[j];
                i = j;
            }
        }
        slots[i] = default;
        _count--;
    }

    private void Resize(int capacity)
    {
        var old = _slots;
        _slots = new Slot[capacity];
        foreach (var slot in old)
        {
            if (slot.Offset != 0)
            {
                Insert(slot.Key, slot.Offset);
            }
        }
    }

    /// <summary>64 bits of a digest and its expiry as UTC ticks after the epoch; an empty slot's is 0. 12 bytes (packed at 4).</summary>
    [StructLayout(LayoutKind.Sequential, Pack = 4)]
    private struct Slot(ulong key, uint offset)
    {
        public ulong Key = key;
        public uint Offset = offset;
    }
}
