namespace Potluck.Protocol.Yamux;

/// <summary>
/// A connection's open streams by id: up to two inline (most connections carry one or two long-lived streams), a
/// dictionary only while more are open (dropped when the count falls back to two). It enumerates in exactly the order a
/// <see cref="Dictionary{TKey,TValue}"/> with the same history would: such a dictionary keeps each entry in a slot, the
/// next unused one or else the slot freed last, and enumerates by slot; the table gives each stream the same slot
/// (<see cref="YamuxStreamState.TableSlot"/>) and sorts by it, so a connection's close still completes its streams in
/// the same order. An idle connection's table is its inline fields and a stack of the freed slots (the dictionary, its
/// buckets and entries kept for the connection's life were ~340 B per connection end).
/// </summary>
internal struct YamuxStreamTable
{
    private YamuxStreamState? _first;
    private YamuxStreamState? _second;
    private Dictionary<uint, YamuxStreamState>? _many;   // all the open streams, while more than two are
    private int _used;          // slots handed out so far (a dictionary's count of entries)
    private int[]? _freed;      // freed slots, the last freed at the top
    private int _freedCount;

    public int Count { get; private set; }

    /// <summary>Whether a dictionary is held now (tests).</summary>
    internal readonly bool HoldsDictionary => _many is not null;

    public void Add(uint id, YamuxStreamState stream)
    {
        if (TryGetValue(id, out _))
        {
            throw new ArgumentException($"stream {id} is already in the table", nameof(id));
        }
        if (_freedCount > 0)
        {
            stream.TableSlot = _freed![--_freedCount];
        }
        else
        {
            stream.TableSlot = _used++;
        }
        Count++;
        if (_many is { } many)
        {
            many.Add(id, stream);
        }
        else if (_first is null)
        {
            _first = stream;
        }
        else if (_second is null)
        {
            _second = stream;
        }
        else
        {
            _many = new Dictionary<uint, YamuxStreamState> { [_first.Id] = _first, [_second.Id] = _second, [id] = stream };
            _first = _second = null;
        }
    }

    public readonly bool TryGetValue(uint id, out YamuxStreamState? stream)
    {
        if (_many is not null)
        {
            return _many.TryGetValue(id, out stream);
        }
        stream = _first is { } a && a.Id == id ? a : _second is { } b && b.Id == id ? b : null;
        return stream is not null;
    }

    public bool Remove(uint id)
    {
        YamuxStreamState? removed;
        if (_many is { } many)
        {
            if (!many.Remove(id, out removed))
            {
                return false;
            }
            if (many.Count == 2)
            {
                using var rest = many.Values.GetEnumerator();
                _first = rest.MoveNext() ? rest.Current : null;
                _second = rest.MoveNext() ? rest.Current : null;
                _many = null;
            }
        }
        else if (_first is { } a && a.Id == id)
        {
            removed = a;
            _first = null;
        }
        else if (_second is { } b && b.Id == id)
        {
            removed = b;
            _second = null;
        }
        else
        {
            return false;
        }
        if (_freed is null || _freedCount == _freed.Length)
        {
            Array.Resize(ref _freed, Math.Max(2, _freedCount * 2));
        }
        _freed[_freedCount++] = removed!.TableSlot;
        Count--;
        return true;
    }

    /// <summary>The streams, in the order a dictionary with the same history enumerates them (by slot).</summary>
    public readonly IEnumerable<YamuxStreamState> Values
    {
        get
        {
            IEnumerable<YamuxStreamState> open = _many is not null ? _many.Values
                : (_first, _second) switch
                {
                    (null, null) => [],
                    ({ } a, null) => [a],
                    (null, { } b) => [b],
                    ({ } a, { } b) => [a, b],
                };
            return open.OrderBy(s => s.TableSlot).ToArray();
        }
    }
}
