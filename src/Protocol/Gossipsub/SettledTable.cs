namespace Potluck.Protocol.Gossipsub;

/// <summary>
/// The seen table's settled entries (<see cref="SeenCache"/>): valid messages past every mesh delivery window, of which
/// only "seen?" and the expiry are asked. An open-addressing table (linear probing; at most three quarters full, grown
/// by half, shrunk to half full once a quarter or less is in use: half to three quarters full as it grows, where a
/// dictionary's doubling leaves it half to wholly full of larger entries) of 16-byte slots: 64 bits of the id's keyed digest and the
/// expiry in UTC ticks (0: an empty slot). A <c>Dictionary&lt;SeenKey, long&gt;</c> spent 36 bytes a slot (the whole
/// 128-bit digest, the expiry, a hash code, a chain link and a bucket) and never shrank.
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

    public int Count => _count;

    /// <summary>Slots held (for tests and diagnostics).</summary>
    public int Capacity => _slots.Length;

    public bool Contains(ulong key) => IndexOf(key) >= 0;

    /// <summary>Adds the key with its expiry; a key already there keeps the later of the two expiries.</summary>
    public void Add(ulong key, long expiry)
    {
        if (expiry == 0)
        {
            expiry = 1; // 0 marks an empty slot (no real UTC expiry is 0001-01-01)
        }
        var i = IndexOf(key);
        if (i >= 0)
        {
            _slots[i].Expiry = Math.Max(_slots[i].Expiry, expiry);
            return;
        }
        if ((_count + 1) * 4 > _slots.Length * 3)
        {
            Resize(_slots.Length + _slots.Length / 2);
        }
        Insert(key, expiry);
        _count++;
    }

    /// <summary>Removes the key; its expiry comes out.</summary>
    public bool Remove(ulong key, out long expiry)
    {
        var i = IndexOf(key);
        if (i < 0)
        {
            expiry = 0;
            return false;
        }
        expiry = _slots[i].Expiry;
        RemoveAt(i);
        return true;
    }

    /// <summary>
    /// Removes every entry whose expiry is at or before <paramref name="ticks"/>; returns the earliest expiry left
    /// (<see cref="long.MaxValue"/> when none). Shrinks the slots to twice the entries once a quarter or less is in use.
    /// </summary>
    public long RemoveExpired(long ticks)
    {
        var earliest = long.MaxValue;
        var i = 0;
        // Algorithm R moves a later entry of the run into the freed slot: look at the same slot again. An entry that
        // wraps from the front of the array to its end was looked at already (and is not expired): seen twice, harmless.
        while (i < _slots.Length)
        {
            var expiry = _slots[i].Expiry;
            if (expiry != 0 && expiry <= ticks)
            {
                RemoveAt(i);
                continue;
            }
            if (expiry != 0 && expiry < earliest)
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
            if (slots[i].Expiry == 0)
            {
                return -1;
            }
            if (slots[i].Key == key)
            {
                return i;
            }
        }
    }

    private void Insert(ulong key, long expiry)
    {
        var slots = _slots;
        var i = Home(key, slots.Length);
        while (slots[i].Expiry != 0)
        {
            i = i + 1 == slots.Length ? 0 : i + 1;
        }
        slots[i] = new Slot(key, expiry);
    }

    /// <summary>Empties slot <paramref name="i"/> and moves back the entries after it that its emptiness would hide.</summary>
    private void RemoveAt(int i)
    {
        var slots = _slots;
        var j = i;
        while (true)
        {
            j = j + 1 == slots.Length ? 0 : j + 1;
            if (slots[j].Expiry == 0)
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
            if (slot.Expiry != 0)
            {
                Insert(slot.Key, slot.Expiry);
            }
        }
    }

    /// <summary>64 bits of a digest and its expiry in UTC ticks; an empty slot's expiry is 0.</summary>
    private struct Slot(ulong key, long expiry)
    {
        public ulong Key = key;
        public long Expiry = expiry;
    }
}
