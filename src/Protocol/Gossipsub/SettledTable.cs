namespace Potluck.Protocol.Gossipsub;

/// <summary>
/// The seen table's settled entries (<see cref="SeenCache"/>): valid messages past every mesh delivery window, of which
/// only "seen?" and the expiry are asked. An open-addressing table (linear probing, power-of-two slots, at most three
/// quarters full, halved once a quarter or less is in use) of 16-byte slots: 64 bits of the id's keyed digest and the
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

    private ulong[] _keys = new ulong[MinCapacity];
    private long[] _expiries = new long[MinCapacity];
    private int _count;

    public int Count => _count;

    /// <summary>Slots held (for tests and diagnostics).</summary>
    public int Capacity => _keys.Length;

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
            _expiries[i] = Math.Max(_expiries[i], expiry);
            return;
        }
        if ((_count + 1) * 4 > _keys.Length * 3)
        {
            Resize(_keys.Length * 2);
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
        expiry = _expiries[i];
        RemoveAt(i);
        return true;
    }

    /// <summary>
    /// Removes every entry whose expiry is at or before <paramref name="ticks"/>; returns the earliest expiry left
    /// (<see cref="long.MaxValue"/> when none). Halves the slots while a quarter or less of them is in use.
    /// </summary>
    public long RemoveExpired(long ticks)
    {
        var earliest = long.MaxValue;
        var i = 0;
        // Algorithm R moves a later entry of the run into the freed slot: look at the same slot again. An entry that
        // wraps from the front of the array to its end was looked at already (and is not expired): seen twice, harmless.
        while (i < _keys.Length)
        {
            var expiry = _expiries[i];
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
        var capacity = _keys.Length;
        while (capacity > MinCapacity && _count * 4 <= capacity)
        {
            capacity /= 2;
        }
        if (capacity != _keys.Length)
        {
            Resize(capacity);
        }
        return earliest;
    }

    private int IndexOf(ulong key)
    {
        var mask = _keys.Length - 1;
        for (var i = (int)(key & (ulong)mask); ; i = (i + 1) & mask)
        {
            if (_expiries[i] == 0)
            {
                return -1;
            }
            if (_keys[i] == key)
            {
                return i;
            }
        }
    }

    private void Insert(ulong key, long expiry)
    {
        var mask = _keys.Length - 1;
        var i = (int)(key & (ulong)mask);
        while (_expiries[i] != 0)
        {
            i = (i + 1) & mask;
        }
        _keys[i] = key;
        _expiries[i] = expiry;
    }

    /// <summary>Empties slot <paramref name="i"/> and moves back the entries after it that its emptiness would hide.</summary>
    private void RemoveAt(int i)
    {
        var mask = _keys.Length - 1;
        var j = i;
        while (true)
        {
            j = (j + 1) & mask;
            if (_expiries[j] == 0)
            {
                break;
            }
            var home = (int)(_keys[j] & (ulong)mask);
            // Slot j's entry may move to i when its home is not cyclically within (i, j].
            var stays = i <= j ? i < home && home <= j : i < home || home <= j;
            if (!stays)
            {
                _keys[i] = _keys[j];
                _expiries[i] = _expiries[j];
                i = j;
            }
        }
        _keys[i] = 0;
        _expiries[i] = 0;
        _count--;
    }

    private void Resize(int capacity)
    {
        var keys = _keys;
        var expiries = _expiries;
        _keys = new ulong[capacity];
        _expiries = new long[capacity];
        for (var i = 0; i < keys.Length; i++)
        {
            if (expiries[i] != 0)
            {
                Insert(keys[i], expiries[i]);
            }
        }
    }
}
