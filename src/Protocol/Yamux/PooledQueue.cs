using System.Buffers;
using System.Runtime.CompilerServices;

namespace Potluck.Protocol.Yamux;

/// <summary>
/// A FIFO queue held inline in its owner (no queue object) whose array is rented from <see cref="ArrayPool{T}"/> when the
/// first item arrives and returned when the last is taken: an idle session holds no array. Not thread-safe (the owner's
/// lock); a mutable struct: never readonly, never copied.
/// </summary>
internal struct PooledQueue<T>
{
    private T[]? _items;
    private int _head;

    public int Count { get; private set; }

    /// <summary>Whether an array is held now (tests: none while empty).</summary>
    public readonly bool HoldsArray => _items is not null;

    public void Enqueue(T item)
    {
        if (_items is null)
        {
            _items = ArrayPool<T>.Shared.Rent(4);
            _head = 0;
        }
        else if (Count == _items.Length)
        {
            var larger = ArrayPool<T>.Shared.Rent(_items.Length * 2);
            for (var i = 0; i < Count; i++)
            {
                larger[i] = _items[(_head + i) % _items.Length];
            }
            Return(_items);
            _items = larger;
            _head = 0;
        }

        _items[(_head + Count) % _items.Length] = item;
        Count++;
    }

    public bool TryDequeue(out T item)
    {
        if (Count == 0)
        {
            item = default!;
            return false;
        }

        var items = _items!;
        item = items[_head];
        items[_head] = default!;
        _head = (_head + 1) % items.Length;
        Count--;
        if (Count == 0)
        {
            Return(items);
            _items = null;
            _head = 0;
        }

        return true;
    }

    /// <summary>The items, oldest first (a copy).</summary>
    public readonly List<T> ToList()
    {
        var list = new List<T>(Count);
        for (var i = 0; i < Count; i++)
        {
            list.Add(_items![(_head + i) % _items.Length]);
        }
        return list;
    }

    private static void Return(T[] items) =>
        ArrayPool<T>.Shared.Return(items, clearArray: RuntimeHelpers.IsReferenceOrContainsReferences<T>());
}
